//! Inputs parsed at the edge into values that are valid by construction.
//! Each `parse` returns the rule that failed, which the API layer names with its parameter.

use serde::Deserialize;

pub type Rule = &'static str;

/// `unique()` or up to 36 of `[a-zA-Z0-9._-]`, not starting with a special character.
pub fn parse_new_user_id(raw: &str) -> Result<String, Rule> {
    const RULE: Rule = "Parameter must contain at most 36 chars. Valid chars are a-z, A-Z, 0-9, period, hyphen, and underscore. Can't start with a special char";
    if raw == "unique()" {
        return Ok(super::crypto::new_id());
    }
    parse_id(raw).ok_or(RULE)
}

/// An existing id as sent back by a client (same alphabet, no `unique()`).
pub fn parse_id(raw: &str) -> Option<String> {
    let valid = !raw.is_empty()
        && raw.len() <= 36
        && raw.bytes().all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
        && raw.as_bytes()[0].is_ascii_alphanumeric();
    valid.then(|| raw.to_string())
}

/// Emails are compared and stored lowercased.
pub fn parse_email(raw: &str) -> Result<String, Rule> {
    const RULE: Rule = "Value must be a valid email address";
    let email = raw.trim().to_ascii_lowercase();
    let (local, domain) = email.rsplit_once('@').ok_or(RULE)?;
    let domain_ok = domain.contains('.')
        && !domain.starts_with('.')
        && !domain.ends_with('.')
        && domain.bytes().all(|b| b.is_ascii_alphanumeric() || b"-.".contains(&b));
    let local_ok = !local.is_empty()
        && local.len() <= 64
        && local.bytes().all(|b| b.is_ascii_graphic() && !b"@()<>[]\\,;:\"".contains(&b));
    if email.len() <= 254 && domain_ok && local_ok {
        Ok(email)
    } else {
        Err(RULE)
    }
}

/// E.164: `+`, a non-zero digit, 7 to 15 digits in all.
pub fn parse_phone(raw: &str) -> Result<String, Rule> {
    const RULE: Rule = "Phone number must start with a '+' can have a maximum of fifteen digits.";
    let digits = raw.strip_prefix('+').ok_or(RULE)?;
    let ok = (7..=15).contains(&digits.len()) && digits.bytes().all(|b| b.is_ascii_digit()) && !digits.starts_with('0');
    if ok {
        Ok(raw.to_string())
    } else {
        Err(RULE)
    }
}

pub fn parse_password(raw: &str) -> Result<String, Rule> {
    let chars = raw.chars().count();
    if (8..=256).contains(&chars) {
        Ok(raw.to_string())
    } else {
        Err("Password must be between 8 and 256 characters long.")
    }
}

pub fn parse_name(raw: &str) -> Result<String, Rule> {
    if raw.chars().count() <= 128 {
        Ok(raw.to_string())
    } else {
        Err("Value must be a valid string and no longer than 128 chars")
    }
}

/// A code typed by a user: one-time code, TOTP code or recovery code.
pub fn parse_otp(raw: &str) -> Result<String, Rule> {
    let trimmed = raw.trim();
    if !trimmed.is_empty() && trimmed.len() <= 64 {
        Ok(trimmed.to_string())
    } else {
        Err("Value must be a valid string and at least 1 chars and no longer than 64 chars")
    }
}

/// A redirect URL for verification links: http(s) to an allowed host.
pub fn parse_redirect_url(raw: &str, allowed_hosts: &[String]) -> Result<url::Url, Rule> {
    const RULE: Rule = "URL host must be one of: the hosts configured for this project";
    let url = url::Url::parse(raw).map_err(|_| "Value must be a valid URL")?;
    if !matches!(url.scheme(), "http" | "https") || raw.len() > 2048 {
        return Err("Value must be a valid URL with the http or https scheme");
    }
    let host = url.host_str().unwrap_or_default();
    if allowed_hosts.iter().any(|h| h == "*" || h.eq_ignore_ascii_case(host)) {
        Ok(url)
    } else {
        Err(RULE)
    }
}

pub use super::factor::Factor;

/// A string parameter that is valid by construction: `serde` parses it with its rule, and
/// a failure carries the rule as its message.
macro_rules! parsed {
    ($(#[$doc:meta])* $name:ident, $parse:expr) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
        #[serde(try_from = "String")]
        pub struct $name(String);

        impl TryFrom<String> for $name {
            type Error = Rule;
            fn try_from(raw: String) -> Result<Self, Rule> {
                ($parse)(&raw).map($name)
            }
        }

        impl $name {
            pub fn into_inner(self) -> String {
                self.0
            }
        }

        impl std::ops::Deref for $name {
            type Target = str;
            fn deref(&self) -> &str {
                &self.0
            }
        }
    };
}

parsed!(
    /// A lowercased email address.
    Email,
    parse_email
);
parsed!(
    /// An E.164 phone number.
    Phone,
    parse_phone
);
parsed!(
    /// A password being set: 8 to 256 characters.
    NewPassword,
    parse_password
);
parsed!(
    /// A code typed by a user.
    Otp,
    parse_otp
);
parsed!(
    /// An existing id sent back by a client (a user's, a challenge's).
    Id,
    |raw: &str| parse_id(raw).ok_or("Value must be a valid id")
);
parsed!(
    /// A new user's id: given, or `unique()` for a generated one.
    NewUserId,
    parse_new_user_id
);
parsed!(
    /// A display name.
    Name,
    parse_name
);

/// The `factor` of a challenge: a second factor, case-insensitive.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub struct ChallengeFactor(pub Factor);

impl TryFrom<String> for ChallengeFactor {
    type Error = Rule;
    fn try_from(raw: String) -> Result<Self, Rule> {
        Factor::parse_challenge(&raw).map(ChallengeFactor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_ids_follow_appwrite_rules() {
        assert_eq!(parse_new_user_id("unique()").unwrap().len(), 20);
        assert!(parse_new_user_id("alice_01.x-y").is_ok());
        assert!(parse_new_user_id("_alice").is_err());
        assert!(parse_new_user_id("").is_err());
        assert!(parse_new_user_id(&"a".repeat(37)).is_err());
        assert!(parse_new_user_id("a b").is_err());
    }

    #[test]
    fn emails_are_lowercased_and_checked() {
        assert_eq!(parse_email("Alice@Example.COM").unwrap(), "alice@example.com");
        for bad in ["", "alice", "alice@", "@example.com", "a@b", "a@.com", "a b@c.com"] {
            assert!(parse_email(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn phones_must_be_e164() {
        assert!(parse_phone("+12065550100").is_ok());
        for bad in ["12065550100", "+0123456789", "+1", "+1234567890123456", "+1206555010a"] {
            assert!(parse_phone(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn passwords_are_8_to_256_chars() {
        assert!(parse_password("1234567").is_err());
        assert!(parse_password("12345678").is_ok());
        assert!(parse_password(&"x".repeat(256)).is_ok());
        assert!(parse_password(&"x".repeat(257)).is_err());
    }

    #[test]
    fn parameters_parse_into_values_valid_by_construction() {
        let email: Email = serde_json::from_value(serde_json::json!("Alice@Example.com")).unwrap();
        assert_eq!(&*email, "alice@example.com");
        let bad = serde_json::from_value::<Email>(serde_json::json!("alice")).unwrap_err();
        assert_eq!(bad.to_string(), "Value must be a valid email address");
        let factor: ChallengeFactor = serde_json::from_value(serde_json::json!("recoverycode")).unwrap();
        assert_eq!(factor.0, Factor::RecoveryCode);
        assert!(serde_json::from_value::<Id>(serde_json::json!("_x")).is_err());
    }

    #[test]
    fn redirect_urls_are_http_and_allowed() {
        let hosts = vec!["example.com".to_string()];
        assert!(parse_redirect_url("https://example.com/verify", &hosts).is_ok());
        assert!(parse_redirect_url("https://evil.test/verify", &hosts).is_err());
        assert!(parse_redirect_url("javascript:alert(1)", &[]).is_err());
        assert!(parse_redirect_url("not a url", &[]).is_err());
        assert!(parse_redirect_url("http://anything.test/x", &["*".to_string()]).is_ok());
        assert!(parse_redirect_url("http://anything.test/x", &[]).is_err(), "none configured, none allowed");
    }
}
