CREATE TABLE IF NOT EXISTS accounts (
    user_id TEXT PRIMARY KEY, username TEXT NOT NULL, email TEXT, phonenum TEXT,
    role TEXT NOT NULL, password_hash TEXT NOT NULL, token_generation INTEGER NOT NULL,
    created_at REAL NOT NULL);

-- Usernames and emails share one namespace: each lowercase login name names one account.
CREATE TABLE IF NOT EXISTS account_logins (
    login_key TEXT PRIMARY KEY, user_id TEXT NOT NULL) WITHOUT ROWID;

CREATE TABLE IF NOT EXISTS refresh_tokens (
    token_id TEXT PRIMARY KEY, user_id TEXT NOT NULL, expires_at REAL NOT NULL);

CREATE TABLE IF NOT EXISTS system_settings (id TEXT PRIMARY KEY, body TEXT NOT NULL);
