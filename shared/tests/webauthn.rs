//! Security keys and passkeys as a second factor, with software authenticators
//! (`webauthn-authenticator-rs` soft tokens) in place of hardware: registering, signing in,
//! and every answer that must be refused (a replay, another site, a cloned key whose
//! counter went back, another user's key, malformed or oversized answers, parallel
//! completions). Each runs on the embedded store and on DynamoDB (when
//! `MFA_TEST_DYNAMODB_ENDPOINT` is set).

use std::sync::Arc;

use mfa_core::clock::{Clock, MINUTE};
use mfa_core::domain::{AuthenticatorSecret, Factor};
use mfa_core::store::Lookup;
use serde_json::{json, Value};
use webauthn_authenticator_rs::softtoken::SoftToken;
use webauthn_authenticator_rs::WebauthnAuthenticator;
use webauthn_rs::prelude::{CreationChallengeResponse, RequestChallengeResponse, Url};

mod common;
use common::{assert_refused, each_store, Answer, Person, World, PASSWORD};
const ORIGIN: &str = "http://localhost:8080";

fn token() -> SoftToken {
    SoftToken::new(false).unwrap().0
}

/// A copy of a key, secret and counter included: what a cloned key is.
fn clone_of(token: &SoftToken) -> SoftToken {
    SoftToken::from_cbor(&token.to_cbor().unwrap()).unwrap()
}

fn origin(url: &str) -> Url {
    Url::parse(url).unwrap()
}

/// The browser's part of a registration: the attestation for `options`, as JSON.
fn attest(token: &mut SoftToken, at: &str, options: &Value) -> Value {
    let options: CreationChallengeResponse = serde_json::from_value(options.clone()).unwrap();
    serde_json::to_value(token.do_registration(origin(at), options).unwrap()).unwrap()
}

/// The browser's part of a sign-in: the assertion for `options`, as JSON.
fn assert_with(token: &mut SoftToken, at: &str, options: &Value) -> Value {
    let options: RequestChallengeResponse = serde_json::from_value(options.clone()).unwrap();
    serde_json::to_value(token.do_authentication(origin(at), options).unwrap()).unwrap()
}

impl World {
    /// A new session of `email`'s user, with [`PASSWORD`].
    async fn session(&self, email: &str) -> String {
        let r = self.log_in(email, PASSWORD).await;
        assert_eq!(r.status, 201, "{}", r.body);
        r.fallback.unwrap()
    }

    /// Registers `token` as a key of `person`; returns the user the API answers.
    async fn register(&self, person: &Person, token: &mut SoftToken, name: Option<&str>) -> Value {
        let path = "/v1/account/mfa/authenticators/webauthn";
        let ceremony = self.ok("POST", path, Some(&person.session), json!({})).await;
        let attestation = attest(token, ORIGIN, &ceremony["options"]);
        self.ok("PUT", path, Some(&person.session), json!({"credential": attestation, "name": name})).await
    }

    /// A new `webauthn` challenge of `session`: its id and request options.
    async fn challenge(&self, session: &str) -> (String, Value) {
        let r = self.ok("POST", "/v1/account/mfa/challenges", Some(session), json!({"factor": "webauthn"})).await;
        (r["$id"].as_str().unwrap().to_string(), r["options"].clone())
    }

    async fn complete(&self, session: &str, challenge_id: &str, assertion: &Value) -> Answer {
        let body = json!({"challengeId": challenge_id, "credential": assertion});
        self.call("PUT", "/v1/account/mfa/challenges", Some(session), body).await
    }

    async fn turn_mfa_on(&self, person: &Person) {
        self.ok("PATCH", "/v1/account/mfa", Some(&person.session), json!({"mfa": true})).await;
    }

    /// A person with a registered key and MFA on.
    async fn enrolled(&self) -> (Person, SoftToken) {
        let person = self.sign_up().await;
        let mut key = token();
        self.register(&person, &mut key, Some("Blue key")).await;
        self.turn_mfa_on(&person).await;
        (person, key)
    }

    async fn keys(&self, session: &str) -> Value {
        self.ok("GET", "/v1/account/mfa/authenticators/webauthn", Some(session), json!({})).await
    }

    /// The attempts left on the `webauthn` challenge of `session` (its fallback cookie).
    async fn attempts_left(&self, session: &str) -> Option<u32> {
        let cookies: serde_json::Map<String, Value> = serde_json::from_str(session).unwrap();
        let value = cookies.values().next().and_then(Value::as_str).unwrap();
        let c = mfa_core::http::Credentials::decode(value).unwrap();
        let id = mfa_core::domain::session::id_of_secret(&c.secret).unwrap().to_string();
        let hash = mfa_core::domain::crypto::sha256_hex(&c.secret);
        let lookup = Lookup { session: Some((c.user_id, id, hash)), challenge: Some("webauthn"), ..Lookup::default() };
        self.app.store.load(&lookup, self.clock.now()).await.unwrap().challenge.map(|c| c.attempts_left)
    }
}

#[tokio::test]
async fn a_registered_key_signs_in_as_a_second_factor() {
    each_store("webauthn", |w| async move {
        let person = w.sign_up().await;
        let mut key = token();
        let user = w.register(&person, &mut key, Some("Blue key")).await;
        assert_eq!(user["$id"], person.id.as_str(), "the answer is the user");

        let listed = w.keys(&person.session).await;
        assert_eq!(listed["total"], 1);
        let entry = &listed["authenticators"][0];
        assert_eq!((entry["name"].as_str(), entry["type"].as_str()), (Some("Blue key"), Some("webauthn")));
        assert!(!entry["credentialId"].as_str().unwrap().is_empty());
        assert_eq!(entry["lastUsedAt"], "", "not used yet");
        let factors = w.ok("GET", "/v1/account/mfa/factors", Some(&person.session), json!({})).await;
        assert_eq!(factors["webauthn"], true);

        // Stored: a verified key with its credential, nothing secret about it.
        let stored = w.app.store.user(&person.id).await.unwrap().unwrap();
        let key_auth = stored.keys().next().expect("the key is stored");
        assert!(matches!(&key_auth.secret, AuthenticatorSecret::Webauthn { credential_id, .. }
            if credential_id == entry["credentialId"].as_str().unwrap()));
        assert!(stored.has_factor(Factor::Webauthn));

        w.turn_mfa_on(&person).await;
        let session = w.session(&person.email).await;
        let r = w.call("GET", "/v1/account", Some(&session), json!({})).await;
        assert_refused(&r, 401, "user_more_factors_required");

        let (challenge_id, options) = w.challenge(&session).await;
        assert_eq!(options["publicKey"]["rpId"], "localhost");
        assert_eq!(options["publicKey"]["allowCredentials"][0]["id"], entry["credentialId"]);
        let assertion = assert_with(&mut key, ORIGIN, &options);
        let r = w.complete(&session, &challenge_id, &assertion).await;
        assert_eq!(r.status, 200, "{}", r.body);
        assert_eq!(r.body["factors"], json!(["password", "webauthn"]));
        w.ok("GET", "/v1/account", Some(&session), json!({})).await;

        let listed = w.keys(&session).await;
        assert_ne!(listed["authenticators"][0]["lastUsedAt"], "", "the use is recorded");
        let stored = w.app.store.user(&person.id).await.unwrap().unwrap();
        assert!(matches!(&stored.keys().next().unwrap().secret, AuthenticatorSecret::Webauthn { counter, .. } if *counter >= 1));
    })
    .await;
}

#[tokio::test]
async fn the_sdk_methods_carry_the_answers_as_json_strings() {
    each_store("webauthn", |w| async move {
        let person = w.sign_up().await;
        let mut key = token();
        // `createMfaAuthenticator({type: 'webauthn'})`, then `updateMfaAuthenticator({type, otp})`.
        let path = "/v1/account/mfa/authenticators/webauthn";
        let ceremony = w.ok("POST", path, Some(&person.session), json!({})).await;
        let attestation = attest(&mut key, ORIGIN, &ceremony["options"]).to_string();
        w.ok("PUT", path, Some(&person.session), json!({"otp": attestation})).await;
        assert_eq!(w.keys(&person.session).await["authenticators"][0]["name"], "Security key");
        w.turn_mfa_on(&person).await;

        // `createMfaChallenge({factor: 'webauthn'})`, then `updateMfaChallenge({challengeId, otp})`.
        let session = w.session(&person.email).await;
        let (challenge_id, options) = w.challenge(&session).await;
        let otp = assert_with(&mut key, ORIGIN, &options).to_string();
        let body = json!({"challengeId": challenge_id, "otp": otp});
        let r = w.call("PUT", "/v1/account/mfa/challenges", Some(&session), body).await;
        assert_eq!(r.status, 200, "{}", r.body);
    })
    .await;
}

#[tokio::test]
async fn an_assertion_is_used_once() {
    each_store("webauthn", |w| async move {
        let (person, mut key) = w.enrolled().await;
        let session = w.session(&person.email).await;
        let (challenge_id, options) = w.challenge(&session).await;
        let assertion = assert_with(&mut key, ORIGIN, &options);
        assert_eq!(w.complete(&session, &challenge_id, &assertion).await.status, 200);
        // The same answer again: to the spent challenge, then to a new one.
        assert_refused(&w.complete(&session, &challenge_id, &assertion).await, 401, "user_invalid_token");
        let other = w.session(&person.email).await;
        let (next_id, _) = w.challenge(&other).await;
        let r = w.complete(&other, &next_id, &assertion).await;
        assert_refused(&r, 401, "user_invalid_token");
        assert!(r.body["message"].as_str().unwrap().contains("another challenge"), "{}", r.body);
        let r = w.call("GET", "/v1/account", Some(&other), json!({})).await;
        assert_refused(&r, 401, "user_more_factors_required");
    })
    .await;
}

#[tokio::test]
async fn parallel_completions_with_one_assertion_have_one_winner() {
    each_store("webauthn", |w| async move {
        let (person, mut key) = w.enrolled().await;
        let session = w.session(&person.email).await;
        let (challenge_id, options) = w.challenge(&session).await;
        let assertion = assert_with(&mut key, ORIGIN, &options);
        let w = Arc::new(w);
        let attempts = (0..20).map(|_| {
            let (w, session, challenge_id, assertion) =
                (w.clone(), session.clone(), challenge_id.clone(), assertion.clone());
            tokio::spawn(async move { w.complete(&session, &challenge_id, &assertion).await.status })
        });
        let mut statuses = Vec::new();
        for attempt in attempts {
            statuses.push(attempt.await.unwrap());
        }
        assert_eq!(statuses.iter().filter(|s| **s == 200).count(), 1, "{statuses:?}");
        assert!(statuses.iter().all(|s| *s == 200 || *s == 401), "{statuses:?}");
    })
    .await;
}

#[tokio::test]
async fn an_answer_for_another_site_is_refused() {
    each_store("webauthn", |w| async move {
        let (person, mut key) = w.enrolled().await;
        let session = w.session(&person.email).await;
        let (challenge_id, options) = w.challenge(&session).await;
        // A page on another origin (a subdomain is not the configured origin).
        let assertion = assert_with(&mut key, "https://phish.localhost", &options);
        let r = w.complete(&session, &challenge_id, &assertion).await;
        assert_refused(&r, 401, "user_invalid_token");
        assert!(r.body["message"].as_str().unwrap().contains("another site"), "{}", r.body);
        assert_eq!(w.attempts_left(&session).await, Some(4), "the attempt is spent");

        // Another RP id: the key signs for `phish.localhost`, from that origin.
        let mut options = options.clone();
        options["publicKey"]["rpId"] = json!("phish.localhost");
        let assertion = assert_with(&mut key, "https://phish.localhost", &options);
        let r = w.complete(&session, &challenge_id, &assertion).await;
        assert_refused(&r, 401, "user_invalid_token");
        assert!(r.body["message"].as_str().unwrap().contains("another site"), "{}", r.body);
        let r = w.call("GET", "/v1/account", Some(&session), json!({})).await;
        assert_refused(&r, 401, "user_more_factors_required");
    })
    .await;
}

#[tokio::test]
async fn a_cloned_key_whose_counter_went_back_is_refused() {
    each_store("webauthn", |w| async move {
        let (person, mut key) = w.enrolled().await;
        let mut clone = clone_of(&key);
        let first = w.session(&person.email).await;
        let (id, options) = w.challenge(&first).await;
        assert_eq!(w.complete(&first, &id, &assert_with(&mut key, ORIGIN, &options)).await.status, 200);

        // The clone still holds the counter the original had before that use.
        let second = w.session(&person.email).await;
        let (id, options) = w.challenge(&second).await;
        let r = w.complete(&second, &id, &assert_with(&mut clone, ORIGIN, &options)).await;
        assert_refused(&r, 401, "user_invalid_token");
        assert!(r.body["message"].as_str().unwrap().contains("counter"), "{}", r.body);
        let r = w.call("GET", "/v1/account", Some(&second), json!({})).await;
        assert_refused(&r, 401, "user_more_factors_required");
    })
    .await;
}

#[tokio::test]
async fn another_users_key_is_refused() {
    each_store("webauthn", |w| async move {
        let (alice, _alice_key) = w.enrolled().await;
        let (bob, mut bob_key) = w.enrolled().await;
        let bob_credential = w.keys(&bob.session).await["authenticators"][0]["credentialId"].clone();

        let session = w.session(&alice.email).await;
        let (id, mut options) = w.challenge(&session).await;
        // Bob's key, offered as if it were one of Alice's.
        options["publicKey"]["allowCredentials"] = json!([{"type": "public-key", "id": bob_credential}]);
        let r = w.complete(&session, &id, &assert_with(&mut bob_key, ORIGIN, &options)).await;
        assert_refused(&r, 401, "user_invalid_token");
        let r = w.call("GET", "/v1/account", Some(&session), json!({})).await;
        assert_refused(&r, 401, "user_more_factors_required");
    })
    .await;
}

#[tokio::test]
async fn malformed_truncated_and_oversized_answers_are_400_and_spend_nothing() {
    each_store("webauthn", |w| async move {
        let (person, mut key) = w.enrolled().await;
        let session = w.session(&person.email).await;
        let (id, options) = w.challenge(&session).await;
        let assertion = assert_with(&mut key, ORIGIN, &options);

        let mut truncated = assertion.clone();
        let data = truncated["response"]["authenticatorData"].as_str().unwrap().to_string();
        truncated["response"]["authenticatorData"] = json!(&data[..data.len() / 2]);
        let mut oversized = assertion.clone();
        oversized["padding"] = json!("x".repeat(13 * 1024));
        let bad = [
            json!({"challengeId": id, "credential": {"id": "nope"}}),
            json!({"challengeId": id, "credential": truncated}),
            json!({"challengeId": id, "credential": oversized}),
            json!({"challengeId": id, "credential": "not an object"}),
            json!({"challengeId": id, "otp": "{not json"}),
            json!({"challengeId": id}),
        ];
        for body in bad {
            let r = w.call("PUT", "/v1/account/mfa/challenges", Some(&session), body.clone()).await;
            assert_refused(&r, 400, "general_argument_invalid");
            assert!(
                r.body["message"].as_str().unwrap().starts_with("Invalid `")
                    || r.body["message"].as_str().unwrap().starts_with("Param "),
                "{}",
                r.body
            );
        }
        assert_eq!(w.attempts_left(&session).await, Some(5), "no attempt spent");
        assert_eq!(w.complete(&session, &id, &assertion).await.status, 200, "the challenge is intact");

        // The same for registration: nothing stored.
        let path = "/v1/account/mfa/authenticators/webauthn";
        let ceremony = w.ok("POST", path, Some(&session), json!({})).await;
        let mut attestation = attest(&mut token(), ORIGIN, &ceremony["options"]);
        let object = attestation["response"]["attestationObject"].as_str().unwrap().to_string();
        attestation["response"]["attestationObject"] = json!(&object[..object.len() / 3]);
        let r = w.call("PUT", path, Some(&session), json!({"credential": attestation})).await;
        assert_refused(&r, 400, "general_argument_invalid");
        assert_eq!(w.keys(&session).await["total"], 1);
    })
    .await;
}

#[tokio::test]
async fn wrong_answers_burn_the_challenge_like_wrong_codes() {
    each_store("webauthn", |w| async move {
        let (person, mut key) = w.enrolled().await;
        let session = w.session(&person.email).await;
        let (id, options) = w.challenge(&session).await;
        for _ in 0..5 {
            let r = w.complete(&session, &id, &assert_with(&mut key, "https://phish.localhost", &options)).await;
            assert_refused(&r, 401, "user_invalid_token");
        }
        let r = w.complete(&session, &id, &assert_with(&mut key, ORIGIN, &options)).await;
        assert_refused(&r, 401, "user_invalid_token");
    })
    .await;
}

#[tokio::test]
async fn several_keys_are_kept_and_one_is_removed_with_a_recent_challenge() {
    each_store("webauthn", |w| async move {
        let (person, mut blue) = w.enrolled().await;
        let mut spare = token();
        let owner = Person { session: w.session(&person.email).await, ..person };
        let (id, options) = w.challenge(&owner.session).await;
        assert_eq!(w.complete(&owner.session, &id, &assert_with(&mut blue, ORIGIN, &options)).await.status, 200);
        w.register(&owner, &mut spare, Some("Spare")).await;
        let listed = w.keys(&owner.session).await;
        assert_eq!(listed["total"], 2);
        let listed_blue =
            listed["authenticators"].as_array().unwrap().iter().find(|k| k["name"] == "Blue key").unwrap();
        let blue_id = listed_blue["$id"].as_str().unwrap().to_string();
        let blue_credential = listed_blue["credentialId"].clone();
        let ceremony = w.ok("POST", "/v1/account/mfa/authenticators/webauthn", Some(&owner.session), json!({})).await;
        let excluded = ceremony["options"]["publicKey"]["excludeCredentials"].as_array().unwrap().len();
        assert_eq!(excluded, 2, "the options name the keys already registered, so none is registered twice");

        let other = w.session(&owner.email).await;
        let (id, options) = w.challenge(&other).await;
        assert_eq!(w.complete(&other, &id, &assert_with(&mut spare, ORIGIN, &options)).await.status, 200);

        // Without a recent challenge, removal is refused.
        w.clock.advance(31 * MINUTE);
        let path = format!("/v1/account/mfa/authenticators/webauthn/{blue_id}");
        assert_refused(&w.call("DELETE", &path, Some(&owner.session), json!({})).await, 401, "user_challenge_required");
        let (id, options) = w.challenge(&owner.session).await;
        assert_eq!(w.complete(&owner.session, &id, &assert_with(&mut blue, ORIGIN, &options)).await.status, 200);
        assert_eq!(w.call("DELETE", &path, Some(&owner.session), json!({})).await.status, 204);
        let listed = w.keys(&owner.session).await;
        assert_eq!((listed["total"].as_u64(), listed["authenticators"][0]["name"].as_str()), (Some(1), Some("Spare")));
        assert_refused(
            &w.call("DELETE", &path, Some(&owner.session), json!({})).await,
            404,
            "user_authenticator_not_found",
        );
        // The other sessions are over; the removed key no longer signs in.
        assert_refused(&w.call("GET", "/v1/account", Some(&other), json!({})).await, 401, "general_unauthorized_scope");
        let session = w.session(&owner.email).await;
        let (id, mut options) = w.challenge(&session).await;
        options["publicKey"]["allowCredentials"] = json!([{"type": "public-key", "id": blue_credential}]);
        let r = w.complete(&session, &id, &assert_with(&mut blue, ORIGIN, &options)).await;
        assert_refused(&r, 401, "user_invalid_token");
        // A key is also found by its credential id.
        let spare_credential = listed["authenticators"][0]["credentialId"].as_str().unwrap();
        let path = format!("/v1/account/mfa/authenticators/webauthn/{spare_credential}");
        let r = w.call("DELETE", &path, Some(&owner.session), json!({})).await;
        assert_eq!(r.status, 204, "{}", r.body);
        let factors = w.ok("GET", "/v1/account/mfa/factors", Some(&owner.session), json!({})).await;
        assert_eq!(factors["webauthn"], false);
    })
    .await;
}

#[tokio::test]
async fn a_stolen_session_cannot_make_itself_recent_with_a_key_it_added() {
    each_store("webauthn", |w| async move {
        let person = w.sign_up().await;
        let mut key = token();
        w.register(&person, &mut key, None).await;
        w.turn_mfa_on(&person).await;
        // The session that added the key proves nothing the account had before with it.
        let (id, options) = w.challenge(&person.session).await;
        assert_eq!(w.complete(&person.session, &id, &assert_with(&mut key, ORIGIN, &options)).await.status, 200);
        let r = w.call("DELETE", "/v1/account/mfa/authenticators/webauthn", Some(&person.session), json!({})).await;
        assert_refused(&r, 401, "user_challenge_required");
        // Nor may it add another key: under enforced MFA that needs a recent challenge.
        let r = w.call("POST", "/v1/account/mfa/authenticators/webauthn", Some(&person.session), json!({})).await;
        assert_refused(&r, 401, "user_challenge_required");
        assert_eq!(w.keys(&person.session).await["total"], 1);
    })
    .await;
}
