CREATE TABLE IF NOT EXISTS agents (
        agent_id VARCHAR(64) PRIMARY KEY, owner VARCHAR(191) NOT NULL, name VARCHAR(191) NOT NULL,
        config MEDIUMTEXT NOT NULL, created_at DOUBLE NOT NULL, updated_at DOUBLE NOT NULL,
        UNIQUE KEY agents_owner_name (owner, name)
    ) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin;
