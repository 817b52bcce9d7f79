//! `sage-core`: every behaviour of Sage Functions. The function binaries and the local shim only
//! build an [`App`] and serve one of the routers below.
//!
//! Floors, each importing only from the ones before it: `util`, `wire` → `config` → `blob` →
//! `store` → `search` → `llm`, `tools` → `context` → `agent` → `domain` → `jobs` → `http` → `app`.

#[cfg(feature = "mcp")]
pub mod agent;
mod app;
pub mod blob;
pub mod config;
pub mod context;
pub mod domain;
mod http;
#[cfg(feature = "llm")]
pub mod jobs;
#[cfg(feature = "llm")]
pub mod llm;
pub mod sandbox;
pub mod search;
pub mod store;
pub mod telemetry;
#[cfg(feature = "mcp")]
pub mod tools;
pub mod util;
pub mod wire;

pub use app::{App, StartupError, health_router, init_telemetry, session_router};
#[cfg(feature = "mcp")]
pub use app::{local_router, mcp_admin_router, stream_router};
pub use config::Config;
#[cfg(feature = "mcp")]
pub use http::FIRST_SEQ_HEADER;

#[cfg(test)]
mod floors;
