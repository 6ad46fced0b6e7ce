//! The rate limits one request counts against, turned into the counts of its decisive
//! write: the counters are read with the request, checked early, and checked again and
//! stored by the write itself, so that parallel requests cannot overrun them. Each limit
//! is a sliding window: the current window's counter plus the part of the previous one
//! still inside it.

use crate::clock::Millis;
use crate::domain::limits::{Count, Limit, RateVerdict, CODE_ATTEMPTS_PER_IP, CODE_FAILURES_PER_USER};
use crate::error::ApiError;
use crate::http::Ctx;
use crate::store::{Decided, Refused};

#[derive(Debug, Clone, Default)]
pub struct Budget {
    entries: Vec<Entry>,
}

#[derive(Debug, Clone)]
struct Entry {
    limit: Limit,
    key: String,
    /// Only failures count, and a success starts the count over.
    failures_only: bool,
    error: fn(RateVerdict) -> ApiError,
    /// The previous window's count, as read with the request (0 until checked).
    previous: u32,
}

impl Budget {
    /// A signed-in check of a code (challenge, new authenticator): per address, and the
    /// caller's run of wrong codes.
    pub fn code_checks(ctx: &Ctx) -> Budget {
        Budget::default().every(CODE_ATTEMPTS_PER_IP, &ctx.ip).wrong_codes(ctx.caller_id())
    }

    /// Every request counts.
    pub fn every(mut self, limit: Limit, key: &str) -> Self {
        self.entries.push(Entry {
            limit,
            key: key.to_string(),
            failures_only: false,
            error: ApiError::RateLimited,
            previous: 0,
        });
        self
    }

    /// Consecutive failures count; a success starts over.
    pub fn failures(mut self, limit: Limit, key: &str) -> Self {
        self.entries.push(Entry {
            limit,
            key: key.to_string(),
            failures_only: true,
            error: ApiError::RateLimited,
            previous: 0,
        });
        self
    }

    /// The user's consecutive wrong codes across challenges and authenticator verification.
    pub fn wrong_codes(mut self, user_id: &str) -> Self {
        self.entries.push(Entry {
            limit: CODE_FAILURES_PER_USER,
            key: user_id.to_string(),
            failures_only: true,
            error: ApiError::TooManyFailures,
            previous: 0,
        });
        self
    }

    /// The counters to read with the request, in order: each limit's current and previous
    /// window.
    pub fn counters(&self, now: Millis) -> Vec<String> {
        self.entries
            .iter()
            .flat_map(|e| [e.limit.counter_key(&e.key, now), e.limit.previous_key(&e.key, now)])
            .collect()
    }

    /// Refuses a request whose counters, as read with it (`ctx.found.counts`, in the order
    /// of [`Self::counters`]; entries past its end were not read), are already at their
    /// limits, before any work is done; records the tightest limit for the response headers.
    pub fn check(&mut self, ctx: &mut Ctx) -> Result<(), ApiError> {
        let seen = std::mem::take(&mut ctx.found.counts);
        for (entry, counts) in self.entries.iter_mut().zip(seen.chunks(2)) {
            let (count, previous) = (counts[0], counts.get(1).copied().unwrap_or(0));
            entry.previous = previous;
            let verdict = entry.limit.verdict(count + 1, previous, ctx.now);
            if ctx.rate.is_none_or(|r| verdict.remaining < r.remaining) {
                ctx.rate = Some(verdict);
            }
            if verdict.exceeded {
                return Err((entry.error)(verdict));
            }
        }
        Ok(())
    }

    /// The counts of a request that succeeded.
    pub fn success(&self, now: Millis) -> Vec<Count> {
        self.entries
            .iter()
            .map(|e| {
                if e.failures_only {
                    e.limit.reset(&e.key, now, e.previous)
                } else {
                    e.limit.hit(&e.key, now, e.previous)
                }
            })
            .collect()
    }

    /// The counts of a request that succeeded after [`Self::failure`]'s counts were
    /// written up front (before a password hash): a run of failures starts over.
    pub fn settled(&self, now: Millis) -> Vec<Count> {
        self.entries.iter().filter(|e| e.failures_only).map(|e| e.limit.clear(&e.key, now)).collect()
    }

    /// The counts of a request that failed.
    pub fn failure(&self, now: Millis) -> Vec<Count> {
        self.entries.iter().map(|e| e.limit.hit(&e.key, now, e.previous)).collect()
    }

    /// The answer to a decisive write: its limit's 429 when a count was at its limit,
    /// `rejected` when its own condition failed.
    pub fn decided(&self, decided: Decided, now: Millis, rejected: ApiError) -> Result<(), ApiError> {
        match decided {
            Ok(()) => Ok(()),
            Err(Refused::Limited(i)) => Err(self.refused(i, now)),
            Err(Refused::Rejected) => Err(rejected),
        }
    }

    /// The answer to a write without conditions of its own: only a count can refuse it.
    pub fn counted(&self, decided: Decided, now: Millis) -> Result<(), ApiError> {
        self.decided(decided, now, ApiError::Internal("a write without conditions was refused".into()))
    }

    /// The error of the count at `index`, refused by its limit.
    pub fn refused(&self, index: usize, now: Millis) -> ApiError {
        match self.entries.get(index) {
            Some(e) => (e.error)(e.limit.verdict(e.limit.max + 1, 0, now)),
            None => ApiError::Internal(format!("the store refused an unknown count {index}").into()),
        }
    }
}
