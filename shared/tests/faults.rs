//! Dependencies failing: DynamoDB unreachable. Every step answers a clear 5xx with an
//! Appwrite body, quickly, sends nothing and panics nowhere.

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use aws_sdk_dynamodb::config::{Credentials, Region};
use lambda_http::http::Request;
use lambda_http::Body;
use mfa_core::clock::ManualClock;
use mfa_core::config::Config;
use mfa_core::http::Credentials as SessionCredentials;
use mfa_core::store::dynamo::DynamoStore;
use mfa_core::App;
use serde_json::{json, Value};

mod common;
use common::Recorder;

/// A DynamoDB client for a port nothing listens on, with the production timeouts.
async fn unreachable_dynamodb() -> aws_sdk_dynamodb::Client {
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let timeouts = mfa_core::backends::aws_timeouts();
    let config = aws_config::defaults(aws_config::BehaviorVersion::latest())
        .region(Region::new("us-east-1"))
        .endpoint_url(format!("http://127.0.0.1:{closed}"))
        .credentials_provider(Credentials::new("test", "test", None, None, "fault-tests"))
        .timeout_config(timeouts)
        .load()
        .await;
    aws_sdk_dynamodb::Client::new(&config)
}

#[tokio::test]
async fn with_dynamodb_unreachable_every_step_answers_a_clear_503() {
    let sender = Arc::new(Recorder::default());
    let app = App::new(
        Config::for_project("p", b"a test server key of sufficient length"),
        Arc::new(DynamoStore::new(unreachable_dynamodb().await, "mfa")),
        sender.clone(),
        Arc::new(ManualClock::at(1_800_000_000_000)),
    );
    let secret = mfa_core::domain::session::new_secret("s1");
    let session = SessionCredentials { user_id: "u1".into(), secret }.encode();
    let steps = [
        ("POST", "/v1/account", json!({"userId": "unique()", "email": "a@example.com", "password": "a long password"})),
        ("POST", "/v1/account/sessions/email", json!({"email": "a@example.com", "password": "a long password"})),
        ("GET", "/v1/account", json!({})),
        ("POST", "/v1/account/mfa/recovery-codes", json!({})),
        ("POST", "/v1/account/verifications/email", json!({"url": "https://app.example/verify"})),
        ("PUT", "/v1/account/verifications/email", json!({"userId": "u1", "secret": "x".repeat(64)})),
        ("PATCH", "/v1/account/mfa", json!({"mfa": true})),
        ("POST", "/v1/account/mfa/challenges", json!({"factor": "email"})),
        ("PUT", "/v1/account/mfa/challenges", json!({"challengeId": "c1", "otp": "123456"})),
    ];
    for (method, path, body) in steps {
        let req = Request::builder()
            .method(method)
            .uri(path)
            .header("x-appwrite-session", &session)
            .body(Body::Text(body.to_string()))
            .unwrap();
        let started = Instant::now();
        let res = app.handle(req, None).await;
        let took = started.elapsed();
        assert_eq!(res.status().as_u16(), 503, "{method} {path}");
        let body: Value = serde_json::from_slice(res.body().as_ref()).unwrap();
        assert_eq!(body["type"], "general_server_error", "{method} {path}");
        assert_eq!(body["code"], 503);
        assert!(!body["message"].as_str().unwrap().contains("127.0.0.1"), "no internals in the body");
        // One call fails within the production operation timeout; a few seconds of slack.
        let bound = mfa_core::backends::aws_timeouts().operation_timeout().unwrap() + Duration::from_secs(4);
        assert!(took < bound, "{method} {path} took {took:?}: timeouts bound it");
    }
    assert!(sender.messages().is_empty(), "nothing is sent when nothing can be stored");
}

// ---- a store failing at every step of a handler ------------------------------------------

use mfa_core::clock::Millis;
use mfa_core::domain::activity::Event;
use mfa_core::domain::{Challenge, Channel, Session, User, VerificationToken};
use mfa_core::store::embedded::EmbeddedStore;
use mfa_core::store::{
    Also, ChallengeWin, Decided, Found, Lookup, SessionUpgrade, Store, StoreError, StoreResult, Updated, UserChange,
};
use std::sync::atomic::{AtomicUsize, Ordering};

/// Passes calls to the real store, but fails the `fail_at`-th call (counted from `arm`) as
/// an unreachable store would: the operation does not happen.
struct Flaky {
    inner: Arc<EmbeddedStore>,
    calls: AtomicUsize,
    fail_at: AtomicUsize,
}

impl Flaky {
    fn arm(&self, fail_at: usize) {
        self.calls.store(0, Ordering::SeqCst);
        self.fail_at.store(fail_at, Ordering::SeqCst);
    }
    fn disarm(&self) {
        self.fail_at.store(usize::MAX, Ordering::SeqCst);
    }
    fn gate(&self) -> StoreResult<()> {
        let n = self.calls.fetch_add(1, Ordering::SeqCst);
        if n == self.fail_at.load(Ordering::SeqCst) {
            return Err(StoreError::Unavailable("injected fault".into()));
        }
        Ok(())
    }
}

#[async_trait]
impl Store for Flaky {
    async fn load(&self, l: &Lookup, now: Millis) -> StoreResult<Found> {
        self.gate()?;
        self.inner.load(l, now).await
    }
    async fn create_user(&self, u: &User) -> StoreResult<bool> {
        self.gate()?;
        self.inner.create_user(u).await
    }
    async fn update_user(
        &self,
        user: &User,
        c: UserChange,
        u: Option<SessionUpgrade>,
        now: Millis,
        also: &Also,
    ) -> StoreResult<Updated> {
        self.gate()?;
        self.inner.update_user(user, c, u, now, also).await
    }
    async fn create_session(&self, s: &Session, also: &Also) -> StoreResult<Decided> {
        self.gate()?;
        self.inner.create_session(s, also).await
    }
    async fn delete_session(&self, u: &str, id: &str, also: &Also) -> StoreResult<bool> {
        self.gate()?;
        self.inner.delete_session(u, id, also).await
    }
    async fn put_challenge(&self, c: &Challenge, also: &Also) -> StoreResult<Decided> {
        self.gate()?;
        self.inner.put_challenge(c, also).await
    }
    async fn withdraw_challenge(&self, c: &Challenge) -> StoreResult<()> {
        self.gate()?;
        self.inner.withdraw_challenge(c).await
    }
    async fn miss_challenge(&self, c: &Challenge, now: Millis, also: &Also) -> StoreResult<Decided> {
        self.gate()?;
        self.inner.miss_challenge(c, now, also).await
    }
    async fn finish_challenge(&self, w: &ChallengeWin, also: &Also) -> StoreResult<Decided> {
        self.gate()?;
        self.inner.finish_challenge(w, also).await
    }
    async fn put_token(&self, t: &VerificationToken, also: &Also) -> StoreResult<Decided> {
        self.gate()?;
        self.inner.put_token(t, also).await
    }
    async fn withdraw_token(&self, t: &VerificationToken) -> StoreResult<()> {
        self.gate()?;
        self.inner.withdraw_token(t).await
    }
    async fn miss_token(&self, u: &str, c: Channel, id: &str, now: Millis, also: &Also) -> StoreResult<Decided> {
        self.gate()?;
        self.inner.miss_token(u, c, id, now, also).await
    }
    async fn redeem_token(&self, t: &VerificationToken, now: Millis, also: &Also) -> StoreResult<Decided> {
        self.gate()?;
        self.inner.redeem_token(t, now, also).await
    }
    async fn reset_password(&self, t: &VerificationToken, h: &str, now: Millis, also: &Also) -> StoreResult<Decided> {
        self.gate()?;
        self.inner.reset_password(t, h, now, also).await
    }
    async fn count(&self, also: &Also) -> StoreResult<Decided> {
        self.gate()?;
        self.inner.count(also).await
    }
    async fn key_usage(&self, now: Millis) -> StoreResult<std::collections::BTreeMap<String, u64>> {
        self.gate()?;
        self.inner.key_usage(now).await
    }
    async fn sessions(&self, u: &str) -> StoreResult<Vec<Session>> {
        self.gate()?;
        self.inner.sessions(u).await
    }
    async fn events(&self, u: &str, now: Millis) -> StoreResult<Vec<Event>> {
        self.gate()?;
        self.inner.events(u, now).await
    }
    async fn users(&self, ids: &[String]) -> StoreResult<Vec<User>> {
        self.gate()?;
        self.inner.users(ids).await
    }
    async fn put_api_key(&self, k: &mfa_core::domain::api_key::ApiKey) -> StoreResult<bool> {
        self.gate()?;
        self.inner.put_api_key(k).await
    }
    async fn api_keys(&self) -> StoreResult<Vec<mfa_core::domain::api_key::ApiKey>> {
        self.gate()?;
        self.inner.api_keys().await
    }
    async fn delete_api_key(&self, id: &str) -> StoreResult<bool> {
        self.gate()?;
        self.inner.delete_api_key(id).await
    }
}

struct FlakyWorld {
    app: App,
    store: Arc<Flaky>,
    sender: Arc<Recorder>,
    _dir: tempfile::TempDir,
}

impl FlakyWorld {
    fn new() -> FlakyWorld {
        let dir = tempfile::tempdir().unwrap();
        let now = 1_800_000_000_000;
        let inner = Arc::new(EmbeddedStore::open(&dir.path().join("db"), now).unwrap());
        let store = Arc::new(Flaky { inner, calls: AtomicUsize::new(0), fail_at: AtomicUsize::new(usize::MAX) });
        let sender = Arc::new(Recorder::default());
        let app = App::new(
            Config::for_project("p", b"a test server key of sufficient length"),
            store.clone(),
            sender.clone(),
            Arc::new(ManualClock::at(now)),
        );
        FlakyWorld { app, store, sender, _dir: dir }
    }

    async fn call(&self, method: &str, path: &str, session: Option<&str>, body: Value) -> (u16, Value, Option<String>) {
        let mut req = Request::builder().method(method).uri(path);
        if let Some(s) = session {
            req = req.header("x-fallback-cookies", s);
        }
        let res = self.app.handle(req.body(Body::Text(body.to_string())).unwrap(), None).await;
        let fallback = res.headers().get("x-fallback-cookies").map(|v| v.to_str().unwrap().to_string());
        let status = res.status().as_u16();
        (status, serde_json::from_slice(res.body().as_ref()).unwrap_or(Value::Null), fallback)
    }

    /// A user with a verified email, recovery codes and MFA on, and a fresh login short of
    /// its second factor.
    async fn partial_session(&self) -> String {
        let pw = "a long password";
        self.call("POST", "/v1/account", None, json!({"userId": "u1", "email": "f@example.com", "password": pw})).await;
        let login = json!({"email": "f@example.com", "password": pw});
        let (_, _, s) = self.call("POST", "/v1/account/sessions/email", None, login.clone()).await;
        let s = s.unwrap();
        self.call("POST", "/v1/account/mfa/recovery-codes", Some(&s), json!({})).await;
        self.call("POST", "/v1/account/verifications/email", Some(&s), json!({"url": "https://a.example/v"})).await;
        let text = self.sender.last_text();
        let secret = text.split("secret=").nth(1).unwrap().split('&').next().unwrap().to_string();
        let (st, _, _) =
            self.call("PUT", "/v1/account/verifications/email", None, json!({"userId": "u1", "secret": secret})).await;
        assert_eq!(st, 200);
        self.call("PATCH", "/v1/account/mfa", Some(&s), json!({"mfa": true})).await;
        let (_, _, partial) = self.call("POST", "/v1/account/sessions/email", None, login).await;
        partial.unwrap()
    }

    fn last_code(&self) -> String {
        let text = self.sender.last_text();
        text.split(|c: char| !c.is_ascii_digit()).find(|w| w.len() == 6).unwrap().to_string()
    }
}

/// Fails each store call of a step in turn; the step answers 503 or succeeds, never more.
async fn each_failure_point(step: &str, mut run: impl AsyncFnMut(&FlakyWorld, usize) -> bool) {
    for fail_at in 0..20 {
        let world = FlakyWorld::new();
        if !run(&world, fail_at).await {
            return;
        }
    }
    panic!("{step}: more than 20 store calls?");
}

#[tokio::test]
async fn a_store_failure_while_sending_a_challenge_leaves_no_challenge_without_its_message() {
    each_failure_point("create challenge", async |w, fail_at| {
        let s = w.partial_session().await;
        let sent_before = w.sender.messages().len();
        w.store.arm(fail_at);
        let (status, body, _) =
            w.call("POST", "/v1/account/mfa/challenges", Some(&s), json!({"factor": "email"})).await;
        w.store.disarm();
        let sent = w.sender.messages().len() - sent_before;
        let stored = w.store.inner.dump().unwrap().iter().any(|(k, _)| k.contains("CHALLENGE#"));
        assert!(!stored || sent == 1, "a stored challenge always had its message sent");
        if status == 201 {
            return false;
        }
        assert_eq!((status, body["type"].as_str().unwrap()), (503, "general_server_error"));
        true
    })
    .await;
}

#[tokio::test]
async fn a_store_failure_while_completing_a_challenge_never_upgrades_the_session() {
    each_failure_point("complete challenge", async |w, fail_at| {
        let s = w.partial_session().await;
        let (_, body, _) = w.call("POST", "/v1/account/mfa/challenges", Some(&s), json!({"factor": "email"})).await;
        let id = body["$id"].as_str().unwrap().to_string();
        let code = w.last_code();
        w.store.arm(fail_at);
        let (status, body, _) =
            w.call("PUT", "/v1/account/mfa/challenges", Some(&s), json!({"challengeId": id, "otp": code})).await;
        w.store.disarm();
        let (account, _, _) = w.call("GET", "/v1/account", Some(&s), json!({})).await;
        if status == 200 {
            assert_eq!(account, 200);
            return false;
        }
        assert_eq!((status, body["type"].as_str().unwrap()), (503, "general_server_error"));
        assert_eq!(account, 401, "no session upgraded without a completed challenge (fault at call {fail_at})");
        true
    })
    .await;
}

#[tokio::test]
async fn a_store_failure_while_replacing_recovery_codes_replaces_all_or_none() {
    each_failure_point("replace recovery codes", async |w, fail_at| {
        let s = w.partial_session().await;
        let (_, body, _) = w.call("POST", "/v1/account/mfa/challenges", Some(&s), json!({"factor": "email"})).await;
        let id = body["$id"].as_str().unwrap().to_string();
        let code = w.last_code();
        let (st, _, _) =
            w.call("PUT", "/v1/account/mfa/challenges", Some(&s), json!({"challengeId": id, "otp": code})).await;
        assert_eq!(st, 200);
        let before = w.store.inner.user("u1").await.unwrap().unwrap().recovery_codes;
        w.store.arm(fail_at);
        let (status, body, _) = w.call("PATCH", "/v1/account/mfa/recovery-codes", Some(&s), json!({})).await;
        w.store.disarm();
        let after = w.store.inner.user("u1").await.unwrap().unwrap().recovery_codes;
        assert_eq!(after.len(), before.len());
        let kept = after.iter().filter(|h| before.contains(h)).count();
        assert!(kept == 0 || kept == before.len(), "all replaced or none ({kept} kept)");
        if status == 200 {
            assert_eq!(kept, 0);
            return false;
        }
        assert_eq!((status, body["type"].as_str().unwrap()), (503, "general_server_error"));
        assert_eq!(kept, before.len());
        true
    })
    .await;
}

/// A misconfiguration (here a table that does not exist) is a bug to fix, not an outage to
/// wait out: 500 `general_unknown`, whatever the request.
#[tokio::test]
async fn a_store_that_refuses_requests_answers_500_not_503() {
    let Some(client) = common::dynamodb_client().await else { return };
    let app = App::new(
        Config::for_project("p", b"a test server key of sufficient length"),
        Arc::new(DynamoStore::new(client, "no-such-table")),
        Arc::new(Recorder::default()),
        Arc::new(mfa_core::clock::SystemClock),
    );
    let session = "eyJpZCI6InUiLCJzZWNyZXQiOiJzLngifQ==";
    let signed_up = json!({"userId": "unique()", "email": "a@example.com", "password": "a long password"});
    for (method, path, session, body) in [
        ("POST", "/v1/account", None, signed_up),
        ("GET", "/v1/account", Some(session), json!({})),
        ("GET", "/v1/avatars/qr?text=x", None, json!({})),
    ] {
        let session = session.map(|s| format!("{{\"a_session_p\":\"{s}\"}}"));
        let r = common::call(&app, method, path, session.as_deref(), body).await;
        assert_eq!(
            (r.status, r.body["type"].as_str().unwrap_or_default()),
            (500, "general_unknown"),
            "{method} {path}"
        );
        assert!(!r.body["message"].as_str().unwrap().contains("no-such-table"), "no internals in the body");
    }
}
