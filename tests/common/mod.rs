//! Shared fixtures for the end-to-end tests, one module per concern.

mod client;
mod lambda;
mod llm;
mod mcp_peers;
mod process;
mod server;
mod stores;

pub use client::*;
pub use lambda::*;
pub use llm::*;
pub use mcp_peers::*;
pub use process::*;
pub use server::*;
pub use stores::*;
