//! A request as the handlers see it: parameters, credentials and the caller's address.

use axum::http::{HeaderMap, Method};
use axum_extra::extract::CookieJar;
use base64::Engine;
use serde_json::{Map, Value};

use crate::clock::Millis;
use crate::domain::limits::RateVerdict;
use crate::domain::{Session, User};
use crate::error::ApiError;

/// Bodies larger than this are refused before parsing.
pub const MAX_BODY: usize = 16 * 1024;

/// The `{id, secret}` pair a client keeps in its session cookie.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Credentials {
    pub user_id: String,
    pub secret: String,
}

impl Credentials {
    /// Decodes the base64 JSON cookie value; anything malformed is simply no credentials.
    pub fn decode(value: &str) -> Option<Credentials> {
        let value = value.trim();
        if value.is_empty() || value.len() > 1024 {
            return None;
        }
        let engines = [base64::engine::general_purpose::STANDARD, base64::engine::general_purpose::URL_SAFE];
        let raw = engines
            .iter()
            .find_map(|e| e.decode(value).ok())
            .or_else(|| base64::engine::general_purpose::STANDARD_NO_PAD.decode(value.trim_end_matches('=')).ok())?;
        let json: Value = serde_json::from_slice(&raw).ok()?;
        let user_id = crate::domain::values::parse_id(json.get("id")?.as_str()?)?;
        let secret = json.get("secret")?.as_str()?;
        (!secret.is_empty() && secret.len() <= 256).then(|| Credentials { user_id, secret: secret.to_string() })
    }

    pub fn encode(&self) -> String {
        let json = serde_json::json!({ "id": self.user_id, "secret": self.secret });
        base64::engine::general_purpose::STANDARD.encode(json.to_string())
    }
}

/// The signed-in caller of a route that needs one.
#[derive(Debug, Clone)]
pub struct Authed {
    pub user: User,
    pub session: Session,
    /// Events the session's stored record keeps ([`crate::store::Found::session_events`]).
    pub session_events: u32,
}

pub struct Ctx {
    /// The route's method (a `HEAD` request runs its `GET` route).
    pub method: Method,
    pub path: String,
    pub path_params: Vec<(String, String)>,
    pub headers: HeaderMap,
    pub query: Vec<(String, String)>,
    pub body: Map<String, Value>,
    pub ip: String,
    /// Whether the client reached us over HTTPS (cookies get `Secure`).
    pub secure: bool,
    pub now: Millis,
    pub credentials: Option<Credentials>,
    pub auth: Option<Authed>,
    /// The API key the request acts with (server API routes).
    pub key: Option<crate::domain::api_key::ApiKey>,
    /// What was read for the handler besides the caller (`Route::lookup`).
    pub found: crate::domain::lookup::Found,
    /// The tightest rate limit this request counted against, for the response headers.
    pub rate: Option<RateVerdict>,
}

impl Ctx {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    pub fn path_param(&self, name: &str) -> &str {
        self.path_params.iter().find(|(k, _)| k == name).map_or("", |(_, v)| v.as_str())
    }

    /// The user id the request's credentials name, checked or not: per-user counters are
    /// read together with the session, before it is checked.
    pub fn caller_id(&self) -> &str {
        self.credentials.as_ref().map_or("", |c| c.user_id.as_str())
    }

    /// The session the request's credentials name, checked or not, as `<userId>/<sessionId>`:
    /// the key of per-session counters.
    pub fn caller_session(&self) -> String {
        let session = self.credentials.as_ref().and_then(|c| crate::domain::session::id_of_secret(&c.secret));
        format!("{}/{}", self.caller_id(), session.unwrap_or_default())
    }

    /// The signed-in caller. Routes that need one are only reached with it set.
    pub fn authed(&self) -> Result<&Authed, ApiError> {
        self.auth.as_ref().ok_or(ApiError::Unauthorized)
    }
}

/// Parses a JSON object body; an empty body is `{}`.
pub fn parse_body(bytes: &[u8]) -> Result<Map<String, Value>, ApiError> {
    if bytes.len() > MAX_BODY {
        return Err(ApiError::BodyTooLarge(MAX_BODY));
    }
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(Map::new());
    }
    match serde_json::from_slice::<Value>(bytes) {
        Ok(Value::Object(map)) => Ok(map),
        _ => Err(ApiError::InvalidBody),
    }
}

/// Session credentials in Appwrite's order: cookie (percent-decoded), `X-Appwrite-Session`,
/// `X-Fallback-Cookies`.
pub fn credentials(headers: &HeaderMap, cookie_name: &str) -> Option<Credentials> {
    let legacy = format!("{cookie_name}_legacy");
    let cookies = CookieJar::from_headers(headers);
    let from_cookies = [cookie_name, legacy.as_str()]
        .iter()
        .filter_map(|name| cookies.get(name))
        .find_map(|cookie| Credentials::decode(cookie.value()));
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    from_cookies.or_else(|| header("x-appwrite-session").and_then(Credentials::decode)).or_else(|| {
        let map: Map<String, Value> = serde_json::from_str(header("x-fallback-cookies")?).ok()?;
        Credentials::decode(map.get(cookie_name).or_else(|| map.get(&legacy))?.as_str()?)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn creds() -> Credentials {
        Credentials { user_id: "alice".into(), secret: "s3cr3t".into() }
    }

    #[test]
    fn credentials_round_trip_through_base64_json() {
        assert_eq!(Credentials::decode(&creds().encode()), Some(creds()));
        for bad in ["", "not base64!", "e30=", "bnVsbA==", &"A".repeat(5000)] {
            assert_eq!(Credentials::decode(bad), None, "{bad}");
        }
    }

    #[test]
    fn credentials_are_read_from_cookie_header_or_fallback() {
        let value = creds().encode();
        let mut h = HeaderMap::new();
        h.insert("cookie", HeaderValue::from_str(&format!("x=1; a_session_p={}", value.replace('=', "%3D"))).unwrap());
        assert_eq!(credentials(&h, "a_session_p"), Some(creds()));

        let mut h = HeaderMap::new();
        h.insert("x-appwrite-session", HeaderValue::from_str(&value).unwrap());
        assert_eq!(credentials(&h, "a_session_p"), Some(creds()));

        let mut h = HeaderMap::new();
        let fallback = serde_json::json!({ "a_session_p": value }).to_string();
        h.insert("x-fallback-cookies", HeaderValue::from_str(&fallback).unwrap());
        assert_eq!(credentials(&h, "a_session_p"), Some(creds()));
        assert_eq!(credentials(&h, "a_session_other"), None);

        let mut h = HeaderMap::new();
        h.insert("x-fallback-cookies", HeaderValue::from_static("[]"));
        assert_eq!(credentials(&h, "a_session_p"), None);
    }

    #[test]
    fn bodies_must_be_small_json_objects() {
        assert!(parse_body(b"").unwrap().is_empty());
        assert!(parse_body(b"{\"a\":1}").is_ok());
        assert!(matches!(parse_body(b"[1]"), Err(ApiError::InvalidBody)));
        assert!(matches!(parse_body(b"{"), Err(ApiError::InvalidBody)));
        let big = format!("{{\"a\":\"{}\"}}", "x".repeat(MAX_BODY));
        assert!(matches!(parse_body(big.as_bytes()), Err(ApiError::BodyTooLarge(_))));
    }
}
