//! What several test crates share. Each crate uses part of it.
#![allow(dead_code)]

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

use async_trait::async_trait;
use mfa_core::delivery::{DeliveryError, Message, Sender};

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
