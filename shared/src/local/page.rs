//! The web page mfa-local serves at `/`: a person signs up, enrols every factor and signs in
//! with each, through the official web SDK. Its files (`web/`) are built into the binary, so
//! mfa-local serves them from any working folder. The Lambda functions do not serve it: a
//! deployment hosts the page wherever it likes and points it at the API in its settings.

use axum::http::header::{CACHE_CONTROL, CONTENT_TYPE, REFERRER_POLICY, X_CONTENT_TYPE_OPTIONS, X_FRAME_OPTIONS};
use axum::http::{HeaderName, HeaderValue};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use bytes::Bytes;

/// The page loads only its own scripts and styles: no inline script, no eval, no frames.
/// The API it calls, and the QR image it shows, may live on another origin (a deployed
/// API is a setting of the page), hence `connect-src` and `img-src` over http(s).
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
     img-src 'self' data: http: https:; connect-src 'self' http: https:; form-action 'none'; \
     base-uri 'none'; frame-ancestors 'none'";

const HTML: &str = "text/html; charset=utf-8";
const JS: &str = "text/javascript; charset=utf-8";
const CSS: &str = "text/css; charset=utf-8";

/// Every file of the page: path, content type, content.
const FILES: &[(&str, &str, &str)] = &[
    ("/", HTML, include_str!("../../../web/index.html")),
    ("/app.js", JS, include_str!("../../../web/app.js")),
    ("/ui.js", JS, include_str!("../../../web/ui.js")),
    ("/webauthn.js", JS, include_str!("../../../web/webauthn.js")),
    ("/style.css", CSS, include_str!("../../../web/style.css")),
    ("/vendor/appwrite.js", JS, include_str!("../../../web/vendor/appwrite.js")),
];

/// Where the page tells its defaults: this server's project.
pub const SETTINGS_PATH: &str = "/page-settings.json";

/// The Router serving the page's files and its default settings for `project_id`.
pub fn router(project_id: &str) -> Router {
    let mut router = Router::new();
    for &(path, content_type, body) in FILES {
        router =
            router.route(path, get(move || async move { file(content_type, Bytes::from_static(body.as_bytes())) }));
    }
    let settings = Bytes::from(serde_json::json!({ "projectId": project_id }).to_string());
    router.route(SETTINGS_PATH, get(move || async move { file("application/json", settings) }))
}

fn file(content_type: &'static str, body: Bytes) -> Response {
    let headers = [
        (CONTENT_TYPE, HeaderValue::from_static(content_type)),
        (HeaderName::from_static("content-security-policy"), HeaderValue::from_static(CONTENT_SECURITY_POLICY)),
        (X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff")),
        (X_FRAME_OPTIONS, HeaderValue::from_static("DENY")),
        // The email-verification link opens the page with its secret in the query.
        (REFERRER_POLICY, HeaderValue::from_static("no-referrer")),
        // A new mfa-local brings a new page: the browser asks again each time.
        (CACHE_CONTROL, HeaderValue::from_static("no-cache")),
    ];
    (headers, body).into_response()
}

/// The address to open the page at, for a server listening on `addr`. Security keys need
/// a host name as their relying party: a loopback or any-address listener is `localhost`.
pub fn address(addr: std::net::SocketAddr) -> String {
    let ip = addr.ip();
    if ip.is_loopback() || ip.is_unspecified() {
        format!("http://localhost:{}/", addr.port())
    } else {
        format!("http://{addr}/")
    }
}

#[cfg(test)]
mod tests {
    use axum::body::Body;
    use axum::http::{Request, StatusCode};
    use tower::ServiceExt;

    use super::*;

    async fn get(path: &str) -> (StatusCode, axum::http::HeaderMap, String) {
        let res = router("demo").oneshot(Request::get(path).body(Body::empty()).unwrap()).await.unwrap();
        let (parts, body) = res.into_parts();
        let bytes = axum::body::to_bytes(body, usize::MAX).await.unwrap();
        (parts.status, parts.headers, String::from_utf8(bytes.to_vec()).unwrap())
    }

    #[tokio::test]
    async fn every_file_is_served_with_its_type_and_the_policy() {
        for (path, content_type, body) in FILES {
            let (status, headers, served) = get(path).await;
            assert_eq!(status, StatusCode::OK, "{path}");
            assert_eq!(headers[CONTENT_TYPE], *content_type, "{path}");
            assert_eq!(headers["content-security-policy"], CONTENT_SECURITY_POLICY, "{path}");
            assert_eq!(headers[X_CONTENT_TYPE_OPTIONS], "nosniff", "{path}");
            assert_eq!(served, *body, "{path}");
        }
    }

    #[tokio::test]
    async fn the_page_learns_the_servers_project() {
        let (status, headers, body) = get(SETTINGS_PATH).await;
        assert_eq!((status, headers[CONTENT_TYPE].to_str().unwrap()), (StatusCode::OK, "application/json"));
        assert_eq!(serde_json::from_str::<serde_json::Value>(&body).unwrap()["projectId"], "demo");
    }

    /// The policy forbids inline scripts and styles: the page must have none.
    #[test]
    fn the_page_has_no_inline_script_or_style() {
        let (_, _, html) = FILES[0];
        for (at, _) in html.match_indices("<script") {
            let tag = &html[at..at + html[at..].find('>').unwrap()];
            assert!(tag.contains(" src="), "inline script: {tag}");
        }
        assert!(!html.contains("<style"), "inline style element");
        assert!(!html.contains(" style="), "inline style attribute");
        for (at, _) in html.match_indices(" on") {
            let name: String = html[at + 1..].chars().take_while(|c| c.is_ascii_lowercase()).collect();
            assert!(!html[at + 1 + name.len()..].starts_with('='), "inline event handler {name}");
        }
    }

    #[test]
    fn the_address_to_open_is_a_host_name_on_this_machine() {
        let at = |s: &str| address(s.parse().unwrap());
        assert_eq!(at("127.0.0.1:8080"), "http://localhost:8080/");
        assert_eq!(at("[::1]:9000"), "http://localhost:9000/");
        assert_eq!(at("0.0.0.0:8080"), "http://localhost:8080/");
        assert_eq!(at("192.0.2.7:8080"), "http://192.0.2.7:8080/");
    }
}
