//! The server API (Appwrite's Users API, its MFA part and what support needs): a user found
//! by id or exact email, their factors, authenticators, recovery codes, sessions and
//! activity log, through an API key (`App::authorize_key`). Every change is recorded in the
//! user's activity log with the key's id.
//!
//! As in Appwrite, a key acts without MFA and its changes end nothing else: removing an
//! authenticator or switching MFA off leaves the user's sessions as they are (support ends
//! them with `DELETE /users/{userId}/sessions` when that is wanted).

use serde::Deserialize;

use super::activity::{page, queries};
use super::models::{Account, MfaFactors, MfaRecoveryCodes, SessionList, SessionModel, UserList};
use super::App;
use crate::domain::activity::Action;
use crate::domain::query::ListQuery;
use crate::domain::values::{parse_email, parse_id};
use crate::domain::{recovery, User};
use crate::error::ApiError;
use crate::http::{Ctx, Reply};
use crate::store::{updated_user, Also, Lookup, Updated, UserChange};

/// At most this many emails in one `Query.equal("email", [...])`: their claims are read
/// in the request's one read, with the key and its counters.
pub const MAX_EMAILS: usize = 25;

/// The user the path names, read with the key.
pub fn lookup(ctx: &Ctx) -> Lookup {
    Lookup { user: parse_id(ctx.path_param("userId")), ..Lookup::default() }
}

/// The claims of the emails the query asks for, read with the key.
pub fn list_lookup(ctx: &Ctx) -> Lookup {
    let emails = match email_query(ctx) {
        Ok((_, emails)) => emails,
        // Refused by the handler.
        Err(_) => vec![],
    };
    Lookup { emails, ..Lookup::default() }
}

/// The list query of `GET /users`: exactly one `equal` filter on `email` (and a limit and
/// an offset). Anything else is refused: this API never lists every user.
fn email_query(ctx: &Ctx) -> Result<(ListQuery, Vec<String>), ApiError> {
    let search = ctx.query.iter().find(|(k, _)| k == "search").map(|(_, v)| v.trim()).unwrap_or_default();
    if !search.is_empty() {
        return Err(ApiError::QueryInvalid(
            "Search is not supported: find a user with Query.equal(\"email\", [...]).".into(),
        ));
    }
    let query = ListQuery::parse(&queries(ctx), &["email"]).map_err(|e| ApiError::QueryInvalid(e.0))?;
    let [(_, values)] = query.equal.as_slice() else {
        return Err(ApiError::QueryInvalid(
            "Listing every user is not supported: add one Query.equal(\"email\", [...]).".into(),
        ));
    };
    if values.len() > MAX_EMAILS {
        return Err(ApiError::QueryInvalid(format!("Invalid query: equal on email takes at most {MAX_EMAILS} values")));
    }
    let mut emails: Vec<String> = Vec::new();
    // A value that is not an email address matches nobody.
    for email in values.iter().filter_map(|v| parse_email(v).ok()) {
        if !emails.contains(&email) {
            emails.push(email);
        }
    }
    Ok((query, emails))
}

/// The user the path names.
fn target(ctx: &Ctx) -> Result<&User, ApiError> {
    ctx.found.user.as_ref().ok_or(ApiError::UserNotFound)
}

pub async fn get(_app: &App, ctx: &mut Ctx) -> Result<Reply, ApiError> {
    Ok(Reply::model(200, &Account::of(target(ctx)?)))
}

/// Users by exact email, in the order the emails were given.
pub async fn list(app: &App, ctx: &mut Ctx) -> Result<Reply, ApiError> {
    let (query, _) = email_query(ctx)?;
    let owners = std::mem::take(&mut ctx.found.email_owners);
    let users = if owners.is_empty() { vec![] } else { app.store.users(&owners).await? };
    // Appwrite's `total: false` skips counting.
    let counted = !ctx.query.iter().any(|(k, v)| k == "total" && v == "false");
    let total = if counted { users.len() } else { 0 };
    let users = users.iter().skip(query.offset).take(query.limit).map(Account::of).collect();
    Ok(Reply::model(200, &UserList { total, users }))
}

#[derive(Deserialize)]
struct UpdateMfa {
    mfa: bool,
}

pub async fn update_mfa(app: &App, ctx: &mut Ctx) -> Result<Reply, ApiError> {
    let UpdateMfa { mfa: enable } = ctx.params()?;
    let user = target(ctx)?;
    let change = UserChange::Mfa(enable);
    let event = app.event(ctx, &user.id, Action::MfaUpdate, if enable { "on" } else { "off" });
    let updated = app.store.update_user(user, change.clone(), None, ctx.now, &Also::events(vec![event])).await?;
    match updated {
        Updated::Done => Ok(Reply::model(200, &Account::of(&updated_user(user, &change, None, ctx.now)))),
        Updated::NotFound => Err(ApiError::UserNotFound),
        _ => Err(ApiError::UpdateConflict),
    }
}

pub async fn factors(_app: &App, ctx: &mut Ctx) -> Result<Reply, ApiError> {
    Ok(Reply::model(200, &MfaFactors::of(target(ctx)?)))
}

/// Removes the user's authenticators of the type: the TOTP authenticator, or every
/// security key.
pub async fn delete_authenticator(app: &App, ctx: &mut Ctx) -> Result<Reply, ApiError> {
    let kind = super::mfa::authenticator_kind(ctx)?;
    let user = target(ctx)?;
    let ids: Vec<String> = user.authenticators.iter().filter(|a| a.kind() == kind).map(|a| a.id.clone()).collect();
    if ids.is_empty() {
        return Err(ApiError::AuthenticatorNotFound);
    }
    let factor = kind.factor();
    let change = UserChange::RemoveAuthenticators { ids, factor, last: true };
    let also = Also::events(vec![app.event(ctx, &user.id, Action::FactorRemove, factor.as_str())]);
    match app.store.update_user(user, change, None, ctx.now, &also).await? {
        Updated::Done => Ok(Reply::no_content()),
        Updated::NotFound => Err(ApiError::UserNotFound),
        // Removed by another request since this one read the user.
        _ => Err(ApiError::AuthenticatorNotFound),
    }
}

pub async fn create_recovery_codes(app: &App, ctx: &mut Ctx) -> Result<Reply, ApiError> {
    let user = target(ctx)?;
    if !user.recovery_codes.is_empty() {
        return Err(ApiError::RecoveryCodesAlreadyExist);
    }
    let codes = recovery::generate();
    let change = UserChange::CreateRecoveryCodes(super::mfa::hashed(app, &user.id, &codes));
    let also = Also::events(vec![app.event(ctx, &user.id, Action::RecoveryCodesCreate, "")]);
    match app.store.update_user(user, change, None, ctx.now, &also).await? {
        Updated::Done => Ok(Reply::model(201, &MfaRecoveryCodes { recovery_codes: codes })),
        Updated::NotFound => Err(ApiError::UserNotFound),
        _ => Err(ApiError::RecoveryCodesAlreadyExist),
    }
}

pub async fn replace_recovery_codes(app: &App, ctx: &mut Ctx) -> Result<Reply, ApiError> {
    let user = target(ctx)?;
    if user.recovery_codes.is_empty() {
        return Err(ApiError::RecoveryCodesNotFound);
    }
    let codes = recovery::generate();
    let change = UserChange::ReplaceRecoveryCodes(super::mfa::hashed(app, &user.id, &codes));
    let also = Also::events(vec![app.event(ctx, &user.id, Action::RecoveryCodesReplace, "")]);
    match app.store.update_user(user, change, None, ctx.now, &also).await? {
        Updated::Done => Ok(Reply::model(200, &MfaRecoveryCodes { recovery_codes: codes })),
        Updated::NotFound => Err(ApiError::UserNotFound),
        _ => Err(ApiError::RecoveryCodesNotFound),
    }
}

/// Recovery codes are stored hashed: as on the account route, they are never readable again.
pub async fn get_recovery_codes(_app: &App, ctx: &mut Ctx) -> Result<Reply, ApiError> {
    if target(ctx)?.recovery_codes.is_empty() {
        return Err(ApiError::RecoveryCodesNotFound);
    }
    Err(ApiError::RecoveryCodesNotReadable)
}

/// The user's live sessions, oldest first.
pub async fn sessions(app: &App, ctx: &mut Ctx) -> Result<Reply, ApiError> {
    let live = super::sessions::live_sessions_of(app, target(ctx)?, ctx.now).await?;
    let sessions: Vec<SessionModel> = live.iter().map(|s| SessionModel::of(s, false)).collect();
    Ok(Reply::model(200, &SessionList { total: sessions.len(), sessions }))
}

/// Ends every session of the user at once, in one write.
pub async fn delete_sessions(app: &App, ctx: &mut Ctx) -> Result<Reply, ApiError> {
    let user = target(ctx)?;
    let also = Also::events(vec![app.event(ctx, &user.id, Action::SessionsDelete, "")]);
    match app.store.update_user(user, UserChange::EndSessions(ctx.now + 1), None, ctx.now, &also).await? {
        // Refused only when a later end already holds: these sessions are over either way.
        Updated::Done | Updated::Rejected => Ok(Reply::no_content()),
        _ => Err(ApiError::UserNotFound),
    }
}

pub async fn delete_session(app: &App, ctx: &mut Ctx) -> Result<Reply, ApiError> {
    let user = target(ctx)?;
    let session_id = parse_id(ctx.path_param("sessionId")).ok_or(ApiError::SessionNotFound)?;
    let also = Also::events(vec![app.event(ctx, &user.id, Action::SessionDelete, &session_id)]);
    if !app.store.delete_session(&user.id, &session_id, &also).await? {
        return Err(ApiError::SessionNotFound);
    }
    Ok(Reply::no_content())
}

/// The user's activity log, newest first.
pub async fn logs(app: &App, ctx: &mut Ctx) -> Result<Reply, ApiError> {
    let user = target(ctx)?;
    let events = app.store.events(&user.id, ctx.now).await?;
    Ok(Reply::model(200, &page(ctx, &events, user)?))
}
