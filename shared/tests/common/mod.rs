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

/// An app over a store, with a clock the test moves and a sender that keeps what it sends:
/// the world of the tests that drive the API in-process on either store.
pub struct World {
    pub app: std::sync::Arc<App>,
    pub clock: mfa_core::clock::ManualClock,
    pub sender: std::sync::Arc<Recorder>,
    _dir: Option<tempfile::TempDir>,
}

/// A signed-up user and a session of theirs (as SDKs without cookies keep it).
pub struct Person {
    pub id: String,
    pub email: String,
    pub session: String,
}

pub const PASSWORD: &str = "correct horse battery";

impl World {
    fn on(store: std::sync::Arc<dyn mfa_core::store::Store>, dir: Option<tempfile::TempDir>) -> World {
        use mfa_core::clock::Clock;
        // Real time: DynamoDB Local deletes items whose TTL has passed.
        let clock = mfa_core::clock::ManualClock::at(mfa_core::clock::SystemClock.now());
        let sender = std::sync::Arc::new(Recorder::default());
        let config = mfa_core::config::Config::for_project("p", b"a test server key of sufficient length");
        let app = std::sync::Arc::new(App::new(config, store, sender.clone(), std::sync::Arc::new(clock.clone())));
        World { app, clock, sender, _dir: dir }
    }

    pub fn embedded() -> World {
        use mfa_core::clock::Clock;
        let dir = tempfile::tempdir().unwrap();
        let now = mfa_core::clock::SystemClock.now();
        let store = mfa_core::store::embedded::EmbeddedStore::open(&dir.path().join("mfa.redb"), now).unwrap();
        World::on(std::sync::Arc::new(store), Some(dir))
    }

    /// On a fresh DynamoDB table, or `None` as for [`dynamodb_client`].
    pub async fn dynamodb(purpose: &str) -> Option<World> {
        Some(World::on(dynamodb_store(purpose).await?, None))
    }

    pub async fn call(&self, method: &str, path: &str, session: Option<&str>, body: Value) -> Answer {
        call(&self.app, method, path, session, body).await
    }

    /// A call that must succeed; its body.
    pub async fn ok(&self, method: &str, path: &str, session: Option<&str>, body: Value) -> Value {
        let r = self.call(method, path, session, body).await;
        assert!((200..300).contains(&r.status), "{method} {path}: {} {}", r.status, r.body);
        r.body
    }

    pub async fn log_in(&self, email: &str, password: &str) -> Answer {
        let body = serde_json::json!({"email": email, "password": password});
        self.call("POST", "/v1/account/sessions/email", None, body).await
    }

    /// A new user with [`PASSWORD`], signed in.
    pub async fn sign_up(&self) -> Person {
        let email = format!("{}@example.com", mfa_core::domain::crypto::new_id().to_lowercase());
        let body = serde_json::json!({"userId": "unique()", "email": email, "password": PASSWORD});
        let id = self.ok("POST", "/v1/account", None, body).await["$id"].as_str().unwrap().to_string();
        let answer = self.log_in(&email, PASSWORD).await;
        assert_eq!(answer.status, 201, "{}", answer.body);
        Person { id, email, session: answer.fallback.unwrap() }
    }
}

/// Asserts an Appwrite error of this status and type.
pub fn assert_refused(r: &Answer, status: u16, kind: &str) {
    assert_eq!((r.status, r.body["type"].as_str()), (status, Some(kind)), "{}", r.body);
}

/// Runs `check` on a world on the embedded store, then on DynamoDB when it is configured.
pub async fn each_store<F, Fut>(purpose: &str, check: F)
where
    F: Fn(World) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    check(World::embedded()).await;
    if let Some(world) = World::dynamodb(purpose).await {
        check(world).await;
    }
}
