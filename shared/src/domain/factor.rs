//! The factors a session proves. Every list of factors (the ones a challenge can prove, the
//! ones `GET /account/mfa/factors` shows, the ones that enforce MFA) derives from this enum:
//! a new factor is a variant here, and the exhaustive matches below (and in the modules
//! that handle each factor) name every place that must learn it.

use std::sync::LazyLock;

use serde::{Deserialize, Serialize};

use super::values::Rule;

/// Names are Appwrite's canonical ones.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, PartialOrd, Ord)]
pub enum Factor {
    #[serde(rename = "password")]
    Password,
    #[serde(rename = "totp")]
    Totp,
    #[serde(rename = "email")]
    Email,
    #[serde(rename = "phone")]
    Phone,
    #[serde(rename = "recoveryCode")]
    RecoveryCode,
    /// A security key or passkey.
    #[serde(rename = "webauthn")]
    Webauthn,
}

/// The rule a challenge's `factor` breaks: the second factors, as the SDK spells them.
static CHALLENGE_RULE: LazyLock<String> = LazyLock::new(|| {
    let names: Vec<String> = Factor::second().map(|f| f.as_str().to_ascii_lowercase()).collect();
    format!("Value must be one of ({})", names.join(", "))
});

impl Factor {
    /// Every factor, in canonical order (the order a session lists what it proved). New
    /// factors go last: stored sessions rank their factors by this order.
    pub const ALL: [Factor; 6] =
        [Factor::Password, Factor::Totp, Factor::Email, Factor::Phone, Factor::RecoveryCode, Factor::Webauthn];

    pub fn as_str(self) -> &'static str {
        match self {
            Factor::Password => "password",
            Factor::Totp => "totp",
            Factor::Email => "email",
            Factor::Phone => "phone",
            Factor::RecoveryCode => "recoveryCode",
            Factor::Webauthn => "webauthn",
        }
    }

    /// Whether an MFA challenge can prove this factor.
    pub fn is_second(self) -> bool {
        match self {
            Factor::Password => false,
            Factor::Totp | Factor::Email | Factor::Phone | Factor::RecoveryCode | Factor::Webauthn => true,
        }
    }

    /// Whether having this factor verified makes MFA enforceable. Recovery codes only
    /// stand in for another factor.
    pub fn enforces_mfa(self) -> bool {
        match self {
            Factor::Totp | Factor::Email | Factor::Phone | Factor::Webauthn => true,
            Factor::Password | Factor::RecoveryCode => false,
        }
    }

    /// The second factors, in canonical order.
    pub fn second() -> impl Iterator<Item = Factor> {
        Factor::ALL.into_iter().filter(|f| f.is_second())
    }

    /// A second factor a challenge can prove (case-insensitive: SDK 28 sends `recoverycode`).
    pub fn parse_challenge(raw: &str) -> Result<Factor, Rule> {
        Factor::second().find(|f| f.as_str().eq_ignore_ascii_case(raw)).ok_or(CHALLENGE_RULE.as_str())
    }

    pub fn from_name(name: &str) -> Option<Factor> {
        Factor::ALL.into_iter().find(|f| f.as_str() == name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Adding a variant breaks this match until `ALL` lists it in its place.
    fn place(factor: Factor) -> usize {
        match factor {
            Factor::Password => 0,
            Factor::Totp => 1,
            Factor::Email => 2,
            Factor::Phone => 3,
            Factor::RecoveryCode => 4,
            Factor::Webauthn => 5,
        }
    }

    #[test]
    fn all_lists_every_factor_once_in_order() {
        for (i, factor) in Factor::ALL.into_iter().enumerate() {
            assert_eq!(place(factor), i, "{factor:?}");
            assert_eq!(Factor::from_name(factor.as_str()), Some(factor));
        }
    }

    #[test]
    fn challenge_factors_are_case_insensitive() {
        assert_eq!(Factor::parse_challenge("recoverycode"), Ok(Factor::RecoveryCode));
        assert_eq!(Factor::parse_challenge("recoveryCode"), Ok(Factor::RecoveryCode));
        assert_eq!(Factor::parse_challenge("TOTP"), Ok(Factor::Totp));
        assert_eq!(Factor::parse_challenge("webauthn"), Ok(Factor::Webauthn));
        assert!(Factor::parse_challenge("password").is_err());
        assert_eq!(
            Factor::parse_challenge("sms"),
            Err("Value must be one of (totp, email, phone, recoverycode, webauthn)")
        );
    }
}
