ALTER TABLE sessions ADD COLUMN log_seq BIGINT NOT NULL DEFAULT 0;

CREATE TABLE IF NOT EXISTS session_summaries (
        session_id VARCHAR(191) PRIMARY KEY, summary MEDIUMTEXT NOT NULL,
        covers_seq BIGINT NOT NULL, created_at DOUBLE NOT NULL
    ) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin;
