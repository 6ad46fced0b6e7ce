//! A request's budget (`domain::budget`) at the edge of the API: checked against the
//! counters read with the request, and its refusals as Appwrite errors.

pub use crate::domain::budget::Budget;
use crate::domain::budget::{Exceeded, Overrun};
use crate::error::ApiError;
use crate::http::Ctx;
use crate::store::{Decided, Refused};

impl From<Exceeded> for ApiError {
    fn from(e: Exceeded) -> Self {
        match e.overrun {
            Overrun::Requests => ApiError::RateLimited(e.verdict),
            Overrun::WrongCodes => ApiError::TooManyFailures(e.verdict),
        }
    }
}

/// Counts a request that is about to run work its budget bounds (a password hash), before
/// that work: each count on its own and all at once, one store write each (half the cost
/// of one write of them together, and no slower). A count at its limit refuses the request;
/// the others may have counted it all the same, which only ever lets fewer through.
pub async fn count_before(app: &super::App, budget: &Budget, now: crate::clock::Millis) -> Result<(), ApiError> {
    let mut counting = tokio::task::JoinSet::new();
    for (i, count) in budget.failure(now).into_iter().enumerate() {
        let store = app.store.clone();
        counting.spawn(async move { (i, store.count(&vec![count].into()).await) });
    }
    let mut refused = None;
    while let Some(done) = counting.join_next().await {
        let (i, outcome) = done.map_err(|e| ApiError::Internal(format!("a count stopped: {e}").into()))?;
        match outcome? {
            Ok(()) => {}
            Err(Refused::Limited(_)) => refused = Some(refused.map_or(i, |first: usize| first.min(i))),
            Err(Refused::Rejected) => return Err(ApiError::Internal("a write without conditions was refused".into())),
        }
    }
    match refused {
        Some(i) => Err(budget.refused_error(i, now)),
        None => Ok(()),
    }
}

/// The signed-in check of a code by the caller of `ctx`.
pub fn code_checks(ctx: &Ctx) -> Budget {
    Budget::code_checks(&ctx.ip, ctx.caller_id())
}

/// What the API does with a request's budget.
pub trait Charged {
    /// Refuses the request if its counters (`ctx.found.counts`) are at a limit already;
    /// records the tightest limit for the response headers.
    fn check_in(&mut self, ctx: &mut Ctx) -> Result<(), ApiError>;
    /// The answer to a decisive write: its limit's 429 when a count was at its limit,
    /// `rejected` when its own condition failed.
    fn decided(&self, decided: Decided, now: crate::clock::Millis, rejected: ApiError) -> Result<(), ApiError>;
    /// The answer to a write without conditions of its own: only a count can refuse it.
    fn counted(&self, decided: Decided, now: crate::clock::Millis) -> Result<(), ApiError>;
    /// The 429 of the count at `index`, refused by its limit.
    fn refused_error(&self, index: usize, now: crate::clock::Millis) -> ApiError;
}

impl Charged for Budget {
    fn check_in(&mut self, ctx: &mut Ctx) -> Result<(), ApiError> {
        let counts = std::mem::take(&mut ctx.found.counts);
        let tightest = self.check(&counts, ctx.now)?;
        if let Some(verdict) = tightest {
            if ctx.rate.is_none_or(|r| verdict.remaining < r.remaining) {
                ctx.rate = Some(verdict);
            }
        }
        Ok(())
    }

    fn decided(&self, decided: Decided, now: crate::clock::Millis, rejected: ApiError) -> Result<(), ApiError> {
        match decided {
            Ok(()) => Ok(()),
            Err(Refused::Limited(i)) => Err(self.refused_error(i, now)),
            Err(Refused::Rejected) => Err(rejected),
        }
    }

    fn counted(&self, decided: Decided, now: crate::clock::Millis) -> Result<(), ApiError> {
        self.decided(decided, now, ApiError::Internal("a write without conditions was refused".into()))
    }

    fn refused_error(&self, index: usize, now: crate::clock::Millis) -> ApiError {
        match self.refused(index, now) {
            Some(exceeded) => exceeded.into(),
            None => ApiError::Internal(format!("the store refused an unknown count {index}").into()),
        }
    }
}
