//! `PATCH /account/name`, `GET`/`PATCH /account/prefs`, `PATCH /account/password`.

use serde::Deserialize;
use serde_json::{Map, Value};

use super::account::{hash_password, password_matches};
use super::budget::{Budget, Charged};
use super::models::Account;
use super::App;
use crate::domain::activity::Action;
use crate::domain::limits::PASSWORD_CHECKS_PER_USER;
use crate::domain::values::{Name, NewPassword};
use crate::error::ApiError;
use crate::http::{Ctx, Reply};
use crate::store::{updated_user, Also, Lookup, SessionUpgrade, Updated, UserChange};

#[derive(Deserialize)]
struct ChangeName {
    name: Name,
}

#[derive(Deserialize)]
struct ChangePrefs {
    prefs: Map<String, Value>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ChangePassword {
    password: NewPassword,
    old_password: Option<String>,
}

/// Applies `change` with the caller's session (and `also`), answering the account after it.
async fn change_account(
    app: &App,
    ctx: &Ctx,
    change: UserChange,
    upgrade: SessionUpgrade,
    also: &Also,
    budget: &Budget,
) -> Result<Reply, ApiError> {
    let user = &ctx.authed()?.user;
    match app.store.update_user(user, change.clone(), Some(upgrade.clone()), ctx.now, also).await? {
        Updated::Done => Ok(Reply::model(200, &Account::of(&updated_user(user, &change, Some(&upgrade), ctx.now)))),
        Updated::Limited(i) => Err(budget.refused_error(i, ctx.now)),
        Updated::SessionEnded => Err(ApiError::Unauthorized),
        Updated::NotFound => Err(ApiError::UserNotFound),
        Updated::Rejected | Updated::Taken => Err(ApiError::UpdateConflict),
    }
}

pub async fn update_name(app: &App, ctx: &mut Ctx) -> Result<Reply, ApiError> {
    let ChangeName { name } = ctx.params()?;
    let upgrade = SessionUpgrade::of(&ctx.authed()?.session);
    change_account(app, ctx, UserChange::Name(name.into_inner()), upgrade, &Also::NONE, &Budget::default()).await
}

pub async fn get_prefs(_app: &App, ctx: &mut Ctx) -> Result<Reply, ApiError> {
    Ok(Reply::model(200, &ctx.authed()?.user.prefs))
}

/// Replaces the preferences whole, as Appwrite does; the body limit bounds their size.
pub async fn update_prefs(app: &App, ctx: &mut Ctx) -> Result<Reply, ApiError> {
    let ChangePrefs { prefs } = ctx.params()?;
    let upgrade = SessionUpgrade::of(&ctx.authed()?.session);
    change_account(app, ctx, UserChange::Prefs(prefs), upgrade, &Also::NONE, &Budget::default()).await
}

fn password_budget(ctx: &Ctx) -> Budget {
    Budget::default().every(PASSWORD_CHECKS_PER_USER, ctx.caller_id())
}

pub fn password_lookup(ctx: &Ctx) -> Lookup {
    Lookup { counters: password_budget(ctx).counters(ctx.now), ..Lookup::default() }
}

/// A new password, confirmed with the current one. Every other session of the user ends
/// (whoever knew the old password is out); the one that changed it stays.
pub async fn update_password(app: &App, ctx: &mut Ctx) -> Result<Reply, ApiError> {
    let ChangePassword { password, old_password } = ctx.params()?;
    let mut budget = password_budget(ctx);
    budget.check_in(ctx)?;
    let user = ctx.authed()?.user.clone();
    // Counted before the hash runs, like every password check of a signed-in user.
    let counted = app.store.count(&budget.failure(ctx.now).into()).await?;
    budget.counted(counted, ctx.now)?;
    let old = old_password.unwrap_or_default();
    if !password_matches(old, Some(user.password_hash.clone())).await? {
        return Err(ApiError::InvalidCredentials);
    }
    let hash = hash_password(password.into_inner()).await?;
    let upgrade = SessionUpgrade { end_other_sessions: true, ..SessionUpgrade::of(&ctx.authed()?.session) };
    let also = Also::events(vec![app.event(ctx, &user.id, Action::PasswordUpdate, "")]);
    change_account(app, ctx, UserChange::Password(hash), upgrade, &also, &budget).await
}
