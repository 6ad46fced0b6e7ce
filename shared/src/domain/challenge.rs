//! MFA challenges: one live challenge per factor, a few attempts, a short life.

use serde::{Deserialize, Serialize};

use super::values::Factor;
use crate::clock::{Millis, MINUTE};

/// Appwrite keeps challenges for an hour while its email says 15 minutes; ours live 10.
pub const CHALLENGE_TTL: Millis = 10 * MINUTE;
/// Wrong codes a challenge survives; the fifth burns it.
pub const MAX_ATTEMPTS: u32 = 5;
pub const CODE_DIGITS: u32 = 6;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Challenge {
    pub id: String,
    pub user_id: String,
    pub factor: Factor,
    /// Keyed hash of the code sent by email or SMS; `None` for TOTP and recovery codes,
    /// which are checked against the user's authenticator or recovery codes.
    pub code_hash: Option<String>,
    pub attempts_left: u32,
    pub created_at: Millis,
    pub expire: Millis,
}

impl Challenge {
    pub fn new(user_id: &str, factor: Factor, now: Millis, ttl: Millis) -> Self {
        Challenge {
            id: super::crypto::new_id(),
            user_id: user_id.to_string(),
            factor,
            code_hash: None,
            attempts_left: MAX_ATTEMPTS,
            created_at: now,
            expire: now + ttl,
        }
    }

    pub fn is_usable(&self, now: Millis) -> bool {
        self.attempts_left > 0 && self.expire > now
    }

    /// The context a code hash is bound to: this user's this challenge.
    pub fn code_context(&self) -> String {
        format!("challenge|{}|{}", self.user_id, self.id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_challenge_dies_at_expiry_or_without_attempts() {
        let mut c = Challenge::new("u", Factor::Email, 1_000, CHALLENGE_TTL);
        assert!(c.is_usable(1_000 + CHALLENGE_TTL - 1));
        assert!(!c.is_usable(1_000 + CHALLENGE_TTL));
        c.attempts_left = 0;
        assert!(!c.is_usable(1_000));
    }

    #[test]
    fn code_context_binds_user_and_challenge() {
        let a = Challenge::new("u1", Factor::Email, 0, CHALLENGE_TTL);
        let b = Challenge::new("u1", Factor::Email, 0, CHALLENGE_TTL);
        assert_ne!(a.code_context(), b.code_context());
        assert!(a.code_context().contains("u1"));
    }
}
