-- The first schema: sessions, their event logs, run locks, MCP servers, idempotency keys.
CREATE TABLE IF NOT EXISTS sessions (
        session_id VARCHAR(191) PRIMARY KEY, user_id VARCHAR(191) NOT NULL,
        agent_id VARCHAR(191), agent_name VARCHAR(255), title VARCHAR(255) NOT NULL,
        created_at DOUBLE NOT NULL, updated_at DOUBLE NOT NULL,
        message_count BIGINT NOT NULL DEFAULT 0, user_count BIGINT NOT NULL DEFAULT 0,
        agent_count BIGINT NOT NULL DEFAULT 0, search_text MEDIUMTEXT NOT NULL,
        status VARCHAR(16) NOT NULL DEFAULT 'idle',
        INDEX sessions_by_user (user_id, updated_at)
    ) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin;

CREATE TABLE IF NOT EXISTS events (
        session_id VARCHAR(191) NOT NULL, seq BIGINT NOT NULL, body MEDIUMTEXT NOT NULL,
        PRIMARY KEY (session_id, seq)
    ) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin;

CREATE TABLE IF NOT EXISTS run_locks (
        session_id VARCHAR(191) PRIMARY KEY, run_id VARCHAR(64) NOT NULL,
        expires_at DOUBLE NOT NULL, cancel_requested BIGINT NOT NULL DEFAULT 0
    ) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin;

CREATE TABLE IF NOT EXISTS mcp_servers (
        owner VARCHAR(191) NOT NULL, name VARCHAR(64) NOT NULL, config MEDIUMTEXT NOT NULL,
        tools MEDIUMTEXT NOT NULL, last_error TEXT, updated_at DOUBLE NOT NULL,
        PRIMARY KEY (owner, name)
    ) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin;

CREATE TABLE IF NOT EXISTS idempotency_keys (
        idem_key VARCHAR(191) PRIMARY KEY, request_hash VARCHAR(64) NOT NULL,
        session_id VARCHAR(191) NOT NULL, first_seq BIGINT, created_at DOUBLE NOT NULL
    ) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin;
