//! The server API with API keys: support finds a user by email and resets their MFA; scopes,
//! wrong keys, a key with a session, refused listings and the activity log's record of every
//! change made with a key. On the embedded store and on DynamoDB (when
//! `MFA_TEST_DYNAMODB_ENDPOINT` is set).

use std::sync::Arc;

use lambda_http::http::Request;
use lambda_http::Body;
use mfa_core::api::ClientIp;
use mfa_core::clock::{Clock, ManualClock, SystemClock};
use mfa_core::config::Config;
use mfa_core::domain::api_key::{new_key, Scope};
use mfa_core::domain::totp;
use mfa_core::store::embedded::EmbeddedStore;
use mfa_core::store::Store;
use mfa_core::App;
use serde_json::{json, Value};

mod common;
use common::{Answer, Recorder};

const PASSWORD: &str = "correct horse battery";
const SUPPORT_IP: &str = "198.51.100.7";

struct World {
    app: App,
    clock: ManualClock,
    _dir: Option<tempfile::TempDir>,
}

struct Person {
    id: String,
    email: String,
    session: String,
}

/// How a request authenticates.
#[derive(Clone, Copy)]
enum As<'a> {
    Key(&'a str),
    Session(&'a str),
    Both(&'a str, &'a str),
    Nobody,
}

impl World {
    fn on(store: Arc<dyn Store>, dir: Option<tempfile::TempDir>) -> World {
        let clock = ManualClock::at(SystemClock.now());
        let config = Config::for_project("p", b"a test server key of sufficient length");
        let app = App::new(config, store, Arc::new(Recorder::default()), Arc::new(clock.clone()));
        World { app, clock, _dir: dir }
    }

    fn embedded() -> World {
        let dir = tempfile::tempdir().unwrap();
        let store = EmbeddedStore::open(&dir.path().join("mfa.redb"), SystemClock.now()).unwrap();
        World::on(Arc::new(store), Some(dir))
    }

    async fn dynamodb() -> Option<World> {
        Some(World::on(common::dynamodb_store("server").await?, None))
    }

    async fn key(&self, scopes: &[Scope]) -> (String, String) {
        let (key, secret) = new_key("support", scopes.to_vec(), self.clock.now());
        assert!(self.app.store.put_api_key(&key).await.unwrap());
        (key.id, secret)
    }

    async fn send(&self, method: &str, path: &str, who: As<'_>, ip: &str, body: Value) -> Answer {
        let mut req = Request::builder()
            .method(method)
            .uri(path)
            .header("content-type", "application/json")
            .header("host", "api.example:443");
        let (key, session) = match who {
            As::Key(k) => (Some(k), None),
            As::Session(s) => (None, Some(s)),
            As::Both(k, s) => (Some(k), Some(s)),
            As::Nobody => (None, None),
        };
        if let Some(k) = key {
            req = req.header("x-appwrite-key", k);
        }
        if let Some(s) = session {
            req = req.header("x-fallback-cookies", s);
        }
        let mut req = req.body(Body::Text(body.to_string())).unwrap();
        req.extensions_mut().insert(ClientIp(ip.into()));
        let res = self.app.handle(req, None).await;
        let fallback = res.headers().get("x-fallback-cookies").map(|v| v.to_str().unwrap().to_string());
        let status = res.status().as_u16();
        let body = serde_json::from_slice(res.body().as_ref()).unwrap_or(Value::Null);
        Answer { status, body, fallback, headers: res.headers().clone() }
    }

    async fn call(&self, method: &str, path: &str, who: As<'_>, body: Value) -> Answer {
        self.send(method, path, who, SUPPORT_IP, body).await
    }

    async fn ok(&self, method: &str, path: &str, who: As<'_>, body: Value) -> Value {
        let r = self.call(method, path, who, body).await;
        assert!((200..300).contains(&r.status), "{method} {path}: {} {}", r.status, r.body);
        r.body
    }

    async fn log_in(&self, email: &str) -> Answer {
        let body = json!({"email": email, "password": PASSWORD});
        self.send("POST", "/v1/account/sessions/email", As::Nobody, "203.0.113.9", body).await
    }

    async fn sign_up(&self) -> Person {
        let email = format!("{}@example.com", mfa_core::domain::crypto::new_id().to_lowercase());
        let body = json!({"userId": "unique()", "email": email, "password": PASSWORD});
        let id = self.ok("POST", "/v1/account", As::Nobody, body).await["$id"].as_str().unwrap().to_string();
        let session = self.log_in(&email).await.fallback.unwrap();
        Person { id, email, session }
    }

    /// Enrols a TOTP authenticator and switches MFA on, as the user would.
    async fn with_totp_and_mfa(&self, me: &Person) {
        let s = As::Session(&me.session);
        let enrolled = self.ok("POST", "/v1/account/mfa/authenticators/totp", s, json!({})).await;
        let secret = totp::from_base32(enrolled["secret"].as_str().unwrap()).unwrap();
        let otp = totp::code_at(&secret, self.clock.now()).unwrap();
        self.ok("PUT", "/v1/account/mfa/authenticators/totp", s, json!({ "otp": otp })).await;
        self.ok("PATCH", "/v1/account/mfa", s, json!({"mfa": true})).await;
    }
}

fn assert_refused(r: &Answer, status: u16, kind: &str) {
    assert_eq!((r.status, r.body["type"].as_str()), (status, Some(kind)), "{}", r.body);
}

async fn each_store<F, Fut>(check: F)
where
    F: Fn(World) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    check(World::embedded()).await;
    if let Some(world) = World::dynamodb().await {
        check(world).await;
    }
}

/// `path` with the SDKs' `queries[]`.
fn with_queries(path: &str, queries: &[Value]) -> String {
    let mut query = url::form_urlencoded::Serializer::new(String::new());
    for (i, q) in queries.iter().enumerate() {
        query.append_pair(&format!("queries[{i}]"), &q.to_string());
    }
    format!("{path}?{}", query.finish())
}

fn users_path(queries: &[Value]) -> String {
    with_queries("/v1/users", queries)
}

fn by_email(emails: &[&str]) -> Value {
    json!({"method": "equal", "attribute": "email", "values": emails})
}

#[tokio::test]
async fn support_finds_a_user_by_email_and_resets_their_mfa() {
    each_store(|w| async move {
        let me = w.sign_up().await;
        w.with_totp_and_mfa(&me).await;
        let laptop = w.log_in(&me.email).await.fallback.unwrap();
        let (key_id, secret) = w.key(&[Scope::UsersRead, Scope::UsersWrite]).await;
        let key = As::Key(&secret);

        // Found by exact email, whatever its case; the model never carries a password hash.
        let listed = w.ok("GET", &users_path(&[by_email(&[&me.email.to_uppercase()])]), key, json!({})).await;
        assert_eq!(listed["total"], 1);
        let user = &listed["users"][0];
        assert_eq!((user["$id"].as_str(), user["mfa"].as_bool()), (Some(me.id.as_str()), Some(true)));
        for field in ["password", "hash", "hashOptions", "passwordHash"] {
            assert!(user.get(field).is_none(), "{field} in {user}");
        }
        let text = listed.to_string();
        assert!(!text.contains("argon2"), "no hash anywhere: {text}");
        let got = w.ok("GET", &format!("/v1/users/{}", me.id), key, json!({})).await;
        assert_eq!(got["email"], me.email.as_str());
        assert!(!got.to_string().contains("argon2"));

        let factors = format!("/v1/users/{}/mfa/factors", me.id);
        assert_eq!(w.ok("GET", &factors, key, json!({})).await["totp"], true);
        let sessions = format!("/v1/users/{}/sessions", me.id);
        let listed = w.ok("GET", &sessions, key, json!({})).await;
        assert_eq!(listed["total"], 2);
        assert!(listed["sessions"].as_array().unwrap().iter().all(|s| s["secret"] == "" && s["current"] == false));

        // Remove the authenticator, switch MFA off, end the sessions.
        let totp_path = format!("/v1/users/{}/mfa/authenticators/totp", me.id);
        let removed = w.call("DELETE", &totp_path, key, json!({})).await;
        assert_eq!(removed.status, 204);
        // The Python SDK reads the type of every answer, empty ones too.
        assert!(removed.headers.contains_key("content-type"));
        assert_refused(&w.call("DELETE", &totp_path, key, json!({})).await, 404, "user_authenticator_not_found");
        assert_eq!(w.ok("GET", &factors, key, json!({})).await["totp"], false);
        let account = w.ok("PATCH", &format!("/v1/users/{}/mfa", me.id), key, json!({"mfa": false})).await;
        assert_eq!(account["mfa"], false);
        // As in Appwrite, neither change ended a session: ending them is a step of its own.
        assert_eq!(w.ok("GET", &sessions, key, json!({})).await["total"], 2);
        w.clock.advance(1);
        assert_eq!(w.call("DELETE", &sessions, key, json!({})).await.status, 204);
        assert_eq!(w.ok("GET", &sessions, key, json!({})).await["total"], 0);
        w.clock.advance(2);
        let r = w.call("GET", "/v1/account", As::Session(&laptop), json!({})).await;
        assert_refused(&r, 401, "general_unauthorized_scope");

        // The user recovers: the password alone signs in now.
        let back = w.log_in(&me.email).await.fallback.unwrap();
        assert_eq!(w.ok("GET", "/v1/account", As::Session(&back), json!({})).await["mfa"], false);

        // Every change made with the key is in the user's log, with the key's id.
        let logs = w.ok("GET", &format!("/v1/users/{}/logs", me.id), key, json!({})).await;
        let entries = logs["logs"].as_array().unwrap();
        let events: Vec<&str> = entries.iter().map(|l| l["event"].as_str().unwrap()).collect();
        assert_eq!(
            events[..4],
            ["session.create", "sessions.delete", "mfa.update", "authenticator.delete"],
            "{events:?}"
        );
        for entry in &entries[1..4] {
            assert_eq!((entry["mode"].as_str(), entry["keyId"].as_str()), (Some("admin"), Some(key_id.as_str())));
            assert_eq!(entry["ip"], SUPPORT_IP);
        }
        assert_eq!((entries[0]["mode"].as_str(), entries[0].get("keyId")), (Some("default"), None));
        let own = w.ok("GET", "/v1/account/logs", As::Session(&back), json!({})).await;
        assert_eq!(own["total"], logs["total"], "the user reads the same log");
        let page = with_queries(
            &format!("/v1/users/{}/logs", me.id),
            &[json!({"method": "limit", "values": [2]}), json!({"method": "offset", "values": [1]})],
        );
        let page = w.ok("GET", &page, key, json!({})).await;
        let paged: Vec<&str> = page["logs"].as_array().unwrap().iter().map(|l| l["event"].as_str().unwrap()).collect();
        assert_eq!(paged, events[1..3]);
    })
    .await;
}

#[tokio::test]
async fn a_key_does_only_what_its_scopes_allow() {
    each_store(|w| async move {
        let me = w.sign_up().await;
        let (_, reader) = w.key(&[Scope::UsersRead]).await;
        let (_, writer) = w.key(&[Scope::UsersWrite]).await;
        let user = format!("/v1/users/{}", me.id);
        let mfa = format!("/v1/users/{}/mfa", me.id);

        assert_eq!(w.call("GET", &user, As::Key(&reader), json!({})).await.status, 200);
        let r = w.call("PATCH", &mfa, As::Key(&reader), json!({"mfa": true})).await;
        assert_refused(&r, 401, "general_unauthorized_scope");
        assert_eq!(r.body["message"], "app.p@service.api.example (role: applications) missing scope (users.write)");
        let r = w.call("GET", &user, As::Key(&writer), json!({})).await;
        assert_refused(&r, 401, "general_unauthorized_scope");
        assert!(r.body["message"].as_str().unwrap().ends_with("missing scope (users.read)"));
        assert_eq!(w.ok("PATCH", &mfa, As::Key(&writer), json!({"mfa": true})).await["mfa"], true);

        // Without a key the server API is closed, to a session too.
        let r = w.call("GET", &user, As::Nobody, json!({})).await;
        assert_refused(&r, 401, "general_unauthorized_scope");
        assert_eq!(r.body["message"], "User (role: guests) missing scope (users.read)");
        let r = w.call("GET", &user, As::Session(&me.session), json!({})).await;
        assert_refused(&r, 401, "general_unauthorized_scope");

        // Unknown users and bad input are clear 4xx.
        assert_refused(&w.call("GET", "/v1/users/nobody", As::Key(&reader), json!({})).await, 404, "user_not_found");
        assert_refused(&w.call("GET", "/v1/users/-bad-", As::Key(&reader), json!({})).await, 404, "user_not_found");
        let r = w.call("PATCH", &mfa, As::Key(&writer), json!({"mfa": "yes"})).await;
        assert_refused(&r, 400, "general_argument_invalid");
        let r = w.call("PATCH", &mfa, As::Key(&writer), json!({})).await;
        assert_refused(&r, 400, "general_argument_invalid");
        let r =
            w.call("DELETE", &format!("/v1/users/{}/mfa/authenticators/sms", me.id), As::Key(&writer), json!({})).await;
        assert_refused(&r, 400, "general_argument_invalid");
    })
    .await;
}

#[tokio::test]
async fn a_key_and_a_session_together_are_refused() {
    each_store(|w| async move {
        let me = w.sign_up().await;
        let (_, secret) = w.key(&[Scope::UsersRead, Scope::UsersWrite]).await;
        let both = As::Both(&secret, &me.session);
        for (method, path) in [("GET", format!("/v1/users/{}", me.id)), ("GET", "/v1/account".to_string())] {
            let r = w.call(method, &path, both, json!({})).await;
            assert_refused(&r, 403, "user_api_key_and_session_set");
        }
        let r = w.call("DELETE", &format!("/v1/users/{}/sessions", me.id), both, json!({})).await;
        assert_refused(&r, 403, "user_api_key_and_session_set");
        assert_eq!(w.ok("GET", "/v1/account", As::Session(&me.session), json!({})).await["$id"], me.id.as_str());
    })
    .await;
}

#[tokio::test]
async fn wrong_keys_are_limited_per_address_before_they_are_answered() {
    each_store(|w| async move {
        let me = w.sign_up().await;
        let (key_id, secret) = w.key(&[Scope::UsersRead]).await;
        let user = format!("/v1/users/{}", me.id);
        let guesser = "192.0.2.66";
        let wrong = [
            format!("{key_id}_{}", "0".repeat(43)),
            "not a key".to_string(),
            format!("{}_{}", mfa_core::domain::crypto::new_id(), "x".repeat(43)),
        ];
        for i in 0..10 {
            let r = w.send("GET", &user, As::Key(&wrong[i % wrong.len()]), guesser, json!({})).await;
            assert_refused(&r, 401, "general_unauthorized_scope");
        }
        // Past the limit every key from that address waits, the right one too.
        for k in [&wrong[0], &secret] {
            let r = w.send("GET", &user, As::Key(k), guesser, json!({})).await;
            assert_refused(&r, 429, "general_rate_limit_exceeded");
        }
        // Other addresses are not held back, and right keys are never counted.
        for _ in 0..12 {
            assert_eq!(w.call("GET", &user, As::Key(&secret), json!({})).await.status, 200);
        }
        // A revoked key stops working at once.
        assert!(w.app.store.delete_api_key(&key_id).await.unwrap());
        assert_refused(&w.call("GET", &user, As::Key(&secret), json!({})).await, 401, "general_unauthorized_scope");
    })
    .await;
}

#[tokio::test]
async fn users_are_listed_only_by_exact_email() {
    each_store(|w| async move {
        let a = w.sign_up().await;
        let b = w.sign_up().await;
        let (_, secret) = w.key(&[Scope::UsersRead]).await;
        let key = As::Key(&secret);

        let both =
            w.ok("GET", &users_path(&[by_email(&[&b.email, "nobody@example.com", &a.email])]), key, json!({})).await;
        let ids: Vec<&str> = both["users"].as_array().unwrap().iter().map(|u| u["$id"].as_str().unwrap()).collect();
        assert_eq!((both["total"].as_u64(), ids), (Some(2), vec![b.id.as_str(), a.id.as_str()]));
        let limited = json!({"method": "limit", "values": [1]});
        let offset = json!({"method": "offset", "values": [1]});
        let page = w.ok("GET", &users_path(&[by_email(&[&a.email, &b.email]), limited, offset]), key, json!({})).await;
        assert_eq!((page["total"].as_u64(), page["users"][0]["$id"].as_str()), (Some(2), Some(b.id.as_str())));
        let none = w.ok("GET", &users_path(&[by_email(&["nobody@example.com", "not an email"])]), key, json!({})).await;
        assert_eq!((none["total"].as_u64(), none["users"].as_array().map(Vec::len)), (Some(0), Some(0)));

        // Never a listing of everyone, whatever else is asked.
        let many: Vec<String> = (0..26).map(|i| format!("u{i}@example.com")).collect();
        let many: Vec<&str> = many.iter().map(String::as_str).collect();
        for path in [
            "/v1/users".to_string(),
            users_path(&[json!({"method": "limit", "values": [5]})]),
            users_path(&[json!({"method": "equal", "attribute": "name", "values": ["Ada"]})]),
            users_path(&[json!({"method": "search", "attribute": "email", "values": ["example"]})]),
            users_path(&[json!({"method": "notEqual", "attribute": "email", "values": ["x@example.com"]})]),
            users_path(&[by_email(&[&a.email]), by_email(&[&b.email])]),
            users_path(&[by_email(&many)]),
            format!("{}&search=example", users_path(&[by_email(&[&a.email])])),
            "/v1/users?queries[0]=not-json".to_string(),
        ] {
            assert_refused(&w.call("GET", &path, key, json!({})).await, 400, "general_query_invalid");
        }
    })
    .await;
}

#[tokio::test]
async fn support_issues_recovery_codes_that_stay_unreadable() {
    each_store(|w| async move {
        let me = w.sign_up().await;
        let (key_id, secret) = w.key(&[Scope::UsersRead, Scope::UsersWrite]).await;
        let key = As::Key(&secret);
        let codes = format!("/v1/users/{}/mfa/recovery-codes", me.id);
        assert_refused(&w.call("GET", &codes, key, json!({})).await, 404, "user_recovery_codes_not_found");
        assert_refused(&w.call("PUT", &codes, key, json!({})).await, 404, "user_recovery_codes_not_found");

        let first = w.call("PATCH", &codes, key, json!({})).await;
        assert_eq!(first.status, 201, "{}", first.body);
        assert_eq!(first.body["recoveryCodes"].as_array().unwrap().len(), 8);
        assert_refused(&w.call("PATCH", &codes, key, json!({})).await, 409, "user_recovery_codes_already_exists");
        assert_refused(&w.call("GET", &codes, key, json!({})).await, 410, "user_recovery_codes_not_readable");
        let second = w.ok("PUT", &codes, key, json!({})).await;
        assert_ne!(second["recoveryCodes"], first.body["recoveryCodes"]);

        // A code support issued signs the user in as a second factor.
        let s = As::Session(&me.session);
        let challenge = w.ok("POST", "/v1/account/mfa/challenges", s, json!({"factor": "recoverycode"})).await;
        let body = json!({"challengeId": challenge["$id"], "otp": second["recoveryCodes"][0]});
        assert_eq!(w.ok("PUT", "/v1/account/mfa/challenges", s, body).await["factors"][1], "recoveryCode");

        let logs = w.ok("GET", &format!("/v1/users/{}/logs", me.id), key, json!({})).await;
        let by_key: Vec<&str> = logs["logs"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|l| l["keyId"] == key_id.as_str())
            .map(|l| l["event"].as_str().unwrap())
            .collect();
        assert_eq!(by_key, ["recovery-codes.update", "recovery-codes.create"]);
    })
    .await;
}

#[tokio::test]
async fn one_session_is_ended_only_for_its_user() {
    each_store(|w| async move {
        let me = w.sign_up().await;
        let stranger = w.sign_up().await;
        let (_, secret) = w.key(&[Scope::UsersRead, Scope::UsersWrite]).await;
        let key = As::Key(&secret);
        let listed = w.ok("GET", &format!("/v1/users/{}/sessions", stranger.id), key, json!({})).await;
        let theirs = listed["sessions"][0]["$id"].as_str().unwrap().to_string();

        // The stranger's session id under my user finds nothing.
        let r = w.call("DELETE", &format!("/v1/users/{}/sessions/{theirs}", me.id), key, json!({})).await;
        assert_refused(&r, 404, "user_session_not_found");
        assert_eq!(
            w.ok("GET", "/v1/account", As::Session(&stranger.session), json!({})).await["$id"],
            stranger.id.as_str()
        );

        let r = w.call("DELETE", &format!("/v1/users/{}/sessions/{theirs}", stranger.id), key, json!({})).await;
        assert_eq!(r.status, 204, "{}", r.body);
        let r = w.call("GET", "/v1/account", As::Session(&stranger.session), json!({})).await;
        assert_refused(&r, 401, "general_unauthorized_scope");
        assert_eq!(w.ok("GET", "/v1/account", As::Session(&me.session), json!({})).await["$id"], me.id.as_str());
        let r = w.call("DELETE", "/v1/users/nobody/sessions", key, json!({})).await;
        assert_refused(&r, 404, "user_not_found");
    })
    .await;
}
