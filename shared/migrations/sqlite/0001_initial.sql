-- The first schema: sessions, their event logs, run locks, MCP servers, idempotency keys.
CREATE TABLE IF NOT EXISTS sessions (
    session_id TEXT PRIMARY KEY, user_id TEXT NOT NULL, agent_id TEXT, agent_name TEXT,
    title TEXT NOT NULL, created_at REAL NOT NULL, updated_at REAL NOT NULL,
    message_count INTEGER NOT NULL DEFAULT 0, user_count INTEGER NOT NULL DEFAULT 0,
    agent_count INTEGER NOT NULL DEFAULT 0, search_text TEXT NOT NULL DEFAULT '',
    status TEXT NOT NULL DEFAULT 'idle');

CREATE INDEX IF NOT EXISTS sessions_by_user ON sessions (user_id, updated_at);

CREATE TABLE IF NOT EXISTS events (
    session_id TEXT NOT NULL, seq INTEGER NOT NULL, body TEXT NOT NULL,
    PRIMARY KEY (session_id, seq)) WITHOUT ROWID;

CREATE TABLE IF NOT EXISTS run_locks (
    session_id TEXT PRIMARY KEY, run_id TEXT NOT NULL, expires_at REAL NOT NULL,
    cancel_requested INTEGER NOT NULL DEFAULT 0);

CREATE TABLE IF NOT EXISTS mcp_servers (
    owner TEXT NOT NULL, name TEXT NOT NULL, config TEXT NOT NULL, tools TEXT NOT NULL,
    last_error TEXT, updated_at REAL NOT NULL, PRIMARY KEY (owner, name));

CREATE TABLE IF NOT EXISTS idempotency_keys (
    idem_key TEXT PRIMARY KEY, request_hash TEXT NOT NULL, session_id TEXT NOT NULL,
    first_seq INTEGER, created_at REAL NOT NULL);
