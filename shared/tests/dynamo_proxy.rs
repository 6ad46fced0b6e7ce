//! DynamoDB failing inside a request. A proxy between the store and DynamoDB Local counts
//! the DynamoDB requests of an API step and, at each of them in turn, loses the answer of
//! an applied write, drops the connection or throttles: once (the SDK's retry may then
//! succeed), from there on (every retry fails too), or for every request of one operation.
//! Every step answers its success or a clear 5xx with an Appwrite body, and what it leaves
//! behind is consistent: checked through the API afterwards, with the proxy passing all.
//!
//! Runs against DynamoDB Local when `MFA_TEST_DYNAMODB_ENDPOINT` names one (e.g. from
//! `infra/dynamodb-local.sh`); skipped otherwise, failed with `MFA_REQUIRE_DYNAMODB=1`.
//!
//! What the invariants allow but a client would not expect is printed as a finding, with
//! the exact DynamoDB request sequence: a 5xx for a change that was made (its answer, or
//! the read after it, lost), and the one 4xx a lost answer causes, which its test names
//! as tolerated. Any other 4xx fails the test, as does any half state.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use aws_sdk_dynamodb::config::retry::{RetryConfig, RetryPartition, TokenBucket};
use aws_sdk_dynamodb::config::{Credentials, Region};
use aws_sdk_dynamodb::types::AttributeValue;
use lambda_http::http::Request;
use lambda_http::Body;
use mfa_core::clock::{Clock, ManualClock, Millis, DAY, HOUR};
use mfa_core::config::Config;
use mfa_core::delivery::Message;
use mfa_core::store::dynamo::{create_table, DynamoStore};
use mfa_core::App;
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::OnceCell;

mod common;
use common::Recorder;

const PASSWORD: &str = "a long password";
const START: Millis = 1_800_000_000_000;

// ---------------------------------------------------------------------------------------
// The proxy

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fault {
    /// Forwarded, so DynamoDB applies it; its answer is read and thrown away and the
    /// client's connection closed.
    Lose,
    /// The client's connection is closed; nothing reaches DynamoDB.
    Drop,
    /// Answered as DynamoDB sheds load; nothing reaches DynamoDB.
    Throttle,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Target {
    /// The k-th DynamoDB request since arming (SDK retries count as requests).
    At(usize),
    /// The k-th request and every later one.
    From(usize),
    /// Every request of this operation.
    Op(String),
}

#[derive(Debug, Clone)]
struct Rule {
    fault: Fault,
    target: Target,
}

/// The DynamoDB requests of a run: each one's operation, and the fault applied to it.
type Log = Vec<(String, Option<Fault>)>;

#[derive(Default)]
struct Plan {
    rule: Option<Rule>,
    seen: usize,
    log: Log,
    /// What went wrong in the proxy itself; any of it voids the test.
    errors: Vec<String>,
}

impl Plan {
    fn next(&mut self, op: &str) -> Option<Fault> {
        let n = self.seen;
        self.seen += 1;
        let fault = self.rule.as_ref().and_then(|rule| {
            let hit = match &rule.target {
                Target::At(k) => n == *k,
                Target::From(k) => n >= *k,
                Target::Op(name) => name == op,
            };
            hit.then_some(rule.fault)
        });
        self.log.push((op.to_string(), fault));
        fault
    }
}

struct Proxy {
    endpoint: String,
    plan: Arc<Mutex<Plan>>,
    accept: tokio::task::JoinHandle<()>,
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.accept.abort();
    }
}

impl Proxy {
    async fn start(upstream: String) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr: SocketAddr = listener.local_addr().unwrap();
        let plan = Arc::new(Mutex::new(Plan::default()));
        let shared = plan.clone();
        let accept = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let (plan, upstream) = (shared.clone(), upstream.clone());
                tokio::spawn(async move {
                    if let Err(e) = serve(client, &upstream, &plan).await {
                        plan.lock().unwrap().errors.push(e);
                    }
                });
            }
        });
        Proxy { endpoint: format!("http://{addr}"), plan, accept }
    }

    fn arm(&self, rule: Option<Rule>) {
        let mut plan = self.plan.lock().unwrap();
        plan.rule = rule;
        plan.seen = 0;
        plan.log.clear();
    }

    /// Passes everything from now on; returns what happened since arming.
    fn disarm(&self) -> Log {
        let mut plan = self.plan.lock().unwrap();
        plan.rule = None;
        assert!(plan.errors.is_empty(), "the proxy failed: {:?}", plan.errors);
        std::mem::take(&mut plan.log)
    }
}

/// Serves one client connection, request by request. Each forwarded request gets its own
/// upstream connection, closed by DynamoDB after its answer, so answers need no parsing.
async fn serve(mut client: TcpStream, upstream: &str, plan: &Mutex<Plan>) -> Result<(), String> {
    let mut buf = Vec::new();
    loop {
        let (head, body) = match read_request(&mut client, &mut buf).await {
            Ok(Some(request)) => request,
            Err(e) if e.kind() == std::io::ErrorKind::InvalidData => return Err(e.to_string()),
            // The SDK closing a pooled connection, between requests or not, is no error.
            Ok(None) | Err(_) => return Ok(()),
        };
        let op = header(&head, "x-amz-target")
            .and_then(|t| t.strip_prefix("DynamoDB_20120810."))
            .ok_or_else(|| format!("not a DynamoDB request: {head}"))?
            .to_string();
        let fault = plan.lock().unwrap().next(&op);
        match fault {
            Some(Fault::Drop) => return Ok(()),
            Some(Fault::Throttle) => {
                let body =
                    r#"{"__type":"com.amazonaws.dynamodb.v20120810#ThrottlingException","message":"Rate exceeded"}"#;
                let answer = format!(
                    "HTTP/1.1 400 Bad Request\r\nContent-Type: application/x-amz-json-1.0\r\n\
                     Content-Length: {}\r\nx-amzn-RequestId: throttled\r\n\r\n{body}",
                    body.len()
                );
                if client.write_all(answer.as_bytes()).await.is_err() {
                    return Ok(());
                }
            }
            Some(Fault::Lose) | None => {
                let answer = forward(upstream, &head, &body).await?;
                if fault == Some(Fault::Lose) {
                    return Ok(());
                }
                if client.write_all(&answer).await.is_err() {
                    return Ok(());
                }
            }
        }
    }
}

async fn forward(upstream: &str, head: &str, body: &[u8]) -> Result<Vec<u8>, String> {
    let io = |e: std::io::Error| format!("DynamoDB Local at {upstream}: {e}");
    let mut conn = TcpStream::connect(upstream).await.map_err(io)?;
    let mut request: String = head
        .trim_end()
        .split("\r\n")
        .filter(|l| !l.to_ascii_lowercase().starts_with("connection:"))
        .fold(String::new(), |mut out, line| {
            out.push_str(line);
            out.push_str("\r\n");
            out
        });
    request.push_str("Connection: close\r\n\r\n");
    conn.write_all(request.as_bytes()).await.map_err(io)?;
    conn.write_all(body).await.map_err(io)?;
    let mut answer = Vec::new();
    conn.read_to_end(&mut answer).await.map_err(io)?;
    if !answer.starts_with(b"HTTP/1.1 ") {
        return Err(format!("not an HTTP answer from {upstream}"));
    }
    Ok(answer)
}

/// One HTTP/1.1 request (head, and a body of Content-Length bytes) from `stream`; what
/// follows stays in `buf`. `None` when the client closed the connection between requests.
async fn read_request(stream: &mut TcpStream, buf: &mut Vec<u8>) -> std::io::Result<Option<(String, Vec<u8>)>> {
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n").map(|at| at + 4) {
            let head = String::from_utf8_lossy(&buf[..end]).into_owned();
            let invalid = |what: &str| std::io::Error::new(std::io::ErrorKind::InvalidData, what.to_string());
            if header(&head, "transfer-encoding").is_some() {
                return Err(invalid("chunked request bodies are not handled"));
            }
            let len: usize = match header(&head, "content-length") {
                Some(v) => v.parse().map_err(|_| invalid("bad Content-Length"))?,
                None => 0,
            };
            while buf.len() < end + len {
                if read_more(stream, buf).await? == 0 {
                    return Err(std::io::ErrorKind::UnexpectedEof.into());
                }
            }
            let body = buf[end..end + len].to_vec();
            buf.drain(..end + len);
            return Ok(Some((head, body)));
        }
        if read_more(stream, buf).await? == 0 {
            return Ok(None);
        }
    }
}

async fn read_more(stream: &mut TcpStream, buf: &mut Vec<u8>) -> std::io::Result<usize> {
    let mut chunk = [0u8; 16 * 1024];
    let n = stream.read(&mut chunk).await?;
    buf.extend_from_slice(&chunk[..n]);
    Ok(n)
}

fn header<'a>(head: &'a str, name: &str) -> Option<&'a str> {
    head.split("\r\n")
        .filter_map(|line| line.split_once(':'))
        .find(|(n, _)| n.trim().eq_ignore_ascii_case(name))
        .map(|(_, v)| v.trim())
}

// ---------------------------------------------------------------------------------------
// DynamoDB Local

/// DynamoDB Local's endpoint and this run's table, or `None` (skip) when no endpoint is
/// configured and none is required.
async fn dynamodb() -> Option<(String, String)> {
    static TABLE: OnceCell<String> = OnceCell::const_new();
    let required = std::env::var("MFA_REQUIRE_DYNAMODB").is_ok_and(|v| v == "1");
    let endpoint = match std::env::var("MFA_TEST_DYNAMODB_ENDPOINT") {
        Ok(endpoint) if !endpoint.trim().is_empty() => endpoint.trim().trim_end_matches('/').to_string(),
        _ if required => panic!("MFA_REQUIRE_DYNAMODB=1 but MFA_TEST_DYNAMODB_ENDPOINT is not set"),
        _ => {
            eprintln!("skipped: set MFA_TEST_DYNAMODB_ENDPOINT to run the DynamoDB proxy fault tests");
            return None;
        }
    };
    let table = TABLE
        .get_or_init(|| async {
            let name = format!("mfa-proxy-faults-{}-{}", std::process::id(), mfa_core::domain::crypto::new_id());
            if let Err(e) = create_table(&direct_client(&endpoint).await, &name).await {
                panic!("cannot create a DynamoDB table at {endpoint}: {e}");
            }
            name
        })
        .await;
    Some((endpoint, table.clone()))
}

fn sdk_config(endpoint: &str) -> aws_config::ConfigLoader {
    aws_config::defaults(aws_config::BehaviorVersion::latest())
        .region(Region::new("us-east-1"))
        .endpoint_url(endpoint)
        .credentials_provider(Credentials::new("test", "test", None, None, "proxy-fault-tests"))
}

/// A client straight to DynamoDB Local, for setting up and reading the table.
async fn direct_client(endpoint: &str) -> aws_sdk_dynamodb::Client {
    aws_sdk_dynamodb::Client::new(&sdk_config(endpoint).load().await)
}

/// The store's client, through the proxy: the production timeouts and retry mode (three
/// attempts), with short backoffs so that the many faults stay fast. Its own unlimited
/// retry quota: the default one is shared by every client of the process and would run
/// dry over hundreds of injected faults, turning retries off part way.
async fn store_client(endpoint: &str) -> aws_sdk_dynamodb::Client {
    let timeouts = aws_config::timeout::TimeoutConfig::builder()
        .connect_timeout(Duration::from_secs(2))
        .operation_attempt_timeout(Duration::from_secs(3))
        .operation_timeout(Duration::from_secs(8))
        .build();
    let retry = RetryConfig::standard()
        .with_max_attempts(3)
        .with_initial_backoff(Duration::from_millis(5))
        .with_max_backoff(Duration::from_millis(20));
    let sdk = sdk_config(endpoint).timeout_config(timeouts).retry_config(retry).load().await;
    let quota = RetryPartition::custom("dynamo-proxy-faults").token_bucket(TokenBucket::unlimited()).build();
    aws_sdk_dynamodb::Client::from_conf(aws_sdk_dynamodb::config::Builder::from(&sdk).retry_partition(quota).build())
}

// ---------------------------------------------------------------------------------------
// A user and the API, through the proxy

struct Answer {
    status: u16,
    body: Value,
    session: Option<String>,
}

impl Answer {
    fn kind(&self) -> &str {
        self.body["type"].as_str().unwrap_or("")
    }
}

/// How a faulted step answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    Success,
    ServerError,
    /// A tolerated 4xx: the step's outcome misreported.
    Misreport,
}

/// One user of one test, and what its faulted steps answered.
struct World {
    app: App,
    proxy: Proxy,
    clock: ManualClock,
    sender: Arc<Recorder>,
    table: String,
    direct: aws_sdk_dynamodb::Client,
    email: String,
    user_id: String,
    /// The user's recovery codes not spent yet, as last learnt.
    codes: Mutex<Vec<String>>,
    outcomes: Mutex<Vec<Outcome>>,
    findings: Mutex<Vec<String>>,
    started: Instant,
}

/// Each world gets its own stretch of time, and each run in it its own hour: rate-limit
/// counters (per IP, and requests here carry none) are per window, so neither other tests
/// nor earlier runs use up a run's budget.
static NEXT_WORLD: AtomicI64 = AtomicI64::new(0);

impl World {
    async fn new((endpoint, table): (String, String), name: &str) -> World {
        let upstream = url::Url::parse(&endpoint).ok().and_then(|u| Some(format!("{}:{}", u.host_str()?, u.port()?)));
        let proxy = Proxy::start(upstream.expect("MFA_TEST_DYNAMODB_ENDPOINT is http://host:port")).await;
        let clock = ManualClock::at(START + NEXT_WORLD.fetch_add(1, Ordering::SeqCst) * 100 * DAY);
        let sender = Arc::new(Recorder::default());
        let app = App::new(
            Config::for_project("p", b"a test server key of sufficient length"),
            Arc::new(DynamoStore::new(store_client(&proxy.endpoint).await, table.clone())),
            sender.clone(),
            Arc::new(clock.clone()),
        );
        let direct = direct_client(&endpoint).await;
        let mut world = World {
            app,
            proxy,
            clock,
            sender,
            table,
            direct,
            // No digits: codes are read from messages that name the address.
            email: format!("{name}@example.com"),
            user_id: String::new(),
            codes: Mutex::new(Vec::new()),
            outcomes: Mutex::new(Vec::new()),
            findings: Mutex::new(Vec::new()),
            started: Instant::now(),
        };
        let r = world
            .call(
                "POST",
                "/v1/account",
                None,
                json!({"userId": "unique()", "email": world.email, "password": PASSWORD}),
            )
            .await;
        assert_eq!(r.status, 201, "{}", r.body);
        world.user_id = r.body["$id"].as_str().unwrap().to_string();
        world
    }

    async fn call(&self, method: &str, path: &str, session: Option<&str>, body: Value) -> Answer {
        let mut req = Request::builder().method(method).uri(path).header("content-type", "application/json");
        if let Some(s) = session {
            req = req.header("x-fallback-cookies", s);
        }
        let body = if method == "GET" { Body::Empty } else { Body::Text(body.to_string()) };
        let res = self.app.handle(req.body(body).unwrap(), None).await;
        let session = res.headers().get("x-fallback-cookies").map(|v| v.to_str().unwrap().to_string());
        let status = res.status().as_u16();
        Answer { status, body: serde_json::from_slice(res.body().as_ref()).unwrap_or(Value::Null), session }
    }

    /// A fresh hour: rate-limit windows and challenges of earlier runs are over.
    fn next_run(&self) {
        self.clock.advance(HOUR);
    }

    async fn log_in(&self) -> Answer {
        self.call("POST", "/v1/account/sessions/email", None, json!({"email": self.email, "password": PASSWORD})).await
    }

    async fn session(&self) -> String {
        let r = self.log_in().await;
        assert_eq!(r.status, 201, "{}", r.body);
        r.session.unwrap()
    }

    /// Recovery codes, a verified email and MFA on.
    async fn enable_mfa(&self) {
        let s = self.session().await;
        let r = self.call("POST", "/v1/account/mfa/recovery-codes", Some(&s), json!({})).await;
        assert_eq!(r.status, 201, "{}", r.body);
        *self.codes.lock().unwrap() = serde_json::from_value(r.body["recoveryCodes"].clone()).unwrap();
        let r =
            self.call("POST", "/v1/account/verifications/email", Some(&s), json!({"url": "https://a.example/v"})).await;
        assert_eq!(r.status, 201, "{}", r.body);
        let text = self.sender.last_text();
        let secret = text.split("secret=").nth(1).unwrap().split('&').next().unwrap().to_string();
        let confirm = json!({"userId": self.user_id, "secret": secret});
        let r = self.call("PUT", "/v1/account/verifications/email", None, confirm).await;
        assert_eq!(r.status, 200, "{}", r.body);
        let r = self.call("PATCH", "/v1/account/mfa", Some(&s), json!({"mfa": true})).await;
        assert_eq!(r.status, 200, "{}", r.body);
    }

    /// A verified TOTP authenticator and MFA on; its secret.
    async fn enable_totp(&self) -> Vec<u8> {
        let s = self.session().await;
        let r = self.call("POST", "/v1/account/mfa/recovery-codes", Some(&s), json!({})).await;
        assert_eq!(r.status, 201, "{}", r.body);
        let r = self.call("POST", "/v1/account/mfa/authenticators/totp", Some(&s), json!({})).await;
        assert_eq!(r.status, 200, "{}", r.body);
        let secret = mfa_core::domain::totp::from_base32(r.body["secret"].as_str().unwrap()).unwrap();
        let otp = mfa_core::domain::totp::code_at(&secret, self.clock.now()).unwrap();
        let r = self.call("PUT", "/v1/account/mfa/authenticators/totp", Some(&s), json!({"otp": otp})).await;
        assert_eq!(r.status, 200, "{}", r.body);
        let r = self.call("PATCH", "/v1/account/mfa", Some(&s), json!({"mfa": true})).await;
        assert_eq!(r.status, 200, "{}", r.body);
        secret
    }

    async fn challenge(&self, session: &str, factor: &str) -> String {
        let r = self.call("POST", "/v1/account/mfa/challenges", Some(session), json!({"factor": factor})).await;
        assert_eq!(r.status, 201, "{}", r.body);
        r.body["$id"].as_str().unwrap().to_string()
    }

    async fn complete(&self, session: &str, challenge: &str, otp: &str) -> Answer {
        let body = json!({"challengeId": challenge, "otp": otp});
        self.call("PUT", "/v1/account/mfa/challenges", Some(session), body).await
    }

    fn sent(&self) -> usize {
        self.sender.messages().len()
    }

    fn code_in(message: &Message) -> String {
        message.text.split(|c: char| !c.is_ascii_digit()).find(|w| w.len() == 6).unwrap().to_string()
    }

    fn last_code(&self) -> String {
        World::code_in(self.sender.messages().last().unwrap())
    }

    /// A signed-in session that passed an email challenge just now.
    async fn full_session(&self) -> String {
        let s = self.session().await;
        let id = self.challenge(&s, "email").await;
        let r = self.complete(&s, &id, &self.last_code()).await;
        assert_eq!(r.status, 200, "{}", r.body);
        s
    }

    /// Whether `code` completes a recovery-code challenge (and so is spent).
    async fn recovery_code_works(&self, session: &str, code: &str) -> bool {
        let id = self.challenge(session, "recoverycode").await;
        let r = self.complete(session, &id, code).await;
        match (r.status, r.kind()) {
            (200, _) => true,
            (401, "user_invalid_token") => false,
            _ => panic!("checking a recovery code: {} {}", r.status, r.body),
        }
    }

    /// The id of the newest email challenge stored in any of the user's sessions, read
    /// from the table (a session item's `challenge_email`): a challenge whose creation
    /// answered 5xx has no id elsewhere.
    async fn stored_email_challenge(&self) -> Option<String> {
        let out = self
            .direct
            .query()
            .table_name(&self.table)
            .key_condition_expression("pk = :pk AND begins_with(sk, :sessions)")
            .expression_attribute_values(":pk", AttributeValue::S(format!("USER#{}", self.user_id)))
            .expression_attribute_values(":sessions", AttributeValue::S("SESSION#".into()))
            .consistent_read(true)
            .send()
            .await
            .unwrap();
        let challenges = out.items.unwrap_or_default().into_iter().filter_map(|item| {
            let AttributeValue::M(c) = item.get("challenge_email")? else { return None };
            Some((c["createdAt"].as_n().unwrap().parse::<i64>().unwrap(), c["id"].as_s().unwrap().clone()))
        });
        challenges.max().map(|(_, id)| id)
    }

    /// Runs one step under `rule`; returns its answer and the DynamoDB requests it made.
    async fn faulted(&self, rule: &Option<Rule>, step: impl std::future::Future<Output = Answer>) -> (Answer, Log) {
        self.proxy.arm(rule.clone());
        let answer = step.await;
        let log = self.proxy.disarm();
        if rule.is_some() {
            assert!(log.iter().any(|(_, f)| f.is_some()), "{rule:?} met no request: {log:?}");
        }
        (answer, log)
    }

    /// Sorts a faulted step's answer: its success, a 5xx with an Appwrite body, or one of
    /// the `tolerated` 4xx (a known misreport, recorded as a finding). Anything else fails.
    fn judge(
        &self,
        step: &str,
        rule: &Option<Rule>,
        log: &[(String, Option<Fault>)],
        r: &Answer,
        ok: u16,
        tolerated: &[(u16, &str)],
    ) -> Outcome {
        let outcome = if r.status == ok {
            Outcome::Success
        } else if r.status >= 500 {
            assert_eq!(r.body["code"], r.status, "{step}: {}", r.body);
            assert_eq!(r.kind(), "general_server_error", "{step}: {}", r.body);
            assert!(r.body["version"].is_string(), "{step}: {}", r.body);
            let message = r.body["message"].as_str().unwrap_or_default();
            assert!(!message.is_empty() && !message.contains("127.0.0.1"), "{step}: {}", r.body);
            Outcome::ServerError
        } else if tolerated.contains(&(r.status, r.kind())) && r.body["code"] == r.status {
            self.note(format!(
                "{step} under {}: {}: answered {} {} ({})",
                describe(rule),
                sequence(log),
                r.status,
                r.kind(),
                r.body["message"].as_str().unwrap_or_default()
            ));
            Outcome::Misreport
        } else {
            panic!("{step} under {}: {} {}; DynamoDB requests: {}", describe(rule), r.status, r.body, sequence(log));
        };
        self.outcomes.lock().unwrap().push(outcome);
        outcome
    }

    fn note(&self, finding: String) {
        self.findings.lock().unwrap().push(finding);
    }

    /// Prints what the faulted steps answered and every finding.
    fn report(&self, step: &str, requests: &[String]) {
        let outcomes = self.outcomes.lock().unwrap();
        let count = |o: Outcome| outcomes.iter().filter(|x| **x == o).count();
        eprintln!(
            "{step}: {} requests in pass-through ({}); {} runs in {:.1?}: {} succeeded, {} answered 5xx, {} misreported",
            requests.len(),
            requests.join(", "),
            outcomes.len(),
            self.started.elapsed(),
            count(Outcome::Success),
            count(Outcome::ServerError),
            count(Outcome::Misreport)
        );
        for finding in self.findings.lock().unwrap().iter() {
            eprintln!("  finding: {finding}");
        }
    }
}

fn describe(rule: &Option<Rule>) -> String {
    match rule {
        None => "no fault".into(),
        Some(Rule { fault, target: Target::At(k) }) => format!("{fault:?} at request {k} only"),
        Some(Rule { fault, target: Target::From(k) }) => format!("{fault:?} from request {k} on"),
        Some(Rule { fault, target: Target::Op(op) }) => format!("{fault:?} at every {op}"),
    }
}

fn sequence(log: &[(String, Option<Fault>)]) -> String {
    let each = log.iter().enumerate().map(|(i, (op, fault))| match fault {
        Some(f) => format!("#{i} {op} [{f:?}]"),
        None => format!("#{i} {op}"),
    });
    each.collect::<Vec<_>>().join(", ")
}

/// Each of `faults` at every request of a step that made `requests` in pass-through: once,
/// from there on, and at every request of the same operation.
fn rules(requests: &[String], faults: &[Fault]) -> Vec<Rule> {
    let mut ops = requests.to_vec();
    ops.sort();
    ops.dedup();
    let mut rules = Vec::new();
    for &fault in faults {
        for k in 0..requests.len() {
            rules.push(Rule { fault, target: Target::At(k) });
            rules.push(Rule { fault, target: Target::From(k) });
        }
        rules.extend(ops.iter().map(|op| Rule { fault, target: Target::Op(op.clone()) }));
    }
    rules
}

const ALL: [Fault; 3] = [Fault::Lose, Fault::Drop, Fault::Throttle];

/// The operations of a pass-through run.
fn requests(log: &[(String, Option<Fault>)]) -> Vec<String> {
    log.iter().map(|(op, _)| op.clone()).collect()
}

// ---------------------------------------------------------------------------------------
// The steps

/// Completes a fresh email challenge with the code sent, after `wrong` wrong codes, under
/// `rule`; then checks through the API that the session was upgraded and the challenge
/// spent together, or neither.
async fn complete_run(w: &World, rule: Option<Rule>, wrong: usize, tolerated: &[(u16, &str)]) -> Log {
    w.next_run();
    let s = w.session().await;
    let id = w.challenge(&s, "email").await;
    let code = w.last_code();
    let wrong_code = if code == "000000" { "111111" } else { "000000" };
    for _ in 0..wrong {
        let r = w.complete(&s, &id, wrong_code).await;
        assert_eq!((r.status, r.kind()), (401, "user_invalid_token"), "{}", r.body);
    }
    let step = "PUT /v1/account/mfa/challenges";
    let (r, log) = w.faulted(&rule, w.complete(&s, &id, &code)).await;
    let outcome = w.judge(step, &rule, &log, &r, 200, tolerated);
    let at = || format!("under {}: {}", describe(&rule), sequence(&log));

    let account = w.call("GET", "/v1/account", Some(&s), json!({})).await;
    let again = w.complete(&s, &id, &code).await;
    match (account.status, account.kind()) {
        (200, _) => {
            let spent = (again.status, again.kind()) == (401, "user_invalid_token");
            assert!(spent, "upgraded, and the challenge completes again: {}", at());
            if outcome != Outcome::Success {
                w.note(format!("{step} {}: answered {} {}, yet the session was upgraded", at(), r.status, r.kind()));
            }
        }
        (401, "user_more_factors_required") => {
            assert_ne!(outcome, Outcome::Success, "answered 200 without upgrading: {}", at());
            match (again.status, again.kind()) {
                (200, _) => {}
                // The attempt whose answer was lost counted, and so did its retry.
                (401, "user_invalid_token") if wrong > 0 => {
                    w.note(format!(
                        "{step} {}: answered {} {}; the right code used up the challenge's last attempts \
                         without upgrading the session",
                        at(),
                        r.status,
                        r.kind()
                    ));
                    let fresh = w.challenge(&s, "email").await;
                    let done = w.complete(&s, &fresh, &w.last_code()).await;
                    assert_eq!(done.status, 200, "a new challenge completes: {} {}", done.body, at());
                }
                _ => panic!("not upgraded, and the challenge is spent: {} {}", again.body, at()),
            }
        }
        _ => panic!("GET /v1/account: {} {} {}", account.status, account.body, at()),
    }
    log
}

/// Completing an email challenge upgrades the session and spends the challenge together,
/// or does neither.
#[tokio::test]
async fn completing_a_challenge_upgrades_the_session_and_spends_it_together_or_not_at_all() {
    let Some(db) = dynamodb().await else { return };
    let w = World::new(db, "complete").await;
    w.enable_mfa().await;
    let baseline = requests(&complete_run(&w, None, 0, &[]).await);
    for rule in rules(&baseline, &ALL) {
        complete_run(&w, Some(rule), 0, &[]).await;
    }
    w.report("complete an email challenge", &baseline);
}

/// The same on a challenge's last attempt, where an SDK retry of a write that already
/// spent the attempt (its answer lost) would find none left, were writes not idempotent.
/// Only lost answers apply a write.
#[tokio::test]
async fn completing_a_challenge_on_its_last_attempt_upgrades_and_spends_together_or_not_at_all() {
    let Some(db) = dynamodb().await else { return };
    let w = World::new(db, "lastattempt").await;
    w.enable_mfa().await;
    // No 4xx is tolerated: a retried transaction reports its first outcome.
    let tolerated = [];
    let wrong = mfa_core::domain::challenge::MAX_ATTEMPTS as usize - 1;
    let baseline = requests(&complete_run(&w, None, wrong, &tolerated).await);
    for rule in rules(&baseline, &[Fault::Lose]) {
        complete_run(&w, Some(rule), wrong, &tolerated).await;
    }
    w.report("complete an email challenge on its last attempt", &baseline);
}

/// A challenge is stored before its message is sent (so that limits hold), and a sent code
/// always completes its challenge. A stored challenge without a message is left only when
/// the store's answer was lost: the request answered 5xx, so nobody learned its id, and
/// nobody ever learned its code; the next challenge replaces it.
#[tokio::test]
async fn creating_a_challenge_never_leaves_a_usable_one_whose_code_was_not_sent() {
    let Some(db) = dynamodb().await else { return };
    let w = World::new(db, "create").await;
    w.enable_mfa().await;

    async fn run(w: &World, rule: Option<Rule>) -> Log {
        w.next_run();
        let s = w.session().await;
        let before = w.stored_email_challenge().await;
        let sent_before = w.sent();
        let step = w.call("POST", "/v1/account/mfa/challenges", Some(&s), json!({"factor": "email"}));
        let (r, log) = w.faulted(&rule, step).await;
        let outcome = w.judge("POST /v1/account/mfa/challenges", &rule, &log, &r, 201, &[]);
        let at = || format!("under {}: {}", describe(&rule), sequence(&log));

        let sent: Vec<Message> = w.sender.messages()[sent_before..].to_vec();
        assert!(sent.len() <= 1, "{} messages for one challenge: {}", sent.len(), at());
        let stored = w.stored_email_challenge().await.filter(|id| Some(id) != before.as_ref());
        if outcome == Outcome::Success {
            assert_eq!(sent.len(), 1, "{}", at());
            assert_eq!(stored.as_deref(), r.body["$id"].as_str(), "the answered challenge is stored: {}", at());
        }
        if let (Some(_), true) = (&stored, sent.is_empty()) {
            assert_ne!(outcome, Outcome::Success, "an answered challenge had its code sent: {}", at());
            assert!(r.status >= 500, "{}", at());
            w.note(format!(
                "POST /v1/account/mfa/challenges {}: answered {}; the challenge was stored, its code never sent",
                at(),
                r.status
            ));
            let next = w.call("POST", "/v1/account/mfa/challenges", Some(&s), json!({"factor": "email"})).await;
            assert_eq!(next.status, 201, "a new challenge replaces it: {}", at());
            let code = World::code_in(w.sender.messages().last().unwrap());
            let id = next.body["$id"].as_str().unwrap().to_string();
            let done = w.complete(&s, &id, &code).await;
            assert_eq!(done.status, 200, "{} {}", done.body, at());
        } else if let Some(id) = stored {
            assert_eq!(sent.len(), 1, "a challenge stored whose code was never sent: {}", at());
            if outcome != Outcome::Success {
                w.note(format!(
                    "POST /v1/account/mfa/challenges {}: answered {}, yet the challenge was stored",
                    at(),
                    r.status
                ));
            }
            let done = w.complete(&s, &id, &World::code_in(&sent[0])).await;
            assert_eq!(done.status, 200, "the sent code completes the stored challenge: {} {}", done.body, at());
        }
        log
    }

    let baseline = requests(&run(&w, None).await);
    for rule in rules(&baseline, &ALL) {
        run(&w, Some(rule)).await;
    }
    w.report("create an email challenge", &baseline);
}

/// Replacing recovery codes leaves all the old ones or all the new ones, never a mix;
/// and the caller can always end up holding codes that work.
#[tokio::test]
async fn replacing_recovery_codes_replaces_all_or_none() {
    let Some(db) = dynamodb().await else { return };
    let w = World::new(db, "replace").await;
    w.enable_mfa().await;

    async fn run(w: &World, rule: Option<Rule>) -> Log {
        w.next_run();
        let s = w.full_session().await;
        let old = w.codes.lock().unwrap().clone();
        let step = w.call("PATCH", "/v1/account/mfa/recovery-codes", Some(&s), json!({}));
        let (r, log) = w.faulted(&rule, step).await;
        let outcome = w.judge("PATCH /v1/account/mfa/recovery-codes", &rule, &log, &r, 200, &[]);
        let at = || format!("under {}: {}", describe(&rule), sequence(&log));
        let codes_of = |r: &Answer| -> Vec<String> { serde_json::from_value(r.body["recoveryCodes"].clone()).unwrap() };

        let old_works = w.recovery_code_works(&s, &old[0]).await;
        let current = match (outcome, old_works) {
            (Outcome::Success, true) => panic!("new codes answered, and an old one still works: {}", at()),
            (Outcome::Success, false) => codes_of(&r),
            (_, true) => old.clone(),
            (_, false) => {
                // Replaced, but the caller never saw the new codes: it can replace them
                // again from the same session.
                w.note(format!(
                    "PATCH /v1/account/mfa/recovery-codes {}: answered {} {}, yet the codes were replaced",
                    at(),
                    r.status,
                    r.kind()
                ));
                let again = w.call("PATCH", "/v1/account/mfa/recovery-codes", Some(&s), json!({})).await;
                assert_eq!(again.status, 200, "replacing again: {} {}", again.body, at());
                codes_of(&again)
            }
        };
        if current != old {
            assert!(w.recovery_code_works(&s, &current[0]).await, "the new codes work: {}", at());
        }
        // The code just checked is spent.
        *w.codes.lock().unwrap() = current[1..].to_vec();
        log
    }

    let baseline = requests(&run(&w, None).await);
    for rule in rules(&baseline, &ALL) {
        run(&w, Some(rule)).await;
    }
    w.report("replace recovery codes", &baseline);
}

/// Signing in answers a usable session or a 5xx, and never keeps the user out afterwards.
#[tokio::test]
async fn signing_in_answers_a_usable_session_or_a_clear_error() {
    let Some(db) = dynamodb().await else { return };
    let w = World::new(db, "signin").await;

    async fn run(w: &World, rule: Option<Rule>) -> Log {
        w.next_run();
        let (r, log) = w.faulted(&rule, w.log_in()).await;
        let outcome = w.judge("POST /v1/account/sessions/email", &rule, &log, &r, 201, &[]);
        let at = || format!("under {}: {}", describe(&rule), sequence(&log));
        if outcome == Outcome::Success {
            let account = w.call("GET", "/v1/account", r.session.as_deref(), json!({})).await;
            assert_eq!(account.status, 200, "the answered session works: {} {}", account.body, at());
        }
        let again = w.session().await;
        let account = w.call("GET", "/v1/account", Some(&again), json!({})).await;
        assert_eq!(account.status, 200, "signing in again works: {}", at());
        log
    }

    let baseline = requests(&run(&w, None).await);
    for rule in rules(&baseline, &ALL) {
        run(&w, Some(rule)).await;
    }
    w.report("sign in", &baseline);
}

/// Signing out answers 204 or a 5xx, and the session is over whenever it answered 204: a
/// write whose answer was lost and which the SDK sent again must not report the session it
/// ended as one it never found (404).
#[tokio::test]
async fn signing_out_ends_the_session_and_says_so() {
    let Some(db) = dynamodb().await else { return };
    let w = World::new(db, "signout").await;

    async fn run(w: &World, rule: Option<Rule>) -> Log {
        w.next_run();
        let s = w.session().await;
        let step = w.call("DELETE", "/v1/account/sessions/current", Some(&s), json!({}));
        let (r, log) = w.faulted(&rule, step).await;
        let outcome = w.judge("DELETE /v1/account/sessions/current", &rule, &log, &r, 204, &[]);
        let at = || format!("under {}: {}", describe(&rule), sequence(&log));
        let account = w.call("GET", "/v1/account", Some(&s), json!({})).await;
        if outcome == Outcome::Success {
            assert_eq!(account.status, 401, "the ended session is over: {} {}", account.body, at());
        }
        // Still live only when the step failed before its write: then it signs out now.
        let live = account.status == 200;
        let again = w.call("DELETE", "/v1/account/sessions/current", Some(&s), json!({})).await;
        assert_eq!(again.status, if live { 204 } else { 401 }, "{} {}", again.body, at());
        log
    }

    let baseline = requests(&run(&w, None).await);
    for rule in rules(&baseline, &ALL) {
        run(&w, Some(rule)).await;
    }
    w.report("sign out", &baseline);
}

/// Completing a TOTP challenge spends the step (the user's write) before it upgrades the
/// session (the session's): under each fault, a completion that did not upgrade the session
/// completes when sent again with the same code, and once done, the step is spent for any
/// other challenge.
#[tokio::test]
async fn a_totp_completion_upgrades_the_session_or_completes_when_sent_again() {
    let Some(db) = dynamodb().await else { return };
    let w = World::new(db, "totp").await;
    let secret = w.enable_totp().await;

    async fn run(w: &World, secret: &[u8], rule: Option<Rule>) -> Log {
        w.next_run();
        let s = w.session().await;
        let id = w.challenge(&s, "totp").await;
        let code = mfa_core::domain::totp::code_at(secret, w.clock.now()).unwrap();
        let step = "PUT /v1/account/mfa/challenges (totp)";
        let (r, log) = w.faulted(&rule, w.complete(&s, &id, &code)).await;
        let outcome = w.judge(step, &rule, &log, &r, 200, &[]);
        let at = || format!("under {}: {}", describe(&rule), sequence(&log));
        let account = w.call("GET", "/v1/account", Some(&s), json!({})).await;
        if account.status != 200 {
            assert_ne!(outcome, Outcome::Success, "answered 200 without upgrading: {}", at());
            let again = w.complete(&s, &id, &code).await;
            assert_eq!(again.status, 200, "sent again, it completes: {} {}", again.body, at());
        }
        let other = w.challenge(&s, "totp").await;
        let reused = w.complete(&s, &other, &code).await;
        assert_eq!((reused.status, reused.kind()), (401, "user_invalid_token"), "the step is spent: {}", at());
        log
    }

    let baseline = requests(&run(&w, &secret, None).await);
    for rule in rules(&baseline, &ALL) {
        run(&w, &secret, Some(rule)).await;
    }
    w.report("complete a TOTP challenge", &baseline);
}
