//! Logging set-up shared by every binary: `RUST_LOG` filters, stderr output; errors logged with
//! their whole source chain.

#[cfg(feature = "otel")]
mod otel;

use tracing_subscriber::filter::Targets;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

#[cfg(feature = "otel")]
pub use otel::{TraceError, flush_traces, trace_id, traces_on};

/// `RUST_LOG` takes `level` and `target=level` directives, comma-separated (`info` when unset or
/// unreadable); span filters are not supported, which keeps a regex engine out of every binary.
fn filter() -> Targets {
    std::env::var("RUST_LOG")
        .ok()
        .and_then(|directives| directives.parse::<Targets>().ok())
        .unwrap_or_else(|| Targets::new().with_default(tracing::Level::INFO))
}

/// Logs to stderr.
pub fn init_logging() {
    let _ = tracing_subscriber::registry()
        .with(tracing_subscriber::fmt::layer().with_writer(std::io::stderr))
        .with(filter())
        .try_init();
}

/// Logs to stderr and exports spans to `url` (OTLP/HTTP) as `service`; call from within the
/// tokio runtime.
#[cfg(feature = "otel")]
pub fn init_logging_with_traces(url: &str, service: &str) -> Result<(), TraceError> {
    let traces = otel::layer(url, service)?;
    let _ = tracing_subscriber::registry()
        .with(traces)
        .with(tracing_subscriber::fmt::layer().with_writer(std::io::stderr))
        .with(filter())
        .try_init();
    Ok(())
}

/// Sends the spans still batched; without traces in this build, nothing to do.
#[cfg(not(feature = "otel"))]
pub async fn flush_traces() {}

/// Whether spans are being exported: never in this build.
#[cfg(not(feature = "otel"))]
pub fn traces_on() -> bool {
    false
}

/// The OpenTelemetry trace id of `span`; without traces in this build, none.
#[cfg(not(feature = "otel"))]
pub fn trace_id(_span: &tracing::Span) -> Option<String> {
    None
}

/// Ends start-up with a readable message (not a `Debug` dump) when `result` is an error.
pub fn exit_on_error<T, E: std::error::Error + 'static>(what: &str, result: Result<T, E>) -> T {
    result.unwrap_or_else(|error| {
        eprintln!("{what}: {}", chain(&error));
        std::process::exit(1);
    })
}

/// The error and each of its sources, `outer: inner: root`.
pub fn chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.ends_with(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}
