//! MFA challenges: one live challenge per factor in each session, a few attempts, a short
//! life. A challenge belongs to the session that created it: only that session completes it.

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
    /// The session that created it, and the only one it can upgrade.
    #[serde(default)]
    pub session_id: String,
    pub factor: Factor,
    /// Keyed hash of the code sent by email or SMS; `None` for TOTP and recovery codes,
    /// which are checked against the user's authenticator or recovery codes.
    pub code_hash: Option<String>,
    pub attempts_left: u32,
    pub created_at: Millis,
    pub expire: Millis,
    /// For WebAuthn: the ceremony it stands for, with the state that checks the browser's
    /// answer. Kept here, server-side, and spent with the challenge.
    #[serde(default)]
    pub ceremony: Option<Ceremony>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Ceremony {
    /// Registering a new key rather than signing in with one.
    pub registration: bool,
    pub state: String,
}

/// Where a session's live challenge of each kind is kept: one per factor, and one for
/// registering a security key (which proves no factor yet, and must not replace a sign-in).
pub const REGISTRATION_SLOT: &str = "webauthnRegistration";
/// The first character of a key-registration ceremony's id.
const REGISTRATION_TAG: char = 'k';

impl Challenge {
    pub fn new(user_id: &str, session_id: &str, factor: Factor, now: Millis, ttl: Millis) -> Self {
        Challenge {
            id: format!("{}{}", tag(factor), super::crypto::new_id()),
            user_id: user_id.to_string(),
            session_id: session_id.to_string(),
            factor,
            code_hash: None,
            attempts_left: MAX_ATTEMPTS,
            created_at: now,
            expire: now + ttl,
            ceremony: None,
        }
    }

    /// A WebAuthn sign-in challenge holding its ceremony `state`.
    pub fn webauthn(user_id: &str, session_id: &str, state: String, now: Millis, ttl: Millis) -> Self {
        let ceremony = Some(Ceremony { registration: false, state });
        Challenge { ceremony, ..Challenge::new(user_id, session_id, Factor::Webauthn, now, ttl) }
    }

    /// The ceremony of registering a security key of `user_id`, holding its `state`.
    pub fn registration(user_id: &str, session_id: &str, state: String, now: Millis, ttl: Millis) -> Self {
        let ceremony = Some(Ceremony { registration: true, state });
        let id = format!("{REGISTRATION_TAG}{}", super::crypto::new_id());
        Challenge { id, ceremony, ..Challenge::new(user_id, session_id, Factor::Webauthn, now, ttl) }
    }

    pub fn is_registration(&self) -> bool {
        self.ceremony.as_ref().is_some_and(|c| c.registration)
    }

    /// The ceremony state of a WebAuthn sign-in (`registration == false`) or registration.
    pub fn ceremony_state(&self, registration: bool) -> Option<&str> {
        self.ceremony.as_ref().filter(|c| c.registration == registration).map(|c| c.state.as_str())
    }

    /// Where this challenge is kept.
    pub fn slot(&self) -> &'static str {
        if self.is_registration() {
            REGISTRATION_SLOT
        } else {
            self.factor.as_str()
        }
    }

    /// Where the challenge with this id is kept: its first character says, so the store
    /// finds it without searching.
    pub fn slot_of(id: &str) -> Option<&'static str> {
        if id.len() < 2 {
            return None;
        }
        if id.starts_with(REGISTRATION_TAG) {
            return Some(REGISTRATION_SLOT);
        }
        Factor::second().find(|f| id.starts_with(tag(*f))).map(Factor::as_str)
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
        Factor::Webauthn => 'a',
        Factor::Password => 'w',
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_challenge_dies_at_expiry_or_without_attempts() {
        let mut c = Challenge::new("u", "s", Factor::Email, 1_000, CHALLENGE_TTL);
        assert!(c.is_usable(1_000 + CHALLENGE_TTL - 1));
        assert!(!c.is_usable(1_000 + CHALLENGE_TTL));
        c.attempts_left = 0;
        assert!(!c.is_usable(1_000));
    }

    #[test]
    fn a_challenge_id_names_where_it_is_kept() {
        let mut slots = std::collections::BTreeSet::new();
        let registration = Challenge::registration("u", "s", "state".into(), 0, CHALLENGE_TTL);
        for c in Factor::second().map(|f| Challenge::new("u", "s", f, 0, CHALLENGE_TTL)).chain([registration]) {
            assert_eq!(Challenge::slot_of(&c.id), Some(c.slot()));
            assert!(slots.insert(c.slot()), "{} has a slot of its own", c.slot());
            assert!(crate::domain::values::parse_id(&c.id).is_some(), "{} is a valid id", c.id);
        }
        assert_eq!(Challenge::slot_of("x123"), None);
        assert_eq!(Challenge::slot_of("t"), None);
    }

    #[test]
    fn a_ceremony_state_is_read_only_by_its_own_ceremony() {
        let sign_in = Challenge::webauthn("u", "s", "s1".into(), 0, CHALLENGE_TTL);
        assert_eq!((sign_in.ceremony_state(false), sign_in.ceremony_state(true)), (Some("s1"), None));
        assert_eq!(sign_in.slot(), "webauthn");
        let registration = Challenge::registration("u", "s", "s2".into(), 0, CHALLENGE_TTL);
        assert_eq!((registration.ceremony_state(false), registration.ceremony_state(true)), (None, Some("s2")));
        assert_eq!(Challenge::new("u", "s", Factor::Totp, 0, CHALLENGE_TTL).ceremony_state(false), None);
    }

    #[test]
    fn code_context_binds_user_and_challenge() {
        let a = Challenge::new("u1", "s", Factor::Email, 0, CHALLENGE_TTL);
        let b = Challenge::new("u1", "s", Factor::Email, 0, CHALLENGE_TTL);
        assert_ne!(a.code_context(), b.code_context());
        assert!(a.code_context().contains("u1"));
    }
}
