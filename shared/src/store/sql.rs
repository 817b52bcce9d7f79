//! The SQL store, one implementation for both SQL backends through `sqlx::Any`: `file` (SQLite,
//! WAL) and `mysql` (MySQL 8 / MariaDB 10.11). Only the schema and two statements differ.

use std::path::Path;
use std::time::Duration;

use async_trait::async_trait;
use sqlx::any::{AnyPoolOptions, AnyRow};
use sqlx::{AnyPool, Executor, QueryBuilder, Row};

use super::{
    IdempotencyRecord, McpServerRecord, RunLock, RunStatus, SessionRecord, Store, StoreError,
    lease_deadline,
};
use crate::config::Config;
use crate::error::now_secs;
use crate::event::StoredEvent;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Dialect {
    Sqlite,
    Mysql,
}

const SQLITE_SCHEMA: &[&str] = &[
    "CREATE TABLE IF NOT EXISTS sessions (
        session_id TEXT PRIMARY KEY, user_id TEXT NOT NULL, agent_id TEXT, agent_name TEXT,
        title TEXT NOT NULL, created_at REAL NOT NULL, updated_at REAL NOT NULL,
        message_count INTEGER NOT NULL DEFAULT 0, user_count INTEGER NOT NULL DEFAULT 0,
        agent_count INTEGER NOT NULL DEFAULT 0, search_text TEXT NOT NULL DEFAULT '',
        status TEXT NOT NULL DEFAULT 'idle')",
    "CREATE INDEX IF NOT EXISTS sessions_by_user ON sessions (user_id, updated_at)",
    "CREATE TABLE IF NOT EXISTS events (
        session_id TEXT NOT NULL, seq INTEGER NOT NULL, body TEXT NOT NULL,
        PRIMARY KEY (session_id, seq)) WITHOUT ROWID",
    "CREATE TABLE IF NOT EXISTS run_locks (
        session_id TEXT PRIMARY KEY, run_id TEXT NOT NULL, expires_at REAL NOT NULL,
        cancel_requested INTEGER NOT NULL DEFAULT 0)",
    "CREATE TABLE IF NOT EXISTS mcp_servers (
        owner TEXT NOT NULL, name TEXT NOT NULL, config TEXT NOT NULL, tools TEXT NOT NULL,
        last_error TEXT, updated_at REAL NOT NULL, PRIMARY KEY (owner, name))",
    "CREATE TABLE IF NOT EXISTS idempotency_keys (
        idem_key TEXT PRIMARY KEY, request_hash TEXT NOT NULL, session_id TEXT NOT NULL,
        first_seq INTEGER, created_at REAL NOT NULL)",
];

const MYSQL_SCHEMA: &[&str] = &[
    "CREATE TABLE IF NOT EXISTS sessions (
        session_id VARCHAR(191) PRIMARY KEY, user_id VARCHAR(191) NOT NULL,
        agent_id VARCHAR(191), agent_name VARCHAR(255), title VARCHAR(255) NOT NULL,
        created_at DOUBLE NOT NULL, updated_at DOUBLE NOT NULL,
        message_count BIGINT NOT NULL DEFAULT 0, user_count BIGINT NOT NULL DEFAULT 0,
        agent_count BIGINT NOT NULL DEFAULT 0, search_text MEDIUMTEXT NOT NULL,
        status VARCHAR(16) NOT NULL DEFAULT 'idle',
        INDEX sessions_by_user (user_id, updated_at)
    ) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin",
    "CREATE TABLE IF NOT EXISTS events (
        session_id VARCHAR(191) NOT NULL, seq BIGINT NOT NULL, body MEDIUMTEXT NOT NULL,
        PRIMARY KEY (session_id, seq)
    ) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin",
    "CREATE TABLE IF NOT EXISTS run_locks (
        session_id VARCHAR(191) PRIMARY KEY, run_id VARCHAR(64) NOT NULL,
        expires_at DOUBLE NOT NULL, cancel_requested BIGINT NOT NULL DEFAULT 0
    ) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin",
    "CREATE TABLE IF NOT EXISTS mcp_servers (
        owner VARCHAR(191) NOT NULL, name VARCHAR(64) NOT NULL, config MEDIUMTEXT NOT NULL,
        tools MEDIUMTEXT NOT NULL, last_error TEXT, updated_at DOUBLE NOT NULL,
        PRIMARY KEY (owner, name)
    ) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin",
    "CREATE TABLE IF NOT EXISTS idempotency_keys (
        idem_key VARCHAR(191) PRIMARY KEY, request_hash VARCHAR(64) NOT NULL,
        session_id VARCHAR(191) NOT NULL, first_seq BIGINT, created_at DOUBLE NOT NULL
    ) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin",
];

/// The `file` and `mysql` stores.
pub struct SqlStore {
    pool: AnyPool,
    dialect: Dialect,
}

pub type SqliteStore = SqlStore;
pub type MysqlStore = SqlStore;

impl SqlStore {
    /// The `file` store: one SQLite file, created with its directory when missing.
    pub async fn open(file: &Path) -> Result<Self, StoreError> {
        if let Some(dir) = file.parent().filter(|dir| !dir.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)?;
        }
        sqlx::any::install_default_drivers();
        let url = format!("sqlite://{}?mode=rwc", file.display());
        let pool = AnyPoolOptions::new()
            .max_connections(4)
            .after_connect(|connection, _| {
                Box::pin(async move {
                    connection
                        .execute(
                            "PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL; \
                             PRAGMA busy_timeout = 5000;",
                        )
                        .await?;
                    Ok(())
                })
            })
            .connect(&url)
            .await?;
        Self::migrate(pool, Dialect::Sqlite).await
    }

    /// The `mysql` store: creates the database when missing, then the tables.
    pub async fn connect(config: &Config) -> Result<Self, StoreError> {
        Self::connect_mysql(
            &config.mysql_host,
            config.mysql_port,
            &config.mysql_user,
            &config.mysql_password,
            &config.mysql_database,
        )
        .await
    }

    pub async fn connect_mysql(
        host: &str,
        port: u16,
        user: &str,
        password: &str,
        database: &str,
    ) -> Result<Self, StoreError> {
        sqlx::any::install_default_drivers();
        let mut server = reqwest::Url::parse("mysql://localhost/")
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
        Self::migrate(pool, Dialect::Mysql).await
    }

    async fn migrate(pool: AnyPool, dialect: Dialect) -> Result<Self, StoreError> {
        let schema = match dialect {
            Dialect::Sqlite => SQLITE_SCHEMA,
            Dialect::Mysql => MYSQL_SCHEMA,
        };
        for statement in schema {
            sqlx::query(*statement).execute(&pool).await?;
        }
        Ok(Self { pool, dialect })
    }

    fn insert_ignore(&self) -> &'static str {
        match self.dialect {
            Dialect::Sqlite => "INSERT OR IGNORE",
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
            .execute(&self.pool)
            .await?;
        Ok(result.rows_affected() >= 1)
    }
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
    updated_at, message_count, user_count, agent_count, search_text, status";

#[async_trait]
impl Store for SqlStore {
    async fn get_session(&self, session_id: &str) -> Result<Option<SessionRecord>, StoreError> {
        let row = sqlx::query("SELECT * FROM sessions WHERE session_id = ?")
            .bind(session_id)
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.as_ref().map(session_from_row).transpose()?)
    }

    async fn create_session(&self, session: &SessionRecord) -> Result<SessionRecord, StoreError> {
        let statement = format!(
            "{} INTO sessions ({SESSION_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            self.insert_ignore()
        );
        sqlx::query(sqlx::AssertSqlSafe(statement))
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
            .execute(&self.pool)
            .await?;
        Ok(self
            .get_session(&session.session_id)
            .await?
            .unwrap_or_else(|| session.clone()))
    }

    async fn update_session(&self, session: &SessionRecord) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE sessions SET agent_id = ?, agent_name = ?, title = ?, updated_at = ?,
             message_count = ?, user_count = ?, agent_count = ?, search_text = ?, status = ?
             WHERE session_id = ?",
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
        .bind(&session.session_id)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn user_sessions(&self, user_id: &str) -> Result<Vec<SessionRecord>, StoreError> {
        let rows = sqlx::query("SELECT * FROM sessions WHERE user_id = ?")
            .bind(user_id)
            .fetch_all(&self.pool)
            .await?;
        Ok(rows
            .iter()
            .map(session_from_row)
            .collect::<Result<_, _>>()?)
    }

    async fn delete_session(&self, session_id: &str) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await?;
        for statement in [
            "DELETE FROM events WHERE session_id = ?",
            "DELETE FROM run_locks WHERE session_id = ?",
            "DELETE FROM sessions WHERE session_id = ?",
        ] {
            sqlx::query(statement)
                .bind(session_id)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    async fn append_events(
        &self,
        session_id: &str,
        events: &[StoredEvent],
    ) -> Result<(), StoreError> {
        if events.is_empty() {
            return Ok(());
        }
        let bodies = events
            .iter()
            .map(|stored| Ok((stored.seq as i64, serde_json::to_string(&stored.event)?)))
            .collect::<Result<Vec<_>, serde_json::Error>>()?;
        let mut insert = QueryBuilder::new("INSERT INTO events (session_id, seq, body) ");
        insert.push_values(&bodies, |mut row, (seq, body)| {
            row.push_bind(session_id).push_bind(*seq).push_bind(body);
        });
        match insert.build().execute(&self.pool).await {
            Err(error) if is_unique_violation(&error) => Err(StoreError::SeqConflict {
                session_id: session_id.to_owned(),
                seq: events[0].seq,
            }),
            other => other.map(|_| ()).map_err(StoreError::from),
        }
    }

    async fn append_event_batches(
        &self,
        batches: &[(String, Vec<StoredEvent>)],
    ) -> Result<(), StoreError> {
        let mut rows = Vec::new();
        for (session_id, events) in batches {
            for stored in events {
                rows.push((
                    session_id.as_str(),
                    stored.seq as i64,
                    serde_json::to_string(&stored.event)?,
                ));
            }
        }
        if rows.is_empty() {
            return Ok(());
        }
        let mut insert = QueryBuilder::new("INSERT INTO events (session_id, seq, body) ");
        insert.push_values(&rows, |mut row, (session_id, seq, body)| {
            row.push_bind(*session_id).push_bind(*seq).push_bind(body);
        });
        match insert.build().execute(&self.pool).await {
            Err(error) if is_unique_violation(&error) => Err(StoreError::SeqConflict {
                session_id: rows[0].0.to_owned(),
                seq: rows[0].1 as u64,
            }),
            other => other.map(|_| ()).map_err(StoreError::from),
        }
    }

    fn coalesces_writes(&self) -> bool {
        true
    }

    async fn events_after(
        &self,
        session_id: &str,
        after: u64,
    ) -> Result<Vec<StoredEvent>, StoreError> {
        let rows = sqlx::query(
            "SELECT seq, body FROM events WHERE session_id = ? AND seq > ? ORDER BY seq",
        )
        .bind(session_id)
        .bind(after as i64)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|row| {
                let seq: i64 = row.try_get("seq")?;
                let body: String = row.try_get("body")?;
                Ok(StoredEvent {
                    seq: seq as u64,
                    event: serde_json::from_str(&body)?,
                })
            })
            .collect()
    }

    async fn last_seq(&self, session_id: &str) -> Result<u64, StoreError> {
        let row = sqlx::query("SELECT MAX(seq) AS last FROM events WHERE session_id = ?")
            .bind(session_id)
            .fetch_one(&self.pool)
            .await?;
        let last: Option<i64> = row.try_get("last")?;
        Ok(last.unwrap_or(0) as u64)
    }

    async fn try_lock_run(
        &self,
        session_id: &str,
        run_id: &str,
        lease: Duration,
    ) -> Result<bool, StoreError> {
        // Clear an expired lease, then insert: of several contenders exactly one insert lands.
        sqlx::query("DELETE FROM run_locks WHERE session_id = ? AND expires_at < ?")
            .bind(session_id)
            .bind(now_secs())
            .execute(&self.pool)
            .await?;
        let statement = format!(
            "{} INTO run_locks (session_id, run_id, expires_at, cancel_requested) VALUES (?, ?, ?, 0)",
            self.insert_ignore()
        );
        let result = sqlx::query(sqlx::AssertSqlSafe(statement))
            .bind(session_id)
            .bind(run_id)
            .bind(lease_deadline(lease))
            .execute(&self.pool)
            .await?;
        Ok(result.rows_affected() == 1)
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
                .execute(&self.pool)
                .await?;
        Ok(result.rows_affected() == 1)
    }

    async fn release_run_lock(&self, session_id: &str, run_id: &str) -> Result<(), StoreError> {
        sqlx::query("DELETE FROM run_locks WHERE session_id = ? AND run_id = ?")
            .bind(session_id)
            .bind(run_id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn run_lock(&self, session_id: &str) -> Result<Option<RunLock>, StoreError> {
        let row = sqlx::query(
            "SELECT run_id, expires_at, cancel_requested FROM run_locks WHERE session_id = ?",
        )
        .bind(session_id)
        .fetch_optional(&self.pool)
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
        .execute(&self.pool)
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
                .fetch_all(&self.pool)
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
            .execute(&self.pool)
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
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.as_ref().map(idempotency_from_row).transpose()?)
    }

    async fn set_idempotency_first_seq(&self, key: &str, first_seq: u64) -> Result<(), StoreError> {
        sqlx::query("UPDATE idempotency_keys SET first_seq = ? WHERE idem_key = ?")
            .bind(first_seq as i64)
            .bind(key)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn release_idempotency_key(&self, key: &str) -> Result<(), StoreError> {
        sqlx::query("DELETE FROM idempotency_keys WHERE idem_key = ?")
            .bind(key)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

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
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(mcp_server_from_row).transpose()
    }

    async fn list_mcp_servers(&self, owner: &str) -> Result<Vec<McpServerRecord>, StoreError> {
        let rows = sqlx::query("SELECT * FROM mcp_servers WHERE owner = ? ORDER BY name")
            .bind(owner)
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(mcp_server_from_row).collect()
    }

    async fn delete_mcp_server(&self, owner: &str, name: &str) -> Result<bool, StoreError> {
        let result = sqlx::query("DELETE FROM mcp_servers WHERE owner = ? AND name = ?")
            .bind(owner)
            .bind(name)
            .execute(&self.pool)
            .await?;
        Ok(result.rows_affected() == 1)
    }

    async fn ping(&self) -> Result<(), StoreError> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }
}
