//! The only axum code: errors mapped to statuses, extractors, NDJSON/SSE framing, the middleware
//! stack, and one routes file per function.

mod error;
mod extract;
#[cfg(feature = "mcp")]
mod framing;
#[cfg(feature = "lambda")]
pub mod gateway;
mod middleware;
mod openapi;
pub mod routes;

pub use error::{ApiError, Envelope, ok};
#[cfg(feature = "mcp")]
pub use framing::FIRST_SEQ_HEADER;
pub use middleware::{Limits, with_middleware, with_timeout};
pub use openapi::Documented;
