//! Persistence behind one trait of domain-level operations. Every single-use action is one
//! atomic, conditional operation of the adapter, so that of N parallel attempts one wins.

use async_trait::async_trait;

use crate::clock::Millis;
use crate::domain::limits::Count;
use crate::domain::{Authenticator, Challenge, Channel, Factor, Session, User, VerificationToken};

pub mod dynamo;
pub mod embedded;

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

/// A change to a user record, each with the condition under which it applies.
#[derive(Debug, Clone, PartialEq)]
pub enum UserChange {
    /// Moves the user to a new email (unique across users) and marks it unverified.
    Email(String),
    /// Moves the user to a new phone number (unique across users) and marks it unverified.
    Phone(String),
    Mfa(bool),
    /// Ends every session of the user confirmed before this instant (signing out
    /// everywhere); they are refused at once and deleted by their expiry. Applies only
    /// while no later end holds.
    EndSessions(Millis),
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
    pub session_id: String,
    /// When that session was confirmed (its `confirmed_at`): the write applies only while
    /// the user's sessions confirmed then are still valid, so a session ended meanwhile
    /// (signed out everywhere, or ASVS 7.4.3) cannot act, nor undo that end.
    pub confirmed_at: Millis,
    pub add: Vec<Factor>,
    /// Set when the change proves possession of a factor ("recent challenge").
    pub mfa_updated_at: Option<Millis>,
    /// Ends every other session of the user, in the same write (OWASP ASVS 7.4.3: after a
    /// factor is removed or replaced, only the session that did it stays).
    pub end_other_sessions: bool,
}

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

/// What one request reads, in one round trip.
#[derive(Debug, Clone, Default)]
pub struct Lookup {
    /// The session of (user id, session id), found only if its secret hashes to the third.
    pub session: Option<(String, String, String)>,
    pub user: Option<String>,
    /// The sign-in record of an email.
    pub login: Option<String>,
    /// The challenge of (user id, challenge id).
    pub challenge: Option<(String, String)>,
    pub token: Option<(String, Channel)>,
    /// Rate counters, by key.
    pub counters: Vec<String>,
}

/// What a [`Lookup`] found. Expiring items past their expiry are not found.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Found {
    pub session: Option<Session>,
    pub user: Option<User>,
    pub login: Option<Login>,
    /// Found while it has the asked id, whatever its attempts left.
    pub challenge: Option<Challenge>,
    pub token: Option<VerificationToken>,
    /// The counters' counts, in the order asked (0 for none).
    pub counts: Vec<u32>,
}

/// What signing in with an email needs, kept with the email's claim so that it is one read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Login {
    pub user_id: String,
    pub password_hash: String,
}

impl UserChange {
    /// The user as the change leaves it, if its condition holds for `user`. Stores apply
    /// changes with conditions of their own; this gives callers the result without a
    /// read-back.
    pub fn apply(&self, user: &mut User) -> bool {
        match self.clone() {
            UserChange::Email(email) => {
                user.email = Some(email);
                user.email_verified = false;
            }
            UserChange::Phone(phone) => {
                user.phone = Some(phone);
                user.phone_verified = false;
            }
            UserChange::Mfa(on) => user.mfa = on,
            // The cut only moves forward: a late request cannot revive ended sessions.
            UserChange::EndSessions(at) => {
                if at < user.sessions_valid_from {
                    return false;
                }
                user.sessions_valid_from = at;
            }
            UserChange::PutAuthenticator(auth) => {
                if user.totp_verified() {
                    return false;
                }
                user.totp = Some(auth);
            }
            UserChange::VerifyAuthenticator { step, secret_sealed } => match user.totp.as_mut() {
                Some(auth)
                    if !auth.verified
                        && auth.secret_sealed == secret_sealed
                        && auth.last_step.is_none_or(|last| step > last) =>
                {
                    auth.verified = true;
                    auth.last_step = Some(step);
                }
                _ => return false,
            },
            UserChange::RemoveAuthenticator => {
                if user.totp.take().is_none() {
                    return false;
                }
            }
            UserChange::CreateRecoveryCodes(codes) => {
                if !user.recovery_codes.is_empty() {
                    return false;
                }
                user.recovery_codes = codes;
            }
            UserChange::ReplaceRecoveryCodes(codes) => {
                if user.recovery_codes.is_empty() {
                    return false;
                }
                user.recovery_codes = codes;
            }
        }
        true
    }
}

impl UserChange {
    /// The second factor this change adds or replaces, if any.
    pub fn adds_factor(&self) -> Option<Factor> {
        match self {
            UserChange::Email(_) => Some(Factor::Email),
            UserChange::Phone(_) => Some(Factor::Phone),
            UserChange::PutAuthenticator(_) | UserChange::VerifyAuthenticator { .. } => Some(Factor::Totp),
            UserChange::CreateRecoveryCodes(_) | UserChange::ReplaceRecoveryCodes(_) => Some(Factor::RecoveryCode),
            UserChange::Mfa(_) | UserChange::EndSessions(_) | UserChange::RemoveAuthenticator => None,
        }
    }

    /// Records which session added or changed a factor (`by`, when a session made the
    /// change), and forgets it with the factor.
    pub fn record_source(&self, user: &mut User, by: Option<&str>) {
        match (self.adds_factor(), by) {
            (Some(factor), Some(by)) => {
                user.added_by.insert(factor, by.to_string());
            }
            (Some(factor), None) => {
                user.added_by.remove(&factor);
            }
            (None, _) => {
                if *self == UserChange::RemoveAuthenticator {
                    user.added_by.remove(&Factor::Totp);
                }
            }
        }
    }
}

impl SessionUpgrade {
    /// An upgrade of `session` that adds nothing yet.
    pub fn of(session: &Session) -> SessionUpgrade {
        SessionUpgrade {
            session_id: session.id.clone(),
            confirmed_at: session.confirmed_at,
            add: vec![],
            mfa_updated_at: None,
            end_other_sessions: false,
        }
    }

    /// The user as the upgrade's write leaves it.
    pub fn apply_to_user(&self, user: &mut User, now: Millis) {
        if self.mfa_updated_at.is_some() {
            user.mfa_updated_at = self.mfa_updated_at;
        }
        if self.end_other_sessions {
            user.sessions_valid_from = now;
        }
    }

    /// The session as the upgrade's write leaves it.
    pub fn apply_to_session(&self, session: &mut Session, now: Millis) {
        crate::domain::session::merge_factors(&mut session.factors, &self.add);
        if self.mfa_updated_at.is_some() {
            session.mfa_updated_at = self.mfa_updated_at;
        }
        if self.end_other_sessions {
            session.confirmed_at = now;
        }
        session.updated_at = now;
    }
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
    pub session_id: String,
    /// The session's `confirmed_at` (see [`SessionUpgrade::confirmed_at`]).
    pub confirmed_at: Millis,
    pub factor: Factor,
    pub spend: Spend,
    pub now: Millis,
    /// Whether the factor proves something the user had before this session added or
    /// changed it; only then is the challenge recent (`Session::proves_with`).
    pub recent: bool,
}

impl ChallengeWin {
    /// What completing the challenge does to the session.
    pub fn upgrade(&self) -> SessionUpgrade {
        SessionUpgrade {
            session_id: self.session_id.clone(),
            confirmed_at: self.confirmed_at,
            add: vec![self.factor],
            mfa_updated_at: self.recent.then_some(self.now),
            end_other_sessions: false,
        }
    }
}

/// The user as [`Store::update_user`] leaves it when it answers `Done`.
pub fn updated_user(user: &User, change: &UserChange, upgrade: Option<&SessionUpgrade>, now: Millis) -> User {
    let mut user = user.clone();
    change.apply(&mut user);
    change.record_source(&mut user, upgrade.map(|up| up.session_id.as_str()));
    user.updated_at = now;
    if let Some(up) = upgrade {
        up.apply_to_user(&mut user, now);
    }
    user
}

/// Every write takes the counts the request is counted on (`counts`): they are checked
/// and stored in the same atomic write, and a count at its limit refuses the whole write.
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
        counts: &[Count],
    ) -> StoreResult<Updated>;

    async fn create_session(&self, session: &Session, counts: &[Count]) -> StoreResult<Decided>;
    /// Deletes one of the user's sessions by id; `false` if there was none.
    async fn delete_session(&self, user_id: &str, session_id: &str) -> StoreResult<bool>;

    /// Stores a challenge, replacing the user's previous challenge of the same factor.
    async fn put_challenge(&self, challenge: &Challenge, counts: &[Count]) -> StoreResult<Decided>;
    /// Deletes the challenge if it is still this one (its message could not be sent).
    async fn withdraw_challenge(&self, challenge: &Challenge) -> StoreResult<()>;
    /// Spends one attempt of a usable challenge on a wrong code.
    async fn miss_challenge(
        &self,
        user_id: &str,
        challenge_id: &str,
        now: Millis,
        counts: &[Count],
    ) -> StoreResult<Decided>;
    /// Atomically deletes the still usable challenge, uses `spend` and adds the factor to
    /// the session; `Rejected` when any of them no longer holds (another request won).
    async fn finish_challenge(&self, win: &ChallengeWin, counts: &[Count]) -> StoreResult<Decided>;

    /// Stores a verification token, replacing the user's previous one of its channel.
    async fn put_token(&self, token: &VerificationToken, counts: &[Count]) -> StoreResult<Decided>;
    /// Deletes the token if it is still this one (its message could not be sent).
    async fn withdraw_token(&self, token: &VerificationToken) -> StoreResult<()>;
    /// Spends one attempt of the user's usable token `token_id` on a wrong secret.
    async fn miss_token(
        &self,
        user_id: &str,
        channel: Channel,
        token_id: &str,
        now: Millis,
        counts: &[Count],
    ) -> StoreResult<Decided>;
    /// Atomically deletes the token if it is still this one and usable, and marks its
    /// target verified if the target is still the user's; `Rejected` otherwise.
    async fn redeem_token(&self, token: &VerificationToken, now: Millis, counts: &[Count]) -> StoreResult<Decided>;

    /// Counts a request that changes nothing else (a wrong password or code, an account
    /// about to be created).
    async fn count(&self, counts: &[Count]) -> StoreResult<Decided>;

    async fn user(&self, id: &str) -> StoreResult<Option<User>> {
        let lookup = Lookup { user: Some(id.to_string()), ..Lookup::default() };
        Ok(self.load(&lookup, 0).await?.user)
    }
}
