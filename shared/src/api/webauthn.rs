//! Security keys and passkeys (`/account/mfa/authenticators/webauthn`): registering one in
//! two steps, listing and removing them, and the sign-in ceremony behind a `webauthn`
//! challenge. The browser's answers are checked by `domain::webauthn`.

use serde::Deserialize;
use serde_json::Value;

use super::budget::{self, Budget, Charged};
use super::models::{Account, AuthenticatorList, MfaChallenge};
use super::App;
use crate::domain::activity::Action;
use crate::domain::challenge::REGISTRATION_SLOT;
use crate::domain::limits::CHALLENGE_PER_SESSION;
use crate::domain::values::Name;
use crate::domain::webauthn::{Refusal, RelyingParty, MAX_ANSWER_BYTES, MAX_KEYS};
use crate::domain::{crypto, Authenticator, AuthenticatorKind, Challenge, Factor, User};
use crate::error::ApiError;
use crate::http::{Ctx, Reply};
use crate::store::{Also, ChallengeWin, Lookup, Spend, UserChange};

/// A browser's answer to a ceremony: the credential as JSON (`credential`), or the same JSON
/// as a string in `otp`, which is how the SDKs' `updateMfaAuthenticator` and
/// `updateMfaChallenge` send it.
#[derive(Deserialize)]
pub(super) struct Answer {
    pub credential: Option<Value>,
    pub otp: Option<String>,
}

impl Answer {
    /// The answer as JSON; a 400 naming the parameter when it is missing, too large, or not
    /// a JSON object.
    pub(super) fn json(self) -> Result<Value, ApiError> {
        let (param, value) = match (self.credential, self.otp) {
            (Some(credential), _) => ("credential", credential),
            (None, Some(otp)) => {
                if otp.len() > MAX_ANSWER_BYTES {
                    return Err(too_large("otp"));
                }
                let value = serde_json::from_str(&otp).map_err(|_| malformed("otp"))?;
                ("otp", value)
            }
            (None, None) => return Err(ApiError::missing("credential")),
        };
        if !value.is_object() {
            return Err(malformed(param));
        }
        if value.to_string().len() > MAX_ANSWER_BYTES {
            return Err(too_large(param));
        }
        Ok(value)
    }
}

fn malformed(param: &str) -> ApiError {
    ApiError::invalid(param, Refusal::Malformed.message())
}

fn too_large(param: &str) -> ApiError {
    ApiError::invalid(param, &format!("Value must be no longer than {MAX_ANSWER_BYTES} bytes"))
}

/// The answer's refusal as the API's error: a malformed one is a 400 on its parameter.
pub(super) fn refused(refusal: Refusal) -> ApiError {
    match refusal {
        Refusal::Malformed => malformed("credential"),
        refusal => ApiError::KeyRefused(refusal),
    }
}

fn state_bug(e: crate::domain::webauthn::StateError) -> ApiError {
    ApiError::Internal(e.into())
}

impl App {
    /// The relying party, where WebAuthn is configured (`MFA_WEBAUTHN_RP_ID`).
    fn relying_party(&self) -> Result<&RelyingParty, ApiError> {
        self.webauthn.as_ref().ok_or(ApiError::AuthMethodUnsupported)
    }
}

/// A registration ceremony counts as a challenge of its session.
fn registration_budget(ctx: &Ctx) -> Budget {
    Budget::default().every(CHALLENGE_PER_SESSION, &ctx.caller_session())
}

/// What `POST /account/mfa/authenticators/{type}` reads for a security key.
pub fn start_lookup(ctx: &Ctx) -> Lookup {
    match AuthenticatorKind::parse(ctx.path_param("type")) {
        Ok(AuthenticatorKind::Webauthn) => {
            Lookup { counters: registration_budget(ctx).counters(ctx.now), ..Lookup::default() }
        }
        _ => Lookup::default(),
    }
}

/// What `PUT /account/mfa/authenticators/{type}` reads for a security key: the user's
/// registration ceremony.
pub fn finish_lookup(ctx: &Ctx) -> Lookup {
    Lookup {
        challenge: Some(REGISTRATION_SLOT),
        counters: budget::code_checks(ctx).counters(ctx.now),
        ..Lookup::default()
    }
}

/// Starts registering a key: the creation options for `navigator.credentials.create`, and
/// the ceremony (its id, its expiry) kept to check the answer with.
pub async fn start_registration(app: &App, ctx: &mut Ctx) -> Result<Reply, ApiError> {
    let rp = app.relying_party()?;
    let authed = ctx.authed()?;
    let user = &authed.user;
    if !authed.session.may_add_factor(user, ctx.now) {
        return Err(ApiError::ChallengeRequired);
    }
    if user.keys().count() >= MAX_KEYS {
        return Err(ApiError::TooManyKeys(MAX_KEYS));
    }
    let (options, state) = rp.start_registration(user).map_err(state_bug)?;
    let ceremony = Challenge::registration(&user.id, &authed.session.id, state, ctx.now, app.config.challenge_ttl);
    let mut budget = registration_budget(ctx);
    budget.check_in(ctx)?;
    let stored = app.store.put_challenge(&ceremony, &budget.success(ctx.now).into()).await?;
    // Refused only when the session ended meanwhile.
    budget.decided(stored, ctx.now, ApiError::Unauthorized)?;
    Ok(Reply::model(200, &MfaChallenge::of(&ceremony).with_options(options)))
}

#[derive(Deserialize)]
struct Registration {
    #[serde(flatten)]
    answer: Answer,
    name: Option<Name>,
}

/// Completes registering a key with the browser's attestation: the key becomes a verified
/// authenticator and the session gains the `webauthn` factor (not a recent challenge: the
/// key is new), in one write that spends the ceremony.
pub async fn finish_registration(app: &App, ctx: &mut Ctx) -> Result<Reply, ApiError> {
    let rp = app.relying_party()?;
    let Registration { answer, name } = ctx.params()?;
    let answer = answer.json()?;
    let authed = ctx.authed()?.clone();
    let user = &authed.user;
    if !authed.session.may_add_factor(user, ctx.now) {
        return Err(ApiError::ChallengeRequired);
    }
    let mut budget = budget::code_checks(ctx);
    budget.check_in(ctx)?;
    let ceremony = ctx
        .found
        .challenge
        .take()
        .filter(|c| {
            c.user_id == user.id && c.session_id == authed.session.id && c.is_registration() && c.is_usable(ctx.now)
        })
        .ok_or(ApiError::InvalidToken)?;
    let state = ceremony.ceremony_state(true).ok_or(ApiError::InvalidToken)?;
    let key = match rp.finish_registration(state, &answer).map_err(state_bug)? {
        Ok(key) if user.keys().any(|k| k.credential_id() == Some(key.credential_id.as_str())) => {
            return Err(ApiError::KeyRefused(Refusal::AlreadyRegistered))
        }
        Ok(key) => key,
        // An answer that is not one changes nothing, not even the attempts left.
        Err(Refusal::Malformed) => return Err(refused(Refusal::Malformed)),
        Err(refusal) => {
            let missed = app.store.miss_challenge(&ceremony, ctx.now, &budget.failure(ctx.now).into()).await?;
            budget.decided(missed, ctx.now, ApiError::InvalidToken)?;
            return Err(refused(refusal));
        }
    };
    let name = name.map(Name::into_inner).filter(|n| !n.trim().is_empty()).unwrap_or_else(|| default_name(user));
    let authenticator = Authenticator::webauthn(crypto::new_id(), name, key, &authed.session.id, ctx.now);
    let win = ChallengeWin {
        user_id: user.id.clone(),
        challenge_id: ceremony.id.clone(),
        session_id: authed.session.id.clone(),
        confirmed_at: authed.session.confirmed_at,
        factor: Factor::Webauthn,
        spend: Spend::Register(authenticator),
        now: ctx.now,
        recent: false,
        reseal: None,
    };
    let also = Also::from(budget.success(ctx.now))
        .and(app.event(ctx, &user.id, Action::FactorAdd, "webauthn"))
        .in_session(&authed.session, authed.session_events);
    let finished = app.store.finish_challenge(&win, &also).await?;
    budget.decided(finished, ctx.now, ApiError::InvalidToken)?;
    let mut after = user.clone();
    win.apply_to_user(&mut after);
    after.updated_at = ctx.now;
    Ok(Reply::model(200, &Account::of(&after)))
}

/// "Security key", then "Security key 2", ...: a name the user can tell apart in the list.
fn default_name(user: &User) -> String {
    match user.keys().count() {
        0 => "Security key".to_string(),
        n => format!("Security key {}", n + 1),
    }
}

/// `GET /account/mfa/authenticators/{type}`: the user's authenticators of the type.
pub async fn list(_app: &App, ctx: &mut Ctx) -> Result<Reply, ApiError> {
    let kind = super::mfa::authenticator_kind(ctx)?;
    let user = &ctx.authed()?.user;
    let listed: Vec<&Authenticator> = user.authenticators.iter().filter(|a| a.kind() == kind && a.verified).collect();
    Ok(Reply::model(200, &AuthenticatorList::of(&listed)))
}

/// `DELETE /account/mfa/authenticators/{type}/{authenticatorId}`: removes one, by its id
/// or its credential id. Like removing the TOTP authenticator, it needs a recent challenge
/// and ends the user's other sessions.
pub async fn delete_one(app: &App, ctx: &mut Ctx) -> Result<Reply, ApiError> {
    let kind = super::mfa::authenticator_kind(ctx)?;
    let wanted = ctx.path_param("authenticatorId").to_string();
    let authed = ctx.authed()?;
    if !authed.session.has_recent_challenge(ctx.now) {
        return Err(ApiError::ChallengeRequired);
    }
    let user = &authed.user;
    let of_kind: Vec<&Authenticator> = user.authenticators.iter().filter(|a| a.kind() == kind).collect();
    let found = of_kind
        .iter()
        .find(|a| a.id == wanted || a.credential_id() == Some(wanted.as_str()))
        .ok_or(ApiError::AuthenticatorNotFound)?;
    let change = UserChange::RemoveAuthenticators {
        ids: vec![found.id.clone()],
        factor: kind.factor(),
        last: of_kind.len() == 1,
    };
    super::mfa::remove(app, ctx, change).await
}

/// The sign-in ceremony of a `webauthn` challenge: the request options for
/// `navigator.credentials.get`, and the challenge that keeps its state.
pub(super) fn sign_in(
    app: &App,
    user: &User,
    session_id: &str,
    now: crate::clock::Millis,
) -> Result<(Challenge, Value), ApiError> {
    let rp = app.relying_party()?;
    let (options, state) = rp.start_authentication(user).map_err(state_bug)?.ok_or(ApiError::AuthenticatorNotFound)?;
    Ok((Challenge::webauthn(&user.id, session_id, state, now, app.config.challenge_ttl), options))
}

/// Checks a sign-in assertion: what completing the challenge spends (the key's new
/// counter), or why it was refused.
pub(super) fn check_assertion(
    app: &App,
    user: &User,
    challenge: &Challenge,
    answer: &Value,
) -> Result<Result<Spend, Refusal>, ApiError> {
    let rp = app.relying_party()?;
    let state = challenge.ceremony_state(false).ok_or(ApiError::InvalidToken)?;
    Ok(rp.finish_authentication(user, state, answer).map_err(state_bug)?.map(Spend::Key))
}
