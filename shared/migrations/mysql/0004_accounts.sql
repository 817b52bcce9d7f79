CREATE TABLE IF NOT EXISTS accounts (
        user_id VARCHAR(64) PRIMARY KEY, username VARCHAR(191) NOT NULL,
        email VARCHAR(191) NULL, phonenum VARCHAR(64) NULL, role VARCHAR(16) NOT NULL,
        password_hash VARCHAR(255) NOT NULL, token_generation BIGINT NOT NULL,
        created_at DOUBLE NOT NULL
    ) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin;

-- Usernames and emails share one namespace: each lowercase login name names one account.
CREATE TABLE IF NOT EXISTS account_logins (
        login_key VARCHAR(191) PRIMARY KEY, user_id VARCHAR(64) NOT NULL
    ) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin;

CREATE TABLE IF NOT EXISTS refresh_tokens (
        token_id VARCHAR(64) PRIMARY KEY, user_id VARCHAR(64) NOT NULL,
        expires_at DOUBLE NOT NULL
    ) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin;

CREATE TABLE IF NOT EXISTS system_settings (
        id VARCHAR(32) PRIMARY KEY, body TEXT NOT NULL
    ) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin;
