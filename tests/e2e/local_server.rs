//! What `mfa-local` itself promises beyond the API: a closed CORS default, private data
//! files, connections that cannot be held open for free, and a command line with help.

use std::process::Command;
use std::time::{Duration, Instant};

use reqwest::Method;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::support::{Server, PASSWORD};

fn sign_up_from(server: &Server, origin: &str, email: &str) -> reqwest::RequestBuilder {
    server
        .raw(Method::POST, "/v1/account")
        .header("origin", origin)
        .header("content-type", "application/json")
        .header("x-appwrite-project", &server.project)
        .body(json!({"userId": "unique()", "email": email, "password": PASSWORD}).to_string())
}

#[tokio::test]
async fn by_default_only_local_browser_origins_are_allowed() {
    let server = Server::start().await;

    let r = server.send(sign_up_from(&server, "https://evil.example", "evil@example.com")).await;
    assert_eq!((r.status, r.kind()), (403, "general_unknown_origin"), "{:?}", r.body);
    assert_eq!(r.header("access-control-allow-origin"), None);
    assert_eq!(r.header("access-control-allow-credentials"), None);
    // A look-alike host is another site.
    let r = server.send(sign_up_from(&server, "http://localhost.evil.example", "evil2@example.com")).await;
    assert_eq!((r.status, r.kind()), (403, "general_unknown_origin"));

    let own = format!("http://{}", server.addr());
    for (i, origin) in
        ["http://localhost:5173", "http://127.0.0.1:3000", "http://localhost", own.as_str()].into_iter().enumerate()
    {
        let r = server.send(sign_up_from(&server, origin, &format!("local{i}@example.com"))).await;
        assert_eq!(r.status, 201, "{origin}: {:?}", r.body);
        assert_eq!(r.header("access-control-allow-origin"), Some(origin));
        assert_eq!(r.header("access-control-allow-credentials"), Some("true"));
    }
}

#[tokio::test]
async fn any_origin_only_when_configured_so() {
    let server = Server::start_with(&[("MFA_ALLOWED_ORIGINS", "*")]).await;
    let r = server.send(sign_up_from(&server, "https://app.example", "any@example.com")).await;
    assert_eq!(r.status, 201, "{:?}", r.body);
    assert_eq!(r.header("access-control-allow-origin"), Some("https://app.example"));

    let server = Server::start_with(&[("MFA_ALLOWED_ORIGINS", "https://app.example")]).await;
    let r = server.send(sign_up_from(&server, "http://localhost:5173", "dev@example.com")).await;
    assert_eq!((r.status, r.kind()), (403, "general_unknown_origin"), "an explicit list replaces the default");
}

#[cfg(unix)]
#[tokio::test]
async fn the_data_folder_and_its_files_are_readable_by_the_owner_only() {
    use std::os::unix::fs::PermissionsExt;
    let parent = tempfile::tempdir().unwrap();
    let data = parent.path().join("data");
    let outbox = data.join("outbox.jsonl");
    let server =
        Server::start_with(&[("MFA_DATA_DIR", data.to_str().unwrap()), ("MFA_OUTBOX", outbox.to_str().unwrap())]).await;
    // Something to store and a message to send.
    server.sign_up("private@example.com").await;
    let session = server.log_in("private@example.com").await;
    let r = server
        .call("POST", "/v1/account/verifications/email", Some(&session), json!({"url": "http://localhost/verify"}))
        .await;
    assert_eq!(r.status, 201, "{:?}", r.body);

    let mode = |path: &std::path::Path| std::fs::metadata(path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&data), 0o700, "data folder");
    assert_eq!(mode(&data.join("secret.key")), 0o600, "server key");
    if std::env::var("MFA_STORE").as_deref() != Ok("dynamodb") {
        assert_eq!(mode(&data.join("mfa.redb")), 0o600, "embedded database");
    }
    if std::env::var("MFA_SENDER").as_deref() != Ok("aws") {
        let deadline = Instant::now() + Duration::from_secs(5);
        while !outbox.exists() && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert_eq!(mode(&outbox), 0o600, "outbox");
    }
}

/// Reads until the server closes the connection; the time it took, or `None` if it was
/// still open at `deadline`.
async fn closed_by(mut conn: TcpStream, deadline: Instant) -> Option<Instant> {
    let mut buf = [0u8; 4096];
    loop {
        match tokio::time::timeout_at(deadline.into(), conn.read(&mut buf)).await {
            Err(_) => return None,
            Ok(Ok(0)) | Ok(Err(_)) => return Some(Instant::now()),
            Ok(Ok(_)) => {}
        }
    }
}

async fn connect_and_send(addr: &str, bytes: &[u8]) -> TcpStream {
    let mut conn = TcpStream::connect(addr).await.unwrap();
    conn.write_all(bytes).await.unwrap();
    conn
}

#[tokio::test]
async fn stalled_slow_and_idle_connections_are_closed_and_the_server_keeps_answering() {
    let server = Server::start().await;
    let addr = server.addr().to_string();
    let started = Instant::now();

    // Headers complete, a body promised and never finished.
    let stalled_body = connect_and_send(
        &addr,
        b"POST /v1/account HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"u\":",
    )
    .await;
    // Headers never finished.
    let stalled_headers = connect_and_send(&addr, b"GET /v1/account HTTP/1.1\r\nHost: t\r\nX-Appwrite-Pro").await;
    // One request answered, then nothing (keep-alive).
    let mut idle = connect_and_send(&addr, b"GET /v1/nothing HTTP/1.1\r\nHost: t\r\n\r\n").await;
    let mut first = [0u8; 12];
    idle.read_exact(&mut first).await.unwrap();
    assert_eq!(&first, b"HTTP/1.1 404");
    // Headers trickled in, a byte every half second: busy, but never a request.
    let trickle = TcpStream::connect(&addr).await.unwrap();
    let (trickle_read, mut trickle_write) = trickle.into_split();
    let trickler = tokio::spawn(async move {
        let head = b"GET /v1/account HTTP/1.1\r\nHost: t\r\nX-Slow: ";
        if trickle_write.write_all(head).await.is_err() {
            return;
        }
        while trickle_write.write_all(b"a").await.is_ok() {
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    });

    // Meanwhile the server answers others.
    let r = server.call("GET", "/v1/nothing/here", None, json!({})).await;
    assert_eq!((r.status, r.kind()), (404, "general_route_not_found"));

    let deadline = started + Duration::from_secs(15);
    let (body, headers, idle, trickled) = tokio::join!(
        closed_by(stalled_body, deadline),
        closed_by(stalled_headers, deadline),
        async {
            let mut rest = Vec::new();
            // The rest of the 404, then the end.
            match tokio::time::timeout_at(deadline.into(), idle.read_to_end(&mut rest)).await {
                Ok(_) => Some(Instant::now()),
                Err(_) => None,
            }
        },
        async {
            let mut trickle_read = trickle_read;
            let mut buf = [0u8; 1024];
            loop {
                match tokio::time::timeout_at(deadline.into(), trickle_read.read(&mut buf)).await {
                    Err(_) => return None,
                    Ok(Ok(0)) | Ok(Err(_)) => return Some(Instant::now()),
                    Ok(Ok(_)) => {}
                }
            }
        },
    );
    trickler.abort();
    for (what, closed) in [("stalled body", body), ("stalled headers", headers), ("idle", idle), ("trickle", trickled)]
    {
        let closed = closed.unwrap_or_else(|| panic!("{what}: connection still open after 15 s"));
        let after = closed - started;
        assert!(after >= Duration::from_secs(5), "{what}: closed too early, after {after:?}");
    }

    // On a new connection: the client's pooled one idled out with the others.
    let r = reqwest::Client::new().get(format!("{}/v1/nothing/here", server.base)).send().await.unwrap();
    assert_eq!(r.status(), 404);
}

/// An HTTP client sends its whole body before it reads the answer: a server closing on the
/// rest of a refused body would reset the connection, and the client would see an error
/// instead of the 413.
#[tokio::test]
async fn an_oversize_body_is_answered_413_while_the_client_finishes_sending_it() {
    let server = Server::start().await;
    let mut conn = connect_and_send(
        server.addr(),
        b"POST /v1/account HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\nContent-Length: 100000\r\n\r\n",
    )
    .await;
    // More than the 16 KiB the server reads before it refuses the body.
    conn.write_all(&[b' '; 40_000]).await.unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    for _ in 0..6 {
        let sent = conn.write_all(&[b' '; 10_000]).await;
        assert!(sent.is_ok(), "the server reset the connection: {sent:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut answer = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(5), conn.read_to_end(&mut answer)).await;
    assert!(read.expect("the server answers and closes").is_ok(), "the connection was reset");
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    assert!(answer.contains("general_argument_invalid"), "{answer}");
}

fn mfa_local(args: &[&str]) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_mfa-local")).args(args).output().unwrap();
    (out.status.success(), String::from_utf8_lossy(&out.stdout).into_owned())
}

#[test]
fn help_lists_every_subcommand_and_environment_variable() {
    let (ok, help) = mfa_local(&["--help"]);
    assert!(ok, "--help exits 0");
    for word in ["setup", "totp", "serve", "keys"] {
        assert!(help.contains(word), "--help names {word}:\n{help}");
    }
    for var in [
        "MFA_LISTEN",
        "MFA_DATA_DIR",
        "MFA_OUTBOX",
        "MFA_PROJECT_ID",
        "MFA_PROJECT_NAME",
        "MFA_SECRET_KEY",
        "MFA_ALLOWED_ORIGINS",
        "MFA_REDIRECT_HOSTS",
        "MFA_SESSION_TTL_SECONDS",
        "MFA_CHALLENGE_TTL_SECONDS",
        "MFA_STORE",
        "MFA_TABLE",
        "MFA_SENDER",
        "MFA_EMAIL_FROM",
        "RUST_LOG",
    ] {
        assert!(help.contains(var), "--help names {var}:\n{help}");
    }
    assert!(help.contains("127.0.0.1:8080"), "--help shows the default listen address");

    let (ok, help) = mfa_local(&["totp", "--help"]);
    assert!(ok && help.contains("SECRET"), "{help}");
    let (ok, help) = mfa_local(&["setup", "--help"]);
    assert!(ok && help.contains("DynamoDB"), "{help}");
    let (ok, _) = mfa_local(&["no-such-command"]);
    assert!(!ok);
}

#[test]
fn totp_prints_the_current_code_of_a_secret() {
    let (ok, out) = mfa_local(&["totp", "JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP"]);
    assert!(ok);
    let code = out.trim();
    assert!(code.len() == 6 && code.bytes().all(|b| b.is_ascii_digit()), "{out:?}");
    let (ok, _) = mfa_local(&["totp", "not base32!"]);
    assert!(!ok);
}

fn mfa_local_in(data: &std::path::Path, args: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_mfa-local"))
        .args(args)
        .env("MFA_DATA_DIR", data)
        .env_remove("MFA_STORE")
        .env_remove("MFA_SECRET_KEY")
        .env_remove("MFA_SECRET_KEYS")
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// `mfa-local keys`: a rotation adds the active key; the active key cannot be retired, an
/// older one only once nothing stored depends on it.
#[test]
fn server_keys_rotate_and_retire_from_the_command_line() {
    let data = tempfile::tempdir().unwrap();
    let (ok, out, err) = mfa_local_in(data.path(), &["keys", "usage"]);
    assert!(ok, "{err}");
    assert!(out.contains("k0 (active): 0 stored values"), "{out}");
    let (ok, out, err) = mfa_local_in(data.path(), &["keys", "rotate"]);
    assert!(ok && out.contains("added server key k1"), "{out}{err}");
    let (ok, out, _) = mfa_local_in(data.path(), &["keys", "usage"]);
    assert!(ok && out.contains("k1 (active)") && out.contains("k0: 0"), "{out}");
    let (ok, _, err) = mfa_local_in(data.path(), &["keys", "retire", "k1"]);
    assert!(!ok && err.contains("active"), "{err}");
    let (ok, out, err) = mfa_local_in(data.path(), &["keys", "retire", "k0"]);
    assert!(ok && out.contains("retired server key k0"), "{out}{err}");
    assert!(!data.path().join("secret.key").exists(), "no retired secret left on disk");
    let ring = std::fs::read_to_string(data.path().join("server-keys")).unwrap();
    assert!(ring.starts_with("k1=") && !ring.contains("k0="), "{ring}");
    let (ok, _, err) = mfa_local_in(data.path(), &["keys", "retire", "k9"]);
    assert!(!ok && err.contains("no server key"), "{err}");
}

/// CPU time (user + system) a process has used, in clock ticks.
#[cfg(target_os = "linux")]
fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    // Fields after the command name, which is in parentheses: state is field 3, utime 14, stime 15.
    let fields: Vec<&str> = stat.rsplit_once(')').unwrap().1.split_whitespace().collect();
    fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap()
}

#[cfg(target_os = "linux")]
#[tokio::test]
async fn out_of_file_descriptors_the_server_waits_instead_of_spinning_and_recovers() {
    use std::io::{BufRead, BufReader};
    use std::process::Stdio;

    let data = tempfile::tempdir().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let addr = format!("127.0.0.1:{port}");
    // A server allowed few open files, so that connections exhaust them.
    let mut child = Command::new("sh")
        .args(["-c", "ulimit -n 64 && exec \"$0\"", env!("CARGO_BIN_EXE_mfa-local")])
        .env("MFA_LISTEN", &addr)
        .env("MFA_DATA_DIR", data.path())
        .env("MFA_STORE", "embedded")
        .env("MFA_SENDER", "outbox")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let child = KillOnDrop(child);
    let mut line = String::new();
    while !line.contains("listening on") {
        line.clear();
        assert!(stdout.read_line(&mut line).unwrap() > 0, "mfa-local exited before listening");
    }
    let pid = child.0.id();

    let mut held = Vec::new();
    for _ in 0..100 {
        held.push(TcpStream::connect(&addr).await.unwrap());
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let before = cpu_ticks(pid);
    tokio::time::sleep(Duration::from_secs(3)).await;
    let used = cpu_ticks(pid) - before;
    let per_second = 100; // Linux USER_HZ
    assert!(used < per_second / 2, "with no file descriptor left the server used {used} ticks of CPU in 3 s");

    drop(held);
    let http = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    let answered = loop {
        let r = http.get(format!("http://{addr}/v1/nothing")).timeout(Duration::from_secs(2)).send().await;
        match r {
            Ok(r) => break r.status().as_u16(),
            Err(_) if Instant::now() < deadline => tokio::time::sleep(Duration::from_millis(200)).await,
            Err(e) => panic!("the server did not recover: {e}"),
        }
    };
    assert_eq!(answered, 404);
    drop(child);
}

/// A server process, stopped when the test ends, passed or not.
#[cfg(target_os = "linux")]
struct KillOnDrop(std::process::Child);

#[cfg(target_os = "linux")]
impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
