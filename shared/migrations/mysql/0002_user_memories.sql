CREATE TABLE IF NOT EXISTS user_memories (
        user_id VARCHAR(191) NOT NULL, memory_key VARCHAR(64) NOT NULL, content TEXT NOT NULL,
        memory_type VARCHAR(32) NOT NULL, tags TEXT NOT NULL, created_at DOUBLE NOT NULL,
        updated_at DOUBLE NOT NULL, PRIMARY KEY (user_id, memory_key)
    ) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin;
