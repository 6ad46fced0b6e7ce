//! Email + password sessions, and signing out.

use serde_json::json;

use super::{models, App};
use crate::domain::crypto::{new_id, random_secret, sha256_hex};
use crate::domain::limits::{LOGIN_PER_EMAIL, LOGIN_PER_IP};
use crate::domain::values::parse_email;
use crate::domain::{Factor, Session};
use crate::error::ApiError;
use crate::http::response::session_cookies;
use crate::http::{Credentials, Ctx, Reply};

pub async fn create(app: &App, ctx: &mut Ctx) -> Result<Reply, ApiError> {
    if app.authenticate(ctx).await?.is_some() {
        return Err(ApiError::SessionAlreadyExists);
    }
    let email = ctx.parsed("email", parse_email)?;
    let plain = ctx.string("password")?;
    let ip = ctx.ip.clone();
    app.limit(ctx, LOGIN_PER_IP, &ip).await?;
    app.limit(ctx, LOGIN_PER_EMAIL, &email).await?;

    let user = app.store.user_by_email(&email).await?;
    let stored = user.as_ref().map(|u| u.password_hash.clone());
    if !super::account::password_matches(plain, stored).await? {
        return Err(ApiError::InvalidCredentials);
    }
    let user = user.ok_or(ApiError::InvalidCredentials)?;
    app.store.clear(&LOGIN_PER_EMAIL.counter_key(&email, ctx.now)).await?;

    let secret = random_secret();
    let session = Session {
        id: new_id(),
        user_id: user.id.clone(),
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
    app.store.create_session(&session).await?;

    let value = Credentials { user_id: user.id, secret }.encode();
    let name = app.config.session_cookie();
    let mut reply = Reply::json(201, models::session(&session, true));
    for cookie in session_cookies(&name, &value, session.expire, ctx.secure) {
        reply = reply.header("Set-Cookie", cookie);
    }
    if needs_fallback(ctx) {
        reply = reply.header("X-Fallback-Cookies", json!({ name: value }).to_string());
    }
    Ok(reply)
}

pub async fn delete_one(app: &App, ctx: &mut Ctx) -> Result<Reply, ApiError> {
    let authed = ctx.authed()?;
    let current = authed.session.id.clone();
    let target = match ctx.path_param("sessionId") {
        "current" => current.clone(),
        id => id.to_string(),
    };
    if !app.store.delete_session(&authed.user.id, &target).await? {
        return Err(ApiError::SessionNotFound);
    }
    Ok(if target == current { signed_out(app, ctx) } else { Reply::no_content() })
}

pub async fn delete_all(app: &App, ctx: &mut Ctx) -> Result<Reply, ApiError> {
    app.store.delete_sessions(&ctx.authed()?.user.id, None).await?;
    Ok(signed_out(app, ctx))
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
