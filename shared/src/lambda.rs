//! The Lambda side: one function serves its own routes (`api::functions`) through the same
//! Router as mfa-local, under `lambda_http`.

use std::sync::Arc;

use axum::extract::Request;
use axum::http::HeaderValue;
use lambda_http::{Error, RequestExt};

use crate::api::{App, Route};
use crate::backends::{Backends, SenderKind, StoreKind};
use crate::clock::{Clock, SystemClock};
use crate::config::Config;
use crate::http::REQUEST_ID;

/// Serves the function named `name` (template.yaml's `MFA_FUNCTION`): how the one bootstrap
/// every function deploys becomes that function.
pub async fn serve_named(name: &str) -> Result<(), Error> {
    let routes =
        crate::api::functions::by_name(name).ok_or_else(|| format!("MFA_FUNCTION={name} names no function"))?;
    serve(routes).await
}

/// Builds the app and the Router once (cold start) and serves `routes`, a function's own,
/// until the runtime stops.
pub async fn serve(routes: Vec<Route>) -> Result<(), Error> {
    crate::logs::init_json();
    let config = Config::from_env(None)?;
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    // DynamoDB and SES/SNS, the only kinds a function accepts (see below).
    let backends = Backends {
        store: StoreKind::DynamoDb,
        sender: SenderKind::Aws,
        table: "mfa".into(),
        email_from: String::new(),
        database: "/tmp/mfa/mfa.redb".into(),
        outbox: "/tmp/mfa/outbox.jsonl".into(),
    }
    .from_env()?;
    if backends.sender == SenderKind::Outbox {
        // The outbox prints codes and links: in Lambda that is CloudWatch.
        return Err("MFA_SENDER=outbox would write one-time codes to the function's logs".into());
    }
    if backends.store == StoreKind::Embedded {
        // A function's /tmp belongs to one short-lived instance: users and sessions would
        // vanish between instances.
        return Err("MFA_STORE=embedded would keep the data in one instance's /tmp".into());
    }
    // Not `build`: keeps the embedded database and the outbox out of the bootstraps.
    let (store, sender) = backends.build_aws().await?;
    let app = Arc::new(App::new(config, store, sender, clock));
    let router = crate::http::router(app, routes).layer(axum::middleware::map_request(lambda_request_id));
    lambda_http::run(router).await
}

/// A request's id is its Lambda invocation's (the `requestId` of the function's own log
/// lines), whatever the client sent.
async fn lambda_request_id(mut req: Request) -> Request {
    let id = req.lambda_context_ref().and_then(|context| HeaderValue::from_str(&context.request_id).ok());
    if let Some(id) = id {
        req.headers_mut().insert(REQUEST_ID, id);
    }
    req
}
