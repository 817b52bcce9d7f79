CREATE TABLE IF NOT EXISTS llm_providers (
        owner VARCHAR(191) NOT NULL, provider_id VARCHAR(64) NOT NULL, config MEDIUMTEXT NOT NULL,
        sealed_keys MEDIUMTEXT NOT NULL, created_at DOUBLE NOT NULL, updated_at DOUBLE NOT NULL,
        PRIMARY KEY (owner, provider_id)
    ) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin;
