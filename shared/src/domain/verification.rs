//! Email and phone verification tokens, and password recovery tokens (sent by email).

use serde::{Deserialize, Serialize};

use crate::clock::{Millis, DAY, HOUR, MINUTE};

pub const EMAIL_TOKEN_TTL: Millis = DAY;
pub const PHONE_TOKEN_TTL: Millis = 15 * MINUTE;
pub const RECOVERY_TOKEN_TTL: Millis = HOUR;
/// Wrong secrets a token survives (matters for the 6-digit phone code).
pub const MAX_ATTEMPTS: u32 = 5;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Channel {
    Email,
    Phone,
    /// A password reset link, sent to the user's email.
    Recovery,
}

impl Channel {
    pub fn as_str(self) -> &'static str {
        match self {
            Channel::Email => "email",
            Channel::Phone => "phone",
            Channel::Recovery => "recovery",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VerificationToken {
    pub id: String,
    pub user_id: String,
    pub channel: Channel,
    /// The address the secret was sent to; a token for an old address verifies nothing.
    pub target: String,
    /// SHA-256 of the email link secret, or keyed hash of the SMS code.
    pub secret_hash: String,
    pub attempts_left: u32,
    pub created_at: Millis,
    pub expire: Millis,
}

impl VerificationToken {
    pub fn is_usable(&self, now: Millis) -> bool {
        self.attempts_left > 0 && self.expire > now
    }

    pub fn code_context(user_id: &str, token_id: &str) -> String {
        format!("verify-phone|{user_id}|{token_id}")
    }
}
