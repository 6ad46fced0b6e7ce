//! The endpoints: one module per group, and `routes()`, the single table of
//! (method, path, function, access, handler) that the Lambdas and the local server share.

use std::sync::Arc;

use lambda_http::http::{Method, Response};
use lambda_http::{Body, Request, RequestExt};

use crate::clock::Clock;
use crate::config::Config;
use crate::delivery::Sender;
use crate::domain::crypto::{sha256_hex, Keys};
use crate::domain::{session, Standing};
use crate::error::ApiError;
use crate::http::request::{credentials, parse_body, parse_query};
use crate::http::response::{cors_headers, origin_allowed};
use crate::http::{match_path, Authed, Ctx, Reply};
use crate::store::{Found, Lookup, Store};

mod account;
mod avatars;
mod budget;
mod challenges;
mod mfa;
mod models;
mod sessions;
mod verification;

/// What a route asks of its caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Anyone; a session is not looked at.
    Public,
    /// A session, even one that still owes MFA factors.
    Session,
    /// A session with every factor its user requires.
    Full,
}

pub type HandlerFuture<'a> = std::pin::Pin<Box<dyn std::future::Future<Output = Result<Reply, ApiError>> + Send + 'a>>;
pub type Handler = for<'a> fn(&'a App, &'a mut Ctx) -> HandlerFuture<'a>;

pub struct Route {
    pub method: Method,
    pub path: &'static str,
    /// The Lambda function (binary) that serves this route.
    pub function: &'static str,
    pub access: Access,
    /// What the handler reads besides the caller's session and user, read with them.
    pub lookup: fn(&Ctx) -> Lookup,
    pub handler: Handler,
}

macro_rules! route {
    ($method:ident $path:literal => $function:literal, $access:ident, $handler:path) => {
        route!($method $path => $function, $access, $handler, |_| Lookup::default())
    };
    ($method:ident $path:literal => $function:literal, $access:ident, $handler:path, $lookup:expr) => {
        Route {
            method: Method::$method,
            path: $path,
            function: $function,
            access: Access::$access,
            lookup: $lookup,
            handler: |app, ctx| Box::pin($handler(app, ctx)),
        }
    };
}

/// Every route of the API. Old and new spellings of an endpoint share its function.
pub fn routes() -> Vec<Route> {
    vec![
        route!(POST "/v1/account" => "create-account", Public, account::create),
        route!(GET "/v1/account" => "get-account", Full, account::get),
        route!(PATCH "/v1/account/email" => "update-email", Full, account::update_email, account::change_lookup),
        route!(PATCH "/v1/account/phone" => "update-phone", Full, account::update_phone, account::change_lookup),
        route!(POST "/v1/account/sessions/email" => "create-email-session", Public, sessions::create),
        route!(POST "/v1/account/sessions" => "create-email-session", Public, sessions::create),
        route!(DELETE "/v1/account/sessions/:sessionId" => "delete-session", Session, sessions::delete_one),
        route!(DELETE "/v1/account/sessions" => "delete-sessions", Full, sessions::delete_all),
        route!(POST "/v1/account/verifications/email" => "create-email-verification", Full, verification::create_email, verification::create_email_lookup),
        route!(POST "/v1/account/verification" => "create-email-verification", Full, verification::create_email, verification::create_email_lookup),
        route!(PUT "/v1/account/verifications/email" => "update-email-verification", Public, verification::confirm_email),
        route!(PUT "/v1/account/verification" => "update-email-verification", Public, verification::confirm_email),
        route!(POST "/v1/account/verifications/phone" => "create-phone-verification", Full, verification::create_phone, verification::create_phone_lookup),
        route!(POST "/v1/account/verification/phone" => "create-phone-verification", Full, verification::create_phone, verification::create_phone_lookup),
        route!(PUT "/v1/account/verifications/phone" => "update-phone-verification", Public, verification::confirm_phone),
        route!(PUT "/v1/account/verification/phone" => "update-phone-verification", Public, verification::confirm_phone),
        route!(PATCH "/v1/account/mfa" => "update-mfa", Full, mfa::update),
        route!(GET "/v1/account/mfa/factors" => "list-mfa-factors", Session, mfa::factors),
        route!(POST "/v1/account/mfa/authenticators/:type" => "create-mfa-authenticator", Full, mfa::create_authenticator),
        route!(PUT "/v1/account/mfa/authenticators/:type" => "update-mfa-authenticator", Full, mfa::verify_authenticator, mfa::verify_lookup),
        route!(DELETE "/v1/account/mfa/authenticators/:type" => "delete-mfa-authenticator", Full, mfa::delete_authenticator),
        route!(POST "/v1/account/mfa/recovery-codes" => "create-mfa-recovery-codes", Full, mfa::create_recovery_codes),
        route!(GET "/v1/account/mfa/recovery-codes" => "get-mfa-recovery-codes", Full, mfa::get_recovery_codes),
        route!(PATCH "/v1/account/mfa/recovery-codes" => "update-mfa-recovery-codes", Full, mfa::replace_recovery_codes),
        route!(POST "/v1/account/mfa/challenges" => "create-mfa-challenge", Session, challenges::create, challenges::create_lookup),
        route!(POST "/v1/account/mfa/challenge" => "create-mfa-challenge", Session, challenges::create, challenges::create_lookup),
        route!(PUT "/v1/account/mfa/challenges" => "update-mfa-challenge", Session, challenges::complete, challenges::complete_lookup),
        route!(PUT "/v1/account/mfa/challenge" => "update-mfa-challenge", Session, challenges::complete, challenges::complete_lookup),
        route!(GET "/v1/avatars/qr" => "get-qr", Public, avatars::qr),
    ]
}

/// Everything a handler needs, built once per process.
pub struct App {
    pub config: Config,
    pub keys: Keys,
    pub store: Arc<dyn Store>,
    pub sender: Arc<dyn Sender>,
    pub clock: Arc<dyn Clock>,
    routes: Vec<Route>,
}

/// Where a request came from, for per-IP limits; set by the local server.
#[derive(Debug, Clone)]
pub struct ClientIp(pub String);

impl App {
    pub fn new(config: Config, store: Arc<dyn Store>, sender: Arc<dyn Sender>, clock: Arc<dyn Clock>) -> App {
        let keys = Keys::derive(&config.secret_key);
        App { config, keys, store, sender, clock, routes: routes() }
    }

    /// Serves a request. `function` limits the routes to one Lambda function's.
    pub async fn handle(&self, req: Request, function: Option<&str>) -> Response<Body> {
        let origin = req.headers().get("origin").and_then(|v| v.to_str().ok()).map(str::to_string);
        let cors = cors_headers(origin.as_deref(), &self.config.allowed_origins);
        // A browser on another site must not act with the user's cookie (cross-site request
        // forgery): an Origin that is not allowed is refused before anything runs. Apps
        // without an Origin (mobile, server) are not browsers and pass.
        let mut reply = if origin.as_deref().is_some_and(|o| !origin_allowed(o, &self.config.allowed_origins)) {
            Reply::error(&ApiError::UnknownOrigin)
        } else if req.method() == Method::OPTIONS {
            preflight(&req)
        } else {
            match self.dispatch(req, function).await {
                Ok(reply) => reply,
                Err(e) => {
                    if e.status() >= 500 {
                        tracing::error!(error = %crate::error::cause_chain(&e), "request failed");
                    }
                    Reply::error(&e)
                }
            }
        };
        reply.headers.extend(cors);
        reply.into_response()
    }

    async fn dispatch(&self, req: Request, function: Option<&str>) -> Result<Reply, ApiError> {
        let path = req.uri().path().to_string();
        let (route, path_params) = self
            .routes
            .iter()
            .filter(|r| r.method == req.method() && function.is_none_or(|f| f == r.function))
            .find_map(|r| match_path(r.path, &path).map(|p| (r, p)))
            .ok_or(ApiError::RouteNotFound)?;

        let query = parse_query(req.uri().query());
        let project = req
            .headers()
            .get("x-appwrite-project")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
            .or_else(|| query.iter().find(|(k, _)| k == "project").map(|(_, v)| v.clone()));
        if project.is_some_and(|p| p != self.config.project_id) {
            return Err(ApiError::ProjectNotFound);
        }

        let ip = client_ip(&req);
        let secure = is_https(&req);
        let (parts, body) = req.into_parts();
        let body = if route.method == Method::GET { Default::default() } else { parse_body(body.as_ref())? };
        let mut ctx = Ctx {
            credentials: credentials(&parts.headers, &self.config.session_cookie()),
            method: parts.method,
            path,
            path_params,
            headers: parts.headers,
            query,
            body,
            ip,
            secure,
            now: self.clock.now(),
            auth: None,
            found: Found::default(),
            rate: None,
        };
        if route.access != Access::Public {
            let lookup = (route.lookup)(&ctx);
            self.load(&mut ctx, lookup, true).await?;
            let authed = ctx.auth.as_ref().ok_or(ApiError::Unauthorized)?;
            if route.access == Access::Full && authed.session.standing(&authed.user) != Standing::Full {
                return Err(ApiError::MoreFactorsRequired);
            }
        }
        let reply = (route.handler)(self, &mut ctx).await?;
        Ok(match ctx.rate {
            Some(rate) => reply.rate_headers(rate),
            None => reply,
        })
    }

    /// Reads what `lookup` names into `ctx.found`, in one round trip, together with the
    /// caller's session and user when `signed_in` is asked: `ctx.auth` is then set if the
    /// request carries valid credentials.
    pub async fn load(&self, ctx: &mut Ctx, mut lookup: Lookup, signed_in: bool) -> Result<(), ApiError> {
        let credentials = ctx.credentials.as_ref().filter(|_| signed_in);
        if let Some(c) = credentials {
            if let Some(session_id) = session::id_of_secret(&c.secret) {
                lookup.session = Some((c.user_id.clone(), session_id.to_string(), sha256_hex(&c.secret)));
                lookup.user = Some(c.user_id.clone());
            }
        }
        let mut found = self.store.load(&lookup, ctx.now).await?;
        if credentials.is_some() {
            if let (Some(session), Some(user)) = (found.session.take(), found.user.take()) {
                if session.survives(&user) {
                    ctx.auth = Some(Authed { user, session });
                }
            }
        }
        ctx.found = found;
        Ok(())
    }
}

fn client_ip(req: &Request) -> String {
    if let Some(ClientIp(ip)) = req.extensions().get::<ClientIp>() {
        return ip.clone();
    }
    match req.request_context_ref() {
        Some(lambda_http::request::RequestContext::ApiGatewayV2(c)) => c.http.source_ip.clone().unwrap_or_default(),
        _ => String::new(),
    }
}

fn is_https(req: &Request) -> bool {
    req.request_context_ref().is_some()
        || req.uri().scheme_str() == Some("https")
        || req.headers().get("x-forwarded-proto").is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"https"))
}

fn preflight(req: &Request) -> Reply {
    let asked = req
        .headers()
        .get("access-control-request-headers")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("Content-Type, X-Appwrite-Project, X-Appwrite-Session, X-Fallback-Cookies")
        .to_string();
    Reply::no_content()
        .header("Access-Control-Allow-Methods", "GET, POST, PUT, PATCH, DELETE, OPTIONS")
        .header("Access-Control-Allow-Headers", asked)
        .header("Access-Control-Max-Age", "86400")
}
