//! Recovery codes: 64-bit random codes, shown once, stored as keyed hashes, used once each.

use super::crypto::{random_bytes, Keys};

pub const COUNT: usize = 8;

/// A fresh set: 16 hex digits each, shown as `xxxxxxxx-xxxxxxxx`.
pub fn generate() -> Vec<String> {
    (0..COUNT)
        .map(|_| {
            let hex = hex::encode(random_bytes::<8>());
            format!("{}-{}", &hex[..8], &hex[8..])
        })
        .collect()
}

/// Users may type codes with or without separators, in either case.
pub fn normalize(input: &str) -> String {
    input.chars().filter(char::is_ascii_alphanumeric).map(|c| c.to_ascii_lowercase()).collect()
}

pub fn hash(keys: &Keys, user_id: &str, code: &str) -> String {
    keys.code_hash(&context(user_id), &normalize(code))
}

/// Whether a typed code is the one `stored` (a [`hash`] under any configured key) was made of.
pub fn matches(keys: &Keys, user_id: &str, code: &str, stored: &str) -> bool {
    keys.code_matches(&context(user_id), &normalize(code), stored)
}

fn context(user_id: &str) -> String {
    format!("recovery|{user_id}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_carry_64_bits_and_are_distinct() {
        let codes = generate();
        assert_eq!(codes.len(), COUNT);
        for code in &codes {
            assert_eq!(normalize(code).len(), 16);
        }
        let unique: std::collections::HashSet<_> = codes.iter().collect();
        assert_eq!(unique.len(), COUNT);
    }

    #[test]
    fn hashing_ignores_case_and_separators_but_not_user() {
        let keys = Keys::derive(b"k");
        let h = hash(&keys, "u", "abcd1234-ef567890");
        assert_eq!(h, hash(&keys, "u", "ABCD1234EF567890"));
        assert_eq!(h, hash(&keys, "u", " abcd 1234 ef56 7890 "));
        assert_ne!(h, hash(&keys, "v", "abcd1234-ef567890"));
        assert_ne!(h, hash(&keys, "u", "abcd1234-ef567891"));
    }
}
