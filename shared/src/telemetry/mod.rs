//! Logging set-up shared by every binary: `RUST_LOG` filters, stderr output; errors logged with
//! their whole source chain.

use tracing_subscriber::EnvFilter;

pub fn init_logging() {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
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
