//! Keys derived from the server secret, keyed hashes, encryption and randomness.

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use base64::engine::general_purpose::STANDARD_NO_PAD as B64;
use base64::Engine;
use hmac::{Hmac, Mac};
use rand::RngCore;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

type HmacSha256 = Hmac<Sha256>;

/// The two keys every instance derives from the configured server secret.
#[derive(Clone)]
pub struct Keys {
    code_mac: [u8; 32],
    totp_enc: [u8; 32],
}

impl Keys {
    /// Derives independent keys (HKDF-SHA256) so that one secret serves both purposes.
    pub fn derive(server_secret: &[u8]) -> Self {
        let hk = hkdf::Hkdf::<Sha256>::new(Some(b"mfa-core/v1"), server_secret);
        let mut code_mac = [0u8; 32];
        let mut totp_enc = [0u8; 32];
        // 32-byte outputs are always within HKDF's limit.
        let _ = hk.expand(b"code-mac", &mut code_mac);
        let _ = hk.expand(b"totp-enc", &mut totp_enc);
        Self { code_mac, totp_enc }
    }

    /// HMAC-SHA256 of a one-time or recovery code, bound to its context
    /// (user, challenge, purpose) so a hash is useless anywhere else.
    pub fn code_hash(&self, context: &str, code: &str) -> String {
        let mut mac = <HmacSha256 as Mac>::new_from_slice(&self.code_mac).expect("HMAC accepts any key length"); // ok: invariant
        mac.update(context.as_bytes());
        mac.update(&[0]);
        mac.update(code.as_bytes());
        hex::encode(mac.finalize().into_bytes())
    }

    /// AES-256-GCM with a random nonce; the user id is authenticated data,
    /// so a ciphertext copied to another user does not decrypt.
    pub fn encrypt(&self, plaintext: &[u8], aad: &str) -> String {
        let cipher = Aes256Gcm::new((&self.totp_enc).into());
        let mut nonce = [0u8; 12];
        rand::rng().fill_bytes(&mut nonce);
        let sealed = cipher
            .encrypt(Nonce::from_slice(&nonce), Payload { msg: plaintext, aad: aad.as_bytes() })
            .expect("AES-GCM encryption of a short secret cannot fail"); // ok: invariant
        let mut out = nonce.to_vec();
        out.extend_from_slice(&sealed);
        B64.encode(out)
    }

    pub fn decrypt(&self, sealed: &str, aad: &str) -> Option<Vec<u8>> {
        let bytes = B64.decode(sealed).ok()?;
        if bytes.len() < 12 {
            return None;
        }
        let (nonce, body) = bytes.split_at(12);
        Aes256Gcm::new((&self.totp_enc).into())
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
        assert_eq!(h.len(), 64);
        assert!(!h.contains("123456"));
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
