//! Argon2id password hashing at OWASP parameters.

use std::cell::RefCell;
use std::sync::OnceLock;

use argon2::password_hash::{Output, ParamsString, PasswordHash, Salt, SaltString};
use argon2::{Algorithm, Argon2, Block, Params, Version};

fn argon2() -> Argon2<'static> {
    // OWASP: m=19 MiB, t=2, p=1.
    let params = Params::new(19 * 1024, 2, 1, None).expect("constant Argon2 parameters are valid"); // ok: constant
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
}

thread_local! {
    /// The memory a hash works in (19 MiB), kept by each thread and reused. Allocated anew
    /// for every hash, the freed copies stayed with the allocator and resident memory grew
    /// with the number of sign-ins.
    static BLOCKS: RefCell<Vec<Block>> = const { RefCell::new(Vec::new()) };
}

/// `password` hashed with `argon2` and `salt`, as a PHC string's parts.
fn hash_with<'a>(
    argon2: &Argon2<'_>,
    password: &str,
    salt: Salt<'a>,
) -> argon2::password_hash::Result<PasswordHash<'a>> {
    let mut salt_bytes = [0u8; 64];
    let salt_bytes = salt.decode_b64(&mut salt_bytes)?;
    let params = argon2.params();
    let output = Output::init_with(params.output_len().unwrap_or(Params::DEFAULT_OUTPUT_LEN), |out| {
        BLOCKS.with_borrow_mut(|blocks| {
            blocks.resize(params.block_count(), Block::default());
            argon2.hash_password_into_with_memory(password.as_bytes(), salt_bytes, out, blocks.as_mut_slice())
        })?;
        Ok(())
    })?;
    Ok(PasswordHash {
        algorithm: Algorithm::Argon2id.ident(),
        version: Some(Version::V0x13.into()),
        params: ParamsString::try_from(params)?,
        salt: Some(salt),
        hash: Some(output),
    })
}

pub fn hash(password: &str) -> String {
    let salt = SaltString::encode_b64(&super::crypto::random_bytes::<16>()).expect("16 bytes is a valid salt length"); // ok: constant
    let hashed = hash_with(&argon2(), password, salt.as_salt());
    hashed.expect("hashing with valid parameters cannot fail").to_string() // ok: invariant
}

/// Whether `password` is the one `stored` (a PHC string of Argon2id) was made from; the
/// hashes are compared in constant time.
pub fn verify(password: &str, stored: &str) -> bool {
    let Ok(parsed) = PasswordHash::new(stored) else { return false };
    let (Some(salt), Some(expected)) = (parsed.salt, parsed.hash) else { return false };
    let Ok(params) = Params::try_from(&parsed) else { return false };
    if parsed.algorithm != Algorithm::Argon2id.ident() || parsed.version != Some(Version::V0x13.into()) {
        return false;
    }
    let argon2 = Argon2::new(Algorithm::Argon2id, Version::V0x13, params);
    hash_with(&argon2, password, salt).is_ok_and(|h| h.hash == Some(expected))
}

/// Spends the same time as a real check when no user matches, so the response time does
/// not tell whether an account exists.
pub fn verify_against_nobody(password: &str) {
    static DUMMY: OnceLock<String> = OnceLock::new();
    let dummy = DUMMY.get_or_init(|| hash("an unguessable placeholder password"));
    let _ = verify(password, dummy);
}

#[cfg(test)]
mod tests {
    use super::*;
    use argon2::password_hash::{PasswordHasher, PasswordVerifier};

    #[test]
    fn hashes_are_argon2id_and_verify() {
        let stored = hash("correct horse");
        assert!(stored.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"));
        assert!(!stored.contains("correct horse"));
        assert!(verify("correct horse", &stored));
        assert!(!verify("wrong horse", &stored));
        assert!(!verify("correct horse", "not a hash"));
        assert_ne!(hash("correct horse"), stored, "a fresh salt each time");
    }

    #[test]
    fn hashes_agree_with_the_reference_implementation_both_ways() {
        let ours = hash("correct horse");
        assert!(argon2().verify_password(b"correct horse", &PasswordHash::new(&ours).unwrap()).is_ok());
        let salt = SaltString::encode_b64(b"sixteen byte salt").unwrap();
        let theirs = argon2().hash_password(b"correct horse", &salt).unwrap().to_string();
        assert!(verify("correct horse", &theirs));
        assert!(!verify("wrong horse", &theirs));
        // Other parameters (an older or newer policy) still verify.
        let weaker = Argon2::new(Algorithm::Argon2id, Version::V0x13, Params::new(8 * 1024, 1, 1, None).unwrap());
        let old = weaker.hash_password(b"correct horse", &salt).unwrap().to_string();
        assert!(verify("correct horse", &old));
        let argon2i = Argon2::new(Algorithm::Argon2i, Version::V0x13, Params::default());
        let other = argon2i.hash_password(b"correct horse", &salt).unwrap().to_string();
        assert!(!verify("correct horse", &other), "only Argon2id is accepted");
    }
}
