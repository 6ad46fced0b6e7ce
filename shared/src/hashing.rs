//! Password hashing off the async executor, on a fixed set of threads. Each Argon2id hash
//! works in 19 MiB, which each thread keeps and reuses (`domain::password`): a few
//! long-lived threads bound both that memory and the CPU hashing takes, where Tokio's
//! blocking pool would start a thread (and an area) per concurrent sign-in. Further
//! requests wait their turn in a bounded queue; past it they are turned away at once, so
//! that no client can queue unbounded CPU work.

use std::sync::{mpsc, Arc, Mutex, OnceLock};

/// At most this many hashes at once, however many cores: each one is 19 MiB.
const MAX_THREADS: usize = 4;
/// Hashes waiting per thread (about 50 ms each, so under a second's wait) before further
/// ones are turned away.
const QUEUE_PER_THREAD: usize = 16;

type Job = Box<dyn FnOnce() + Send>;

/// Jobs run to their end on every pool of the process, for figures and tests.
static COMPLETED: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// How many hashing jobs have run so far in this process.
pub fn completed() -> u64 {
    COMPLETED.load(std::sync::atomic::Ordering::Relaxed)
}

/// Why hashing work did not give its result.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum HashingError {
    #[error("every hashing thread is busy and the queue is full")]
    Busy,
    #[error("the hashing work did not run to its end")]
    Failed,
}

/// A fixed set of threads with a bounded queue.
pub struct Pool {
    queue: mpsc::SyncSender<Job>,
}

impl Pool {
    pub fn new(threads: usize, queued: usize) -> Pool {
        let (queue, receiver) = mpsc::sync_channel::<Job>(queued);
        let receiver = Arc::new(Mutex::new(receiver));
        for i in 0..threads {
            let receiver = receiver.clone();
            let worker = move || loop {
                // The lock is held only while waiting for a job, not while running it.
                let job = receiver.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).recv();
                match job {
                    // A job that panics (unwinding builds only) answers `Failed` and the
                    // thread goes on serving.
                    Ok(job) => drop(std::panic::catch_unwind(std::panic::AssertUnwindSafe(job))),
                    Err(_) => return,
                }
            };
            // A process that cannot start threads cannot serve at all.
            std::thread::Builder::new()
                .name(format!("password-hash-{i}"))
                .spawn(worker)
                .expect("spawn a hashing thread"); // ok: startup
        }
        Pool { queue }
    }

    /// Runs `work` on a hashing thread and waits for its result without blocking the
    /// executor; `Busy` at once when the queue is full.
    pub async fn run<T: Send + 'static>(&self, work: impl FnOnce() -> T + Send + 'static) -> Result<T, HashingError> {
        let (done, result) = tokio::sync::oneshot::channel();
        let job: Job = Box::new(move || {
            let result = work();
            COMPLETED.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let _ = done.send(result);
        });
        self.queue.try_send(job).map_err(|e| match e {
            mpsc::TrySendError::Full(_) => HashingError::Busy,
            mpsc::TrySendError::Disconnected(_) => HashingError::Failed,
        })?;
        result.await.map_err(|_| HashingError::Failed)
    }
}

fn pool() -> &'static Pool {
    static POOL: OnceLock<Pool> = OnceLock::new();
    POOL.get_or_init(|| {
        let threads = std::thread::available_parallelism().map_or(2, |n| n.get()).min(MAX_THREADS);
        Pool::new(threads, threads * QUEUE_PER_THREAD)
    })
}

/// [`Pool::run`] on the process's hashing threads.
pub async fn run<T: Send + 'static>(work: impl FnOnce() -> T + Send + 'static) -> Result<T, HashingError> {
    pool().run(work).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn work_runs_on_the_hashing_threads_and_returns_its_result() {
        let name = run(|| std::thread::current().name().map(str::to_string)).await.unwrap();
        assert!(name.is_some_and(|n| n.starts_with("password-hash-")));
        let tasks: Vec<_> = (0..8).map(|i| tokio::spawn(run(move || i * 2))).collect();
        let mut results = Vec::new();
        for task in tasks {
            results.push(task.await.unwrap().unwrap());
        }
        assert_eq!(results, (0..8).map(|i| i * 2).collect::<Vec<_>>(), "every job, in parallel, gets its own result");
    }

    #[tokio::test]
    async fn a_panicking_job_answers_failed_and_the_pool_goes_on() {
        let pool = Pool::new(1, 4);
        assert_eq!(pool.run(|| -> u8 { panic!("boom") }).await, Err(HashingError::Failed));
        for _ in 0..3 {
            assert_eq!(pool.run(|| 7).await, Ok(7));
        }
    }

    #[tokio::test]
    async fn a_full_queue_turns_work_away_at_once() {
        let pool = Arc::new(Pool::new(1, 2));
        let (release, gate) = std::sync::mpsc::channel::<()>();
        let gate = Arc::new(Mutex::new(gate));
        let (started, running) = std::sync::mpsc::channel::<()>();
        let hold = |pool: Arc<Pool>, gate: Arc<Mutex<std::sync::mpsc::Receiver<()>>>, started: Option<_>| {
            tokio::spawn(async move {
                pool.run(move || {
                    if let Some(started) = started {
                        let _ = std::sync::mpsc::Sender::send(&started, ());
                    }
                    let _ = gate.lock().unwrap().recv();
                })
                .await
            })
        };
        // One job holds the thread, then two fill the queue.
        let mut held = vec![hold(pool.clone(), gate.clone(), Some(started))];
        tokio::task::spawn_blocking(move || running.recv().unwrap()).await.unwrap();
        held.extend((0..2).map(|_| hold(pool.clone(), gate.clone(), None)));
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        assert_eq!(pool.run(|| 1).await, Err(HashingError::Busy));
        for _ in 0..3 {
            release.send(()).unwrap();
        }
        for job in held {
            assert_eq!(job.await.unwrap(), Ok(()));
        }
        assert_eq!(pool.run(|| 2).await, Ok(2), "room again once the queue drains");
    }
}
