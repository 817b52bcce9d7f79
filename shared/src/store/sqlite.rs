use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use async_trait::async_trait;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{Row, SqlitePool};

use super::{McpServerRecord, SessionRecord, Store, StoreError, lease_deadline};
use crate::error::now_secs;
use crate::event::StoredEvent;

const SCHEMA: &[&str] = &[
    "CREATE TABLE IF NOT EXISTS sessions (
        session_id TEXT PRIMARY KEY,
        user_id TEXT NOT NULL,
        agent_id TEXT,
        agent_name TEXT,
        title TEXT NOT NULL,
        created_at REAL NOT NULL,
        updated_at REAL NOT NULL
    )",
    "CREATE INDEX IF NOT EXISTS sessions_by_user ON sessions (user_id, updated_at)",
    "CREATE TABLE IF NOT EXISTS events (
        session_id TEXT NOT NULL,
        seq INTEGER NOT NULL,
        body TEXT NOT NULL,
        PRIMARY KEY (session_id, seq)
    ) WITHOUT ROWID",
    "CREATE TABLE IF NOT EXISTS mcp_servers (
        owner TEXT NOT NULL,
        name TEXT NOT NULL,
        config TEXT NOT NULL,
        tools TEXT NOT NULL,
        last_error TEXT,
        updated_at REAL NOT NULL,
        PRIMARY KEY (owner, name)
    )",
    "CREATE TABLE IF NOT EXISTS run_locks (
        session_id TEXT PRIMARY KEY,
        run_id TEXT NOT NULL,
        expires_at REAL NOT NULL
    )",
];

/// The `file` store: one SQLite file, WAL mode.
pub struct SqliteStore {
    pool: SqlitePool,
}

impl SqliteStore {
    pub async fn open(file: &Path) -> Result<Self, StoreError> {
        if let Some(dir) = file.parent().filter(|dir| !dir.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)?;
        }
        let options = SqliteConnectOptions::from_str("sqlite:")?
            .filename(file)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .busy_timeout(Duration::from_secs(5));
        let pool = SqlitePoolOptions::new()
            .max_connections(4)
            .connect_with(options)
            .await?;
        for statement in SCHEMA {
            sqlx::query(*statement).execute(&pool).await?;
        }
        Ok(Self { pool })
    }
}

fn session_from_row(row: &sqlx::sqlite::SqliteRow) -> Result<SessionRecord, sqlx::Error> {
    Ok(SessionRecord {
        session_id: row.try_get("session_id")?,
        user_id: row.try_get("user_id")?,
        agent_id: row.try_get("agent_id")?,
        agent_name: row.try_get("agent_name")?,
        title: row.try_get("title")?,
        created_at: row.try_get("created_at")?,
        updated_at: row.try_get("updated_at")?,
    })
}

fn mcp_server_from_row(row: &sqlx::sqlite::SqliteRow) -> Result<McpServerRecord, StoreError> {
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

impl SqliteStore {
    async fn write_mcp_server(
        &self,
        record: &McpServerRecord,
        replace: bool,
    ) -> Result<bool, StoreError> {
        let statement = if replace {
            "INSERT OR REPLACE INTO mcp_servers (owner, name, config, tools, last_error, updated_at)
             VALUES (?, ?, ?, ?, ?, ?)"
        } else {
            "INSERT INTO mcp_servers (owner, name, config, tools, last_error, updated_at)
             VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (owner, name) DO NOTHING"
        };
        let result = sqlx::query(statement)
            .bind(&record.owner)
            .bind(&record.name)
            .bind(serde_json::to_string(&record.config)?)
            .bind(serde_json::to_string(&record.tools)?)
            .bind(&record.last_error)
            .bind(record.updated_at)
            .execute(&self.pool)
            .await?;
        Ok(result.rows_affected() == 1)
    }
}

#[async_trait]
impl Store for SqliteStore {
    async fn get_session(&self, session_id: &str) -> Result<Option<SessionRecord>, StoreError> {
        let row = sqlx::query("SELECT * FROM sessions WHERE session_id = ?")
            .bind(session_id)
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.as_ref().map(session_from_row).transpose()?)
    }

    async fn create_session(&self, session: &SessionRecord) -> Result<SessionRecord, StoreError> {
        sqlx::query(
            "INSERT INTO sessions (session_id, user_id, agent_id, agent_name, title, created_at, updated_at)
             VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (session_id) DO NOTHING",
        )
        .bind(&session.session_id)
        .bind(&session.user_id)
        .bind(&session.agent_id)
        .bind(&session.agent_name)
        .bind(&session.title)
        .bind(session.created_at)
        .bind(session.updated_at)
        .execute(&self.pool)
        .await?;
        Ok(self
            .get_session(&session.session_id)
            .await?
            .unwrap_or_else(|| session.clone()))
    }

    async fn touch_session(&self, session_id: &str, updated_at: f64) -> Result<(), StoreError> {
        sqlx::query("UPDATE sessions SET updated_at = ? WHERE session_id = ?")
            .bind(updated_at)
            .bind(session_id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn append_events(
        &self,
        session_id: &str,
        events: &[StoredEvent],
    ) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await?;
        for stored in events {
            let body = serde_json::to_string(&stored.event)?;
            let inserted =
                sqlx::query("INSERT INTO events (session_id, seq, body) VALUES (?, ?, ?)")
                    .bind(session_id)
                    .bind(stored.seq as i64)
                    .bind(body)
                    .execute(&mut *tx)
                    .await;
            match inserted {
                Err(sqlx::Error::Database(db)) if db.is_unique_violation() => {
                    return Err(StoreError::SeqConflict {
                        session_id: session_id.to_owned(),
                        seq: stored.seq,
                    });
                }
                other => {
                    other?;
                }
            }
        }
        tx.commit().await?;
        Ok(())
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
        let seq: Option<i64> =
            sqlx::query_scalar("SELECT MAX(seq) FROM events WHERE session_id = ?")
                .bind(session_id)
                .fetch_one(&self.pool)
                .await?;
        Ok(seq.unwrap_or(0) as u64)
    }

    async fn try_lock_run(
        &self,
        session_id: &str,
        run_id: &str,
        lease: Duration,
    ) -> Result<bool, StoreError> {
        let result = sqlx::query(
            "INSERT INTO run_locks (session_id, run_id, expires_at) VALUES (?, ?, ?)
             ON CONFLICT (session_id) DO UPDATE SET run_id = excluded.run_id, expires_at = excluded.expires_at
             WHERE run_locks.expires_at < ?",
        )
        .bind(session_id)
        .bind(run_id)
        .bind(lease_deadline(lease))
        .bind(now_secs())
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
