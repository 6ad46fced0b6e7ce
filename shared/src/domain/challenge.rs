//! MFA challenges: one live challenge per factor, a few attempts, a short life.

use serde::{Deserialize, Serialize};

use super::factor::Factor;
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
            id: format!("{}{}", tag(factor), super::crypto::new_id()),
            user_id: user_id.to_string(),
            factor,
            code_hash: None,
            attempts_left: MAX_ATTEMPTS,
            created_at: now,
            expire: now + ttl,
        }
    }

    /// The factor a challenge id was issued for: the store finds a challenge by it
    /// without searching.
    pub fn factor_of(id: &str) -> Option<Factor> {
        Factor::second().find(|f| id.starts_with(tag(*f)) && id.len() > 1)
    }

    pub fn is_usable(&self, now: Millis) -> bool {
        self.attempts_left > 0 && self.expire > now
    }

    /// The context a code hash is bound to: this user's this challenge.
    pub fn code_context(&self) -> String {
        format!("challenge|{}|{}", self.user_id, self.id)
    }
}

/// The first character of a challenge id names its factor.
fn tag(factor: Factor) -> char {
    match factor {
        Factor::Totp => 't',
        Factor::Email => 'e',
        Factor::Phone => 'p',
        Factor::RecoveryCode => 'r',
        Factor::Password => 'w',
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
    fn a_challenge_id_names_its_factor() {
        for factor in Factor::second() {
            let c = Challenge::new("u", factor, 0, CHALLENGE_TTL);
            assert_eq!(Challenge::factor_of(&c.id), Some(factor));
            assert!(crate::domain::values::parse_id(&c.id).is_some(), "{} is a valid id", c.id);
        }
        assert_eq!(Challenge::factor_of("x123"), None);
        assert_eq!(Challenge::factor_of("t"), None);
    }

    #[test]
    fn code_context_binds_user_and_challenge() {
        let a = Challenge::new("u1", Factor::Email, 0, CHALLENGE_TTL);
        let b = Challenge::new("u1", Factor::Email, 0, CHALLENGE_TTL);
        assert_ne!(a.code_context(), b.code_context());
        assert!(a.code_context().contains("u1"));
    }
}
