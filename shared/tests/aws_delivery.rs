//! `AwsSender` against moto (SES v2 + SNS emulator), read back through moto's state endpoint.
//!
//! Runs when `MFA_TEST_MOTO_ENDPOINT` is set (start one with `infra/moto.sh start <port>`).
//! With `MFA_REQUIRE_MOTO=1` a missing or unreachable emulator fails the tests, so CI cannot
//! pass by skipping them. Tests share one emulator and run in parallel: each uses its own
//! recipient and a random code and looks only for its own messages, never resetting moto.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use aws_config::{BehaviorVersion, Region, SdkConfig};
use aws_sdk_sesv2::config::Credentials;
use mfa_core::delivery::aws::AwsSender;
use mfa_core::delivery::ses::ensure_email_identity;
use mfa_core::delivery::{templates, Sender};
use serde_json::Value;

const TTL: i64 = 10 * 60_000;

/// The emulator's endpoint, or `None` when these tests are not asked for.
fn moto_endpoint() -> Option<String> {
    let required = std::env::var("MFA_REQUIRE_MOTO").is_ok_and(|v| v == "1");
    let endpoint = match std::env::var("MFA_TEST_MOTO_ENDPOINT") {
        Ok(endpoint) if !endpoint.trim().is_empty() => endpoint.trim().trim_end_matches('/').to_string(),
        _ if required => panic!("MFA_REQUIRE_MOTO=1 but MFA_TEST_MOTO_ENDPOINT is not set"),
        _ => {
            eprintln!("skipped: set MFA_TEST_MOTO_ENDPOINT to run against moto");
            return None;
        }
    };
    // An endpoint that was given but does not answer is a broken setup, never a skip.
    if let Err(e) = http_get(&endpoint, "/moto-api/data.json") {
        panic!("moto at {endpoint} is unreachable: {e}");
    }
    Some(endpoint)
}

async fn sdk_config(endpoint: &str) -> SdkConfig {
    aws_config::defaults(BehaviorVersion::latest())
        .endpoint_url(endpoint)
        .region(Region::new("us-east-1"))
        .credentials_provider(Credentials::new("test", "test", None, None, "moto-test"))
        .load()
        .await
}

/// Minimal HTTP/1.0 GET (no chunked encoding to undo): the body of a 200 answer.
fn http_get(endpoint: &str, path: &str) -> Result<String, String> {
    let url = url::Url::parse(endpoint).map_err(|e| format!("bad endpoint {endpoint}: {e}"))?;
    let host = url.host_str().ok_or("endpoint has no host")?;
    let port = url.port_or_known_default().ok_or("endpoint has no port")?;
    let mut stream = TcpStream::connect((host, port)).map_err(|e| e.to_string())?;
    stream.set_read_timeout(Some(Duration::from_secs(10))).map_err(|e| e.to_string())?;
    write!(stream, "GET {path} HTTP/1.0\r\nHost: {host}:{port}\r\n\r\n").map_err(|e| e.to_string())?;
    let mut response = String::new();
    stream.read_to_string(&mut response).map_err(|e| e.to_string())?;
    let (head, body) = response.split_once("\r\n\r\n").ok_or("malformed HTTP response")?;
    let status = head.lines().next().unwrap_or_default();
    if status.split_whitespace().nth(1) != Some("200") {
        return Err(format!("GET {path}: {status}"));
    }
    Ok(body.to_string())
}

fn moto_state(endpoint: &str) -> Value {
    let body = http_get(endpoint, "/moto-api/data.json").expect("read moto state");
    serde_json::from_str(&body).expect("moto state is JSON")
}

fn random_code() -> String {
    format!("{:06}", rand::random_range(0..1_000_000u32))
}

/// Unique per run, so earlier runs against the same emulator cannot satisfy the assertions.
fn random_digits(n: u32) -> String {
    format!("{:0width$}", rand::random_range(0..10u64.pow(n)), width = n as usize)
}

#[tokio::test]
async fn email_challenge_reaches_ses_with_subject_and_code() {
    let Some(endpoint) = moto_endpoint() else { return };
    let config = sdk_config(&endpoint).await;
    let from = "no-reply@mail.example.com";
    ensure_email_identity(&config, from).await.expect("identity created");
    // Twice, as every cold start of a local run would do.
    ensure_email_identity(&config, from).await.expect("existing identity accepted");

    let to = format!("user-{}@example.net", random_digits(9));
    let code = random_code();
    let message = templates::email_challenge("Demo", &to, &code, TTL);
    AwsSender::new(&config, from).send(&message).await.expect("email sent");

    let state = moto_state(&endpoint);
    let sent: Vec<&Value> = state["ses"]["Message"]
        .as_array()
        .expect("ses.Message[] in moto state")
        .iter()
        .filter(|m| m["destinations"]["ToAddresses"].as_array().is_some_and(|to_| to_.iter().any(|a| a == to.as_str())))
        .collect();
    assert_eq!(sent.len(), 1, "exactly one email to {to}: {sent:?}");
    assert_eq!(sent[0]["subject"], message.subject.as_str());
    assert_eq!(sent[0]["source"], from);
    // moto keeps the HTML part when both are sent: it must carry the code as well.
    let body = sent[0]["body"].as_str().expect("body");
    assert!(body.contains(&code), "body {body:?} lacks code {code}");
    assert_eq!(Some(body), message.html.as_deref(), "the HTML part was stored");
}

#[tokio::test]
async fn sms_challenge_reaches_sns_with_code() {
    let Some(endpoint) = moto_endpoint() else { return };
    let config = sdk_config(&endpoint).await;
    let to = format!("+1206{}", random_digits(7));
    let code = random_code();
    let message = templates::sms_challenge("Demo", &to, &code, TTL);
    AwsSender::new(&config, "no-reply@mail.example.com").send(&message).await.expect("sms sent");

    let state = moto_state(&endpoint);
    let sent: Vec<&Value> = state["sns"]["SMS"]
        .as_array()
        .expect("sns.SMS[] in moto state")
        .iter()
        .filter(|m| m["phone_number"] == to.as_str())
        .collect();
    assert_eq!(sent.len(), 1, "exactly one SMS to {to}: {sent:?}");
    let text = sent[0]["message"].as_str().expect("message");
    assert!(text.contains(&code), "SMS {text:?} lacks code {code}");
    assert_eq!(text, message.text);
}

#[tokio::test]
async fn email_from_an_unregistered_identity_is_a_delivery_error() {
    let Some(endpoint) = moto_endpoint() else { return };
    let config = sdk_config(&endpoint).await;
    let from = format!("no-reply@unregistered-{}.example.org", random_digits(9));
    let message = templates::email_challenge("Demo", "someone@example.net", &random_code(), TTL);

    let error = AwsSender::new(&config, from).send(&message).await.expect_err("SES must refuse the sender");
    // What the log gets: the error with its causes.
    let text = mfa_core::error::cause_chain(&error);
    assert!(text.contains("SendEmail"), "error names the operation: {text}");
    assert!(text.contains("MessageRejected"), "error carries SES's reason: {text}");
}
