//! Dependencies failing: DynamoDB unreachable. Every step answers a clear 5xx with an
//! Appwrite body, quickly, sends nothing and panics nowhere.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use aws_sdk_dynamodb::config::{Credentials, Region};
use lambda_http::http::Request;
use lambda_http::Body;
use mfa_core::clock::ManualClock;
use mfa_core::config::Config;
use mfa_core::delivery::{DeliveryError, Message, Sender};
use mfa_core::http::Credentials as SessionCredentials;
use mfa_core::store::dynamo::DynamoStore;
use mfa_core::App;
use serde_json::{json, Value};

#[derive(Default)]
struct Recorder(Mutex<Vec<Message>>);

#[async_trait]
impl Sender for Recorder {
    async fn send(&self, message: &Message) -> Result<(), DeliveryError> {
        self.0.lock().unwrap().push(message.clone());
        Ok(())
    }
}

/// A DynamoDB client for a port nothing listens on, with the production timeouts.
async fn unreachable_dynamodb() -> aws_sdk_dynamodb::Client {
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let timeouts = aws_config::timeout::TimeoutConfig::builder()
        .connect_timeout(Duration::from_secs(2))
        .operation_attempt_timeout(Duration::from_secs(3))
        .operation_timeout(Duration::from_secs(8))
        .build();
    let config = aws_config::defaults(aws_config::BehaviorVersion::latest())
        .region(Region::new("us-east-1"))
        .endpoint_url(format!("http://127.0.0.1:{closed}"))
        .credentials_provider(Credentials::new("test", "test", None, None, "fault-tests"))
        .timeout_config(timeouts)
        .load()
        .await;
    aws_sdk_dynamodb::Client::new(&config)
}

#[tokio::test]
async fn with_dynamodb_unreachable_every_step_answers_a_clear_503() {
    let sender = Arc::new(Recorder::default());
    let app = App::new(
        Config::for_project("p", b"a test server key of sufficient length"),
        Arc::new(DynamoStore::new(unreachable_dynamodb().await, "mfa")),
        sender.clone(),
        Arc::new(ManualClock::at(1_800_000_000_000)),
    );
    let session = SessionCredentials { user_id: "u1".into(), secret: "s".repeat(64) }.encode();
    let steps = [
        ("POST", "/v1/account", json!({"userId": "unique()", "email": "a@example.com", "password": "a long password"})),
        ("POST", "/v1/account/sessions/email", json!({"email": "a@example.com", "password": "a long password"})),
        ("GET", "/v1/account", json!({})),
        ("POST", "/v1/account/mfa/recovery-codes", json!({})),
        ("POST", "/v1/account/verifications/email", json!({"url": "https://app.example/verify"})),
        ("PUT", "/v1/account/verifications/email", json!({"userId": "u1", "secret": "x".repeat(64)})),
        ("PATCH", "/v1/account/mfa", json!({"mfa": true})),
        ("POST", "/v1/account/mfa/challenges", json!({"factor": "email"})),
        ("PUT", "/v1/account/mfa/challenges", json!({"challengeId": "c1", "otp": "123456"})),
    ];
    for (method, path, body) in steps {
        let req = Request::builder()
            .method(method)
            .uri(path)
            .header("x-appwrite-session", &session)
            .body(Body::Text(body.to_string()))
            .unwrap();
        let started = Instant::now();
        let res = app.handle(req, None).await;
        let took = started.elapsed();
        assert_eq!(res.status().as_u16(), 503, "{method} {path}");
        let body: Value = serde_json::from_slice(res.body().as_ref()).unwrap();
        assert_eq!(body["type"], "general_server_error", "{method} {path}");
        assert_eq!(body["code"], 503);
        assert!(!body["message"].as_str().unwrap().contains("127.0.0.1"), "no internals in the body");
        assert!(took < Duration::from_secs(12), "{method} {path} took {took:?}: timeouts bound it");
    }
    assert!(sender.0.lock().unwrap().is_empty(), "nothing is sent when nothing can be stored");
}
