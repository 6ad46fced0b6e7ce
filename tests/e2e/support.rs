//! Starts `mfa-local` on a free port with a fresh data folder, and speaks to it over HTTP.
//! With `MFA_STORE=dynamodb` in the environment each server gets its own fresh table; with
//! `MFA_SENDER=aws` messages are read back from the emulator (`MFA_TEST_MOTO_ENDPOINT`)
//! instead of the outbox.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use reqwest::Method;
use serde_json::{json, Value};

pub const PASSWORD: &str = "correct horse battery";

pub struct Server {
    child: Child,
    pub base: String,
    pub project: String,
    outbox: PathBuf,
    /// The server's log output (its stderr).
    log: PathBuf,
    data: tempfile::TempDir,
    /// The DynamoDB table, with `MFA_STORE=dynamodb`.
    table: String,
    /// The environment the test gave it, kept for a restart.
    env: Vec<(String, String)>,
    http: reqwest::Client,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!("---- mfa-local log ----\n{}", self.log());
        }
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    pub body: Value,
    pub headers: reqwest::header::HeaderMap,
    pub bytes: Vec<u8>,
}

impl Answer {
    pub fn kind(&self) -> &str {
        self.body["type"].as_str().unwrap_or("")
    }
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

/// Starts mfa-local on a free port and waits until it listens; its stderr is appended to
/// `log`.
fn spawn(
    project: &str,
    data: &std::path::Path,
    outbox: &std::path::Path,
    log: &std::path::Path,
    table: &str,
    env: &[(String, String)],
) -> (Child, String) {
    let listen = format!("127.0.0.1:{}", free_port());
    let log_file = std::fs::OpenOptions::new().create(true).append(true).open(log).unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_mfa-local"))
        .env("MFA_TABLE", table)
        .env("MFA_LISTEN", &listen)
        .env("MFA_DATA_DIR", data)
        .env("MFA_OUTBOX", outbox)
        .env("MFA_PROJECT_ID", project)
        .env("MFA_PROJECT_NAME", "E2E App")
        .envs(env.iter().map(|(k, v)| (k, v)))
        .stdout(Stdio::piped())
        .stderr(log_file)
        .spawn()
        .expect("mfa-local starts");
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if line.contains("listening on") {
                let _ = tx.send(());
            }
        }
    });
    if rx.recv_timeout(Duration::from_secs(30)).is_err() {
        let _ = child.kill();
        panic!("mfa-local did not print its endpoint; its log:\n{}", std::fs::read_to_string(log).unwrap_or_default());
    }
    (child, format!("http://{listen}"))
}

impl Server {
    pub async fn start() -> Server {
        Server::start_with(&[]).await
    }

    pub async fn start_with(env: &[(&str, &str)]) -> Server {
        let data = tempfile::tempdir().unwrap();
        let outbox = data.path().join("outbox.jsonl");
        let project = "e2e".to_string();
        let table = format!("e2e-{}", free_port()) + &format!("-{}", std::process::id());
        if std::env::var("MFA_STORE").as_deref() == Ok("dynamodb") {
            let status = Command::new(env!("CARGO_BIN_EXE_mfa-local"))
                .arg("setup")
                .env("MFA_TABLE", &table)
                .stdout(Stdio::null())
                .status()
                .unwrap();
            assert!(status.success(), "mfa-local setup creates the table");
        }
        let log = data.path().join("server.log");
        let env: Vec<(String, String)> = env.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        let (child, base) = spawn(&project, data.path(), &outbox, &log, &table, &env);
        let http = reqwest::Client::new();
        Server { child, base, project, outbox, log, data, table, env, http }
    }

    /// Kills the server (SIGKILL: no chance to finish anything) and starts it again on the
    /// same data folder or table, on a new port.
    pub fn kill_and_restart(&mut self) {
        // It may have been killed already (`kill_now`).
        let _ = self.child.kill();
        self.child.wait().unwrap();
        let (child, base) = spawn(&self.project, self.data.path(), &self.outbox, &self.log, &self.table, &self.env);
        (self.child, self.base) = (child, base);
    }

    /// Sends SIGKILL to the server, leaving its requests in flight unanswered.
    pub fn kill_now(&self) {
        let status = Command::new("kill").args(["-KILL", &self.child.id().to_string()]).status().unwrap();
        assert!(status.success(), "kill -KILL mfa-local");
    }

    /// `host:port` the server listens on.
    pub fn addr(&self) -> &str {
        self.base.trim_start_matches("http://")
    }

    /// Everything the server has logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// One request; `session` is the `X-Fallback-Cookies` value the login returned.
    pub async fn call(&self, method: &str, path: &str, session: Option<&str>, body: Value) -> Answer {
        self.send(self.request(&self.http, method, path, session, body)).await
    }

    /// A request as `call` makes it, through `http` (e.g. a client of its own address).
    pub fn request(
        &self,
        http: &reqwest::Client,
        method: &str,
        path: &str,
        session: Option<&str>,
        body: Value,
    ) -> reqwest::RequestBuilder {
        let method = Method::from_bytes(method.as_bytes()).unwrap();
        let mut req =
            http.request(method.clone(), format!("{}{path}", self.base)).header("X-Appwrite-Project", &self.project);
        if let Some(session) = session {
            req = req.header("X-Fallback-Cookies", session);
        }
        if method != Method::GET {
            req = req.header("Content-Type", "application/json").body(body.to_string());
        }
        req
    }

    pub async fn send(&self, req: reqwest::RequestBuilder) -> Answer {
        let res = req.send().await.expect("request reaches the server");
        let status = res.status().as_u16();
        let headers = res.headers().clone();
        let bytes = res.bytes().await.unwrap().to_vec();
        let body = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        Answer { status, body, headers, bytes }
    }

    pub fn raw(&self, method: Method, path: &str) -> reqwest::RequestBuilder {
        self.http.request(method, format!("{}{path}", self.base))
    }

    /// Every message sent so far, as `{channel, to, subject, text}`.
    pub async fn outbox(&self) -> Vec<Value> {
        match std::env::var("MFA_SENDER").as_deref() {
            Ok("aws") => self.emulator_messages().await,
            _ => std::fs::read_to_string(&self.outbox)
                .unwrap_or_default()
                .lines()
                .map(|l| serde_json::from_str(l).unwrap())
                .collect(),
        }
    }

    /// What the SES/SNS emulator received, in sending order.
    async fn emulator_messages(&self) -> Vec<Value> {
        let endpoint =
            std::env::var("MFA_TEST_MOTO_ENDPOINT").expect("MFA_TEST_MOTO_ENDPOINT is set with MFA_SENDER=aws");
        let data: Value =
            self.http.get(format!("{endpoint}/moto-api/data.json")).send().await.unwrap().json().await.unwrap();
        let emails = data["ses"]["Message"].as_array().cloned().unwrap_or_default().into_iter().map(|m| {
            json!({
                "channel": "email",
                "to": m["destinations"]["ToAddresses"][0],
                "subject": m["subject"],
                "text": html_to_text(m["body"].as_str().unwrap_or_default()),
            })
        });
        let sms = data["sns"]["SMS"]
            .as_array()
            .cloned()
            .unwrap_or_default()
            .into_iter()
            .map(|m| json!({ "channel": "sms", "to": m["phone_number"], "subject": "", "text": m["message"] }));
        emails.chain(sms).collect()
    }

    /// The newest message to `to`, waiting briefly for it.
    pub async fn last_message(&self, to: &str) -> Value {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            if let Some(m) = self.outbox().await.into_iter().rev().find(|m| m["to"] == to) {
                return m;
            }
            assert!(Instant::now() < deadline, "no message to {to}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub async fn last_code(&self, to: &str) -> String {
        let text = self.last_message(to).await["text"].as_str().unwrap().to_string();
        six_digits(&text).unwrap_or_else(|| panic!("no 6-digit code in {text:?}"))
    }

    // ---- flows -------------------------------------------------------------------------

    pub async fn sign_up(&self, email: &str) -> String {
        let r = self
            .call("POST", "/v1/account", None, json!({"userId": "unique()", "email": email, "password": PASSWORD}))
            .await;
        assert_eq!(r.status, 201, "{:?}", r.body);
        r.body["$id"].as_str().unwrap().to_string()
    }

    /// Logs in and returns the session as the SDK keeps it (`X-Fallback-Cookies` value).
    pub async fn log_in(&self, email: &str) -> String {
        self.log_in_with_id(email).await.0
    }

    /// Logs in and returns the session as the SDK keeps it, and its id.
    pub async fn log_in_with_id(&self, email: &str) -> (String, String) {
        let r =
            self.call("POST", "/v1/account/sessions/email", None, json!({"email": email, "password": PASSWORD})).await;
        assert_eq!(r.status, 201, "{:?}", r.body);
        assert_eq!(r.body["factors"], json!(["password"]));
        assert_eq!(r.body["secret"], "");
        let fallback = r.header("x-fallback-cookies").expect("fallback cookie").to_string();
        (fallback, r.body["$id"].as_str().expect("session id").to_string())
    }

    pub async fn verify_email(&self, session: &str, email: &str) {
        let r = self
            .call("POST", "/v1/account/verifications/email", Some(session), json!({"url": "http://localhost/verify"}))
            .await;
        assert_eq!(r.status, 201, "{:?}", r.body);
        let text = self.last_message(email).await["text"].as_str().unwrap().to_string();
        let link = text.split_whitespace().find(|w| w.starts_with("http://localhost/verify?")).unwrap();
        let url = reqwest::Url::parse(link).unwrap();
        let q: std::collections::HashMap<_, _> = url.query_pairs().into_owned().collect();
        assert!(q.contains_key("expire"));
        let r = self
            .call("PUT", "/v1/account/verifications/email", None, json!({"userId": q["userId"], "secret": q["secret"]}))
            .await;
        assert_eq!(r.status, 200, "{:?}", r.body);
    }

    pub async fn verify_phone(&self, session: &str, user_id: &str, phone: &str) {
        let r =
            self.call("PATCH", "/v1/account/phone", Some(session), json!({"phone": phone, "password": PASSWORD})).await;
        assert_eq!(r.status, 200, "{:?}", r.body);
        assert_eq!(r.body["phoneVerification"], false);
        let r = self.call("POST", "/v1/account/verifications/phone", Some(session), json!({})).await;
        assert_eq!(r.status, 201, "{:?}", r.body);
        let code = self.last_code(phone).await;
        let r = self
            .call("PUT", "/v1/account/verifications/phone", Some(session), json!({"userId": user_id, "secret": code}))
            .await;
        assert_eq!(r.status, 200, "{:?}", r.body);
    }

    /// Adds and verifies a TOTP authenticator; returns its secret.
    pub async fn enrol_totp(&self, session: &str) -> Vec<u8> {
        let r = self.call("POST", "/v1/account/mfa/authenticators/totp", Some(session), json!({})).await;
        assert_eq!(r.status, 200, "{:?}", r.body);
        let secret = mfa_core::domain::totp::from_base32(r.body["secret"].as_str().unwrap()).unwrap();
        assert!(r.body["uri"].as_str().unwrap().starts_with("otpauth://totp/E2E%20App%3A"));
        let r = self
            .call("PUT", "/v1/account/mfa/authenticators/totp", Some(session), json!({"otp": totp_at(&secret, 0)}))
            .await;
        assert_eq!(r.status, 200, "{:?}", r.body);
        secret
    }

    pub async fn challenge(&self, session: &str, factor: &str) -> String {
        let r = self.call("POST", "/v1/account/mfa/challenges", Some(session), json!({"factor": factor})).await;
        assert_eq!(r.status, 201, "{:?}", r.body);
        r.body["$id"].as_str().unwrap().to_string()
    }

    pub async fn complete(&self, session: &str, challenge: &str, otp: &str) -> Answer {
        self.call("PUT", "/v1/account/mfa/challenges", Some(session), json!({"challengeId": challenge, "otp": otp}))
            .await
    }
}

/// The readable text of the HTML part the emulator keeps.
fn html_to_text(html: &str) -> String {
    let spaced = html.replace("<br>", "\n").replace("</p>", "\n");
    let mut text = String::new();
    let mut in_tag = false;
    for c in spaced.chars() {
        match c {
            '<' => in_tag = true,
            '>' => in_tag = false,
            c if !in_tag => text.push(c),
            _ => {}
        }
    }
    text.replace("&lt;", "<").replace("&gt;", ">").replace("&quot;", "\"").replace("&amp;", "&")
}

/// The TOTP code of the step `offset` steps from now.
pub fn totp_at(secret: &[u8], offset: i64) -> String {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as i64;
    mfa_core::domain::totp::code_at(secret, now + offset * 30_000).unwrap()
}

pub fn six_digits(text: &str) -> Option<String> {
    text.split(|c: char| !c.is_ascii_digit()).find(|w| w.len() == 6).map(str::to_string)
}

/// A user with verified email, phone and TOTP, recovery codes and MFA on.
pub struct Enrolled {
    pub id: String,
    pub email: String,
    pub phone: String,
    pub totp: Vec<u8>,
    pub recovery_codes: Vec<String>,
}

pub async fn enrolled(server: &Server, name: &str) -> Enrolled {
    let email = format!("{name}@example.com");
    // Random, so that tests sharing one SMS emulator never read each other's messages.
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().subsec_nanos();
    let phone = format!("+1206{:07}", nanos % 10_000_000);
    let id = server.sign_up(&email).await;
    let session = server.log_in(&email).await;

    // 1. recovery codes
    let r = server.call("POST", "/v1/account/mfa/recovery-codes", Some(&session), json!({})).await;
    assert_eq!(r.status, 201, "{:?}", r.body);
    let recovery_codes: Vec<String> =
        r.body["recoveryCodes"].as_array().unwrap().iter().map(|c| c.as_str().unwrap().to_string()).collect();
    // 2. verify email, phone and an authenticator
    server.verify_email(&session, &email).await;
    server.verify_phone(&session, &id, &phone).await;
    let totp = server.enrol_totp(&session).await;
    // 3. enable MFA
    let r = server.call("PATCH", "/v1/account/mfa", Some(&session), json!({"mfa": true})).await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!(r.body["mfa"], true);
    Enrolled { id, email, phone, totp, recovery_codes }
}
