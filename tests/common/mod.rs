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

/// The store traits, so that a test can read what a backend holds.
pub use sage_core::store::{
    EventLog, McpServerStore, RunControl, SessionStore, SummaryStore, UserMemoryStore,
};
