CREATE TABLE IF NOT EXISTS knowledge_bases (
    id TEXT PRIMARY KEY, owner TEXT NOT NULL, name TEXT NOT NULL, kind TEXT NOT NULL,
    intro TEXT NOT NULL, language TEXT NOT NULL, documents TEXT NOT NULL,
    revision INTEGER NOT NULL, pending INTEGER NOT NULL,
    created_at REAL NOT NULL, updated_at REAL NOT NULL);
CREATE INDEX IF NOT EXISTS knowledge_bases_owner ON knowledge_bases (owner);
CREATE INDEX IF NOT EXISTS knowledge_bases_pending ON knowledge_bases (pending, updated_at);
