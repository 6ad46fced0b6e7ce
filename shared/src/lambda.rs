//! The Lambda side: one function serves the routes of the table that name it.

use std::sync::Arc;

use lambda_http::{service_fn, Error, Request};

use crate::api::App;
use crate::backends::{Backends, SenderKind, StoreKind};
use crate::clock::{Clock, SystemClock};
use crate::config::Config;

/// Builds the app once (cold start) and serves `function`'s routes until the runtime stops.
pub async fn serve(function: &'static str) -> Result<(), Error> {
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    tracing_subscriber::registry()
        .with(tracing_subscriber::fmt::layer().json().with_current_span(false).without_time())
        // Without RUST_LOG: info, so that failures (5xx) reach CloudWatch.
        .with(log_filter(&std::env::var("RUST_LOG").unwrap_or_else(|_| "info".into())))
        .init();
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
    lambda_http::run(service_fn(move |req: Request| {
        let app = app.clone();
        async move { Ok::<_, Error>(app.handle(req, Some(function)).await) }
    }))
    .await
}

/// `RUST_LOG` as `level` and `target=level` directives, comma-separated; invalid ones are
/// skipped and nothing is logged without any (as `EnvFilter::from_default_env` did, without
/// its regex engine: span and field filters are not supported).
fn log_filter(spec: &str) -> tracing_subscriber::filter::Targets {
    let mut filter = tracing_subscriber::filter::Targets::new();
    let directives = spec.split(',').map(str::trim).filter(|d| !d.is_empty());
    for directive in directives.filter_map(|d| d.parse::<tracing_subscriber::filter::Targets>().ok()) {
        if let Some(level) = directive.default_level() {
            filter = filter.with_default(level);
        }
        filter = filter.with_targets(directive.iter().map(|(target, level)| (target.to_string(), level)));
    }
    filter
}

#[cfg(test)]
mod tests {
    use tracing_subscriber::filter::LevelFilter;

    use super::log_filter;

    #[test]
    fn rust_log_is_read_like_env_filter_without_regexes() {
        assert_eq!(log_filter("").default_level(), None);
        assert!(!log_filter(" , ").would_enable("mfa_core", &tracing::Level::ERROR));
        let f = log_filter("info, mfa_core=debug,aws_smithy_runtime=warn");
        assert_eq!(f.default_level(), Some(LevelFilter::INFO));
        assert!(f.would_enable("mfa_core::api", &tracing::Level::DEBUG));
        assert!(!f.would_enable("aws_smithy_runtime::client", &tracing::Level::INFO));
        // An invalid directive is skipped, the others still apply.
        let f = log_filter("bogus=loud,warn");
        assert_eq!(f.default_level(), Some(LevelFilter::WARN));
    }
}
