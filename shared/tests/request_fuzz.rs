//! Property-based fuzzing of the request layer: any method, path, headers, cookies, session
//! values and body reach a clear Appwrite answer, never a panic or a 5xx.
//!
//! The WebAuthn routes get real answers of a software key, mutated: any field replaced,
//! truncated or with a flipped character must be refused with a clear 4xx that spends
//! nothing it should not.
//!
//! Bounded by default (256 cases per property); for a longer run:
//! `PROPTEST_CASES=100000 cargo test -p mfa-core --test request_fuzz --release`.

use std::sync::{Arc, OnceLock};

use async_trait::async_trait;
use base64::Engine;
use lambda_http::http::Request;
use lambda_http::Body;
use mfa_core::clock::ManualClock;
use mfa_core::config::Config;
use mfa_core::delivery::{DeliveryError, Message, Sender};
use mfa_core::domain::Factor;
use mfa_core::store::embedded::EmbeddedStore;
use mfa_core::store::{Also, Updated, UserChange};
use mfa_core::App;
use proptest::prelude::*;
use proptest::test_runner::FileFailurePersistence;
use serde_json::Value;
use webauthn_authenticator_rs::softtoken::SoftToken;
use webauthn_authenticator_rs::WebauthnAuthenticator;
use webauthn_rs::prelude::{CreationChallengeResponse, RequestChallengeResponse, Url};

struct Discard;

#[async_trait]
impl Sender for Discard {
    async fn send(&self, _: &Message) -> Result<(), DeliveryError> {
        Ok(())
    }
}

struct World {
    rt: tokio::runtime::Runtime,
    app: App,
    /// The `X-Fallback-Cookies` value of a signed-in user, so cases reach the handlers
    /// behind authentication too.
    session: String,
    _dir: tempfile::TempDir,
}

/// One app (and runtime) for all cases: state left by earlier cases is part of the input.
fn world() -> &'static World {
    static WORLD: OnceLock<World> = OnceLock::new();
    WORLD.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        let now = 1_800_000_000_000;
        let store = EmbeddedStore::open(&dir.path().join("db"), now).unwrap();
        let app = App::new(
            Config::for_project("p", b"a fuzzing server key of sufficient length"),
            Arc::new(store),
            Arc::new(Discard),
            Arc::new(ManualClock::at(now)),
        );
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let call = |path: &str, body: &str| {
            let req = Request::builder().method("POST").uri(path).body(Body::Text(body.to_string())).unwrap();
            rt.block_on(app.handle(req, None))
        };
        let credentials = r#"{"email":"fuzz@example.com","password":"a fuzzing password"}"#;
        call("/v1/account", r#"{"userId":"fuzz","email":"fuzz@example.com","password":"a fuzzing password"}"#);
        let res = call("/v1/account/sessions/email", credentials);
        let session = res.headers()["x-fallback-cookies"].to_str().unwrap().to_string();
        World { rt, app, session, _dir: dir }
    })
}

fn check(
    world: &World,
    method: &str,
    uri: &str,
    headers: &[(&'static str, String)],
    body: &[u8],
) -> Result<(), TestCaseError> {
    let mut req = Request::builder().method(method).uri(uri);
    for (name, value) in headers {
        req = req.header(*name, value.as_str());
    }
    // Values the http crate itself refuses never reach a Lambda or the local server.
    let Ok(req) = req.body(Body::Binary(body.to_vec())) else { return Ok(()) };
    let res = world.rt.block_on(world.app.handle(req, None));
    let status = res.status().as_u16();
    prop_assert!(status < 500, "{method} {uri} {headers:?} -> {status}");
    // An answer to HEAD has no body (RFC 9110 9.3.2).
    if status >= 400 && method != "HEAD" {
        let body: Value = serde_json::from_slice(res.body().as_ref()).expect("errors are JSON");
        prop_assert_eq!(body["code"].as_u64(), Some(u64::from(status)));
        prop_assert!(body["type"].as_str().is_some_and(|t| !t.is_empty()));
        prop_assert!(body["message"].is_string());
    }
    Ok(())
}

fn known_paths() -> Vec<String> {
    let paths = mfa_core::routes().into_iter().map(|r| r.path.replace("{sessionId}", "current"));
    paths
        .flat_map(|p| ["totp", "webauthn"].map(|kind| p.replace("{type}", kind).replace("{authenticatorId}", "a1b2c3")))
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect()
}

fn path() -> impl Strategy<Value = String> {
    prop_oneof![
        proptest::sample::select(known_paths()),
        proptest::sample::select(known_paths())
            .prop_flat_map(|p| "[a-zA-Z0-9%/._~:-]{0,40}".prop_map(move |tail| format!("{p}{tail}"))),
        "/[ -~]{0,80}".prop_map(|p| p.replace([' ', '"', '<', '>', '\\', '^', '`', '{', '|', '}', '#'], "")),
    ]
}

fn query() -> impl Strategy<Value = String> {
    prop_oneof![
        Just(String::new()),
        "text=[a-zA-Z0-9%:/]{0,60}&size=[0-9-]{0,6}&margin=[0-9a-z-]{0,4}&download=[a-z0-9]{0,5}",
        "[a-zA-Z0-9=&%]{0,80}",
    ]
}

fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<f64>().prop_filter("finite", |f| f.is_finite()).prop_map(Value::from),
        "[ -~]{0,40}".prop_map(Value::String),
        "[0-9]{6}".prop_map(Value::String),
        Just(Value::String("x".repeat(20_000))),
    ];
    leaf.prop_recursive(3, 16, 4, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            proptest::collection::btree_map("[a-zA-Z]{1,10}", inner, 0..4)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

const PARAMS: &[&str] = &[
    "userId",
    "email",
    "password",
    "name",
    "phone",
    "url",
    "secret",
    "mfa",
    "factor",
    "challengeId",
    "otp",
    "credential",
];

fn body() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        proptest::collection::vec(any::<u8>(), 0..200),
        proptest::collection::vec((proptest::sample::select(PARAMS), json_value()), 0..6).prop_map(|pairs| {
            let map: serde_json::Map<String, Value> = pairs.into_iter().map(|(k, v)| (k.to_string(), v)).collect();
            Value::Object(map).to_string().into_bytes()
        }),
        json_value().prop_map(|v| v.to_string().into_bytes()),
    ]
}

fn session_value() -> impl Strategy<Value = String> {
    prop_oneof![
        "[ -~]{0,120}",
        "[a-zA-Z0-9+/=]{0,200}",
        ("[a-zA-Z0-9._-]{0,40}", "[ -~]{0,80}").prop_map(|(id, secret)| {
            base64::engine::general_purpose::STANDARD.encode(format!("{{\"id\":\"{id}\",\"secret\":\"{secret}\"}}"))
        }),
        json_value().prop_map(|v| base64::engine::general_purpose::STANDARD.encode(v.to_string())),
    ]
}

fn headers() -> impl Strategy<Value = Vec<(&'static str, String)>> {
    let header = prop_oneof![
        session_value().prop_map(|v| ("cookie", format!("a_session_p={v}"))),
        "[ -~]{0,120}".prop_map(|v| ("cookie", v)),
        session_value().prop_map(|v| ("x-appwrite-session", v)),
        session_value().prop_map(|v| ("x-fallback-cookies", format!("{{\"a_session_p\":\"{v}\"}}"))),
        "[ -~]{0,120}".prop_map(|v| ("x-fallback-cookies", v)),
        prop_oneof![Just("p".to_string()), "[ -~]{0,20}"].prop_map(|v| ("x-appwrite-project", v)),
        prop_oneof![Just("http://localhost".to_string()), "[ -~]{0,40}"].prop_map(|v| ("origin", v)),
        "[ -~]{0,40}".prop_map(|v| ("content-type", v)),
        "[ -~]{0,40}".prop_map(|v| ("host", v)),
    ];
    proptest::collection::vec(header, 0..5)
}

fn method() -> impl Strategy<Value = &'static str> {
    proptest::sample::select(vec!["GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "HEAD"])
}

proptest! {
    // A failing case is kept in `request_fuzz.proptest-regressions` (commit it) and tried
    // first on every later run.
    #![proptest_config(ProptestConfig {
        failure_persistence: Some(Box::new(FileFailurePersistence::WithSource("proptest-regressions"))),
        ..ProptestConfig::default()
    })]

    #[test]
    fn any_request_gets_a_clear_answer_never_a_5xx(
        method in method(), path in path(), query in query(), headers in headers(), body in body(),
    ) {
        let uri = if query.is_empty() { path } else { format!("{path}?{query}") };
        check(world(), method, &uri, &headers, &body)?;
    }

    #[test]
    fn any_signed_in_request_gets_a_clear_answer_never_a_5xx(
        method in method(), path in path(), query in query(), mut headers in headers(), body in body(),
    ) {
        let world = world();
        headers.retain(|(name, _)| *name != "x-fallback-cookies" && *name != "origin");
        headers.push(("x-fallback-cookies", world.session.clone()));
        let uri = if query.is_empty() { path } else { format!("{path}?{query}") };
        check(world, method, &uri, &headers, &body)?;
    }
}

/// A user with a registered software key and MFA on: every case signs in, asks for a
/// challenge and answers it with a mutated assertion of the real key.
struct KeyWorld {
    rt: tokio::runtime::Runtime,
    app: App,
    clock: ManualClock,
    key: std::sync::Mutex<SoftToken>,
    /// The session of a user without MFA, who registers keys.
    enrolling: String,
    _dir: tempfile::TempDir,
}

const ORIGIN: &str = "http://localhost:8080";

fn key_world() -> &'static KeyWorld {
    static WORLD: OnceLock<KeyWorld> = OnceLock::new();
    WORLD.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        let now = 1_800_000_000_000;
        let clock = ManualClock::at(now);
        let store = EmbeddedStore::open(&dir.path().join("db"), now).unwrap();
        let config = Config::for_project("p", b"a fuzzing server key of sufficient length");
        let app = App::new(config, Arc::new(store), Arc::new(Discard), Arc::new(clock.clone()));
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let world = KeyWorld {
            rt,
            app,
            clock,
            key: std::sync::Mutex::new(SoftToken::new(false).unwrap().0),
            enrolling: String::new(),
            _dir: dir,
        };
        let signup = r#"{"userId":"keys","email":"keys@example.com","password":"a fuzzing password"}"#;
        world.call("POST", "/v1/account", None, signup);
        let login = r#"{"email":"keys@example.com","password":"a fuzzing password"}"#;
        let owner = world.call("POST", "/v1/account/sessions/email", None, login).1.unwrap();
        let (_, _, ceremony) = world.call("POST", "/v1/account/mfa/authenticators/webauthn", Some(&owner), "{}");
        let options: CreationChallengeResponse = serde_json::from_value(ceremony["options"].clone()).unwrap();
        let attestation = world.key.lock().unwrap().do_registration(Url::parse(ORIGIN).unwrap(), options).unwrap();
        let body = serde_json::json!({"credential": attestation}).to_string();
        assert_eq!(world.call("PUT", "/v1/account/mfa/authenticators/webauthn", Some(&owner), &body).0, 200);
        world.call("PATCH", "/v1/account/mfa", Some(&owner), r#"{"mfa":true}"#);
        let signup = r#"{"userId":"enrol","email":"enrol@example.com","password":"a fuzzing password"}"#;
        world.call("POST", "/v1/account", None, signup);
        let login = r#"{"email":"enrol@example.com","password":"a fuzzing password"}"#;
        let enrolling = world.call("POST", "/v1/account/sessions/email", None, login).1.unwrap();
        KeyWorld { enrolling, ..world }
    })
}

impl KeyWorld {
    /// Status, the session a sign-in sets, and the JSON body.
    fn call(&self, method: &str, path: &str, session: Option<&str>, body: &str) -> (u16, Option<String>, Value) {
        let mut req = Request::builder().method(method).uri(path);
        if let Some(s) = session {
            req = req.header("x-fallback-cookies", s);
        }
        let res = self.rt.block_on(self.app.handle(req.body(Body::Text(body.to_string())).unwrap(), None));
        let session = res.headers().get("x-fallback-cookies").map(|v| v.to_str().unwrap().to_string());
        (res.status().as_u16(), session, serde_json::from_slice(res.body().as_ref()).unwrap_or(Value::Null))
    }
}

/// One change to a browser's answer.
#[derive(Debug, Clone)]
enum Mutation {
    Replace(&'static str, Value),
    Truncate(&'static str, usize),
    Flip(&'static str, usize),
    Remove(&'static str),
}

const ANSWER_FIELDS: &[&str] = &[
    "/id",
    "/rawId",
    "/type",
    "/response/authenticatorData",
    "/response/clientDataJSON",
    "/response/signature",
    "/response/userHandle",
    "/response/attestationObject",
    "/extensions",
    "/response",
];

fn mutation() -> impl Strategy<Value = Mutation> {
    let field = proptest::sample::select(ANSWER_FIELDS);
    prop_oneof![
        (field.clone(), json_value()).prop_map(|(f, v)| Mutation::Replace(f, v)),
        (field.clone(), 0usize..400).prop_map(|(f, n)| Mutation::Truncate(f, n)),
        (field.clone(), 0usize..400).prop_map(|(f, n)| Mutation::Flip(f, n)),
        field.prop_map(Mutation::Remove),
    ]
}

/// Fields of an assertion outside what the key signs that may change and leave the genuine
/// answer: client extension results are advisory, and the user handle is optional (absent,
/// or this user's).
fn ignored_in_assertion(m: &Mutation) -> bool {
    match m {
        Mutation::Remove("/response/userHandle") | Mutation::Replace("/response/userHandle", Value::Null) => true,
        m => m.field() == "/extensions",
    }
}

/// The same for an attestation: without an attestation asked for, the statement in the
/// attestation object is not verified (the browser's client data, with the challenge and
/// origin, binds the answer), so a change there registers the genuine key or is refused.
fn ignored_in_attestation(m: &Mutation) -> bool {
    matches!(m.field(), "/extensions" | "/response/attestationObject")
}

impl Mutation {
    fn field(&self) -> &'static str {
        match self {
            Mutation::Replace(f, _) | Mutation::Truncate(f, _) | Mutation::Flip(f, _) | Mutation::Remove(f) => f,
        }
    }
}

/// Applies `m` to `answer`; `false` if it left the answer as it was.
fn mutate(answer: &mut Value, m: &Mutation) -> bool {
    let before = answer.clone();
    let field = m.field();
    let (parent, name) = field.rsplit_once('/').unwrap();
    let Some(Value::Object(object)) = answer.pointer_mut(if parent.is_empty() { "" } else { parent }) else {
        return false;
    };
    // Fields the answer does not have are unknown to the checks, which ignore them.
    if !object.contains_key(name) {
        return false;
    }
    match m {
        Mutation::Replace(_, v) => {
            object.insert(name.to_string(), v.clone());
        }
        Mutation::Remove(_) => {
            object.remove(name);
        }
        Mutation::Truncate(_, n) | Mutation::Flip(_, n) => {
            if let Some(Value::String(text)) = object.get_mut(name) {
                if text.is_empty() {
                    return false;
                }
                let at = n % text.len();
                if matches!(m, Mutation::Truncate(..)) {
                    text.truncate(at);
                } else {
                    let flipped: String = text
                        .chars()
                        .enumerate()
                        .map(|(i, c)| {
                            if i == at {
                                if c == 'A' {
                                    'B'
                                } else {
                                    'A'
                                }
                            } else {
                                c
                            }
                        })
                        .collect();
                    *text = flipped;
                }
            }
        }
    }
    *answer != before
}

proptest! {
    #![proptest_config(ProptestConfig {
        failure_persistence: Some(Box::new(FileFailurePersistence::WithSource("proptest-regressions"))),
        ..ProptestConfig::default()
    })]

    #[test]
    fn a_mutated_assertion_is_a_clear_4xx_and_never_signs_in(m in mutation(), as_otp in any::<bool>()) {
        let w = key_world();
        // A fresh hour each case: the per-user budgets stay open.
        w.clock.advance(3_600_000);
        let login = r#"{"email":"keys@example.com","password":"a fuzzing password"}"#;
        let pending = w.call("POST", "/v1/account/sessions/email", None, login).1.unwrap();
        let (status, _, challenge) =
            w.call("POST", "/v1/account/mfa/challenges", Some(&pending), r#"{"factor":"webauthn"}"#);
        prop_assert_eq!(status, 201, "{}", challenge);
        let options: RequestChallengeResponse = serde_json::from_value(challenge["options"].clone()).unwrap();
        let assertion = w.key.lock().unwrap().do_authentication(Url::parse(ORIGIN).unwrap(), options).unwrap();
        let mut answer = serde_json::to_value(assertion).unwrap();
        if !mutate(&mut answer, &m) {
            return Ok(());
        }
        let body = if as_otp {
            serde_json::json!({"challengeId": challenge["$id"], "otp": answer.to_string()})
        } else {
            serde_json::json!({"challengeId": challenge["$id"], "credential": answer})
        };
        let (status, _, error) = w.call("PUT", "/v1/account/mfa/challenges", Some(&pending), &body.to_string());
        // Only fields outside what the key signed, which the checks rightly ignore, may change
        // and still leave the genuine answer.
        if status == 200 {
            prop_assert!(ignored_in_assertion(&m), "{:?} was accepted", m);
            return Ok(());
        }
        // 413: the whole body is over the size limit.
        prop_assert!(matches!(status, 400 | 401 | 413), "{:?} -> {} {}", m, status, error);
        prop_assert_eq!(error["code"].as_u64(), Some(u64::from(status)));
        let message = error["message"].as_str().unwrap_or_default();
        prop_assert!(!message.is_empty() && !message.contains("\"response\""), "{}", message);
        let (status, _, _) = w.call("GET", "/v1/account", Some(&pending), "");
        prop_assert_eq!(status, 401, "the session still owes its second factor");
    }

    #[test]
    fn a_mutated_attestation_is_a_clear_4xx_and_registers_nothing(m in mutation()) {
        let w = key_world();
        w.clock.advance(3_600_000);
        let path = "/v1/account/mfa/authenticators/webauthn";
        let (status, _, ceremony) = w.call("POST", path, Some(&w.enrolling), "{}");
        prop_assert_eq!(status, 200, "{}", ceremony);
        let options: CreationChallengeResponse = serde_json::from_value(ceremony["options"].clone()).unwrap();
        let mut fresh = SoftToken::new(false).unwrap().0;
        let attestation = fresh.do_registration(Url::parse(ORIGIN).unwrap(), options).unwrap();
        let mut answer = serde_json::to_value(attestation).unwrap();
        let genuine = answer["rawId"].as_str().unwrap().to_string();
        if !mutate(&mut answer, &m) {
            return Ok(());
        }
        let body = serde_json::json!({"credential": answer}).to_string();
        let (status, _, error) = w.call("PUT", path, Some(&w.enrolling), &body);
        if status == 200 {
            // Undo first, so that a failure below leaves the next case a clean user.
            let user = w.rt.block_on(w.app.store.user("enrol")).unwrap().unwrap();
            let added: Vec<_> = user.keys().cloned().collect();
            let ids = added.iter().map(|a| a.id.clone()).collect();
            let change = UserChange::RemoveAuthenticators { ids, factor: Factor::Webauthn, last: true };
            let removed = w.rt.block_on(w.app.store.update_user(&user, change, None, 0, &Also::NONE)).unwrap();
            prop_assert_eq!(removed, Updated::Done);
            // Only fields outside what the key signed may change and leave the genuine answer,
            // which registers the key that made it and nothing else.
            prop_assert!(ignored_in_attestation(&m), "{:?} was accepted", m);
            prop_assert_eq!(added.len(), 1);
            prop_assert_eq!(added[0].credential_id(), Some(genuine.as_str()));
            return Ok(());
        }
        prop_assert!(matches!(status, 400 | 401 | 409 | 413), "{:?} -> {} {}", m, status, error);
        prop_assert_eq!(error["code"].as_u64(), Some(u64::from(status)));
        let (_, _, listed) = w.call("GET", path, Some(&w.enrolling), "");
        prop_assert_eq!(listed["total"].as_u64(), Some(0), "nothing registered");
    }
}
