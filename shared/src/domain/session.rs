//! Sessions: who they belong to, what they have proven, and when they end.

use serde::{Deserialize, Serialize};

use super::user::User;
use super::values::Factor;
use crate::clock::{Millis, MINUTE};

/// A successful challenge within this window counts as recent proof (Appwrite: 1800 s).
pub const RECENT_CHALLENGE: Millis = 30 * MINUTE;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Session {
    pub id: String,
    pub user_id: String,
    /// SHA-256 of the session secret; the secret itself is only ever in the client's cookie.
    pub secret_hash: String,
    pub created_at: Millis,
    pub updated_at: Millis,
    pub expire: Millis,
    pub factors: Vec<Factor>,
    pub mfa_updated_at: Option<Millis>,
    pub ip: String,
    pub user_agent: String,
    /// When the session was last confirmed as one of the user's: at sign-in, and when it
    /// ended the user's other sessions. Older than the user's `sessions_valid_from`: over.
    #[serde(default)]
    pub confirmed_at: Millis,
}

/// How far a session may go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Standing {
    /// Every route is open to it.
    Full,
    /// MFA is enforced and the session has proven one factor: only the MFA routes are open.
    NeedsMoreFactors,
}

impl Session {
    pub fn standing(&self, user: &User) -> Standing {
        if user.mfa_enforced() && self.factors.len() < 2 {
            Standing::NeedsMoreFactors
        } else {
            Standing::Full
        }
    }

    pub fn has_recent_challenge(&self, now: Millis) -> bool {
        self.mfa_updated_at.is_some_and(|at| now - at <= RECENT_CHALLENGE)
    }

    /// Whether this session may add a second factor to its user (recovery codes where none
    /// exist, an authenticator, a new email or phone). While MFA is enforced that needs a
    /// recent challenge: a stolen session must not give itself a factor to pass challenges
    /// with, here or, with the password, in a session of its own.
    pub fn may_add_factor(&self, user: &User, now: Millis) -> bool {
        !user.mfa_enforced() || self.has_recent_challenge(now)
    }

    /// Whether completing a challenge of `factor` makes this session's challenge recent:
    /// only with a factor the user had before this session added or changed it. A security
    /// key answers for itself (`key`): the user may hold others this session did not add.
    pub fn proves_with(&self, user: &User, factor: Factor, key: Option<&str>) -> bool {
        match key.and_then(|id| user.authenticators.iter().find(|a| a.id == id)) {
            Some(key) => key.registered_by() != Some(self.id.as_str()),
            None => !user.factor_added_by(factor, &self.id),
        }
    }

    pub fn is_live(&self, now: Millis) -> bool {
        self.expire > now
    }

    /// False once the user ended every other session after this one was confirmed.
    pub fn survives(&self, user: &User) -> bool {
        self.confirmed_at >= user.sessions_valid_from
    }
}

/// A new session's secret: its session's id (a selector, not secret, by which the session
/// is found by its key), a dot, and 256 random bits (the validator, compared by hash in
/// constant time).
pub fn new_secret(session_id: &str) -> String {
    format!("{session_id}.{}", super::crypto::random_secret())
}

/// The session id a secret names, if it is one of ours.
pub fn id_of_secret(secret: &str) -> Option<&str> {
    let (id, validator) = secret.split_once('.')?;
    (super::values::parse_id(id).is_some() && !validator.is_empty()).then_some(id)
}

/// Appends factors once each, keeping the order in which they were proven.
pub fn merge_factors(existing: &mut Vec<Factor>, add: &[Factor]) {
    for factor in add {
        if !existing.contains(factor) {
            existing.push(*factor);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_secret_names_its_session_and_carries_a_random_validator() {
        let secret = new_secret("abc123");
        assert_eq!(id_of_secret(&secret), Some("abc123"));
        assert_ne!(new_secret("abc123"), secret);
        assert!(secret.len() > "abc123.".len() + 32);
        for bad in ["", ".", "abc123.", ".xyz", "no-dot", "bad id.xyz"] {
            assert_eq!(id_of_secret(bad), None, "{bad:?}");
        }
    }
    use crate::domain::user::sample_user;

    fn session(factors: Vec<Factor>) -> Session {
        Session {
            id: "s".into(),
            user_id: "u".into(),
            secret_hash: "h".into(),
            created_at: 0,
            updated_at: 0,
            expire: 100,
            factors,
            mfa_updated_at: None,
            ip: String::new(),
            user_agent: String::new(),
            confirmed_at: 0,
        }
    }

    #[test]
    fn one_factor_is_not_enough_once_mfa_is_enforced() {
        let mut user = sample_user("u");
        user.mfa = true;
        user.email_verified = true;
        assert_eq!(session(vec![Factor::Password]).standing(&user), Standing::NeedsMoreFactors);
        assert_eq!(session(vec![Factor::Password, Factor::Totp]).standing(&user), Standing::Full);
        user.mfa = false;
        assert_eq!(session(vec![Factor::Password]).standing(&user), Standing::Full);
    }

    #[test]
    fn recent_challenge_lasts_thirty_minutes() {
        let mut s = session(vec![Factor::Password]);
        assert!(!s.has_recent_challenge(1_000));
        s.mfa_updated_at = Some(1_000);
        assert!(s.has_recent_challenge(1_000 + RECENT_CHALLENGE));
        assert!(!s.has_recent_challenge(1_001 + RECENT_CHALLENGE));
    }

    #[test]
    fn adding_a_factor_under_enforced_mfa_needs_a_recent_challenge() {
        let mut user = sample_user("u");
        let mut s = session(vec![Factor::Password, Factor::Email]);
        assert!(s.may_add_factor(&user, 1_000), "MFA off: setting up needs no proof");
        user.mfa = true;
        user.email_verified = true;
        assert!(!s.may_add_factor(&user, 1_000));
        s.mfa_updated_at = Some(1_000);
        assert!(s.may_add_factor(&user, 1_000 + RECENT_CHALLENGE));
        assert!(!s.may_add_factor(&user, 1_001 + RECENT_CHALLENGE));
    }

    #[test]
    fn a_factor_the_session_added_itself_proves_nothing() {
        let mut user = sample_user("u");
        let s = session(vec![Factor::Password]);
        assert!(s.proves_with(&user, Factor::Totp, None));
        user.added_by.insert(Factor::Totp, s.id.clone());
        assert!(!s.proves_with(&user, Factor::Totp, None));
        assert!(s.proves_with(&user, Factor::Email, None));
        user.added_by.insert(Factor::Email, "another session".into());
        assert!(s.proves_with(&user, Factor::Email, None));
    }

    #[test]
    fn a_key_proves_something_unless_this_session_registered_it() {
        use crate::domain::{Authenticator, AuthenticatorSecret};
        let key = |id: &str, by: &str| Authenticator {
            id: id.into(),
            name: String::new(),
            created_at: 0,
            last_used_at: None,
            verified: true,
            secret: AuthenticatorSecret::Webauthn {
                credential: "{}".into(),
                credential_id: id.into(),
                counter: 0,
                registered_by: by.into(),
            },
        };
        let mut user = sample_user("u");
        user.authenticators = vec![key("old", "another session"), key("new", "s")];
        let s = session(vec![Factor::Password]);
        assert!(s.proves_with(&user, Factor::Webauthn, Some("old")));
        assert!(!s.proves_with(&user, Factor::Webauthn, Some("new")));
    }

    #[test]
    fn sessions_confirmed_before_the_cut_are_over() {
        let mut user = sample_user("u");
        let mut s = session(vec![Factor::Password]);
        s.confirmed_at = 50;
        assert!(s.survives(&user));
        user.sessions_valid_from = 50;
        assert!(s.survives(&user), "the session that made the cut keeps going");
        user.sessions_valid_from = 51;
        assert!(!s.survives(&user));
    }

    #[test]
    fn expiry_is_exclusive() {
        let s = session(vec![]);
        assert!(s.is_live(99));
        assert!(!s.is_live(100));
    }

    #[test]
    fn merging_factors_keeps_each_once() {
        let mut factors = vec![Factor::Password];
        merge_factors(&mut factors, &[Factor::Totp, Factor::Password, Factor::Totp]);
        assert_eq!(factors, vec![Factor::Password, Factor::Totp]);
    }
}
