//! Small things every floor uses: the clock, identifiers that validate when parsed, and the
//! error a caller's input gets when it does not fit.

mod day;
#[cfg(feature = "llm")]
pub mod fetch;
mod ids;
pub mod sealing;
pub mod tls;
pub mod words;

pub use day::Day;
pub use ids::{SessionId, UserId};

/// What downloads may reach and fetch (`--download_allow_private`, `--download_max_bytes`).
#[derive(Debug, Clone, Copy)]
pub struct DownloadPolicy {
    pub allow_private: bool,
    pub max_bytes: u64,
}

impl Default for DownloadPolicy {
    fn default() -> Self {
        Self {
            allow_private: false,
            max_bytes: 20 * 1024 * 1024,
        }
    }
}

/// Seconds since the Unix epoch, as Sage's records and events carry them.
pub fn now_secs() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|elapsed| elapsed.as_secs_f64())
        .unwrap_or_default()
}

/// Epoch seconds as ISO 8601 with its UTC offset, to the millisecond
/// (`2026-12-04T06:44:49.123+00:00`): what Sage's client reads with `new Date()`.
pub fn iso_time(secs: f64) -> String {
    let format = time::macros::format_description!(
        "[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]+00:00"
    );
    let nanos = (secs * 1000.0).round() as i128 * 1_000_000;
    time::OffsetDateTime::from_unix_timestamp_nanos(nanos)
        .ok()
        .and_then(|at| at.format(&format).ok())
        .unwrap_or_default()
}

pub fn new_id() -> String {
    uuid::Uuid::new_v4().to_string()
}

/// Input that does not fit: the message names the field.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum InputError {
    /// A value the operation does not accept (HTTP 400).
    #[error("{0}")]
    Invalid(String),
    /// A body that does not fit the schema (HTTP 422); `detail` names the field's path.
    #[error("invalid request body")]
    Schema { detail: String },
}

#[cfg(test)]
mod tests {
    #[test]
    fn iso_times_carry_milliseconds_and_the_offset() {
        assert_eq!(super::iso_time(0.0), "1970-01-01T00:00:00.000+00:00");
        assert_eq!(
            super::iso_time(1_796_367_230.125),
            "2026-12-04T06:53:50.125+00:00"
        );
    }
}
