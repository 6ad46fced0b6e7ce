//! The Lambda side: one function serves the routes of the table that name it.

use std::sync::Arc;

use lambda_http::{service_fn, Error, Request};

use crate::api::App;
use crate::clock::{Clock, SystemClock};
use crate::config::Config;
use crate::backends::{Backends, SenderKind, StoreKind};

/// Builds the app once (cold start) and serves `function`'s routes until the runtime stops.
pub async fn serve(function: &'static str) -> Result<(), Error> {
    tracing_subscriber::fmt()
        .json()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_current_span(false)
        .without_time()
        .init();
    let config = Config::from_env(None)?;
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    // DynamoDB and SES/SNS unless told otherwise; the local kinds write under /tmp, the
    // only writable folder of a function.
    let backends = Backends {
        store: StoreKind::DynamoDb,
        sender: SenderKind::Aws,
        table: "mfa".into(),
        email_from: String::new(),
        database: "/tmp/mfa/mfa.redb".into(),
        outbox: "/tmp/mfa/outbox.jsonl".into(),
    }
    .from_env()?;
    let (store, sender) = backends.build(clock.now()).await?;
    let app = Arc::new(App::new(config, store, sender, clock));
    lambda_http::run(service_fn(move |req: Request| {
        let app = app.clone();
        async move { Ok::<_, Error>(app.handle(req, Some(function)).await) }
    }))
    .await
}
