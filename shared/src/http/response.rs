//! Replies, Appwrite error bodies, session cookies, rate-limit and CORS headers.

use lambda_http::http::{HeaderValue, Response};
use lambda_http::Body;
use serde_json::{json, Value};

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
        let reply = Reply::json(
            e.status(),
            json!({ "message": e.to_string(), "code": e.status(), "type": e.kind(), "version": API_VERSION }),
        );
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

    pub fn into_response(self) -> Response<Body> {
        let mut builder = Response::builder().status(self.status);
        let body = match self.content {
            Content::Json(v) => {
                builder = builder.header("content-type", "application/json");
                Body::Text(v.to_string())
            }
            Content::Bytes { content_type, bytes } => {
                builder = builder.header("content-type", content_type);
                Body::Binary(bytes)
            }
            Content::Empty => Body::Empty,
        };
        for (name, value) in &self.headers {
            if let Ok(value) = HeaderValue::from_str(value) {
                builder = builder.header(name.as_str(), value);
            }
        }
        builder.body(body).unwrap_or_else(|_| Response::new(Body::Empty))
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

pub const EXPOSED_HEADERS: &str =
    "X-Fallback-Cookies, X-Appwrite-Session, X-RateLimit-Limit, X-RateLimit-Remaining, X-RateLimit-Reset";

pub fn origin_allowed(origin: &str, allowed: &[String]) -> bool {
    allowed.iter().any(|a| a == "*" || a.eq_ignore_ascii_case(origin))
}

/// CORS headers for a request from `origin`, if that origin is allowed.
pub fn cors_headers(origin: Option<&str>, allowed: &[String]) -> Vec<(String, String)> {
    let Some(origin) = origin else { return vec![] };
    if !origin_allowed(origin, allowed) {
        return vec![];
    }
    vec![
        ("Access-Control-Allow-Origin".into(), origin.to_string()),
        ("Access-Control-Allow-Credentials".into(), "true".into()),
        ("Access-Control-Expose-Headers".into(), EXPOSED_HEADERS.into()),
        ("Vary".into(), "Origin".into()),
    ]
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
    fn cors_only_for_allowed_origins() {
        let allowed = vec!["https://app.example".to_string()];
        assert!(cors_headers(Some("https://evil.example"), &allowed).is_empty());
        let h = cors_headers(Some("https://app.example"), &allowed);
        assert!(h.contains(&("Access-Control-Allow-Credentials".into(), "true".into())));
        assert!(!cors_headers(Some("http://x"), &["*".into()]).is_empty());
    }
}
