//! Replies, Appwrite error bodies (the one place an `ApiError` becomes a response), session
//! cookies, rate-limit headers and which browser origins are allowed.

use axum::body::Body;
use axum::http::header::CONTENT_TYPE;
use axum::http::{HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::Value;

use crate::domain::limits::RateVerdict;
use crate::error::{ApiError, API_VERSION};

#[derive(Debug)]
pub enum Content {
    Json(Value),
    Bytes { content_type: &'static str, bytes: Vec<u8> },
    Empty,
}

#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub content: Content,
    pub headers: Vec<(String, String)>,
}

impl Reply {
    pub fn json(status: u16, body: Value) -> Reply {
        Reply { status, content: Content::Json(body), headers: vec![] }
    }

    /// A typed response model as JSON.
    pub fn model(status: u16, model: &impl serde::Serialize) -> Reply {
        match serde_json::to_value(model) {
            Ok(body) => Reply::json(status, body),
            // Models are plain structs of strings, numbers and maps: they always serialise.
            Err(e) => Reply::error(&ApiError::Internal(Box::new(e))),
        }
    }

    pub fn no_content() -> Reply {
        Reply { status: 204, content: Content::Empty, headers: vec![] }
    }

    pub fn bytes(content_type: &'static str, bytes: Vec<u8>) -> Reply {
        Reply { status: 200, content: Content::Bytes { content_type, bytes }, headers: vec![] }
    }

    pub fn header(mut self, name: &str, value: impl Into<String>) -> Reply {
        self.headers.push((name.to_string(), value.into()));
        self
    }

    pub fn error(e: &ApiError) -> Reply {
        let body = ErrorBody { message: e.to_string(), code: e.status(), kind: e.kind(), version: API_VERSION };
        let reply = Reply::json(e.status(), serde_json::to_value(body).unwrap_or_default());
        match e.rate() {
            Some(rate) => reply.rate_headers(rate),
            None => reply,
        }
    }

    pub fn rate_headers(self, rate: RateVerdict) -> Reply {
        self.header("X-RateLimit-Limit", rate.limit.to_string())
            .header("X-RateLimit-Remaining", rate.remaining.to_string())
            .header("X-RateLimit-Reset", (rate.reset_at / 1000).to_string())
    }
}

impl IntoResponse for Reply {
    fn into_response(self) -> Response {
        let (content_type, body) = match self.content {
            Content::Json(v) => (Some("application/json"), Body::from(v.to_string())),
            Content::Bytes { content_type, bytes } => (Some(content_type), Body::from(bytes)),
            // Appwrite names a type on its empty answers too, and the Python SDK reads it on
            // every success.
            Content::Empty => (Some("text/plain; charset=utf-8"), Body::empty()),
        };
        let mut response = Response::new(body);
        *response.status_mut() = StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let headers = response.headers_mut();
        if let Some(content_type) = content_type {
            headers.insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
        }
        for (name, value) in self.headers {
            if let (Ok(name), Ok(value)) = (HeaderName::try_from(name), HeaderValue::try_from(value)) {
                headers.append(name, value);
            }
        }
        response
    }
}

/// Appwrite's error model.
#[derive(serde::Serialize)]
struct ErrorBody {
    message: String,
    code: u16,
    #[serde(rename = "type")]
    kind: &'static str,
    version: &'static str,
}

/// Every error, of a handler or an extractor, is answered here. A 5xx is logged with its
/// causes; its body says only what kind of failure it was.
impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        if self.status() >= 500 {
            // The chain's messages only: a store error's debug form can carry items it met.
            tracing::error!(error = %crate::error::cause_chain(&self), "request failed");
        }
        Reply::error(&self).into_response()
    }
}

/// `Set-Cookie` values for a session cookie (and its `_legacy` twin), as Appwrite sets them.
pub fn session_cookies(name: &str, value: &str, expires_at: i64, secure: bool) -> [String; 2] {
    let expires = http_date(expires_at);
    let secure = if secure { "; secure" } else { "" };
    [
        format!("{name}_legacy={value}; expires={expires}; path=/; httponly{secure}"),
        format!("{name}={value}; expires={expires}; path=/; httponly{secure}; samesite=None"),
    ]
}

fn http_date(at_millis: i64) -> String {
    let format = time::macros::format_description!(
        "[weekday repr:short], [day] [month repr:short] [year] [hour]:[minute]:[second] GMT"
    );
    time::OffsetDateTime::from_unix_timestamp(at_millis / 1000)
        .ok()
        .and_then(|t| t.format(&format).ok())
        .unwrap_or_else(|| "Thu, 01 Jan 1970 00:00:00 GMT".into())
}

/// Response headers a browser app may read (the web SDK reads `X-Fallback-Cookies`).
pub const EXPOSED_HEADERS: [&str; 6] = [
    "x-fallback-cookies",
    "x-appwrite-session",
    "x-ratelimit-limit",
    "x-ratelimit-remaining",
    "x-ratelimit-reset",
    "x-request-id",
];

/// Whether a browser on `origin` may call: an entry `*` allows any origin, an entry
/// `scheme://host:*` that host on any port (or the scheme's default), any other entry exactly
/// its origin (ASCII case aside).
pub fn origin_allowed(origin: &str, allowed: &[String]) -> bool {
    allowed.iter().any(|entry| match entry.strip_suffix(":*") {
        _ if entry == "*" => true,
        Some(host) => {
            origin.get(..host.len()).is_some_and(|start| start.eq_ignore_ascii_case(host)) && {
                let port = &origin[host.len()..];
                port.is_empty()
                    || port
                        .strip_prefix(':')
                        .is_some_and(|p| (1..=5).contains(&p.len()) && p.bytes().all(|b| b.is_ascii_digit()))
            }
        }
        None => entry.eq_ignore_ascii_case(origin),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_bodies_have_appwrite_shape() {
        let r = Reply::error(&ApiError::InvalidToken);
        assert_eq!(r.status, 401);
        let Content::Json(body) = r.content else { panic!("json expected") };
        assert_eq!(body["type"], "user_invalid_token");
        assert_eq!(body["code"], 401);
        assert_eq!(body["version"], API_VERSION);
        assert!(body["message"].is_string());
    }

    #[test]
    fn cookies_follow_appwrite() {
        let [legacy, main] = session_cookies("a_session_p", "dmFs", 0, true);
        assert_eq!(legacy, "a_session_p_legacy=dmFs; expires=Thu, 01 Jan 1970 00:00:00 GMT; path=/; httponly; secure");
        assert!(main.ends_with("; secure; samesite=None"));
    }

    #[test]
    fn origins_match_exactly_or_on_any_port() {
        let allowed = vec!["https://app.example".to_string(), "http://localhost:*".to_string()];
        assert!(origin_allowed("https://app.example", &allowed));
        assert!(origin_allowed("HTTPS://APP.example", &allowed));
        assert!(!origin_allowed("https://app.example:8443", &allowed));
        assert!(!origin_allowed("https://evil.example", &allowed));
        for ok in ["http://localhost", "http://localhost:5173", "http://LOCALHOST:1"] {
            assert!(origin_allowed(ok, &allowed), "{ok}");
        }
        for refused in [
            "http://localhost.evil.example",
            "http://localhost:5173.evil.example",
            "http://localhost:",
            "http://localhost:123456",
            "https://localhost:5173",
            "http://localhos",
            "null",
            "",
        ] {
            assert!(!origin_allowed(refused, &allowed), "{refused}");
        }
        assert!(origin_allowed("https://anything.example", &["*".to_string()]));
    }
}
