//! What one request reads, in one round trip, and what it found: the request's view of
//! the stored state, which the store fills in.

use super::api_key::ApiKey;
use super::{Challenge, Channel, Session, User, VerificationToken};

/// What one request reads, in one round trip.
#[derive(Debug, Clone, Default)]
pub struct Lookup {
    /// The session of (user id, session id), found only if its secret hashes to the third.
    pub session: Option<(String, String, String)>,
    pub user: Option<String>,
    /// The sign-in record of an email.
    pub login: Option<String>,
    /// The live challenge in this slot of the request's session (see
    /// [`Challenge::slot_of`]); read only with [`Lookup::session`].
    pub challenge: Option<&'static str>,
    pub token: Option<(String, Channel)>,
    /// Rate counters, by key.
    pub counters: Vec<String>,
    /// The API key of this id (the request's `X-Appwrite-Key` names it).
    pub api_key: Option<String>,
    /// The owners of these emails (lowercased), by their claims.
    pub emails: Vec<String>,
}

/// What a [`Lookup`] found. Expiring items past their expiry are not found.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Found {
    pub session: Option<Session>,
    pub user: Option<User>,
    pub login: Option<Login>,
    /// Found while unexpired, whatever its attempts left: the caller checks its id.
    pub challenge: Option<Challenge>,
    pub token: Option<VerificationToken>,
    /// The counters' counts, in the order asked (0 for none).
    pub counts: Vec<u32>,
    /// The API key asked for, if it exists; the caller compares its hash.
    pub api_key: Option<ApiKey>,
    /// The user ids owning the emails asked for, in the order asked (absent emails left out).
    pub email_owners: Vec<String>,
    /// How many activity events the session's own record keeps (a store may keep a
    /// session's first events with it; 0 where it keeps none there).
    pub session_events: u32,
}

/// What signing in with an email needs, kept with the email's claim so that it is one read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Login {
    pub user_id: String,
    pub password_hash: String,
}
