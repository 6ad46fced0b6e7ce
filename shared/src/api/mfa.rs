//! MFA switch, factor list, TOTP authenticator and recovery codes.

use serde::Deserialize;

use super::budget::{self, Charged};
use super::models::{Account, MfaFactors, MfaRecoveryCodes, MfaType};
use super::App;
use crate::domain::activity::Action;
use crate::domain::values::Otp;
use crate::domain::{recovery, totp, Authenticator, AuthenticatorKind, Factor, User};
use crate::error::ApiError;
use crate::http::{Ctx, Reply};
use crate::store::{updated_user, Also, Lookup, SessionUpgrade, Updated, UserChange};

#[derive(Deserialize)]
struct UpdateMfa {
    mfa: bool,
}

#[derive(Deserialize)]
struct AuthenticatorCode {
    otp: Otp,
}

pub async fn update(app: &App, ctx: &mut Ctx) -> Result<Reply, ApiError> {
    let UpdateMfa { mfa: enable } = ctx.params()?;
    let authed = ctx.authed()?;
    // Turning enforced MFA off is as sensitive as removing a factor: ask for fresh proof.
    if !enable && authed.user.mfa_enforced() && !authed.session.has_recent_challenge(ctx.now) {
        return Err(ApiError::ChallengeRequired);
    }
    // The session that switches MFA on counts the factors already verified, so it never
    // locks itself out.
    let upgrade =
        enable.then(|| SessionUpgrade { add: authed.user.verified_factors(), ..SessionUpgrade::of(&authed.session) });
    let change = UserChange::Mfa(enable);
    let event = app.event(ctx, &authed.user.id, Action::MfaUpdate, if enable { "on" } else { "off" });
    match app
        .store
        .update_user(&authed.user, change.clone(), upgrade.clone(), ctx.now, &Also::events(vec![event]))
        .await?
    {
        Updated::Done => {
            Ok(Reply::model(200, &Account::of(&updated_user(&authed.user, &change, upgrade.as_ref(), ctx.now))))
        }
        Updated::SessionEnded => Err(ApiError::Unauthorized),
        _ => Err(ApiError::UserNotFound),
    }
}

pub async fn factors(_app: &App, ctx: &mut Ctx) -> Result<Reply, ApiError> {
    Ok(Reply::model(200, &MfaFactors::of(&ctx.authed()?.user)))
}

/// The `{type}` of an authenticator route.
pub(super) fn authenticator_kind(ctx: &Ctx) -> Result<AuthenticatorKind, ApiError> {
    AuthenticatorKind::parse(ctx.path_param("type")).map_err(|rule| ApiError::invalid("type", rule))
}

/// The TOTP secret of a user's authenticator, decrypted, and the newest step it accepted.
pub(super) fn totp_secret(
    app: &App,
    user: &User,
    authenticator: &Authenticator,
) -> Result<(Vec<u8>, Option<u64>), ApiError> {
    let (sealed, last_step) =
        authenticator.totp_secret().ok_or_else(|| ApiError::Internal("not a TOTP authenticator".into()))?;
    let secret = match app.keys.decrypt(sealed, &user.id) {
        Some(secret) => secret,
        // Sealed under a key no longer configured: the authenticator must be set up again.
        None if !app.keys.knows(sealed) => return Err(ApiError::KeyRetired),
        None => return Err(ApiError::Internal("TOTP secret does not decrypt under its server key".into())),
    };
    Ok((secret, last_step))
}

pub async fn create_authenticator(app: &App, ctx: &mut Ctx) -> Result<Reply, ApiError> {
    if authenticator_kind(ctx)? == AuthenticatorKind::Webauthn {
        return super::webauthn::start_registration(app, ctx).await;
    }
    let authed = ctx.authed()?;
    let user = &authed.user;
    if user.totp_verified() {
        return Err(ApiError::AuthenticatorAlreadyVerified);
    }
    if !authed.session.may_add_factor(user, ctx.now) {
        return Err(ApiError::ChallengeRequired);
    }
    let secret = totp::new_secret();
    let authenticator = Authenticator::totp(app.keys.encrypt(&secret, &user.id), ctx.now);
    let change = UserChange::PutAuthenticator(authenticator);
    // Not a factor until verified: the verification is what the log records.
    match app.store.update_user(user, change, Some(SessionUpgrade::of(&authed.session)), ctx.now, &Also::NONE).await? {
        Updated::Done => {}
        Updated::Rejected => return Err(ApiError::AuthenticatorAlreadyVerified),
        Updated::SessionEnded => return Err(ApiError::Unauthorized),
        _ => return Err(ApiError::UserNotFound),
    }
    let account = user.email.clone().unwrap_or_else(|| user.id.clone());
    let shown = MfaType { secret: totp::base32(&secret), uri: totp::uri(&app.config.project_name, &account, &secret) };
    Ok(Reply::model(200, &shown))
}

pub fn verify_lookup(ctx: &Ctx) -> Lookup {
    match AuthenticatorKind::parse(ctx.path_param("type")) {
        Ok(AuthenticatorKind::Webauthn) => super::webauthn::finish_lookup(ctx),
        _ => Lookup { counters: budget::code_checks(ctx).counters(ctx.now), ..Lookup::default() },
    }
}

pub async fn verify_authenticator(app: &App, ctx: &mut Ctx) -> Result<Reply, ApiError> {
    if authenticator_kind(ctx)? == AuthenticatorKind::Webauthn {
        return super::webauthn::finish_registration(app, ctx).await;
    }
    let AuthenticatorCode { otp } = ctx.params()?;
    let authed = ctx.authed()?.clone();
    let user = &authed.user;
    let authenticator = user.totp().ok_or(ApiError::AuthenticatorNotFound)?;
    if authenticator.verified {
        return Err(ApiError::AuthenticatorAlreadyVerified);
    }
    if !authed.session.may_add_factor(user, ctx.now) {
        return Err(ApiError::ChallengeRequired);
    }
    let (secret, last_step) = totp_secret(app, user, authenticator)?;
    let mut budget = budget::code_checks(ctx);
    budget.check_in(ctx)?;
    let Some(step) = totp::accept(&secret, &otp, ctx.now, last_step) else {
        let counted = app.store.count(&budget.failure(ctx.now).into()).await?;
        budget.decided(counted, ctx.now, ApiError::InvalidToken)?;
        return Err(ApiError::InvalidToken);
    };
    // Enrolling proves possession of the new authenticator only, not of the factors the
    // account already had: it adds `totp` but does not count as a recent challenge.
    let upgrade = SessionUpgrade { add: vec![Factor::Totp], ..SessionUpgrade::of(&authed.session) };
    let sealed = authenticator.totp_secret().map(|(sealed, _)| sealed.to_string()).unwrap_or_default();
    let change = UserChange::VerifyAuthenticator { step, secret_sealed: sealed };
    let also = Also::from(budget.success(ctx.now)).and(app.event(ctx, &user.id, Action::FactorAdd, "totp"));
    match app.store.update_user(user, change.clone(), Some(upgrade.clone()), ctx.now, &also).await? {
        Updated::Done => Ok(Reply::model(200, &Account::of(&updated_user(user, &change, Some(&upgrade), ctx.now)))),
        Updated::Limited(i) => Err(budget.refused_error(i, ctx.now)),
        Updated::SessionEnded => Err(ApiError::Unauthorized),
        // Another request verified it, or used this step, first.
        _ => Err(ApiError::InvalidToken),
    }
}

/// Removes the user's authenticators of the type: the TOTP authenticator, or every security
/// key (one at a time: `DELETE .../webauthn/{authenticatorId}`).
pub async fn delete_authenticator(app: &App, ctx: &mut Ctx) -> Result<Reply, ApiError> {
    let kind = authenticator_kind(ctx)?;
    let authed = ctx.authed()?;
    if !authed.session.has_recent_challenge(ctx.now) {
        return Err(ApiError::ChallengeRequired);
    }
    let ids: Vec<String> =
        authed.user.authenticators.iter().filter(|a| a.kind() == kind).map(|a| a.id.clone()).collect();
    if ids.is_empty() {
        return Err(ApiError::AuthenticatorNotFound);
    }
    remove(app, ctx, UserChange::RemoveAuthenticators { ids, factor: kind.factor(), last: true }).await
}

/// Carries out the removal of authenticators, ending the user's other sessions.
pub(super) async fn remove(app: &App, ctx: &Ctx, change: UserChange) -> Result<Reply, ApiError> {
    let authed = ctx.authed()?;
    let factor = match &change {
        UserChange::RemoveAuthenticators { factor, .. } => factor.as_str(),
        _ => "",
    };
    let also = Also::events(vec![app.event(ctx, &authed.user.id, Action::FactorRemove, factor)]);
    match app.store.update_user(&authed.user, change, Some(ending_other_sessions(ctx)?), ctx.now, &also).await? {
        Updated::Done => Ok(Reply::no_content()),
        Updated::SessionEnded => Err(ApiError::Unauthorized),
        Updated::NotFound => Err(ApiError::UserNotFound),
        _ => Err(ApiError::AuthenticatorNotFound),
    }
}

/// Removing or replacing a factor ends the user's other sessions (OWASP ASVS 7.4.3): whoever
/// held one with the old factor is out; the session that made the change stays.
fn ending_other_sessions(ctx: &Ctx) -> Result<SessionUpgrade, ApiError> {
    Ok(SessionUpgrade { end_other_sessions: true, ..SessionUpgrade::of(&ctx.authed()?.session) })
}

pub(super) fn hashed(app: &App, user_id: &str, codes: &[String]) -> Vec<String> {
    codes.iter().map(|c| recovery::hash(&app.keys, user_id, c)).collect()
}

pub async fn create_recovery_codes(app: &App, ctx: &mut Ctx) -> Result<Reply, ApiError> {
    let authed = ctx.authed()?;
    let user = &authed.user;
    if !user.recovery_codes.is_empty() {
        return Err(ApiError::RecoveryCodesAlreadyExist);
    }
    if !authed.session.may_add_factor(user, ctx.now) {
        return Err(ApiError::ChallengeRequired);
    }
    let codes = recovery::generate();
    let change = UserChange::CreateRecoveryCodes(hashed(app, &user.id, &codes));
    let also = Also::events(vec![app.event(ctx, &user.id, Action::RecoveryCodesCreate, "")]);
    match app.store.update_user(user, change, Some(SessionUpgrade::of(&authed.session)), ctx.now, &also).await? {
        Updated::Done => Ok(Reply::model(201, &MfaRecoveryCodes { recovery_codes: codes })),
        Updated::NotFound => Err(ApiError::UserNotFound),
        Updated::SessionEnded => Err(ApiError::Unauthorized),
        _ => Err(ApiError::RecoveryCodesAlreadyExist),
    }
}

pub async fn get_recovery_codes(_app: &App, ctx: &mut Ctx) -> Result<Reply, ApiError> {
    let authed = ctx.authed()?;
    if !authed.session.has_recent_challenge(ctx.now) {
        return Err(ApiError::ChallengeRequired);
    }
    if authed.user.recovery_codes.is_empty() {
        return Err(ApiError::RecoveryCodesNotFound);
    }
    Err(ApiError::RecoveryCodesNotReadable)
}

pub async fn replace_recovery_codes(app: &App, ctx: &mut Ctx) -> Result<Reply, ApiError> {
    let authed = ctx.authed()?;
    if !authed.session.has_recent_challenge(ctx.now) {
        return Err(ApiError::ChallengeRequired);
    }
    let codes = recovery::generate();
    let change = UserChange::ReplaceRecoveryCodes(hashed(app, &authed.user.id, &codes));
    let also = Also::events(vec![app.event(ctx, &authed.user.id, Action::RecoveryCodesReplace, "")]);
    match app.store.update_user(&authed.user, change, Some(ending_other_sessions(ctx)?), ctx.now, &also).await? {
        Updated::Done => Ok(Reply::model(200, &MfaRecoveryCodes { recovery_codes: codes })),
        Updated::SessionEnded => Err(ApiError::Unauthorized),
        Updated::NotFound => Err(ApiError::UserNotFound),
        _ => Err(ApiError::RecoveryCodesNotFound),
    }
}
