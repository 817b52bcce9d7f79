ALTER TABLE sessions ADD COLUMN log_seq INTEGER NOT NULL DEFAULT 0;

CREATE TABLE IF NOT EXISTS session_summaries (
    session_id TEXT PRIMARY KEY, summary TEXT NOT NULL, covers_seq INTEGER NOT NULL,
    created_at REAL NOT NULL);
