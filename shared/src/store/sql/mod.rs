//! The SQL store, one implementation for both SQL backends through `sqlx::Any`: `file` (SQLite,
//! WAL) and `mysql` (MySQL 8 / MariaDB 10.11). Only the schema and two statements differ.

#[cfg(feature = "sqlite")]
mod recent;

#[cfg(feature = "sqlite")]
use std::path::Path;
#[cfg(feature = "sqlite")]
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use sqlx::AnyConnection;
#[cfg(feature = "mysql")]
use sqlx::AnyPool;
#[cfg(feature = "sqlite")]
use sqlx::Executor;
#[cfg(feature = "mysql")]
use sqlx::any::AnyPoolOptions;
use sqlx::any::AnyRow;
#[cfg(feature = "mysql")]
use sqlx::pool::PoolConnection;
use sqlx::{Connection as _, QueryBuilder, Row};

use super::{
    AccountRecord, AccountStore, AgentRecord, AgentStore, EventBatch, EventLog, IdempotencyRecord,
    KnowledgeBaseRecord, KnowledgeStore, McpAuthorizationRecord, McpCredentialsRecord,
    McpServerRecord, McpServerStore, PendingApprovalRecord, ProviderRecord, ProviderStore,
    RefreshTokenRecord, RunControl, RunLock, RunStatus, RunTally, SessionRecord, SessionStore,
    SkillRecord, SkillStore, Store, StoreError, SummaryRecord, SummaryStore, SystemSettingsRecord,
    UsageLedger, UsageRecord, UserMemoryRecord, UserMemoryStore, close_run_stepwise,
    lease_deadline, open_run_stepwise,
};
#[cfg(feature = "mysql")]
use crate::config::StoreConfig;
use crate::util::now_secs;
use crate::wire::StoredEvent;
#[cfg(feature = "mysql")]
use secrecy::ExposeSecret;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Dialect {
    #[cfg(feature = "sqlite")]
    Sqlite,
    #[cfg(feature = "mysql")]
    Mysql,
}

/// The `file` and `mysql` stores.
pub struct SqlStore {
    connections: Connections,
    dialect: Dialect,
}

/// Where statements run.
enum Connections {
    /// SQLite: one connection, taken by one statement or transaction at a time (in turn).
    #[cfg(feature = "sqlite")]
    Held {
        connection: tokio::sync::Mutex<AnyConnection>,
        /// Set when a caller dropped its transaction of several statements before it ended:
        /// the next to take the connection rolls it back first.
        unfinished: AtomicBool,
        /// Read and changed only by the holder of `connection`.
        recent: std::sync::Mutex<recent::RecentTier>,
    },
    #[cfg(feature = "mysql")]
    Pooled(AnyPool),
}

/// A connection for one statement or transaction.
enum Connection<'a> {
    #[cfg(feature = "sqlite")]
    Held(tokio::sync::MutexGuard<'a, AnyConnection>),
    #[cfg(feature = "mysql")]
    Pooled(PoolConnection<sqlx::Any>, std::marker::PhantomData<&'a ()>),
}

impl std::ops::Deref for Connection<'_> {
    type Target = AnyConnection;

    fn deref(&self) -> &AnyConnection {
        match self {
            #[cfg(feature = "sqlite")]
            Self::Held(connection) => connection,
            #[cfg(feature = "mysql")]
            Self::Pooled(connection, _) => connection,
        }
    }
}

impl std::ops::DerefMut for Connection<'_> {
    fn deref_mut(&mut self) -> &mut AnyConnection {
        match self {
            #[cfg(feature = "sqlite")]
            Self::Held(connection) => connection,
            #[cfg(feature = "mysql")]
            Self::Pooled(connection, _) => connection,
        }
    }
}

impl SqlStore {
    /// The `file` store: one SQLite file, created with its directory when missing.
    #[cfg(feature = "sqlite")]
    pub async fn open(file: &Path) -> Result<Self, StoreError> {
        if let Some(dir) = file.parent().filter(|dir| !dir.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)?;
        }
        sqlx::any::install_default_drivers();
        let url = format!("sqlite://{}?mode=rwc", file.display());
        // One connection: SQLite writes one transaction at a time anyway, and a connection
        // drops its page cache whenever another one has written, so with several every read
        // copied its pages back in. Pages are read through a memory map, and the write-ahead
        // log is folded into the file every 32 MiB rather than every 4 MiB, so a page written
        // again and again is copied back once per fold; the page cache holds 16 MiB rather than
        // 2, so that pages written since the last fold are not read back from the log
        // (they are outside the memory map until folded); temporary files (a statement's undo
        // journal, a sort) stay in memory, not in files written and deleted. Held, not pooled: a pool pings
        // SQLite's thread (a second round trip) whenever a statement gives the connection back.
        let mut connection = AnyConnection::connect(&url).await?;
        connection
            .execute(
                "PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL; \
                 PRAGMA busy_timeout = 5000; PRAGMA mmap_size = 268435456; \
                 PRAGMA wal_autocheckpoint = 8192; PRAGMA cache_size = -16384; \
                 PRAGMA temp_store = MEMORY;",
            )
            .await?;
        sqlx::migrate!("migrations/sqlite")
            .run(&mut connection)
            .await?;
        // Runs that were streaming when their process stopped.
        connection
            .execute(
                "BEGIN; INSERT OR IGNORE INTO events (session_id, seq, body) \
                 SELECT session_id, seq, body FROM recent_events ORDER BY rowid; \
                 DELETE FROM recent_events; COMMIT;",
            )
            .await?;
        Ok(Self {
            connections: Connections::Held {
                connection: tokio::sync::Mutex::new(connection),
                unfinished: AtomicBool::new(false),
                recent: std::sync::Mutex::default(),
            },
            dialect: Dialect::Sqlite,
        })
    }

    /// The `mysql` store: creates the database when missing, then the tables.
    #[cfg(feature = "mysql")]
    pub async fn connect(config: &StoreConfig) -> Result<Self, StoreError> {
        Self::connect_mysql(
            &config.mysql_host,
            config.mysql_port,
            &config.mysql_user,
            config.mysql_password.expose_secret(),
            &config.mysql_database,
        )
        .await
    }

    #[cfg(feature = "mysql")]
    pub async fn connect_mysql(
        host: &str,
        port: u16,
        user: &str,
        password: &str,
        database: &str,
    ) -> Result<Self, StoreError> {
        sqlx::any::install_default_drivers();
        let mut server = url::Url::parse("mysql://localhost/")
            .map_err(|error| StoreError::Config(error.to_string()))?;
        let invalid = |what: &str| StoreError::Config(format!("invalid MySQL {what}"));
        server.set_host(Some(host)).map_err(|_| invalid("host"))?;
        server.set_port(Some(port)).map_err(|_| invalid("port"))?;
        server.set_username(user).map_err(|_| invalid("user"))?;
        if !password.is_empty() {
            server
                .set_password(Some(password))
                .map_err(|_| invalid("password"))?;
        }
        if !database
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_')
        {
            return Err(invalid("database name (letters, digits and '_')"));
        }
        let admin = AnyPoolOptions::new()
            .max_connections(1)
            .connect(server.as_str())
            .await?;
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "CREATE DATABASE IF NOT EXISTS `{database}` CHARACTER SET utf8mb4"
        )))
        .execute(&admin)
        .await?;
        admin.close().await;
        server.set_path(database);
        let pool = AnyPoolOptions::new()
            .max_connections(8)
            .connect(server.as_str())
            .await?;
        sqlx::migrate!("migrations/mysql").run(&pool).await?;
        Ok(Self {
            connections: Connections::Pooled(pool),
            dialect: Dialect::Mysql,
        })
    }

    /// A connection for one statement or transaction: SQLite's, once the statements before
    /// have had it; a pooled one otherwise.
    async fn connection(&self) -> Result<Connection<'_>, StoreError> {
        match &self.connections {
            #[cfg(feature = "sqlite")]
            Connections::Held {
                connection,
                unfinished,
                ..
            } => {
                let mut connection = connection.lock().await;
                if unfinished.swap(false, Ordering::AcqRel) {
                    roll_back(&mut connection).await;
                }
                Ok(Connection::Held(connection))
            }
            #[cfg(feature = "mysql")]
            Connections::Pooled(pool) => Ok(Connection::Pooled(
                pool.acquire().await?,
                std::marker::PhantomData,
            )),
        }
    }

    /// Runs statements written between `BEGIN` and `COMMIT` in one round trip to SQLite's
    /// thread, on the connection held throughout, and returns the rows they return. A failed
    /// statement stops the rest: the transaction is rolled back before the connection is let go,
    /// and by the next to take it when the caller was dropped halfway.
    #[cfg(feature = "sqlite")]
    async fn sqlite_transaction(
        &self,
        statements: AnyQuery<'_>,
    ) -> Result<Vec<AnyRow>, StoreError> {
        let mut connection = self.connection().await?;
        self.sqlite_transaction_on(&mut connection, statements)
            .await
    }

    /// `sqlite_transaction` on a connection the caller holds.
    #[cfg(feature = "sqlite")]
    async fn sqlite_transaction_on(
        &self,
        connection: &mut Connection<'_>,
        statements: AnyQuery<'_>,
    ) -> Result<Vec<AnyRow>, StoreError> {
        let unfinished = match &self.connections {
            Connections::Held { unfinished, .. } => unfinished,
            #[cfg(feature = "mysql")]
            Connections::Pooled(_) => return Err(StoreError::Config("not an SQLite store".into())),
        };
        let pending = UnfinishedMark(Some(unfinished));
        let ran = statements.fetch_all(&mut **connection).await;
        if ran.is_err() {
            roll_back(connection).await;
        }
        pending.disarm();
        Ok(ran?)
    }

    /// SQLite's tier for streaming runs.
    #[cfg(feature = "sqlite")]
    fn recent_tier(&self) -> Option<&std::sync::Mutex<recent::RecentTier>> {
        match &self.connections {
            Connections::Held { recent, .. } => Some(recent),
            #[cfg(feature = "mysql")]
            Connections::Pooled(_) => None,
        }
    }

    fn insert_ignore(&self) -> &'static str {
        match self.dialect {
            #[cfg(feature = "sqlite")]
            Dialect::Sqlite => "INSERT OR IGNORE",
            #[cfg(feature = "mysql")]
            Dialect::Mysql => "INSERT IGNORE",
        }
    }

    async fn write_mcp_server(
        &self,
        record: &McpServerRecord,
        replace: bool,
    ) -> Result<bool, StoreError> {
        let verb = if replace {
            "REPLACE"
        } else {
            self.insert_ignore()
        };
        let statement = format!(
            "{verb} INTO mcp_servers (owner, name, config, tools, last_error, updated_at)
             VALUES (?, ?, ?, ?, ?, ?)"
        );
        let result = sqlx::query(sqlx::AssertSqlSafe(statement))
            .bind(&record.owner)
            .bind(&record.name)
            .bind(serde_json::to_string(&record.config)?)
            .bind(serde_json::to_string(&record.tools)?)
            .bind(&record.last_error)
            .bind(record.updated_at)
            .execute(&mut *self.connection().await?)
            .await?;
        Ok(result.rows_affected() >= 1)
    }
}

/// Marks the held connection's transaction unfinished unless disarmed: a caller dropped
/// between its `BEGIN` and the end leaves the rollback to the next user of the connection.
#[cfg(feature = "sqlite")]
struct UnfinishedMark<'a>(Option<&'a AtomicBool>);

#[cfg(feature = "sqlite")]
impl UnfinishedMark<'_> {
    fn disarm(mut self) {
        self.0 = None;
    }
}

#[cfg(feature = "sqlite")]
impl Drop for UnfinishedMark<'_> {
    fn drop(&mut self) {
        if let Some(unfinished) = self.0 {
            unfinished.store(true, Ordering::Release);
        }
    }
}

#[cfg(feature = "sqlite")]
async fn roll_back(connection: &mut AnyConnection) {
    if let Err(error) = connection.execute("ROLLBACK").await {
        tracing::debug!(%error, "nothing to roll back");
    }
}

type AnyQuery<'q> = sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments>;

/// Binds the session's columns, in `SESSION_COLUMNS` order.
fn bind_session<'q>(query: AnyQuery<'q>, session: &'q SessionRecord) -> AnyQuery<'q> {
    query
        .bind(&session.session_id)
        .bind(&session.user_id)
        .bind(&session.agent_id)
        .bind(&session.agent_name)
        .bind(&session.title)
        .bind(session.created_at)
        .bind(session.updated_at)
        .bind(session.message_count as i64)
        .bind(session.user_count as i64)
        .bind(session.agent_count as i64)
        .bind(&session.search_text)
        .bind(session.status.as_str())
        .bind(session.log_seq as i64)
        .bind(&session.parent_session_id)
}

fn session_from_row(row: &AnyRow) -> Result<SessionRecord, sqlx::Error> {
    let status: String = row.try_get("status")?;
    Ok(SessionRecord {
        session_id: row.try_get("session_id")?,
        user_id: row.try_get("user_id")?,
        agent_id: row.try_get("agent_id")?,
        agent_name: row.try_get("agent_name")?,
        title: row.try_get("title")?,
        created_at: row.try_get("created_at")?,
        updated_at: row.try_get("updated_at")?,
        message_count: row.try_get::<i64, _>("message_count")? as u64,
        user_count: row.try_get::<i64, _>("user_count")? as u64,
        agent_count: row.try_get::<i64, _>("agent_count")? as u64,
        search_text: row.try_get("search_text")?,
        status: RunStatus::parse(&status),
        log_seq: row.try_get::<i64, _>("log_seq")? as u64,
        parent_session_id: row.try_get("parent_session_id")?,
    })
}

fn mcp_server_from_row(row: &AnyRow) -> Result<McpServerRecord, StoreError> {
    let config: String = row.try_get("config")?;
    let tools: String = row.try_get("tools")?;
    Ok(McpServerRecord {
        owner: row.try_get("owner")?,
        name: row.try_get("name")?,
        config: serde_json::from_str(&config)?,
        tools: serde_json::from_str(&tools)?,
        last_error: row.try_get("last_error")?,
        updated_at: row.try_get("updated_at")?,
    })
}

fn user_memory_from_row(row: &AnyRow) -> Result<UserMemoryRecord, StoreError> {
    let tags: String = row.try_get("tags")?;
    Ok(UserMemoryRecord {
        user_id: row.try_get("user_id")?,
        key: row.try_get("memory_key")?,
        content: row.try_get("content")?,
        memory_type: row.try_get("memory_type")?,
        tags: serde_json::from_str(&tags)?,
        created_at: row.try_get("created_at")?,
        updated_at: row.try_get("updated_at")?,
    })
}

fn account_from_row(row: &AnyRow) -> Result<AccountRecord, sqlx::Error> {
    Ok(AccountRecord {
        user_id: row.try_get("user_id")?,
        username: row.try_get("username")?,
        email: row.try_get("email")?,
        phonenum: row.try_get("phonenum")?,
        role: row.try_get("role")?,
        password_hash: row.try_get("password_hash")?,
        token_generation: row.try_get::<i64, _>("token_generation")? as u64,
        created_at: row.try_get("created_at")?,
    })
}

fn agent_from_row(row: &AnyRow) -> Result<AgentRecord, StoreError> {
    let config: String = row.try_get("config")?;
    Ok(AgentRecord {
        agent_id: row.try_get("agent_id")?,
        owner: row.try_get("owner")?,
        name: row.try_get("name")?,
        config: serde_json::from_str(&config)?,
        created_at: row.try_get("created_at")?,
        updated_at: row.try_get("updated_at")?,
    })
}

fn skill_from_row(row: &AnyRow) -> Result<SkillRecord, StoreError> {
    let package: String = row.try_get("package")?;
    Ok(SkillRecord {
        name: row.try_get("name")?,
        owner: row.try_get("owner")?,
        description: row.try_get("description")?,
        package: serde_json::from_str(&package)?,
        created_at: row.try_get("created_at")?,
        updated_at: row.try_get("updated_at")?,
    })
}

fn knowledge_base_from_row(row: &AnyRow) -> Result<KnowledgeBaseRecord, StoreError> {
    let documents: String = row.try_get("documents")?;
    Ok(KnowledgeBaseRecord {
        id: row.try_get("id")?,
        owner: row.try_get("owner")?,
        name: row.try_get("name")?,
        kind: row.try_get("kind")?,
        intro: row.try_get("intro")?,
        language: row.try_get("language")?,
        documents: serde_json::from_str(&documents)?,
        revision: row.try_get::<i64, _>("revision")? as u64,
        created_at: row.try_get("created_at")?,
        updated_at: row.try_get("updated_at")?,
    })
}

fn provider_from_row(row: &AnyRow) -> Result<ProviderRecord, StoreError> {
    let config: String = row.try_get("config")?;
    Ok(ProviderRecord {
        provider_id: row.try_get("provider_id")?,
        owner: row.try_get("owner")?,
        config: serde_json::from_str(&config)?,
        sealed_keys: row.try_get("sealed_keys")?,
        created_at: row.try_get("created_at")?,
        updated_at: row.try_get("updated_at")?,
    })
}

fn idempotency_from_row(row: &AnyRow) -> Result<IdempotencyRecord, sqlx::Error> {
    Ok(IdempotencyRecord {
        key: row.try_get("idem_key")?,
        request_hash: row.try_get("request_hash")?,
        session_id: row.try_get("session_id")?,
        first_seq: row
            .try_get::<Option<i64>, _>("first_seq")?
            .map(|s| s as u64),
        created_at: row.try_get("created_at")?,
    })
}

fn is_unique_violation(error: &sqlx::Error) -> bool {
    error
        .as_database_error()
        .is_some_and(|db| db.is_unique_violation())
}

const SESSION_COLUMNS: &str = "session_id, user_id, agent_id, agent_name, title, created_at, \
    updated_at, message_count, user_count, agent_count, search_text, status, log_seq, \
    parent_session_id";

#[async_trait]
impl SessionStore for SqlStore {
    async fn get_session(&self, session_id: &str) -> Result<Option<SessionRecord>, StoreError> {
        let row = sqlx::query("SELECT * FROM sessions WHERE session_id = ?")
            .bind(session_id)
            .fetch_optional(&mut *self.connection().await?)
            .await?;
        Ok(row.as_ref().map(session_from_row).transpose()?)
    }

    async fn create_session(&self, session: &SessionRecord) -> Result<SessionRecord, StoreError> {
        let statement = format!(
            "{} INTO sessions ({SESSION_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            self.insert_ignore()
        );
        let inserted = bind_session(sqlx::query(sqlx::AssertSqlSafe(statement)), session)
            .execute(&mut *self.connection().await?)
            .await?;
        if inserted.rows_affected() == 1 {
            return Ok(session.clone());
        }
        Ok(self
            .get_session(&session.session_id)
            .await?
            .unwrap_or_else(|| session.clone()))
    }

    async fn update_session(&self, session: &SessionRecord) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE sessions SET agent_id = ?, agent_name = ?, title = ?, updated_at = ?,
             message_count = ?, user_count = ?, agent_count = ?, search_text = ?, status = ?,
             log_seq = ? WHERE session_id = ?",
        )
        .bind(&session.agent_id)
        .bind(&session.agent_name)
        .bind(&session.title)
        .bind(session.updated_at)
        .bind(session.message_count as i64)
        .bind(session.user_count as i64)
        .bind(session.agent_count as i64)
        .bind(&session.search_text)
        .bind(session.status.as_str())
        .bind(session.log_seq as i64)
        .bind(&session.session_id)
        .execute(&mut *self.connection().await?)
        .await?;
        Ok(())
    }

    async fn user_sessions(&self, user_id: &str) -> Result<Vec<SessionRecord>, StoreError> {
        let rows = sqlx::query("SELECT * FROM sessions WHERE user_id = ?")
            .bind(user_id)
            .fetch_all(&mut *self.connection().await?)
            .await?;
        Ok(rows
            .iter()
            .map(session_from_row)
            .collect::<Result<_, _>>()?)
    }

    async fn delete_session(&self, session_id: &str) -> Result<(), StoreError> {
        let mut connection = self.connection().await?;
        let mut tx = connection.begin().await?;
        for statement in [
            "DELETE FROM events WHERE session_id = ?",
            "DELETE FROM run_locks WHERE session_id = ?",
            "DELETE FROM session_summaries WHERE session_id = ?",
            "DELETE FROM pending_approvals WHERE session_id = ?",
            "DELETE FROM sessions WHERE session_id = ?",
        ] {
            sqlx::query(statement)
                .bind(session_id)
                .execute(&mut *tx)
                .await?;
        }
        #[cfg(feature = "sqlite")]
        if let Some(recent) = self.recent_tier() {
            sqlx::query("DELETE FROM recent_events WHERE session_id = ?")
                .bind(session_id)
                .execute(&mut *tx)
                .await?;
            tx.commit().await?;
            lock_tier(recent).forget(session_id);
            return Ok(());
        }
        tx.commit().await?;
        Ok(())
    }
}

/// Appends one INSERT of the runs' ledger rows to `statements`; `insert` is the verb.
fn push_usage_insert(
    statements: &mut QueryBuilder<sqlx::Any>,
    insert: &str,
    usages: &[&UsageRecord],
) {
    statements.push(insert);
    statements.push(
        " INTO usage_ledger (session_id, seq, user_id, run_id, day, model, calls, \
         prompt_tokens, completion_tokens, total_tokens, cost, recorded_at) ",
    );
    statements.push_values(usages, |mut row, usage| {
        row.push_bind(usage.session_id.as_str())
            .push_bind(usage.seq as i64)
            .push_bind(usage.user_id.as_str())
            .push_bind(usage.run_id.as_str())
            .push_bind(usage.day.as_str())
            .push_bind(usage.model.as_str())
            .push_bind(i64::from(usage.calls))
            .push_bind(usage.prompt_tokens as i64)
            .push_bind(usage.completion_tokens as i64)
            .push_bind(usage.total_tokens as i64)
            .push_bind(usage.cost)
            .push_bind(usage.recorded_at);
    });
}

/// Appends one INSERT of events, each with its session, to `statements`; `insert` is the verb.
fn push_events_insert(
    statements: &mut QueryBuilder<sqlx::Any>,
    insert: &str,
    rows: &[EventRow<'_>],
) {
    statements.push(insert);
    statements.push(" INTO events (session_id, seq, body) ");
    statements.push_values(rows, |mut row, (session_id, seq, body)| {
        row.push_bind(*session_id).push_bind(*seq).push_bind(*body);
    });
}

/// A taken key reported as the first row's sequence number (or the first ledger row's).
fn seq_conflict(error: StoreError, rows: &[EventRow<'_>], usages: &[&UsageRecord]) -> StoreError {
    let StoreError::Database(database) = &error else {
        return error;
    };
    if !is_unique_violation(database) {
        return error;
    }
    let first = rows
        .first()
        .map(|(session_id, seq, _)| (*session_id, *seq as u64))
        .or_else(|| {
            usages
                .first()
                .map(|usage| (usage.session_id.as_str(), usage.seq))
        });
    match first {
        Some((session_id, seq)) => StoreError::SeqConflict {
            session_id: session_id.to_owned(),
            seq,
        },
        None => error,
    }
}

/// One session's events in a write, with the usage they account for.
#[cfg(feature = "sqlite")]
struct BatchRef<'a> {
    session_id: &'a str,
    events: &'a [StoredEvent],
    usage: Option<&'a UsageRecord>,
}

#[cfg(feature = "sqlite")]
fn lock_tier(
    tier: &std::sync::Mutex<recent::RecentTier>,
) -> std::sync::MutexGuard<'_, recent::RecentTier> {
    tier.lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// An event as stored: its session, its sequence number and its JSON.
type EventRow<'a> = (&'a str, i64, &'a str);

fn event_rows<'a>(session_id: &'a str, events: &'a [StoredEvent]) -> Vec<EventRow<'a>> {
    events
        .iter()
        .map(|stored| (session_id, stored.seq as i64, stored.json()))
        .collect()
}

impl SqlStore {
    /// Events and their runs' ledger rows: all of them or none. On SQLite in one round trip.
    async fn append_with_usage(
        &self,
        rows: &[EventRow<'_>],
        usages: &[&UsageRecord],
    ) -> Result<(), StoreError> {
        let conflict = |error: StoreError| seq_conflict(error, rows, usages);
        // Dropping the transaction on an error rolls it back.
        let mut connection = self.connection().await?;
        let mut tx = connection.begin().await?;
        if !rows.is_empty() {
            let mut insert = QueryBuilder::new("");
            push_events_insert(&mut insert, "INSERT", rows);
            insert
                .build()
                .execute(&mut *tx)
                .await
                .map_err(|error| conflict(error.into()))?;
        }
        let mut insert = QueryBuilder::new("");
        push_usage_insert(&mut insert, "INSERT", usages);
        insert
            .build()
            .execute(&mut *tx)
            .await
            .map_err(|error| conflict(error.into()))?;
        tx.commit().await?;
        Ok(())
    }

    /// SQLite: one transaction for several sessions' events and the usage some of them account
    /// for. Streaming runs' events go to the recent tier (`recent::RecentTier`).
    #[cfg(feature = "sqlite")]
    async fn append_to_sqlite(&self, batches: &[BatchRef<'_>]) -> Result<(), StoreError> {
        let Some(recent) = self.recent_tier() else {
            return Err(StoreError::Config("not an SQLite store".into()));
        };
        let mut connection = self.connection().await?;
        let routed: Vec<(&str, &[StoredEvent])> = batches
            .iter()
            .map(|batch| (batch.session_id, batch.events))
            .collect();
        let plan = lock_tier(recent)
            .plan(&routed)
            .map_err(|taken| StoreError::SeqConflict {
                session_id: taken.session_id,
                seq: taken.seq,
            })?;
        let mut keyed = Vec::new();
        let mut streaming = Vec::new();
        for (batch, route) in batches.iter().zip(&plan.routes) {
            let rows = event_rows(batch.session_id, batch.events);
            match route {
                recent::Route::Keyed => keyed.extend(rows),
                recent::Route::Recent => streaming.extend(rows),
            }
        }
        let usages: Vec<&UsageRecord> = batches.iter().filter_map(|batch| batch.usage).collect();
        // A conflict rolls the whole transaction back, as the caller would: without it SQLite
        // keeps a journal of each statement to undo it alone, which costs a copy of every page
        // the statement touches.
        let insert = "INSERT OR ROLLBACK";
        let mut statements = QueryBuilder::new("BEGIN; ");
        if !keyed.is_empty() {
            push_events_insert(&mut statements, insert, &keyed);
            statements.push("; ");
        }
        if !plan.moved.is_empty() {
            statements.push(
                "INSERT OR IGNORE INTO events (session_id, seq, body) \
                 SELECT session_id, seq, body FROM recent_events WHERE rowid IN (",
            );
            let mut ids = statements.separated(", ");
            for id in &plan.moved {
                ids.push_bind(*id);
            }
            statements.push(") ORDER BY rowid; ");
        }
        if let Some(through) = plan.sweep_through {
            statements.push(
                "INSERT OR IGNORE INTO events (session_id, seq, body) \
                 SELECT session_id, seq, body FROM recent_events WHERE rowid <= ",
            );
            statements.push_bind(through);
            statements.push(" ORDER BY rowid; DELETE FROM recent_events WHERE rowid <= ");
            statements.push_bind(through);
            statements.push("; ");
        }
        if !usages.is_empty() {
            push_usage_insert(&mut statements, insert, &usages);
            statements.push("; ");
        }
        if !streaming.is_empty() {
            statements.push("INSERT INTO recent_events (session_id, seq, body) ");
            statements.push_values(&streaming, |mut row, (session_id, seq, body)| {
                row.push_bind(*session_id).push_bind(*seq).push_bind(*body);
            });
            statements.push("; SELECT last_insert_rowid() AS last; ");
        }
        statements.push("COMMIT;");
        let rows = self
            .sqlite_transaction_on(&mut connection, statements.build())
            .await
            .map_err(|error| seq_conflict(error, &keyed, &usages))?;
        let last_id = match rows.first() {
            Some(row) => Some(row.try_get::<i64, _>("last")?),
            None => None,
        };
        lock_tier(recent).apply(plan, last_id);
        Ok(())
    }

    /// One session's events, with the usage they account for.
    async fn append_session(
        &self,
        session_id: &str,
        events: &[StoredEvent],
        usage: Option<&UsageRecord>,
    ) -> Result<(), StoreError> {
        #[cfg(feature = "sqlite")]
        if self.dialect == Dialect::Sqlite {
            let batch = BatchRef {
                session_id,
                events,
                usage,
            };
            return self.append_to_sqlite(std::slice::from_ref(&batch)).await;
        }
        let rows = event_rows(session_id, events);
        match usage {
            Some(usage) => self.append_with_usage(&rows, &[usage]).await,
            None => self.append_rows(&rows).await,
        }
    }

    async fn append_rows(&self, rows: &[EventRow<'_>]) -> Result<(), StoreError> {
        if rows.is_empty() {
            return Ok(());
        }
        let mut insert = QueryBuilder::new("");
        push_events_insert(&mut insert, "INSERT", rows);
        match insert.build().execute(&mut *self.connection().await?).await {
            Err(error) if is_unique_violation(&error) => Err(StoreError::SeqConflict {
                session_id: rows[0].0.to_owned(),
                seq: rows[0].1 as u64,
            }),
            other => other.map(|_| ()).map_err(StoreError::from),
        }
    }
}

#[async_trait]
impl EventLog for SqlStore {
    async fn append_events(
        &self,
        session_id: &str,
        events: &[StoredEvent],
    ) -> Result<(), StoreError> {
        self.append_session(session_id, events, None).await
    }

    async fn append_event_batches(&self, batches: &[EventBatch]) -> Result<(), StoreError> {
        #[cfg(feature = "sqlite")]
        if self.dialect == Dialect::Sqlite {
            let batches: Vec<BatchRef<'_>> = batches
                .iter()
                .map(|batch| BatchRef {
                    session_id: &batch.session_id,
                    events: &batch.events,
                    usage: batch.usage.as_ref(),
                })
                .collect();
            return self.append_to_sqlite(&batches).await;
        }
        let rows: Vec<EventRow<'_>> = batches
            .iter()
            .flat_map(|batch| event_rows(&batch.session_id, &batch.events))
            .collect();
        let usages: Vec<&UsageRecord> = batches
            .iter()
            .filter_map(|batch| batch.usage.as_ref())
            .collect();
        if usages.is_empty() {
            self.append_rows(&rows).await
        } else {
            self.append_with_usage(&rows, &usages).await
        }
    }

    fn coalesces_writes(&self) -> bool {
        true
    }

    async fn append_events_with_usage(
        &self,
        session_id: &str,
        events: &[StoredEvent],
        usage: &UsageRecord,
    ) -> Result<(), StoreError> {
        self.append_session(session_id, events, Some(usage)).await
    }

    async fn events_after(
        &self,
        session_id: &str,
        after: u64,
    ) -> Result<Vec<StoredEvent>, StoreError> {
        let mut connection = self.connection().await?;
        let mut query = QueryBuilder::new("SELECT seq, body FROM events WHERE session_id = ");
        query
            .push_bind(session_id)
            .push(" AND seq > ")
            .push_bind(after as i64);
        #[cfg(feature = "sqlite")]
        if let Some(recent) = self.recent_tier()
            && let Some((ids, _)) = lock_tier(recent).rows_of(session_id)
            && !ids.is_empty()
        {
            // Another process's sweep may have copied some of them already: UNION, not ALL.
            query.push(" UNION SELECT seq, body FROM recent_events WHERE seq > ");
            query.push_bind(after as i64).push(" AND rowid IN (");
            let mut bound = query.separated(", ");
            for id in ids {
                bound.push_bind(id);
            }
            query.push(")");
        }
        query.push(" ORDER BY seq");
        let rows = query.build().fetch_all(&mut *connection).await?;
        rows.iter()
            .map(|row| {
                let seq: i64 = row.try_get("seq")?;
                let body: String = row.try_get("body")?;
                Ok(StoredEvent::from_json(seq as u64, &body)?)
            })
            .collect()
    }

    async fn last_seq(&self, session_id: &str) -> Result<u64, StoreError> {
        let mut connection = self.connection().await?;
        #[cfg(feature = "sqlite")]
        if let Some(recent) = self.recent_tier()
            && let Some((_, last_seq)) = lock_tier(recent).rows_of(session_id)
        {
            return Ok(last_seq);
        }
        let row = sqlx::query("SELECT MAX(seq) AS last FROM events WHERE session_id = ?")
            .bind(session_id)
            .fetch_one(&mut *connection)
            .await?;
        let last: Option<i64> = row.try_get("last")?;
        Ok(last.unwrap_or(0) as u64)
    }
}

#[async_trait]
impl RunControl for SqlStore {
    async fn try_lock_run(
        &self,
        session_id: &str,
        run_id: &str,
        lease: Duration,
    ) -> Result<bool, StoreError> {
        // Insert; when a lock is there, clear it if its lease ran out and insert again: of
        // several contenders exactly one insert lands. An idle session costs one statement.
        let statement = format!(
            "{} INTO run_locks (session_id, run_id, expires_at, cancel_requested) VALUES (?, ?, ?, 0)",
            self.insert_ignore()
        );
        let insert = || {
            sqlx::query(sqlx::AssertSqlSafe(statement.clone()))
                .bind(session_id)
                .bind(run_id)
                .bind(lease_deadline(lease))
        };
        let mut connection = self.connection().await?;
        if insert().execute(&mut *connection).await?.rows_affected() == 1 {
            return Ok(true);
        }
        let cleared = sqlx::query("DELETE FROM run_locks WHERE session_id = ? AND expires_at < ?")
            .bind(session_id)
            .bind(now_secs())
            .execute(&mut *connection)
            .await?;
        if cleared.rows_affected() == 0 {
            return Ok(false);
        }
        Ok(insert().execute(&mut *connection).await?.rows_affected() == 1)
    }

    async fn renew_run_lock(
        &self,
        session_id: &str,
        run_id: &str,
        lease: Duration,
    ) -> Result<bool, StoreError> {
        let result =
            sqlx::query("UPDATE run_locks SET expires_at = ? WHERE session_id = ? AND run_id = ?")
                .bind(lease_deadline(lease))
                .bind(session_id)
                .bind(run_id)
                .execute(&mut *self.connection().await?)
                .await?;
        Ok(result.rows_affected() == 1)
    }

    async fn release_run_lock(&self, session_id: &str, run_id: &str) -> Result<(), StoreError> {
        sqlx::query("DELETE FROM run_locks WHERE session_id = ? AND run_id = ?")
            .bind(session_id)
            .bind(run_id)
            .execute(&mut *self.connection().await?)
            .await?;
        Ok(())
    }

    async fn run_lock(&self, session_id: &str) -> Result<Option<RunLock>, StoreError> {
        let row = sqlx::query(
            "SELECT run_id, expires_at, cancel_requested FROM run_locks WHERE session_id = ?",
        )
        .bind(session_id)
        .fetch_optional(&mut *self.connection().await?)
        .await?;
        let Some(row) = row else { return Ok(None) };
        Ok(Some(RunLock {
            run_id: row.try_get("run_id")?,
            expires_at: row.try_get("expires_at")?,
            cancel_requested: row.try_get::<i64, _>("cancel_requested")? != 0,
        }))
    }

    async fn request_cancel(&self, session_id: &str) -> Result<bool, StoreError> {
        sqlx::query(
            "UPDATE run_locks SET cancel_requested = 1 WHERE session_id = ? AND expires_at > ?",
        )
        .bind(session_id)
        .bind(now_secs())
        .execute(&mut *self.connection().await?)
        .await?;
        // MySQL counts only changed rows, so read the flag back rather than trust the count.
        Ok(self
            .run_lock(session_id)
            .await?
            .is_some_and(|lock| lock.is_live() && lock.cancel_requested))
    }

    async fn cancel_requests(
        &self,
        session_ids: &[String],
    ) -> Result<Vec<(String, String)>, StoreError> {
        // One read for every run of this process: only flagged locks come back.
        let rows =
            sqlx::query("SELECT session_id, run_id FROM run_locks WHERE cancel_requested = 1")
                .fetch_all(&mut *self.connection().await?)
                .await?;
        let mut flagged = Vec::new();
        for row in rows {
            let session_id: String = row.try_get("session_id")?;
            if session_ids.contains(&session_id) {
                flagged.push((session_id, row.try_get("run_id")?));
            }
        }
        Ok(flagged)
    }

    async fn claim_idempotency_key(
        &self,
        record: &IdempotencyRecord,
    ) -> Result<Option<IdempotencyRecord>, StoreError> {
        let statement = format!(
            "{} INTO idempotency_keys (idem_key, request_hash, session_id, first_seq, created_at)
             VALUES (?, ?, ?, ?, ?)",
            self.insert_ignore()
        );
        let result = sqlx::query(sqlx::AssertSqlSafe(statement))
            .bind(&record.key)
            .bind(&record.request_hash)
            .bind(&record.session_id)
            .bind(record.first_seq.map(|seq| seq as i64))
            .bind(record.created_at)
            .execute(&mut *self.connection().await?)
            .await?;
        if result.rows_affected() == 1 {
            return Ok(None);
        }
        self.get_idempotency_key(&record.key).await
    }

    async fn get_idempotency_key(
        &self,
        key: &str,
    ) -> Result<Option<IdempotencyRecord>, StoreError> {
        let row = sqlx::query("SELECT * FROM idempotency_keys WHERE idem_key = ?")
            .bind(key)
            .fetch_optional(&mut *self.connection().await?)
            .await?;
        Ok(row.as_ref().map(idempotency_from_row).transpose()?)
    }

    async fn set_idempotency_first_seq(&self, key: &str, first_seq: u64) -> Result<(), StoreError> {
        sqlx::query("UPDATE idempotency_keys SET first_seq = ? WHERE idem_key = ?")
            .bind(first_seq as i64)
            .bind(key)
            .execute(&mut *self.connection().await?)
            .await?;
        Ok(())
    }

    async fn release_idempotency_key(&self, key: &str) -> Result<(), StoreError> {
        sqlx::query("DELETE FROM idempotency_keys WHERE idem_key = ?")
            .bind(key)
            .execute(&mut *self.connection().await?)
            .await?;
        Ok(())
    }

    async fn put_pending_approval(&self, record: &PendingApprovalRecord) -> Result<(), StoreError> {
        sqlx::query(
            "REPLACE INTO pending_approvals
             (session_id, approval_id, user_id, created_at, expires_at, due_at, state)
             VALUES (?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(&record.session_id)
        .bind(&record.approval_id)
        .bind(&record.user_id)
        .bind(record.created_at)
        .bind(record.expires_at)
        .bind(record.due_at)
        .bind(&record.state)
        .execute(&mut *self.connection().await?)
        .await?;
        Ok(())
    }

    async fn pending_approval(
        &self,
        session_id: &str,
    ) -> Result<Option<PendingApprovalRecord>, StoreError> {
        let row = sqlx::query("SELECT * FROM pending_approvals WHERE session_id = ?")
            .bind(session_id)
            .fetch_optional(&mut *self.connection().await?)
            .await?;
        row.as_ref().map(paused_run_from_row).transpose()
    }

    async fn due_paused_runs(
        &self,
        now: f64,
        limit: usize,
    ) -> Result<Vec<PendingApprovalRecord>, StoreError> {
        let rows = sqlx::query(
            "SELECT * FROM pending_approvals WHERE due_at <= ? ORDER BY due_at LIMIT ?",
        )
        .bind(now)
        .bind(limit as i64)
        .fetch_all(&mut *self.connection().await?)
        .await?;
        rows.iter().map(paused_run_from_row).collect()
    }

    async fn take_pending_approval(
        &self,
        session_id: &str,
        approval_id: &str,
    ) -> Result<bool, StoreError> {
        let result =
            sqlx::query("DELETE FROM pending_approvals WHERE session_id = ? AND approval_id = ?")
                .bind(session_id)
                .bind(approval_id)
                .execute(&mut *self.connection().await?)
                .await?;
        Ok(result.rows_affected() == 1)
    }
}

fn paused_run_from_row(row: &AnyRow) -> Result<PendingApprovalRecord, StoreError> {
    Ok(PendingApprovalRecord {
        session_id: row.try_get("session_id")?,
        approval_id: row.try_get("approval_id")?,
        user_id: row.try_get("user_id")?,
        created_at: row.try_get("created_at")?,
        expires_at: row.try_get("expires_at")?,
        due_at: row.try_get("due_at")?,
        state: row.try_get("state")?,
    })
}

#[async_trait]
impl McpServerStore for SqlStore {
    async fn insert_mcp_server(&self, record: &McpServerRecord) -> Result<bool, StoreError> {
        self.write_mcp_server(record, false).await
    }

    async fn put_mcp_server(&self, record: &McpServerRecord) -> Result<(), StoreError> {
        self.write_mcp_server(record, true).await.map(|_| ())
    }

    async fn get_mcp_server(
        &self,
        owner: &str,
        name: &str,
    ) -> Result<Option<McpServerRecord>, StoreError> {
        let row = sqlx::query("SELECT * FROM mcp_servers WHERE owner = ? AND name = ?")
            .bind(owner)
            .bind(name)
            .fetch_optional(&mut *self.connection().await?)
            .await?;
        row.as_ref().map(mcp_server_from_row).transpose()
    }

    async fn list_mcp_servers(&self, owner: &str) -> Result<Vec<McpServerRecord>, StoreError> {
        let rows = sqlx::query("SELECT * FROM mcp_servers WHERE owner = ? ORDER BY name")
            .bind(owner)
            .fetch_all(&mut *self.connection().await?)
            .await?;
        rows.iter().map(mcp_server_from_row).collect()
    }

    async fn list_mcp_servers_of(
        &self,
        owners: &[&str],
    ) -> Result<Vec<McpServerRecord>, StoreError> {
        if owners.is_empty() {
            return Ok(Vec::new());
        }
        let mut select = QueryBuilder::new("SELECT * FROM mcp_servers WHERE owner IN (");
        let mut listed = select.separated(", ");
        for owner in owners {
            listed.push_bind(*owner);
        }
        select.push(") ORDER BY name");
        let mut servers = select
            .build()
            .fetch_all(&mut *self.connection().await?)
            .await?
            .iter()
            .map(mcp_server_from_row)
            .collect::<Result<Vec<_>, _>>()?;
        let rank = |owner: &str| owners.iter().position(|listed| *listed == owner);
        servers.sort_by_key(|server| rank(&server.owner));
        Ok(servers)
    }

    async fn delete_mcp_server(&self, owner: &str, name: &str) -> Result<bool, StoreError> {
        let result = sqlx::query("DELETE FROM mcp_servers WHERE owner = ? AND name = ?")
            .bind(owner)
            .bind(name)
            .execute(&mut *self.connection().await?)
            .await?;
        Ok(result.rows_affected() == 1)
    }

    async fn put_mcp_authorization(
        &self,
        record: &McpAuthorizationRecord,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO mcp_authorizations (state, owner, server, sealed, expires_at)
             VALUES (?, ?, ?, ?, ?)",
        )
        .bind(&record.state)
        .bind(&record.owner)
        .bind(&record.server)
        .bind(&record.sealed)
        .bind(record.expires_at)
        .execute(&mut *self.connection().await?)
        .await?;
        Ok(())
    }

    async fn take_mcp_authorization(
        &self,
        state: &str,
    ) -> Result<Option<McpAuthorizationRecord>, StoreError> {
        let row = sqlx::query("SELECT * FROM mcp_authorizations WHERE state = ?")
            .bind(state)
            .fetch_optional(&mut *self.connection().await?)
            .await?;
        let Some(row) = row else {
            return Ok(None);
        };
        let deleted = sqlx::query("DELETE FROM mcp_authorizations WHERE state = ?")
            .bind(state)
            .execute(&mut *self.connection().await?)
            .await?;
        if deleted.rows_affected() != 1 {
            return Ok(None);
        }
        Ok(Some(McpAuthorizationRecord {
            state: row.try_get("state")?,
            owner: row.try_get("owner")?,
            server: row.try_get("server")?,
            sealed: row.try_get("sealed")?,
            expires_at: row.try_get("expires_at")?,
        }))
    }

    async fn mcp_credentials(
        &self,
        owner: &str,
        server: &str,
    ) -> Result<Option<McpCredentialsRecord>, StoreError> {
        let row = sqlx::query("SELECT * FROM mcp_credentials WHERE owner = ? AND server = ?")
            .bind(owner)
            .bind(server)
            .fetch_optional(&mut *self.connection().await?)
            .await?;
        let Some(row) = row else {
            return Ok(None);
        };
        Ok(Some(McpCredentialsRecord {
            owner: row.try_get("owner")?,
            server: row.try_get("server")?,
            sealed: row.try_get("sealed")?,
            version: row.try_get::<i64, _>("version")? as u64,
            refreshing_until: row.try_get("refreshing_until")?,
            updated_at: row.try_get("updated_at")?,
        }))
    }

    async fn put_mcp_credentials(
        &self,
        record: &McpCredentialsRecord,
        expected: Option<u64>,
    ) -> Result<bool, StoreError> {
        let result = match expected {
            None => {
                let statement = format!(
                    "{} INTO mcp_credentials
                     (owner, server, sealed, version, refreshing_until, updated_at)
                     VALUES (?, ?, ?, ?, ?, ?)",
                    self.insert_ignore()
                );
                sqlx::query(sqlx::AssertSqlSafe(statement))
                    .bind(&record.owner)
                    .bind(&record.server)
                    .bind(&record.sealed)
                    .bind(record.version as i64)
                    .bind(record.refreshing_until)
                    .bind(record.updated_at)
                    .execute(&mut *self.connection().await?)
                    .await?
            }
            Some(version) => {
                sqlx::query(
                    "UPDATE mcp_credentials
                     SET sealed = ?, version = ?, refreshing_until = ?, updated_at = ?
                     WHERE owner = ? AND server = ? AND version = ?",
                )
                .bind(&record.sealed)
                .bind(record.version as i64)
                .bind(record.refreshing_until)
                .bind(record.updated_at)
                .bind(&record.owner)
                .bind(&record.server)
                .bind(version as i64)
                .execute(&mut *self.connection().await?)
                .await?
            }
        };
        Ok(result.rows_affected() == 1)
    }

    async fn delete_mcp_credentials(&self, owner: &str, server: &str) -> Result<(), StoreError> {
        sqlx::query("DELETE FROM mcp_credentials WHERE owner = ? AND server = ?")
            .bind(owner)
            .bind(server)
            .execute(&mut *self.connection().await?)
            .await?;
        Ok(())
    }
}

#[async_trait]
impl UserMemoryStore for SqlStore {
    async fn put_user_memory(&self, memory: &UserMemoryRecord) -> Result<(), StoreError> {
        sqlx::query(
            "REPLACE INTO user_memories
             (user_id, memory_key, content, memory_type, tags, created_at, updated_at)
             VALUES (?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(&memory.user_id)
        .bind(&memory.key)
        .bind(&memory.content)
        .bind(&memory.memory_type)
        .bind(serde_json::to_string(&memory.tags)?)
        .bind(memory.created_at)
        .bind(memory.updated_at)
        .execute(&mut *self.connection().await?)
        .await?;
        Ok(())
    }

    async fn user_memories(&self, user_id: &str) -> Result<Vec<UserMemoryRecord>, StoreError> {
        let rows = sqlx::query("SELECT * FROM user_memories WHERE user_id = ? ORDER BY memory_key")
            .bind(user_id)
            .fetch_all(&mut *self.connection().await?)
            .await?;
        rows.iter().map(user_memory_from_row).collect()
    }

    async fn delete_user_memory(&self, user_id: &str, key: &str) -> Result<bool, StoreError> {
        let result = sqlx::query("DELETE FROM user_memories WHERE user_id = ? AND memory_key = ?")
            .bind(user_id)
            .bind(key)
            .execute(&mut *self.connection().await?)
            .await?;
        Ok(result.rows_affected() == 1)
    }
}

fn usage_from_row(row: &AnyRow) -> Result<UsageRecord, StoreError> {
    Ok(UsageRecord {
        user_id: row.try_get("user_id")?,
        session_id: row.try_get("session_id")?,
        seq: row.try_get::<i64, _>("seq")? as u64,
        run_id: row.try_get("run_id")?,
        day: row.try_get("day")?,
        model: row.try_get("model")?,
        calls: row
            .try_get::<i64, _>("calls")?
            .try_into()
            .unwrap_or(u32::MAX),
        prompt_tokens: row.try_get::<i64, _>("prompt_tokens")? as u64,
        completion_tokens: row.try_get::<i64, _>("completion_tokens")? as u64,
        total_tokens: row.try_get::<i64, _>("total_tokens")? as u64,
        cost: row.try_get("cost")?,
        recorded_at: row.try_get("recorded_at")?,
    })
}

#[async_trait]
impl UsageLedger for SqlStore {
    async fn user_usage(
        &self,
        user_id: &str,
        from: &str,
        to: &str,
    ) -> Result<Vec<UsageRecord>, StoreError> {
        let rows =
            sqlx::query("SELECT * FROM usage_ledger WHERE user_id = ? AND day >= ? AND day <= ?")
                .bind(user_id)
                .bind(from)
                .bind(to)
                .fetch_all(&mut *self.connection().await?)
                .await?;
        rows.iter().map(usage_from_row).collect()
    }

    async fn all_usage(&self, from: &str, to: &str) -> Result<Vec<UsageRecord>, StoreError> {
        let rows = sqlx::query("SELECT * FROM usage_ledger WHERE day >= ? AND day <= ?")
            .bind(from)
            .bind(to)
            .fetch_all(&mut *self.connection().await?)
            .await?;
        rows.iter().map(usage_from_row).collect()
    }
}

#[async_trait]
impl AccountStore for SqlStore {
    async fn insert_account(&self, account: &AccountRecord) -> Result<bool, StoreError> {
        let mut connection = self.connection().await?;
        let mut tx = connection.begin().await?;
        let inserted = sqlx::query(
            "INSERT INTO accounts (user_id, username, email, phonenum, role, password_hash,
             token_generation, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(&account.user_id)
        .bind(&account.username)
        .bind(&account.email)
        .bind(&account.phonenum)
        .bind(&account.role)
        .bind(&account.password_hash)
        .bind(account.token_generation as i64)
        .bind(account.created_at)
        .execute(&mut *tx)
        .await;
        let mut result = inserted.map(|_| ());
        for login_key in account.login_keys() {
            if result.is_err() {
                break;
            }
            result = sqlx::query("INSERT INTO account_logins (login_key, user_id) VALUES (?, ?)")
                .bind(login_key)
                .bind(&account.user_id)
                .execute(&mut *tx)
                .await
                .map(|_| ());
        }
        match result {
            Ok(()) => {
                tx.commit().await?;
                Ok(true)
            }
            // Dropping the transaction rolls it back.
            Err(error) if is_unique_violation(&error) => Ok(false),
            Err(error) => Err(error.into()),
        }
    }

    async fn account(&self, user_id: &str) -> Result<Option<AccountRecord>, StoreError> {
        let row = sqlx::query("SELECT * FROM accounts WHERE user_id = ?")
            .bind(user_id)
            .fetch_optional(&mut *self.connection().await?)
            .await?;
        Ok(row.as_ref().map(account_from_row).transpose()?)
    }

    async fn account_by_login(&self, login: &str) -> Result<Option<AccountRecord>, StoreError> {
        let row = sqlx::query(
            "SELECT accounts.* FROM account_logins
             JOIN accounts ON accounts.user_id = account_logins.user_id
             WHERE account_logins.login_key = ?",
        )
        .bind(login.to_lowercase())
        .fetch_optional(&mut *self.connection().await?)
        .await?;
        Ok(row.as_ref().map(account_from_row).transpose()?)
    }

    async fn update_account(&self, account: &AccountRecord) -> Result<bool, StoreError> {
        let result = sqlx::query(
            "UPDATE accounts SET password_hash = ?, role = ?, phonenum = ?, token_generation = ?
             WHERE user_id = ?",
        )
        .bind(&account.password_hash)
        .bind(&account.role)
        .bind(&account.phonenum)
        .bind(account.token_generation as i64)
        .bind(&account.user_id)
        .execute(&mut *self.connection().await?)
        .await?;
        Ok(result.rows_affected() == 1)
    }

    async fn list_accounts(&self) -> Result<Vec<AccountRecord>, StoreError> {
        let rows = sqlx::query("SELECT * FROM accounts ORDER BY created_at, user_id")
            .fetch_all(&mut *self.connection().await?)
            .await?;
        Ok(rows
            .iter()
            .map(account_from_row)
            .collect::<Result<_, _>>()?)
    }

    async fn delete_account(&self, user_id: &str) -> Result<bool, StoreError> {
        let mut connection = self.connection().await?;
        let mut tx = connection.begin().await?;
        sqlx::query("DELETE FROM account_logins WHERE user_id = ?")
            .bind(user_id)
            .execute(&mut *tx)
            .await?;
        let result = sqlx::query("DELETE FROM accounts WHERE user_id = ?")
            .bind(user_id)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(result.rows_affected() == 1)
    }

    async fn put_refresh_token(&self, token: &RefreshTokenRecord) -> Result<(), StoreError> {
        sqlx::query("INSERT INTO refresh_tokens (token_id, user_id, expires_at) VALUES (?, ?, ?)")
            .bind(&token.token_id)
            .bind(&token.user_id)
            .bind(token.expires_at)
            .execute(&mut *self.connection().await?)
            .await?;
        Ok(())
    }

    async fn take_refresh_token(
        &self,
        token_id: &str,
    ) -> Result<Option<RefreshTokenRecord>, StoreError> {
        let row = sqlx::query("SELECT * FROM refresh_tokens WHERE token_id = ?")
            .bind(token_id)
            .fetch_optional(&mut *self.connection().await?)
            .await?;
        let Some(row) = row else {
            return Ok(None);
        };
        // Whoever deletes the row took the token; a racing second caller deletes nothing.
        let deleted = sqlx::query("DELETE FROM refresh_tokens WHERE token_id = ?")
            .bind(token_id)
            .execute(&mut *self.connection().await?)
            .await?;
        if deleted.rows_affected() != 1 {
            return Ok(None);
        }
        Ok(Some(RefreshTokenRecord {
            token_id: row.try_get("token_id")?,
            user_id: row.try_get("user_id")?,
            expires_at: row.try_get("expires_at")?,
        }))
    }

    async fn system_settings(&self) -> Result<Option<SystemSettingsRecord>, StoreError> {
        let row = sqlx::query("SELECT body FROM system_settings WHERE id = 'system'")
            .fetch_optional(&mut *self.connection().await?)
            .await?;
        row.map(|row| {
            let body: String = row.try_get("body")?;
            Ok(serde_json::from_str(&body)?)
        })
        .transpose()
    }

    async fn put_system_settings(&self, settings: &SystemSettingsRecord) -> Result<(), StoreError> {
        sqlx::query("REPLACE INTO system_settings (id, body) VALUES ('system', ?)")
            .bind(serde_json::to_string(settings)?)
            .execute(&mut *self.connection().await?)
            .await?;
        Ok(())
    }
}

#[async_trait]
impl SummaryStore for SqlStore {
    async fn session_summary(&self, session_id: &str) -> Result<Option<SummaryRecord>, StoreError> {
        let row = sqlx::query("SELECT * FROM session_summaries WHERE session_id = ?")
            .bind(session_id)
            .fetch_optional(&mut *self.connection().await?)
            .await?;
        row.map(|row| {
            Ok(SummaryRecord {
                session_id: row.try_get("session_id")?,
                summary: row.try_get("summary")?,
                covers_seq: row.try_get::<i64, _>("covers_seq")? as u64,
                created_at: row.try_get("created_at")?,
            })
        })
        .transpose()
    }

    async fn put_session_summary(
        &self,
        summary: &SummaryRecord,
        previous_seq: u64,
    ) -> Result<bool, StoreError> {
        let result = if previous_seq == 0 {
            let statement = format!(
                "{} INTO session_summaries (session_id, summary, covers_seq, created_at)
                 SELECT session_id, ?, ?, ? FROM sessions WHERE session_id = ?",
                self.insert_ignore()
            );
            sqlx::query(sqlx::AssertSqlSafe(statement))
                .bind(&summary.summary)
                .bind(summary.covers_seq as i64)
                .bind(summary.created_at)
                .bind(&summary.session_id)
                .execute(&mut *self.connection().await?)
                .await?
        } else {
            sqlx::query(
                "UPDATE session_summaries SET summary = ?, covers_seq = ?, created_at = ?
                 WHERE session_id = ? AND covers_seq = ?",
            )
            .bind(&summary.summary)
            .bind(summary.covers_seq as i64)
            .bind(summary.created_at)
            .bind(&summary.session_id)
            .bind(previous_seq as i64)
            .execute(&mut *self.connection().await?)
            .await?
        };
        Ok(result.rows_affected() == 1)
    }

    async fn sessions_due_for_summary(
        &self,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<(SessionRecord, u64)>, StoreError> {
        let rows = sqlx::query(
            "SELECT s.*, COALESCE(m.covers_seq, 0) AS covered FROM sessions s
             LEFT JOIN session_summaries m ON m.session_id = s.session_id
             WHERE s.log_seq > COALESCE(m.covers_seq, 0) AND s.session_id > ?
             ORDER BY s.session_id LIMIT ?",
        )
        .bind(after.unwrap_or(""))
        .bind(limit as i64)
        .fetch_all(&mut *self.connection().await?)
        .await?;
        rows.iter()
            .map(|row| {
                let covered = row.try_get::<i64, _>("covered")? as u64;
                Ok((session_from_row(row)?, covered))
            })
            .collect()
    }
}

#[async_trait]
impl Store for SqlStore {
    async fn ping(&self) -> Result<(), StoreError> {
        sqlx::query("SELECT 1")
            .execute(&mut *self.connection().await?)
            .await?;
        Ok(())
    }

    async fn open_run(
        &self,
        session: &SessionRecord,
        run_id: &str,
        lease: Duration,
    ) -> Result<Option<SessionRecord>, StoreError> {
        #[cfg(feature = "sqlite")]
        if self.dialect == Dialect::Sqlite {
            // The lock and the session in one transaction and one round trip; the session only
            // when the lock is this run's, and read back with the lock's holder.
            let statement = format!(
                "BEGIN;
                 INSERT OR IGNORE INTO run_locks (session_id, run_id, expires_at, cancel_requested)
                 VALUES (?, ?, ?, 0);
                 INSERT OR IGNORE INTO sessions ({SESSION_COLUMNS})
                 SELECT ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?
                 WHERE EXISTS (SELECT 1 FROM run_locks WHERE session_id = ? AND run_id = ?);
                 SELECT sessions.*, run_locks.run_id AS lock_holder FROM sessions
                 JOIN run_locks ON run_locks.session_id = sessions.session_id
                 WHERE sessions.session_id = ?;
                 COMMIT;"
            );
            let query = bind_session(
                sqlx::query(sqlx::AssertSqlSafe(statement))
                    .bind(&session.session_id)
                    .bind(run_id)
                    .bind(lease_deadline(lease)),
                session,
            )
            .bind(&session.session_id)
            .bind(run_id)
            .bind(&session.session_id);
            let rows = self.sqlite_transaction(query).await?;
            if let Some(row) = rows.first()
                && row.try_get::<String, _>("lock_holder")? == run_id
            {
                return Ok(Some(session_from_row(row)?));
            }
            // Another run's lock is there, perhaps with its lease run out.
        }
        open_run_stepwise(self, session, run_id, lease).await
    }

    async fn close_run(
        &self,
        session_id: &str,
        run_id: &str,
        tally: &RunTally,
    ) -> Result<Option<SessionRecord>, StoreError> {
        #[cfg(feature = "sqlite")]
        if self.dialect == Dialect::Sqlite {
            // Only the run's own columns: a rename during the run stays.
            let query = sqlx::query(
                "BEGIN;
                 UPDATE sessions SET updated_at = ?, message_count = ?, user_count = ?,
                 agent_count = ?, search_text = ?, status = ?, log_seq = ? WHERE session_id = ?
                 RETURNING *;
                 DELETE FROM run_locks WHERE session_id = ? AND run_id = ?;
                 COMMIT;",
            )
            .bind(tally.updated_at)
            .bind(tally.message_count as i64)
            .bind(tally.user_count as i64)
            .bind(tally.agent_count as i64)
            .bind(&tally.search_text)
            .bind(tally.status.as_str())
            .bind(tally.log_seq as i64)
            .bind(session_id)
            .bind(session_id)
            .bind(run_id);
            let rows = self.sqlite_transaction(query).await?;
            return Ok(rows.first().map(session_from_row).transpose()?);
        }
        close_run_stepwise(self, session_id, run_id, tally).await
    }
}

#[async_trait]
impl AgentStore for SqlStore {
    async fn insert_agent(&self, agent: &AgentRecord) -> Result<bool, StoreError> {
        let result = sqlx::query(
            "INSERT INTO agents (agent_id, owner, name, config, created_at, updated_at)
             VALUES (?, ?, ?, ?, ?, ?)",
        )
        .bind(&agent.agent_id)
        .bind(&agent.owner)
        .bind(&agent.name)
        .bind(serde_json::to_string(&agent.config)?)
        .bind(agent.created_at)
        .bind(agent.updated_at)
        .execute(&mut *self.connection().await?)
        .await;
        match result {
            Ok(_) => Ok(true),
            Err(error) if is_unique_violation(&error) => Ok(false),
            Err(error) => Err(error.into()),
        }
    }

    async fn replace_agent(&self, agent: &AgentRecord) -> Result<bool, StoreError> {
        let result = sqlx::query(
            "UPDATE agents SET name = ?, config = ?, updated_at = ?
             WHERE agent_id = ? AND owner = ?",
        )
        .bind(&agent.name)
        .bind(serde_json::to_string(&agent.config)?)
        .bind(agent.updated_at)
        .bind(&agent.agent_id)
        .bind(&agent.owner)
        .execute(&mut *self.connection().await?)
        .await;
        match result {
            Ok(done) => Ok(done.rows_affected() == 1),
            Err(error) if is_unique_violation(&error) => Ok(false),
            Err(error) => Err(error.into()),
        }
    }

    async fn agent(&self, agent_id: &str) -> Result<Option<AgentRecord>, StoreError> {
        let row = sqlx::query("SELECT * FROM agents WHERE agent_id = ?")
            .bind(agent_id)
            .fetch_optional(&mut *self.connection().await?)
            .await?;
        row.as_ref().map(agent_from_row).transpose()
    }

    async fn owner_agents(&self, owner: &str) -> Result<Vec<AgentRecord>, StoreError> {
        let rows = sqlx::query("SELECT * FROM agents WHERE owner = ? ORDER BY name")
            .bind(owner)
            .fetch_all(&mut *self.connection().await?)
            .await?;
        rows.iter().map(agent_from_row).collect()
    }

    async fn all_agents(&self) -> Result<Vec<AgentRecord>, StoreError> {
        let rows = sqlx::query("SELECT * FROM agents ORDER BY name, agent_id")
            .fetch_all(&mut *self.connection().await?)
            .await?;
        rows.iter().map(agent_from_row).collect()
    }

    async fn delete_agent(&self, agent_id: &str) -> Result<bool, StoreError> {
        let result = sqlx::query("DELETE FROM agents WHERE agent_id = ?")
            .bind(agent_id)
            .execute(&mut *self.connection().await?)
            .await?;
        Ok(result.rows_affected() == 1)
    }
}

#[async_trait]
impl ProviderStore for SqlStore {
    async fn put_provider(&self, provider: &ProviderRecord) -> Result<(), StoreError> {
        sqlx::query(
            "REPLACE INTO llm_providers
             (owner, provider_id, config, sealed_keys, created_at, updated_at)
             VALUES (?, ?, ?, ?, ?, ?)",
        )
        .bind(&provider.owner)
        .bind(&provider.provider_id)
        .bind(serde_json::to_string(&provider.config)?)
        .bind(&provider.sealed_keys)
        .bind(provider.created_at)
        .bind(provider.updated_at)
        .execute(&mut *self.connection().await?)
        .await?;
        Ok(())
    }

    async fn provider(
        &self,
        owner: &str,
        provider_id: &str,
    ) -> Result<Option<ProviderRecord>, StoreError> {
        let row = sqlx::query("SELECT * FROM llm_providers WHERE owner = ? AND provider_id = ?")
            .bind(owner)
            .bind(provider_id)
            .fetch_optional(&mut *self.connection().await?)
            .await?;
        row.as_ref().map(provider_from_row).transpose()
    }

    async fn owner_providers(&self, owner: &str) -> Result<Vec<ProviderRecord>, StoreError> {
        let rows = sqlx::query(
            "SELECT * FROM llm_providers WHERE owner = ? ORDER BY created_at, provider_id",
        )
        .bind(owner)
        .fetch_all(&mut *self.connection().await?)
        .await?;
        rows.iter().map(provider_from_row).collect()
    }

    async fn delete_provider(&self, owner: &str, provider_id: &str) -> Result<bool, StoreError> {
        let result = sqlx::query("DELETE FROM llm_providers WHERE owner = ? AND provider_id = ?")
            .bind(owner)
            .bind(provider_id)
            .execute(&mut *self.connection().await?)
            .await?;
        Ok(result.rows_affected() == 1)
    }
}

#[async_trait]
impl SkillStore for SqlStore {
    async fn put_skill(&self, skill: &SkillRecord) -> Result<bool, StoreError> {
        let package = serde_json::to_string(&skill.package)?;
        // The owner's own skill changes in place; a new name is inserted, and a name another
        // owner holds fails the insert. Twice, for an insert that loses a race to the owner.
        for _ in 0..2 {
            let updated = sqlx::query(
                "UPDATE skills SET description = ?, package = ?, updated_at = ?
                 WHERE name = ? AND owner = ?",
            )
            .bind(&skill.description)
            .bind(&package)
            .bind(skill.updated_at)
            .bind(&skill.name)
            .bind(&skill.owner)
            .execute(&mut *self.connection().await?)
            .await?;
            if updated.rows_affected() == 1 {
                return Ok(true);
            }
            let inserted = sqlx::query(
                "INSERT INTO skills (name, owner, description, package, created_at, updated_at)
                 VALUES (?, ?, ?, ?, ?, ?)",
            )
            .bind(&skill.name)
            .bind(&skill.owner)
            .bind(&skill.description)
            .bind(&package)
            .bind(skill.created_at)
            .bind(skill.updated_at)
            .execute(&mut *self.connection().await?)
            .await;
            match inserted {
                Ok(_) => return Ok(true),
                Err(error) if is_unique_violation(&error) => {}
                Err(error) => return Err(error.into()),
            }
        }
        Ok(false)
    }

    async fn skill(&self, name: &str) -> Result<Option<SkillRecord>, StoreError> {
        let row = sqlx::query("SELECT * FROM skills WHERE name = ?")
            .bind(name)
            .fetch_optional(&mut *self.connection().await?)
            .await?;
        row.as_ref().map(skill_from_row).transpose()
    }

    async fn owner_skills(&self, owner: &str) -> Result<Vec<SkillRecord>, StoreError> {
        let rows = sqlx::query("SELECT * FROM skills WHERE owner = ? ORDER BY name")
            .bind(owner)
            .fetch_all(&mut *self.connection().await?)
            .await?;
        rows.iter().map(skill_from_row).collect()
    }

    async fn delete_skill(&self, name: &str) -> Result<bool, StoreError> {
        let result = sqlx::query("DELETE FROM skills WHERE name = ?")
            .bind(name)
            .execute(&mut *self.connection().await?)
            .await?;
        Ok(result.rows_affected() == 1)
    }
}

#[async_trait]
impl KnowledgeStore for SqlStore {
    async fn create_knowledge_base(&self, base: &KnowledgeBaseRecord) -> Result<bool, StoreError> {
        let inserted = sqlx::query(
            "INSERT INTO knowledge_bases (id, owner, name, kind, intro, language, documents,
                 revision, pending, created_at, updated_at)
             VALUES (?, ?, ?, ?, ?, ?, ?, 1, ?, ?, ?)",
        )
        .bind(&base.id)
        .bind(&base.owner)
        .bind(&base.name)
        .bind(&base.kind)
        .bind(&base.intro)
        .bind(&base.language)
        .bind(serde_json::to_string(&base.documents)?)
        .bind(i64::from(base.has_pending()))
        .bind(base.created_at)
        .bind(base.updated_at)
        .execute(&mut *self.connection().await?)
        .await;
        match inserted {
            Ok(_) => Ok(true),
            Err(error) if is_unique_violation(&error) => Ok(false),
            Err(error) => Err(error.into()),
        }
    }

    async fn update_knowledge_base(&self, base: &KnowledgeBaseRecord) -> Result<bool, StoreError> {
        let updated = sqlx::query(
            "UPDATE knowledge_bases SET name = ?, kind = ?, intro = ?, language = ?,
                 documents = ?, revision = ?, pending = ?, updated_at = ?
             WHERE id = ? AND owner = ? AND revision = ?",
        )
        .bind(&base.name)
        .bind(&base.kind)
        .bind(&base.intro)
        .bind(&base.language)
        .bind(serde_json::to_string(&base.documents)?)
        .bind(base.revision as i64 + 1)
        .bind(i64::from(base.has_pending()))
        .bind(base.updated_at)
        .bind(&base.id)
        .bind(&base.owner)
        .bind(base.revision as i64)
        .execute(&mut *self.connection().await?)
        .await?;
        Ok(updated.rows_affected() == 1)
    }

    async fn knowledge_base(
        &self,
        owner: &str,
        id: &str,
    ) -> Result<Option<KnowledgeBaseRecord>, StoreError> {
        let row = sqlx::query("SELECT * FROM knowledge_bases WHERE id = ? AND owner = ?")
            .bind(id)
            .bind(owner)
            .fetch_optional(&mut *self.connection().await?)
            .await?;
        row.as_ref().map(knowledge_base_from_row).transpose()
    }

    async fn owner_knowledge_bases(
        &self,
        owner: &str,
    ) -> Result<Vec<KnowledgeBaseRecord>, StoreError> {
        let rows = sqlx::query(
            "SELECT * FROM knowledge_bases WHERE owner = ? ORDER BY created_at DESC, id",
        )
        .bind(owner)
        .fetch_all(&mut *self.connection().await?)
        .await?;
        rows.iter().map(knowledge_base_from_row).collect()
    }

    async fn delete_knowledge_base(&self, owner: &str, id: &str) -> Result<bool, StoreError> {
        let result = sqlx::query("DELETE FROM knowledge_bases WHERE id = ? AND owner = ?")
            .bind(id)
            .bind(owner)
            .execute(&mut *self.connection().await?)
            .await?;
        Ok(result.rows_affected() == 1)
    }

    async fn pending_knowledge_bases(
        &self,
        limit: usize,
    ) -> Result<Vec<KnowledgeBaseRecord>, StoreError> {
        let rows = sqlx::query(
            "SELECT * FROM knowledge_bases WHERE pending = 1 ORDER BY updated_at LIMIT ?",
        )
        .bind(limit.min(i64::MAX as usize) as i64)
        .fetch_all(&mut *self.connection().await?)
        .await?;
        rows.iter().map(knowledge_base_from_row).collect()
    }
}
