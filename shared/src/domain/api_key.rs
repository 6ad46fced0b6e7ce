//! API keys for the server API (support staff, back ends): named, scoped like Appwrite's,
//! stored as a hash of their secret, revoked by deletion.

use serde::{Deserialize, Serialize};

use crate::clock::Millis;

/// What a key may do, by Appwrite's scope names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Scope {
    #[serde(rename = "users.read")]
    UsersRead,
    #[serde(rename = "users.write")]
    UsersWrite,
}

impl Scope {
    pub const ALL: [Scope; 2] = [Scope::UsersRead, Scope::UsersWrite];

    pub fn as_str(self) -> &'static str {
        match self {
            Scope::UsersRead => "users.read",
            Scope::UsersWrite => "users.write",
        }
    }

    pub fn parse(raw: &str) -> Option<Scope> {
        Scope::ALL.into_iter().find(|s| s.as_str() == raw.trim())
    }

    /// A comma list of scopes, e.g. `users.read,users.write`.
    pub fn parse_list(raw: &str) -> Result<Vec<Scope>, String> {
        let mut scopes = Vec::new();
        for part in raw.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let scope = Scope::parse(part).ok_or_else(|| {
                let known: Vec<&str> = Scope::ALL.iter().map(|s| s.as_str()).collect();
                format!("unknown scope {part:?}; known: {}", known.join(", "))
            })?;
            if !scopes.contains(&scope) {
                scopes.push(scope);
            }
        }
        if scopes.is_empty() {
            return Err("at least one scope is required".into());
        }
        scopes.sort();
        Ok(scopes)
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ApiKey {
    pub id: String,
    pub name: String,
    pub scopes: Vec<Scope>,
    /// SHA-256 of the secret; the secret is shown once, when the key is made.
    pub secret_hash: String,
    pub created_at: Millis,
}

impl ApiKey {
    pub fn allows(&self, scope: Scope) -> bool {
        self.scopes.contains(&scope)
    }
}

/// A new key and its secret: its id (a selector, by which the key is found), an underscore
/// and 256 random bits (checked by hash in constant time).
pub fn new_key(name: &str, scopes: Vec<Scope>, now: Millis) -> (ApiKey, String) {
    let id = super::crypto::new_id();
    let secret = format!("{id}_{}", super::crypto::random_secret());
    let key =
        ApiKey { id, name: name.to_string(), scopes, secret_hash: super::crypto::sha256_hex(&secret), created_at: now };
    (key, secret)
}

/// The key id a secret names, if it has the shape of one.
pub fn id_of_secret(secret: &str) -> Option<&str> {
    let (id, validator) = secret.split_once('_')?;
    (super::values::parse_id(id).is_some() && validator.len() >= 32).then_some(id)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scopes_parse_from_a_comma_list() {
        assert_eq!(
            Scope::parse_list("users.write, users.read,users.read"),
            Ok(vec![Scope::UsersRead, Scope::UsersWrite])
        );
        assert!(Scope::parse_list("users.read,databases.read").unwrap_err().contains("databases.read"));
        assert!(Scope::parse_list(" , ").is_err());
    }

    #[test]
    fn a_secret_names_its_key_and_only_its_hash_is_kept() {
        let (key, secret) = new_key("support", vec![Scope::UsersRead], 5);
        assert_eq!(id_of_secret(&secret), Some(key.id.as_str()));
        assert!(!key.secret_hash.contains(&secret));
        assert_eq!(key.secret_hash, crate::domain::crypto::sha256_hex(&secret));
        assert!(key.allows(Scope::UsersRead) && !key.allows(Scope::UsersWrite));
        for bad in ["", "_", "abc_", "abc_short", "bad id_0123456789abcdef0123456789abcdef"] {
            assert_eq!(id_of_secret(bad), None, "{bad:?}");
        }
    }
}
