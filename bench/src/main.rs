//! The load client of `infra/bench-load.sh` for the TOTP challenge: for each prepared user
//! (`infra/bench_load.py prepare` writes them), one keep-alive connection from the user's
//! own loopback address, `POST /v1/account/mfa/challenges` then `PUT` with the next step's
//! code, `CONCURRENCY` users at a time. Written in Rust on one thread so that the client
//! takes little of the CPU it shares with the server. Appends one JSON line of results:
//!
//! ```sh
//! bench-load challenge BASE PROJECT USERS_JSON RESULTS CONCURRENCY
//! ```

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use mfa_core::domain::totp;
use serde::Deserialize;
use serde_json::{json, Value};
use tokio::net::{TcpSocket, TcpStream};

#[derive(Deserialize)]
struct User {
    ip: String,
    secret: String,
    session: String,
}

type Failure = Box<dyn std::error::Error>;

/// One HTTP/1.1 connection; answers are read by their Content-Length.
struct Conn {
    stream: TcpStream,
    host: String,
    project: String,
    buf: Vec<u8>,
}

impl Conn {
    async fn open(server: SocketAddr, ip: &str, project: &str) -> Result<Conn, Failure> {
        let socket = TcpSocket::new_v4()?;
        socket.bind(SocketAddr::new(ip.parse()?, 0))?;
        let stream = socket.connect(server).await?;
        stream.set_nodelay(true)?;
        Ok(Conn { stream, host: server.to_string(), project: project.into(), buf: Vec::new() })
    }

    async fn call(&mut self, method: &str, path: &str, session: &str, body: &Value) -> Result<(u16, Value), Failure> {
        let body = body.to_string();
        let head = format!(
            "{method} {path} HTTP/1.1\r\nHost: {}\r\nX-Appwrite-Project: {}\r\nX-Fallback-Cookies: {session}\r\n\
             Content-Type: application/json\r\nContent-Length: {}\r\n\r\n",
            self.host,
            self.project,
            body.len()
        );
        self.write_all(&[head.as_bytes(), body.as_bytes()].concat()).await?;
        self.buf.clear();
        let end = loop {
            if let Some(end) = self.buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break end + 4;
            }
            self.read_more().await?;
        };
        let head = std::str::from_utf8(&self.buf[..end])?;
        let status: u16 = head.split(' ').nth(1).ok_or("no status")?.parse()?;
        let length: usize = head
            .lines()
            .find_map(|l| l.split_once(':').filter(|(k, _)| k.eq_ignore_ascii_case("content-length")))
            .map(|(_, v)| v.trim().parse())
            .transpose()?
            .unwrap_or(0);
        while self.buf.len() < end + length {
            self.read_more().await?;
        }
        let body = serde_json::from_slice(&self.buf[end..end + length]).unwrap_or(Value::Null);
        Ok((status, body))
    }

    async fn write_all(&mut self, mut bytes: &[u8]) -> Result<(), Failure> {
        while !bytes.is_empty() {
            self.stream.writable().await?;
            match self.stream.try_write(bytes) {
                Ok(n) => bytes = &bytes[n..],
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                Err(e) => return Err(e.into()),
            }
        }
        Ok(())
    }

    async fn read_more(&mut self) -> Result<(), Failure> {
        let mut chunk = [0u8; 4096];
        loop {
            self.stream.readable().await?;
            match self.stream.try_read(&mut chunk) {
                Ok(0) => return Err("connection closed".into()),
                Ok(n) => {
                    self.buf.extend_from_slice(&chunk[..n]);
                    return Ok(());
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                Err(e) => return Err(e.into()),
            }
        }
    }
}

/// One TOTP challenge created and completed; the status of the last request.
async fn challenge(server: SocketAddr, project: &str, user: &User) -> Result<u16, Failure> {
    let mut conn = Conn::open(server, &user.ip, project).await?;
    let (status, body) =
        conn.call("POST", "/v1/account/mfa/challenges", &user.session, &json!({"factor": "totp"})).await?;
    if status != 201 {
        return Ok(status);
    }
    let secret = totp::from_base32(&user.secret).ok_or("bad secret")?;
    // The enrolment spent its step; the next one's code is accepted and fresh.
    let now = SystemTime::now().duration_since(UNIX_EPOCH)?.as_millis() as i64;
    let otp = totp::code_at(&secret, now + 30_000).ok_or("bad secret")?;
    let complete = json!({"challengeId": body["$id"], "otp": otp});
    Ok(conn.call("PUT", "/v1/account/mfa/challenges", &user.session, &complete).await?.0)
}

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((p / 100.0 * (sorted.len() - 1) as f64).round() as usize).min(sorted.len() - 1);
    sorted[i].as_secs_f64() * 1000.0
}

async fn run(args: &[String]) -> Result<(), Failure> {
    let [base, project, users_json, results, concurrency] = args else {
        return Err("usage: bench-load challenge BASE PROJECT USERS_JSON RESULTS CONCURRENCY".into());
    };
    let server: SocketAddr = base.trim_start_matches("http://").parse()?;
    let users: Vec<User> = serde_json::from_slice(&std::fs::read(users_json)?)?;
    let concurrency: usize = concurrency.parse()?;
    let next = AtomicUsize::new(0);
    let started = Instant::now();
    let workers = (0..concurrency).map(|_| async {
        let mut done = Vec::new();
        while let Some(user) = users.get(next.fetch_add(1, Ordering::Relaxed)) {
            let t = Instant::now();
            let status = challenge(server, project, user).await.unwrap_or(0);
            done.push((status, t.elapsed()));
        }
        done
    });
    let done: Vec<(u16, Duration)> = futures_join(workers).await.into_iter().flatten().collect();
    let wall = started.elapsed().as_secs_f64();
    let mut latencies: Vec<Duration> = done.iter().map(|(_, d)| *d).collect();
    latencies.sort();
    let ok = done.iter().filter(|(s, _)| (200..300).contains(s)).count();
    let limited = done.iter().filter(|(s, _)| *s == 429).count();
    let line = json!({
        "scenario": "(b) TOTP challenge: POST + PUT /v1/account/mfa/challenges",
        "ops": done.len(), "ok": ok, "limited": limited, "other": done.len() - ok - limited,
        "ops_per_s": done.len() as f64 / wall,
        "p50_ms": percentile(&latencies, 50.0), "p99_ms": percentile(&latencies, 99.0),
        "max_ms": latencies.last().map_or(0.0, |d| d.as_secs_f64() * 1000.0),
        "note": format!("{} users, each once, concurrency {concurrency}; one op = both requests", users.len()),
    });
    let mut file = std::fs::OpenOptions::new().create(true).append(true).open(results)?;
    std::io::Write::write_all(&mut file, format!("{line}\n").as_bytes())?;
    Ok(())
}

/// Runs every future to its end on this thread; their outputs in order.
async fn futures_join<F: std::future::Future>(futures: impl Iterator<Item = F>) -> Vec<F::Output> {
    let set: Vec<_> = futures.map(Box::pin).collect();
    let mut outputs: Vec<Option<F::Output>> = set.iter().map(|_| None).collect();
    let mut set: Vec<_> = set.into_iter().map(Some).collect();
    std::future::poll_fn(|cx| {
        let mut pending = false;
        for (slot, output) in set.iter_mut().zip(outputs.iter_mut()) {
            if let Some(future) = slot {
                match future.as_mut().poll(cx) {
                    std::task::Poll::Ready(value) => {
                        *output = Some(value);
                        *slot = None;
                    }
                    std::task::Poll::Pending => pending = true,
                }
            }
        }
        if pending {
            std::task::Poll::Pending
        } else {
            std::task::Poll::Ready(())
        }
    })
    .await;
    outputs.into_iter().flatten().collect()
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> std::process::ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("challenge") => run(&args[1..]).await,
        _ => Err("usage: bench-load challenge BASE PROJECT USERS_JSON RESULTS CONCURRENCY".into()),
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("bench-load: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}
