//! `POST`/`PUT /account/recovery`: password reset by email. The answer to a request is the
//! same whether or not the email has an account; the link's secret (256 bits) is stored as a
//! hash, works once and for an hour, and a reset ends every session of the user (MFA is
//! still asked at the next sign-in).

use serde::Deserialize;

use super::account::hash_password;
use super::budget::{Budget, Charged};
use super::models::Token;
use super::App;
use crate::delivery::templates;
use crate::domain::activity::Action;
use crate::domain::crypto::{constant_time_eq, new_id, random_secret, sha256_hex};
use crate::domain::limits::{RECOVERY_PER_EMAIL, RECOVERY_PER_IP, RESET_PER_IP};
use crate::domain::values::{parse_redirect_url, Email, Id, NewPassword};
use crate::domain::verification::{MAX_ATTEMPTS, RECOVERY_TOKEN_TTL};
use crate::domain::{Channel, VerificationToken};
use crate::error::ApiError;
use crate::http::{Ctx, Reply};
use crate::store::{Also, Lookup};

#[derive(Deserialize)]
struct CreateRecovery {
    email: Email,
    url: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Reset {
    user_id: Id,
    secret: String,
    password: NewPassword,
}

fn create_budget(ctx: &Ctx, email: &str) -> Budget {
    Budget::default().every(RECOVERY_PER_EMAIL, email).every(RECOVERY_PER_IP, &ctx.ip)
}

pub async fn create(app: &App, ctx: &mut Ctx) -> Result<Reply, ApiError> {
    let CreateRecovery { email, url } = ctx.params()?;
    let mut url =
        parse_redirect_url(&url, &app.config.redirect_hosts).map_err(|rule| ApiError::invalid("url", rule))?;
    let email = email.into_inner();
    let mut budget = create_budget(ctx, &email);
    let lookup = Lookup { login: Some(email.clone()), counters: budget.counters(ctx.now), ..Lookup::default() };
    app.load(ctx, lookup, false).await?;
    budget.check_in(ctx)?;
    let secret = random_secret();
    let mut token = VerificationToken {
        id: new_id(),
        // Without an account, a stand-in id derived from the address: the same for every
        // request about it, like a user's, so the answer tells nothing.
        user_id: app.keys.digest("recovery-stand-in", &email)[..20].to_string(),
        channel: Channel::Recovery,
        target: email.clone(),
        secret_hash: sha256_hex(&secret),
        attempts_left: MAX_ATTEMPTS,
        created_at: ctx.now,
        expire: ctx.now + RECOVERY_TOKEN_TTL,
    };
    let Some(login) = ctx.found.login.take() else {
        let counted = app.store.count(&budget.success(ctx.now).into()).await?;
        budget.counted(counted, ctx.now)?;
        return Ok(Reply::model(201, &Token::of(&token)));
    };
    token.user_id = login.user_id;
    super::verification::link(&mut url, &token, &secret);
    let message = templates::password_recovery(&app.config.project_name, &email, url.as_str(), RECOVERY_TOKEN_TTL);
    let event = app.event(ctx, &token.user_id, Action::PasswordResetCreate, "");
    super::verification::issue(app, &token, &message, &budget, vec![event], ctx.now).await?;
    Ok(Reply::model(201, &Token::of(&token)))
}

pub async fn reset(app: &App, ctx: &mut Ctx) -> Result<Reply, ApiError> {
    let Reset { user_id, secret, password } = ctx.params()?;
    let user_id = user_id.into_inner();
    let mut budget = Budget::default().every(RESET_PER_IP, &ctx.ip);
    let lookup = Lookup {
        user: Some(user_id.clone()),
        token: Some((user_id.clone(), Channel::Recovery)),
        counters: budget.counters(ctx.now),
        ..Lookup::default()
    };
    app.load(ctx, lookup, false).await?;
    budget.check_in(ctx)?;
    if ctx.found.user.is_none() {
        return Err(ApiError::UserNotFound);
    }
    let token = ctx.found.token.take().filter(|t| t.is_usable(ctx.now)).ok_or(ApiError::InvalidToken)?;
    // The secret carries 256 bits: guessing is hopeless, and the per-address budget bounds
    // the hashes a client can make us run.
    if !constant_time_eq(&token.secret_hash, &sha256_hex(&secret)) {
        return Err(ApiError::InvalidToken);
    }
    let counted = app.store.count(&budget.success(ctx.now).into()).await?;
    budget.counted(counted, ctx.now)?;
    let hash = hash_password(password.into_inner()).await?;
    let event = app.event(ctx, &user_id, Action::PasswordReset, "");
    let reset = app.store.reset_password(&token, &hash, ctx.now, &Also::events(vec![event])).await?;
    Budget::default().decided(reset, ctx.now, ApiError::InvalidToken)?;
    Ok(Reply::model(200, &Token::of(&token)))
}
