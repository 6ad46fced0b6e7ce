//! One axum Router from a list of routes, with the layers every request passes: request id,
//! one log span, the refusal of unknown browser origins, CORS and the body-size limit.
//! mfa-local and each Lambda function build it once, at start.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::header::ORIGIN;
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, Uri};
use axum::middleware::{from_fn_with_state, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{on, MethodFilter};
use axum::Extension;
use axum::Router;
use tower_http::cors::{AllowCredentials, AllowHeaders, AllowOrigin, CorsLayer};
use tower_http::normalize_path::NormalizePath;
use tower_http::request_id::{MakeRequestId, PropagateRequestIdLayer, RequestId, SetRequestIdLayer};
use tower_http::trace::TraceLayer;
use tracing::field::{display, Empty};
use tracing::Span;

use super::extract::{Client, JsonObject, KnownProject, PathParams, QueryPairs, SessionCredentials};
use super::request::{Ctx, MAX_BODY};
use super::response::{origin_allowed, Reply, EXPOSED_HEADERS};
use crate::api::{App, Route};
use crate::domain::lookup::Found;
use crate::error::ApiError;

/// The header carrying a request's id, in both directions.
pub const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// The Router serving `routes` over `app`. Unknown paths and methods answer 404
/// `general_route_not_found`; a trailing slash is ignored.
pub fn router(app: Arc<App>, routes: Vec<Route>) -> Router {
    let mut endpoints = Router::new();
    for route in routes {
        let Ok(filter) = MethodFilter::try_from(route.method.clone()) else {
            // Routes use the methods of the Appwrite API, all of which axum routes.
            continue;
        };
        endpoints = endpoints.route(route.path, on(filter, endpoint).layer(Extension(Arc::new(route))));
    }
    let endpoints = endpoints.fallback(not_found).method_not_allowed_fallback(not_found).with_state(app.clone());

    let allowed = app.config.allowed_origins.clone();
    let cors = CorsLayer::new()
        .allow_origin(AllowOrigin::predicate(move |origin, _| {
            origin.to_str().is_ok_and(|origin| origin_allowed(origin, &allowed))
        }))
        // Sent only with an Origin, which is an allowed one by then (refuse_unknown_origins).
        .allow_credentials(AllowCredentials::predicate(|_, _| true))
        .allow_methods([Method::GET, Method::POST, Method::PUT, Method::PATCH, Method::DELETE, Method::OPTIONS])
        .allow_headers(AllowHeaders::mirror_request())
        .expose_headers(EXPOSED_HEADERS.map(HeaderName::from_static))
        .max_age(Duration::from_secs(86_400));

    // A request passes these layers from the last added to the first.
    Router::new()
        .fallback_service(NormalizePath::trim_trailing_slash(endpoints))
        .layer(cors)
        .layer(from_fn_with_state(app, refuse_unknown_origins))
        .layer(
            TraceLayer::new_for_http()
                .make_span_with(request_span)
                .on_request(())
                .on_response(|response: &Response, latency: Duration, span: &Span| {
                    span.record("status", response.status().as_u16()).record("latency_ms", latency.as_millis() as u64);
                    tracing::info!("answered");
                })
                // Failures are logged with their causes where they become responses.
                .on_failure(()),
        )
        .layer(PropagateRequestIdLayer::new(REQUEST_ID))
        .layer(SetRequestIdLayer::new(REQUEST_ID, NewRequestId))
        .layer(DefaultBodyLimit::max(MAX_BODY))
}

/// Every route's handler: builds the request's context from the extractors and runs the
/// route. They run in this order: a wrong project is refused before a bad body is.
#[allow(clippy::too_many_arguments)]
async fn endpoint(
    Extension(route): Extension<Arc<Route>>,
    State(app): State<Arc<App>>,
    _: KnownProject,
    PathParams(path_params): PathParams,
    QueryPairs(query): QueryPairs,
    client: Client,
    SessionCredentials(credentials): SessionCredentials,
    uri: Uri,
    headers: HeaderMap,
    JsonObject(body): JsonObject,
) -> Result<Reply, ApiError> {
    Span::current().record("route", display(route.path)).record("function", display(route.function));
    let mut ctx = Ctx {
        method: route.method.clone(),
        path: uri.path().to_string(),
        path_params,
        headers,
        query,
        body,
        ip: client.ip,
        secure: client.secure,
        now: app.clock.now(),
        credentials,
        auth: None,
        key: None,
        found: Found::default(),
        rate: None,
    };
    app.run(&route, &mut ctx).await
}

async fn not_found() -> ApiError {
    ApiError::RouteNotFound
}

/// A browser on another site must not act with the user's cookie (cross-site request
/// forgery): an Origin that is not allowed is refused before anything runs. Apps without an
/// Origin (mobile, server) are not browsers and pass.
async fn refuse_unknown_origins(State(app): State<Arc<App>>, req: Request, next: Next) -> Response {
    if let Some(origin) = req.headers().get(ORIGIN) {
        if !origin.to_str().is_ok_and(|origin| origin_allowed(origin, &app.config.allowed_origins)) {
            return ApiError::UnknownOrigin.into_response();
        }
    }
    let preflight = req.method() == Method::OPTIONS;
    let mut response = next.run(req).await;
    if preflight && response.status() == StatusCode::OK {
        // The CORS layer answers preflights itself, with 200 and no body: say "no content".
        *response.status_mut() = StatusCode::NO_CONTENT;
    }
    response
}

/// The span every log line of a request is in. Its path is not recorded (session ids, the
/// QR code's text), only its route's pattern.
fn request_span(req: &Request<Body>) -> Span {
    let id = req.headers().get(REQUEST_ID).and_then(|v| v.to_str().ok()).unwrap_or_default();
    tracing::info_span!(
        "request",
        id = %id,
        method = %req.method(),
        route = Empty,
        function = Empty,
        status = Empty,
        latency_ms = Empty,
    )
}

/// A random 128-bit id, for requests that arrive without one.
#[derive(Clone, Copy)]
struct NewRequestId;

impl MakeRequestId for NewRequestId {
    fn make_request_id<B>(&mut self, _: &Request<B>) -> Option<RequestId> {
        let id = hex::encode(rand::random::<[u8; 16]>());
        HeaderValue::try_from(id).ok().map(RequestId::new)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use axum::body::Body;
    use axum::http::{Request, Response};
    use bytes::Bytes;
    use serde_json::Value;

    use crate::api::App;
    use crate::clock::ManualClock;
    use crate::config::Config;
    use crate::delivery::outbox::Outbox;
    use crate::store::embedded::EmbeddedStore;

    struct Edge {
        app: App,
        _dir: tempfile::TempDir,
    }

    impl Edge {
        fn new() -> Edge {
            let dir = tempfile::tempdir().unwrap();
            let now = 1_800_000_000_000;
            let mut config = Config::for_project("p", b"an edge test server key of enough length");
            config.allowed_origins = vec!["https://app.example".into()];
            let app = App::new(
                config,
                Arc::new(EmbeddedStore::open(&dir.path().join("db"), now).unwrap()),
                Arc::new(Outbox::new(dir.path().join("outbox.jsonl"))),
                Arc::new(ManualClock::at(now)),
            );
            Edge { app, _dir: dir }
        }

        async fn send(&self, req: Request<Body>) -> (Response<Bytes>, Value) {
            let res = self.app.handle(req, None).await;
            let body = serde_json::from_slice(res.body()).unwrap_or(Value::Null);
            (res, body)
        }
    }

    fn request(method: &str, uri: &str) -> axum::http::request::Builder {
        Request::builder().method(method).uri(uri)
    }

    #[tokio::test]
    async fn unknown_routes_and_methods_are_not_found() {
        let edge = Edge::new();
        for (method, uri) in [("GET", "/v1/nothing"), ("DELETE", "/v1/account"), ("PUT", "/v1/avatars/qr")] {
            let (res, body) = edge.send(request(method, uri).body(Body::empty()).unwrap()).await;
            assert_eq!(res.status(), 404, "{method} {uri}");
            assert_eq!(body["type"], "general_route_not_found", "{method} {uri}");
            assert_eq!(body["code"], 404);
        }
    }

    #[tokio::test]
    async fn a_trailing_slash_is_the_same_route() {
        let edge = Edge::new();
        let (res, body) = edge.send(request("GET", "/v1/account/").body(Body::empty()).unwrap()).await;
        assert_eq!((res.status().as_u16(), body["type"].as_str()), (401, Some("general_unauthorized_scope")));
    }

    #[tokio::test]
    async fn another_project_is_not_found_before_the_body_is_read() {
        let edge = Edge::new();
        let req = request("POST", "/v1/account").header("x-appwrite-project", "other").body(Body::from("{")).unwrap();
        let (res, body) = edge.send(req).await;
        assert_eq!((res.status().as_u16(), body["type"].as_str()), (404, Some("project_not_found")));
        let (res, _) = edge.send(request("GET", "/v1/account?project=other").body(Body::empty()).unwrap()).await;
        assert_eq!(res.status(), 404);
    }

    #[tokio::test]
    async fn bodies_must_be_json_objects_of_at_most_16_kib() {
        let edge = Edge::new();
        for bad in ["{", "[]", "\"x\"", "nul"] {
            let (res, body) = edge.send(request("POST", "/v1/account").body(Body::from(bad)).unwrap()).await;
            assert_eq!(
                (res.status().as_u16(), body["type"].as_str()),
                (400, Some("general_argument_invalid")),
                "{bad}"
            );
        }
        let big = format!("{{\"email\":\"{}\"}}", "x".repeat(16 * 1024));
        let (res, body) = edge.send(request("POST", "/v1/account").body(Body::from(big)).unwrap()).await;
        assert_eq!((res.status().as_u16(), body["type"].as_str()), (413, Some("general_argument_invalid")));
    }

    #[tokio::test]
    async fn unknown_origins_are_refused_before_routing_and_allowed_ones_get_cors() {
        let edge = Edge::new();
        for (method, uri) in [("POST", "/v1/account"), ("GET", "/v1/nothing"), ("OPTIONS", "/v1/account")] {
            let req = request(method, uri).header("origin", "https://evil.example").body(Body::empty()).unwrap();
            let (res, body) = edge.send(req).await;
            assert_eq!((res.status().as_u16(), body["type"].as_str()), (403, Some("general_unknown_origin")));
            assert!(res.headers().get("access-control-allow-origin").is_none());
        }
        let req = request("GET", "/v1/account").header("origin", "https://app.example").body(Body::empty()).unwrap();
        let (res, _) = edge.send(req).await;
        assert_eq!(res.status(), 401);
        assert_eq!(res.headers()["access-control-allow-origin"], "https://app.example");
        assert_eq!(res.headers()["access-control-allow-credentials"], "true");
        let exposed = res.headers()["access-control-expose-headers"].to_str().unwrap();
        assert!(exposed.contains("x-fallback-cookies"), "{exposed}");
    }

    #[tokio::test]
    async fn a_preflight_allows_the_asked_headers_with_no_content() {
        let edge = Edge::new();
        let req = request("OPTIONS", "/v1/account/sessions/email")
            .header("origin", "https://app.example")
            .header("access-control-request-method", "POST")
            .header("access-control-request-headers", "content-type,x-appwrite-project,x-fallback-cookies")
            .body(Body::empty())
            .unwrap();
        let res = edge.app.handle(req, None).await;
        assert_eq!(res.status(), 204);
        assert_eq!(res.headers()["access-control-allow-origin"], "https://app.example");
        assert_eq!(res.headers()["access-control-allow-credentials"], "true");
        assert_eq!(res.headers()["access-control-allow-headers"], "content-type,x-appwrite-project,x-fallback-cookies");
        assert!(res.headers()["access-control-allow-methods"].to_str().unwrap().contains("POST"));
    }

    #[tokio::test]
    async fn every_answer_carries_a_request_id_the_clients_if_it_sent_one() {
        let edge = Edge::new();
        let (first, _) = edge.send(request("GET", "/v1/nothing").body(Body::empty()).unwrap()).await;
        let (second, _) = edge.send(request("GET", "/v1/account").body(Body::empty()).unwrap()).await;
        let id = |res: &Response<Bytes>| res.headers()["x-request-id"].to_str().unwrap().to_string();
        assert_eq!(id(&first).len(), 32);
        assert_ne!(id(&first), id(&second));
        let req = request("GET", "/v1/account").header("x-request-id", "abc-123").body(Body::empty()).unwrap();
        let (res, _) = edge.send(req).await;
        assert_eq!(id(&res), "abc-123");
    }
}
