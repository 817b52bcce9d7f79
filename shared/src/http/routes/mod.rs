//! HTTP handlers: they parse, call a domain service, map the error. One file per function.

pub mod accounts;
pub mod agents;
pub mod files;
pub mod health;
pub mod knowledge;
#[cfg(feature = "mcp")]
pub mod mcp_admin;
pub mod memory;
pub mod providers;
pub mod session;
pub mod skills;
#[cfg(feature = "mcp")]
pub mod stream;
pub mod usage;
