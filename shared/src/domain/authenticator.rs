//! A user's authenticators: a collection, each with its id, name, times and the secret of
//! its kind. A new kind is a variant of [`AuthenticatorSecret`] and of [`AuthenticatorKind`];
//! the exhaustive matches name what it must define.

use serde::{Deserialize, Serialize};

use super::factor::Factor;
use super::values::Rule;
use crate::clock::Millis;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Authenticator {
    pub id: String,
    /// What the user calls it.
    pub name: String,
    pub created_at: Millis,
    pub last_used_at: Option<Millis>,
    /// Proven once by the user; only then is it a factor.
    pub verified: bool,
    pub secret: AuthenticatorSecret,
}

/// The secret an authenticator is checked against, by kind.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "camelCase")]
pub enum AuthenticatorSecret {
    /// The TOTP secret, AES-256-GCM encrypted under the server key with the user id as
    /// associated data, and the newest time step ever accepted (older or equal ones are
    /// refused).
    Totp { sealed: String, last_step: Option<u64> },
}

/// The kinds of authenticator, as `POST /account/mfa/authenticators/{type}` names them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthenticatorKind {
    Totp,
}

impl AuthenticatorKind {
    pub const ALL: [AuthenticatorKind; 1] = [AuthenticatorKind::Totp];

    pub fn as_str(self) -> &'static str {
        match self {
            AuthenticatorKind::Totp => "totp",
        }
    }

    /// The factor an authenticator of this kind proves.
    pub fn factor(self) -> Factor {
        match self {
            AuthenticatorKind::Totp => Factor::Totp,
        }
    }

    /// Case-insensitive, as Appwrite reads it.
    pub fn parse(raw: &str) -> Result<AuthenticatorKind, Rule> {
        AuthenticatorKind::ALL
            .into_iter()
            .find(|k| k.as_str().eq_ignore_ascii_case(raw))
            .ok_or("Value must be one of (totp)")
    }
}

impl Authenticator {
    /// The id of a user's TOTP authenticator: Appwrite's API has one per user, addressed by
    /// its type, so it takes the type's name and a new one replaces an unverified one.
    pub const TOTP_ID: &'static str = "totp";
    /// What a TOTP authenticator is called until the user names it.
    pub const TOTP_NAME: &'static str = "Authenticator app";

    /// A new, unverified TOTP authenticator for the sealed secret.
    pub fn totp(sealed: String, now: Millis) -> Authenticator {
        Authenticator {
            id: Authenticator::TOTP_ID.into(),
            name: Authenticator::TOTP_NAME.into(),
            created_at: now,
            last_used_at: None,
            verified: false,
            secret: AuthenticatorSecret::Totp { sealed, last_step: None },
        }
    }

    pub fn kind(&self) -> AuthenticatorKind {
        match self.secret {
            AuthenticatorSecret::Totp { .. } => AuthenticatorKind::Totp,
        }
    }

    /// The sealed TOTP secret and newest accepted step, for a TOTP authenticator.
    pub fn totp_secret(&self) -> Option<(&str, Option<u64>)> {
        match &self.secret {
            AuthenticatorSecret::Totp { sealed, last_step } => Some((sealed.as_str(), *last_step)),
        }
    }

    /// Records the use of TOTP time step `step`; `false` (nothing changed) unless it is
    /// newer than every step used before.
    pub fn use_step(&mut self, step: u64, now: Millis) -> bool {
        match &mut self.secret {
            AuthenticatorSecret::Totp { last_step, .. } if last_step.is_none_or(|last| step > last) => {
                *last_step = Some(step);
                self.last_used_at = Some(now);
                true
            }
            AuthenticatorSecret::Totp { .. } => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_totp_step_is_used_once_and_never_an_older_one() {
        let mut a = Authenticator::totp("sealed".into(), 1);
        assert_eq!((a.kind(), a.verified, a.last_used_at), (AuthenticatorKind::Totp, false, None));
        assert!(a.use_step(10, 5));
        assert_eq!((a.totp_secret(), a.last_used_at), (Some(("sealed", Some(10))), Some(5)));
        assert!(!a.use_step(10, 6));
        assert!(!a.use_step(9, 6));
        assert!(a.use_step(11, 7));
    }

    #[test]
    fn kinds_parse_case_insensitively() {
        assert_eq!(AuthenticatorKind::parse("TOTP"), Ok(AuthenticatorKind::Totp));
        assert!(AuthenticatorKind::parse("hotp").is_err());
        assert_eq!(AuthenticatorKind::Totp.factor(), Factor::Totp);
    }
}
