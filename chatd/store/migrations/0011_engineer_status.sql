-- chatd schema, version 11: an engineer's status and capacity are kept across restarts and
-- takeovers (docs/design.md#several-processes): the process that runs the desk next finds
-- them as they were set, and an engineer whose console stays connected stays available.
CREATE TABLE engineer_status (
    engineer_id TEXT PRIMARY KEY,
    status      TEXT NOT NULL CHECK (status IN ('available', 'away')),
    capacity    INTEGER NOT NULL CHECK (capacity >= 1),
    updated_at  REAL NOT NULL
);
