//! `POST/GET /account`, `PATCH /account/email`, `PATCH /account/phone`.

use serde::Deserialize;

use super::budget::{Budget, Charged};
use super::models::Account;
use super::App;
use crate::domain::activity::Action;
use crate::domain::limits::{ACCOUNT_CREATE_PER_IP, ADDRESS_CHANGES_PER_IP, PASSWORD_CHECKS_PER_USER};
use crate::domain::password;
use crate::domain::values::{Email, Name, NewPassword, NewUserId, Phone};
use crate::domain::User;
use crate::error::ApiError;
use crate::hashing;
use crate::http::{Ctx, Reply};
use crate::store::{updated_user, Also, Lookup, SessionUpgrade, Updated, UserChange};

/// Argon2id is CPU-bound: it runs on the hashing threads, off the async executor.
pub(super) async fn hash_password(plain: String) -> Result<String, ApiError> {
    Ok(hashing::run(move || password::hash(&plain)).await?)
}

pub(super) async fn password_matches(plain: String, stored: Option<String>) -> Result<bool, ApiError> {
    hashing::run(move || match stored {
        Some(stored) => password::verify(&plain, &stored),
        None => {
            password::verify_against_nobody(&plain);
            false
        }
    })
    .await
    .map_err(ApiError::from)
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct CreateAccount {
    user_id: NewUserId,
    email: Email,
    password: NewPassword,
    name: Option<Name>,
}

/// The new address of an email or phone change, and the password that confirms it.
#[derive(Deserialize)]
struct ChangeEmail {
    email: Email,
    password: String,
}

#[derive(Deserialize)]
struct ChangePhone {
    phone: Phone,
    password: String,
}

pub async fn create(app: &App, ctx: &mut Ctx) -> Result<Reply, ApiError> {
    let CreateAccount { user_id, email, password, name } = ctx.params()?;
    let budget = Budget::default().every(ACCOUNT_CREATE_PER_IP, &ctx.ip);
    let counted = app.store.count(&budget.success(ctx.now).into()).await?;
    budget.counted(counted, ctx.now)?;
    let user = User {
        id: user_id.into_inner(),
        created_at: ctx.now,
        updated_at: ctx.now,
        name: name.map(Name::into_inner).unwrap_or_default(),
        email: Some(email.into_inner()),
        email_verified: false,
        phone: None,
        phone_verified: false,
        password_hash: hash_password(password.into_inner()).await?,
        password_updated_at: ctx.now,
        mfa: false,
        mfa_updated_at: None,
        authenticators: vec![],
        recovery_codes: vec![],
        sessions_valid_from: 0,
        added_by: Default::default(),
        prefs: Default::default(),
    };
    if !app.store.create_user(&user).await? {
        return Err(ApiError::UserAlreadyExists);
    }
    Ok(Reply::model(201, &Account::of(&user)))
}

pub async fn get(_app: &App, ctx: &mut Ctx) -> Result<Reply, ApiError> {
    Ok(Reply::model(200, &Account::of(&ctx.authed()?.user)))
}

pub async fn update_email(app: &App, ctx: &mut Ctx) -> Result<Reply, ApiError> {
    let ChangeEmail { email, password } = ctx.params()?;
    change_target(app, ctx, UserChange::Email(email.into_inner()), password, ApiError::EmailTaken).await
}

pub async fn update_phone(app: &App, ctx: &mut Ctx) -> Result<Reply, ApiError> {
    let ChangePhone { phone, password } = ctx.params()?;
    change_target(app, ctx, UserChange::Phone(phone.into_inner()), password, ApiError::PhoneTaken).await
}

fn password_budget(ctx: &Ctx) -> Budget {
    Budget::default().every(PASSWORD_CHECKS_PER_USER, ctx.caller_id()).every(ADDRESS_CHANGES_PER_IP, &ctx.ip)
}

pub fn change_lookup(ctx: &Ctx) -> Lookup {
    Lookup { counters: password_budget(ctx).counters(ctx.now), ..Lookup::default() }
}

/// Changing where codes go needs the password, and leaves the new address unverified.
async fn change_target(
    app: &App,
    ctx: &mut Ctx,
    change: UserChange,
    plain: String,
    taken: ApiError,
) -> Result<Reply, ApiError> {
    let mut budget = password_budget(ctx);
    budget.check_in(ctx)?;
    let authed = ctx.authed()?;
    let user = &authed.user;
    // A new address becomes a factor once verified, and replacing a verified one takes a
    // factor away: under enforced MFA either needs fresh proof.
    if !authed.session.may_add_factor(user, ctx.now) {
        return Err(ApiError::ChallengeRequired);
    }
    // Every check is counted before its hash runs: a session is no licence to run Argon2
    // (or to probe which addresses have accounts) without limit.
    let counted = app.store.count(&budget.failure(ctx.now).into()).await?;
    budget.counted(counted, ctx.now)?;
    if !password_matches(plain, Some(user.password_hash.clone())).await? {
        return Err(ApiError::InvalidCredentials);
    }
    let upgrade = SessionUpgrade::of(&authed.session);
    let detail = if matches!(change, UserChange::Email(_)) { "email" } else { "phone" };
    let also = Also::events(vec![app.event(ctx, &user.id, Action::UserUpdate, detail)]);
    match app.store.update_user(user, change.clone(), Some(upgrade.clone()), ctx.now, &also).await? {
        Updated::Done => Ok(Reply::model(200, &Account::of(&updated_user(user, &change, Some(&upgrade), ctx.now)))),
        Updated::Taken => Err(taken),
        Updated::Limited(i) => Err(budget.refused_error(i, ctx.now)),
        // The address changed since this request read it.
        Updated::Rejected => Err(ApiError::UpdateConflict),
        Updated::SessionEnded => Err(ApiError::Unauthorized),
        Updated::NotFound => Err(ApiError::UserNotFound),
    }
}
