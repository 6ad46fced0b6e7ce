//! End-to-end: the seed guide's flow and the security rules, over real HTTP against
//! the `mfa-local` binary on a random port with a fresh data folder.

mod crash;
mod local_server;
mod logs;
mod support;

use serde_json::json;
use support::{enrolled, totp_at, Server};

/// Steps 4-5: a password login on an MFA account is held at `user_more_factors_required`.
async fn login_needing_mfa(server: &Server, email: &str) -> String {
    let session = server.log_in(email).await;
    let r = server.call("GET", "/v1/account", Some(&session), json!({})).await;
    assert_eq!(r.status, 401);
    assert_eq!(r.kind(), "user_more_factors_required");
    // Step 6: the factors are listed while the session is still short of them.
    let r = server.call("GET", "/v1/account/mfa/factors", Some(&session), json!({})).await;
    assert_eq!(r.status, 200);
    assert_eq!(
        r.body,
        json!({"totp": true, "email": true, "phone": true, "recoveryCode": true, "webauthn": false, "custom": false})
    );
    session
}

async fn assert_fully_signed_in(server: &Server, session: &str, user_id: &str, factor: &str) {
    let r = server.call("GET", "/v1/account", Some(session), json!({})).await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!(r.body["$id"], user_id);
    assert_eq!(r.body["mfa"], true);
    assert!(r.body.get("password").is_none() && !r.body.to_string().contains("argon2"));
    let _ = factor;
}

async fn complete_ok(server: &Server, session: &str, challenge: &str, otp: &str, factor: &str) {
    let r = server.complete(session, challenge, otp).await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!(r.body["factors"], json!(["password", factor]));
    assert!(!r.body["mfaUpdatedAt"].as_str().unwrap().is_empty());
    assert_eq!(r.body["secret"], "");
}

#[tokio::test]
async fn seed_flow_with_an_email_code() {
    let server = Server::start().await;
    let user = enrolled(&server, "email-flow").await;
    let session = login_needing_mfa(&server, &user.email).await;
    let challenge = server.challenge(&session, "email").await;
    let code = server.last_code(&user.email).await;
    assert!(server.last_message(&user.email).await["text"].as_str().unwrap().contains("10 minutes"));
    complete_ok(&server, &session, &challenge, &code, "email").await;
    assert_fully_signed_in(&server, &session, &user.id, "email").await;
}

#[tokio::test]
async fn seed_flow_with_an_sms_code() {
    let server = Server::start().await;
    let user = enrolled(&server, "phone-flow").await;
    let session = login_needing_mfa(&server, &user.email).await;
    let challenge = server.challenge(&session, "phone").await;
    let sms = server.last_message(&user.phone).await;
    assert_eq!(sms["channel"], "sms");
    let code = server.last_code(&user.phone).await;
    complete_ok(&server, &session, &challenge, &code, "phone").await;
    assert_fully_signed_in(&server, &session, &user.id, "phone").await;
}

#[tokio::test]
async fn seed_flow_with_an_authenticator_app() {
    let server = Server::start().await;
    let user = enrolled(&server, "totp-flow").await;
    let session = login_needing_mfa(&server, &user.email).await;
    let challenge = server.challenge(&session, "totp").await;
    // The enrolment used the current step; the next step is still within the skew.
    complete_ok(&server, &session, &challenge, &totp_at(&user.totp, 1), "totp").await;
    assert_fully_signed_in(&server, &session, &user.id, "totp").await;
}

#[tokio::test]
async fn seed_flow_with_a_recovery_code() {
    let server = Server::start().await;
    let user = enrolled(&server, "recovery-flow").await;
    let session = login_needing_mfa(&server, &user.email).await;
    // SDK 28 sends the factor as `recoverycode`.
    let challenge = server.challenge(&session, "recoverycode").await;
    let typed = user.recovery_codes[0].to_uppercase().replace('-', " ");
    complete_ok(&server, &session, &challenge, &typed, "recoveryCode").await;
    assert_fully_signed_in(&server, &session, &user.id, "recoveryCode").await;

    // Each recovery code works once.
    let again = login_needing_mfa(&server, &user.email).await;
    let challenge = server.challenge(&again, "recoverycode").await;
    let r = server.complete(&again, &challenge, &user.recovery_codes[0]).await;
    assert_eq!((r.status, r.kind()), (401, "user_invalid_token"));
    let challenge = server.challenge(&again, "recoverycode").await;
    complete_ok(&server, &again, &challenge, &user.recovery_codes[1], "recoveryCode").await;
}

#[tokio::test]
async fn qr_code_of_the_totp_uri_is_a_png() {
    let server = Server::start().await;
    let uri = "otpauth://totp/E2E%20App%3Aa%40b.co?issuer=E2E%20App&secret=JBSWY3DPEHPK3PXP";
    let path = format!("/v1/avatars/qr?text={}&size=300&margin=2&project=e2e&impersonateuserid=", urlencode(uri));
    let r = server.send(server.raw(reqwest::Method::GET, &path)).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-type"), Some("image/png"));
    assert_eq!(&r.bytes[..8], b"\x89PNG\r\n\x1a\n");
    // width and height from the IHDR chunk
    assert_eq!(u32::from_be_bytes(r.bytes[16..20].try_into().unwrap()), 300);
    assert_eq!(u32::from_be_bytes(r.bytes[20..24].try_into().unwrap()), 300);

    let r = server.send(server.raw(reqwest::Method::GET, &format!("{path}&download=true"))).await;
    assert_eq!(r.header("content-disposition"), Some("attachment; filename=\"qr.png\""));
    let r = server.send(server.raw(reqwest::Method::GET, "/v1/avatars/qr?text=x&size=1001")).await;
    assert_eq!((r.status, r.kind()), (400, "general_argument_invalid"));
}

fn urlencode(s: &str) -> String {
    reqwest::Url::parse_with_params("http://x/", &[("v", s)]).unwrap().query().unwrap()[2..].to_string()
}

#[tokio::test]
async fn a_totp_code_is_never_accepted_twice() {
    let server = Server::start().await;
    let user = enrolled(&server, "replay").await;
    let code = totp_at(&user.totp, 1);
    let first = login_needing_mfa(&server, &user.email).await;
    let challenge = server.challenge(&first, "totp").await;
    complete_ok(&server, &first, &challenge, &code, "totp").await;

    let second = login_needing_mfa(&server, &user.email).await;
    let challenge = server.challenge(&second, "totp").await;
    let r = server.complete(&second, &challenge, &code).await;
    assert_eq!((r.status, r.kind()), (401, "user_invalid_token"));
    // The step used at enrolment is spent as well.
    let challenge = server.challenge(&second, "totp").await;
    let r = server.complete(&second, &challenge, &totp_at(&user.totp, 0)).await;
    assert_eq!((r.status, r.kind()), (401, "user_invalid_token"));
}

#[tokio::test]
async fn five_wrong_codes_burn_a_challenge() {
    let server = Server::start().await;
    let user = enrolled(&server, "burn").await;
    let session = login_needing_mfa(&server, &user.email).await;
    let challenge = server.challenge(&session, "email").await;
    let code = server.last_code(&user.email).await;
    let wrong = format!("{:06}", (code.parse::<u32>().unwrap() + 1) % 1_000_000);
    for _ in 0..5 {
        let r = server.complete(&session, &challenge, &wrong).await;
        assert_eq!((r.status, r.kind()), (401, "user_invalid_token"));
    }
    let r = server.complete(&session, &challenge, &code).await;
    assert_eq!((r.status, r.kind()), (401, "user_invalid_token"), "the right code no longer works");
}

#[tokio::test]
async fn consecutive_wrong_codes_across_challenges_are_capped() {
    let server = Server::start().await;
    let user = enrolled(&server, "cap").await;
    let session = login_needing_mfa(&server, &user.email).await;
    let mut refused = None;
    let mut failures = 0;
    'challenges: for _ in 0..3 {
        let challenge = server.challenge(&session, "totp").await;
        for _ in 0..5 {
            let r = server.complete(&session, &challenge, "000000").await;
            if r.status == 429 {
                refused = Some((failures, r));
                break 'challenges;
            }
            assert_eq!(r.kind(), "user_invalid_token");
            failures += 1;
        }
    }
    let (attempt, r) = refused.expect("wrong codes are capped");
    assert_eq!(attempt, 10, "ten wrong codes are allowed, the eleventh is refused");
    assert_eq!(r.kind(), "general_rate_limit_exceeded");
    assert!(r.header("x-ratelimit-reset").is_some());
}

#[tokio::test]
async fn an_expired_challenge_is_refused() {
    let server = Server::start_with(&[("MFA_CHALLENGE_TTL_SECONDS", "1")]).await;
    let user = enrolled(&server, "expiry").await;
    let session = login_needing_mfa(&server, &user.email).await;
    let challenge = server.challenge(&session, "email").await;
    let code = server.last_code(&user.email).await;
    tokio::time::sleep(std::time::Duration::from_millis(1_200)).await;
    let r = server.complete(&session, &challenge, &code).await;
    assert_eq!((r.status, r.kind()), (401, "user_invalid_token"));
}

#[tokio::test]
async fn of_twenty_parallel_completions_exactly_one_wins() {
    let server = Server::start().await;
    let user = enrolled(&server, "race").await;
    let session = login_needing_mfa(&server, &user.email).await;
    let challenge = server.challenge(&session, "email").await;
    let code = server.last_code(&user.email).await;
    let answers = futures::future::join_all((0..20).map(|_| server.complete(&session, &challenge, &code))).await;
    let wins = answers.iter().filter(|a| a.status == 200).count();
    assert_eq!(wins, 1, "{:?}", answers.iter().map(|a| a.status).collect::<Vec<_>>());
    assert!(answers.iter().all(|a| a.status == 200 || [401, 429].contains(&a.status)));
    let r = server.call("GET", "/v1/account", Some(&session), json!({})).await;
    assert_eq!(r.status, 200);
}

#[tokio::test]
async fn another_users_session_reaches_nothing_of_the_first() {
    let server = Server::start().await;
    let alice = enrolled(&server, "alice").await;
    let alice_session = login_needing_mfa(&server, &alice.email).await;
    let challenge = server.challenge(&alice_session, "email").await;
    let code = server.last_code(&alice.email).await;

    server.sign_up("mallory@example.com").await;
    let mallory = server.log_in("mallory@example.com").await;
    // Alice's challenge id and code do nothing for Mallory's session...
    let r = server.complete(&mallory, &challenge, &code).await;
    assert_eq!((r.status, r.kind()), (401, "user_invalid_token"));
    // ...nor can Mallory end Alice's session by id.
    let r = server
        .call("POST", "/v1/account/sessions/email", None, json!({"email": alice.email, "password": support::PASSWORD}))
        .await;
    let alice_session_id = r.body["$id"].as_str().unwrap().to_string();
    let r = server.call("DELETE", &format!("/v1/account/sessions/{alice_session_id}"), Some(&mallory), json!({})).await;
    assert_eq!((r.status, r.kind()), (404, "user_session_not_found"));
    // Mallory's own account is untouched by Alice's factors.
    let r = server.call("GET", "/v1/account", Some(&mallory), json!({})).await;
    assert_eq!(r.body["email"], "mallory@example.com");
    // And Alice's challenge still works for Alice.
    complete_ok(&server, &alice_session, &challenge, &code, "email").await;
}

#[tokio::test]
async fn malformed_requests_get_appwrite_errors() {
    let server = Server::start().await;
    let post = |body: &'static str| {
        server
            .raw(reqwest::Method::POST, "/v1/account")
            .header("content-type", "application/json")
            .header("x-appwrite-project", "e2e")
            .body(body)
    };
    for body in ["{", "[]", "\"x\"", "nul"] {
        let r = server.send(post(body)).await;
        assert_eq!((r.status, r.kind()), (400, "general_argument_invalid"), "{body}");
        assert_eq!(r.body["code"], 400);
        assert!(r.body["version"].is_string());
    }
    let r = server.call("POST", "/v1/account", None, json!({"userId": "unique()", "password": "password123"})).await;
    assert_eq!(r.body["message"], "Param \"email\" is not optional.");
    let r = server
        .call("POST", "/v1/account", None, json!({"userId": "unique()", "email": 5, "password": "password123"}))
        .await;
    assert_eq!((r.status, r.kind()), (400, "general_argument_invalid"));
    let big = json!({"userId": "unique()", "email": "a@b.co", "password": "x".repeat(100_000)});
    let r = server.call("POST", "/v1/account", None, big).await;
    assert_eq!(r.status, 413);

    server.sign_up("shape@example.com").await;
    let session = server.log_in("shape@example.com").await;
    let r = server.call("PATCH", "/v1/account/mfa", Some(&session), json!({"mfa": "true"})).await;
    assert_eq!((r.status, r.kind()), (400, "general_argument_invalid"));
    let r = server.call("POST", "/v1/account/mfa/challenges", Some(&session), json!({"factor": "sms"})).await;
    assert_eq!((r.status, r.kind()), (400, "general_argument_invalid"));
    let r = server.call("POST", "/v1/account/mfa/authenticators/hotp", Some(&session), json!({})).await;
    assert_eq!((r.status, r.kind()), (400, "general_argument_invalid"));

    let r = server.call("GET", "/v1/nothing/here", None, json!({})).await;
    assert_eq!((r.status, r.kind()), (404, "general_route_not_found"));
    let r = server.call("GET", "/v1/account", Some("{\"a_session_e2e\":\"%%%not-base64\"}"), json!({})).await;
    assert_eq!((r.status, r.kind()), (401, "general_unauthorized_scope"));
    let r = server
        .send(
            server
                .raw(reqwest::Method::GET, "/v1/account")
                .header("x-appwrite-session", "eyJpZCI6IngiLCJzZWNyZXQiOiJ5In0="),
        )
        .await;
    assert_eq!((r.status, r.kind()), (401, "general_unauthorized_scope"));
    let r = server.send(server.raw(reqwest::Method::GET, "/v1/account").header("x-appwrite-project", "other")).await;
    assert_eq!((r.status, r.kind()), (404, "project_not_found"));
}

#[tokio::test]
async fn recovery_codes_are_never_readable_again_and_need_a_recent_challenge() {
    let server = Server::start().await;
    let user = enrolled(&server, "codes").await;
    let session = login_needing_mfa(&server, &user.email).await;
    let r = server.call("GET", "/v1/account/mfa/recovery-codes", Some(&session), json!({})).await;
    assert_eq!((r.status, r.kind()), (401, "user_more_factors_required"));
    let challenge = server.challenge(&session, "totp").await;
    complete_ok(&server, &session, &challenge, &totp_at(&user.totp, 1), "totp").await;

    let r = server.call("GET", "/v1/account/mfa/recovery-codes", Some(&session), json!({})).await;
    assert_eq!((r.status, r.kind()), (410, "user_recovery_codes_not_readable"));
    let r = server.call("POST", "/v1/account/mfa/recovery-codes", Some(&session), json!({})).await;
    assert_eq!((r.status, r.kind()), (409, "user_recovery_codes_already_exists"));
    let r = server.call("PATCH", "/v1/account/mfa/recovery-codes", Some(&session), json!({})).await;
    assert_eq!(r.status, 200);
    let fresh = r.body["recoveryCodes"].as_array().unwrap();
    assert_eq!(fresh.len(), 8);
    assert!(!fresh.iter().any(|c| user.recovery_codes.contains(&c.as_str().unwrap().to_string())));

    // The old set is gone.
    let other = login_needing_mfa(&server, &user.email).await;
    let challenge = server.challenge(&other, "recoverycode").await;
    let r = server.complete(&other, &challenge, &user.recovery_codes[2]).await;
    assert_eq!((r.status, r.kind()), (401, "user_invalid_token"));
}

#[tokio::test]
async fn disabling_mfa_and_removing_the_authenticator_need_a_recent_challenge() {
    let server = Server::start().await;
    let user = enrolled(&server, "disable").await;
    let session = login_needing_mfa(&server, &user.email).await;
    let challenge = server.challenge(&session, "email").await;
    let code = server.last_code(&user.email).await;
    complete_ok(&server, &session, &challenge, &code, "email").await;
    let r = server.call("DELETE", "/v1/account/mfa/authenticators/totp", Some(&session), json!({})).await;
    assert_eq!(r.status, 204);
    let r = server.call("GET", "/v1/account/mfa/factors", Some(&session), json!({})).await;
    assert_eq!(r.body["totp"], false);
    let r = server.call("PATCH", "/v1/account/mfa", Some(&session), json!({"mfa": false})).await;
    assert_eq!((r.status, r.body["mfa"].clone()), (200, json!(false)));
}

#[tokio::test]
async fn challenge_creation_is_rate_limited_per_user() {
    let server = Server::start().await;
    let user = enrolled(&server, "limits").await;
    let session = login_needing_mfa(&server, &user.email).await;
    for n in 0..10 {
        let r = server.call("POST", "/v1/account/mfa/challenges", Some(&session), json!({"factor": "totp"})).await;
        assert_eq!(r.status, 201);
        assert_eq!(r.header("x-ratelimit-remaining"), Some((9 - n).to_string().as_str()));
    }
    let r = server.call("POST", "/v1/account/mfa/challenges", Some(&session), json!({"factor": "totp"})).await;
    assert_eq!((r.status, r.kind()), (429, "general_rate_limit_exceeded"));
    assert_eq!(r.header("x-ratelimit-limit"), Some("10"));
}

#[tokio::test]
async fn signing_out_ends_the_session_and_clears_the_fallback() {
    let server = Server::start().await;
    server.sign_up("bye@example.com").await;
    let session = server.log_in("bye@example.com").await;
    let r = server
        .call(
            "POST",
            "/v1/account/sessions/email",
            Some(&session),
            json!({"email": "bye@example.com", "password": support::PASSWORD}),
        )
        .await;
    assert_eq!((r.status, r.kind()), (401, "user_session_already_exists"));
    let r = server.call("DELETE", "/v1/account/sessions/current", Some(&session), json!({})).await;
    assert_eq!(r.status, 204);
    assert_eq!(r.header("x-fallback-cookies"), Some("[]"));
    let r = server.call("GET", "/v1/account", Some(&session), json!({})).await;
    assert_eq!((r.status, r.kind()), (401, "general_unauthorized_scope"));
}

#[tokio::test]
async fn signing_out_another_session_or_everywhere_ends_exactly_those() {
    let server = Server::start().await;
    server.sign_up("everywhere@example.com").await;
    let (a, b, c) = (
        server.log_in("everywhere@example.com").await,
        server.log_in_with_id("everywhere@example.com").await,
        server.log_in("everywhere@example.com").await,
    );
    let (b, b_session) = b;
    server.sign_up("bystander@example.com").await;
    let other = server.log_in("bystander@example.com").await;

    // Another session of the user, by its id: it ends, the caller's stays.
    let r = server.call("DELETE", &format!("/v1/account/sessions/{b_session}"), Some(&a), json!({})).await;
    assert_eq!(r.status, 204, "{:?}", r.body);
    assert_eq!(r.header("x-fallback-cookies"), None, "the caller stays signed in");
    assert_eq!(server.call("GET", "/v1/account", Some(&b), json!({})).await.status, 401);
    assert_eq!(server.call("GET", "/v1/account", Some(&a), json!({})).await.status, 200);
    let r = server.call("DELETE", &format!("/v1/account/sessions/{b_session}"), Some(&a), json!({})).await;
    assert_eq!((r.status, r.kind()), (404, "user_session_not_found"), "already gone");
    let r = server.call("DELETE", &format!("/v1/account/sessions/{b_session}"), Some(&other), json!({})).await;
    assert_eq!((r.status, r.kind()), (404, "user_session_not_found"), "not another user's");

    // Everywhere: every session of the user ends, other users keep theirs.
    let r = server.call("DELETE", "/v1/account/sessions", Some(&a), json!({})).await;
    assert_eq!(r.status, 204, "{:?}", r.body);
    assert_eq!(r.header("x-fallback-cookies"), Some("[]"));
    for session in [&a, &c] {
        let r = server.call("GET", "/v1/account", Some(session), json!({})).await;
        assert_eq!((r.status, r.kind()), (401, "general_unauthorized_scope"));
    }
    assert_eq!(server.call("GET", "/v1/account", Some(&other), json!({})).await.status, 200);
    let again = server.log_in("everywhere@example.com").await;
    assert_eq!(server.call("GET", "/v1/account", Some(&again), json!({})).await.status, 200, "signing in again works");
}

#[tokio::test]
async fn a_session_cannot_guess_the_password_through_an_email_change() {
    let server = Server::start().await;
    server.sign_up("guarded@example.com").await;
    let session = server.log_in("guarded@example.com").await;
    let change = |password: &str| json!({"email": "moved@example.com", "password": password});
    for attempt in 1..=10 {
        let r = server.call("PATCH", "/v1/account/email", Some(&session), change("wrong password")).await;
        assert_eq!((r.status, r.kind()), (401, "user_invalid_credentials"), "wrong password {attempt}");
    }
    // The eleventh guess is not checked, whatever it is: even the right password waits.
    let r = server.call("PATCH", "/v1/account/email", Some(&session), change(support::PASSWORD)).await;
    assert_eq!((r.status, r.kind()), (429, "general_rate_limit_exceeded"), "{:?}", r.body);
    let r = server.call("GET", "/v1/account", Some(&session), json!({})).await;
    assert_eq!(r.body["email"], "guarded@example.com", "nothing changed");
}

#[tokio::test]
async fn a_malformed_session_id_is_not_found() {
    let server = Server::start().await;
    server.sign_up("ids@example.com").await;
    let session = server.log_in("ids@example.com").await;
    for id in ["x".repeat(2000), "not%20an%20id".to_string()] {
        let r = server.call("DELETE", &format!("/v1/account/sessions/{id}"), Some(&session), json!({})).await;
        assert_eq!((r.status, r.kind()), (404, "user_session_not_found"), "{:?}", r.body);
    }
    assert_eq!(server.call("GET", "/v1/account", Some(&session), json!({})).await.status, 200);
}

#[tokio::test]
async fn wrong_password_and_unknown_email_look_the_same() {
    let server = Server::start().await;
    server.sign_up("known@example.com").await;
    for email in ["known@example.com", "unknown@example.com"] {
        let r = server
            .call("POST", "/v1/account/sessions/email", None, json!({"email": email, "password": "wrong password"}))
            .await;
        assert_eq!((r.status, r.kind()), (401, "user_invalid_credentials"));
    }
    let r = server
        .call(
            "POST",
            "/v1/account",
            None,
            json!({"userId": "unique()", "email": "KNOWN@example.com", "password": "password123"}),
        )
        .await;
    assert_eq!((r.status, r.kind()), (409, "user_already_exists"));
}

#[tokio::test]
async fn a_stranger_guessing_phone_codes_cannot_lock_a_user_out_of_mfa() {
    let server = Server::start().await;
    let user = enrolled(&server, "victim").await;
    for _ in 0..12 {
        let r = server
            .call("PUT", "/v1/account/verifications/phone", None, json!({"userId": user.id, "secret": "000000"}))
            .await;
        assert_eq!((r.status, r.kind()), (401, "user_invalid_token"));
    }
    let session = login_needing_mfa(&server, &user.email).await;
    let challenge = server.challenge(&session, "email").await;
    let code = server.last_code(&user.email).await;
    complete_ok(&server, &session, &challenge, &code, "email").await;
}

/// Logs in and passes an email challenge: a full session with a recent challenge.
async fn full_session(server: &Server, email: &str) -> String {
    let session = login_needing_mfa(server, email).await;
    let challenge = server.challenge(&session, "email").await;
    let code = server.last_code(email).await;
    complete_ok(server, &session, &challenge, &code, "email").await;
    session
}

#[tokio::test]
async fn replacing_recovery_codes_or_removing_the_authenticator_ends_other_sessions() {
    let server = Server::start().await;
    let user = enrolled(&server, "asvs").await;
    let laptop = full_session(&server, &user.email).await;
    let phone = full_session(&server, &user.email).await;

    let r = server.call("PATCH", "/v1/account/mfa/recovery-codes", Some(&laptop), json!({})).await;
    assert_eq!(r.status, 200);
    let r = server.call("GET", "/v1/account", Some(&phone), json!({})).await;
    assert_eq!((r.status, r.kind()), (401, "general_unauthorized_scope"), "the other session is over");
    let r = server.call("GET", "/v1/account", Some(&laptop), json!({})).await;
    assert_eq!(r.status, 200, "the session that made the change stays");

    let tablet = full_session(&server, &user.email).await;
    let r = server.call("DELETE", "/v1/account/mfa/authenticators/totp", Some(&tablet), json!({})).await;
    assert_eq!(r.status, 204);
    let r = server.call("GET", "/v1/account/mfa/factors", Some(&laptop), json!({})).await;
    assert_eq!((r.status, r.kind()), (401, "general_unauthorized_scope"));
    let r = server.call("GET", "/v1/account", Some(&tablet), json!({})).await;
    assert_eq!(r.status, 200);
}

/// Opens `n` connections to the server and leaves them idle in the client's pool, so that
/// `n` requests sent next go out together instead of each waiting for a TCP handshake.
async fn warm_connections(server: &Server, n: usize) {
    let answers =
        futures::future::join_all((0..n).map(|_| server.call("GET", "/v1/nothing/here", None, json!({})))).await;
    assert!(answers.iter().all(|a| a.status == 404));
}

fn statuses(answers: &[support::Answer]) -> Vec<(u16, String)> {
    answers.iter().map(|a| (a.status, a.kind().to_string())).collect()
}

/// Twenty attempts in parallel to spend one recovery code: exactly one spends it.
///
/// Designed within the store's rules and the per-user limits:
/// - a user has one live challenge per factor (a new one replaces the last), and may create
///   10 challenges an hour: so the 20 attempts share ONE `recoverycode` challenge, sent from
///   4 sessions of the user, 5 from each (a challenge is the user's, and completing it
///   upgrades the session that sent the code);
/// - the right code is no wrong code: the losers find the challenge gone (401) and spend
///   nothing of the user's wrong-code budget.
/// Afterwards another code still works and the spent one is refused. The connections are
/// opened beforehand so the 20 arrive together.
#[tokio::test]
async fn of_twenty_parallel_uses_of_one_recovery_code_exactly_one_wins() {
    let server = Server::start().await;
    let user = enrolled(&server, "recovery-race").await;
    let code = &user.recovery_codes[0];
    let mut sessions = Vec::new();
    for _ in 0..4 {
        sessions.push(login_needing_mfa(&server, &user.email).await);
    }
    let challenge = server.challenge(&sessions[3], "recoverycode").await;
    let attempts: Vec<(String, String)> =
        sessions.iter().flat_map(|s| std::iter::repeat_n((s.clone(), challenge.clone()), 5)).collect();
    assert_eq!(attempts.len(), 20);
    warm_connections(&server, 20).await;
    let answers = futures::future::join_all(
        attempts.iter().map(|(session, challenge)| server.complete(session, challenge, code)),
    )
    .await;
    let wins: Vec<_> = answers.iter().enumerate().filter(|(_, a)| a.status == 200).map(|(i, _)| i).collect();
    assert_eq!(wins.len(), 1, "{:?}", statuses(&answers));
    assert!(
        answers.iter().all(|a| a.status == 200 || (a.status, a.kind()) == (401, "user_invalid_token")),
        "{:?}",
        statuses(&answers)
    );
    assert_eq!(answers[wins[0]].body["factors"], json!(["password", "recoveryCode"]));
    // The winning session is through; the sessions that only lost are still held.
    let (winner, _) = &attempts[wins[0]];
    assert_fully_signed_in(&server, winner, &user.id, "recoveryCode").await;
    for session in sessions.iter().filter(|s| *s != winner) {
        let r = server.call("GET", "/v1/account", Some(session), json!({})).await;
        assert_eq!((r.status, r.kind()), (401, "user_more_factors_required"));
    }

    // The stored state agrees: another unused code still works...
    let session = login_needing_mfa(&server, &user.email).await;
    let challenge = server.challenge(&session, "recoverycode").await;
    let r = server.complete(&session, &challenge, &user.recovery_codes[1]).await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!(r.body["factors"], json!(["password", "recoveryCode"]));
    // ...and the spent one no longer does.
    let session = login_needing_mfa(&server, &user.email).await;
    let challenge = server.challenge(&session, "recoverycode").await;
    let r = server.complete(&session, &challenge, code).await;
    assert_eq!((r.status, r.kind()), (401, "user_invalid_token"));
}

/// Twenty parallel verifications of a new authenticator with one code: exactly one verifies
/// it, and the step it used is spent. The losers find it verified (409) or lose the
/// conditional write (401); none of them counts as a wrong code.
#[tokio::test]
async fn of_twenty_parallel_verifications_with_one_totp_code_exactly_one_wins() {
    let server = Server::start().await;
    let email = "totp-race@example.com";
    server.sign_up(email).await;
    let session = server.log_in(email).await;
    let r = server.call("POST", "/v1/account/mfa/authenticators/totp", Some(&session), json!({})).await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    let secret = mfa_core::domain::totp::from_base32(r.body["secret"].as_str().unwrap()).unwrap();
    let code = totp_at(&secret, 0);
    warm_connections(&server, 20).await;
    let answers = futures::future::join_all(
        (0..20)
            .map(|_| server.call("PUT", "/v1/account/mfa/authenticators/totp", Some(&session), json!({"otp": code}))),
    )
    .await;
    let wins = answers.iter().filter(|a| a.status == 200).count();
    assert_eq!(wins, 1, "{:?}", statuses(&answers));
    assert!(
        answers.iter().all(|a| a.status == 200
            || (a.status, a.kind()) == (401, "user_invalid_token")
            || (a.status, a.kind()) == (409, "user_authenticator_already_verified")),
        "{:?}",
        statuses(&answers)
    );

    let r = server.call("GET", "/v1/account/mfa/factors", Some(&session), json!({})).await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!(r.body["totp"], true);
    // The step the winner used is spent: the same code does not pass a challenge.
    let challenge = server.challenge(&session, "totp").await;
    let r = server.complete(&session, &challenge, &code).await;
    assert_eq!((r.status, r.kind()), (401, "user_invalid_token"));
}

/// Twenty parallel confirmations of one email-verification link: exactly one confirms it.
#[tokio::test]
async fn of_twenty_parallel_email_verifications_with_one_secret_exactly_one_wins() {
    let server = Server::start().await;
    let email = "verify-race@example.com";
    let user_id = server.sign_up(email).await;
    let session = server.log_in(email).await;
    let r = server
        .call("POST", "/v1/account/verifications/email", Some(&session), json!({"url": "http://localhost/verify"}))
        .await;
    assert_eq!(r.status, 201, "{:?}", r.body);
    let text = server.last_message(email).await["text"].as_str().unwrap().to_string();
    let link = text.split_whitespace().find(|w| w.starts_with("http://localhost/verify?")).unwrap();
    let url = reqwest::Url::parse(link).unwrap();
    let q: std::collections::HashMap<_, _> = url.query_pairs().into_owned().collect();
    assert_eq!(q["userId"], user_id);
    let body = json!({"userId": q["userId"], "secret": q["secret"]});
    warm_connections(&server, 20).await;
    let answers = futures::future::join_all(
        (0..20).map(|_| server.call("PUT", "/v1/account/verifications/email", None, body.clone())),
    )
    .await;
    let wins = answers.iter().filter(|a| a.status == 200).count();
    assert_eq!(wins, 1, "{:?}", statuses(&answers));
    assert!(
        answers.iter().all(|a| a.status == 200 || (a.status, a.kind()) == (401, "user_invalid_token")),
        "{:?}",
        statuses(&answers)
    );
    let r = server.call("GET", "/v1/account", Some(&session), json!({})).await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!(r.body["emailVerification"], true);
}

// ---- brute force under 50 concurrent attackers --------------------------------------

const ATTACKERS: usize = 50;

/// A guess only gets a verdict if the write that counts it lands within every budget; past
/// them the answer is the same whatever the code. So what 50 parallel guesses can learn is
/// read off the budgets they leave: the challenge is burned, and exactly five of the
/// user's ten wrong codes are spent.
#[tokio::test]
async fn fifty_concurrent_guesses_count_five_codes_of_a_challenge_and_ten_per_user() {
    let server = Server::start().await;
    let user = enrolled(&server, "guessed").await;
    let session = login_needing_mfa(&server, &user.email).await;
    let challenge = server.challenge(&session, "email").await;
    let code = server.last_code(&user.email).await;
    let wrong = |i: usize| format!("{:06}", (code.parse::<usize>().unwrap() + 1 + i) % 1_000_000);
    let guesses: Vec<String> = (0..ATTACKERS).map(wrong).collect();
    let answers = futures::future::join_all(guesses.iter().map(|g| server.complete(&session, &challenge, g))).await;
    assert!(answers.iter().all(|a| (a.status, a.kind()) == (401, "user_invalid_token")), "{:?}", statuses(&answers));
    let r = server.complete(&session, &challenge, &code).await;
    assert_eq!((r.status, r.kind()), (401, "user_invalid_token"), "the burned challenge stays burned");

    // Five of the ten wrong codes are left: the 50 guesses were counted as five.
    let next = server.challenge(&session, "email").await;
    for i in 0..5 {
        let r = server.complete(&session, &next, &wrong(i)).await;
        assert_eq!((r.status, r.kind()), (401, "user_invalid_token"), "wrong code {} after the storm", i + 1);
    }
    // And then none: not even the right code of a fresh challenge is looked at.
    let last = server.challenge(&session, "email").await;
    let code = server.last_code(&user.email).await;
    let r = server.complete(&session, &last, &code).await;
    assert_eq!((r.status, r.kind()), (429, "general_rate_limit_exceeded"), "{:?}", r.body);
}

#[tokio::test]
async fn fifty_concurrent_logins_from_one_address_are_capped() {
    let server = Server::start().await;
    let answers = futures::future::join_all((0..70).map(|i| {
        server.call(
            "POST",
            "/v1/account/sessions/email",
            None,
            json!({"email": format!("nobody{i}@example.com"), "password": "wrong password"}),
        )
    }))
    .await;
    let evaluated = answers.iter().filter(|a| a.status == 401).count();
    // Within the budget, a sign-in that finds the password-hashing queue full is turned
    // away at once rather than waiting.
    let busy = answers.iter().filter(|a| a.status == 503).count();
    let refused = answers.iter().filter(|a| a.status == 429).count();
    assert_eq!(evaluated + busy, 60, "60 logins per 10 minutes per address");
    assert!(evaluated > 0);
    assert_eq!(refused, 10);
    assert!(answers.iter().filter(|a| a.status == 429).all(|a| a.kind() == "general_rate_limit_exceeded"));
}

#[tokio::test]
async fn fifty_concurrent_sms_challenges_send_at_most_ten_messages() {
    let server = Server::start().await;
    let user = enrolled(&server, "pumped").await;
    let session = login_needing_mfa(&server, &user.email).await;
    let before = server.outbox().await.iter().filter(|m| m["to"] == user.phone.as_str()).count();
    let answers = futures::future::join_all(
        (0..ATTACKERS)
            .map(|_| server.call("POST", "/v1/account/mfa/challenges", Some(&session), json!({"factor": "phone"}))),
    )
    .await;
    let created = answers.iter().filter(|a| a.status == 201).count();
    // 10 SMS per number per hour, and the verification SMS of enrolment was one of them.
    assert_eq!(before, 1);
    assert_eq!(created, 9, "the number's SMS budget caps the challenges");
    assert!(answers.iter().filter(|a| a.status != 201).all(|a| a.status == 429));
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    let sent = server.outbox().await.iter().filter(|m| m["to"] == user.phone.as_str()).count() - before;
    assert_eq!(sent, created, "one SMS per created challenge, no more");
}
