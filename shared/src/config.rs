//! Everything read from the environment, once, at start.

use crate::clock::{Millis, DAY, SECOND};
use crate::domain::activity::LOG_TTL;
use crate::domain::challenge::CHALLENGE_TTL;
use crate::domain::crypto::FIRST_KEY_ID;
use crate::domain::webauthn;

/// Browser origins mfa-local allows without `MFA_ALLOWED_ORIGINS`: pages served from this
/// machine, on any port (mfa-local adds its own origin).
pub const LOCAL_ORIGINS: &str = "http://localhost:*,http://127.0.0.1:*,http://[::1]:*";

/// How long a session lasts without `MFA_SESSION_TTL_SECONDS`.
pub const SESSION_TTL: Millis = 365 * DAY;

#[derive(Clone)]
pub struct Config {
    pub project_id: String,
    pub project_name: String,
    /// Server keys (id, secret), the active one first: code hashes and TOTP encryption
    /// derive from them (`domain::crypto::Keys`).
    pub secret_keys: Vec<(String, Vec<u8>)>,
    /// Origins allowed to call with credentials (`response::origin_allowed`); `*` allows any.
    pub allowed_origins: Vec<String>,
    /// Hosts verification links may point to; `*` allows any.
    pub redirect_hosts: Vec<String>,
    pub session_ttl: Millis,
    pub challenge_ttl: Millis,
    /// How long activity log events are kept (`MFA_LOG_TTL_DAYS`).
    pub log_ttl: Millis,
    /// Security keys and passkeys, where an RP id is configured (`MFA_WEBAUTHN_*`).
    pub webauthn: Option<webauthn::Settings>,
}

/// The WebAuthn relying party of the local server: `localhost`, on any port of it.
pub const LOCAL_RP_ID: &str = "localhost";
pub const LOCAL_WEBAUTHN_ORIGIN: &str = "http://localhost:8080";

#[derive(Debug, thiserror::Error)]
#[error("configuration: {0}")]
pub struct ConfigError(pub String);

/// A set, non-blank environment variable, trimmed.
pub fn var(name: &str) -> Option<String> {
    std::env::var(name).ok().map(|v| v.trim().to_string()).filter(|v| !v.is_empty())
}

/// A comma list; `default` applies only where one is given (the local server).
fn list(name: &str, default: Option<&str>) -> Result<Vec<String>, ConfigError> {
    let raw = var(name)
        .or_else(|| default.map(str::to_string))
        .ok_or_else(|| ConfigError(format!("{name} is required (a comma list, or * for any)")))?;
    Ok(raw.split(',').map(|s| s.trim().to_string()).filter(|s| !s.is_empty()).collect())
}

/// A ring of server keys, `id=secret` separated by commas or new lines, the active one
/// first: ids of 1 to 16 lowercase letters and digits, each once; secrets of 32 or more
/// characters.
pub fn parse_key_ring(raw: &str) -> Result<Vec<(String, Vec<u8>)>, String> {
    let mut ring: Vec<(String, Vec<u8>)> = Vec::new();
    for entry in raw.split([',', '\n']).map(str::trim).filter(|e| !e.is_empty()) {
        let (id, secret) = entry.split_once('=').ok_or("each key is id=secret")?;
        let id = id.trim();
        let valid = (1..=16).contains(&id.len()) && id.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit());
        if !valid {
            return Err(format!("key id {id:?}: 1 to 16 lowercase letters and digits"));
        }
        if ring.iter().any(|(other, _)| other == id) {
            return Err(format!("key id {id:?} appears twice"));
        }
        if secret.trim().len() < 32 {
            return Err(format!("the secret of key {id:?} must be at least 32 characters"));
        }
        ring.push((id.to_string(), secret.trim().as_bytes().to_vec()));
    }
    if ring.is_empty() {
        return Err("at least one key".into());
    }
    Ok(ring)
}

fn days(name: &str, default: Millis) -> Result<Millis, ConfigError> {
    match var(name) {
        None => Ok(default),
        Some(v) => v
            .parse::<u16>()
            .ok()
            .filter(|d| *d > 0)
            .map(|d| d as Millis * DAY)
            .ok_or_else(|| ConfigError(format!("{name} must be a positive number of days, got {v:?}"))),
    }
}

fn seconds(name: &str, default: Millis) -> Result<Millis, ConfigError> {
    match var(name) {
        None => Ok(default),
        Some(v) => v
            .parse::<u32>()
            .ok()
            .filter(|s| *s > 0)
            .map(|s| s as Millis * SECOND)
            .ok_or_else(|| ConfigError(format!("{name} must be a positive number of seconds, got {v:?}"))),
    }
}

/// The WebAuthn relying party from `MFA_WEBAUTHN_RP_ID`, `MFA_WEBAUTHN_RP_NAME` and
/// `MFA_WEBAUTHN_ORIGINS`; on the local server `localhost` by default, elsewhere none
/// (the WebAuthn routes then answer 501) unless configured.
fn webauthn_settings(local: bool, project_name: &str) -> Result<Option<webauthn::Settings>, ConfigError> {
    let Some(rp_id) = var("MFA_WEBAUTHN_RP_ID").or_else(|| local.then(|| LOCAL_RP_ID.to_string())) else {
        return Ok(None);
    };
    let default_origin =
        if rp_id == LOCAL_RP_ID { LOCAL_WEBAUTHN_ORIGIN.to_string() } else { format!("https://{rp_id}") };
    let origins = list("MFA_WEBAUTHN_ORIGINS", Some(&default_origin))?
        .iter()
        .map(|o| url::Url::parse(o).map_err(|e| ConfigError(format!("MFA_WEBAUTHN_ORIGINS: {o:?} is not a URL: {e}"))))
        .collect::<Result<Vec<_>, _>>()?;
    let settings = webauthn::Settings {
        rp_name: var("MFA_WEBAUTHN_RP_NAME").unwrap_or_else(|| project_name.to_string()),
        rp_id,
        origins,
    };
    webauthn::RelyingParty::new(&settings).map_err(|e| ConfigError(format!("MFA_WEBAUTHN_*: {e}")))?;
    Ok(Some(settings))
}

fn local_webauthn(project_name: &str) -> webauthn::Settings {
    webauthn::Settings {
        rp_id: LOCAL_RP_ID.into(),
        rp_name: project_name.into(),
        origins: vec![url::Url::parse(LOCAL_WEBAUTHN_ORIGIN).expect("a valid URL")], // ok: a constant that parses
    }
}

impl Config {
    /// Reads `MFA_*` variables. The local server passes the key it keeps in its data folder
    /// and gets defaults for development (origins on this machine, any redirect host);
    /// without it (Lambda) the key, the allowed origins and the redirect hosts must all be
    /// configured.
    pub fn from_env(local_secret: Option<Vec<(String, Vec<u8>)>>) -> Result<Config, ConfigError> {
        let local = local_secret.is_some();
        let project_id = var("MFA_PROJECT_ID").unwrap_or_else(|| "local".into());
        if crate::domain::values::parse_id(&project_id).is_none() {
            return Err(ConfigError(format!("MFA_PROJECT_ID {project_id:?} is not a valid id")));
        }
        let secret_keys = match (var("MFA_SECRET_KEYS"), var("MFA_SECRET_KEY")) {
            (Some(ring), _) => parse_key_ring(&ring).map_err(|e| ConfigError(format!("MFA_SECRET_KEYS: {e}")))?,
            // A ring in the one variable (the deployed secret's value after a rotation).
            (None, Some(ring)) if ring.contains('=') => {
                parse_key_ring(&ring).map_err(|e| ConfigError(format!("MFA_SECRET_KEY: {e}")))?
            }
            (None, Some(key)) if key.len() >= 32 => vec![(FIRST_KEY_ID.to_string(), key.into_bytes())],
            (None, Some(_)) => return Err(ConfigError("MFA_SECRET_KEY must be at least 32 characters".into())),
            (None, None) => local_secret.ok_or_else(|| ConfigError("MFA_SECRET_KEY is required".into()))?,
        };
        let project_name = var("MFA_PROJECT_NAME").unwrap_or_else(|| project_id.clone());
        let webauthn = webauthn_settings(local, &project_name)?;
        Ok(Config {
            project_name,
            project_id,
            secret_keys,
            allowed_origins: list("MFA_ALLOWED_ORIGINS", local.then_some(LOCAL_ORIGINS))?,
            redirect_hosts: list("MFA_REDIRECT_HOSTS", local.then_some("*"))?,
            session_ttl: seconds("MFA_SESSION_TTL_SECONDS", SESSION_TTL)?,
            challenge_ttl: seconds("MFA_CHALLENGE_TTL_SECONDS", CHALLENGE_TTL)?,
            log_ttl: days("MFA_LOG_TTL_DAYS", LOG_TTL)?,
            webauthn,
        })
    }

    /// A configuration for tests and tools.
    pub fn for_project(project_id: &str, secret: &[u8]) -> Config {
        Config {
            project_id: project_id.into(),
            project_name: project_id.into(),
            secret_keys: vec![(FIRST_KEY_ID.to_string(), secret.to_vec())],
            allowed_origins: vec!["*".into()],
            redirect_hosts: vec!["*".into()],
            session_ttl: SESSION_TTL,
            challenge_ttl: CHALLENGE_TTL,
            log_ttl: LOG_TTL,
            webauthn: Some(local_webauthn(project_id)),
        }
    }

    pub fn session_cookie(&self) -> String {
        format!("a_session_{}", self.project_id)
    }
}
