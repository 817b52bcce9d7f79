CREATE TABLE IF NOT EXISTS llm_providers (
    owner TEXT NOT NULL, provider_id TEXT NOT NULL, config TEXT NOT NULL, sealed_keys TEXT NOT NULL,
    created_at REAL NOT NULL, updated_at REAL NOT NULL, PRIMARY KEY (owner, provider_id))
    WITHOUT ROWID;
