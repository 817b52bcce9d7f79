CREATE TABLE IF NOT EXISTS skills (
    name TEXT PRIMARY KEY, owner TEXT NOT NULL, description TEXT NOT NULL, package TEXT NOT NULL,
    created_at REAL NOT NULL, updated_at REAL NOT NULL);
CREATE INDEX IF NOT EXISTS skills_owner ON skills (owner);
