//! HTTP handlers: they parse, call the library, map the error. One file per function.

pub mod health;
pub mod mcp_admin;
pub mod session;
pub mod stream;
