//! Keys derived from the server secret, keyed hashes, encryption and randomness.

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use base64::engine::general_purpose::{STANDARD_NO_PAD as B64, URL_SAFE_NO_PAD as B64_URL};
use base64::Engine;
use hmac::{Hmac, Mac};
use rand::RngCore;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

type HmacSha256 = Hmac<Sha256>;

/// The id of the server key that values without a key id were made under: the one key
/// configured before keys had ids (`MFA_SECRET_KEY`, or the data folder's `secret.key`).
pub const FIRST_KEY_ID: &str = "k0";

/// The bytes of the HMAC a code hash keeps: 128 bits, ample for codes that carry at most 64
/// (recovery codes) or 20 (6 digits).
const TAG_BYTES: usize = 16;

/// The two keys derived from one server secret.
#[derive(Clone)]
struct Derived {
    code_mac: [u8; 32],
    totp_enc: [u8; 32],
}

impl Derived {
    /// Independent keys (HKDF-SHA256), so that one secret serves both purposes.
    fn from(server_secret: &[u8]) -> Derived {
        let hk = hkdf::Hkdf::<Sha256>::new(Some(b"mfa-core/v1"), server_secret);
        let mut code_mac = [0u8; 32];
        let mut totp_enc = [0u8; 32];
        // 32-byte outputs are always within HKDF's limit.
        let _ = hk.expand(b"code-mac", &mut code_mac);
        let _ = hk.expand(b"totp-enc", &mut totp_enc);
        Derived { code_mac, totp_enc }
    }

    fn mac(&self, context: &str, code: &str) -> [u8; 32] {
        let mut mac = <HmacSha256 as Mac>::new_from_slice(&self.code_mac).expect("HMAC accepts any key length"); // ok: invariant
        mac.update(context.as_bytes());
        mac.update(&[0]);
        mac.update(code.as_bytes());
        mac.finalize().into_bytes().into()
    }
}

/// The server keys, newest (active) first. Every value made under one records the key's id
/// (`<id>:<value>`), so that a rotation keeps older values working: new values use the
/// active key, older ones are checked or decrypted under the key they name until they are
/// made again (re-sealed on use, replaced), and then the old key can be retired.
#[derive(Clone)]
pub struct Keys {
    ring: Vec<(String, Derived)>,
}

impl Keys {
    /// One server key, the first one ([`FIRST_KEY_ID`]).
    pub fn derive(server_secret: &[u8]) -> Self {
        Keys::ring(&[(FIRST_KEY_ID.to_string(), server_secret.to_vec())])
    }

    /// Server keys by id, the active one first; without any, the first key of an empty
    /// secret, which configuration never gives (it refuses an empty ring and short secrets).
    pub fn ring(keys: &[(String, Vec<u8>)]) -> Self {
        let mut ring: Vec<(String, Derived)> =
            keys.iter().map(|(id, secret)| (id.clone(), Derived::from(secret))).collect();
        if ring.is_empty() {
            ring.push((FIRST_KEY_ID.to_string(), Derived::from(b"")));
        }
        Keys { ring }
    }

    pub fn active_id(&self) -> &str {
        self.ring.first().map_or(FIRST_KEY_ID, |(id, _)| id.as_str())
    }

    fn active(&self) -> &Derived {
        &self.ring[0].1
    }

    fn by_id(&self, id: &str) -> Option<&Derived> {
        self.ring.iter().find(|(k, _)| k == id).map(|(_, d)| d)
    }

    /// The id of the key a stored hash or sealed value was made under, and the value itself.
    pub fn split(stored: &str) -> (&str, &str) {
        match stored.split_once(':') {
            Some((id, value)) => (id, value),
            None => (FIRST_KEY_ID, stored),
        }
    }

    /// Whether the key a stored value names is configured.
    pub fn knows(&self, stored: &str) -> bool {
        self.by_id(Keys::split(stored).0).is_some()
    }

    /// Whether a stored hash or sealed value was made under the active key.
    pub fn is_current(&self, stored: &str) -> bool {
        Keys::split(stored).0 == self.active_id()
    }

    /// HMAC-SHA256 of a one-time or recovery code under the active key, bound to its
    /// context (user, challenge, purpose) so a hash is useless anywhere else: its first
    /// 128 bits, base64url without padding (22 characters).
    pub fn code_hash(&self, context: &str, code: &str) -> String {
        format!("{}:{}", self.active_id(), B64_URL.encode(&self.active().mac(context, code)[..TAG_BYTES]))
    }

    /// Whether `code` is the one `stored` (a [`Keys::code_hash`], under whichever key it
    /// names) was made of; constant time. The full HMAC in 64 hex digits, as hashes were
    /// first stored, still matches. A hash under a retired key, or of any other shape,
    /// matches nothing.
    pub fn code_matches(&self, context: &str, code: &str, stored: &str) -> bool {
        let (id, hash) = Keys::split(stored);
        let Some(key) = self.by_id(id) else { return false };
        let mac = key.mac(context, code);
        // The expected value in the stored one's form: its length tells the two apart, and
        // only the exact encoding (alphabet, case, unused trailing bits) compares equal.
        let expected = match hash.len() {
            22 => B64_URL.encode(&mac[..TAG_BYTES]),
            64 => hex::encode(mac),
            _ => return false,
        };
        constant_time_eq(&expected, hash)
    }

    /// A keyed digest of `value` that names no key, in hex: the same for as long as the
    /// first key is configured (stand-ins that must not change from one request to the next).
    pub fn digest(&self, context: &str, value: &str) -> String {
        hex::encode(self.by_id(FIRST_KEY_ID).unwrap_or(self.active()).mac(context, value))
    }

    /// AES-256-GCM under the active key with a random nonce; the user id is authenticated
    /// data, so a ciphertext copied to another user does not decrypt.
    pub fn encrypt(&self, plaintext: &[u8], aad: &str) -> String {
        let cipher = Aes256Gcm::new((&self.active().totp_enc).into());
        let mut nonce = [0u8; 12];
        rand::rng().fill_bytes(&mut nonce);
        let sealed = cipher
            .encrypt(Nonce::from_slice(&nonce), Payload { msg: plaintext, aad: aad.as_bytes() })
            .expect("AES-GCM encryption of a short secret cannot fail"); // ok: invariant
        let mut out = nonce.to_vec();
        out.extend_from_slice(&sealed);
        format!("{}:{}", self.active_id(), B64.encode(out))
    }

    /// The plaintext of a sealed value, under the key it names; `None` when that key is
    /// retired or the value was altered.
    pub fn decrypt(&self, sealed: &str, aad: &str) -> Option<Vec<u8>> {
        let (id, sealed) = Keys::split(sealed);
        let key = self.by_id(id)?;
        let bytes = B64.decode(sealed).ok()?;
        if bytes.len() < 12 {
            return None;
        }
        let (nonce, body) = bytes.split_at(12);
        Aes256Gcm::new((&key.totp_enc).into())
            .decrypt(Nonce::from_slice(nonce), Payload { msg: body, aad: aad.as_bytes() })
            .ok()
    }
}

/// SHA-256 hex of a high-entropy secret (session and verification secrets).
pub fn sha256_hex(secret: &str) -> String {
    hex::encode(Sha256::digest(secret.as_bytes()))
}

pub fn constant_time_eq(a: &str, b: &str) -> bool {
    a.as_bytes().ct_eq(b.as_bytes()).into()
}

pub fn random_bytes<const N: usize>() -> [u8; N] {
    let mut out = [0u8; N];
    rand::rng().fill_bytes(&mut out);
    out
}

/// 256-bit secret as 64 hex characters.
pub fn random_secret() -> String {
    hex::encode(random_bytes::<32>())
}

/// Appwrite-style id: 20 lowercase hex characters.
pub fn new_id() -> String {
    hex::encode(random_bytes::<10>())
}

/// A uniformly random numeric code of `digits` digits (leading zeros kept).
pub fn random_digits(digits: u32) -> String {
    let bound = 10u32.pow(digits);
    // Rejection sampling avoids modulo bias.
    let zone = u32::MAX - (u32::MAX % bound);
    loop {
        let n = rand::rng().next_u32();
        if n < zone {
            return format!("{:0width$}", n % bound, width = digits as usize);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn code_hash_depends_on_key_context_and_code() {
        let a = Keys::derive(b"one");
        let b = Keys::derive(b"two");
        let h = a.code_hash("user1|chal1", "123456");
        assert_eq!(h, a.code_hash("user1|chal1", "123456"));
        assert_ne!(h, a.code_hash("user1|chal2", "123456"));
        assert_ne!(h, a.code_hash("user1|chal1", "123457"));
        assert_ne!(h, b.code_hash("user1|chal1", "123456"));
        assert!(!h.contains("123456"));
        assert!(a.code_matches("user1|chal1", "123456", &h));
        assert!(!a.code_matches("user1|chal1", "123457", &h));
        assert!(!a.code_matches("user1|chal2", "123456", &h));
        assert!(!b.code_matches("user1|chal1", "123456", &h));
    }

    #[test]
    fn a_code_hash_is_the_key_id_and_128_bits_in_base64url() {
        let keys = Keys::derive(b"one");
        let h = keys.code_hash("recovery|u", "0123456789abcdef");
        let (id, tag) = h.split_once(':').unwrap();
        assert_eq!(id, FIRST_KEY_ID);
        assert_eq!(tag.len(), 22);
        assert!(tag.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'), "{tag}");
        assert_eq!(B64_URL.decode(tag).unwrap(), &keys.active().mac("recovery|u", "0123456789abcdef")[..16]);
    }

    #[test]
    fn a_hash_stored_as_the_full_hmac_in_hex_still_matches() {
        let a = Keys::derive(b"one");
        let old = format!("k0:{}", hex::encode(a.active().mac("recovery|u", "code")));
        assert_eq!(old.len(), "k0:".len() + 64);
        assert!(a.code_matches("recovery|u", "code", &old));
        assert!(a.code_matches("recovery|u", "code", Keys::split(&old).1), "without a key id: the first key");
        assert!(!a.code_matches("recovery|u", "cod3", &old));
        assert!(!a.code_matches("recovery|v", "code", &old));
        assert!(!Keys::derive(b"two").code_matches("recovery|u", "code", &old));
        assert!(!a.code_matches("recovery|u", "code", &old.to_uppercase().replacen("K0", "k0", 1)));
    }

    #[test]
    fn a_malformed_stored_hash_matches_nothing() {
        let keys = Keys::derive(b"one");
        let good = keys.code_hash("c", "123456");
        let tag = Keys::split(&good).1;
        let full = hex::encode(keys.active().mac("c", "123456"));
        let malformed = [
            String::new(),
            "k0:".to_string(),
            ":".to_string(),
            format!("k0:{}", &tag[..21]),
            format!("k0:{tag}="),
            format!("k0:{tag}{tag}"),
            format!("k0:{}", &full[..63]),
            format!("k0:{full}0"),
            format!("k0:{}", &full[..32]),
            format!("k0:{}", tag.replace(|c: char| c.is_ascii_alphanumeric(), "+")),
            format!("k0:{}é", &tag[..20]),
            format!("k9:{tag}"),
        ];
        for stored in &malformed {
            assert!(!keys.code_matches("c", "123456", stored), "{stored:?}");
        }
    }

    fn ring(ids: &[&str]) -> Keys {
        Keys::ring(&ids.iter().map(|id| (id.to_string(), format!("secret of {id}").into_bytes())).collect::<Vec<_>>())
    }

    #[test]
    fn values_of_an_older_key_keep_working_until_it_is_retired() {
        let before = ring(&["k0"]);
        let hash = before.code_hash("recovery|u", "code");
        let sealed = before.encrypt(b"totp secret", "u");
        // Stored before keys had ids: no prefix means the first key.
        let (_, bare_hash) = Keys::split(&hash);
        let bare_sealed = Keys::split(&sealed).1.to_string();

        let rotated = ring(&["k1", "k0"]);
        assert_eq!(rotated.active_id(), "k1");
        assert!(rotated.code_matches("recovery|u", "code", &hash));
        assert!(rotated.code_matches("recovery|u", "code", bare_hash));
        assert_eq!(rotated.decrypt(&sealed, "u").as_deref(), Some(&b"totp secret"[..]));
        assert_eq!(rotated.decrypt(&bare_sealed, "u").as_deref(), Some(&b"totp secret"[..]));
        assert!(!rotated.is_current(&sealed) && !rotated.is_current(bare_hash));
        let resealed = rotated.encrypt(b"totp secret", "u");
        assert!(resealed.starts_with("k1:") && rotated.is_current(&resealed));

        let retired = ring(&["k1"]);
        assert!(!retired.code_matches("recovery|u", "code", &hash), "a retired key's hash matches nothing");
        assert_eq!(retired.decrypt(&sealed, "u"), None);
        assert_eq!(retired.decrypt(&resealed, "u").as_deref(), Some(&b"totp secret"[..]));
        assert_eq!(before.digest("x", "y"), rotated.digest("x", "y"), "a stand-in stays the same");
    }

    #[test]
    fn encryption_round_trips_and_is_bound_to_its_user() {
        let keys = Keys::derive(b"secret");
        let sealed = keys.encrypt(b"JBSWY3DPEHPK3PXP", "user-a");
        assert!(!sealed.contains("JBSWY3DPEHPK3PXP"));
        assert_eq!(keys.decrypt(&sealed, "user-a").as_deref(), Some(&b"JBSWY3DPEHPK3PXP"[..]));
        assert_eq!(keys.decrypt(&sealed, "user-b"), None);
        assert_eq!(Keys::derive(b"other").decrypt(&sealed, "user-a"), None);
        assert_ne!(sealed, keys.encrypt(b"JBSWY3DPEHPK3PXP", "user-a"), "nonce is random");
    }

    #[test]
    fn random_values_have_their_shape() {
        assert_eq!(random_secret().len(), 64);
        assert_eq!(new_id().len(), 20);
        for _ in 0..200 {
            let code = random_digits(6);
            assert_eq!(code.len(), 6);
            assert!(code.bytes().all(|b| b.is_ascii_digit()));
        }
    }

    #[test]
    fn sha256_matches_known_vector() {
        assert_eq!(sha256_hex("abc"), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
    }
}
