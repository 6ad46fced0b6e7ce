//! The rate limits one request counts against, turned into the counts of its decisive
//! write: the counters are read with the request, checked early, and checked again and
//! stored by the write itself, so that parallel requests cannot overrun them. Each limit
//! is a sliding window: the current window's counter plus the part of the previous one
//! still inside it.

use super::limits::{Count, Limit, RateVerdict, CODE_FAILURES_PER_IP, CODE_FAILURES_PER_USER};
use crate::clock::Millis;

#[derive(Debug, Clone, Default)]
pub struct Budget {
    entries: Vec<Entry>,
}

#[derive(Debug, Clone)]
struct Entry {
    limit: Limit,
    key: String,
    counting: Counting,
    overrun: Overrun,
    /// The previous window's count, as read with the request (0 until checked).
    previous: u32,
    /// The current window's count, as read with the request (0 until checked).
    current: u32,
}

/// Which requests a limit counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Counting {
    /// Every request, in the write that decides it.
    Every,
    /// Failures, and a success starts the count over: both in the write that decides them.
    Failures,
    /// Failures, counted in the write that records them but not held there (checked as
    /// read only); a success neither counts nor is counted. Such entries come last.
    Checked,
}

/// What kind of limit a request ran into.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Overrun {
    /// Too many requests.
    Requests,
    /// Too many wrong codes in a row.
    WrongCodes,
}

/// A limit a request is past.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Exceeded {
    pub overrun: Overrun,
    pub verdict: RateVerdict,
}

impl Budget {
    /// A signed-in check of a code (challenge, new authenticator or key): the caller's run
    /// of wrong codes, and wrong codes per address.
    pub fn code_checks(ip: &str, user_id: &str) -> Budget {
        let budget = Budget::default().wrong_codes(user_id);
        budget.with(CODE_FAILURES_PER_IP, ip, Counting::Checked, Overrun::Requests)
    }

    fn with(mut self, limit: Limit, key: &str, counting: Counting, overrun: Overrun) -> Self {
        self.entries.push(Entry { limit, key: key.to_string(), counting, overrun, previous: 0, current: 0 });
        self
    }

    /// Every request counts.
    pub fn every(self, limit: Limit, key: &str) -> Self {
        self.with(limit, key, Counting::Every, Overrun::Requests)
    }

    /// The user's consecutive wrong codes across challenges and authenticator verification.
    pub fn wrong_codes(self, user_id: &str) -> Self {
        self.with(CODE_FAILURES_PER_USER, user_id, Counting::Failures, Overrun::WrongCodes)
    }

    /// The counters to read with the request, in order: each limit's current and previous
    /// window.
    pub fn counters(&self, now: Millis) -> Vec<String> {
        self.entries
            .iter()
            .flat_map(|e| [e.limit.counter_key(&e.key, now), e.limit.previous_key(&e.key, now)])
            .collect()
    }

    /// Checks the counters as read with the request (in the order of [`Self::counters`];
    /// entries past its end were not read) before any work is done, and keeps the previous
    /// windows' counts for the request's counts. Gives the tightest limit, for the
    /// response headers, or the first one already reached.
    pub fn check(&mut self, counts: &[u32], now: Millis) -> Result<Option<RateVerdict>, Exceeded> {
        let mut tightest: Option<RateVerdict> = None;
        for (entry, counts) in self.entries.iter_mut().zip(counts.chunks(2)) {
            let (count, previous) = (counts[0], counts.get(1).copied().unwrap_or(0));
            (entry.current, entry.previous) = (count, previous);
            let verdict = entry.limit.verdict(count + 1, previous, now);
            if verdict.exceeded {
                return Err(Exceeded { overrun: entry.overrun, verdict });
            }
            if tightest.is_none_or(|t| verdict.remaining < t.remaining) {
                tightest = Some(verdict);
            }
        }
        Ok(tightest)
    }

    /// The counts of a request that succeeded, in the entries' order (checked entries,
    /// which come last, leave none).
    pub fn success(&self, now: Millis) -> Vec<Count> {
        self.entries
            .iter()
            .filter_map(|e| {
                let count = match e.counting {
                    Counting::Every => e.limit.hit(&e.key, now, e.previous),
                    Counting::Failures => e.limit.reset(&e.key, now, e.previous),
                    Counting::Checked => return None,
                };
                Some(Count { seen: e.current, ..count })
            })
            .collect()
    }

    /// The counts of a request that failed, or of one counted before its outcome is known
    /// (before a password hash), in the entries' order.
    pub fn failure(&self, now: Millis) -> Vec<Count> {
        self.entries
            .iter()
            .map(|e| {
                let count = e.limit.hit(&e.key, now, e.previous);
                // A checked limit counts the failure whatever its count: it was checked as read.
                let max = if e.counting == Counting::Checked { u32::MAX } else { count.max };
                Count { seen: e.current, max, ..count }
            })
            .collect()
    }

    /// The limit of the count at `index`, which the store refused as reached.
    pub fn refused(&self, index: usize, now: Millis) -> Option<Exceeded> {
        let e = self.entries.get(index)?;
        Some(Exceeded { overrun: e.overrun, verdict: e.limit.verdict(e.limit.max + 1, 0, now) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::HOUR;
    use crate::domain::limits::{LOGIN_PER_EMAIL, LOGIN_PER_IP};

    #[test]
    fn the_first_limit_reached_refuses_and_the_tightest_goes_in_the_headers() {
        let mut budget = Budget::default().every(LOGIN_PER_IP, "ip").every(LOGIN_PER_EMAIL, "a@b.c");
        let verdict = budget.check(&[10, 0, 5, 0], 0).unwrap().unwrap();
        assert_eq!((verdict.limit, verdict.remaining), (10, 4), "the email's limit is tighter");
        let past = budget.check(&[60, 0, 0, 0], 0).unwrap_err();
        assert_eq!((past.overrun, past.verdict.limit), (Overrun::Requests, 60));
        let codes = Budget::code_checks("ip", "u").check(&[10, 0, 0, 0], 0).unwrap_err();
        assert_eq!(codes.overrun, Overrun::WrongCodes);
        let address = Budget::code_checks("ip", "u").check(&[0, 0, 60, 0], 0).unwrap_err();
        assert_eq!((address.overrun, address.verdict.limit), (Overrun::Requests, 60), "wrong codes per address");
    }

    #[test]
    fn counts_carry_the_previous_window_as_read() {
        let mut budget = Budget::default().every(LOGIN_PER_EMAIL, "k");
        assert!(budget.check(&[0, 5], HOUR).is_ok());
        assert_eq!(budget.failure(HOUR)[0].max, 5, "five of ten are still in the sliding window");
        assert!(budget.check(&[0, 10], HOUR).is_err());
        let mut codes = Budget::code_checks("ip", "u");
        codes.check(&[0, 3, 0, 0], HOUR).unwrap();
        let success = codes.success(HOUR);
        assert_eq!(success.len(), 1, "a right code counts nothing per address");
        assert!(success[0].reset && success[0].previous.is_some(), "both windows of wrong codes start over");
        let failure = codes.failure(HOUR);
        assert_eq!(failure.len(), 2, "a wrong code counts for the user and the address");
        assert_eq!(failure[1].max, u32::MAX, "per address, whatever the count: it was checked as read");
    }
}
