//! Password hashing off the async executor, on a fixed set of threads. Each Argon2id hash
//! works in 19 MiB, which each thread keeps and reuses (`domain::password`): a few
//! long-lived threads bound both that memory and the CPU hashing takes, where Tokio's
//! blocking pool would start a thread (and an area) per concurrent sign-in. Further
//! requests wait their turn in the queue.

use std::sync::{mpsc, Arc, Mutex, OnceLock};

/// At most this many hashes at once, however many cores: each one is 19 MiB.
const MAX_THREADS: usize = 4;

type Job = Box<dyn FnOnce() + Send>;

fn queue() -> &'static mpsc::Sender<Job> {
    static QUEUE: OnceLock<mpsc::Sender<Job>> = OnceLock::new();
    QUEUE.get_or_init(|| {
        let (sender, receiver) = mpsc::channel::<Job>();
        let receiver = Arc::new(Mutex::new(receiver));
        let threads = std::thread::available_parallelism().map_or(2, |n| n.get()).min(MAX_THREADS);
        for i in 0..threads {
            let receiver = receiver.clone();
            let worker = move || loop {
                // The lock is held only while waiting for a job, not while running it.
                let job = receiver.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).recv();
                match job {
                    // A job that panics (unwinding builds only) answers `None` and the thread
                    // goes on serving.
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
        sender
    })
}

/// Runs `work` on a hashing thread and waits for its result without blocking the executor.
/// `None` if the work could not run to its end.
pub async fn run<T: Send + 'static>(work: impl FnOnce() -> T + Send + 'static) -> Option<T> {
    let (done, result) = tokio::sync::oneshot::channel();
    let job: Job = Box::new(move || {
        let _ = done.send(work());
    });
    queue().send(job).ok()?;
    result.await.ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn work_runs_on_the_hashing_threads_and_returns_its_result() {
        let name = run(|| std::thread::current().name().map(str::to_string)).await.unwrap();
        assert!(name.is_some_and(|n| n.starts_with("password-hash-")));
        let tasks: Vec<_> = (0..16).map(|i| tokio::spawn(run(move || i * 2))).collect();
        let mut results = Vec::new();
        for task in tasks {
            results.push(task.await.unwrap().unwrap());
        }
        assert_eq!(results, (0..16).map(|i| i * 2).collect::<Vec<_>>(), "every job, in parallel, gets its own result");
    }

    #[tokio::test]
    async fn a_panicking_job_answers_none_and_the_pool_goes_on() {
        assert_eq!(run(|| -> u8 { panic!("boom") }).await, None);
        for _ in 0..MAX_THREADS + 1 {
            assert_eq!(run(|| 7).await, Some(7));
        }
    }
}
