//! `sage-core`: every behaviour of Sage Functions. The function binaries and the local shim only
//! build an [`AppState`] and serve one of the routers below.

pub mod agent;
pub mod app;
pub mod config;
pub mod error;
pub mod event;
pub mod event_log;
pub mod follow;
pub mod history;
pub mod llm;
pub mod mcp;
pub mod mcp_admin;
pub mod presets;
pub mod request;
pub mod routes;
pub mod run;
pub mod sessions;
pub mod store;
pub mod telemetry;

pub use app::{
    AppState, StartupError, health_router, local_router, mcp_admin_router, session_router,
    stream_router,
};
pub use config::Config;
