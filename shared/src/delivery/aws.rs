//! Delivery in AWS: email through SES, SMS through SNS, both from one `SdkConfig`.

use async_trait::async_trait;
use aws_config::SdkConfig;

use super::ses::SesSender;
use super::sns::SnsSender;
use super::{Channel, DeliveryError, Message, Sender};

pub struct AwsSender {
    ses: SesSender,
    sns: SnsSender,
}

impl AwsSender {
    /// Builds both clients now, once per cold start, so each send reuses their connections.
    pub fn new(config: &SdkConfig, from: impl Into<String>) -> Self {
        AwsSender { ses: SesSender::new(config, from), sns: SnsSender::new(config) }
    }
}

#[async_trait]
impl Sender for AwsSender {
    async fn send(&self, message: &Message) -> Result<(), DeliveryError> {
        match message.channel {
            Channel::Email => self.ses.send(message).await,
            Channel::Sms => self.sns.send(message).await,
        }
    }
}
