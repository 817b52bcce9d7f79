-- A run paused on tool calls that wait for the session owner's approval.
CREATE TABLE IF NOT EXISTS pending_approvals (
        session_id VARCHAR(191) PRIMARY KEY, approval_id VARCHAR(64) NOT NULL,
        user_id VARCHAR(191) NOT NULL, created_at DOUBLE NOT NULL, expires_at DOUBLE NOT NULL,
        state LONGTEXT NOT NULL
    ) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin;
