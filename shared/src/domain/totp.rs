//! TOTP authenticators: SHA1, 6 digits, 30 s steps, one step of skew either way,
//! and a step once accepted is never accepted again.

use totp_rs::{Algorithm, Builder, Totp};

use super::crypto::constant_time_eq;
use crate::clock::Millis;

pub const DIGITS: u8 = 6;
pub const STEP_SECONDS: u64 = 30;
/// 160-bit secrets, as RFC 4226 recommends.
pub const SECRET_BYTES: usize = 20;

fn totp(secret: &[u8], digits: u8, step: u64) -> Option<Totp> {
    Builder::new()
        .with_algorithm(Algorithm::SHA1)
        .with_digits(digits)
        .with_step_duration(step)
        .with_secret(secret.to_vec())
        .build()
        .ok()
}

pub fn new_secret() -> Vec<u8> {
    super::crypto::random_bytes::<SECRET_BYTES>().to_vec()
}

pub fn base32(secret: &[u8]) -> String {
    totp_rs::Secret::from(secret.to_vec()).to_base32()
}

pub fn from_base32(encoded: &str) -> Option<Vec<u8>> {
    totp_rs::Secret::try_from_base32(encoded).ok().map(|s| s.as_ref().to_vec())
}

/// The time step that `now` falls in.
pub fn step_at(now: Millis) -> u64 {
    (now.max(0) as u64 / 1000) / STEP_SECONDS
}

/// The code an authenticator shows at `now` (used by tests and tools, never sent).
pub fn code_at(secret: &[u8], now: Millis) -> Option<String> {
    Some(totp(secret, DIGITS, STEP_SECONDS)?.generate(now.max(0) as u64 / 1000).to_string())
}

/// Returns the step `otp` belongs to if it matches step -1, 0 or +1 around `now` and is
/// newer than `last_step` (the newest step ever accepted for this authenticator).
pub fn accept(secret: &[u8], otp: &str, now: Millis, last_step: Option<u64>) -> Option<u64> {
    let totp = totp(secret, DIGITS, STEP_SECONDS)?;
    let current = step_at(now);
    let mut matched = None;
    // Check every candidate so the time taken does not depend on which step matched.
    for step in current.saturating_sub(1)..=current + 1 {
        let code = totp.generate(step * STEP_SECONDS).to_string();
        if constant_time_eq(&code, otp) && last_step.is_none_or(|last| step > last) {
            matched = Some(step);
        }
    }
    matched
}

/// `otpauth://totp/<issuer:account>?issuer=<issuer>&secret=<BASE32>`, as Appwrite builds it.
pub fn uri(issuer: &str, account: &str, secret: &[u8]) -> String {
    let label = format!("{issuer}:{account}");
    format!("otpauth://totp/{}?issuer={}&secret={}", urlencode(&label), urlencode(issuer), base32(secret))
}

fn urlencode(value: &str) -> String {
    url::form_urlencoded::byte_serialize(value.as_bytes()).collect::<String>().replace('+', "%20")
}

#[cfg(test)]
mod tests {
    use super::*;

    const RFC_SECRET: &[u8] = b"12345678901234567890";

    #[test]
    fn rfc4226_hotp_vectors() {
        // HOTP(counter) = TOTP with a one-second step at time = counter.
        let expected =
            ["755224", "287082", "359152", "969429", "338314", "254676", "287922", "162583", "399871", "520489"];
        let hotp = totp(RFC_SECRET, 6, 1).unwrap();
        for (counter, code) in expected.iter().enumerate() {
            assert_eq!(hotp.generate(counter as u64).to_string(), *code, "counter {counter}");
        }
    }

    #[test]
    fn rfc6238_sha1_vectors() {
        let vectors = [
            (59u64, "94287082"),
            (1_111_111_109, "07081804"),
            (1_111_111_111, "14050471"),
            (1_234_567_890, "89005924"),
            (2_000_000_000, "69279037"),
            (20_000_000_000, "65353130"),
        ];
        let t = totp(RFC_SECRET, 8, 30).unwrap();
        for (time, code) in vectors {
            assert_eq!(t.generate(time).to_string(), code, "time {time}");
        }
    }

    #[test]
    fn accepts_one_step_of_skew_either_way_but_not_two() {
        let secret = new_secret();
        let now = 1_700_000_000_000;
        let step = step_at(now);
        for offset in [-1i64, 0, 1] {
            let at = now + offset * 30_000;
            let code = code_at(&secret, at).unwrap();
            assert_eq!(accept(&secret, &code, now, None), Some((step as i64 + offset) as u64));
        }
        for offset in [-2i64, 2] {
            let code = code_at(&secret, now + offset * 30_000).unwrap();
            if code != code_at(&secret, now).unwrap() {
                assert_eq!(accept(&secret, &code, now, None), None, "offset {offset}");
            }
        }
    }

    #[test]
    fn a_step_is_never_accepted_twice_nor_an_older_one() {
        let secret = new_secret();
        let now = 1_700_000_000_000;
        let code = code_at(&secret, now).unwrap();
        let step = accept(&secret, &code, now, None).unwrap();
        assert_eq!(accept(&secret, &code, now, Some(step)), None);
        let older = code_at(&secret, now - 30_000).unwrap();
        assert_eq!(accept(&secret, &older, now, Some(step)), None);
        let newer = code_at(&secret, now + 30_000).unwrap();
        assert_eq!(accept(&secret, &newer, now + 30_000, Some(step)), Some(step + 1));
    }

    #[test]
    fn wrong_or_malformed_codes_fail() {
        let secret = new_secret();
        let now = 1_700_000_000_000;
        let good = code_at(&secret, now).unwrap();
        let wrong = format!("{:06}", (good.parse::<u32>().unwrap() + 1) % 1_000_000);
        assert_eq!(accept(&secret, &wrong, now, None), None);
        assert_eq!(accept(&secret, "", now, None), None);
        assert_eq!(accept(&secret, &format!("{good}0"), now, None), None);
    }

    #[test]
    fn base32_round_trips() {
        let secret = new_secret();
        assert_eq!(from_base32(&base32(&secret)), Some(secret));
        assert_eq!(from_base32("not base32!"), None);
    }

    #[test]
    fn uri_matches_appwrite_format() {
        let uri = uri("My App", "a@b.co", RFC_SECRET);
        assert_eq!(uri, "otpauth://totp/My%20App%3Aa%40b.co?issuer=My%20App&secret=GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ");
    }
}
