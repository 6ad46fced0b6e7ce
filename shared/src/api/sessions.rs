//! Email + password sessions, and signing out.

use serde::Deserialize;

use super::budget::{Budget, Charged};
use super::models::{SessionList, SessionModel};
use super::App;
use crate::domain::activity::Action;
use crate::domain::crypto::{new_id, sha256_hex};
use crate::domain::limits::{LOGIN_PER_EMAIL, LOGIN_PER_IP};
use crate::domain::values::{parse_id, Email};
use crate::domain::{session, Factor, Session};
use crate::error::ApiError;
use crate::http::response::session_cookies;
use crate::http::{Credentials, Ctx, Reply};
use crate::store::{Also, Lookup, Updated, UserChange};

#[derive(Deserialize)]
struct EmailLogin {
    email: Email,
    password: String,
}

pub async fn create(app: &App, ctx: &mut Ctx) -> Result<Reply, ApiError> {
    let EmailLogin { email, password: plain } = ctx.params()?;
    let email = email.into_inner();
    let mut budget = Budget::default().every(LOGIN_PER_IP, &ctx.ip).every(LOGIN_PER_EMAIL, &email);
    let lookup = Lookup { login: Some(email), counters: budget.counters(ctx.now), ..Lookup::default() };
    app.load(ctx, lookup, true).await?;
    if ctx.auth.is_some() {
        return Err(ApiError::SessionAlreadyExists);
    }
    budget.check_in(ctx)?;
    // Counted before the hash runs, so that parallel sign-ins cannot hash past their
    // budgets: within them the answer is 401 or success, past them 429, whatever the
    // password.
    super::budget::count_before(app, &budget, ctx.now).await?;

    let login = ctx.found.login.take();
    let stored = login.as_ref().map(|l| l.password_hash.clone());
    if !super::account::password_matches(plain, stored).await? {
        return Err(ApiError::InvalidCredentials);
    }
    let login = login.ok_or(ApiError::InvalidCredentials)?;

    let id = new_id();
    let secret = session::new_secret(&id);
    let session = Session {
        id,
        user_id: login.user_id.clone(),
        secret_hash: sha256_hex(&secret),
        created_at: ctx.now,
        updated_at: ctx.now,
        expire: ctx.now + app.config.session_ttl,
        factors: vec![Factor::Password],
        mfa_updated_at: None,
        ip: ctx.ip.clone(),
        user_agent: ctx.header("user-agent").unwrap_or_default().chars().take(256).collect(),
        confirmed_at: ctx.now,
    };
    let event = app.event(ctx, &session.user_id, Action::SessionCreate, &session.id);
    let created = app.store.create_session(&session, &Also::events(vec![event])).await?;
    budget.counted(created, ctx.now)?;

    let value = Credentials { user_id: login.user_id, secret }.encode();
    let name = app.config.session_cookie();
    let mut reply = Reply::model(201, &SessionModel::of(&session, true));
    for cookie in session_cookies(&name, &value, session.expire, ctx.secure) {
        reply = reply.header("Set-Cookie", cookie);
    }
    if needs_fallback(ctx) {
        let fallback = std::collections::BTreeMap::from([(name.as_str(), value.as_str())]);
        reply = reply.header("X-Fallback-Cookies", serde_json::to_string(&fallback).unwrap_or_default());
    }
    Ok(reply)
}

pub async fn delete_one(app: &App, ctx: &mut Ctx) -> Result<Reply, ApiError> {
    let authed = ctx.authed()?;
    let current = authed.session.id.clone();
    let target = match ctx.path_param("sessionId") {
        "current" => current.clone(),
        id => parse_id(id).ok_or(ApiError::SessionNotFound)?,
    };
    let mut also = Also::events(vec![app.event(ctx, &authed.user.id, Action::SessionDelete, &target)]);
    if target == current {
        also = also.in_session(&authed.session, authed.session_events);
    }
    if !app.store.delete_session(&authed.user.id, &target, &also).await? {
        return Err(ApiError::SessionNotFound);
    }
    Ok(if target == current { signed_out(app, ctx) } else { Reply::no_content() })
}

/// The user's live sessions, oldest first.
pub async fn list(app: &App, ctx: &mut Ctx) -> Result<Reply, ApiError> {
    let authed = ctx.authed()?;
    let sessions = live_sessions(app, ctx).await?;
    let models: Vec<SessionModel> = sessions.iter().map(|s| SessionModel::of(s, s.id == authed.session.id)).collect();
    Ok(Reply::model(200, &SessionList { total: models.len(), sessions: models }))
}

/// One of the user's live sessions, by id or `current`.
pub async fn get_one(app: &App, ctx: &mut Ctx) -> Result<Reply, ApiError> {
    let current = ctx.authed()?.session.clone();
    let wanted = ctx.path_param("sessionId");
    if wanted == "current" || wanted == current.id {
        return Ok(Reply::model(200, &SessionModel::of(&current, true)));
    }
    let wanted = parse_id(wanted).ok_or(ApiError::SessionNotFound)?;
    let found = live_sessions(app, ctx).await?.into_iter().find(|s| s.id == wanted);
    Ok(Reply::model(200, &SessionModel::of(&found.ok_or(ApiError::SessionNotFound)?, false)))
}

/// The caller's user's sessions that are still good: unexpired and not ended.
async fn live_sessions(app: &App, ctx: &Ctx) -> Result<Vec<Session>, ApiError> {
    live_sessions_of(app, &ctx.authed()?.user, ctx.now).await
}

/// `user`'s sessions that are still good, oldest first.
pub(super) async fn live_sessions_of(
    app: &App,
    user: &crate::domain::User,
    now: crate::clock::Millis,
) -> Result<Vec<Session>, ApiError> {
    let mut sessions: Vec<Session> =
        app.store.sessions(&user.id).await?.into_iter().filter(|s| s.is_live(now) && s.survives(user)).collect();
    sessions.sort_by(|a, b| (a.created_at, &a.id).cmp(&(b.created_at, &b.id)));
    Ok(sessions)
}

/// Signs out everywhere: every session of the user confirmed up to now is over at once (the
/// items go with their expiry), in one write.
pub async fn delete_all(app: &App, ctx: &mut Ctx) -> Result<Reply, ApiError> {
    let change = UserChange::EndSessions(ctx.now + 1);
    let user = &ctx.authed()?.user;
    let also = Also::events(vec![app.event(ctx, &user.id, Action::SessionsDelete, "")]);
    match app.store.update_user(user, change, None, ctx.now, &also).await? {
        // Refused only when a later end already holds: these sessions are over either way.
        Updated::Done | Updated::Rejected => Ok(signed_out(app, ctx)),
        _ => Err(ApiError::UserNotFound),
    }
}

fn signed_out(app: &App, ctx: &Ctx) -> Reply {
    let mut reply = Reply::no_content().header("X-Fallback-Cookies", "[]");
    for cookie in session_cookies(&app.config.session_cookie(), "", 0, ctx.secure) {
        reply = reply.header("Set-Cookie", cookie);
    }
    reply
}

/// Appwrite sends the session in `X-Fallback-Cookies` when the browser would not keep a
/// third-party cookie: no Origin (server or mobile clients) or an Origin on another host.
fn needs_fallback(ctx: &Ctx) -> bool {
    let Some(origin) = ctx.header("origin") else { return true };
    let origin_host = url::Url::parse(origin).ok().and_then(|u| u.host_str().map(str::to_string));
    let api_host = ctx.header("host").map(|h| h.rsplit_once(':').map_or(h, |(host, _)| host).to_string());
    origin_host.is_none() || origin_host != api_host
}
