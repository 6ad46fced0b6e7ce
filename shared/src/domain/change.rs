//! Changes to a user and to the acting session, as the rules decide them: what each
//! applies to, under which condition, and what it leaves. The stores carry them out
//! atomically with conditions of their own; these give callers the result without a
//! read-back.

use crate::clock::Millis;
use crate::domain::webauthn::KeyUse;
use crate::domain::{Authenticator, AuthenticatorSecret, Factor, Session, User};

/// A change to a user record, each with the condition under which it applies.
#[derive(Debug, Clone, PartialEq)]
pub enum UserChange {
    /// Moves the user to a new email (unique across users) and marks it unverified.
    Email(String),
    /// Moves the user to a new phone number (unique across users) and marks it unverified.
    Phone(String),
    Mfa(bool),
    /// Ends every session of the user confirmed before this instant (signing out
    /// everywhere); they are refused at once and deleted by their expiry. Applies only
    /// while no later end holds.
    EndSessions(Millis),
    /// Adds the authenticator, or replaces the one with its id while that is unverified.
    PutAuthenticator(Authenticator),
    /// Marks the TOTP authenticator verified at `step`; applies only while it is unverified
    /// and is still the one whose secret is `secret_sealed` (the one the code was checked
    /// with).
    VerifyAuthenticator {
        step: u64,
        secret_sealed: String,
    },
    /// Removes authenticators of `factor`; applies only while the user has each of them.
    /// `last`: they are all the user has of the factor, so the session that added it is
    /// forgotten with it.
    RemoveAuthenticators {
        ids: Vec<String>,
        factor: Factor,
        last: bool,
    },
    Name(String),
    /// Replaces the user's preferences whole.
    Prefs(serde_json::Map<String, serde_json::Value>),
    /// A new password (its Argon2id hash).
    Password(String),
    /// Applies only while the user has no recovery codes.
    CreateRecoveryCodes(Vec<String>),
    /// Applies only while the user has recovery codes.
    ReplaceRecoveryCodes(Vec<String>),
}

/// Factors to add to the current session in the same atomic write as a user change.
#[derive(Debug, Clone, PartialEq)]
pub struct SessionUpgrade {
    pub session_id: String,
    /// When that session was confirmed (its `confirmed_at`): the write applies only while
    /// the user's sessions confirmed then are still valid, so a session ended meanwhile
    /// (signed out everywhere, or ASVS 7.4.3) cannot act, nor undo that end.
    pub confirmed_at: Millis,
    pub add: Vec<Factor>,
    /// Set when the change proves possession of a factor ("recent challenge").
    pub mfa_updated_at: Option<Millis>,
    /// Ends every other session of the user, in the same write (OWASP ASVS 7.4.3: after a
    /// factor is removed or replaced, only the session that did it stays).
    pub end_other_sessions: bool,
}

impl UserChange {
    /// The user as the change leaves it, if its condition holds for `user`. Stores apply
    /// changes with conditions of their own; this gives callers the result without a
    /// read-back.
    pub fn apply(&self, user: &mut User, now: Millis) -> bool {
        match self.clone() {
            UserChange::Email(email) => {
                user.email = Some(email);
                user.email_verified = false;
            }
            UserChange::Phone(phone) => {
                user.phone = Some(phone);
                user.phone_verified = false;
            }
            UserChange::Mfa(on) => user.mfa = on,
            UserChange::Name(name) => user.name = name,
            UserChange::Prefs(prefs) => user.prefs = prefs,
            UserChange::Password(hash) => {
                user.password_hash = hash;
                user.password_updated_at = now;
            }
            // The cut only moves forward: a late request cannot revive ended sessions.
            UserChange::EndSessions(at) => {
                if at < user.sessions_valid_from {
                    return false;
                }
                user.sessions_valid_from = at;
            }
            UserChange::PutAuthenticator(auth) => match user.authenticators.iter().position(|a| a.id == auth.id) {
                Some(i) if user.authenticators[i].verified => return false,
                Some(i) => user.authenticators[i] = auth,
                None => user.authenticators.push(auth),
            },
            UserChange::VerifyAuthenticator { step, secret_sealed } => {
                let Some(auth) = user.authenticators.iter_mut().find(|a| a.id == Authenticator::TOTP_ID) else {
                    return false;
                };
                if auth.verified || auth.totp_secret().map(|(sealed, _)| sealed) != Some(secret_sealed.as_str()) {
                    return false;
                }
                if !auth.use_step(step, now) {
                    return false;
                }
                auth.verified = true;
            }
            UserChange::RemoveAuthenticators { ids, .. } => {
                if ids.is_empty() || !ids.iter().all(|id| user.authenticators.iter().any(|a| a.id == *id)) {
                    return false;
                }
                user.authenticators.retain(|a| !ids.contains(&a.id));
            }
            UserChange::CreateRecoveryCodes(codes) => {
                if !user.recovery_codes.is_empty() {
                    return false;
                }
                user.recovery_codes = codes;
            }
            UserChange::ReplaceRecoveryCodes(codes) => {
                if user.recovery_codes.is_empty() {
                    return false;
                }
                user.recovery_codes = codes;
            }
        }
        true
    }
}

impl UserChange {
    /// The second factor this change adds or replaces, if any.
    pub fn adds_factor(&self) -> Option<Factor> {
        match self {
            UserChange::Email(_) => Some(Factor::Email),
            UserChange::Phone(_) => Some(Factor::Phone),
            UserChange::PutAuthenticator(auth) => Some(auth.kind().factor()),
            UserChange::VerifyAuthenticator { .. } => Some(Factor::Totp),
            UserChange::CreateRecoveryCodes(_) | UserChange::ReplaceRecoveryCodes(_) => Some(Factor::RecoveryCode),
            UserChange::Mfa(_)
            | UserChange::Name(_)
            | UserChange::Prefs(_)
            | UserChange::Password(_)
            | UserChange::EndSessions(_)
            | UserChange::RemoveAuthenticators { .. } => None,
        }
    }

    /// Records which session added or changed a factor (`by`, when a session made the
    /// change), and forgets it with the factor.
    pub fn record_source(&self, user: &mut User, by: Option<&str>) {
        match (self.adds_factor(), by) {
            (Some(factor), Some(by)) => {
                user.added_by.insert(factor, by.to_string());
            }
            (Some(factor), None) => {
                user.added_by.remove(&factor);
            }
            (None, _) => {
                if let UserChange::RemoveAuthenticators { factor, last: true, .. } = self {
                    user.added_by.remove(factor);
                }
            }
        }
    }
}

impl SessionUpgrade {
    /// An upgrade of `session` that adds nothing yet.
    pub fn of(session: &Session) -> SessionUpgrade {
        SessionUpgrade {
            session_id: session.id.clone(),
            confirmed_at: session.confirmed_at,
            add: vec![],
            mfa_updated_at: None,
            end_other_sessions: false,
        }
    }

    /// The user as the upgrade's write leaves it.
    pub fn apply_to_user(&self, user: &mut User, now: Millis) {
        if self.mfa_updated_at.is_some() {
            user.mfa_updated_at = self.mfa_updated_at;
        }
        if self.end_other_sessions {
            user.sessions_valid_from = now;
        }
    }

    /// The session as the upgrade's write leaves it.
    pub fn apply_to_session(&self, session: &mut Session, now: Millis) {
        super::session::merge_factors(&mut session.factors, &self.add);
        if self.mfa_updated_at.is_some() {
            session.mfa_updated_at = self.mfa_updated_at;
        }
        if self.end_other_sessions {
            session.confirmed_at = now;
        }
        session.updated_at = now;
    }
}

/// What completing a challenge uses up, in the same atomic write.
#[derive(Debug, Clone, PartialEq)]
pub enum Spend {
    /// The emailed or texted code lives in the challenge itself.
    Nothing,
    /// The TOTP step; applies only if newer than the authenticator's last accepted step.
    TotpStep(u64),
    /// One recovery code hash; applies only if still unused.
    RecoveryCode(String),
    /// A use of a security key: applies only while the key is the user's and its new
    /// counter may follow the stored one.
    Key(KeyUse),
    /// Registers a security key (the challenge is its registration ceremony): applies only
    /// while the user has no authenticator with its id.
    Register(Authenticator),
}

#[derive(Debug, Clone, PartialEq)]
pub struct ChallengeWin {
    pub user_id: String,
    pub challenge_id: String,
    pub session_id: String,
    /// The session's `confirmed_at` (see [`SessionUpgrade::confirmed_at`]).
    pub confirmed_at: Millis,
    pub factor: Factor,
    pub spend: Spend,
    pub now: Millis,
    /// Whether the factor proves something the user had before this session added or
    /// changed it; only then is the challenge recent (`Session::proves_with`).
    pub recent: bool,
    /// The TOTP secret sealed again under the active server key, when it was sealed under
    /// an older one: replaced in the same write, while it is still the one read.
    pub reseal: Option<Reseal>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Reseal {
    pub from: String,
    pub to: String,
}

impl Spend {
    /// The security key a sign-in uses, by its authenticator id.
    pub fn key(&self) -> Option<&str> {
        match self {
            Spend::Key(used) => Some(&used.authenticator_id),
            Spend::Nothing | Spend::TotpStep(_) | Spend::RecoveryCode(_) | Spend::Register(_) => None,
        }
    }
}

impl ChallengeWin {
    /// What completing the challenge does to its user; `false` (the write must be refused)
    /// when what it spends no longer holds.
    pub fn apply_to_user(&self, user: &mut User) -> bool {
        let now = self.now;
        let spent = match &self.spend {
            Spend::Nothing => true,
            Spend::TotpStep(step) => {
                let totp = user.authenticators.iter_mut().find(|a| a.id == Authenticator::TOTP_ID);
                totp.is_some_and(|a| a.verified && a.use_step_for(*step, &self.challenge_id, now))
            }
            Spend::RecoveryCode(hash) => {
                let before = user.recovery_codes.len();
                user.recovery_codes.retain(|h| h != hash);
                user.recovery_codes.len() < before
            }
            Spend::Key(used) => {
                let key = user.authenticators.iter_mut().find(|a| a.id == used.authenticator_id && a.verified);
                key.is_some_and(|a| a.use_key(used.counter, &used.credential, now))
            }
            Spend::Register(auth) => {
                if user.authenticators.iter().any(|a| a.id == auth.id) {
                    return false;
                }
                user.authenticators.push(auth.clone());
                true
            }
        };
        if !spent {
            return false;
        }
        if let Some(reseal) = &self.reseal {
            let totp = user.authenticators.iter_mut().find(|a| a.id == Authenticator::TOTP_ID);
            let Some(AuthenticatorSecret::Totp { sealed, .. }) = totp.map(|a| &mut a.secret) else { return false };
            if *sealed != reseal.from {
                return false;
            }
            *sealed = reseal.to.clone();
        }
        true
    }

    /// What completing the challenge does to the session.
    pub fn upgrade(&self) -> SessionUpgrade {
        SessionUpgrade {
            session_id: self.session_id.clone(),
            confirmed_at: self.confirmed_at,
            add: vec![self.factor],
            mfa_updated_at: self.recent.then_some(self.now),
            end_other_sessions: false,
        }
    }
}

/// The user as [`Store::update_user`] leaves it when it answers `Done`.
pub fn updated_user(user: &User, change: &UserChange, upgrade: Option<&SessionUpgrade>, now: Millis) -> User {
    let mut user = user.clone();
    change.apply(&mut user, now);
    change.record_source(&mut user, upgrade.map(|up| up.session_id.as_str()));
    user.updated_at = now;
    if let Some(up) = upgrade {
        up.apply_to_user(&mut user, now);
    }
    user
}
