//! `POST/PUT /account/mfa/challenges`: send or prepare a challenge, then complete it.

use serde::Deserialize;

use super::budget::{self, Budget, Charged};
use super::models::{MfaChallenge, SessionModel};
use super::App;
use crate::clock::Millis;
use crate::delivery::templates;
use crate::domain::activity::Action;
use crate::domain::crypto::random_digits;
use crate::domain::limits::{CHALLENGE_PER_SESSION, CHALLENGE_PER_USER, SMS_PER_PHONE};
use crate::domain::values::{parse_otp, ChallengeFactor, Id};
use crate::domain::webauthn::Refusal;
use crate::domain::{challenge::CODE_DIGITS, recovery, totp, Challenge, Factor, User};
use crate::error::ApiError;
use crate::http::{Ctx, Reply};
use crate::store::{Also, ChallengeWin, Lookup, Reseal, Spend};

/// Every challenge counts for its session; one sent by email or SMS also for its user.
fn create_budget(ctx: &Ctx, factor: Option<Factor>) -> Budget {
    let budget = Budget::default().every(CHALLENGE_PER_SESSION, &ctx.caller_session());
    match factor {
        Some(Factor::Email | Factor::Phone) => budget.every(CHALLENGE_PER_USER, ctx.caller_id()),
        _ => budget,
    }
}

pub fn create_lookup(ctx: &Ctx) -> Lookup {
    let factor = ctx.params::<CreateChallenge>().ok().map(|p| p.factor.0);
    Lookup { counters: create_budget(ctx, factor).counters(ctx.now), ..Lookup::default() }
}

#[derive(Deserialize)]
struct CreateChallenge {
    factor: ChallengeFactor,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct CompleteChallenge {
    challenge_id: Id,
    /// The code; for a `webauthn` challenge the assertion's JSON, or that in `credential`.
    otp: Option<String>,
    credential: Option<serde_json::Value>,
}

/// What a challenge is completed with.
enum Proof {
    Code(String),
    Assertion(serde_json::Value),
}

impl CompleteChallenge {
    /// Refuses at once what is no answer to any challenge: no `otp` (nor `credential`), or an
    /// `otp` that is neither a code nor JSON.
    fn check(&self) -> Result<(), ApiError> {
        match (&self.otp, &self.credential) {
            (None, None) => Err(ApiError::missing("otp")),
            (Some(otp), None) if !otp.trim_start().starts_with('{') => {
                parse_otp(otp).map(drop).map_err(|rule| ApiError::invalid("otp", rule))
            }
            _ => Ok(()),
        }
    }

    /// The answer, read as the challenge's factor needs it.
    fn proof(self, factor: Factor) -> Result<Proof, ApiError> {
        if factor == Factor::Webauthn {
            let answer = super::webauthn::Answer { credential: self.credential, otp: self.otp };
            return answer.json().map(Proof::Assertion);
        }
        let otp = self.otp.ok_or_else(|| ApiError::missing("otp"))?;
        parse_otp(&otp).map(Proof::Code).map_err(|rule| ApiError::invalid("otp", rule))
    }
}

pub async fn create(app: &App, ctx: &mut Ctx) -> Result<Reply, ApiError> {
    let CreateChallenge { factor: ChallengeFactor(factor) } = ctx.params()?;
    let authed = ctx.authed()?;
    let (user, session_id) = (authed.user.clone(), authed.session.id.clone());
    let mut challenge = Challenge::new(&user.id, &session_id, factor, ctx.now, app.config.challenge_ttl);
    let mut options_out = None;
    let mut budget = create_budget(ctx, Some(factor));
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
            budget = budget.every(SMS_PER_PHONE, &phone);
            Some((phone, templates::sms_challenge as fn(&str, &str, &str, i64) -> _))
        }
        Factor::Webauthn => {
            let (ceremony, options) = super::webauthn::sign_in(app, &user, &session_id, ctx.now)?;
            challenge = ceremony;
            options_out = Some(options);
            None
        }
        Factor::Totp if !user.totp_verified() => return Err(ApiError::AuthenticatorNotFound),
        Factor::RecoveryCode if user.recovery_codes.is_empty() => return Err(ApiError::RecoveryCodesNotFound),
        Factor::Totp | Factor::RecoveryCode => None,
        Factor::Password => return Err(ApiError::AuthMethodUnsupported),
    };
    budget.check_in(ctx)?;
    let code = message.is_some().then(|| random_digits(CODE_DIGITS));
    if let Some(code) = &code {
        challenge.code_hash = Some(app.keys.code_hash(&challenge.code_context(), code));
    }
    // Stored (and counted) before its message is sent, so that parallel requests cannot
    // outrun a limit. Until the message arrives nobody knows the code; if it cannot be
    // sent, the challenge is withdrawn.
    let event = app.event(ctx, &user.id, Action::ChallengeCreate, factor.as_str());
    let authed = ctx.authed()?;
    let also = Also::from(budget.success(ctx.now)).and(event).in_session(&authed.session, authed.session_events);
    let stored = app.store.put_challenge(&challenge, &also).await?;
    // Refused only when the session ended meanwhile.
    budget.decided(stored, ctx.now, ApiError::Unauthorized)?;
    if let (Some((to, render)), Some(code)) = (message, code) {
        let message = render(&app.config.project_name, &to, &code, app.config.challenge_ttl);
        if let Err(e) = app.sender.send(&message).await {
            if let Err(withdraw) = app.store.withdraw_challenge(&challenge).await {
                tracing::warn!(error = %withdraw, "could not withdraw a challenge whose message failed");
            }
            return Err(ApiError::DeliveryFailed(e));
        }
    }
    let mut model = MfaChallenge::of(&challenge);
    if let Some(options) = options_out {
        model = model.with_options(options);
    }
    Ok(Reply::model(201, &model))
}

pub fn complete_lookup(ctx: &Ctx) -> Lookup {
    let challenge = ctx.params::<CompleteChallenge>().ok();
    let slot = challenge.and_then(|c| Challenge::slot_of(&c.challenge_id));
    Lookup { challenge: slot, counters: budget::code_checks(ctx).counters(ctx.now), ..Lookup::default() }
}

pub async fn complete(app: &App, ctx: &mut Ctx) -> Result<Reply, ApiError> {
    let params: CompleteChallenge = ctx.params()?;
    params.check()?;
    let challenge_id = params.challenge_id.clone();
    let authed = ctx.authed()?.clone();
    let user = &authed.user;
    let mut budget = budget::code_checks(ctx);
    budget.check_in(ctx)?;
    let challenge = ctx
        .found
        .challenge
        .take()
        .filter(|c| {
            c.id == *challenge_id
                && c.user_id == user.id
                && c.session_id == authed.session.id
                && !c.is_registration()
                && c.is_usable(ctx.now)
        })
        .ok_or(ApiError::InvalidToken)?;

    let mut refusal = None;
    let spend = match params.proof(challenge.factor)? {
        Proof::Assertion(answer) => match super::webauthn::check_assertion(app, user, &challenge, &answer)? {
            Ok(spend) => Some(spend),
            // An answer that is not one changes nothing, not even the attempts left.
            Err(Refusal::Malformed) => return Err(super::webauthn::refused(Refusal::Malformed)),
            Err(why) => {
                refusal = Some(why);
                None
            }
        },
        Proof::Code(otp) => code_spend(app, user, &challenge, &otp, ctx.now)?,
    };
    // A TOTP secret sealed under an older server key is sealed again under the active one.
    let reseal = match (&spend, user.totp().and_then(|a| a.totp_secret())) {
        (Some(Spend::TotpStep(_)), Some((sealed, _))) if !app.keys.is_current(sealed) => {
            let (secret, _) = super::mfa::totp_secret(app, user, user.totp().ok_or(ApiError::InvalidToken)?)?;
            Some(Reseal { from: sealed.to_string(), to: app.keys.encrypt(&secret, &user.id) })
        }
        _ => None,
    };

    // The write that spends the attempt or completes the challenge also counts it: a
    // code's verdict is only ever given for an attempt within every budget.
    let Some(spend) = spend else {
        let event = app.event(ctx, &user.id, Action::ChallengeFail, challenge.factor.as_str());
        let also = Also::from(budget.failure(ctx.now)).and(event).in_session(&authed.session, authed.session_events);
        let missed = app.store.miss_challenge(&challenge, ctx.now, &also).await?;
        budget.decided(missed, ctx.now, ApiError::InvalidToken)?;
        return Err(refusal.map_or(ApiError::InvalidToken, super::webauthn::refused));
    };
    let recent = authed.session.proves_with(user, challenge.factor, spend.key());
    let win = ChallengeWin {
        user_id: user.id.clone(),
        challenge_id: challenge.id.clone(),
        session_id: authed.session.id.clone(),
        confirmed_at: authed.session.confirmed_at,
        factor: challenge.factor,
        spend,
        now: ctx.now,
        recent,
        reseal,
    };
    let mut also = Also::from(budget.success(ctx.now)).and(app.event(
        ctx,
        &user.id,
        Action::ChallengeComplete,
        challenge.factor.as_str(),
    ));
    if let Spend::RecoveryCode(_) = win.spend {
        also = also.and(app.event(ctx, &user.id, Action::RecoveryCodeUse, ""));
    }
    let also = also.in_session(&authed.session, authed.session_events);
    let finished = app.store.finish_challenge(&win, &also).await?;
    budget.decided(finished, ctx.now, ApiError::InvalidToken)?;
    let mut session = authed.session.clone();
    win.upgrade().apply_to_session(&mut session, ctx.now);
    Ok(Reply::model(200, &SessionModel::of(&session, true)))
}

/// What a right code spends on a code challenge; `None` for a wrong one.
fn code_spend(
    app: &App,
    user: &User,
    challenge: &Challenge,
    otp: &str,
    now: Millis,
) -> Result<Option<Spend>, ApiError> {
    Ok(match challenge.factor {
        Factor::Email | Factor::Phone => {
            let expected = challenge.code_hash.as_deref().unwrap_or_default();
            app.keys.code_matches(&challenge.code_context(), otp, expected).then_some(Spend::Nothing)
        }
        Factor::Totp => {
            let authenticator = user.totp().filter(|a| a.verified).ok_or(ApiError::InvalidToken)?;
            let (secret, _) = super::mfa::totp_secret(app, user, authenticator)?;
            totp::accept(&secret, otp, now, authenticator.step_floor(&challenge.id)).map(Spend::TotpStep)
        }
        Factor::RecoveryCode => {
            // Compare against every code so timing does not reveal which one matched.
            let found = user.recovery_codes.iter().fold(None, |hit, stored| {
                let matches = recovery::matches(&app.keys, &user.id, otp, stored);
                if matches && hit.is_none() {
                    Some(stored)
                } else {
                    hit
                }
            });
            found.map(|stored| Spend::RecoveryCode(stored.clone()))
        }
        Factor::Password | Factor::Webauthn => None,
    })
}
