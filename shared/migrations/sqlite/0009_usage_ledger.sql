-- One row per run's token_usage event, written in the same transaction as that event.
CREATE TABLE IF NOT EXISTS usage_ledger (
    session_id TEXT NOT NULL, seq INTEGER NOT NULL, user_id TEXT NOT NULL,
    run_id TEXT NOT NULL, day TEXT NOT NULL, model TEXT NOT NULL, calls INTEGER NOT NULL,
    prompt_tokens INTEGER NOT NULL, completion_tokens INTEGER NOT NULL,
    total_tokens INTEGER NOT NULL, cost REAL, recorded_at REAL NOT NULL,
    PRIMARY KEY (session_id, seq)) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS usage_ledger_by_user_day ON usage_ledger (user_id, day);
CREATE INDEX IF NOT EXISTS usage_ledger_by_day ON usage_ledger (day);
