//! Rate limits: sliding windows per scope and key, counted in fixed windows and weighted
//! with the window before.

use crate::clock::{Millis, HOUR, MINUTE};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limit {
    pub scope: &'static str,
    pub max: u32,
    pub window: Millis,
}

/// Appwrite: 10 accounts an hour per IP.
pub const ACCOUNT_CREATE_PER_IP: Limit = Limit { scope: "account-create-ip", max: 10, window: HOUR };
/// Appwrite: 10 sign-ins an hour per email, right or wrong.
pub const LOGIN_PER_EMAIL: Limit = Limit { scope: "login-email", max: 10, window: HOUR };
pub const LOGIN_PER_IP: Limit = Limit { scope: "login-ip", max: 60, window: 10 * MINUTE };
pub const EMAIL_VERIFICATION_PER_USER: Limit = Limit { scope: "verify-email-user", max: 10, window: HOUR };
pub const PHONE_VERIFICATION_PER_USER: Limit = Limit { scope: "verify-phone-user", max: 10, window: HOUR };
pub const PHONE_VERIFICATION_PER_IP: Limit = Limit { scope: "verify-phone-ip", max: 10, window: HOUR };
/// Challenges sent by email or SMS, per user.
pub const CHALLENGE_PER_USER: Limit = Limit { scope: "challenge-user", max: 10, window: HOUR };
/// Challenges of every factor, per session (keyed `<userId>/<sessionId>`): a sign-in
/// creates one or two.
pub const CHALLENGE_PER_SESSION: Limit = Limit { scope: "challenge-session", max: 10, window: HOUR };
/// SMS to one number, whoever asks: keeps SMS pumping to a number bounded.
pub const SMS_PER_PHONE: Limit = Limit { scope: "sms-phone", max: 10, window: HOUR };
/// Consecutive wrong codes per user across challenges and authenticator verification; a
/// success clears it. NIST SP 800-63B allows at most 100.
pub const CODE_FAILURES_PER_USER: Limit = Limit { scope: "code-failures-user", max: 10, window: HOUR };
/// Passwords given, while signed in, to confirm an email or phone change, right or wrong:
/// each costs a hash.
pub const PASSWORD_CHECKS_PER_USER: Limit = Limit { scope: "password-checks-user", max: 10, window: HOUR };
/// Email and phone changes from one address, whoever the user: a taken address answers
/// 409, so each change also tells whether an address has an account.
pub const ADDRESS_CHANGES_PER_IP: Limit = Limit { scope: "address-changes-ip", max: 20, window: HOUR };
/// Verification secrets tried from one address, whoever the user.
pub const CODE_ATTEMPTS_PER_IP: Limit = Limit { scope: "code-attempts-ip", max: 60, window: 10 * MINUTE };
/// Wrong codes (challenges, new authenticators and keys) from one address, whoever the
/// user: bounds guessing spread over many users. Each is counted in the write that
/// records it, and the count is checked as read: what a burst of parallel guesses can try
/// past it is bounded by the limits per challenge and per user, which hold in the write.
pub const CODE_FAILURES_PER_IP: Limit = Limit { scope: "code-failures-ip", max: 60, window: 10 * MINUTE };
/// QR codes rendered for one address: each costs up to tens of milliseconds of CPU and
/// needs no session.
/// Password reset emails: per address asked for (whether or not it has an account) and per
/// client address.
pub const RECOVERY_PER_EMAIL: Limit = Limit { scope: "recovery-email", max: 5, window: HOUR };
pub const RECOVERY_PER_IP: Limit = Limit { scope: "recovery-ip", max: 20, window: HOUR };
/// Password resets (each runs Argon2) per client address.
pub const RESET_PER_IP: Limit = Limit { scope: "reset-ip", max: 20, window: HOUR };
pub const QR_PER_IP: Limit = Limit { scope: "qr-ip", max: 60, window: 10 * MINUTE };
/// Wrong API keys (`X-Appwrite-Key`) from one address: each is counted before its answer
/// is given, so guessing key secrets stops here, whatever the key.
pub const WRONG_KEYS_PER_IP: Limit = Limit { scope: "wrong-key-ip", max: 10, window: HOUR };

impl Limit {
    pub fn window_start(&self, now: Millis) -> Millis {
        now - now.rem_euclid(self.window)
    }

    /// The store key of this limit's counter for `key` in the window holding `now`.
    pub fn counter_key(&self, key: &str, now: Millis) -> String {
        format!("{}#{}#{}", self.scope, key, self.window_start(now))
    }

    /// The counter of the window before the one holding `now`.
    pub fn previous_key(&self, key: &str, now: Millis) -> String {
        self.counter_key(key, now - self.window)
    }

    /// The part of the previous window's count that still falls in the sliding window
    /// ending at `now`, taking that window's requests as spread evenly over it (rounded
    /// up). Counting it makes the limit hold over any `window`-long span, so a burst at
    /// the end of one window cannot be followed by a full burst at the start of the next.
    pub fn carried(&self, previous: u32, now: Millis) -> u32 {
        let left = (self.window_start(now) + self.window - now) as u128;
        (previous as u128 * left).div_ceil(self.window as u128) as u32
    }

    /// One more request against this limit for `key`, given the previous window's count.
    pub fn hit(&self, key: &str, now: Millis, previous: u32) -> Count {
        self.count(key, now, previous, false)
    }

    /// A success that starts a consecutive-failure count over (in both windows); refused,
    /// like a hit, once the limit is reached.
    pub fn reset(&self, key: &str, now: Millis, previous: u32) -> Count {
        self.count(key, now, previous, true)
    }

    fn count(&self, key: &str, now: Millis, previous: u32, reset: bool) -> Count {
        Count {
            counter: self.counter_key(key, now),
            max: self.max.saturating_sub(self.carried(previous, now)),
            // The counter is read as the previous window during the next one.
            expire: self.window_start(now) + 2 * self.window,
            reset,
            // A closed window read as empty stays empty: nothing to delete.
            previous: (reset && previous > 0).then(|| self.previous_key(key, now)),
            seen: 0,
        }
    }

    /// The verdict on the `count`th request of the current window, given the previous
    /// window's count.
    pub fn verdict(&self, count: u32, previous: u32, now: Millis) -> RateVerdict {
        let used = count.saturating_add(self.carried(previous, now));
        RateVerdict {
            limit: self.max,
            remaining: self.max.saturating_sub(used),
            reset_at: self.window_start(now) + self.window,
            exceeded: used > self.max,
        }
    }
}

/// One request counted on a counter, checked and stored in the same atomic write as the
/// request's effect: of parallel requests, no more than `max` get through, and a request
/// refused by its limit changes nothing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Count {
    /// The counter's store key, naming its window.
    pub counter: String,
    /// Applies only while the counter holds fewer than this: the limit less what the
    /// previous window carries into the sliding one.
    pub max: u32,
    /// When the counter is no longer needed (the end of the window after its own).
    pub expire: Millis,
    /// Deletes the counter instead of adding one (a success ends a run of failures).
    pub reset: bool,
    /// With `reset`, the previous window's counter, deleted too.
    pub previous: Option<String>,
    /// The current window's count as the request read it (a store may write a count
    /// differently into a window that was empty).
    pub seen: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateVerdict {
    pub limit: u32,
    pub remaining: u32,
    /// When the current window ends (epoch millis).
    pub reset_at: Millis,
    pub exceeded: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_eleventh_hit_in_a_window_is_refused() {
        let l = CHALLENGE_PER_USER;
        assert!(!l.verdict(10, 0, 0).exceeded);
        assert_eq!(l.verdict(10, 0, 0).remaining, 0);
        assert!(l.verdict(11, 0, 0).exceeded);
    }

    #[test]
    fn counters_are_kept_per_window() {
        let l = CHALLENGE_PER_USER;
        let now = 5 * HOUR + 123;
        assert_eq!(l.window_start(now), 5 * HOUR);
        assert_eq!(l.verdict(1, 0, now).reset_at, 6 * HOUR);
        assert_ne!(l.counter_key("u", now), l.counter_key("u", now + HOUR));
        assert_eq!(l.counter_key("u", now), l.counter_key("u", now + 1000));
        assert_eq!(l.previous_key("u", now + HOUR), l.counter_key("u", now));
        assert_eq!(l.hit("u", now, 0).expire, 7 * HOUR, "kept while it is the previous window");
    }

    #[test]
    fn a_full_window_leaves_nothing_for_a_burst_right_after_it() {
        let l = CODE_FAILURES_PER_USER;
        let boundary = 10 * HOUR;
        // Ten wrong codes at 00:59:45, then the window turns.
        assert_eq!(l.carried(10, boundary), 10);
        assert!(l.verdict(1, 10, boundary).exceeded);
        assert_eq!(l.hit("u", boundary, 10).max, 0, "the write refuses any count");
        // The previous window's weight drains as the sliding window moves on.
        assert_eq!(l.carried(10, boundary + 30 * MINUTE), 5);
        assert_eq!(l.hit("u", boundary + 30 * MINUTE, 10).max, 5);
        assert_eq!(l.carried(10, boundary + 59 * MINUTE), 1);
        assert_eq!(l.carried(0, boundary), 0);
    }

    #[test]
    fn a_reset_clears_both_windows() {
        let l = CODE_FAILURES_PER_USER;
        let c = l.reset("u", 3 * HOUR, 4);
        assert!(c.reset);
        assert_eq!(c.previous, Some(l.counter_key("u", 2 * HOUR)));
        assert_eq!(l.hit("u", 3 * HOUR, 4).previous, None);
        assert_eq!(l.reset("u", 3 * HOUR, 0).previous, None, "an empty previous window needs no delete");
    }
}
