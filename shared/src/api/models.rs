//! Appwrite's response models, as typed structs: field names and shapes are the wire
//! contract the official SDKs parse.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::clock::iso;
use crate::domain::activity::{Actor, Event};
use crate::domain::{Authenticator, Challenge, Factor, Session, User, VerificationToken};

/// `Account` (Appwrite's `User` model as the Account API shows it); never a password hash.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Account {
    #[serde(rename = "$id")]
    pub id: String,
    #[serde(rename = "$createdAt")]
    pub created_at: String,
    #[serde(rename = "$updatedAt")]
    pub updated_at: String,
    pub name: String,
    pub registration: String,
    pub status: bool,
    pub labels: Vec<String>,
    pub password_update: String,
    pub email: String,
    pub phone: String,
    pub email_verification: bool,
    pub phone_verification: bool,
    pub mfa: bool,
    pub prefs: serde_json::Map<String, serde_json::Value>,
    pub targets: Vec<String>,
    pub accessed_at: String,
}

impl Account {
    pub fn of(user: &User) -> Account {
        Account {
            id: user.id.clone(),
            created_at: iso(user.created_at),
            updated_at: iso(user.updated_at),
            name: user.name.clone(),
            registration: iso(user.created_at),
            status: true,
            labels: vec![],
            password_update: iso(user.password_updated_at),
            email: user.email.clone().unwrap_or_default(),
            phone: user.phone.clone().unwrap_or_default(),
            email_verification: user.email_verified,
            phone_verification: user.phone_verified,
            mfa: user.mfa,
            prefs: user.prefs.clone(),
            targets: vec![],
            accessed_at: iso(user.updated_at),
        }
    }
}

/// `UserList`: users of the server API, each as Appwrite's `User` model without its optional
/// `password`, `hash` and `hashOptions`: a password hash never leaves the store.
#[derive(Debug, Serialize)]
pub struct UserList {
    pub total: usize,
    pub users: Vec<Account>,
}

/// The client, device and country fields of Appwrite's `Session` and `Log`, which Appwrite
/// derives from the user agent and address; here unknown, but for the client's name where
/// it is worth keeping (a log's user agent).
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Client {
    pub os_code: &'static str,
    pub os_name: &'static str,
    pub os_version: &'static str,
    pub client_type: &'static str,
    pub client_code: &'static str,
    pub client_name: String,
    pub client_version: &'static str,
    pub client_engine: &'static str,
    pub client_engine_version: &'static str,
    pub device_name: &'static str,
    pub device_brand: &'static str,
    pub device_model: &'static str,
    pub country_code: &'static str,
    pub country_name: &'static str,
}

impl Client {
    pub fn unknown(client_name: String) -> Client {
        Client {
            os_code: "",
            os_name: "",
            os_version: "",
            client_type: "",
            client_code: "",
            client_name,
            client_version: "",
            client_engine: "",
            client_engine_version: "",
            device_name: "",
            device_brand: "",
            device_model: "",
            country_code: "--",
            country_name: "Unknown",
        }
    }
}

/// `Session`. Client responses never carry the session secret (Appwrite sends `""`); the
/// client and device fields Appwrite derives from the user agent are empty here.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SessionModel {
    #[serde(rename = "$id")]
    pub id: String,
    #[serde(rename = "$createdAt")]
    pub created_at: String,
    #[serde(rename = "$updatedAt")]
    pub updated_at: String,
    pub user_id: String,
    pub expire: String,
    pub provider: &'static str,
    pub provider_uid: &'static str,
    pub provider_access_token: &'static str,
    pub provider_access_token_expiry: &'static str,
    pub provider_refresh_token: &'static str,
    pub ip: String,
    #[serde(flatten)]
    pub client: Client,
    pub current: bool,
    pub factors: Vec<&'static str>,
    pub secret: &'static str,
    pub mfa_updated_at: String,
}

impl SessionModel {
    pub fn of(s: &Session, current: bool) -> SessionModel {
        SessionModel {
            id: s.id.clone(),
            created_at: iso(s.created_at),
            updated_at: iso(s.updated_at),
            user_id: s.user_id.clone(),
            expire: iso(s.expire),
            provider: "email",
            provider_uid: "",
            provider_access_token: "",
            provider_access_token_expiry: "",
            provider_refresh_token: "",
            ip: s.ip.clone(),
            client: Client::unknown(String::new()),
            current,
            factors: s.factors.iter().map(|f| f.as_str()).collect(),
            secret: "",
            mfa_updated_at: s.mfa_updated_at.map(iso).unwrap_or_default(),
        }
    }
}

/// `Token`; its secret only ever travels in the message sent to the user.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Token {
    #[serde(rename = "$id")]
    pub id: String,
    #[serde(rename = "$createdAt")]
    pub created_at: String,
    pub user_id: String,
    pub secret: &'static str,
    pub expire: String,
    pub phrase: &'static str,
}

impl Token {
    pub fn of(t: &VerificationToken) -> Token {
        Token {
            id: t.id.clone(),
            created_at: iso(t.created_at),
            user_id: t.user_id.clone(),
            secret: "",
            expire: iso(t.expire),
            phrase: "",
        }
    }
}

/// `MfaChallenge`; never its code.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct MfaChallenge {
    #[serde(rename = "$id")]
    pub id: String,
    #[serde(rename = "$createdAt")]
    pub created_at: String,
    pub user_id: String,
    pub expire: String,
    /// For WebAuthn: the options for `navigator.credentials.create` or `.get`, as
    /// `{"publicKey": {...}}` with binary fields in base64url.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub options: Option<serde_json::Value>,
}

impl MfaChallenge {
    pub fn of(c: &Challenge) -> MfaChallenge {
        MfaChallenge {
            id: c.id.clone(),
            created_at: iso(c.created_at),
            user_id: c.user_id.clone(),
            expire: iso(c.expire),
            options: None,
        }
    }

    pub fn with_options(self, options: serde_json::Value) -> MfaChallenge {
        MfaChallenge { options: Some(options), ..self }
    }
}

/// One of a user's authenticators, as listed; never its secret or public key.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct AuthenticatorModel {
    #[serde(rename = "$id")]
    pub id: String,
    #[serde(rename = "$createdAt")]
    pub created_at: String,
    pub name: String,
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub last_used_at: String,
    /// A security key's credential id (base64url); empty for other types.
    pub credential_id: String,
}

/// A list of authenticators, in the shape of Appwrite's lists.
#[derive(Debug, Serialize)]
pub struct AuthenticatorList {
    pub total: usize,
    pub authenticators: Vec<AuthenticatorModel>,
}

impl AuthenticatorList {
    pub fn of(listed: &[&Authenticator]) -> AuthenticatorList {
        let authenticators: Vec<AuthenticatorModel> = listed
            .iter()
            .map(|a| AuthenticatorModel {
                id: a.id.clone(),
                created_at: iso(a.created_at),
                name: a.name.clone(),
                kind: a.kind().as_str(),
                last_used_at: a.last_used_at.map(iso).unwrap_or_default(),
                credential_id: a.credential_id().unwrap_or_default().to_string(),
            })
            .collect();
        AuthenticatorList { total: authenticators.len(), authenticators }
    }
}

/// `MfaFactors`: whether each second factor is ready, by its name (`totp`, `email`,
/// `phone`, `recoveryCode`, `webauthn`), derived from the factors themselves.
#[derive(Debug, Serialize)]
pub struct MfaFactors {
    #[serde(flatten)]
    pub factors: BTreeMap<&'static str, bool>,
    /// Appwrite's model has it; this service offers no custom factors.
    pub custom: bool,
}

impl MfaFactors {
    pub fn of(user: &User) -> MfaFactors {
        MfaFactors { factors: Factor::second().map(|f| (f.as_str(), user.has_factor(f))).collect(), custom: false }
    }
}

/// `MfaType`: a new authenticator's secret and its `otpauth://` URI, shown once.
#[derive(Debug, Serialize)]
pub struct MfaType {
    pub secret: String,
    pub uri: String,
}

/// `MfaRecoveryCodes`, shown once.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct MfaRecoveryCodes {
    pub recovery_codes: Vec<String>,
}

/// `SessionList`.
#[derive(Debug, Serialize)]
pub struct SessionList {
    pub total: usize,
    pub sessions: Vec<SessionModel>,
}

/// `Log`: one event of the activity log. Appwrite derives the client, device and country
/// fields from the user agent and address; here they are empty, as in `Session`. `detail`
/// (the factor, the session) is ours.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Log {
    pub event: &'static str,
    pub user_id: String,
    pub user_email: String,
    pub user_name: String,
    /// `admin` for an action taken with an API key, as Appwrite marks the console's.
    pub mode: &'static str,
    pub ip: String,
    pub time: String,
    #[serde(flatten)]
    pub client: Client,
    pub detail: String,
    /// The API key that acted, if one did.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key_id: Option<String>,
}

impl Log {
    pub fn of(e: &Event, user: &User) -> Log {
        let key_id = match &e.actor {
            Actor::Key(id) => Some(id.clone()),
            Actor::User => None,
        };
        Log {
            event: e.action.as_str(),
            user_id: e.user_id.clone(),
            user_email: user.email.clone().unwrap_or_default(),
            user_name: user.name.clone(),
            mode: if key_id.is_some() { "admin" } else { "default" },
            ip: e.ip.clone(),
            time: iso(e.time),
            client: Client::unknown(e.user_agent.clone()),
            detail: e.detail.clone(),
            key_id,
        }
    }
}

/// `LogList`.
#[derive(Debug, Serialize)]
pub struct LogList {
    pub total: usize,
    pub logs: Vec<Log>,
}
