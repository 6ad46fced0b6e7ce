//! What mfa-local logs (stderr): one line per request with its id, route and status, the
//! cause of every 5xx, and never a secret.

use base64::Engine;
use serde_json::{json, Value};

use crate::support::{enrolled, six_digits, totp_at, Server, PASSWORD};

/// The seed flow on `server`: sign-up, recovery codes, email and phone verified, an
/// authenticator (and its QR code), MFA on, then a sign-in completed with each factor.
/// Returns every secret the client saw, and the request id of each answer.
async fn seed_flow(server: &Server, name: &str) -> (Vec<String>, Vec<String>) {
    let user = enrolled(server, name).await;
    let base32 = mfa_core::domain::totp::base32(&user.totp);
    let mut secrets = vec![PASSWORD.to_string(), base32.clone()];
    secrets.extend(user.recovery_codes.iter().cloned());
    let mut ids = Vec::new();

    let uri = format!("otpauth://totp/E2E%20App%3A{name}?issuer=E2E%20App&secret={base32}");
    let qr = server
        .send(server.raw(reqwest::Method::GET, "/v1/avatars/qr").query(&[("text", uri.as_str()), ("project", "e2e")]))
        .await;
    assert_eq!(qr.status, 200);

    for (factor, offset) in [("email", 0), ("phone", 0), ("totp", 1), ("recoverycode", 0)] {
        let session = server.log_in(&user.email).await;
        let r = server.call("POST", "/v1/account/mfa/challenges", Some(&session), json!({ "factor": factor })).await;
        assert_eq!(r.status, 201, "{:?}", r.body);
        ids.push(r.header("x-request-id").expect("every answer has a request id").to_string());
        let challenge = r.body["$id"].as_str().unwrap().to_string();
        let otp = match factor {
            "email" => server.last_code(&user.email).await,
            "phone" => server.last_code(&user.phone).await,
            "totp" => totp_at(&user.totp, offset),
            _ => user.recovery_codes[0].clone(),
        };
        let r = server.complete(&session, &challenge, &otp).await;
        assert_eq!(r.status, 200, "{factor}: {:?}", r.body);
        ids.push(r.header("x-request-id").unwrap().to_string());
        secrets.push(otp);
        // The session as the client keeps it, and the secret inside it.
        let fallback: Value = serde_json::from_str(&session).unwrap();
        let cookie = fallback[format!("a_session_{}", server.project)].as_str().unwrap().to_string();
        let decoded = base64::engine::general_purpose::STANDARD.decode(&cookie).unwrap();
        let credentials: Value = serde_json::from_slice(&decoded).unwrap();
        secrets.push(credentials["secret"].as_str().unwrap().to_string());
        secrets.push(cookie);
    }
    // Every code and link secret that was sent.
    for message in server.outbox().await {
        let text = message["text"].as_str().unwrap_or_default();
        secrets.extend(six_digits(text));
        for link in text.split_whitespace().filter(|w| w.contains("secret=")) {
            let url = reqwest::Url::parse(link).unwrap();
            secrets.extend(url.query_pairs().filter(|(k, _)| k == "secret").map(|(_, v)| v.into_owned()));
        }
    }
    (secrets, ids)
}

/// The log without each line's timestamp (its digits are not a code).
fn without_timestamps(log: &str) -> String {
    log.lines().map(|line| line.split_once(' ').map_or(line, |(_, rest)| rest)).collect::<Vec<_>>().join("\n")
}

#[tokio::test]
async fn logs_follow_each_request_and_never_hold_a_secret() {
    for rust_log in [None, Some("info,mfa_core=debug")] {
        let server = match rust_log {
            None => Server::start().await,
            Some(filter) => Server::start_with(&[("RUST_LOG", filter)]).await,
        };
        let (secrets, ids) = seed_flow(&server, "logged").await;
        let log = server.log();
        assert!(secrets.len() > 20, "the flow saw its secrets: {secrets:?}");
        for id in &ids {
            let line =
                log.lines().find(|l| l.contains(id.as_str())).unwrap_or_else(|| panic!("{id} is logged:\n{log}"));
            assert!(line.contains("route=/v1/account/mfa/challenge"), "{line}");
            assert!(line.contains("status=20"), "{line}");
            assert!(line.contains("latency_ms="), "{line}");
        }
        let searched = without_timestamps(&log);
        for secret in &secrets {
            assert!(!secret.is_empty());
            assert!(!searched.contains(secret.as_str()), "RUST_LOG={rust_log:?}: the log holds {secret:?}:\n{log}");
        }
    }
}

#[tokio::test]
async fn a_failed_send_is_logged_with_its_cause_and_answered_without_it() {
    // SES at a port nothing listens on.
    let server = Server::start_with(&[
        ("MFA_SENDER", "aws"),
        ("MFA_EMAIL_FROM", "no-reply@mfa.example"),
        ("AWS_ENDPOINT_URL_SESV2", "http://127.0.0.1:9"),
        ("AWS_REGION", "us-east-1"),
        ("AWS_ACCESS_KEY_ID", "test"),
        ("AWS_SECRET_ACCESS_KEY", "test"),
    ])
    .await;
    server.sign_up("unsent@example.com").await;
    let session = server.log_in("unsent@example.com").await;
    let r = server
        .call("POST", "/v1/account/verifications/email", Some(&session), json!({"url": "http://localhost/verify"}))
        .await;
    assert_eq!((r.status, r.kind()), (502, "general_provider_failure"), "{:?}", r.body);
    assert!(!r.body.to_string().contains("SES"), "the cause stays in the log: {:?}", r.body);
    let id = r.header("x-request-id").unwrap();
    let log = server.log();
    let failure = log
        .lines()
        .find(|l| l.contains(id) && l.contains("request failed"))
        .unwrap_or_else(|| panic!("the failure is logged with its request id:\n{log}"));
    assert!(failure.contains("ERROR"), "{failure}");
    assert!(failure.contains("SES SendEmail"), "the log names the cause: {failure}");
}
