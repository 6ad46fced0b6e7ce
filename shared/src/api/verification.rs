//! Email and phone verification.

use super::{models, App};
use crate::delivery::templates;
use crate::domain::crypto::{new_id, random_digits, random_secret, sha256_hex};
use crate::domain::limits::{
    CODE_ATTEMPTS_PER_IP, EMAIL_VERIFICATION_PER_USER, PHONE_VERIFICATION_PER_IP, PHONE_VERIFICATION_PER_USER,
    SMS_PER_PHONE,
};
use crate::domain::values::{parse_id, parse_otp, parse_redirect_url};
use crate::domain::verification::{EMAIL_TOKEN_TTL, MAX_ATTEMPTS, PHONE_TOKEN_TTL};
use crate::domain::{Channel, VerificationToken};
use crate::error::ApiError;
use crate::http::{Ctx, Reply};

pub async fn create_email(app: &App, ctx: &mut Ctx) -> Result<Reply, ApiError> {
    let mut url = ctx.parsed("url", |raw| parse_redirect_url(raw, &app.config.redirect_hosts))?;
    let user = ctx.authed()?.user.clone();
    let email = user.email.clone().ok_or(ApiError::EmailNotFound)?;
    if user.email_verified {
        return Err(ApiError::EmailAlreadyVerified);
    }
    app.limit(ctx, EMAIL_VERIFICATION_PER_USER, &user.id).await?;

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
    url.query_pairs_mut()
        .append_pair("userId", &user.id)
        .append_pair("secret", &secret)
        .append_pair("expire", &crate::clock::iso(token.expire));
    let message = templates::email_verification(&app.config.project_name, &email, url.as_str(), EMAIL_TOKEN_TTL);
    issue(app, &token, &message).await?;
    Ok(Reply::json(201, models::token(&token)))
}

pub async fn confirm_email(app: &App, ctx: &mut Ctx) -> Result<Reply, ApiError> {
    let (user_id, secret) = user_and_secret(ctx)?;
    if app.store.user(&user_id).await?.is_none() {
        return Err(ApiError::UserNotFound);
    }
    // The secret carries 256 bits: no attempt counting needed, so no one can burn it.
    let token = app.store.redeem_token(&user_id, Channel::Email, &sha256_hex(&secret), ctx.now).await?;
    Ok(Reply::json(200, models::token(&token.ok_or(ApiError::InvalidToken)?)))
}

pub async fn create_phone(app: &App, ctx: &mut Ctx) -> Result<Reply, ApiError> {
    let user = ctx.authed()?.user.clone();
    let phone = user.phone.clone().ok_or(ApiError::PhoneNotFound)?;
    if user.phone_verified {
        return Err(ApiError::PhoneAlreadyVerified);
    }
    let ip = ctx.ip.clone();
    app.limit(ctx, PHONE_VERIFICATION_PER_USER, &user.id).await?;
    app.limit(ctx, PHONE_VERIFICATION_PER_IP, &ip).await?;
    app.limit(ctx, SMS_PER_PHONE, &phone).await?;

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
    issue(app, &token, &message).await?;
    Ok(Reply::json(201, models::token(&token)))
}

pub async fn confirm_phone(app: &App, ctx: &mut Ctx) -> Result<Reply, ApiError> {
    let (user_id, code) = user_and_secret(ctx)?;
    if app.store.user(&user_id).await?.is_none() {
        return Err(ApiError::UserNotFound);
    }
    // Anyone may call this with a user id: guesses are bounded by the token's own five
    // attempts and a per-IP budget, never by the user's MFA wrong-code count, which a
    // stranger could otherwise exhaust to keep the user from signing in.
    let ip = ctx.ip.clone();
    app.limit(ctx, CODE_ATTEMPTS_PER_IP, &ip).await?;
    let token = app.store.take_token_attempt(&user_id, Channel::Phone, ctx.now).await?.ok_or(ApiError::InvalidToken)?;
    let hash = app.keys.code_hash(&VerificationToken::code_context(&user_id, &token.id), &code);
    let token = app.store.redeem_token(&user_id, Channel::Phone, &hash, ctx.now).await?;
    Ok(Reply::json(200, models::token(&token.ok_or(ApiError::InvalidToken)?)))
}

/// The message goes out before the token is stored: a failed send leaves no usable token,
/// and a failed store leaves only a message whose secret verifies nothing.
async fn issue(app: &App, token: &VerificationToken, message: &crate::delivery::Message) -> Result<(), ApiError> {
    app.sender.send(message).await.map_err(|e| ApiError::DeliveryFailed(e.to_string()))?;
    app.store.put_token(token).await?;
    Ok(())
}

fn user_and_secret(ctx: &Ctx) -> Result<(String, String), ApiError> {
    let user_id = ctx.parsed("userId", |raw| parse_id(raw).ok_or("Invalid user id"))?;
    let secret = ctx.parsed("secret", parse_otp)?;
    Ok((user_id, secret))
}
