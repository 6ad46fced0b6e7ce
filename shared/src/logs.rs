//! Log output: JSON lines on Lambda (CloudWatch), readable lines on stderr for mfa-local
//! (its stdout shows the outbox's messages). `RUST_LOG` filters both.

use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

/// The filter without `RUST_LOG`: info, so that every request and every failure is seen.
const DEFAULT_FILTER: &str = "info";

fn filter() -> tracing_subscriber::filter::Targets {
    log_filter(&std::env::var("RUST_LOG").unwrap_or_else(|_| DEFAULT_FILTER.into()))
}

/// JSON lines on stdout, each with the fields of its request's span.
pub fn init_json() {
    tracing_subscriber::registry()
        .with(tracing_subscriber::fmt::layer().json().with_current_span(true).with_span_list(false).without_time())
        .with(filter())
        .init();
}

/// Readable lines on stderr.
pub fn init_readable() {
    tracing_subscriber::registry()
        .with(tracing_subscriber::fmt::layer().with_writer(std::io::stderr))
        .with(filter())
        .init();
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
