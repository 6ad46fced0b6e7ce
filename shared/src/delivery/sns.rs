//! SMS through SNS `Publish` straight to a phone number (no topic).

use aws_config::SdkConfig;
use aws_sdk_sns::error::DisplayErrorContext;
use aws_sdk_sns::types::MessageAttributeValue;
use aws_sdk_sns::Client;

use super::{DeliveryError, Message};

pub struct SnsSender {
    client: Client,
}

impl SnsSender {
    pub fn new(config: &SdkConfig) -> Self {
        SnsSender { client: Client::new(config) }
    }

    pub async fn send(&self, message: &Message) -> Result<(), DeliveryError> {
        // Sign-in codes are time-critical: Transactional gets SNS's higher-reliability route
        // (and works for numbers that opted out of promotional messages).
        let sms_type = MessageAttributeValue::builder()
            .data_type("String")
            .string_value("Transactional")
            .build()
            .map_err(|e| DeliveryError(format!("SNS attribute: {}", DisplayErrorContext(&e)).into()))?;
        self.client
            .publish()
            .phone_number(&message.to)
            .message(&message.text)
            .message_attributes("AWS.SNS.SMS.SMSType", sms_type)
            .send()
            .await
            .map_err(|e| DeliveryError(format!("SNS Publish: {}", DisplayErrorContext(&e)).into()))?;
        Ok(())
    }
}
