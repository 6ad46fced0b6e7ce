//! The account routes an app's settings screens need (sessions, name, preferences,
//! password) and the activity log that records every security event, on the embedded
//! store and on DynamoDB (when `MFA_TEST_DYNAMODB_ENDPOINT` is set).

use serde_json::{json, Value};

mod common;
use common::{assert_refused, each_store, World, PASSWORD};

/// The event names of the user's log, newest first.
async fn logged(w: &World, session: &str) -> Vec<String> {
    let logs = w.ok("GET", "/v1/account/logs", Some(session), json!({})).await;
    logs["logs"].as_array().unwrap().iter().map(|l| l["event"].as_str().unwrap().to_string()).collect()
}

fn session_id(fallback: &str) -> String {
    let cookies: Value = serde_json::from_str(fallback).unwrap();
    let value = cookies.as_object().unwrap().values().next().unwrap().as_str().unwrap().to_string();
    let raw = base64::Engine::decode(&base64::engine::general_purpose::STANDARD, value).unwrap();
    let secret = serde_json::from_slice::<Value>(&raw).unwrap()["secret"].as_str().unwrap().to_string();
    secret.split('.').next().unwrap().to_string()
}

#[tokio::test]
async fn a_user_sees_their_sessions_and_only_theirs() {
    each_store("activity", |w| async move {
        let me = w.sign_up().await;
        let laptop = w.log_in(&me.email, PASSWORD).await.fallback.unwrap();
        let stranger = w.sign_up().await;

        let listed = w.ok("GET", "/v1/account/sessions", Some(&me.session), json!({})).await;
        assert_eq!(listed["total"], 2);
        let ids: Vec<&str> =
            listed["sessions"].as_array().unwrap().iter().map(|s| s["$id"].as_str().unwrap()).collect();
        assert!(ids.contains(&session_id(&me.session).as_str()) && ids.contains(&session_id(&laptop).as_str()));
        let current: Vec<bool> = listed["sessions"].as_array().unwrap().iter().map(|s| s["current"] == true).collect();
        assert_eq!(current.iter().filter(|c| **c).count(), 1);
        assert!(listed["sessions"][0]["secret"] == "", "no secret is ever listed");

        let current = w.ok("GET", "/v1/account/sessions/current", Some(&me.session), json!({})).await;
        assert_eq!(
            (current["$id"].as_str(), current["current"].as_bool()),
            (Some(session_id(&me.session).as_str()), Some(true))
        );
        let other = format!("/v1/account/sessions/{}", session_id(&laptop));
        let other = w.ok("GET", &other, Some(&me.session), json!({})).await;
        assert_eq!(other["current"], false);
        // Another user's session id finds nothing.
        let theirs = format!("/v1/account/sessions/{}", session_id(&stranger.session));
        assert_refused(&w.call("GET", &theirs, Some(&me.session), json!({})).await, 404, "user_session_not_found");

        // Signing out everywhere leaves none to list.
        w.ok("DELETE", "/v1/account/sessions", Some(&laptop), json!({})).await;
        let r = w.call("GET", "/v1/account/sessions", Some(&me.session), json!({})).await;
        assert_refused(&r, 401, "general_unauthorized_scope");
    })
    .await;
}

#[tokio::test]
async fn name_and_preferences_are_kept() {
    each_store("activity", |w| async move {
        let me = w.sign_up().await;
        let account = w.ok("PATCH", "/v1/account/name", Some(&me.session), json!({"name": "Ada"})).await;
        assert_eq!(account["name"], "Ada");
        let prefs = json!({"theme": "dark", "notifications": {"email": false}, "volume": 7});
        let account = w.ok("PATCH", "/v1/account/prefs", Some(&me.session), json!({"prefs": prefs})).await;
        assert_eq!(account["prefs"], prefs);
        assert_eq!(w.ok("GET", "/v1/account/prefs", Some(&me.session), json!({})).await, prefs);
        let account = w.ok("GET", "/v1/account", Some(&me.session), json!({})).await;
        assert_eq!((account["name"].clone(), account["prefs"].clone()), (json!("Ada"), prefs));
        // Replaced whole, as Appwrite does.
        w.ok("PATCH", "/v1/account/prefs", Some(&me.session), json!({"prefs": {"theme": "light"}})).await;
        assert_eq!(w.ok("GET", "/v1/account/prefs", Some(&me.session), json!({})).await, json!({"theme": "light"}));

        let r = w.call("PATCH", "/v1/account/prefs", Some(&me.session), json!({"prefs": "dark"})).await;
        assert_refused(&r, 400, "general_argument_invalid");
        let r = w.call("PATCH", "/v1/account/name", Some(&me.session), json!({"name": "x".repeat(129)})).await;
        assert_refused(&r, 400, "general_argument_invalid");
        assert_refused(
            &w.call("PATCH", "/v1/account/name", None, json!({"name": "Eve"})).await,
            401,
            "general_unauthorized_scope",
        );
    })
    .await;
}

#[tokio::test]
async fn a_new_password_needs_the_old_one_and_ends_the_other_sessions() {
    each_store("activity", |w| async move {
        let me = w.sign_up().await;
        let phone = w.log_in(&me.email, PASSWORD).await.fallback.unwrap();
        let r = w
            .call(
                "PATCH",
                "/v1/account/password",
                Some(&me.session),
                json!({"password": "a new long password", "oldPassword": "wrong"}),
            )
            .await;
        assert_refused(&r, 401, "user_invalid_credentials");
        let r = w
            .call("PATCH", "/v1/account/password", Some(&me.session), json!({"password": "a new long password"}))
            .await;
        assert_refused(&r, 401, "user_invalid_credentials");
        let r = w
            .call(
                "PATCH",
                "/v1/account/password",
                Some(&me.session),
                json!({"password": "short", "oldPassword": PASSWORD}),
            )
            .await;
        assert_refused(&r, 400, "general_argument_invalid");

        // Sessions confirmed before this moment end with the change.
        w.clock.advance(1);
        let body = json!({"password": "a new long password", "oldPassword": PASSWORD});
        let account = w.ok("PATCH", "/v1/account/password", Some(&me.session), body).await;
        assert_eq!(account["$id"], me.id.as_str());
        // The session that changed it stays; the other is over.
        w.ok("GET", "/v1/account", Some(&me.session), json!({})).await;
        assert_refused(&w.call("GET", "/v1/account", Some(&phone), json!({})).await, 401, "general_unauthorized_scope");
        assert_refused(&w.log_in(&me.email, PASSWORD).await, 401, "user_invalid_credentials");
        assert_eq!(w.log_in(&me.email, "a new long password").await.status, 201);
        assert_eq!(logged(&w, &me.session).await[..2], ["session.create", "password.update"]);
    })
    .await;
}

#[tokio::test]
async fn every_security_event_is_in_the_log_newest_first() {
    each_store("activity", |w| async move {
        let me = w.sign_up().await;
        w.ok("POST", "/v1/account/mfa/recovery-codes", Some(&me.session), json!({})).await;
        w.ok("POST", "/v1/account/verifications/email", Some(&me.session), json!({"url": "https://app.example/v"})).await;
        let text = w.sender.last_text();
        let secret = text.split("secret=").nth(1).unwrap().split(['&', '\n', ' ']).next().unwrap().to_string();
        w.ok("PUT", "/v1/account/verifications/email", None, json!({"userId": me.id, "secret": secret})).await;
        w.ok("PATCH", "/v1/account/mfa", Some(&me.session), json!({"mfa": true})).await;

        let session = w.log_in(&me.email, PASSWORD).await.fallback.unwrap();
        let challenge = w.ok("POST", "/v1/account/mfa/challenges", Some(&session), json!({"factor": "email"})).await;
        let wrong = json!({"challengeId": challenge["$id"], "otp": "000000"});
        assert_refused(&w.call("PUT", "/v1/account/mfa/challenges", Some(&session), wrong).await, 401, "user_invalid_token");
        let code = w.sender.last_text().split(|c: char| !c.is_ascii_digit()).find(|s| s.len() == 6).unwrap().to_string();
        w.ok("PUT", "/v1/account/mfa/challenges", Some(&session), json!({"challengeId": challenge["$id"], "otp": code})).await;
        w.clock.advance(1);
        w.ok("DELETE", &format!("/v1/account/sessions/{}", session_id(&me.session)), Some(&session), json!({})).await;

        let events = logged(&w, &session).await;
        assert_eq!(
            events,
            [
                "session.delete",
                "challenge.update",
                "challenge.fail",
                "challenge.create",
                "session.create",
                "mfa.update",
                "verification.update",
                "recovery-codes.create",
                "session.create",
            ],
            "newest first"
        );
        let logs = w.ok("GET", "/v1/account/logs", Some(&session), json!({})).await;
        let first = &logs["logs"][0];
        assert_eq!((first["userId"].as_str(), first["userEmail"].as_str()), (Some(me.id.as_str()), Some(me.email.as_str())));
        // (In-process requests have no address; the end-to-end tests see it over HTTP.)
        assert_eq!((first["mode"].as_str(), first["ip"].is_string()), (Some("default"), true));
        assert!(first["time"].as_str().unwrap().contains('T'));
        assert_eq!(logs["logs"][2]["detail"], "email", "the factor that failed");

        // Pages, with Appwrite's queries; anything else is refused, not ignored.
        let page = w.ok("GET", "/v1/account/logs?queries[0]=%7B%22method%22%3A%22limit%22%2C%22values%22%3A%5B2%5D%7D&queries[1]=%7B%22method%22%3A%22offset%22%2C%22values%22%3A%5B1%5D%7D", Some(&session), json!({})).await;
        assert_eq!(page["total"], 9);
        let names: Vec<&str> = page["logs"].as_array().unwrap().iter().map(|l| l["event"].as_str().unwrap()).collect();
        assert_eq!(names, ["challenge.update", "challenge.fail"]);
        let search = "/v1/account/logs?queries[0]=%7B%22method%22%3A%22search%22%2C%22attribute%22%3A%22event%22%2C%22values%22%3A%5B%22x%22%5D%7D";
        assert_refused(&w.call("GET", search, Some(&session), json!({})).await, 400, "general_query_invalid");

        // Another user sees none of it.
        let stranger = w.sign_up().await;
        assert_eq!(logged(&w, &stranger.session).await, ["session.create"]);
    })
    .await;
}

fn link_parts(text: &str) -> (String, String) {
    let query = text.split('?').nth(1).unwrap().split(['\n', ' ']).next().unwrap();
    let param = |name: &str| query.split('&').find_map(|kv| kv.strip_prefix(&format!("{name}="))).unwrap().to_string();
    (param("userId"), param("secret"))
}

#[tokio::test]
async fn a_forgotten_password_is_reset_by_email_once_and_every_session_ends() {
    each_store("activity", |w| async move {
        let me = w.sign_up().await;
        let tablet = w.log_in(&me.email, PASSWORD).await.fallback.unwrap();
        let url = json!("https://app.example/reset");

        // The same answer for an address without an account; nothing is sent.
        let sent = w.sender.messages().len();
        let nobody =
            w.ok("POST", "/v1/account/recovery", None, json!({"email": "nobody@example.com", "url": url})).await;
        let again =
            w.ok("POST", "/v1/account/recovery", None, json!({"email": "nobody@example.com", "url": url})).await;
        assert_eq!(nobody["userId"], again["userId"], "a stand-in as stable as a real user id");
        assert_eq!(w.sender.messages().len(), sent);
        let token = w.ok("POST", "/v1/account/recovery", None, json!({"email": me.email, "url": url})).await;
        assert_eq!(
            token.as_object().unwrap().keys().collect::<Vec<_>>(),
            nobody.as_object().unwrap().keys().collect::<Vec<_>>()
        );
        assert_eq!((token["userId"].as_str(), token["secret"].as_str()), (Some(me.id.as_str()), Some("")));
        let text = w.sender.last_text();
        assert!(text.contains("https://app.example/reset?"), "{text}");
        let (user_id, secret) = link_parts(&text);
        assert_eq!(user_id, me.id);

        let bad = json!({"userId": me.id, "secret": "0".repeat(43), "password": "a fresh long password"});
        assert_refused(&w.call("PUT", "/v1/account/recovery", None, bad).await, 401, "user_invalid_token");
        let r = w
            .call("PUT", "/v1/account/recovery", None, json!({"userId": me.id, "secret": secret, "password": "short"}))
            .await;
        assert_refused(&r, 400, "general_argument_invalid");
        w.clock.advance(1);
        let reset = json!({"userId": me.id, "secret": secret, "password": "a fresh long password"});
        w.ok("PUT", "/v1/account/recovery", None, reset.clone()).await;
        // Once only.
        assert_refused(&w.call("PUT", "/v1/account/recovery", None, reset).await, 401, "user_invalid_token");
        // Every session is over; the new password signs in, the old one does not.
        for session in [&me.session, &tablet] {
            assert_refused(
                &w.call("GET", "/v1/account", Some(session), json!({})).await,
                401,
                "general_unauthorized_scope",
            );
        }
        assert_refused(&w.log_in(&me.email, PASSWORD).await, 401, "user_invalid_credentials");
        w.clock.advance(1);
        let session = w.log_in(&me.email, "a fresh long password").await.fallback.unwrap();
        assert_eq!(logged(&w, &session).await[..3], ["session.create", "recovery.update", "recovery.create"]);
    })
    .await;
}

#[tokio::test]
async fn after_a_reset_mfa_is_still_asked_and_old_links_expire() {
    each_store("activity", |w| async move {
        let me = w.sign_up().await;
        w.ok("POST", "/v1/account/mfa/recovery-codes", Some(&me.session), json!({})).await;
        w.ok("POST", "/v1/account/verifications/email", Some(&me.session), json!({"url": "https://app.example/v"}))
            .await;
        let text = w.sender.last_text();
        let secret = text.split("secret=").nth(1).unwrap().split(['&', '\n', ' ']).next().unwrap().to_string();
        w.ok("PUT", "/v1/account/verifications/email", None, json!({"userId": me.id, "secret": secret})).await;
        w.ok("PATCH", "/v1/account/mfa", Some(&me.session), json!({"mfa": true})).await;

        w.ok("POST", "/v1/account/recovery", None, json!({"email": me.email, "url": "https://app.example/r"})).await;
        let (_, expired) = link_parts(&w.sender.last_text());
        w.clock.advance(61 * 60 * 1000);
        let late = json!({"userId": me.id, "secret": expired, "password": "a fresh long password"});
        assert_refused(&w.call("PUT", "/v1/account/recovery", None, late).await, 401, "user_invalid_token");

        w.ok("POST", "/v1/account/recovery", None, json!({"email": me.email, "url": "https://app.example/r"})).await;
        let (_, secret) = link_parts(&w.sender.last_text());
        w.ok(
            "PUT",
            "/v1/account/recovery",
            None,
            json!({"userId": me.id, "secret": secret, "password": "a fresh long password"}),
        )
        .await;
        w.clock.advance(1);
        let login = w.log_in(&me.email, "a fresh long password").await;
        assert_eq!(login.status, 201, "{}", login.body);
        let r = w.call("GET", "/v1/account", Some(&login.fallback.unwrap()), json!({})).await;
        assert_refused(&r, 401, "user_more_factors_required");
        // A link to a host not allowed is refused before anything is sent.
        let r = w
            .call("POST", "/v1/account/recovery", None, json!({"email": me.email, "url": "javascript:alert(1)"}))
            .await;
        assert_refused(&r, 400, "general_argument_invalid");
    })
    .await;
}
