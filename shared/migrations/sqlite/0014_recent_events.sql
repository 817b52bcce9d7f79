-- Streaming runs' events in arrival order, until each run ends and its events are copied into
-- `events` (see store/sql/recent.rs).
CREATE TABLE IF NOT EXISTS recent_events (
    session_id TEXT NOT NULL, seq INTEGER NOT NULL, body TEXT NOT NULL);
