//! Email and phone verification.

use serde::Deserialize;

use super::budget::{Budget, Charged};
use super::models::Token;
use super::App;
use crate::delivery::templates;
use crate::domain::activity::Action;
use crate::domain::crypto::{constant_time_eq, new_id, random_digits, random_secret, sha256_hex};
use crate::domain::limits::{
    CODE_ATTEMPTS_PER_IP, EMAIL_VERIFICATION_PER_USER, PHONE_VERIFICATION_PER_IP, PHONE_VERIFICATION_PER_USER,
    SMS_PER_PHONE,
};
use crate::domain::values::{parse_redirect_url, Id, Otp};
use crate::domain::verification::{EMAIL_TOKEN_TTL, MAX_ATTEMPTS, PHONE_TOKEN_TTL};
use crate::domain::{Channel, VerificationToken};
use crate::error::ApiError;
use crate::http::{Ctx, Reply};
use crate::store::Also;
use crate::store::Lookup;

fn email_budget(ctx: &Ctx) -> Budget {
    Budget::default().every(EMAIL_VERIFICATION_PER_USER, ctx.caller_id())
}

pub fn create_email_lookup(ctx: &Ctx) -> Lookup {
    Lookup { counters: email_budget(ctx).counters(ctx.now), ..Lookup::default() }
}

pub async fn create_email(app: &App, ctx: &mut Ctx) -> Result<Reply, ApiError> {
    let CreateEmailVerification { url } = ctx.params()?;
    let mut url =
        parse_redirect_url(&url, &app.config.redirect_hosts).map_err(|rule| ApiError::invalid("url", rule))?;
    let user = ctx.authed()?.user.clone();
    let email = user.email.clone().ok_or(ApiError::EmailNotFound)?;
    if user.email_verified {
        return Err(ApiError::EmailAlreadyVerified);
    }
    let mut budget = email_budget(ctx);
    budget.check_in(ctx)?;

    let secret = random_secret();
    let token = VerificationToken {
        id: new_id(),
        user_id: user.id.clone(),
        channel: Channel::Email,
        target: email.clone(),
        secret_hash: sha256_hex(&secret),
        attempts_left: MAX_ATTEMPTS,
        created_at: ctx.now,
        expire: ctx.now + EMAIL_TOKEN_TTL,
    };
    link(&mut url, &token, &secret);
    let message = templates::email_verification(&app.config.project_name, &email, url.as_str(), EMAIL_TOKEN_TTL);
    issue(app, &token, &message, &budget, Vec::new(), ctx.now).await?;
    Ok(Reply::model(201, &Token::of(&token)))
}

pub async fn confirm_email(app: &App, ctx: &mut Ctx) -> Result<Reply, ApiError> {
    let (user_id, secret) = user_and_secret(ctx)?;
    let token = user_token(app, ctx, &user_id, Channel::Email, &mut Budget::default()).await?;
    // The secret carries 256 bits: no attempt counting needed, so no one can burn it.
    if !constant_time_eq(&token.secret_hash, &sha256_hex(&secret)) {
        return Err(ApiError::InvalidToken);
    }
    let also = Also::events(vec![app.event(ctx, &user_id, Action::Verification, "email")]);
    let redeemed = app.store.redeem_token(&token, ctx.now, &also).await?;
    Budget::default().decided(redeemed, ctx.now, ApiError::InvalidToken)?;
    Ok(Reply::model(200, &Token::of(&token)))
}

/// Reads the user and its usable token of `channel` (with `budget`'s counters, checked).
async fn user_token(
    app: &App,
    ctx: &mut Ctx,
    user_id: &str,
    channel: Channel,
    budget: &mut Budget,
) -> Result<VerificationToken, ApiError> {
    let lookup = Lookup {
        user: Some(user_id.to_string()),
        token: Some((user_id.to_string(), channel)),
        counters: budget.counters(ctx.now),
        ..Lookup::default()
    };
    app.load(ctx, lookup, false).await?;
    if ctx.found.user.is_none() {
        return Err(ApiError::UserNotFound);
    }
    budget.check_in(ctx)?;
    ctx.found.token.take().filter(|t| t.is_usable(ctx.now)).ok_or(ApiError::InvalidToken)
}

fn phone_budget(ctx: &Ctx) -> Budget {
    Budget::default().every(PHONE_VERIFICATION_PER_USER, ctx.caller_id()).every(PHONE_VERIFICATION_PER_IP, &ctx.ip)
}

pub fn create_phone_lookup(ctx: &Ctx) -> Lookup {
    Lookup { counters: phone_budget(ctx).counters(ctx.now), ..Lookup::default() }
}

pub async fn create_phone(app: &App, ctx: &mut Ctx) -> Result<Reply, ApiError> {
    let user = ctx.authed()?.user.clone();
    let phone = user.phone.clone().ok_or(ApiError::PhoneNotFound)?;
    if user.phone_verified {
        return Err(ApiError::PhoneAlreadyVerified);
    }
    let mut budget = phone_budget(ctx);
    budget.check_in(ctx)?;
    let budget = budget.every(SMS_PER_PHONE, &phone);

    let code = random_digits(6);
    let id = new_id();
    let token = VerificationToken {
        secret_hash: app.keys.code_hash(&VerificationToken::code_context(&user.id, &id), &code),
        id,
        user_id: user.id.clone(),
        channel: Channel::Phone,
        target: phone.clone(),
        attempts_left: MAX_ATTEMPTS,
        created_at: ctx.now,
        expire: ctx.now + PHONE_TOKEN_TTL,
    };
    let message = templates::phone_verification(&app.config.project_name, &phone, &code, PHONE_TOKEN_TTL);
    issue(app, &token, &message, &budget, Vec::new(), ctx.now).await?;
    Ok(Reply::model(201, &Token::of(&token)))
}

pub async fn confirm_phone(app: &App, ctx: &mut Ctx) -> Result<Reply, ApiError> {
    let (user_id, code) = user_and_secret(ctx)?;
    // Anyone may call this with a user id: guesses are bounded by the token's own five
    // attempts and a per-IP budget, never by the user's MFA wrong-code count, which a
    // stranger could otherwise exhaust to keep the user from signing in.
    let mut budget = Budget::default().every(CODE_ATTEMPTS_PER_IP, &ctx.ip);
    let token = user_token(app, ctx, &user_id, Channel::Phone, &mut budget).await?;
    if !app.keys.code_matches(&VerificationToken::code_context(&user_id, &token.id), &code, &token.secret_hash) {
        let missed =
            app.store.miss_token(&user_id, Channel::Phone, &token.id, ctx.now, &budget.failure(ctx.now).into()).await?;
        budget.decided(missed, ctx.now, ApiError::InvalidToken)?;
        return Err(ApiError::InvalidToken);
    }
    let also = Also::from(budget.success(ctx.now)).and(app.event(ctx, &user_id, Action::Verification, "phone"));
    let redeemed = app.store.redeem_token(&token, ctx.now, &also).await?;
    budget.decided(redeemed, ctx.now, ApiError::InvalidToken)?;
    Ok(Reply::model(200, &Token::of(&token)))
}

/// The token is stored (and counted) before its message is sent, so that parallel
/// requests cannot outrun a limit; nobody knows its secret until the message arrives, and
/// if it cannot be sent, the token is withdrawn.
pub(super) async fn issue(
    app: &App,
    token: &VerificationToken,
    message: &crate::delivery::Message,
    budget: &Budget,
    events: Vec<crate::domain::activity::Event>,
    now: crate::clock::Millis,
) -> Result<(), ApiError> {
    let also = Also { counts: budget.success(now), events, ..Also::default() };
    let stored = app.store.put_token(token, &also).await?;
    budget.counted(stored, now)?;
    if let Err(e) = app.sender.send(message).await {
        if let Err(withdraw) = app.store.withdraw_token(token).await {
            tracing::warn!(error = %withdraw, "could not withdraw a token whose message failed");
        }
        return Err(ApiError::DeliveryFailed(e));
    }
    Ok(())
}

/// Adds what an emailed link proves to its `url`: whose token, its secret and its expiry.
pub(super) fn link(url: &mut url::Url, token: &VerificationToken, secret: &str) {
    url.query_pairs_mut()
        .append_pair("userId", &token.user_id)
        .append_pair("secret", secret)
        .append_pair("expire", &crate::clock::iso(token.expire));
}

/// A link's or SMS's proof: whose token, and its secret.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Redeem {
    user_id: Id,
    secret: Otp,
}

/// Where the verification link leads (checked against the allowed hosts).
#[derive(Deserialize)]
struct CreateEmailVerification {
    url: String,
}

fn user_and_secret(ctx: &Ctx) -> Result<(String, String), ApiError> {
    let Redeem { user_id, secret } = ctx.params()?;
    Ok((user_id.into_inner(), secret.into_inner()))
}
