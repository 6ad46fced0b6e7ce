//! Extractors: each reads one part of a request for the route's context. A rejection is an
//! `ApiError`, so it is answered like every other error (`response.rs`).

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::rejection::BytesRejection;
use axum::extract::{ConnectInfo, FromRequest, FromRequestParts, Path, Query, Request};
use axum::http::request::Parts;
use axum::http::{Method, StatusCode};
use bytes::Bytes;
use lambda_http::request::RequestContext;
use lambda_http::RequestExt;
use serde_json::{Map, Value};

use super::request::{credentials, parse_body, Credentials, MAX_BODY};
use crate::api::{App, ClientIp};
use crate::error::ApiError;

/// The project the request names (header `X-Appwrite-Project`, else query `project`) is
/// this deployment's, or it names none.
pub struct KnownProject;

impl FromRequestParts<Arc<App>> for KnownProject {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, app: &Arc<App>) -> Result<Self, ApiError> {
        let named = match parts.headers.get("x-appwrite-project") {
            Some(header) => Some(header.to_str().map(str::to_string).map_err(|_| ApiError::ProjectNotFound)?),
            None => QueryPairs::from_request_parts(parts, app).await?.get("project").map(str::to_string),
        };
        match named {
            Some(project) if project != app.config.project_id => Err(ApiError::ProjectNotFound),
            _ => Ok(KnownProject),
        }
    }
}

/// The route's path parameters, percent-decoded.
pub struct PathParams(pub Vec<(String, String)>);

impl<S: Send + Sync> FromRequestParts<S> for PathParams {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        match Path::<Vec<(String, String)>>::from_request_parts(parts, state).await {
            Ok(Path(params)) => Ok(PathParams(params)),
            Err(rejection) => Err(ApiError::InvalidArgument(format!("Invalid path: {}", rejection.body_text()))),
        }
    }
}

/// The query string's pairs, in order.
pub struct QueryPairs(pub Vec<(String, String)>);

impl QueryPairs {
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
    }
}

impl<S: Send + Sync> FromRequestParts<S> for QueryPairs {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        match Query::<Vec<(String, String)>>::from_request_parts(parts, state).await {
            Ok(Query(pairs)) => Ok(QueryPairs(pairs)),
            Err(rejection) => Err(ApiError::InvalidArgument(format!("Invalid query: {}", rejection.body_text()))),
        }
    }
}

/// Who is calling, as far as per-IP limits and cookies need it.
pub struct Client {
    /// The client's IP address: of the connection (mfa-local), of the API Gateway request
    /// context (Lambda), or given in-process; empty if none says.
    pub ip: String,
    /// Whether the client reached us over HTTPS (session cookies get `Secure`).
    pub secure: bool,
}

impl<S: Send + Sync> FromRequestParts<S> for Client {
    type Rejection = Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Infallible> {
        let lambda = parts.request_context_ref();
        let ip = if let Some(ClientIp(ip)) = parts.extensions.get::<ClientIp>() {
            ip.clone()
        } else if let Some(ConnectInfo(addr)) = parts.extensions.get::<ConnectInfo<SocketAddr>>() {
            addr.ip().to_string()
        } else if let Some(RequestContext::ApiGatewayV2(context)) = lambda {
            context.http.source_ip.clone().unwrap_or_default()
        } else {
            String::new()
        };
        // API Gateway is reached over HTTPS only; locally a proxy in front may say so.
        let secure = lambda.is_some()
            || parts.uri.scheme_str() == Some("https")
            || parts.headers.get("x-forwarded-proto").is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"https"));
        Ok(Client { ip, secure })
    }
}

/// The session credentials the request carries, if any (cookie, `X-Appwrite-Session`,
/// `X-Fallback-Cookies`); whether they are valid is for the store to say.
pub struct SessionCredentials(pub Option<Credentials>);

impl FromRequestParts<Arc<App>> for SessionCredentials {
    type Rejection = Infallible;

    async fn from_request_parts(parts: &mut Parts, app: &Arc<App>) -> Result<Self, Infallible> {
        Ok(SessionCredentials(credentials(&parts.headers, &app.config.session_cookie())))
    }
}

/// The JSON object a request's body holds; an empty body is `{}`, a `GET` (or `HEAD`) has
/// none. Bodies over `MAX_BODY` (the Router's `DefaultBodyLimit`) are refused unread.
pub struct JsonObject(pub Map<String, Value>);

impl<S: Send + Sync> FromRequest<S> for JsonObject {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        if req.method() == Method::GET || req.method() == Method::HEAD {
            return Ok(JsonObject(Map::new()));
        }
        let bytes = Bytes::from_request(req, state).await.map_err(|rejection: BytesRejection| {
            match rejection.status() {
                StatusCode::PAYLOAD_TOO_LARGE => ApiError::BodyTooLarge(MAX_BODY),
                // The client stopped sending, or sent a broken body.
                _ => ApiError::InvalidBody,
            }
        })?;
        parse_body(&bytes).map(JsonObject)
    }
}
