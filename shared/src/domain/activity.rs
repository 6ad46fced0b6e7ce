//! The activity log: one event per security-relevant change, written in the same atomic
//! write as the change it records, kept for a configurable time and read newest first.

use std::sync::atomic::{AtomicU32, Ordering};

use serde::{Deserialize, Serialize};

use crate::clock::{Millis, DAY};

/// How long events are kept without `MFA_LOG_TTL_DAYS`.
pub const LOG_TTL: Millis = 90 * DAY;

/// What happened, by Appwrite's audit event names where it has one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Action {
    #[serde(rename = "session.create")]
    SessionCreate,
    #[serde(rename = "session.delete")]
    SessionDelete,
    /// Every session of the user ended at once.
    #[serde(rename = "sessions.delete")]
    SessionsDelete,
    #[serde(rename = "challenge.create")]
    ChallengeCreate,
    #[serde(rename = "challenge.update")]
    ChallengeComplete,
    #[serde(rename = "challenge.fail")]
    ChallengeFail,
    #[serde(rename = "authenticator.create")]
    FactorAdd,
    #[serde(rename = "authenticator.delete")]
    FactorRemove,
    #[serde(rename = "mfa.update")]
    MfaUpdate,
    #[serde(rename = "recovery-codes.create")]
    RecoveryCodesCreate,
    #[serde(rename = "recovery-codes.update")]
    RecoveryCodesReplace,
    #[serde(rename = "recovery-code.use")]
    RecoveryCodeUse,
    #[serde(rename = "password.update")]
    PasswordUpdate,
    #[serde(rename = "recovery.create")]
    PasswordResetCreate,
    #[serde(rename = "recovery.update")]
    PasswordReset,
    #[serde(rename = "verification.update")]
    Verification,
    #[serde(rename = "user.update")]
    UserUpdate,
}

impl Action {
    pub const ALL: [Action; 17] = [
        Action::SessionCreate,
        Action::SessionDelete,
        Action::SessionsDelete,
        Action::ChallengeCreate,
        Action::ChallengeComplete,
        Action::ChallengeFail,
        Action::FactorAdd,
        Action::FactorRemove,
        Action::MfaUpdate,
        Action::RecoveryCodesCreate,
        Action::RecoveryCodesReplace,
        Action::RecoveryCodeUse,
        Action::PasswordUpdate,
        Action::PasswordResetCreate,
        Action::PasswordReset,
        Action::Verification,
        Action::UserUpdate,
    ];

    pub fn parse(raw: &str) -> Option<Action> {
        Action::ALL.into_iter().find(|a| a.as_str() == raw)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Action::SessionCreate => "session.create",
            Action::SessionDelete => "session.delete",
            Action::SessionsDelete => "sessions.delete",
            Action::ChallengeCreate => "challenge.create",
            Action::ChallengeComplete => "challenge.update",
            Action::ChallengeFail => "challenge.fail",
            Action::FactorAdd => "authenticator.create",
            Action::FactorRemove => "authenticator.delete",
            Action::MfaUpdate => "mfa.update",
            Action::RecoveryCodesCreate => "recovery-codes.create",
            Action::RecoveryCodesReplace => "recovery-codes.update",
            Action::RecoveryCodeUse => "recovery-code.use",
            Action::PasswordUpdate => "password.update",
            Action::PasswordResetCreate => "recovery.create",
            Action::PasswordReset => "recovery.update",
            Action::Verification => "verification.update",
            Action::UserUpdate => "user.update",
        }
    }
}

/// Who acted: the user in a session of theirs, or support with an API key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Actor {
    User,
    Key(String),
}

/// One event of a user's activity log.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    pub id: String,
    pub user_id: String,
    pub action: Action,
    /// What it concerned, when that says more (the factor, the session id).
    #[serde(default)]
    pub detail: String,
    pub actor: Actor,
    pub time: Millis,
    pub ip: String,
    pub user_agent: String,
    /// When the store may forget it.
    pub expire: Millis,
}

/// Where and how a request was made: what every event of it records.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Origin {
    pub ip: String,
    pub user_agent: String,
    /// The API key acting, if any.
    pub key_id: Option<String>,
    pub ttl: Millis,
}

impl Origin {
    /// The event of `action` on `user_id`, now.
    pub fn event(&self, user_id: &str, action: Action, detail: impl Into<String>, now: Millis) -> Event {
        // Ids sort by time, and within a millisecond by the order this process made them (two
        // events of one write, a sign-in's steps in a test), so a reverse read is newest first.
        static SEQUENCE: AtomicU32 = AtomicU32::new(0);
        let sequence = SEQUENCE.fetch_add(1, Ordering::Relaxed);
        Event {
            id: format!("{now:013}{sequence:08x}{}", super::crypto::new_id()),
            user_id: user_id.to_string(),
            action,
            detail: detail.into(),
            actor: self.key_id.clone().map_or(Actor::User, Actor::Key),
            time: now,
            ip: self.ip.clone(),
            user_agent: self.user_agent.clone(),
            expire: now + self.ttl,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_ids_sort_by_time_and_events_expire_after_the_ttl() {
        let origin = Origin { ip: "1.2.3.4".into(), user_agent: "ua".into(), key_id: None, ttl: LOG_TTL };
        let early = origin.event("u", Action::SessionCreate, "", 1_000);
        let late = origin.event("u", Action::SessionDelete, "", 20_000);
        assert!(early.id < late.id);
        let same_time = origin.event("u", Action::SessionDelete, "", 20_000);
        assert!(late.id < same_time.id, "made later in the same millisecond");
        assert_eq!(late.expire, 20_000 + LOG_TTL);
        assert_eq!(early.actor, Actor::User);
        let support = Origin { key_id: Some("k1".into()), ..origin };
        assert_eq!(support.event("u", Action::MfaUpdate, "", 1).actor, Actor::Key("k1".into()));
    }

    #[test]
    fn actions_have_their_wire_names() {
        for action in Action::ALL {
            let json = serde_json::to_string(&action).unwrap();
            assert_eq!(json, format!("\"{}\"", action.as_str()));
            assert_eq!(Action::parse(action.as_str()), Some(action));
        }
    }
}
