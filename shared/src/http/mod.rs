//! The only axum code: errors mapped to statuses, extractors, NDJSON/SSE framing, the middleware
//! stack, and one routes file per function.

mod error;
mod extract;
mod framing;
mod middleware;
pub mod routes;

pub use error::{ApiError, Envelope, ok};
pub use framing::FIRST_SEQ_HEADER;
pub use middleware::{Limits, with_middleware, with_timeout};
