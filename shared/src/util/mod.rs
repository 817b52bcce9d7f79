//! Small things every floor uses: the clock, identifiers that validate when parsed, and the
//! error a caller's input gets when it does not fit.

mod ids;
pub mod tls;

pub use ids::{SessionId, UserId};

/// Seconds since the Unix epoch, as Sage's records and events carry them.
pub fn now_secs() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|elapsed| elapsed.as_secs_f64())
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
