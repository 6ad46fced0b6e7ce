//! Email through SES v2 `SendEmail`.

use aws_config::SdkConfig;
use aws_sdk_sesv2::error::DisplayErrorContext;
use aws_sdk_sesv2::types::{Body, Content, Destination, EmailContent, Message as SesMessage};
use aws_sdk_sesv2::Client;

use super::{DeliveryError, Message};

// Stated on every part so non-ASCII project names and text arrive intact.
const CHARSET: &str = "UTF-8";

pub struct SesSender {
    client: Client,
    from: String,
}

impl SesSender {
    /// `from` is the verified sender, e.g. `no-reply@example.com` or `Demo <no-reply@example.com>`.
    pub fn new(config: &SdkConfig, from: impl Into<String>) -> Self {
        SesSender { client: Client::new(config), from: from.into() }
    }

    pub async fn send(&self, message: &Message) -> Result<(), DeliveryError> {
        let html = match &message.html {
            Some(html) => Some(content(html)?),
            None => None,
        };
        let body = Body::builder().text(content(&message.text)?).set_html(html).build();
        let simple = SesMessage::builder().subject(content(&message.subject)?).body(body).build();
        self.client
            .send_email()
            .from_email_address(&self.from)
            .destination(Destination::builder().to_addresses(&message.to).build())
            .content(EmailContent::builder().simple(simple).build())
            .send()
            .await
            .map_err(|e| DeliveryError(format!("SES SendEmail: {}", DisplayErrorContext(&e)).into()))?;
        Ok(())
    }
}

fn content(data: &str) -> Result<Content, DeliveryError> {
    Content::builder()
        .data(data)
        .charset(CHARSET)
        .build()
        .map_err(|e| DeliveryError(format!("SES content: {}", DisplayErrorContext(&e)).into()))
}

/// Registers the sender's domain as an SES identity; an existing identity counts as done.
/// Only for local emulators (moto refuses mail from unknown identities): in AWS the identity
/// is verified through DNS, outside this program.
pub async fn ensure_email_identity(config: &SdkConfig, from: &str) -> Result<(), DeliveryError> {
    let domain =
        sender_domain(from).ok_or_else(|| DeliveryError(format!("sender address has no domain: {from:?}").into()))?;
    match Client::new(config).create_email_identity().email_identity(domain).send().await {
        Ok(_) => Ok(()),
        Err(e) if e.as_service_error().is_some_and(|s| s.is_already_exists_exception()) => Ok(()),
        Err(e) => Err(DeliveryError(format!("SES CreateEmailIdentity {domain}: {}", DisplayErrorContext(&e)).into())),
    }
}

/// The domain of `a@b.co` or `Name <a@b.co>`.
fn sender_domain(from: &str) -> Option<&str> {
    let (_, domain) = from.trim().trim_end_matches('>').rsplit_once('@')?;
    let domain = domain.trim();
    (!domain.is_empty()).then_some(domain)
}

#[cfg(test)]
mod tests {
    use super::sender_domain;

    #[test]
    fn sender_domain_reads_plain_and_named_addresses() {
        assert_eq!(sender_domain("no-reply@example.com"), Some("example.com"));
        assert_eq!(sender_domain("Demo <no-reply@mail.example.com>"), Some("mail.example.com"));
        assert_eq!(sender_domain("no-reply"), None);
        assert_eq!(sender_domain("no-reply@"), None);
    }
}
