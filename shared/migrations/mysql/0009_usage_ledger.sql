-- One row per run's token_usage event, written in the same transaction as that event.
CREATE TABLE IF NOT EXISTS usage_ledger (
        session_id VARCHAR(191) NOT NULL, seq BIGINT NOT NULL, user_id VARCHAR(191) NOT NULL,
        run_id VARCHAR(64) NOT NULL, day CHAR(10) NOT NULL, model VARCHAR(191) NOT NULL,
        calls INT NOT NULL, prompt_tokens BIGINT NOT NULL, completion_tokens BIGINT NOT NULL,
        total_tokens BIGINT NOT NULL, cost DOUBLE NULL, recorded_at DOUBLE NOT NULL,
        PRIMARY KEY (session_id, seq),
        INDEX usage_ledger_by_user_day (user_id, day),
        INDEX usage_ledger_by_day (day)
    ) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin;
