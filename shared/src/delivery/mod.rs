//! Outgoing email and SMS behind one trait.

use async_trait::async_trait;
use serde::Serialize;

pub mod aws;
pub mod outbox;
pub mod ses;
pub mod sns;
pub mod templates;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Channel {
    Email,
    Sms,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Message {
    pub channel: Channel,
    pub to: String,
    pub subject: String,
    pub text: String,
    pub html: Option<String>,
}

/// The provider refused or did not take the message; its cause goes to the log.
#[derive(Debug, thiserror::Error)]
#[error("the message could not be delivered")]
pub struct DeliveryError(#[source] pub crate::store::Cause);

#[async_trait]
pub trait Sender: Send + Sync + 'static {
    async fn send(&self, message: &Message) -> Result<(), DeliveryError>;
}
