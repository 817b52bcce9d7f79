-- A fibre run's sub-session names the conversation it works for.
ALTER TABLE sessions ADD COLUMN parent_session_id VARCHAR(191) NULL;
