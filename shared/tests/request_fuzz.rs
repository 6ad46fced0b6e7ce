//! Property-based fuzzing of the request layer: any method, path, headers, cookies, session
//! values and body reach a clear Appwrite answer, never a panic or a 5xx.
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
use mfa_core::store::embedded::EmbeddedStore;
use mfa_core::App;
use proptest::prelude::*;
use proptest::test_runner::FileFailurePersistence;
use serde_json::Value;

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
    mfa_core::routes().iter().map(|r| r.path.replace("{sessionId}", "current").replace("{type}", "totp")).collect()
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

const PARAMS: &[&str] =
    &["userId", "email", "password", "name", "phone", "url", "secret", "mfa", "factor", "challengeId", "otp"];

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
