-- When the sweep (the `runs` job) looks at a paused run: an approval at its expiry, a running
-- run's checkpoint one lease after it was saved.
ALTER TABLE pending_approvals ADD COLUMN due_at REAL NOT NULL DEFAULT 0;
UPDATE pending_approvals SET due_at = expires_at;
CREATE INDEX IF NOT EXISTS pending_approvals_due ON pending_approvals (due_at);
