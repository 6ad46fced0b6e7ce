//! The "recent challenge" rule guards removing the authenticator, switching MFA off and
//! replacing recovery codes, so that a stolen, fully signed-in session cannot take over a
//! user's MFA. It must be met only with a factor the user had before that session touched
//! it, and under enforced MFA a session may not add a factor without it. Each attack below
//! runs on the embedded store and on DynamoDB (when `MFA_TEST_DYNAMODB_ENDPOINT` is set),
//! and must end with the user's MFA as it was.

use std::sync::Arc;

use mfa_core::clock::{Clock, ManualClock, Millis, SystemClock, MINUTE};
use mfa_core::config::Config;
use mfa_core::domain::totp;
use mfa_core::store::embedded::EmbeddedStore;
use mfa_core::store::Store;
use mfa_core::App;
use serde_json::{json, Value};

mod common;
use common::{Answer, Recorder};

const PASSWORD: &str = "correct horse battery";

struct World {
    app: App,
    clock: ManualClock,
    sender: Arc<Recorder>,
    _dir: Option<tempfile::TempDir>,
}

impl World {
    fn on(store: Arc<dyn Store>, dir: Option<tempfile::TempDir>) -> World {
        // Real time: DynamoDB Local deletes items whose TTL has passed.
        let clock = ManualClock::at(SystemClock.now());
        let sender = Arc::new(Recorder::default());
        let config = Config::for_project("p", b"a test server key of sufficient length");
        let app = App::new(config, store, sender.clone(), Arc::new(clock.clone()));
        World { app, clock, sender, _dir: dir }
    }

    fn embedded() -> World {
        let dir = tempfile::tempdir().unwrap();
        let store = EmbeddedStore::open(&dir.path().join("mfa.redb"), SystemClock.now()).unwrap();
        World::on(Arc::new(store), Some(dir))
    }

    async fn dynamodb() -> Option<World> {
        Some(World::on(common::dynamodb_store("recent").await?, None))
    }

    fn now(&self) -> Millis {
        self.clock.now()
    }

    async fn call(&self, method: &str, path: &str, session: Option<&str>, body: Value) -> Answer {
        common::call(&self.app, method, path, session, body).await
    }

    async fn ok(&self, method: &str, path: &str, session: Option<&str>, body: Value) -> Value {
        let r = self.call(method, path, session, body).await;
        assert!((200..300).contains(&r.status), "{method} {path}: {} {}", r.status, r.body);
        r.body
    }

    async fn log_in(&self, email: &str) -> String {
        let r =
            self.call("POST", "/v1/account/sessions/email", None, json!({"email": email, "password": PASSWORD})).await;
        assert_eq!(r.status, 201, "{}", r.body);
        r.fallback.unwrap()
    }

    fn last_code(&self) -> String {
        let text = self.sender.last_text();
        text.split(|c: char| !c.is_ascii_digit()).find(|w| w.len() == 6).unwrap().to_string()
    }

    /// Signs up a new user with a verified email and signs in; returns (email, session).
    async fn user_with_verified_email(&self) -> (String, String) {
        let email = format!("{}@example.com", mfa_core::domain::crypto::new_id().to_lowercase());
        let body = json!({"userId": "unique()", "email": email, "password": PASSWORD});
        let user = self.ok("POST", "/v1/account", None, body).await;
        let session = self.log_in(&email).await;
        self.ok("POST", "/v1/account/verifications/email", Some(&session), json!({"url": "https://app.example/v"}))
            .await;
        let text = self.sender.last_text();
        let secret = text.split("secret=").nth(1).unwrap().split(['&', '\n', ' ']).next().unwrap().to_string();
        let body = json!({"userId": user["$id"], "secret": secret});
        self.ok("PUT", "/v1/account/verifications/email", None, body).await;
        (email, session)
    }

    /// Adds and verifies an authenticator with `session`; returns its secret.
    async fn add_totp(&self, session: &str) -> Vec<u8> {
        let r = self.ok("POST", "/v1/account/mfa/authenticators/totp", Some(session), json!({})).await;
        let secret = totp::from_base32(r["secret"].as_str().unwrap()).unwrap();
        let otp = totp::code_at(&secret, self.now()).unwrap();
        self.ok("PUT", "/v1/account/mfa/authenticators/totp", Some(session), json!({"otp": otp})).await;
        secret
    }

    /// Creates and completes a challenge of `factor`; `code` gives the code to type.
    async fn pass(&self, session: &str, factor: &str, code: impl FnOnce(&World) -> String) -> Answer {
        let r = self.ok("POST", "/v1/account/mfa/challenges", Some(session), json!({"factor": factor})).await;
        let body = json!({"challengeId": r["$id"], "otp": code(self)});
        self.call("PUT", "/v1/account/mfa/challenges", Some(session), body).await
    }

    /// A fresh TOTP step: each is accepted once.
    fn next_totp(&self, secret: &[u8]) -> String {
        self.clock.advance(30_000);
        totp::code_at(secret, self.now()).unwrap()
    }

    /// A session that passed MFA, then stolen after its challenge stopped being recent.
    async fn stolen_session(&self, email: &str) -> String {
        let session = self.log_in(email).await;
        let r = self.pass(&session, "email", World::last_code).await;
        assert_eq!(r.status, 200, "{}", r.body);
        self.clock.advance(31 * MINUTE);
        session
    }

    async fn factors(&self, session: &str) -> Value {
        self.ok("GET", "/v1/account/mfa/factors", Some(session), json!({})).await
    }

    async fn account(&self, session: &str) -> Value {
        self.ok("GET", "/v1/account", Some(session), json!({})).await
    }
}

fn refused_for_lack_of_a_recent_challenge(r: &Answer) {
    assert_eq!((r.status, r.body["type"].as_str().unwrap_or_default()), (401, "user_challenge_required"), "{}", r.body);
}

/// Tries what a stolen session would do once it counted as recent.
async fn take_over(w: &World, session: &str) {
    w.call("DELETE", "/v1/account/mfa/authenticators/totp", Some(session), json!({})).await;
    w.call("PATCH", "/v1/account/mfa/recovery-codes", Some(session), json!({})).await;
    w.call("PATCH", "/v1/account/mfa", Some(session), json!({"mfa": false})).await;
}

/// The user has an authenticator and MFA on, and never created recovery codes: the
/// session creates some, passes a recovery-code challenge with one, and would be recent.
async fn recovery_codes_a_session_creates_do_not_make_it_recent(w: World) {
    let (email, setup) = w.user_with_verified_email().await;
    let secret = w.add_totp(&setup).await;
    w.ok("PATCH", "/v1/account/mfa", Some(&setup), json!({"mfa": true})).await;
    let stolen = w.stolen_session(&email).await;

    let r = w.call("POST", "/v1/account/mfa/recovery-codes", Some(&stolen), json!({})).await;
    refused_for_lack_of_a_recent_challenge(&r);
    if r.status == 201 {
        let code = r.body["recoveryCodes"][0].as_str().unwrap().to_string();
        w.pass(&stolen, "recoverycode", |_| code).await;
    }
    take_over(&w, &stolen).await;

    let factors = w.factors(&stolen).await;
    assert_eq!((factors["totp"].clone(), factors["recoveryCode"].clone()), (json!(true), json!(false)));
    assert_eq!(w.account(&stolen).await["mfa"], true);
    // The owner still signs in with the authenticator.
    let owner = w.log_in(&email).await;
    let r = w.pass(&owner, "totp", |w| w.next_totp(&secret)).await;
    assert_eq!(r.status, 200, "{}", r.body);
}

/// The user has email MFA and no authenticator: the session enrols its own and passes a
/// TOTP challenge with it.
async fn an_authenticator_a_session_enrols_does_not_make_it_recent(w: World) {
    let (email, setup) = w.user_with_verified_email().await;
    let codes = w.ok("POST", "/v1/account/mfa/recovery-codes", Some(&setup), json!({})).await["recoveryCodes"].clone();
    w.ok("PATCH", "/v1/account/mfa", Some(&setup), json!({"mfa": true})).await;
    let stolen = w.stolen_session(&email).await;

    let r = w.call("POST", "/v1/account/mfa/authenticators/totp", Some(&stolen), json!({})).await;
    refused_for_lack_of_a_recent_challenge(&r);
    if r.status == 200 {
        let secret = totp::from_base32(r.body["secret"].as_str().unwrap()).unwrap();
        let otp = totp::code_at(&secret, w.now()).unwrap();
        w.call("PUT", "/v1/account/mfa/authenticators/totp", Some(&stolen), json!({"otp": otp})).await;
        w.pass(&stolen, "totp", |w| w.next_totp(&secret)).await;
    }
    take_over(&w, &stolen).await;

    let factors = w.factors(&stolen).await;
    assert_eq!((factors["totp"].clone(), factors["email"].clone()), (json!(false), json!(true)));
    assert_eq!(w.account(&stolen).await["mfa"], true);
    // The recovery codes are the owner's: one still completes a challenge.
    let owner = w.log_in(&email).await;
    let code = codes[0].as_str().unwrap().to_string();
    assert_eq!(w.pass(&owner, "recoverycode", |_| code).await.status, 200);
}

/// With the password, the session sets a new phone number, verifies it by SMS and passes
/// a phone challenge.
async fn a_phone_a_session_adds_does_not_make_it_recent(w: World) {
    let (email, setup) = w.user_with_verified_email().await;
    let secret = w.add_totp(&setup).await;
    w.ok("PATCH", "/v1/account/mfa", Some(&setup), json!({"mfa": true})).await;
    let stolen = w.stolen_session(&email).await;

    let body = json!({"phone": "+12065550123", "password": PASSWORD});
    let r = w.call("PATCH", "/v1/account/phone", Some(&stolen), body).await;
    refused_for_lack_of_a_recent_challenge(&r);
    if r.status == 200 {
        w.call("POST", "/v1/account/verifications/phone", Some(&stolen), json!({})).await;
        let body = json!({"userId": r.body["$id"], "secret": w.last_code()});
        w.call("PUT", "/v1/account/verifications/phone", None, body).await;
        w.pass(&stolen, "phone", World::last_code).await;
    }
    take_over(&w, &stolen).await;

    let account = w.account(&stolen).await;
    assert_eq!((account["phone"].clone(), account["mfa"].clone()), (json!(""), json!(true)));
    assert_eq!(w.factors(&stolen).await["totp"], true);
    let owner = w.log_in(&email).await;
    assert_eq!(w.pass(&owner, "totp", |w| w.next_totp(&secret)).await.status, 200);
}

/// A session that added a factor while it was recent cannot use that factor to stay
/// recent; another session of the user can.
async fn only_a_factor_the_session_did_not_add_proves_a_recent_challenge(w: World) {
    let (email, setup) = w.user_with_verified_email().await;
    w.ok("PATCH", "/v1/account/mfa", Some(&setup), json!({"mfa": true})).await;
    let session = w.log_in(&email).await;
    assert_eq!(w.pass(&session, "email", World::last_code).await.status, 200);
    // Recent: it may add an authenticator and recovery codes.
    let secret = w.add_totp(&session).await;
    w.ok("POST", "/v1/account/mfa/recovery-codes", Some(&session), json!({})).await;
    w.clock.advance(31 * MINUTE);

    let r = w.pass(&session, "totp", |w| w.next_totp(&secret)).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let r = w.call("DELETE", "/v1/account/mfa/authenticators/totp", Some(&session), json!({})).await;
    refused_for_lack_of_a_recent_challenge(&r);
    let r = w.call("PATCH", "/v1/account/mfa/recovery-codes", Some(&session), json!({})).await;
    refused_for_lack_of_a_recent_challenge(&r);

    let other = w.log_in(&email).await;
    assert_eq!(w.pass(&other, "totp", |w| w.next_totp(&secret)).await.status, 200);
    let r = w.call("DELETE", "/v1/account/mfa/authenticators/totp", Some(&other), json!({})).await;
    assert_eq!(r.status, 204, "{}", r.body);
}

/// A recent challenge passed with an older factor lets a session add one under enforced MFA.
async fn a_recent_challenge_lets_a_session_add_a_factor(w: World) {
    let (email, setup) = w.user_with_verified_email().await;
    w.ok("PATCH", "/v1/account/mfa", Some(&setup), json!({"mfa": true})).await;
    let session = w.log_in(&email).await;
    assert_eq!(w.pass(&session, "email", World::last_code).await.status, 200);
    let body = json!({"phone": "+12065550199", "password": PASSWORD});
    assert_eq!(w.call("PATCH", "/v1/account/phone", Some(&session), body).await.status, 200);
    w.add_totp(&session).await;
    assert_eq!(w.factors(&session).await["totp"], true);
}

macro_rules! on_both_stores {
    ($($case:ident),* $(,)?) => {
        mod embedded {
            $(
                #[tokio::test]
                async fn $case() {
                    super::$case(super::World::embedded()).await;
                }
            )*
        }
        mod dynamodb {
            $(
                #[tokio::test]
                async fn $case() {
                    let Some(world) = super::World::dynamodb().await else { return };
                    super::$case(world).await;
                }
            )*
        }
    };
}

on_both_stores!(
    recovery_codes_a_session_creates_do_not_make_it_recent,
    an_authenticator_a_session_enrols_does_not_make_it_recent,
    a_phone_a_session_adds_does_not_make_it_recent,
    only_a_factor_the_session_did_not_add_proves_a_recent_challenge,
    a_recent_challenge_lets_a_session_add_a_factor,
);
