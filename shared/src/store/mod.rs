//! The store: one trait per aggregate (sessions, the per-session event log, run control, MCP
//! servers, user memories, summaries, accounts), their records, and the backends that implement all of them: memory, SQL (SQLite,
//! MySQL/MariaDB) and DynamoDB. One conformance suite (`tests/store_conformance.rs`) runs on each.

mod coalesce;
#[cfg(feature = "dynamodb")]
mod dynamodb;
mod memory;
mod records;
#[cfg(any(feature = "sqlite", feature = "mysql"))]
mod sql;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;

pub use coalesce::EventSink;
#[cfg(feature = "dynamodb")]
pub use dynamodb::DynamoStore;
pub use memory::MemoryStore;
pub use records::{
    AccountRecord, AgentRecord, DocStatus, IdempotencyRecord, KnowledgeBaseRecord,
    KnowledgeDocRecord, McpAuthorizationRecord, McpCredentialsRecord, McpServerRecord,
    PendingApprovalRecord, ProviderRecord, RefreshTokenRecord, RunLock, RunStatus, RunTally,
    SessionRecord, SkillRecord, SummaryRecord, SystemSettingsRecord, UsageRecord, UserMemoryRecord,
};
#[cfg(any(feature = "sqlite", feature = "mysql"))]
pub use sql::SqlStore;

use crate::config::{DbType, StoreConfig};
use crate::wire::StoredEvent;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[cfg(any(feature = "sqlite", feature = "mysql"))]
    #[error("database error")]
    Database(#[from] sqlx::Error),
    #[cfg(any(feature = "sqlite", feature = "mysql"))]
    #[error("database migration failed")]
    Migration(#[from] sqlx::migrate::MigrateError),
    #[error("stored data is corrupt")]
    Corrupt(#[from] serde_json::Error),
    #[error("stored item does not map to its record")]
    Mapping(#[source] BoxError),
    #[error("event {seq} of session {session_id} already exists")]
    SeqConflict { session_id: String, seq: u64 },
    #[error("cannot prepare the store directory")]
    Io(#[from] std::io::Error),
    #[error("store configuration: {0}")]
    Config(String),
    #[error("DynamoDB request failed")]
    Dynamo(#[source] BoxError),
    #[error("an item of {size} bytes exceeds the store's {limit}-byte limit")]
    ItemTooLarge { size: usize, limit: usize },
    #[error("the event writer stopped")]
    WriterStopped,
    #[error("object storage failed")]
    Objects(#[from] crate::blob::BlobError),
}

/// Conversations: one record per session, listed per user.
#[async_trait]
pub trait SessionStore: Send + Sync + 'static {
    async fn get_session(&self, session_id: &str) -> Result<Option<SessionRecord>, StoreError>;
    /// Inserts the session if it does not exist; returns the stored record either way.
    async fn create_session(&self, session: &SessionRecord) -> Result<SessionRecord, StoreError>;
    /// Replaces an existing session's record.
    async fn update_session(&self, session: &SessionRecord) -> Result<(), StoreError>;
    /// Every session of one user, in no particular order.
    async fn user_sessions(&self, user_id: &str) -> Result<Vec<SessionRecord>, StoreError>;
    /// Removes the session, its events, its lock.
    async fn delete_session(&self, session_id: &str) -> Result<(), StoreError>;
}

/// Each session's events, numbered from 1: what was streamed, and the caller's messages.
#[async_trait]
pub trait EventLog: Send + Sync + 'static {
    /// Appends events with the sequence numbers the caller assigned, contiguous and after
    /// `last_seq`. A taken number fails with `SeqConflict` and nothing of the batch is written; a
    /// backend that packs a batch into one record (DynamoDB) sees the collision where the batch
    /// starts, which is where two writers that read the same `last_seq` meet.
    async fn append_events(
        &self,
        session_id: &str,
        events: &[StoredEvent],
    ) -> Result<(), StoreError>;
    /// Several sessions' events, with the usage some of them account for, in one write where
    /// the backend gains from it (one SQL transaction, all or nothing); elsewhere batch by
    /// batch, each as `append_events` or `append_events_with_usage`, stopping at the first
    /// failure.
    async fn append_event_batches(&self, batches: &[EventBatch]) -> Result<(), StoreError> {
        for batch in batches {
            match &batch.usage {
                Some(usage) => {
                    self.append_events_with_usage(&batch.session_id, &batch.events, usage)
                        .await?
                }
                None => self.append_events(&batch.session_id, &batch.events).await?,
            }
        }
        Ok(())
    }

    /// True when concurrent runs' writes should be funnelled into shared batches: a single
    /// writer database (SQLite) or one where commits dominate the cost of a write.
    fn coalesces_writes(&self) -> bool {
        false
    }

    /// Events with `seq > after`, in order.
    async fn events_after(
        &self,
        session_id: &str,
        after: u64,
    ) -> Result<Vec<StoredEvent>, StoreError>;
    async fn last_seq(&self, session_id: &str) -> Result<u64, StoreError>;

    /// Appends a run's closing events together with the usage they account for: both or
    /// neither. A taken sequence number fails with `SeqConflict`, as in `append_events`.
    async fn append_events_with_usage(
        &self,
        session_id: &str,
        events: &[StoredEvent],
        usage: &UsageRecord,
    ) -> Result<(), StoreError>;
}

/// One session's events in a shared write, with the usage they account for when they close a
/// run.
#[derive(Debug, Clone)]
pub struct EventBatch {
    pub session_id: String,
    pub events: Vec<StoredEvent>,
    pub usage: Option<UsageRecord>,
}

/// The usage ledger: what each user's runs spent, by UTC day. Deleting a session keeps it.
#[async_trait]
pub trait UsageLedger: Send + Sync + 'static {
    /// The user's records for the days `from..=to` (`YYYY-MM-DD`), in no particular order.
    async fn user_usage(
        &self,
        user_id: &str,
        from: &str,
        to: &str,
    ) -> Result<Vec<UsageRecord>, StoreError>;
    /// Every user's records for the days `from..=to`, in no particular order.
    async fn all_usage(&self, from: &str, to: &str) -> Result<Vec<UsageRecord>, StoreError>;
}

/// What keeps runs single, stoppable from any instance, and retries idempotent: the run lock
/// with its lease and cancel flag, and the idempotency keys.
#[async_trait]
pub trait RunControl: Send + Sync + 'static {
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
    async fn run_lock(&self, session_id: &str) -> Result<Option<RunLock>, StoreError>;
    /// Sets the durable cancel flag on the session's live run; false when none runs.
    async fn request_cancel(&self, session_id: &str) -> Result<bool, StoreError>;

    /// Of the given sessions, those whose live run has its cancel flag set, with that run's id.
    async fn cancel_requests(
        &self,
        session_ids: &[String],
    ) -> Result<Vec<(String, String)>, StoreError> {
        let mut flagged = Vec::new();
        for session_id in session_ids {
            if let Some(lock) = self.run_lock(session_id).await?
                && lock.cancel_requested
            {
                flagged.push((session_id.clone(), lock.run_id));
            }
        }
        Ok(flagged)
    }

    /// Binds the key unless it is bound already; returns the existing binding when it is.
    async fn claim_idempotency_key(
        &self,
        record: &IdempotencyRecord,
    ) -> Result<Option<IdempotencyRecord>, StoreError>;
    async fn get_idempotency_key(&self, key: &str)
    -> Result<Option<IdempotencyRecord>, StoreError>;
    async fn set_idempotency_first_seq(&self, key: &str, first_seq: u64) -> Result<(), StoreError>;
    async fn release_idempotency_key(&self, key: &str) -> Result<(), StoreError>;

    /// Stores the session's paused run (one waiting for an approval, or a running run's
    /// checkpoint for its hand-off), replacing any earlier one.
    async fn put_pending_approval(&self, record: &PendingApprovalRecord) -> Result<(), StoreError>;
    async fn pending_approval(
        &self,
        session_id: &str,
    ) -> Result<Option<PendingApprovalRecord>, StoreError>;
    /// Paused runs (of any session) due by `now`, earliest first, at most `limit`.
    async fn due_paused_runs(
        &self,
        now: f64,
        limit: usize,
    ) -> Result<Vec<PendingApprovalRecord>, StoreError>;
    /// Removes the session's paused run if it is still `approval_id`; true for the one caller
    /// that removed it.
    async fn take_pending_approval(
        &self,
        session_id: &str,
        approval_id: &str,
    ) -> Result<bool, StoreError>;
}

/// Registered MCP servers, per owner.
#[async_trait]
pub trait McpServerStore: Send + Sync + 'static {
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
    /// The servers of several owners: each owner's by name, the owners in the order given.
    async fn list_mcp_servers_of(
        &self,
        owners: &[&str],
    ) -> Result<Vec<McpServerRecord>, StoreError> {
        let mut servers = Vec::new();
        for owner in owners {
            servers.extend(self.list_mcp_servers(owner).await?);
        }
        Ok(servers)
    }
    /// False when there was nothing to delete.
    async fn delete_mcp_server(&self, owner: &str, name: &str) -> Result<bool, StoreError>;

    /// Keeps an OAuth authorization in progress under its `state`.
    async fn put_mcp_authorization(
        &self,
        record: &McpAuthorizationRecord,
    ) -> Result<(), StoreError>;
    /// Removes and returns it: of racing callers, one gets it.
    async fn take_mcp_authorization(
        &self,
        state: &str,
    ) -> Result<Option<McpAuthorizationRecord>, StoreError>;
    async fn mcp_credentials(
        &self,
        owner: &str,
        server: &str,
    ) -> Result<Option<McpCredentialsRecord>, StoreError>;
    /// Writes the credentials when the stored ones are still at version `expected` (`None`:
    /// when none are stored); false, writing nothing, when they are not.
    async fn put_mcp_credentials(
        &self,
        record: &McpCredentialsRecord,
        expected: Option<u64>,
    ) -> Result<bool, StoreError>;
    async fn delete_mcp_credentials(&self, owner: &str, server: &str) -> Result<(), StoreError>;
}

/// Users' long-term memories, one per user and key.
#[async_trait]
pub trait UserMemoryStore: Send + Sync + 'static {
    /// Inserts the memory or replaces the one under the same user and key.
    async fn put_user_memory(&self, memory: &UserMemoryRecord) -> Result<(), StoreError>;
    /// The user's memories, by key.
    async fn user_memories(&self, user_id: &str) -> Result<Vec<UserMemoryRecord>, StoreError>;
    /// False when there was nothing to delete.
    async fn delete_user_memory(&self, user_id: &str, key: &str) -> Result<bool, StoreError>;
}

/// Sessions' summaries, written by the summary job.
#[async_trait]
pub trait SummaryStore: Send + Sync + 'static {
    async fn session_summary(&self, session_id: &str) -> Result<Option<SummaryRecord>, StoreError>;
    /// Stores `summary` if the stored one still covers `previous_seq` (0: there is none yet);
    /// false, and nothing written, when another writer got there first.
    async fn put_session_summary(
        &self,
        summary: &SummaryRecord,
        previous_seq: u64,
    ) -> Result<bool, StoreError>;
    /// Sessions whose log reaches past their summary, by id, after `after`, at most `limit`;
    /// each with the sequence number its summary covers (0 without one).
    async fn sessions_due_for_summary(
        &self,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<(SessionRecord, u64)>, StoreError>;
}

/// Accounts, and the refresh tokens issued to them.
#[async_trait]
pub trait AccountStore: Send + Sync + 'static {
    /// Inserts the account; false, and nothing written, when one of its login keys (username,
    /// email) is taken.
    async fn insert_account(&self, account: &AccountRecord) -> Result<bool, StoreError>;
    async fn account(&self, user_id: &str) -> Result<Option<AccountRecord>, StoreError>;
    /// The account whose username or email is `login`, case-insensitively.
    async fn account_by_login(&self, login: &str) -> Result<Option<AccountRecord>, StoreError>;
    /// Replaces an existing account's password hash, role, phone number and token generation
    /// (its login keys never change); false when there is no such account.
    async fn update_account(&self, account: &AccountRecord) -> Result<bool, StoreError>;
    /// Every account, oldest first.
    async fn list_accounts(&self) -> Result<Vec<AccountRecord>, StoreError>;
    /// False when there was nothing to delete.
    async fn delete_account(&self, user_id: &str) -> Result<bool, StoreError>;
    async fn put_refresh_token(&self, token: &RefreshTokenRecord) -> Result<(), StoreError>;
    /// Removes the token and returns it, once: a second take of the same id finds nothing,
    /// even when two callers race.
    async fn take_refresh_token(
        &self,
        token_id: &str,
    ) -> Result<Option<RefreshTokenRecord>, StoreError>;
    /// The admin's run-time settings, when any were saved.
    async fn system_settings(&self) -> Result<Option<SystemSettingsRecord>, StoreError>;
    async fn put_system_settings(&self, settings: &SystemSettingsRecord) -> Result<(), StoreError>;
}

/// Agents users saved, per owner, with names unique per owner.
#[async_trait]
pub trait AgentStore: Send + Sync + 'static {
    /// Inserts the agent; false, and nothing written, when its owner has one of that name.
    async fn insert_agent(&self, agent: &AgentRecord) -> Result<bool, StoreError>;
    /// Replaces the stored agent with the same id and owner (a new name included); false when
    /// the new name is another of the owner's agents'. The agent must exist.
    async fn replace_agent(&self, agent: &AgentRecord) -> Result<bool, StoreError>;
    async fn agent(&self, agent_id: &str) -> Result<Option<AgentRecord>, StoreError>;
    /// The owner's agents, by name.
    async fn owner_agents(&self, owner: &str) -> Result<Vec<AgentRecord>, StoreError>;
    /// Every saved agent (for an admin), by name.
    async fn all_agents(&self) -> Result<Vec<AgentRecord>, StoreError>;
    /// False when there was nothing to delete.
    async fn delete_agent(&self, agent_id: &str) -> Result<bool, StoreError>;
}

/// Users' own LLM providers, per owner.
#[async_trait]
pub trait ProviderStore: Send + Sync + 'static {
    /// Inserts or replaces the owner's provider with that id.
    async fn put_provider(&self, provider: &ProviderRecord) -> Result<(), StoreError>;
    async fn provider(
        &self,
        owner: &str,
        provider_id: &str,
    ) -> Result<Option<ProviderRecord>, StoreError>;
    /// The owner's providers, oldest first.
    async fn owner_providers(&self, owner: &str) -> Result<Vec<ProviderRecord>, StoreError>;
    /// False when there was nothing to delete.
    async fn delete_provider(&self, owner: &str, provider_id: &str) -> Result<bool, StoreError>;
}

/// Skills, by name across every owner.
#[async_trait]
pub trait SkillStore: Send + Sync + 'static {
    /// Inserts the skill, or replaces it when its owner already has one of that name; false,
    /// and nothing written, when the name is another owner's.
    async fn put_skill(&self, skill: &SkillRecord) -> Result<bool, StoreError>;
    async fn skill(&self, name: &str) -> Result<Option<SkillRecord>, StoreError>;
    /// The owner's skills ("" = the system's), by name.
    async fn owner_skills(&self, owner: &str) -> Result<Vec<SkillRecord>, StoreError>;
    /// False when there was nothing to delete.
    async fn delete_skill(&self, name: &str) -> Result<bool, StoreError>;
}

/// Knowledge bases with their documents, per owner.
#[async_trait]
pub trait KnowledgeStore: Send + Sync + 'static {
    /// Inserts a new base as revision 1; false, and nothing written, when its id exists.
    async fn create_knowledge_base(&self, base: &KnowledgeBaseRecord) -> Result<bool, StoreError>;
    /// Writes `base` as revision `base.revision + 1` when the stored one is still at
    /// `base.revision`; false, and nothing written, when another write came first or the base is
    /// gone.
    async fn update_knowledge_base(&self, base: &KnowledgeBaseRecord) -> Result<bool, StoreError>;
    async fn knowledge_base(
        &self,
        owner: &str,
        id: &str,
    ) -> Result<Option<KnowledgeBaseRecord>, StoreError>;
    /// The owner's bases, newest first.
    async fn owner_knowledge_bases(
        &self,
        owner: &str,
    ) -> Result<Vec<KnowledgeBaseRecord>, StoreError>;
    /// False when there was nothing to delete.
    async fn delete_knowledge_base(&self, owner: &str, id: &str) -> Result<bool, StoreError>;
    /// Up to `limit` bases of any owner with a document waiting or being indexed, least
    /// recently changed first.
    async fn pending_knowledge_bases(
        &self,
        limit: usize,
    ) -> Result<Vec<KnowledgeBaseRecord>, StoreError>;
}

/// A whole backend: every aggregate's store on one database.
#[async_trait]
pub trait Store:
    SessionStore
    + EventLog
    + UsageLedger
    + RunControl
    + McpServerStore
    + UserMemoryStore
    + SummaryStore
    + AccountStore
    + AgentStore
    + ProviderStore
    + SkillStore
    + KnowledgeStore
{
    /// A cheap round trip, for readiness checks.
    async fn ping(&self) -> Result<(), StoreError>;

    /// Opens a run on a session that was not stored when it began: takes the session's run lock
    /// and, only then, creates the session. The session as stored: a record stored meanwhile is
    /// kept and returned (it may be another user's). None, with nothing written, when another
    /// run holds an unexpired lease.
    async fn open_run(
        &self,
        session: &SessionRecord,
        run_id: &str,
        lease: Duration,
    ) -> Result<Option<SessionRecord>, StoreError> {
        open_run_stepwise(self, session, run_id, lease).await
    }

    /// Closes a run: records its tally on the session and releases its lock. The session as now
    /// stored; none when it was deleted meanwhile (the lock is released all the same).
    async fn close_run(
        &self,
        session_id: &str,
        run_id: &str,
        tally: &RunTally,
    ) -> Result<Option<SessionRecord>, StoreError> {
        close_run_stepwise(self, session_id, run_id, tally).await
    }
}

/// `Store::open_run` as separate writes, for a backend with nothing better.
pub(crate) async fn open_run_stepwise<S: SessionStore + RunControl + ?Sized>(
    store: &S,
    session: &SessionRecord,
    run_id: &str,
    lease: Duration,
) -> Result<Option<SessionRecord>, StoreError> {
    if !store
        .try_lock_run(&session.session_id, run_id, lease)
        .await?
    {
        return Ok(None);
    }
    match store.create_session(session).await {
        Ok(stored) => Ok(Some(stored)),
        Err(error) => {
            let _ = store.release_run_lock(&session.session_id, run_id).await;
            Err(error)
        }
    }
}

/// `Store::close_run` as separate reads and writes, for a backend with nothing better.
pub(crate) async fn close_run_stepwise<S: SessionStore + RunControl + ?Sized>(
    store: &S,
    session_id: &str,
    run_id: &str,
    tally: &RunTally,
) -> Result<Option<SessionRecord>, StoreError> {
    let session = match store.get_session(session_id).await? {
        Some(mut session) => {
            tally.apply_to(&mut session);
            store.update_session(&session).await?;
            Some(session)
        }
        None => None,
    };
    store.release_run_lock(session_id, run_id).await?;
    Ok(session)
}

/// The backend `--db_type` names; a backend this build was compiled without is a clear error.
/// `objects` takes the events too large for a DynamoDB item.
pub async fn open_store(
    config: &StoreConfig,
    #[allow(unused_variables)] objects: Arc<dyn crate::blob::ObjectStore>,
) -> Result<Arc<dyn Store>, StoreError> {
    #[allow(unused_variables)]
    let missing = |feature: &str| {
        StoreError::Config(format!(
            "this build has no `{feature}` backend; use a build with the `{feature}` feature \
             (sage-local has every backend)"
        ))
    };
    match config.db_type {
        DbType::Memory => Ok(Arc::new(MemoryStore::default())),
        #[cfg(feature = "sqlite")]
        DbType::File => Ok(Arc::new(SqlStore::open(&config.sqlite_file()).await?)),
        #[cfg(not(feature = "sqlite"))]
        DbType::File => Err(missing("sqlite")),
        #[cfg(feature = "mysql")]
        DbType::Mysql => Ok(Arc::new(SqlStore::connect(config).await?)),
        #[cfg(not(feature = "mysql"))]
        DbType::Mysql => Err(missing("mysql")),
        #[cfg(feature = "dynamodb")]
        DbType::Dynamodb => Ok(Arc::new(
            DynamoStore::connect(config).await?.with_spill(objects),
        )),
        #[cfg(not(feature = "dynamodb"))]
        DbType::Dynamodb => Err(missing("dynamodb")),
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum SortBy {
    Date,
    Title,
    Messages,
}

#[derive(Debug, Clone)]
pub struct SessionQuery {
    pub user_id: String,
    /// 1-based.
    pub page: u64,
    pub page_size: u64,
    pub search: Option<String>,
    pub agent_id: Option<String>,
    pub sort_by: SortBy,
}

pub struct SessionPage {
    pub sessions: Vec<SessionRecord>,
    pub total: u64,
}

/// Filters, sorts and pages one user's sessions: the same semantics on every backend.
pub async fn query_sessions(
    store: &dyn SessionStore,
    query: &SessionQuery,
) -> Result<SessionPage, StoreError> {
    query_sessions_within(store, query, None).await
}

/// [`query_sessions`], with `matching` (the sessions a search index found for `query.search`)
/// deciding the search instead of a scan of each session's text.
pub async fn query_sessions_within(
    store: &dyn SessionStore,
    query: &SessionQuery,
    matching: Option<&std::collections::HashSet<String>>,
) -> Result<SessionPage, StoreError> {
    let needle = query
        .search
        .as_deref()
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_lowercase);
    let mut sessions: Vec<SessionRecord> = store
        .user_sessions(&query.user_id)
        .await?
        .into_iter()
        .filter(|s| s.parent_session_id.is_none())
        .filter(|s| query.agent_id.is_none() || s.agent_id == query.agent_id)
        .filter(|s| match (matching, &needle) {
            (Some(matching), _) => matching.contains(&s.session_id),
            (None, Some(needle)) => {
                s.title.to_lowercase().contains(needle)
                    || s.search_text.to_lowercase().contains(needle)
            }
            (None, None) => true,
        })
        .collect();
    match query.sort_by {
        SortBy::Date => sessions.sort_by(|a, b| b.updated_at.total_cmp(&a.updated_at)),
        SortBy::Title => sessions.sort_by(|a, b| a.title.cmp(&b.title)),
        SortBy::Messages => sessions.sort_by(|a, b| {
            b.message_count
                .cmp(&a.message_count)
                .then(b.updated_at.total_cmp(&a.updated_at))
        }),
    }
    let total = sessions.len() as u64;
    let start = usize::try_from(query.page.saturating_sub(1).saturating_mul(query.page_size))
        .unwrap_or(usize::MAX);
    let sessions = sessions
        .into_iter()
        .skip(start)
        .take(query.page_size as usize)
        .collect();
    Ok(SessionPage { sessions, total })
}

/// Caps the search text kept with a session (DynamoDB items are limited to 400 KB).
pub const SEARCH_TEXT_LIMIT: usize = 32 * 1024;

fn lease_deadline(lease: Duration) -> f64 {
    crate::util::now_secs() + lease.as_secs_f64()
}
