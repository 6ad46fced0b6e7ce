//! Rules that depend on time or on failing dependencies, driven in-process through the
//! same handler code with an injected clock, a recording sender and failing stand-ins.

use std::sync::Arc;

use async_trait::async_trait;
use lambda_http::http::Request;
use lambda_http::Body;
use mfa_core::clock::{ManualClock, Millis, HOUR, MINUTE};
use mfa_core::config::Config;
use mfa_core::delivery::Message;
use mfa_core::domain::activity::Event;
use mfa_core::domain::{totp, Challenge, Channel, Session, User, VerificationToken};
use mfa_core::store::embedded::EmbeddedStore;
use mfa_core::store::{
    Also, ChallengeWin, Decided, Found, Lookup, SessionUpgrade, Store, StoreResult, Updated, UserChange,
};
use mfa_core::App;
use serde_json::{json, Value};

mod common;
use common::{Answer, Recorder};

const PASSWORD: &str = "correct horse battery";
const START: Millis = 1_800_000_000_000;

struct World {
    app: App,
    clock: ManualClock,
    sender: Arc<Recorder>,
    store: Arc<EmbeddedStore>,
    _dir: tempfile::TempDir,
}

impl World {
    fn new() -> World {
        let dir = tempfile::tempdir().unwrap();
        let clock = ManualClock::at(START);
        let store = Arc::new(EmbeddedStore::open(&dir.path().join("db"), START).unwrap());
        let sender = Arc::new(Recorder::default());
        let app = App::new(
            Config::for_project("p", b"a test server key of sufficient length"),
            store.clone(),
            sender.clone(),
            Arc::new(clock.clone()),
        );
        World { app, clock, sender, store, _dir: dir }
    }

    async fn call(&self, method: &str, path: &str, session: Option<&str>, body: Value) -> Answer {
        common::call(&self.app, method, path, session, body).await
    }

    fn sent_messages(&self) -> Vec<Message> {
        self.sender.messages()
    }

    async fn log_in(&self, email: &str) -> String {
        let r =
            self.call("POST", "/v1/account/sessions/email", None, json!({"email": email, "password": PASSWORD})).await;
        assert_eq!(r.status, 201, "{}", r.body);
        r.fallback.unwrap()
    }

    /// A user with a verified authenticator and MFA on; returns (email, totp secret).
    async fn enrolled(&self) -> (String, Vec<u8>) {
        let email = "rules@example.com".to_string();
        let r = self
            .call("POST", "/v1/account", None, json!({"userId": "unique()", "email": email, "password": PASSWORD}))
            .await;
        assert_eq!(r.status, 201);
        let s = self.log_in(&email).await;
        let r = self.call("POST", "/v1/account/mfa/authenticators/totp", Some(&s), json!({})).await;
        let secret = totp::from_base32(r.body["secret"].as_str().unwrap()).unwrap();
        let otp = totp::code_at(&secret, self.clock_now()).unwrap();
        let r = self.call("PUT", "/v1/account/mfa/authenticators/totp", Some(&s), json!({"otp": otp})).await;
        assert_eq!(r.status, 200, "{}", r.body);
        let r = self.call("PATCH", "/v1/account/mfa", Some(&s), json!({"mfa": true})).await;
        assert_eq!(r.status, 200);
        (email, secret)
    }

    async fn totp_challenge(&self, session: &str) -> String {
        let r = self.call("POST", "/v1/account/mfa/challenges", Some(session), json!({"factor": "totp"})).await;
        assert_eq!(r.status, 201, "{}", r.body);
        r.body["$id"].as_str().unwrap().to_string()
    }

    async fn wrong_code(&self, session: &str, challenge_id: &str) -> Answer {
        let body = json!({"challengeId": challenge_id, "otp": "000000"});
        self.call("PUT", "/v1/account/mfa/challenges", Some(session), body).await
    }

    fn clock_now(&self) -> Millis {
        mfa_core::clock::Clock::now(&self.clock)
    }

    /// Logs in and passes a TOTP challenge; returns the full session.
    async fn full_session(&self, email: &str, secret: &[u8]) -> String {
        let s = self.log_in(email).await;
        let r = self.call("POST", "/v1/account/mfa/challenges", Some(&s), json!({"factor": "totp"})).await;
        let id = r.body["$id"].as_str().unwrap().to_string();
        // A fresh step each time: steps are single-use.
        self.clock.advance(30_000);
        let otp = totp::code_at(secret, self.clock_now()).unwrap();
        let r = self.call("PUT", "/v1/account/mfa/challenges", Some(&s), json!({"challengeId": id, "otp": otp})).await;
        assert_eq!(r.status, 200, "{}", r.body);
        s
    }
}

#[tokio::test]
async fn the_recent_challenge_window_closes_after_thirty_minutes() {
    let w = World::new();
    let (email, secret) = w.enrolled().await;
    let s = w.full_session(&email, &secret).await;
    w.clock.advance(30 * MINUTE);
    let r = w.call("PATCH", "/v1/account/mfa/recovery-codes", Some(&s), json!({})).await;
    assert_eq!(r.status, 404, "still recent at exactly 30 minutes: {}", r.body);
    w.clock.advance(1_000);
    let r = w.call("PATCH", "/v1/account/mfa/recovery-codes", Some(&s), json!({})).await;
    assert_eq!((r.status, r.body["type"].as_str().unwrap()), (401, "user_challenge_required"));
    let r = w.call("DELETE", "/v1/account/mfa/authenticators/totp", Some(&s), json!({})).await;
    assert_eq!(r.body["type"], "user_challenge_required");
}

#[tokio::test]
async fn switching_enforced_mfa_off_needs_a_recent_challenge() {
    let w = World::new();
    let (email, secret) = w.enrolled().await;
    let s = w.full_session(&email, &secret).await;
    w.clock.advance(31 * MINUTE);
    let r = w.call("PATCH", "/v1/account/mfa", Some(&s), json!({"mfa": false})).await;
    assert_eq!((r.status, r.body["type"].as_str().unwrap()), (401, "user_challenge_required"));
    let fresh = w.full_session(&email, &secret).await;
    let r = w.call("PATCH", "/v1/account/mfa", Some(&fresh), json!({"mfa": false})).await;
    assert_eq!((r.status, r.body["mfa"].clone()), (200, json!(false)));
}

#[tokio::test]
async fn a_challenge_lives_ten_minutes() {
    let w = World::new();
    let (email, secret) = w.enrolled().await;
    let s = w.log_in(&email).await;
    let r = w.call("POST", "/v1/account/mfa/challenges", Some(&s), json!({"factor": "totp"})).await;
    let expire = r.body["expire"].as_str().unwrap().to_string();
    assert_eq!(expire, mfa_core::clock::iso(w.clock_now() + 10 * MINUTE));
    let id = r.body["$id"].as_str().unwrap().to_string();
    w.clock.advance(10 * MINUTE);
    let otp = totp::code_at(&secret, w.clock_now()).unwrap();
    let r = w.call("PUT", "/v1/account/mfa/challenges", Some(&s), json!({"challengeId": id, "otp": otp})).await;
    assert_eq!((r.status, r.body["type"].as_str().unwrap()), (401, "user_invalid_token"));
}

#[tokio::test]
async fn a_failed_send_leaves_no_challenge_behind() {
    let w = World::new();
    let r = w
        .call("POST", "/v1/account", None, json!({"userId": "u1", "email": "send@example.com", "password": PASSWORD}))
        .await;
    assert_eq!(r.status, 201);
    let s = w.log_in("send@example.com").await;
    let r =
        w.call("POST", "/v1/account/verifications/email", Some(&s), json!({"url": "https://app.example/verify"})).await;
    assert_eq!(r.status, 201);
    let link = w.sent_messages().last().unwrap().text.clone();
    let secret = link.split("secret=").nth(1).unwrap().split('&').next().unwrap().to_string();
    let r = w.call("PUT", "/v1/account/verifications/email", None, json!({"userId": "u1", "secret": secret})).await;
    assert_eq!(r.status, 200, "{}", r.body);

    w.sender.fail(true);
    let r = w.call("POST", "/v1/account/mfa/challenges", Some(&s), json!({"factor": "email"})).await;
    assert_eq!((r.status, r.body["type"].as_str().unwrap()), (502, "general_provider_failure"));
    let stored = w.store.dump().unwrap();
    assert!(!stored.iter().any(|(k, _)| k.contains("CHALLENGE#")), "{stored:?}");
}

/// A store that is down.
struct DownStore;

#[async_trait]
impl Store for DownStore {
    async fn load(&self, _: &Lookup, _: Millis) -> StoreResult<Found> {
        Err(down())
    }
    async fn create_user(&self, _: &User) -> StoreResult<bool> {
        Err(down())
    }
    async fn update_user(
        &self,
        _: &User,
        _: UserChange,
        _: Option<SessionUpgrade>,
        _: Millis,
        _: &Also,
    ) -> StoreResult<Updated> {
        Err(down())
    }
    async fn create_session(&self, _: &Session, _: &Also) -> StoreResult<Decided> {
        Err(down())
    }
    async fn delete_session(&self, _: &str, _: &str, _: &Also) -> StoreResult<bool> {
        Err(down())
    }
    async fn put_challenge(&self, _: &Challenge, _: &Also) -> StoreResult<Decided> {
        Err(down())
    }
    async fn withdraw_challenge(&self, _: &Challenge) -> StoreResult<()> {
        Err(down())
    }
    async fn miss_challenge(&self, _: &Challenge, _: Millis, _: &Also) -> StoreResult<Decided> {
        Err(down())
    }
    async fn finish_challenge(&self, _: &ChallengeWin, _: &Also) -> StoreResult<Decided> {
        Err(down())
    }
    async fn put_token(&self, _: &VerificationToken, _: &Also) -> StoreResult<Decided> {
        Err(down())
    }
    async fn withdraw_token(&self, _: &VerificationToken) -> StoreResult<()> {
        Err(down())
    }
    async fn miss_token(&self, _: &str, _: Channel, _: &str, _: Millis, _: &Also) -> StoreResult<Decided> {
        Err(down())
    }
    async fn redeem_token(&self, _: &VerificationToken, _: Millis, _: &Also) -> StoreResult<Decided> {
        Err(down())
    }
    async fn reset_password(&self, _: &VerificationToken, _: &str, _: Millis, _: &Also) -> StoreResult<Decided> {
        Err(down())
    }
    async fn count(&self, _: &Also) -> StoreResult<Decided> {
        Err(down())
    }
    async fn key_usage(&self, _: Millis) -> StoreResult<std::collections::BTreeMap<String, u64>> {
        Err(down())
    }
    async fn sessions(&self, _: &str) -> StoreResult<Vec<Session>> {
        Err(down())
    }
    async fn events(&self, _: &str, _: Millis) -> StoreResult<Vec<Event>> {
        Err(down())
    }
    async fn users(&self, _: &[String]) -> StoreResult<Vec<User>> {
        Err(down())
    }
    async fn put_api_key(&self, _: &mfa_core::domain::api_key::ApiKey) -> StoreResult<bool> {
        Err(down())
    }
    async fn api_keys(&self) -> StoreResult<Vec<mfa_core::domain::api_key::ApiKey>> {
        Err(down())
    }
    async fn delete_api_key(&self, _: &str) -> StoreResult<bool> {
        Err(down())
    }
}

fn down() -> mfa_core::store::StoreError {
    mfa_core::store::StoreError::Unavailable("connection refused to 10.0.0.1:8000".into())
}

#[tokio::test]
async fn an_unreachable_store_gives_a_clear_5xx_without_details() {
    let app = App::new(
        Config::for_project("p", b"a test server key of sufficient length"),
        Arc::new(DownStore),
        Arc::new(Recorder::default()),
        Arc::new(ManualClock::at(START)),
    );
    let creds = mfa_core::http::Credentials { user_id: "u1".into(), secret: "s".into() }.encode();
    for (method, path, body) in [
        ("GET", "/v1/account", json!({})),
        ("POST", "/v1/account", json!({"userId": "unique()", "email": "a@b.co", "password": PASSWORD})),
        ("POST", "/v1/account/sessions/email", json!({"email": "a@b.co", "password": PASSWORD})),
    ] {
        let req = Request::builder()
            .method(method)
            .uri(path)
            .header("x-appwrite-session", &creds)
            .body(Body::Text(body.to_string()))
            .unwrap();
        let res = app.handle(req, None).await;
        assert_eq!(res.status().as_u16(), 503, "{method} {path}");
        let body: Value = serde_json::from_slice(res.body().as_ref()).unwrap();
        assert_eq!(body["type"], "general_server_error");
        assert!(!body.to_string().contains("10.0.0.1"));
    }
}

#[tokio::test]
async fn sessions_end_at_their_expiry() {
    let w = World::new();
    w.call(
        "POST",
        "/v1/account",
        None,
        json!({"userId": "unique()", "email": "old@example.com", "password": PASSWORD}),
    )
    .await;
    let s = w.log_in("old@example.com").await;
    w.clock.advance(365 * 24 * 60 * MINUTE);
    let r = w.call("GET", "/v1/account", Some(&s), json!({})).await;
    assert_eq!((r.status, r.body["type"].as_str().unwrap()), (401, "general_unauthorized_scope"));
}

#[tokio::test]
async fn nothing_secret_is_stored_in_plain_text() {
    let w = World::new();
    let (email, secret) = w.enrolled().await;
    let s = w.log_in(&email).await;
    let r =
        w.call("POST", "/v1/account/mfa/recovery-codes", Some(&w.full_session(&email, &secret).await), json!({})).await;
    let codes: Vec<String> = serde_json::from_value(r.body["recoveryCodes"].clone()).unwrap();
    let creds: Value = serde_json::from_str(&s).unwrap();
    let cookie = creds["a_session_p"].as_str().unwrap();
    let session_secret = mfa_core::http::Credentials::decode(cookie).unwrap().secret;
    let dump = format!("{:?}", w.store.dump().unwrap());
    assert!(!dump.contains(PASSWORD));
    assert!(!dump.contains(&session_secret));
    assert!(!dump.contains(&totp::base32(&secret)));
    for code in codes {
        assert!(!dump.contains(&code) && !dump.contains(&mfa_core::domain::recovery::normalize(&code)));
    }
}

#[tokio::test]
async fn enrolling_an_authenticator_is_not_a_recent_challenge() {
    let w = World::new();
    let r = w
        .call(
            "POST",
            "/v1/account",
            None,
            json!({"userId": "unique()", "email": "new@example.com", "password": PASSWORD}),
        )
        .await;
    assert_eq!(r.status, 201);
    let s = w.log_in("new@example.com").await;
    let r = w.call("POST", "/v1/account/mfa/recovery-codes", Some(&s), json!({})).await;
    assert_eq!(r.status, 201);
    let r = w.call("POST", "/v1/account/mfa/authenticators/totp", Some(&s), json!({})).await;
    let secret = totp::from_base32(r.body["secret"].as_str().unwrap()).unwrap();
    let otp = totp::code_at(&secret, w.clock_now()).unwrap();
    let r = w.call("PUT", "/v1/account/mfa/authenticators/totp", Some(&s), json!({"otp": otp})).await;
    assert_eq!(r.status, 200);
    // A thief with a stolen session could enrol their own app: that proves nothing old.
    let r = w.call("PATCH", "/v1/account/mfa/recovery-codes", Some(&s), json!({})).await;
    assert_eq!((r.status, r.body["type"].as_str().unwrap()), (401, "user_challenge_required"));
}

#[tokio::test]
async fn replacing_a_verified_factor_under_enforced_mfa_needs_a_recent_challenge() {
    let w = World::new();
    let (email, secret) = w.enrolled().await;
    let s = w.full_session(&email, &secret).await;
    // Make the phone a verified factor, then let the challenge grow old.
    let r =
        w.call("PATCH", "/v1/account/phone", Some(&s), json!({"phone": "+12065550123", "password": PASSWORD})).await;
    assert_eq!(r.status, 200);
    w.call("POST", "/v1/account/verifications/phone", Some(&s), json!({})).await;
    let code = w.sent_messages().last().unwrap().text.split(' ').next().unwrap().to_string();
    let user_id = r.body["$id"].as_str().unwrap().to_string();
    let r = w.call("PUT", "/v1/account/verifications/phone", None, json!({"userId": user_id, "secret": code})).await;
    assert_eq!(r.status, 200, "{}", r.body);
    w.clock.advance(31 * MINUTE);
    let r =
        w.call("PATCH", "/v1/account/phone", Some(&s), json!({"phone": "+12065550999", "password": PASSWORD})).await;
    assert_eq!((r.status, r.body["type"].as_str().unwrap()), (401, "user_challenge_required"));
    let fresh = w.full_session(&email, &secret).await;
    let r = w
        .call("PATCH", "/v1/account/phone", Some(&fresh), json!({"phone": "+12065550999", "password": PASSWORD}))
        .await;
    assert_eq!((r.status, r.body["phoneVerification"].clone()), (200, json!(false)));
}

#[tokio::test]
async fn requests_from_an_unknown_origin_are_refused_before_anything_runs() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(EmbeddedStore::open(&dir.path().join("db"), START).unwrap());
    let mut config = Config::for_project("p", b"a test server key of sufficient length");
    config.allowed_origins = vec!["https://app.example".into()];
    let app = App::new(config, store.clone(), Arc::new(Recorder::default()), Arc::new(ManualClock::at(START)));
    let signup = |origin: Option<&str>| {
        let mut req = Request::builder().method("POST").uri("/v1/account");
        if let Some(origin) = origin {
            req = req.header("origin", origin);
        }
        let body =
            json!({"userId": "unique()", "email": format!("{}@example.com", origin.is_some()), "password": PASSWORD});
        req.body(Body::Text(body.to_string())).unwrap()
    };
    let res = app.handle(signup(Some("https://evil.example")), None).await;
    assert_eq!(res.status().as_u16(), 403);
    let body: Value = serde_json::from_slice(res.body().as_ref()).unwrap();
    assert_eq!(body["type"], "general_unknown_origin");
    assert!(res.headers().get("access-control-allow-origin").is_none());
    assert!(!store.dump().unwrap().iter().any(|(k, _)| k.starts_with("USER#")), "nothing was created");

    let res = app.handle(signup(Some("https://app.example")), None).await;
    assert_eq!(res.status().as_u16(), 201);
    assert_eq!(res.headers()["access-control-allow-origin"], "https://app.example");
    assert_eq!(res.headers()["access-control-allow-credentials"], "true");
    // Apps without an Origin (mobile, server) are not browsers.
    assert_eq!(app.handle(signup(None), None).await.status().as_u16(), 201);
}

#[tokio::test]
async fn wrong_codes_at_the_end_of_an_hour_leave_none_for_the_start_of_the_next() {
    let w = World::new();
    let (email, _) = w.enrolled().await;
    let s = w.log_in(&email).await;
    let now = w.clock_now();
    w.clock.advance(HOUR - now.rem_euclid(HOUR) - 15_000);
    // Ten wrong codes in the last seconds of one hour (five burn a challenge)...
    for _ in 0..2 {
        let id = w.totp_challenge(&s).await;
        for _ in 0..5 {
            assert_eq!(w.wrong_code(&s, &id).await.status, 401);
        }
    }
    // ...leave none for the first seconds of the next.
    w.clock.advance(15_000);
    let id = w.totp_challenge(&s).await;
    let r = w.wrong_code(&s, &id).await;
    assert_eq!((r.status, r.body["type"].as_str().unwrap()), (429, "general_rate_limit_exceeded"), "{}", r.body);
    // Half an hour on, the earlier hour weighs half: guesses are counted again.
    w.clock.advance(30 * MINUTE);
    assert_eq!(w.wrong_code(&s, &id).await.status, 401);
}

#[tokio::test]
async fn qr_codes_are_budgeted_per_address_with_rate_headers() {
    let w = World::new();
    let path = "/v1/avatars/qr?text=otpauth%3A%2F%2Ftotp%2Fx&size=20";
    for i in 1..=60u32 {
        let r = w.call("GET", path, None, json!({})).await;
        assert_eq!(r.status, 200, "request {i}");
        assert_eq!(r.headers["x-ratelimit-limit"], "60");
        assert_eq!(r.headers["x-ratelimit-remaining"], (60 - i).to_string().as_str());
    }
    let r = w.call("GET", path, None, json!({})).await;
    assert_eq!((r.status, r.body["type"].as_str().unwrap()), (429, "general_rate_limit_exceeded"));
    assert_eq!(r.headers["x-ratelimit-remaining"], "0");
    // Text longer than 1 KiB (here 512 four-byte characters) costs too much to render.
    let emoji = "%F0%9F%98%80".repeat(512);
    let r = w.call("GET", &format!("/v1/avatars/qr?text={emoji}"), None, json!({})).await;
    assert_eq!((r.status, r.body["type"].as_str().unwrap()), (400, "general_argument_invalid"));
}
