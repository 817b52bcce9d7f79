CREATE TABLE IF NOT EXISTS agents (
    agent_id TEXT PRIMARY KEY, owner TEXT NOT NULL, name TEXT NOT NULL, config TEXT NOT NULL,
    created_at REAL NOT NULL, updated_at REAL NOT NULL, UNIQUE (owner, name));
