-- A run paused on tool calls that wait for the session owner's approval.
CREATE TABLE IF NOT EXISTS pending_approvals (
    session_id TEXT PRIMARY KEY, approval_id TEXT NOT NULL, user_id TEXT NOT NULL,
    created_at REAL NOT NULL, expires_at REAL NOT NULL, state TEXT NOT NULL
);
