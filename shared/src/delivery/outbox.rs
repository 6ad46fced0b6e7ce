//! Local delivery: prints each message on stdout (the local mail view; logs go to stderr) and
//! appends it as one JSON line to a file.

use std::io::Write;
use std::path::PathBuf;

use async_trait::async_trait;
use tokio::sync::Mutex;

use super::{DeliveryError, Message, Sender};

pub struct Outbox {
    path: PathBuf,
    lock: Mutex<()>,
}

impl Outbox {
    pub fn new(path: PathBuf) -> Self {
        Outbox { path, lock: Mutex::new(()) }
    }
}

#[async_trait]
impl Sender for Outbox {
    async fn send(&self, message: &Message) -> Result<(), DeliveryError> {
        let line = serde_json::to_string(message).map_err(|e| DeliveryError(Box::new(e)))?;
        let _guard = self.lock.lock().await;
        let mut options = std::fs::OpenOptions::new();
        options.create(true).append(true);
        // Messages hold one-time codes and links: readable by the owner only.
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        let mut file =
            options.open(&self.path).map_err(|e| DeliveryError(format!("{}: {e}", self.path.display()).into()))?;
        writeln!(file, "{line}").map_err(|e| DeliveryError(Box::new(e)))?;
        let heading = match message.channel {
            super::Channel::Email => format!("email to {} — {}", message.to, message.subject),
            super::Channel::Sms => format!("sms to {}", message.to),
        };
        println!("\n── {heading}\n{}\n", message.text);
        Ok(())
    }
}
