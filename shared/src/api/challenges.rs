//! `POST/PUT /account/mfa/challenges`: send or prepare a challenge, then complete it.

use super::{models, App};
use crate::delivery::templates;
use crate::domain::crypto::{constant_time_eq, random_digits};
use crate::domain::limits::{CHALLENGE_PER_USER, CODE_ATTEMPTS_PER_IP, SMS_PER_PHONE};
use crate::domain::values::parse_otp;
use crate::domain::{challenge::CODE_DIGITS, recovery, totp, Challenge, Factor};
use crate::error::ApiError;
use crate::http::{Ctx, Reply};
use crate::store::{ChallengeWin, Spend};

pub async fn create(app: &App, ctx: &mut Ctx) -> Result<Reply, ApiError> {
    let factor = ctx.parsed("factor", Factor::parse_challenge)?;
    let user = ctx.authed()?.user.clone();
    let mut challenge = Challenge::new(&user.id, factor, ctx.now, app.config.challenge_ttl);
    let message = match factor {
        Factor::Email => {
            let email = user.email.clone().ok_or(ApiError::EmailNotFound)?;
            if !user.email_verified {
                return Err(ApiError::EmailNotVerified);
            }
            Some((email, templates::email_challenge as fn(&str, &str, &str, i64) -> _))
        }
        Factor::Phone => {
            let phone = user.phone.clone().ok_or(ApiError::PhoneNotFound)?;
            if !user.phone_verified {
                return Err(ApiError::PhoneNotVerified);
            }
            Some((phone, templates::sms_challenge as fn(&str, &str, &str, i64) -> _))
        }
        Factor::Totp if !user.totp_verified() => return Err(ApiError::AuthenticatorNotFound),
        Factor::RecoveryCode if user.recovery_codes.is_empty() => return Err(ApiError::RecoveryCodesNotFound),
        Factor::Totp | Factor::RecoveryCode => None,
        Factor::Password => return Err(ApiError::AuthMethodUnsupported),
    };
    app.limit(ctx, CHALLENGE_PER_USER, &user.id).await?;
    if let Some((to, render)) = message {
        if factor == Factor::Phone {
            app.limit(ctx, SMS_PER_PHONE, &to).await?;
        }
        let code = random_digits(CODE_DIGITS);
        challenge.code_hash = Some(app.keys.code_hash(&challenge.code_context(), &code));
        let message = render(&app.config.project_name, &to, &code, app.config.challenge_ttl);
        // Sent before it is stored: a failed send leaves no challenge that could be completed.
        app.sender.send(&message).await.map_err(|e| ApiError::DeliveryFailed(e.to_string()))?;
    }
    app.store.put_challenge(&challenge).await?;
    Ok(Reply::json(201, models::challenge(&challenge)))
}

pub async fn complete(app: &App, ctx: &mut Ctx) -> Result<Reply, ApiError> {
    let challenge_id = ctx.parsed("challengeId", |raw| {
        crate::domain::values::parse_id(raw).ok_or("Value must be a valid challenge id")
    })?;
    let otp = ctx.parsed("otp", parse_otp)?;
    let authed = ctx.authed()?.clone();
    let user = &authed.user;

    // Every budget is spent before the code is compared, so parallel guesses cannot
    // exceed them.
    let ip = ctx.ip.clone();
    app.limit(ctx, CODE_ATTEMPTS_PER_IP, &ip).await?;
    app.code_attempt(ctx, &user.id).await?;
    let challenge =
        app.store.take_challenge_attempt(&user.id, &challenge_id, ctx.now).await?.ok_or(ApiError::InvalidToken)?;

    let spend = match challenge.factor {
        Factor::Email | Factor::Phone => {
            let expected = challenge.code_hash.as_deref().unwrap_or_default();
            let given = app.keys.code_hash(&challenge.code_context(), &otp);
            constant_time_eq(expected, &given).then_some(Spend::Nothing)
        }
        Factor::Totp => {
            let authenticator = user.totp.as_ref().filter(|a| a.verified).ok_or(ApiError::InvalidToken)?;
            let secret = app.totp_secret(user, authenticator)?;
            totp::accept(&secret, &otp, ctx.now, authenticator.last_step).map(Spend::TotpStep)
        }
        Factor::RecoveryCode => {
            let given = recovery::hash(&app.keys, &user.id, &otp);
            // Compare against every code so timing does not reveal which one matched.
            let found = user.recovery_codes.iter().fold(false, |hit, h| constant_time_eq(h, &given) | hit);
            found.then_some(Spend::RecoveryCode(given))
        }
        Factor::Password => None,
    }
    .ok_or(ApiError::InvalidToken)?;

    let win = ChallengeWin {
        user_id: user.id.clone(),
        challenge_id: challenge.id.clone(),
        session_hash: authed.session.secret_hash.clone(),
        factor: challenge.factor,
        spend,
        now: ctx.now,
    };
    let session = app.store.finish_challenge(&win).await?.ok_or(ApiError::InvalidToken)?;
    app.code_success(ctx, &user.id).await;
    Ok(Reply::json(200, models::session(&session, true)))
}
