//! What several test crates share. Each crate uses part of it.
#![allow(dead_code)]

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

use async_trait::async_trait;
use lambda_http::http::Request;
use lambda_http::Body;
use mfa_core::delivery::{DeliveryError, Message, Sender};
use mfa_core::App;
use serde_json::Value;

/// A sender that keeps every message instead of delivering it, or refuses them all.
#[derive(Default)]
pub struct Recorder {
    sent: Mutex<Vec<Message>>,
    failing: AtomicBool,
}

impl Recorder {
    /// Every message sent so far, oldest first.
    pub fn messages(&self) -> Vec<Message> {
        self.sent.lock().unwrap().clone()
    }

    pub fn last_text(&self) -> String {
        self.messages().last().expect("a message was sent").text.clone()
    }

    /// From now on, refuse every message as a provider would.
    pub fn fail(&self, failing: bool) {
        self.failing.store(failing, Ordering::SeqCst);
    }
}

#[async_trait]
impl Sender for Recorder {
    async fn send(&self, message: &Message) -> Result<(), DeliveryError> {
        if self.failing.load(Ordering::SeqCst) {
            return Err(DeliveryError("provider refused".into()));
        }
        self.sent.lock().unwrap().push(message.clone());
        Ok(())
    }
}

/// An API answer as a client sees it.
pub struct Answer {
    pub status: u16,
    pub body: Value,
    /// The `X-Fallback-Cookies` header: the session as SDKs without cookies keep it.
    pub fallback: Option<String>,
    pub headers: lambda_http::http::HeaderMap,
}

/// One JSON request through the app, with `session` as SDKs send it without cookies.
pub async fn call(app: &App, method: &str, path: &str, session: Option<&str>, body: Value) -> Answer {
    let mut req = Request::builder().method(method).uri(path).header("content-type", "application/json");
    if let Some(s) = session {
        req = req.header("x-fallback-cookies", s);
    }
    let res = app.handle(req.body(Body::Text(body.to_string())).unwrap(), None).await;
    let fallback = res.headers().get("x-fallback-cookies").map(|v| v.to_str().unwrap().to_string());
    let status = res.status().as_u16();
    let body = serde_json::from_slice(res.body().as_ref()).unwrap_or(Value::Null);
    Answer { status, body, fallback, headers: res.headers().clone() }
}

/// A DynamoDB client for `MFA_TEST_DYNAMODB_ENDPOINT` (e.g. DynamoDB Local), or `None`
/// (skip) when no endpoint is set and `MFA_REQUIRE_DYNAMODB=1` does not ask for one.
pub async fn dynamodb_client() -> Option<aws_sdk_dynamodb::Client> {
    use aws_sdk_dynamodb::config::{Credentials, Region};
    let required = std::env::var("MFA_REQUIRE_DYNAMODB").is_ok_and(|v| v == "1");
    let endpoint = match std::env::var("MFA_TEST_DYNAMODB_ENDPOINT") {
        Ok(endpoint) if !endpoint.trim().is_empty() => endpoint,
        _ if required => panic!("MFA_REQUIRE_DYNAMODB=1 but MFA_TEST_DYNAMODB_ENDPOINT is not set"),
        _ => {
            eprintln!("skipped: set MFA_TEST_DYNAMODB_ENDPOINT to run the DynamoDB half");
            return None;
        }
    };
    let config = aws_config::defaults(aws_config::BehaviorVersion::latest())
        .region(Region::new("us-east-1"))
        .endpoint_url(&endpoint)
        .credentials_provider(Credentials::new("test", "test", None, None, "tests"))
        .load()
        .await;
    Some(aws_sdk_dynamodb::Client::new(&config))
}

/// A DynamoDB store on a fresh table, or `None` as for [`dynamodb_client`].
pub async fn dynamodb_store(purpose: &str) -> Option<std::sync::Arc<mfa_core::store::dynamo::DynamoStore>> {
    let client = dynamodb_client().await?;
    let table = format!("mfa-{purpose}-{}", mfa_core::domain::crypto::new_id());
    if let Err(e) = mfa_core::store::dynamo::create_table(&client, &table).await {
        panic!("cannot create a DynamoDB table: {e}");
    }
    Some(std::sync::Arc::new(mfa_core::store::dynamo::DynamoStore::new(client, table)))
}
