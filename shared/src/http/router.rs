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
use crate::error::ApiError;
use crate::store::Found;

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
