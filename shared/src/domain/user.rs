//! Users and the factors they have verified.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::authenticator::{Authenticator, AuthenticatorKind};
use super::factor::Factor;
use crate::clock::Millis;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct User {
    pub id: String,
    pub created_at: Millis,
    pub updated_at: Millis,
    pub name: String,
    pub email: Option<String>,
    pub email_verified: bool,
    pub phone: Option<String>,
    pub phone_verified: bool,
    /// Argon2id PHC string.
    pub password_hash: String,
    pub password_updated_at: Millis,
    pub mfa: bool,
    pub mfa_updated_at: Option<Millis>,
    #[serde(default)]
    pub authenticators: Vec<Authenticator>,
    /// Keyed hashes of the unused recovery codes.
    pub recovery_codes: Vec<String>,
    /// Sessions confirmed before this moment are over (a factor was removed or replaced).
    #[serde(default)]
    pub sessions_valid_from: Millis,
    /// The session that last added or changed each second factor. A challenge that session
    /// completes with that factor proves nothing the account had before it: it is not a
    /// recent challenge.
    #[serde(default)]
    pub added_by: BTreeMap<Factor, String>,
    /// Appwrite's `prefs`: a JSON object the app keeps for the user.
    #[serde(default)]
    pub prefs: serde_json::Map<String, serde_json::Value>,
}

impl User {
    /// The user's authenticator of `kind` (Appwrite's API has at most one of each).
    pub fn authenticator(&self, kind: AuthenticatorKind) -> Option<&Authenticator> {
        self.authenticators.iter().find(|a| a.kind() == kind)
    }

    pub fn totp(&self) -> Option<&Authenticator> {
        self.authenticator(AuthenticatorKind::Totp)
    }

    pub fn totp_verified(&self) -> bool {
        self.totp().is_some_and(|a| a.verified)
    }

    /// The user's registered security keys and passkeys.
    pub fn keys(&self) -> impl Iterator<Item = &Authenticator> {
        self.authenticators.iter().filter(|a| a.verified && a.kind() == AuthenticatorKind::Webauthn)
    }

    /// Whether the user has `factor` ready to prove: verified, or (recovery codes) unused.
    pub fn has_factor(&self, factor: Factor) -> bool {
        match factor {
            Factor::Password => !self.password_hash.is_empty(),
            Factor::Totp => self.totp_verified(),
            Factor::Email => self.email.is_some() && self.email_verified,
            Factor::Phone => self.phone.is_some() && self.phone_verified,
            Factor::RecoveryCode => !self.recovery_codes.is_empty(),
            Factor::Webauthn => self.keys().next().is_some(),
        }
    }

    /// The verified second factors that enforce MFA, in canonical order.
    pub fn verified_factors(&self) -> Vec<Factor> {
        Factor::second().filter(|f| f.enforces_mfa() && self.has_factor(*f)).collect()
    }

    /// MFA is enforced when switched on and at least one second factor is verified.
    pub fn mfa_enforced(&self) -> bool {
        self.mfa && !self.verified_factors().is_empty()
    }

    /// Every value of the user made under a server key (a sealed TOTP secret, recovery-code
    /// hashes), for counting what each key still protects.
    pub fn keyed_values(&self) -> impl Iterator<Item = &str> {
        let sealed = self.authenticators.iter().filter_map(|a| a.totp_secret().map(|(sealed, _)| sealed));
        sealed.chain(self.recovery_codes.iter().map(String::as_str))
    }

    /// Whether `factor` was added or changed by the session `session_id`.
    pub fn factor_added_by(&self, factor: Factor, session_id: &str) -> bool {
        self.added_by.get(&factor).is_some_and(|by| by == session_id)
    }
}

#[cfg(test)]
pub(crate) fn sample_user(id: &str) -> User {
    User {
        id: id.to_string(),
        created_at: 1,
        updated_at: 1,
        name: String::new(),
        email: Some(format!("{id}@example.com")),
        email_verified: false,
        phone: None,
        phone_verified: false,
        password_hash: "x".into(),
        password_updated_at: 1,
        mfa: false,
        mfa_updated_at: None,
        authenticators: vec![],
        recovery_codes: vec![],
        sessions_valid_from: 0,
        added_by: BTreeMap::new(),
        prefs: Default::default(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mfa_is_enforced_only_with_a_verified_second_factor() {
        let mut user = sample_user("u");
        user.mfa = true;
        assert!(!user.mfa_enforced(), "no verified factor yet");
        user.recovery_codes = vec!["h".into()];
        assert!(!user.mfa_enforced(), "recovery codes alone do not enforce MFA");
        user.email_verified = true;
        assert!(user.mfa_enforced());
        user.mfa = false;
        assert!(!user.mfa_enforced());
    }

    #[test]
    fn an_unverified_authenticator_is_not_a_factor() {
        let mut user = sample_user("u");
        user.authenticators.push(Authenticator::totp("s".into(), 1));
        assert!(!user.has_factor(Factor::Totp));
        user.authenticators[0].verified = true;
        assert_eq!(user.verified_factors(), vec![Factor::Totp]);
    }
}
