//! The Lambda side: one function serves the routes of the table that name it.

use std::sync::Arc;

use lambda_http::{service_fn, Error, Request};

use crate::api::App;
use crate::clock::{Clock, SystemClock};
use crate::config::Config;
use crate::delivery::outbox::Outbox;
use crate::store::embedded::EmbeddedStore;

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
    // The function's writable folder; the embedded store here lasts as long as the instance.
    let dir = std::path::PathBuf::from(std::env::var("MFA_DATA_DIR").unwrap_or_else(|_| "/tmp/mfa".into()));
    let store = EmbeddedStore::open(&dir.join("mfa.redb"), clock.now())?;
    let sender = Outbox::new(dir.join("outbox.jsonl"));
    let app = Arc::new(App::new(config, Arc::new(store), Arc::new(sender), clock));
    lambda_http::run(service_fn(move |req: Request| {
        let app = app.clone();
        async move { Ok::<_, Error>(app.handle(req, Some(function)).await) }
    }))
    .await
}
