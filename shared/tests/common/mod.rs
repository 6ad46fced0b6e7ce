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
    Answer { status, body, fallback }
}
