//! DynamoDB calls and request units per endpoint, as the DynamoDB store counts them (priced
//! as AWS bills them), and what a TOTP sign-in costs.
//!
//! Drives the seed flow (sign up, recovery codes, email and phone verification, TOTP
//! enrolment, MFA on, sign out, sign in, the 401, factors, a challenge of every factor,
//! a security key registered, listed, used and removed, signing out another session and
//! everywhere; then support with an API key: a user found by email, read, their factors,
//! authenticator, MFA, recovery codes, sessions and log, and a wrong key)
//! through the same handler code as the Lambda functions, in-process, on DynamoDB Local
//! (a fresh table), with a browser's user agent, and prints one markdown row per request;
//! exits 1 if a request is over its target of calls, or a TOTP sign-in (its six requests,
//! marked) over $6 of DynamoDB per million (`infra/test.sh` runs it). Not deployed:
//!
//! ```sh
//! bash infra/dynamodb-local.sh start 38765
//! MFA_TEST_DYNAMODB_ENDPOINT=http://127.0.0.1:38765 cargo run -p mfa-core --example dynamo_calls
//! ```

use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use lambda_http::http::Request;
use lambda_http::Body;
use mfa_core::api::ClientIp;
use mfa_core::clock::{Clock, SystemClock};
use mfa_core::config::Config;
use mfa_core::delivery::{DeliveryError, Message, Sender};
use mfa_core::domain::totp;
use mfa_core::store::dynamo::{create_table, DynamoStore, Usage};
use mfa_core::store::Store;
use mfa_core::App;
use serde_json::{json, Value};
use webauthn_authenticator_rs::softtoken::SoftToken;
use webauthn_authenticator_rs::WebauthnAuthenticator;
use webauthn_rs::prelude::Url;

const PASSWORD: &str = "correct horse battery";
const EMAIL: &str = "bench@example.com";
const PHONE: &str = "+12065550100";
/// A browser's user agent, kept with each session and event as a browser's would be.
const USER_AGENT: &str =
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36";
/// The page a browser would run the WebAuthn ceremonies on (the local default origin).
const ORIGIN: &str = "http://localhost:8080";
/// Targets: DynamoDB calls per request. A request that checks a password counts it in a
/// write of its own before the hash runs, so that parallel requests cannot hash past their
/// budgets: one more call (a few ms) beside a hash of about 50 ms.
const TARGET: u64 = 2;
const TARGET_COMPLETE_CHALLENGE: u64 = 3;
const TARGET_PASSWORD_CHECK: u64 = 3;
/// Signing in counts its attempt per address and per email as two single writes sent at
/// once (one round trip, half the cost of one transaction of both).
const TARGET_SIGN_IN: u64 = 4;

#[derive(Default)]
struct Recorder(Mutex<Vec<Message>>);

#[async_trait]
impl Sender for Recorder {
    async fn send(&self, message: &Message) -> Result<(), DeliveryError> {
        self.0.lock().unwrap().push(message.clone());
        Ok(())
    }
}

impl Recorder {
    fn last_text(&self, to: &str) -> String {
        let sent = self.0.lock().unwrap();
        sent.iter().rev().find(|m| m.to == to).map(|m| m.text.clone()).unwrap_or_else(|| panic!("no message to {to}"))
    }
    fn last_code(&self, to: &str) -> String {
        let text = self.last_text(to);
        text.split(|c: char| !c.is_ascii_digit()).find(|w| w.len() == 6).expect("a 6-digit code").to_string()
    }
}

struct Row {
    endpoint: String,
    note: String,
    status: u16,
    usage: Usage,
    /// One of the requests of a TOTP sign-in, whose cost the README's table states.
    sign_in: bool,
}

struct Bench {
    app: App,
    store: Arc<DynamoStore>,
    sender: Arc<Recorder>,
    rows: Vec<Row>,
    /// The API key secret sent with each request, if any.
    key: Option<String>,
}

struct Answer {
    status: u16,
    body: Value,
    fallback: Option<String>,
}

impl Bench {
    /// Marks the last request as one of the TOTP sign-in's.
    fn sign_in_step(&mut self) {
        if let Some(row) = self.rows.last_mut() {
            row.sign_in = true;
        }
    }

    /// One request; `route` is the route as the table names it (for the row), `path` the
    /// request path.
    async fn call(
        &mut self,
        method: &str,
        route: &str,
        path: &str,
        note: &str,
        session: Option<&str>,
        body: Value,
    ) -> Answer {
        let mut req = Request::builder()
            .method(method)
            .uri(path)
            .header("x-appwrite-project", "bench")
            .header("user-agent", USER_AGENT);
        if method != "GET" {
            req = req.header("content-type", "application/json");
        }
        if let Some(s) = session {
            req = req.header("x-fallback-cookies", s);
        }
        if let Some(k) = &self.key {
            req = req.header("x-appwrite-key", k.as_str());
        }
        let body = if method == "GET" { Body::Empty } else { Body::Text(body.to_string()) };
        let mut req = req.body(body).unwrap();
        req.extensions_mut().insert(ClientIp("127.0.0.1".into()));
        let before = self.store.metrics();
        let res = self.app.handle(req, None).await;
        let usage = self.store.metrics() - before;
        let status = res.status().as_u16();
        let fallback = res.headers().get("x-fallback-cookies").map(|v| v.to_str().unwrap().to_string());
        let body = serde_json::from_slice(res.body().as_ref()).unwrap_or(Value::Null);
        self.rows.push(Row { endpoint: format!("{method} {route}"), note: note.into(), status, usage, sign_in: false });
        Answer { status, body, fallback }
    }
}

fn expect(r: &Answer, status: u16) {
    assert_eq!(r.status, status, "{}", r.body);
}

#[tokio::main]
async fn main() {
    let Ok(endpoint) = std::env::var("MFA_TEST_DYNAMODB_ENDPOINT") else {
        eprintln!(
            "set MFA_TEST_DYNAMODB_ENDPOINT to a DynamoDB Local endpoint (bash infra/dynamodb-local.sh start 38765)"
        );
        std::process::exit(2);
    };
    let config = aws_config::defaults(aws_config::BehaviorVersion::latest())
        .region(aws_sdk_dynamodb::config::Region::new("us-east-1"))
        .endpoint_url(&endpoint)
        .credentials_provider(aws_sdk_dynamodb::config::Credentials::new("test", "test", None, None, "bench"))
        .load()
        .await;
    let client = aws_sdk_dynamodb::Client::new(&config);
    let table = format!("mfa-bench-{}-{}", std::process::id(), SystemClock.now());
    create_table(&client, &table).await.expect("creating the table on DynamoDB Local");
    let store = Arc::new(DynamoStore::new(client, table));
    let sender = Arc::new(Recorder::default());
    let app = App::new(
        Config::for_project("bench", b"a benchmark server key of sufficient length"),
        store.clone(),
        sender.clone(),
        Arc::new(SystemClock),
    );
    let mut b = Bench { app, store, sender, rows: Vec::new(), key: None };
    let user_id = run_flow(&mut b).await;
    run_support(&mut b, &user_id).await;
    print_table(&b.rows);
}

/// The seed flow; gives the user's id.
async fn run_flow(b: &mut Bench) -> String {
    let none = None;
    // Sign up and sign in.
    let r = b
        .call(
            "POST",
            "/v1/account",
            "/v1/account",
            "sign up",
            none,
            json!({"userId": "unique()", "email": EMAIL, "password": PASSWORD}),
        )
        .await;
    expect(&r, 201);
    let user_id = r.body["$id"].as_str().unwrap().to_string();
    let login = json!({"email": EMAIL, "password": PASSWORD});
    let r = b
        .call("POST", "/v1/account/sessions/email", "/v1/account/sessions/email", "sign in", none, login.clone())
        .await;
    expect(&r, 201);
    let s = r.fallback.unwrap();
    let s = Some(s.as_str());

    // 1. Recovery codes.
    let r = b.call("POST", "/v1/account/mfa/recovery-codes", "/v1/account/mfa/recovery-codes", "", s, json!({})).await;
    expect(&r, 201);
    let recovery_code = r.body["recoveryCodes"][0].as_str().unwrap().to_string();

    // 2. Verify the email (link) and the phone (SMS code).
    let r = b
        .call(
            "POST",
            "/v1/account/verifications/email",
            "/v1/account/verifications/email",
            "send link",
            s,
            json!({"url": "http://localhost/verify"}),
        )
        .await;
    expect(&r, 201);
    let text = b.sender.last_text(EMAIL);
    let link =
        text.split_whitespace().find(|w| w.starts_with("http://localhost/verify?")).expect("a verification link");
    let link = url::Url::parse(link).unwrap();
    let q: std::collections::HashMap<_, _> = link.query_pairs().into_owned().collect();
    let r = b
        .call(
            "PUT",
            "/v1/account/verifications/email",
            "/v1/account/verifications/email",
            "redeem link",
            none,
            json!({"userId": q["userId"], "secret": q["secret"]}),
        )
        .await;
    expect(&r, 200);
    let r = b
        .call(
            "PATCH",
            "/v1/account/phone",
            "/v1/account/phone",
            "set phone",
            s,
            json!({"phone": PHONE, "password": PASSWORD}),
        )
        .await;
    expect(&r, 200);
    let r = b
        .call("POST", "/v1/account/verifications/phone", "/v1/account/verifications/phone", "send SMS", s, json!({}))
        .await;
    expect(&r, 201);
    let code = b.sender.last_code(PHONE);
    let r = b
        .call(
            "PUT",
            "/v1/account/verifications/phone",
            "/v1/account/verifications/phone",
            "redeem code",
            s,
            json!({"userId": user_id, "secret": code}),
        )
        .await;
    expect(&r, 200);

    // 3. TOTP authenticator.
    let r = b
        .call(
            "POST",
            "/v1/account/mfa/authenticators/:type",
            "/v1/account/mfa/authenticators/totp",
            "totp",
            s,
            json!({}),
        )
        .await;
    expect(&r, 200);
    let secret = totp::from_base32(r.body["secret"].as_str().unwrap()).unwrap();
    let otp = totp::code_at(&secret, SystemClock.now()).unwrap();
    let r = b
        .call(
            "PUT",
            "/v1/account/mfa/authenticators/:type",
            "/v1/account/mfa/authenticators/totp",
            "totp",
            s,
            json!({"otp": otp}),
        )
        .await;
    expect(&r, 200);

    // 4. MFA on, sign out, sign in again.
    let r = b.call("PATCH", "/v1/account/mfa", "/v1/account/mfa", "on", s, json!({"mfa": true})).await;
    expect(&r, 200);
    let r = b
        .call("DELETE", "/v1/account/sessions/:sessionId", "/v1/account/sessions/current", "current", s, json!({}))
        .await;
    expect(&r, 204);
    let r = b
        .call(
            "POST",
            "/v1/account/sessions/email",
            "/v1/account/sessions/email",
            "sign in (MFA on)",
            none,
            login.clone(),
        )
        .await;
    expect(&r, 201);
    b.sign_in_step();
    let s = r.fallback.unwrap();
    let s = Some(s.as_str());
    let r = b.call("GET", "/v1/account", "/v1/account", "401 more factors", s, json!({})).await;
    expect(&r, 401);
    b.sign_in_step();
    let r = b.call("GET", "/v1/account/mfa/factors", "/v1/account/mfa/factors", "", s, json!({})).await;
    expect(&r, 200);
    b.sign_in_step();

    // 5. A challenge of every factor: the TOTP one completes the sign-in; a wrong code is
    // tried on the email one. The TOTP step used by the enrolment is spent: the next
    // step's code (one step of skew is accepted) completes the challenge.
    for factor in ["totp", "email", "phone", "recoverycode"] {
        let r = b
            .call(
                "POST",
                "/v1/account/mfa/challenges",
                "/v1/account/mfa/challenges",
                factor,
                s,
                json!({"factor": factor}),
            )
            .await;
        expect(&r, 201);
        if factor == "totp" {
            b.sign_in_step();
        }
        let id = r.body["$id"].as_str().unwrap().to_string();
        if factor == "email" {
            let wrong = if b.sender.last_code(EMAIL) == "000000" { "111111" } else { "000000" };
            let r = b
                .call(
                    "PUT",
                    "/v1/account/mfa/challenges",
                    "/v1/account/mfa/challenges",
                    "email, wrong code",
                    s,
                    json!({"challengeId": id, "otp": wrong}),
                )
                .await;
            assert!(r.status >= 400, "{}", r.body);
        }
        let otp = match factor {
            "totp" => totp::code_at(&secret, SystemClock.now() + 30_000).unwrap(),
            "email" => b.sender.last_code(EMAIL),
            "phone" => b.sender.last_code(PHONE),
            _ => recovery_code.clone(),
        };
        let r = b
            .call(
                "PUT",
                "/v1/account/mfa/challenges",
                "/v1/account/mfa/challenges",
                factor,
                s,
                json!({"challengeId": id, "otp": otp}),
            )
            .await;
        expect(&r, 200);
        if factor == "totp" {
            b.sign_in_step();
            let r = b.call("GET", "/v1/account", "/v1/account", "full session", s, json!({})).await;
            expect(&r, 200);
            b.sign_in_step();
        }
    }

    // 6. A security key (a software one): registered with the session's recent challenge,
    // listed, then used and removed by another session.
    let mut key = SoftToken::new(false).unwrap().0;
    let path = "/v1/account/mfa/authenticators/webauthn";
    let route = "/v1/account/mfa/authenticators/:type";
    let r = b.call("POST", route, path, "webauthn: creation options", s, json!({})).await;
    expect(&r, 200);
    let options = serde_json::from_value(r.body["options"].clone()).unwrap();
    let attestation = key.do_registration(Url::parse(ORIGIN).unwrap(), options).unwrap();
    let r = b.call("PUT", route, path, "webauthn: attestation", s, json!({"credential": attestation})).await;
    expect(&r, 200);
    let r = b.call("GET", route, path, "webauthn", s, json!({})).await;
    expect(&r, 200);
    let key_id = r.body["authenticators"][0]["$id"].as_str().unwrap().to_string();
    let r = b
        .call("POST", "/v1/account/sessions/email", "/v1/account/sessions/email", "sign in", none, login.clone())
        .await;
    expect(&r, 201);
    let other = r.fallback.unwrap();
    let o = Some(other.as_str());
    let r = b
        .call(
            "POST",
            "/v1/account/mfa/challenges",
            "/v1/account/mfa/challenges",
            "webauthn",
            o,
            json!({"factor": "webauthn"}),
        )
        .await;
    expect(&r, 201);
    let id = r.body["$id"].as_str().unwrap().to_string();
    let options = serde_json::from_value(r.body["options"].clone()).unwrap();
    let assertion = key.do_authentication(Url::parse(ORIGIN).unwrap(), options).unwrap();
    let body = json!({"challengeId": id, "credential": assertion});
    let r = b.call("PUT", "/v1/account/mfa/challenges", "/v1/account/mfa/challenges", "webauthn", o, body).await;
    expect(&r, 200);
    let one = format!("{path}/{key_id}");
    let r =
        b.call("DELETE", "/v1/account/mfa/authenticators/:type/:authenticatorId", &one, "webauthn", o, json!({})).await;
    expect(&r, 204);

    // 7. Settings: sessions, name, preferences, the activity log, a new password.
    let r = b.call("GET", "/v1/account/sessions", "/v1/account/sessions", "list", o, json!({})).await;
    expect(&r, 200);
    let r =
        b.call("GET", "/v1/account/sessions/:sessionId", "/v1/account/sessions/current", "current", o, json!({})).await;
    expect(&r, 200);
    let r = b.call("PATCH", "/v1/account/name", "/v1/account/name", "", o, json!({"name": "Bench"})).await;
    expect(&r, 200);
    let r = b.call("PATCH", "/v1/account/prefs", "/v1/account/prefs", "", o, json!({"prefs": {"theme": "dark"}})).await;
    expect(&r, 200);
    let r = b.call("GET", "/v1/account/prefs", "/v1/account/prefs", "", o, json!({})).await;
    expect(&r, 200);
    let r = b.call("GET", "/v1/account/logs", "/v1/account/logs", "", o, json!({})).await;
    expect(&r, 200);
    let body = json!({"password": "another long password", "oldPassword": PASSWORD});
    let r = b.call("PATCH", "/v1/account/password", "/v1/account/password", "", o, body).await;
    expect(&r, 200);
    let login = json!({"email": EMAIL, "password": "another long password"});

    // 8. Sign out another session by its id, then everywhere (the key's removal ended the
    // first session: the second one does it).
    let s = o;
    let r = b
        .call("POST", "/v1/account/sessions/email", "/v1/account/sessions/email", "another sign-in", none, login)
        .await;
    expect(&r, 201);
    let other = r.body["$id"].as_str().expect("a session id").to_string();
    let path = format!("/v1/account/sessions/{other}");
    let r = b.call("DELETE", "/v1/account/sessions/:sessionId", &path, "another, by id", s, json!({})).await;
    expect(&r, 204);
    let r = b.call("DELETE", "/v1/account/sessions", "/v1/account/sessions", "everywhere", s, json!({})).await;
    expect(&r, 204);

    // 9. A forgotten password, reset through the emailed link (it ends every session).
    let r = b
        .call(
            "POST",
            "/v1/account/recovery",
            "/v1/account/recovery",
            "reset link",
            none,
            json!({"email": EMAIL, "url": "https://app.example/reset"}),
        )
        .await;
    expect(&r, 201);
    let text = b.sender.last_text(EMAIL);
    let secret = text.split("secret=").nth(1).unwrap().split(['&', '\n']).next().unwrap().to_string();
    let body = json!({"userId": user_id, "secret": secret, "password": "yet another long password"});
    let r = b.call("PUT", "/v1/account/recovery", "/v1/account/recovery", "new password", none, body).await;
    expect(&r, 200);
    user_id
}

/// Support with an API key (users.read, users.write) on the user of the seed flow.
async fn run_support(b: &mut Bench, user_id: &str) {
    use mfa_core::domain::api_key::{new_key, Scope};
    let (key, secret) = new_key("bench", vec![Scope::UsersRead, Scope::UsersWrite], SystemClock.now());
    assert!(b.store.put_api_key(&key).await.expect("storing the key"));
    let none = None;
    let login = json!({"email": EMAIL, "password": "yet another long password"});
    let r = b.call("POST", "/v1/account/sessions/email", "/v1/account/sessions/email", "sign in", none, login).await;
    expect(&r, 201);
    let session_id = r.body["$id"].as_str().expect("a session id").to_string();

    b.key = Some(secret.clone());
    let query = json!({"method": "equal", "attribute": "email", "values": [EMAIL]}).to_string();
    let find = format!(
        "/v1/users?{}",
        url::form_urlencoded::Serializer::new(String::new()).append_pair("queries[0]", &query).finish()
    );
    let r = b.call("GET", "/v1/users", &find, "by email", none, json!({})).await;
    expect(&r, 200);
    assert_eq!(r.body["users"][0]["$id"], user_id);
    let user = format!("/v1/users/{user_id}");
    expect(&b.call("GET", "/v1/users/:userId", &user, "", none, json!({})).await, 200);
    let r = b.call("GET", "/v1/users/:userId/mfa/factors", &format!("{user}/mfa/factors"), "", none, json!({})).await;
    expect(&r, 200);
    assert_eq!(r.body["totp"], true, "the seed flow left an authenticator app");
    let path = format!("{user}/mfa/authenticators/totp");
    let r = b.call("DELETE", "/v1/users/:userId/mfa/authenticators/:type", &path, "totp", none, json!({})).await;
    expect(&r, 204);
    let r = b.call("PATCH", "/v1/users/:userId/mfa", &format!("{user}/mfa"), "off", none, json!({"mfa": false})).await;
    expect(&r, 200);
    let codes = format!("{user}/mfa/recovery-codes");
    let route = "/v1/users/:userId/mfa/recovery-codes";
    expect(&b.call("PATCH", route, &codes, "some exist", none, json!({})).await, 409);
    expect(&b.call("PUT", route, &codes, "regenerate", none, json!({})).await, 200);
    expect(&b.call("GET", route, &codes, "hashed", none, json!({})).await, 410);
    let sessions = format!("{user}/sessions");
    let r = b.call("GET", "/v1/users/:userId/sessions", &sessions, "", none, json!({})).await;
    expect(&r, 200);
    let one = format!("{sessions}/{session_id}");
    expect(&b.call("DELETE", "/v1/users/:userId/sessions/:sessionId", &one, "", none, json!({})).await, 204);
    expect(&b.call("DELETE", "/v1/users/:userId/sessions", &sessions, "all", none, json!({})).await, 204);
    expect(&b.call("GET", "/v1/users/:userId/logs", &format!("{user}/logs"), "", none, json!({})).await, 200);
    b.key = Some(format!("{}_{}", key.id, "0".repeat(43)));
    expect(&b.call("GET", "/v1/users/:userId", &user, "wrong key", none, json!({})).await, 401);
    b.key = None;
}

fn target(endpoint: &str) -> u64 {
    match endpoint {
        "PUT /v1/account/mfa/challenges" => TARGET_COMPLETE_CHALLENGE,
        "POST /v1/account/sessions/email" => TARGET_SIGN_IN,
        "PATCH /v1/account/email"
        | "PATCH /v1/account/phone"
        | "PATCH /v1/account/password"
        | "PUT /v1/account/recovery" => TARGET_PASSWORD_CHECK,
        _ => TARGET,
    }
}

/// On-demand DynamoDB list prices in us-east-1, dollars per million request units.
const DOLLARS_PER_MILLION_WRITES: f64 = 0.625;
const DOLLARS_PER_MILLION_READS: f64 = 0.125;

/// The most DynamoDB may cost per million TOTP sign-ins, in dollars.
const TARGET_DOLLARS_PER_MILLION_SIGN_INS: f64 = 6.0;

/// What the requests of one TOTP sign-in cost in DynamoDB, per million sign-ins; whether
/// that is within its target.
fn print_sign_in_cost(rows: &[Row]) -> bool {
    let steps: Vec<_> = rows.iter().enumerate().filter(|(_, r)| r.sign_in).collect();
    let reads: f64 = steps.iter().map(|(_, r)| r.usage.read_units).sum();
    let writes: f64 = steps.iter().map(|(_, r)| r.usage.write_units).sum();
    let dollars = reads * DOLLARS_PER_MILLION_READS + writes * DOLLARS_PER_MILLION_WRITES;
    let numbers: Vec<String> = steps.iter().map(|(i, _)| format!("#{}", i + 1)).collect();
    println!(
        "A TOTP sign-in ({}): {reads} read units and {writes} write units: DynamoDB ${dollars:.2} per million \
         sign-ins (${DOLLARS_PER_MILLION_READS} per million read units, ${DOLLARS_PER_MILLION_WRITES} per million \
         write units).",
        numbers.join(", ")
    );
    println!();
    let within = dollars <= TARGET_DOLLARS_PER_MILLION_SIGN_INS;
    if !within {
        println!("**Over** the target of ${TARGET_DOLLARS_PER_MILLION_SIGN_INS:.2} per million TOTP sign-ins.");
        println!();
    }
    within
}

fn print_table(rows: &[Row]) {
    println!("| # | endpoint | request | status | DynamoDB calls | RCU | WCU | target |");
    println!("|---|---|---|---|---|---|---|---|");
    let mut total = Usage::default();
    for (i, row) in rows.iter().enumerate() {
        let t = target(&row.endpoint);
        let verdict = if row.usage.calls > t { format!("**over** (<= {t})") } else { format!("ok (<= {t})") };
        println!(
            "| {} | `{}` | {} | {} | {} | {} | {} | {} |",
            i + 1,
            row.endpoint,
            row.note,
            row.status,
            row.usage.calls,
            row.usage.read_units,
            row.usage.write_units,
            verdict
        );
        total.calls += row.usage.calls;
        total.read_units += row.usage.read_units;
        total.write_units += row.usage.write_units;
    }
    println!(
        "| | **total** | {} requests | | {} | {} | {} | |",
        rows.len(),
        total.calls,
        total.read_units,
        total.write_units
    );
    println!();
    let cost_within = print_sign_in_cost(rows);
    let over: Vec<_> = rows.iter().enumerate().filter(|(_, r)| r.usage.calls > target(&r.endpoint)).collect();
    if !cost_within {
        // Item sizes and call counts do not depend on timing: the test command holds them.
        std::process::exit(1);
    }
    if over.is_empty() {
        println!(
            "Every request is within its target (<= {TARGET} calls; <= {TARGET_COMPLETE_CHALLENGE} to complete a \
             challenge or check a password; <= {TARGET_SIGN_IN} to sign in)."
        );
    } else {
        println!(
            "Over target (<= {TARGET} calls; <= {TARGET_COMPLETE_CHALLENGE} to complete a challenge or check a \
             password; <= {TARGET_SIGN_IN} to sign in):"
        );
        for (i, r) in over {
            println!("- #{} `{}` ({}): {} calls", i + 1, r.endpoint, r.note, r.usage.calls);
        }
        // The call counts do not depend on timing: the test command holds them to target.
        std::process::exit(1);
    }
}
