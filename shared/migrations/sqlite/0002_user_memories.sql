CREATE TABLE IF NOT EXISTS user_memories (
    user_id TEXT NOT NULL, memory_key TEXT NOT NULL, content TEXT NOT NULL,
    memory_type TEXT NOT NULL, tags TEXT NOT NULL, created_at REAL NOT NULL,
    updated_at REAL NOT NULL, PRIMARY KEY (user_id, memory_key)) WITHOUT ROWID;
