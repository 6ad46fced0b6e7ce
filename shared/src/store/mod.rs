//! Persistence behind one trait of domain-level operations. Every single-use action is one
//! atomic, conditional operation of the adapter, so that of N parallel attempts one wins.

use async_trait::async_trait;

use crate::clock::Millis;
use crate::domain::activity::Event;
use crate::domain::api_key::ApiKey;
use crate::domain::limits::Count;
use crate::domain::{Challenge, Channel, Session, User, VerificationToken};

pub mod dynamo;
pub mod embedded;

pub use crate::domain::change::{updated_user, ChallengeWin, Reseal, SessionUpgrade, Spend, UserChange};
pub use crate::domain::lookup::{Found, Login, Lookup};

/// What caused a store or delivery failure, kept for the log.
pub type Cause = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Why the store could not serve a request. Only `Unavailable` is worth trying again
/// later (503); the others are bugs or misconfiguration (500), and must not look like
/// outages.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The store could not be reached, throttled the request or did not answer in time. A
    /// write is atomic, but one whose answer was lost may have applied.
    #[error("the store is unavailable")]
    Unavailable(#[source] Cause),
    /// The store refused the request as malformed or not allowed (a validation error, a
    /// missing table, missing permissions).
    #[error("the store refused the request")]
    Refused(#[source] Cause),
    /// A stored item could not be read back.
    #[error("stored data is corrupt")]
    Corrupt(#[source] Cause),
}

pub type StoreResult<T> = Result<T, StoreError>;

#[derive(Debug, Clone, PartialEq)]
pub enum Updated {
    Done,
    /// The session of the upgrade is gone, expired or ended; nothing changed.
    SessionEnded,
    /// The change's condition did not hold (already verified, none left, changed since
    /// it was read, ...).
    Rejected,
    /// The new email or phone belongs to another user.
    Taken,
    NotFound,
    /// The count at this index is at its limit; nothing changed.
    Limited(usize),
}

/// Why a conditional write changed nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// A condition on the request's own items did not hold: gone, expired, spent, or
    /// another request won.
    Rejected,
    /// The count at this index is at its limit.
    Limited(usize),
}

/// The outcome of a conditional write.
pub type Decided = Result<(), Refused>;

/// What a write carries besides its own change, in the same atomic write: the counts the
/// request is counted on (checked and stored; a count at its limit refuses the whole
/// write), and the events of the user's activity log that record the change (stored only
/// with it: no event is lost, none is recorded for a change that did not happen).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Also {
    pub counts: Vec<Count>,
    pub events: Vec<Event>,
    /// For a write that changes the acting session: that session as read.
    pub session: Option<Acting>,
}

/// The acting session of a write that changes it, as the request read it: a store that
/// keeps a session's first events with it sends further ones to records of their own
/// without trying, and leaves out of them what they share with the session.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Acting {
    /// Events its record keeps ([`Found::session_events`]).
    pub kept: u32,
    pub ip: String,
    pub user_agent: String,
}

impl Also {
    pub const NONE: Also = Also { counts: Vec::new(), events: Vec::new(), session: None };

    pub fn counts(counts: Vec<Count>) -> Also {
        Also { counts, ..Also::default() }
    }

    pub fn events(events: Vec<Event>) -> Also {
        Also { events, ..Also::default() }
    }

    pub fn and(mut self, event: Event) -> Also {
        self.events.push(event);
        self
    }

    /// The write changes the acting `session`, whose record keeps `kept` events.
    pub fn in_session(self, session: &crate::domain::Session, kept: u32) -> Also {
        let acting = Acting { kept, ip: session.ip.clone(), user_agent: session.user_agent.clone() };
        Also { session: Some(acting), ..self }
    }
}

impl From<Vec<Count>> for Also {
    fn from(counts: Vec<Count>) -> Also {
        Also::counts(counts)
    }
}

/// Every write takes what it carries besides its change ([`Also`]).
#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// Reads everything `lookup` names, in one round trip.
    async fn load(&self, lookup: &Lookup, now: Millis) -> StoreResult<Found>;

    /// Creates a user and claims its email and phone; `false` when any of them is taken.
    async fn create_user(&self, user: &User) -> StoreResult<bool>;
    /// Applies `change` to `user` (as the caller read it) if its condition holds, with
    /// `upgrade` to the current session in the same atomic write.
    async fn update_user(
        &self,
        user: &User,
        change: UserChange,
        upgrade: Option<SessionUpgrade>,
        now: Millis,
        also: &Also,
    ) -> StoreResult<Updated>;

    async fn create_session(&self, session: &Session, also: &Also) -> StoreResult<Decided>;
    /// Deletes one of the user's sessions by id; `false` if there was none.
    async fn delete_session(&self, user_id: &str, session_id: &str, also: &Also) -> StoreResult<bool>;

    /// Stores a challenge in its session, replacing the session's previous challenge of the
    /// same slot; `Rejected` when the session is gone or ended.
    async fn put_challenge(&self, challenge: &Challenge, also: &Also) -> StoreResult<Decided>;
    /// Deletes the challenge if it is still this one (its message could not be sent).
    async fn withdraw_challenge(&self, challenge: &Challenge) -> StoreResult<()>;
    /// Spends one attempt of the challenge, while it is usable, on a wrong code.
    async fn miss_challenge(&self, challenge: &Challenge, now: Millis, also: &Also) -> StoreResult<Decided>;
    /// Atomically deletes the still usable challenge of the session, uses `spend` and adds
    /// the factor to that session; `Rejected` when any of them no longer holds (another
    /// request won).
    async fn finish_challenge(&self, win: &ChallengeWin, also: &Also) -> StoreResult<Decided>;

    /// Stores a verification token, replacing the user's previous one of its channel.
    async fn put_token(&self, token: &VerificationToken, also: &Also) -> StoreResult<Decided>;
    /// Deletes the token if it is still this one (its message could not be sent).
    async fn withdraw_token(&self, token: &VerificationToken) -> StoreResult<()>;
    /// Spends one attempt of the user's usable token `token_id` on a wrong secret.
    async fn miss_token(
        &self,
        user_id: &str,
        channel: Channel,
        token_id: &str,
        now: Millis,
        also: &Also,
    ) -> StoreResult<Decided>;
    /// Atomically deletes the token if it is still this one and usable, and marks its
    /// target verified if the target is still the user's; `Rejected` otherwise.
    async fn redeem_token(&self, token: &VerificationToken, now: Millis, also: &Also) -> StoreResult<Decided>;

    /// Atomically deletes the recovery token if it is still this one and usable, sets the
    /// new password hash and ends every session of the user; `Rejected` otherwise (used,
    /// replaced, expired, or the email it was sent to is no longer the user's).
    async fn reset_password(
        &self,
        token: &VerificationToken,
        password_hash: &str,
        now: Millis,
        also: &Also,
    ) -> StoreResult<Decided>;

    /// Counts a request that changes nothing else (a wrong password or code, an account
    /// about to be created).
    async fn count(&self, also: &Also) -> StoreResult<Decided>;

    /// How many stored values each server key still protects (TOTP secrets, recovery-code
    /// hashes, codes of live challenges and phone verifications), by key id: an
    /// administrative scan of the whole store.
    async fn key_usage(&self, now: Millis) -> StoreResult<std::collections::BTreeMap<String, u64>>;

    /// Every stored session of the user, in one read; the caller keeps the live ones.
    async fn sessions(&self, user_id: &str) -> StoreResult<Vec<Session>>;
    /// The user's activity log, newest first, in one read.
    async fn events(&self, user_id: &str, now: Millis) -> StoreResult<Vec<Event>>;

    /// The users of these ids that exist, in the order asked, in one read.
    async fn users(&self, ids: &[String]) -> StoreResult<Vec<User>>;

    /// Stores a new API key; `false` if one with its id exists.
    async fn put_api_key(&self, key: &ApiKey) -> StoreResult<bool>;
    /// Every API key, oldest first, in one read.
    async fn api_keys(&self) -> StoreResult<Vec<ApiKey>>;
    /// Deletes an API key: it stops working at once. `false` if there was none.
    async fn delete_api_key(&self, id: &str) -> StoreResult<bool>;

    async fn user(&self, id: &str) -> StoreResult<Option<User>> {
        let lookup = Lookup { user: Some(id.to_string()), ..Lookup::default() };
        Ok(self.load(&lookup, 0).await?.user)
    }
}
