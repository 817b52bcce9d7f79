//! The services behind the routes and the jobs: each takes only the stores and clients it uses,
//! returns typed values or a [`DomainError`], and knows nothing of HTTP.

pub mod accounts;
#[cfg(feature = "llm")]
pub mod agent_drafts;
pub mod agents;
mod error;
pub mod files;
pub mod health;
pub mod knowledge;
#[cfg(feature = "mcp")]
pub mod knowledge_tools;
pub mod memory;
#[cfg(feature = "llm")]
pub mod model;
pub mod paused_runs;
pub mod presets;
pub mod providers;
#[cfg(feature = "mcp")]
pub mod runs;
pub mod sessions;
pub mod skills;
#[cfg(feature = "llm")]
pub mod summaries;
#[cfg(feature = "mcp")]
pub mod tools_admin;
pub mod usage;

pub use error::DomainError;
