-- chatd schema, version 4: monitoring (docs/monitoring.md).
-- The status banner a lead posts for every widget; one row at most, kept across restarts.
CREATE TABLE status_banner (
    id         INTEGER PRIMARY KEY CHECK (id = 1),
    text       TEXT NOT NULL,
    link       TEXT,
    updated_at REAL NOT NULL,
    updated_by TEXT
);
-- The service level reads the sessions answered in a rolling window.
CREATE INDEX sessions_first_assigned_at ON sessions (first_assigned_at);
