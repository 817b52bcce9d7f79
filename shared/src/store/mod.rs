//! The store: sessions, the per-session event log, run locks. One trait, several backends, one
//! conformance suite (`tests/store_conformance.rs`).

mod memory;
mod sqlite;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;

pub use memory::MemoryStore;
pub use sqlite::SqliteStore;

use crate::config::{Config, DbType};
use crate::event::StoredEvent;
use crate::mcp::{McpServerConfig, ToolSpec};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    #[error("stored data is corrupt: {0}")]
    Corrupt(#[from] serde_json::Error),
    #[error("event {seq} of session {session_id} already exists")]
    SeqConflict { session_id: String, seq: u64 },
    #[error("cannot prepare the store directory: {0}")]
    Io(#[from] std::io::Error),
    #[error("the `{0:?}` store is not available in this build yet")]
    Unsupported(DbType),
}

#[derive(Debug, Clone, PartialEq)]
pub struct SessionRecord {
    pub session_id: String,
    pub user_id: String,
    pub agent_id: Option<String>,
    pub agent_name: Option<String>,
    pub title: String,
    pub created_at: f64,
    pub updated_at: f64,
}

/// A registered MCP server with the tools it listed when last reached.
#[derive(Debug, Clone, PartialEq)]
pub struct McpServerRecord {
    /// The user it belongs to; `SHARED_OWNER` for the preset servers everyone may use.
    pub owner: String,
    pub name: String,
    pub config: McpServerConfig,
    pub tools: Vec<ToolSpec>,
    pub last_error: Option<String>,
    pub updated_at: f64,
}

#[async_trait]
pub trait Store: Send + Sync + 'static {
    async fn get_session(&self, session_id: &str) -> Result<Option<SessionRecord>, StoreError>;
    /// Inserts the session if it does not exist; returns the stored record either way.
    async fn create_session(&self, session: &SessionRecord) -> Result<SessionRecord, StoreError>;
    async fn touch_session(&self, session_id: &str, updated_at: f64) -> Result<(), StoreError>;

    /// Appends events with the sequence numbers the caller assigned; a taken number fails with
    /// `SeqConflict` and nothing of the batch is written.
    async fn append_events(
        &self,
        session_id: &str,
        events: &[StoredEvent],
    ) -> Result<(), StoreError>;
    /// Events with `seq > after`, in order.
    async fn events_after(
        &self,
        session_id: &str,
        after: u64,
    ) -> Result<Vec<StoredEvent>, StoreError>;
    async fn last_seq(&self, session_id: &str) -> Result<u64, StoreError>;

    /// Takes the session's run lock for `run_id` unless another run holds an unexpired lease.
    async fn try_lock_run(
        &self,
        session_id: &str,
        run_id: &str,
        lease: Duration,
    ) -> Result<bool, StoreError>;
    /// Extends the lease; false when the lock is no longer ours.
    async fn renew_run_lock(
        &self,
        session_id: &str,
        run_id: &str,
        lease: Duration,
    ) -> Result<bool, StoreError>;
    async fn release_run_lock(&self, session_id: &str, run_id: &str) -> Result<(), StoreError>;

    /// Inserts the server; false (and nothing written) when the owner already has that name.
    async fn insert_mcp_server(&self, record: &McpServerRecord) -> Result<bool, StoreError>;
    /// Inserts or replaces.
    async fn put_mcp_server(&self, record: &McpServerRecord) -> Result<(), StoreError>;
    async fn get_mcp_server(
        &self,
        owner: &str,
        name: &str,
    ) -> Result<Option<McpServerRecord>, StoreError>;
    /// The owner's servers, by name.
    async fn list_mcp_servers(&self, owner: &str) -> Result<Vec<McpServerRecord>, StoreError>;
    /// False when there was nothing to delete.
    async fn delete_mcp_server(&self, owner: &str, name: &str) -> Result<bool, StoreError>;

    /// A cheap round trip, for readiness checks.
    async fn ping(&self) -> Result<(), StoreError>;
}

pub async fn open_store(config: &Config) -> Result<Arc<dyn Store>, StoreError> {
    match config.db_type {
        DbType::Memory => Ok(Arc::new(MemoryStore::default())),
        DbType::File => Ok(Arc::new(SqliteStore::open(&config.sqlite_file()).await?)),
        other => Err(StoreError::Unsupported(other)),
    }
}

fn lease_deadline(lease: Duration) -> f64 {
    crate::error::now_secs() + lease.as_secs_f64()
}
