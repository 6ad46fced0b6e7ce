//! The endpoints: one module per group, and the route table of (method, path, function,
//! access, handler): each Lambda function's routes (`functions`), and `routes()`, all of them,
//! which mfa-local serves. `http::router` turns routes into an axum Router.

use std::sync::{Arc, OnceLock};

use axum::http::{Method, Request, Response};
use bytes::Bytes;

use crate::clock::Clock;
use crate::config::Config;
use crate::delivery::Sender;
use crate::domain::activity::{Action, Event, Origin};
use crate::domain::api_key::{self, Scope};
use crate::domain::budget::Budget;
use crate::domain::crypto::{constant_time_eq, sha256_hex, Keys};
use crate::domain::limits::WRONG_KEYS_PER_IP;
use crate::domain::webauthn::RelyingParty;
use crate::domain::{session, Standing};
use crate::error::ApiError;
use crate::http::{Authed, Ctx, Reply};
use crate::store::{Lookup, Store};

mod account;
mod activity;
mod avatars;
mod budget;
mod challenges;
mod mfa;
mod models;
mod profile;
mod recovery;
mod sessions;
mod users;
mod verification;
mod webauthn;

/// What a route asks of its caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Anyone; a session is not looked at.
    Public,
    /// A session, even one that still owes MFA factors.
    Session,
    /// A session with every factor its user requires.
    Full,
    /// An API key with the scope `users.read` (the server API); never a session.
    UsersRead,
    /// An API key with the scope `users.write`.
    UsersWrite,
}

impl Access {
    /// The scope an API key needs for a route of the server API.
    pub fn scope(self) -> Option<Scope> {
        match self {
            Access::UsersRead => Some(Scope::UsersRead),
            Access::UsersWrite => Some(Scope::UsersWrite),
            Access::Public | Access::Session | Access::Full => None,
        }
    }
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

/// Declares each Lambda function's routes as a function of its own, so that a function's
/// binary links only its own handlers, and `routes()`, all of them in this order.
macro_rules! functions {
    ($($name:ident => [$($route:expr),+ $(,)?];)+) => {
        /// The routes of each Lambda function, named after it.
        pub mod functions {
            use super::*;
            $(pub fn $name() -> Vec<Route> {
                vec![$($route),+]
            })+

            /// The routes of the function named `name` (its name in template.yaml's
            /// `MFA_FUNCTION`, e.g. `get-qr`); links every handler.
            pub fn by_name(name: &str) -> Option<Vec<Route>> {
                let all: &[fn() -> Vec<Route>] = &[$($name),+];
                all.iter().map(|routes| routes()).find(|routes| routes.first().is_some_and(|r| r.function == name))
            }
        }

        /// Every route of the API. Old and new spellings of an endpoint share its function.
        pub fn routes() -> Vec<Route> {
            let all: &[fn() -> Vec<Route>] = &[$(functions::$name),+];
            all.iter().flat_map(|routes| routes()).collect()
        }
    };
}

functions! {
    create_account => [route!(POST "/v1/account" => "create-account", Public, account::create)];
    get_account => [route!(GET "/v1/account" => "get-account", Full, account::get)];
    update_email => [route!(PATCH "/v1/account/email" => "update-email", Full, account::update_email, account::change_lookup)];
    update_phone => [route!(PATCH "/v1/account/phone" => "update-phone", Full, account::update_phone, account::change_lookup)];
    create_email_session => [
        route!(POST "/v1/account/sessions/email" => "create-email-session", Public, sessions::create),
        route!(POST "/v1/account/sessions" => "create-email-session", Public, sessions::create),
    ];
    delete_session => [route!(DELETE "/v1/account/sessions/{sessionId}" => "delete-session", Session, sessions::delete_one)];
    list_sessions => [route!(GET "/v1/account/sessions" => "list-sessions", Full, sessions::list)];
    get_session => [route!(GET "/v1/account/sessions/{sessionId}" => "get-session", Full, sessions::get_one)];
    update_password => [route!(PATCH "/v1/account/password" => "update-password", Full, profile::update_password, profile::password_lookup)];
    update_name => [route!(PATCH "/v1/account/name" => "update-name", Full, profile::update_name)];
    get_prefs => [route!(GET "/v1/account/prefs" => "get-prefs", Full, profile::get_prefs)];
    update_prefs => [route!(PATCH "/v1/account/prefs" => "update-prefs", Full, profile::update_prefs)];
    list_logs => [route!(GET "/v1/account/logs" => "list-logs", Full, activity::account_logs)];
    create_recovery => [route!(POST "/v1/account/recovery" => "create-recovery", Public, recovery::create)];
    update_recovery => [route!(PUT "/v1/account/recovery" => "update-recovery", Public, recovery::reset)];
    delete_sessions => [route!(DELETE "/v1/account/sessions" => "delete-sessions", Full, sessions::delete_all)];
    create_email_verification => [
        route!(POST "/v1/account/verifications/email" => "create-email-verification", Full, verification::create_email, verification::create_email_lookup),
        route!(POST "/v1/account/verification" => "create-email-verification", Full, verification::create_email, verification::create_email_lookup),
    ];
    update_email_verification => [
        route!(PUT "/v1/account/verifications/email" => "update-email-verification", Public, verification::confirm_email),
        route!(PUT "/v1/account/verification" => "update-email-verification", Public, verification::confirm_email),
    ];
    create_phone_verification => [
        route!(POST "/v1/account/verifications/phone" => "create-phone-verification", Full, verification::create_phone, verification::create_phone_lookup),
        route!(POST "/v1/account/verification/phone" => "create-phone-verification", Full, verification::create_phone, verification::create_phone_lookup),
    ];
    update_phone_verification => [
        route!(PUT "/v1/account/verifications/phone" => "update-phone-verification", Public, verification::confirm_phone),
        route!(PUT "/v1/account/verification/phone" => "update-phone-verification", Public, verification::confirm_phone),
    ];
    update_mfa => [route!(PATCH "/v1/account/mfa" => "update-mfa", Full, mfa::update)];
    list_mfa_factors => [route!(GET "/v1/account/mfa/factors" => "list-mfa-factors", Session, mfa::factors)];
    create_mfa_authenticator => [route!(POST "/v1/account/mfa/authenticators/{type}" => "create-mfa-authenticator", Full, mfa::create_authenticator, webauthn::start_lookup)];
    list_mfa_authenticators => [route!(GET "/v1/account/mfa/authenticators/{type}" => "list-mfa-authenticators", Full, webauthn::list)];
    update_mfa_authenticator => [route!(PUT "/v1/account/mfa/authenticators/{type}" => "update-mfa-authenticator", Full, mfa::verify_authenticator, mfa::verify_lookup)];
    delete_mfa_authenticator => [
        route!(DELETE "/v1/account/mfa/authenticators/{type}" => "delete-mfa-authenticator", Full, mfa::delete_authenticator),
        route!(DELETE "/v1/account/mfa/authenticators/{type}/{authenticatorId}" => "delete-mfa-authenticator", Full, webauthn::delete_one),
    ];
    create_mfa_recovery_codes => [route!(POST "/v1/account/mfa/recovery-codes" => "create-mfa-recovery-codes", Full, mfa::create_recovery_codes)];
    get_mfa_recovery_codes => [route!(GET "/v1/account/mfa/recovery-codes" => "get-mfa-recovery-codes", Full, mfa::get_recovery_codes)];
    update_mfa_recovery_codes => [route!(PATCH "/v1/account/mfa/recovery-codes" => "update-mfa-recovery-codes", Full, mfa::replace_recovery_codes)];
    create_mfa_challenge => [
        route!(POST "/v1/account/mfa/challenges" => "create-mfa-challenge", Session, challenges::create, challenges::create_lookup),
        route!(POST "/v1/account/mfa/challenge" => "create-mfa-challenge", Session, challenges::create, challenges::create_lookup),
    ];
    update_mfa_challenge => [
        route!(PUT "/v1/account/mfa/challenges" => "update-mfa-challenge", Session, challenges::complete, challenges::complete_lookup),
        route!(PUT "/v1/account/mfa/challenge" => "update-mfa-challenge", Session, challenges::complete, challenges::complete_lookup),
    ];
    get_qr => [route!(GET "/v1/avatars/qr" => "get-qr", Public, avatars::qr)];
    list_users => [route!(GET "/v1/users" => "list-users", UsersRead, users::list, users::list_lookup)];
    get_user => [route!(GET "/v1/users/{userId}" => "get-user", UsersRead, users::get, users::lookup)];
    update_user_mfa => [route!(PATCH "/v1/users/{userId}/mfa" => "update-user-mfa", UsersWrite, users::update_mfa, users::lookup)];
    list_user_mfa_factors => [route!(GET "/v1/users/{userId}/mfa/factors" => "list-user-mfa-factors", UsersRead, users::factors, users::lookup)];
    delete_user_mfa_authenticator => [route!(DELETE "/v1/users/{userId}/mfa/authenticators/{type}" => "delete-user-mfa-authenticator", UsersWrite, users::delete_authenticator, users::lookup)];
    create_user_mfa_recovery_codes => [route!(PATCH "/v1/users/{userId}/mfa/recovery-codes" => "create-user-mfa-recovery-codes", UsersWrite, users::create_recovery_codes, users::lookup)];
    update_user_mfa_recovery_codes => [route!(PUT "/v1/users/{userId}/mfa/recovery-codes" => "update-user-mfa-recovery-codes", UsersWrite, users::replace_recovery_codes, users::lookup)];
    get_user_mfa_recovery_codes => [route!(GET "/v1/users/{userId}/mfa/recovery-codes" => "get-user-mfa-recovery-codes", UsersRead, users::get_recovery_codes, users::lookup)];
    list_user_sessions => [route!(GET "/v1/users/{userId}/sessions" => "list-user-sessions", UsersRead, users::sessions, users::lookup)];
    delete_user_sessions => [route!(DELETE "/v1/users/{userId}/sessions" => "delete-user-sessions", UsersWrite, users::delete_sessions, users::lookup)];
    delete_user_session => [route!(DELETE "/v1/users/{userId}/sessions/{sessionId}" => "delete-user-session", UsersWrite, users::delete_session, users::lookup)];
    list_user_logs => [route!(GET "/v1/users/{userId}/logs" => "list-user-logs", UsersRead, users::logs, users::lookup)];
}

/// Everything a handler needs, built once per process.
pub struct App {
    pub config: Config,
    pub keys: Keys,
    pub store: Arc<dyn Store>,
    pub sender: Arc<dyn Sender>,
    pub clock: Arc<dyn Clock>,
    /// The WebAuthn relying party, where configured.
    pub webauthn: Option<RelyingParty>,
    /// The Router of every route over this app, for [`App::handle`]; made on first use.
    in_process: OnceLock<axum::Router>,
}

/// The header carrying an API key's secret, as the server SDKs send it.
pub const API_KEY_HEADER: &str = "x-appwrite-key";

/// Where a request came from, for per-IP limits, when no connection or Lambda request
/// context says it: set in-process by tests and tools.
#[derive(Debug, Clone)]
pub struct ClientIp(pub String);

impl App {
    /// The activity event of `action` on `user_id`, made by the caller of `ctx` now.
    pub fn event(&self, ctx: &Ctx, user_id: &str, action: Action, detail: &str) -> Event {
        let origin = Origin {
            ip: ctx.ip.clone(),
            user_agent: ctx.header("user-agent").unwrap_or_default().chars().take(256).collect(),
            key_id: ctx.key.as_ref().map(|k| k.id.clone()),
            ttl: self.config.log_ttl,
        };
        origin.event(user_id, action, detail, ctx.now)
    }

    pub fn new(config: Config, store: Arc<dyn Store>, sender: Arc<dyn Sender>, clock: Arc<dyn Clock>) -> App {
        let keys = Keys::ring(&config.secret_keys);
        // Settings read from the environment were checked by building one already.
        let webauthn = config.webauthn.as_ref().and_then(|settings| match RelyingParty::new(settings) {
            Ok(rp) => Some(rp),
            Err(e) => {
                tracing::error!(error = %e, "WebAuthn is off: its settings are invalid");
                None
            }
        });
        App { config, keys, store, sender, clock, webauthn, in_process: OnceLock::new() }
    }

    /// Serves one request in-process through the same Router the servers run (for tests and
    /// tools). `function` limits the routes to one Lambda function's.
    pub async fn handle<B>(&self, req: Request<B>, function: Option<&str>) -> Response<Bytes>
    where
        B: http_body::Body<Data = Bytes> + Send + 'static,
        B::Error: Into<axum::BoxError>,
    {
        use tower::ServiceExt;
        // The Router holds the app by `Arc`: it gets a twin sharing this one's store, sender
        // and clock.
        let twin =
            || Arc::new(App::new(self.config.clone(), self.store.clone(), self.sender.clone(), self.clock.clone()));
        let router = match function {
            None => self.in_process.get_or_init(|| crate::http::router(twin(), routes())).clone(),
            Some(f) => crate::http::router(twin(), routes().into_iter().filter(|r| r.function == f).collect()),
        };
        let response = match router.oneshot(req.map(axum::body::Body::new)).await {
            Ok(response) => response,
            Err(never) => match never {},
        };
        let (parts, body) = response.into_parts();
        // A body the app made in memory; it does not fail.
        let bytes = axum::body::to_bytes(body, usize::MAX).await.unwrap_or_default();
        Response::from_parts(parts, bytes)
    }

    /// Runs `route`'s handler for a request: where the route needs a caller, their session
    /// is read (with what the route looks up) and checked first.
    pub async fn run(&self, route: &Route, ctx: &mut Ctx) -> Result<Reply, ApiError> {
        // Appwrite refuses a key and a session together, on every route that looks at either.
        if route.access != Access::Public && ctx.credentials.is_some() && ctx.header(API_KEY_HEADER).is_some() {
            return Err(ApiError::KeyAndSession);
        }
        if let Some(scope) = route.access.scope() {
            self.authorize_key(route, ctx, scope).await?;
        } else if route.access != Access::Public {
            let lookup = (route.lookup)(ctx);
            self.load(ctx, lookup, true).await?;
            let authed = ctx.auth.as_ref().ok_or(ApiError::Unauthorized)?;
            if route.access == Access::Full && authed.session.standing(&authed.user) != Standing::Full {
                return Err(ApiError::MoreFactorsRequired);
            }
        }
        let reply = (route.handler)(self, ctx).await?;
        Ok(match ctx.rate {
            Some(rate) => reply.rate_headers(rate),
            None => reply,
        })
    }

    /// Checks the request's API key (`X-Appwrite-Key`) and its scope, reading the key with
    /// what the route looks up, in one round trip: `ctx.key` is then set. A wrong key is
    /// counted against its address before it is answered, so that guesses stop at the limit
    /// whatever they are; a key acts without MFA, as in Appwrite.
    async fn authorize_key(&self, route: &Route, ctx: &mut Ctx, scope: Scope) -> Result<(), ApiError> {
        let guest = || ApiError::MissingScope { who: "User".into(), role: "guests", scope: scope.as_str() };
        let Some(secret) = ctx.header(API_KEY_HEADER).map(str::to_string) else { return Err(guest()) };
        let mut budget = Budget::default().every(WRONG_KEYS_PER_IP, &ctx.ip);
        let mut lookup = (route.lookup)(ctx);
        let own_counters = lookup.counters.len();
        lookup.counters.extend(budget.counters(ctx.now));
        lookup.api_key = api_key::id_of_secret(&secret).map(str::to_string);
        self.load(ctx, lookup, false).await?;
        let key_counts = ctx.found.counts.split_off(own_counters.min(ctx.found.counts.len()));
        budget.check(&key_counts, ctx.now)?;
        let hash = sha256_hex(&secret);
        let key = ctx.found.api_key.take().filter(|k| constant_time_eq(&k.secret_hash, &hash));
        let Some(key) = key else {
            let counted = self.store.count(&budget.failure(ctx.now).into()).await?;
            budget::Charged::counted(&budget, counted, ctx.now)?;
            return Err(guest());
        };
        if !key.allows(scope) {
            let host = ctx.header("host").unwrap_or_default();
            let host = host.rsplit_once(':').map_or(host, |(name, _)| name);
            let who = format!("app.{}@service.{host}", self.config.project_id);
            return Err(ApiError::MissingScope { who, role: "applications", scope: scope.as_str() });
        }
        ctx.key = Some(key);
        Ok(())
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
                    ctx.auth = Some(Authed { user, session, session_events: found.session_events });
                }
            }
        }
        ctx.found = found;
        Ok(())
    }
}
