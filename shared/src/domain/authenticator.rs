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
    /// refused), with the challenge that spent it, if one did: a store may complete a
    /// challenge in two writes, spending the step first, and the same challenge may then
    /// spend the same step again to finish.
    Totp {
        sealed: String,
        last_step: Option<u64>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        spent_by: Option<String>,
    },
    /// A security key or passkey: its credential as `webauthn-rs` serialises it (public
    /// key, flags; nothing secret), its id (base64url) and its signature counter, which
    /// must move forward on every use unless the key keeps none (always 0); and the session
    /// that registered it: a challenge that session completes with this key proves nothing
    /// the account had before (see `Session::proves_with`).
    Webauthn { credential: String, credential_id: String, counter: u32, registered_by: String },
}

/// The kinds of authenticator, as `POST /account/mfa/authenticators/{type}` names them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthenticatorKind {
    Totp,
    Webauthn,
}

impl AuthenticatorKind {
    pub const ALL: [AuthenticatorKind; 2] = [AuthenticatorKind::Totp, AuthenticatorKind::Webauthn];

    pub fn as_str(self) -> &'static str {
        match self {
            AuthenticatorKind::Totp => "totp",
            AuthenticatorKind::Webauthn => "webauthn",
        }
    }

    /// The factor an authenticator of this kind proves.
    pub fn factor(self) -> Factor {
        match self {
            AuthenticatorKind::Totp => Factor::Totp,
            AuthenticatorKind::Webauthn => Factor::Webauthn,
        }
    }

    /// Case-insensitive, as Appwrite reads it.
    pub fn parse(raw: &str) -> Result<AuthenticatorKind, Rule> {
        AuthenticatorKind::ALL
            .into_iter()
            .find(|k| k.as_str().eq_ignore_ascii_case(raw))
            .ok_or("Value must be one of (totp, webauthn)")
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
            secret: AuthenticatorSecret::Totp { sealed, last_step: None, spent_by: None },
        }
    }

    pub fn kind(&self) -> AuthenticatorKind {
        match self.secret {
            AuthenticatorSecret::Totp { .. } => AuthenticatorKind::Totp,
            AuthenticatorSecret::Webauthn { .. } => AuthenticatorKind::Webauthn,
        }
    }

    /// The sealed TOTP secret and newest accepted step, for a TOTP authenticator.
    pub fn totp_secret(&self) -> Option<(&str, Option<u64>)> {
        match &self.secret {
            AuthenticatorSecret::Totp { sealed, last_step, .. } => Some((sealed.as_str(), *last_step)),
            AuthenticatorSecret::Webauthn { .. } => None,
        }
    }

    /// The credential id of a security key or passkey.
    pub fn credential_id(&self) -> Option<&str> {
        match &self.secret {
            AuthenticatorSecret::Webauthn { credential_id, .. } => Some(credential_id),
            AuthenticatorSecret::Totp { .. } => None,
        }
    }

    /// The session that registered a security key.
    pub fn registered_by(&self) -> Option<&str> {
        match &self.secret {
            AuthenticatorSecret::Webauthn { registered_by, .. } => Some(registered_by),
            AuthenticatorSecret::Totp { .. } => None,
        }
    }

    /// Whether a security key's signature `counter` may follow the stored one: it must move
    /// forward, unless the key keeps no counter (both 0).
    pub fn accepts_counter(&self, counter: u32) -> bool {
        match &self.secret {
            AuthenticatorSecret::Webauthn { counter: stored, .. } => {
                counter > *stored || (counter == 0 && *stored == 0)
            }
            AuthenticatorSecret::Totp { .. } => false,
        }
    }

    /// Records a use of a security key: its new counter and credential; `false` (nothing
    /// changed) unless the counter may follow the stored one.
    pub fn use_key(&mut self, new_counter: u32, new_credential: &str, now: Millis) -> bool {
        if !self.accepts_counter(new_counter) {
            return false;
        }
        if let AuthenticatorSecret::Webauthn { credential, counter, .. } = &mut self.secret {
            *credential = new_credential.to_string();
            *counter = new_counter;
            self.last_used_at = Some(now);
        }
        true
    }

    /// Records the use of TOTP time step `step`; `false` (nothing changed) unless it is
    /// newer than every step used before.
    pub fn use_step(&mut self, step: u64, now: Millis) -> bool {
        self.spend_step(step, None, now)
    }

    /// Records the use of TOTP time step `step` by `challenge`: newer than every step used
    /// before, or the step this same challenge spent.
    pub fn use_step_for(&mut self, step: u64, challenge: &str, now: Millis) -> bool {
        self.spend_step(step, Some(challenge), now)
    }

    /// The newest step a code for `challenge` must be past: the last step used, unless this
    /// same challenge spent it.
    pub fn step_floor(&self, challenge: &str) -> Option<u64> {
        match &self.secret {
            AuthenticatorSecret::Totp { last_step, spent_by, .. } if spent_by.as_deref() == Some(challenge) => {
                last_step.and_then(|last| last.checked_sub(1))
            }
            AuthenticatorSecret::Totp { last_step, .. } => *last_step,
            AuthenticatorSecret::Webauthn { .. } => None,
        }
    }

    fn spend_step(&mut self, step: u64, by: Option<&str>, now: Millis) -> bool {
        let floor = by.map_or_else(|| self.totp_secret().and_then(|(_, last)| last), |c| self.step_floor(c));
        match &mut self.secret {
            AuthenticatorSecret::Totp { last_step, spent_by, .. } if floor.is_none_or(|last| step > last) => {
                *last_step = Some(step);
                *spent_by = by.map(str::to_string);
                self.last_used_at = Some(now);
                true
            }
            AuthenticatorSecret::Totp { .. } | AuthenticatorSecret::Webauthn { .. } => false,
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
    fn a_step_a_challenge_spent_is_spendable_again_by_that_challenge_only() {
        let mut a = Authenticator::totp("sealed".into(), 1);
        assert!(a.use_step_for(10, "c1", 5));
        assert_eq!((a.step_floor("c1"), a.step_floor("c2")), (Some(9), Some(10)));
        assert!(!a.use_step_for(10, "c2", 6), "another challenge cannot use it");
        assert!(!a.use_step(10, 6), "nor a new authenticator's check");
        assert!(a.use_step_for(10, "c1", 6), "the challenge that spent it finishes");
        assert!(!a.use_step_for(9, "c1", 6), "an older step stays refused");
        assert!(a.use_step(11, 7));
        assert_eq!(a.step_floor("c1"), Some(11), "a newer step belongs to no challenge");
    }

    #[test]
    fn kinds_parse_case_insensitively() {
        assert_eq!(AuthenticatorKind::parse("TOTP"), Ok(AuthenticatorKind::Totp));
        assert_eq!(AuthenticatorKind::parse("WebAuthn"), Ok(AuthenticatorKind::Webauthn));
        assert!(AuthenticatorKind::parse("hotp").is_err());
        assert_eq!(AuthenticatorKind::Totp.factor(), Factor::Totp);
        assert_eq!(AuthenticatorKind::Webauthn.factor(), Factor::Webauthn);
    }

    fn key(counter: u32) -> Authenticator {
        Authenticator {
            id: "k1".into(),
            name: "Key".into(),
            created_at: 1,
            last_used_at: None,
            verified: true,
            secret: AuthenticatorSecret::Webauthn {
                credential: "{}".into(),
                credential_id: "AQ".into(),
                counter,
                registered_by: "s".into(),
            },
        }
    }

    #[test]
    fn a_key_counter_only_moves_forward_unless_the_key_keeps_none() {
        let mut k = key(5);
        assert!(!k.use_key(5, "{\"v\":1}", 9), "an equal counter is a replay or a clone");
        assert!(!k.use_key(4, "{\"v\":1}", 9));
        assert!(!k.use_key(0, "{\"v\":1}", 9));
        assert_eq!(k.last_used_at, None);
        assert!(k.use_key(6, "{\"v\":2}", 9));
        assert_eq!(k.last_used_at, Some(9));
        assert!(
            matches!(&k.secret, AuthenticatorSecret::Webauthn { counter: 6, credential, .. } if credential == "{\"v\":2}")
        );
        let mut counterless = key(0);
        assert!(counterless.use_key(0, "{}", 9), "keys without a counter always send 0");
        assert!(counterless.use_key(3, "{}", 9));
        assert!(!counterless.use_key(0, "{}", 9), "once counting, 0 is a regression");
    }
}
