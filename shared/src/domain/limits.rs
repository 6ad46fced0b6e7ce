//! Rate limits: fixed windows counted per scope and key.

use crate::clock::{Millis, HOUR, MINUTE};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limit {
    pub scope: &'static str,
    pub max: u32,
    pub window: Millis,
}

/// Appwrite: 10 accounts an hour per IP.
pub const ACCOUNT_CREATE_PER_IP: Limit = Limit { scope: "account-create-ip", max: 10, window: HOUR };
/// Appwrite: 10 logins an hour per email; ours resets on success.
pub const LOGIN_PER_EMAIL: Limit = Limit { scope: "login-email", max: 10, window: HOUR };
pub const LOGIN_PER_IP: Limit = Limit { scope: "login-ip", max: 60, window: 10 * MINUTE };
pub const EMAIL_VERIFICATION_PER_USER: Limit = Limit { scope: "verify-email-user", max: 10, window: HOUR };
pub const PHONE_VERIFICATION_PER_USER: Limit = Limit { scope: "verify-phone-user", max: 10, window: HOUR };
pub const PHONE_VERIFICATION_PER_IP: Limit = Limit { scope: "verify-phone-ip", max: 10, window: HOUR };
pub const CHALLENGE_PER_USER: Limit = Limit { scope: "challenge-user", max: 10, window: HOUR };
/// SMS to one number, whoever asks: keeps SMS pumping to a number bounded.
pub const SMS_PER_PHONE: Limit = Limit { scope: "sms-phone", max: 10, window: HOUR };
/// Consecutive wrong codes per user across challenges and authenticator verification; a
/// success clears it. NIST SP 800-63B allows at most 100.
pub const CODE_FAILURES_PER_USER: Limit = Limit { scope: "code-failures-user", max: 10, window: HOUR };
/// Consecutive wrong passwords given, while signed in, to confirm an email or phone change;
/// a success clears it.
pub const PASSWORD_CHECKS_PER_USER: Limit = Limit { scope: "password-checks-user", max: 10, window: HOUR };
/// Code checks from one address, whoever the user: bounds guessing spread over many users.
pub const CODE_ATTEMPTS_PER_IP: Limit = Limit { scope: "code-attempts-ip", max: 60, window: 10 * MINUTE };

impl Limit {
    pub fn window_start(&self, now: Millis) -> Millis {
        now - now.rem_euclid(self.window)
    }

    /// The store key of this limit's counter for `key` in the window holding `now`.
    pub fn counter_key(&self, key: &str, now: Millis) -> String {
        format!("{}#{}#{}", self.scope, key, self.window_start(now))
    }

    /// One more request against this limit for `key`.
    pub fn hit(&self, key: &str, now: Millis) -> Count {
        self.count(key, now, false)
    }

    /// A success that starts a consecutive-failure count over; refused, like a hit, once
    /// the count has reached the limit.
    pub fn reset(&self, key: &str, now: Millis) -> Count {
        self.count(key, now, true)
    }

    fn count(&self, key: &str, now: Millis, reset: bool) -> Count {
        Count {
            counter: self.counter_key(key, now),
            max: self.max,
            expire: self.window_start(now) + self.window,
            reset,
        }
    }

    pub fn verdict(&self, count: u32, now: Millis) -> RateVerdict {
        RateVerdict {
            limit: self.max,
            remaining: self.max.saturating_sub(count),
            reset_at: self.window_start(now) + self.window,
            exceeded: count > self.max,
        }
    }
}

/// One request counted on a counter, checked and stored in the same atomic write as the
/// request's effect: of parallel requests, no more than `max` get through in a window,
/// and a request refused by its limit changes nothing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Count {
    /// The counter's store key, naming its window.
    pub counter: String,
    /// Applies only while the counter holds fewer than this.
    pub max: u32,
    /// When the window ends.
    pub expire: Millis,
    /// Deletes the counter instead of adding one (a success ends a run of failures).
    pub reset: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateVerdict {
    pub limit: u32,
    pub remaining: u32,
    /// When the window ends (epoch millis).
    pub reset_at: Millis,
    pub exceeded: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_eleventh_hit_in_a_window_is_refused() {
        let l = CHALLENGE_PER_USER;
        assert!(!l.verdict(10, 0).exceeded);
        assert_eq!(l.verdict(10, 0).remaining, 0);
        assert!(l.verdict(11, 0).exceeded);
    }

    #[test]
    fn windows_are_fixed_and_keys_change_with_them() {
        let l = CHALLENGE_PER_USER;
        let now = 5 * HOUR + 123;
        assert_eq!(l.window_start(now), 5 * HOUR);
        assert_eq!(l.verdict(1, now).reset_at, 6 * HOUR);
        assert_ne!(l.counter_key("u", now), l.counter_key("u", now + HOUR));
        assert_eq!(l.counter_key("u", now), l.counter_key("u", now + 1000));
    }
}
