//! Persistence behind one trait of domain-level operations. Every single-use action is one
//! atomic, conditional operation of the adapter, so that of N parallel attempts one wins.

use async_trait::async_trait;

use crate::clock::Millis;
use crate::domain::{Authenticator, Challenge, Channel, Factor, Session, User, VerificationToken};

pub mod dynamo;
pub mod embedded;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The store could not be reached or refused the request; nothing was changed.
    #[error("store unavailable: {0}")]
    Unavailable(String),
    /// A stored item could not be read back.
    #[error("stored data is corrupt: {0}")]
    Corrupt(String),
}

pub type StoreResult<T> = Result<T, StoreError>;

/// A change to a user record, each with the condition under which it applies.
#[derive(Debug, Clone, PartialEq)]
pub enum UserChange {
    /// Moves the user to a new email (unique across users) and marks it unverified.
    Email(String),
    /// Moves the user to a new phone number (unique across users) and marks it unverified.
    Phone(String),
    Mfa(bool),
    /// Applies only while the user has no verified authenticator.
    PutAuthenticator(Authenticator),
    /// Marks the authenticator verified at `step`; applies only while it is unverified and
    /// is still the one whose secret is `secret_sealed` (the one the code was checked with).
    VerifyAuthenticator {
        step: u64,
        secret_sealed: String,
    },
    /// Applies only while the user has an authenticator.
    RemoveAuthenticator,
    /// Applies only while the user has no recovery codes.
    CreateRecoveryCodes(Vec<String>),
    /// Applies only while the user has recovery codes.
    ReplaceRecoveryCodes(Vec<String>),
}

/// Factors to add to the current session in the same atomic write as a user change.
#[derive(Debug, Clone, PartialEq)]
pub struct SessionUpgrade {
    pub secret_hash: String,
    pub add: Vec<Factor>,
    /// Set when the change proves possession of a factor ("recent challenge").
    pub mfa_updated_at: Option<Millis>,
    /// Ends every other session of the user, in the same write (OWASP ASVS 7.4.3: after a
    /// factor is removed or replaced, only the session that did it stays).
    pub end_other_sessions: bool,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Updated {
    Done(User),
    /// The change's condition did not hold (already verified, none left, ...).
    Rejected,
    /// The new email or phone belongs to another user.
    Taken,
    NotFound,
}

/// What completing a challenge uses up, in the same atomic write.
#[derive(Debug, Clone, PartialEq)]
pub enum Spend {
    /// The emailed or texted code lives in the challenge itself.
    Nothing,
    /// The TOTP step; applies only if newer than the authenticator's last accepted step.
    TotpStep(u64),
    /// One recovery code hash; applies only if still unused.
    RecoveryCode(String),
}

#[derive(Debug, Clone, PartialEq)]
pub struct ChallengeWin {
    pub user_id: String,
    pub challenge_id: String,
    pub session_hash: String,
    pub factor: Factor,
    pub spend: Spend,
    pub now: Millis,
}

#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// Creates a user and claims its email and phone; `false` when any of them is taken.
    async fn create_user(&self, user: &User) -> StoreResult<bool>;
    async fn user(&self, id: &str) -> StoreResult<Option<User>>;
    async fn user_by_email(&self, email: &str) -> StoreResult<Option<User>>;
    /// Applies `change` if its condition holds, with `upgrade` to the current session in
    /// the same atomic write.
    async fn update_user(
        &self,
        id: &str,
        change: UserChange,
        upgrade: Option<SessionUpgrade>,
        now: Millis,
    ) -> StoreResult<Updated>;

    async fn create_session(&self, session: &Session) -> StoreResult<()>;
    /// The live session of `user_id` whose secret hashes to `secret_hash`.
    async fn session(&self, user_id: &str, secret_hash: &str, now: Millis) -> StoreResult<Option<Session>>;
    /// Deletes one of the user's sessions by id; `false` if there was none.
    async fn delete_session(&self, user_id: &str, session_id: &str) -> StoreResult<bool>;
    /// Deletes all of the user's sessions but `keep` (a session id).
    async fn delete_sessions(&self, user_id: &str, keep: Option<&str>) -> StoreResult<()>;

    /// Stores a challenge, replacing the user's previous challenge of the same factor.
    async fn put_challenge(&self, challenge: &Challenge) -> StoreResult<()>;
    /// Spends one attempt of a usable challenge and returns it as it is after that;
    /// `None` when unknown, expired or out of attempts.
    async fn take_challenge_attempt(
        &self,
        user_id: &str,
        challenge_id: &str,
        now: Millis,
    ) -> StoreResult<Option<Challenge>>;
    /// Atomically deletes the challenge, uses `spend` and adds the factor to the session;
    /// `None` when any of them no longer holds (another request won).
    async fn finish_challenge(&self, win: &ChallengeWin) -> StoreResult<Option<Session>>;

    /// Stores a verification token, replacing the user's previous one of its channel.
    async fn put_token(&self, token: &VerificationToken) -> StoreResult<()>;
    /// Spends one attempt of the user's usable token of `channel` and returns it.
    async fn take_token_attempt(
        &self,
        user_id: &str,
        channel: Channel,
        now: Millis,
    ) -> StoreResult<Option<VerificationToken>>;
    /// Atomically deletes the user's token of `channel` if its secret hash is `secret_hash`
    /// and its target is still the user's, marks the target verified and returns the token;
    /// `None` when the token is unknown, expired, another one, or another request won.
    async fn redeem_token(
        &self,
        user_id: &str,
        channel: Channel,
        secret_hash: &str,
        now: Millis,
    ) -> StoreResult<Option<VerificationToken>>;

    /// Counts one hit on a rate counter that lives until `expire`; returns the new count.
    async fn hit(&self, counter: &str, expire: Millis) -> StoreResult<u32>;
    async fn clear(&self, counter: &str) -> StoreResult<()>;
}
