//! Server-key rotation on both stores: values made under the first key keep working after a
//! new key becomes active, a TOTP secret is sealed again under it when used and recovery
//! codes when replaced, after which the first key protects nothing and can be retired; and a
//! retired key's values are refused with a clear error, never a 500.

use std::sync::Arc;

use mfa_core::config::Config;
use mfa_core::domain::totp;
use mfa_core::App;
use serde_json::json;

mod common;
use common::{assert_refused, each_store, World};

/// The app as it runs with these server keys (active first), over the same store and clock.
fn with_keys(w: &World, ids: &[&str]) -> App {
    let mut config = Config::for_project("p", b"unused");
    config.secret_keys = ids
        .iter()
        .map(|id| (id.to_string(), format!("the server key called {id}, long enough").into_bytes()))
        .collect();
    App::new(config, w.app.store.clone(), w.sender.clone(), Arc::new(w.clock.clone()))
}

async fn call(app: &App, method: &str, path: &str, session: Option<&str>, body: serde_json::Value) -> common::Answer {
    common::call(app, method, path, session, body).await
}

/// Signs up on `app`, adds a verified TOTP authenticator and recovery codes, switches MFA on.
async fn enrolled(w: &World, app: &App) -> (String, Vec<u8>, Vec<String>) {
    let email = format!("{}@example.com", mfa_core::domain::crypto::new_id());
    let body = json!({"userId": "unique()", "email": email, "password": common::PASSWORD});
    assert_eq!(call(app, "POST", "/v1/account", None, body).await.status, 201);
    let session = log_in(app, &email).await;
    let codes = call(app, "POST", "/v1/account/mfa/recovery-codes", Some(&session), json!({})).await.body;
    let codes: Vec<String> =
        codes["recoveryCodes"].as_array().unwrap().iter().map(|c| c.as_str().unwrap().into()).collect();
    let r = call(app, "POST", "/v1/account/mfa/authenticators/totp", Some(&session), json!({})).await;
    let secret = totp::from_base32(r.body["secret"].as_str().unwrap()).unwrap();
    let otp = next_code(w, &secret);
    assert_eq!(
        call(app, "PUT", "/v1/account/mfa/authenticators/totp", Some(&session), json!({"otp": otp})).await.status,
        200
    );
    assert_eq!(call(app, "PATCH", "/v1/account/mfa", Some(&session), json!({"mfa": true})).await.status, 200);
    (email, secret, codes)
}

async fn log_in(app: &App, email: &str) -> String {
    let r =
        call(app, "POST", "/v1/account/sessions/email", None, json!({"email": email, "password": common::PASSWORD}))
            .await;
    assert_eq!(r.status, 201, "{}", r.body);
    r.fallback.unwrap()
}

fn next_code(w: &World, secret: &[u8]) -> String {
    use mfa_core::clock::Clock;
    w.clock.advance(30_000);
    totp::code_at(secret, w.clock.now()).unwrap()
}

/// Signs in on `app` and completes a challenge of `factor` with `code`.
async fn pass(app: &App, email: &str, factor: &str, code: &str) -> (String, common::Answer) {
    let session = log_in(app, email).await;
    let c = call(app, "POST", "/v1/account/mfa/challenges", Some(&session), json!({"factor": factor})).await;
    assert_eq!(c.status, 201, "{}", c.body);
    let body = json!({"challengeId": c.body["$id"], "otp": code});
    let r = call(app, "PUT", "/v1/account/mfa/challenges", Some(&session), body).await;
    (session, r)
}

async fn usage(w: &World) -> std::collections::BTreeMap<String, u64> {
    use mfa_core::clock::Clock;
    w.app.store.key_usage(w.clock.now()).await.unwrap()
}

#[tokio::test]
async fn values_outlive_a_rotation_and_the_old_key_retires_once_nothing_needs_it() {
    each_store("rotation", |w| async move {
        let before = with_keys(&w, &["k0"]);
        let (email, secret, codes) = enrolled(&w, &before).await;
        assert_eq!(usage(&w).await.get("k0"), Some(&9), "a TOTP secret and 8 recovery-code hashes");

        let rotated = with_keys(&w, &["k1", "k0"]);
        // A recovery code and the TOTP secret made under k0 still work.
        let (_, r) = pass(&rotated, &email, "recoverycode", &codes[0]).await;
        assert_eq!(r.status, 200, "{}", r.body);
        let (session, r) = pass(&rotated, &email, "totp", &next_code(&w, &secret)).await;
        assert_eq!(r.status, 200, "{}", r.body);
        let stored = w.app.store.user(r.body["userId"].as_str().unwrap()).await.unwrap().unwrap();
        assert!(stored.totp().unwrap().totp_secret().unwrap().0.starts_with("k1:"), "sealed again under k1 when used");
        assert_eq!(usage(&w).await.get("k0"), Some(&7), "the 7 unused recovery codes");
        // Replacing the codes (the TOTP challenge was recent) leaves k0 nothing.
        let fresh = call(&rotated, "PATCH", "/v1/account/mfa/recovery-codes", Some(&session), json!({})).await;
        assert_eq!(fresh.status, 200, "{}", fresh.body);
        assert_eq!(usage(&w).await.get("k0"), None);
        assert_eq!(usage(&w).await.get("k1"), Some(&9));

        // k0 retired: everything still works.
        let retired = with_keys(&w, &["k1"]);
        let (_, r) = pass(&retired, &email, "totp", &next_code(&w, &secret)).await;
        assert_eq!(r.status, 200, "{}", r.body);
        let code = fresh.body["recoveryCodes"][0].as_str().unwrap().to_string();
        let (_, r) = pass(&retired, &email, "recoverycode", &code).await;
        assert_eq!(r.status, 200, "{}", r.body);
    })
    .await;
}

#[tokio::test]
async fn a_retired_keys_values_are_refused_cleanly() {
    each_store("retired", |w| async move {
        let before = with_keys(&w, &["k0"]);
        let (email, secret, codes) = enrolled(&w, &before).await;
        // k0 retired too early (without waiting for `keys usage` to show none).
        let retired = with_keys(&w, &["k1"]);
        let (_, r) = pass(&retired, &email, "totp", &next_code(&w, &secret)).await;
        assert_refused(&r, 401, "user_invalid_token");
        assert!(r.body["message"].as_str().unwrap().contains("retired"), "{}", r.body);
        let (_, r) = pass(&retired, &email, "recoverycode", &codes[0]).await;
        assert_refused(&r, 401, "user_invalid_token");
        // The user can still sign in and set the authenticator up again.
        let session = log_in(&retired, &email).await;
        let r = call(&retired, "GET", "/v1/account/mfa/factors", Some(&session), json!({})).await;
        assert_eq!(r.body["totp"], true);
    })
    .await;
}
