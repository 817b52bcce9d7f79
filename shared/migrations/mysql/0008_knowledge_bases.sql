CREATE TABLE IF NOT EXISTS knowledge_bases (
        id VARCHAR(64) PRIMARY KEY, owner VARCHAR(191) NOT NULL, name TEXT NOT NULL,
        kind VARCHAR(16) NOT NULL, intro TEXT NOT NULL, language VARCHAR(32) NOT NULL,
        documents MEDIUMTEXT NOT NULL, revision BIGINT NOT NULL, pending BIGINT NOT NULL,
        created_at DOUBLE NOT NULL, updated_at DOUBLE NOT NULL,
        KEY knowledge_bases_owner (owner), KEY knowledge_bases_pending (pending, updated_at)
    ) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin;
