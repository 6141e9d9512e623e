-- chatd schema, version 1. Times are seconds since the epoch (UTC) as REAL.
CREATE TABLE engineers (
    id            TEXT PRIMARY KEY,
    email         TEXT NOT NULL UNIQUE COLLATE NOCASE,
    name          TEXT NOT NULL,
    role          TEXT NOT NULL CHECK (role IN ('engineer', 'lead')),
    password_hash TEXT NOT NULL,
    disabled      INTEGER NOT NULL DEFAULT 0,
    created_at    REAL NOT NULL
);

CREATE TABLE engineer_tokens (
    token_hash  TEXT PRIMARY KEY,
    engineer_id TEXT NOT NULL REFERENCES engineers (id),
    created_at  REAL NOT NULL,
    expires_at  REAL NOT NULL,
    revoked_at  REAL
);
CREATE INDEX engineer_tokens_engineer ON engineer_tokens (engineer_id);

CREATE TABLE sessions (
    id                TEXT PRIMARY KEY,
    state             TEXT NOT NULL
                      CHECK (state IN ('waiting', 'offered', 'active', 'ended', 'abandoned')),
    topic             TEXT NOT NULL,
    severity          INTEGER NOT NULL CHECK (severity BETWEEN 1 AND 4),
    customer_id       TEXT NOT NULL,
    customer_name     TEXT NOT NULL,
    customer_email    TEXT NOT NULL,
    customer_account  TEXT NOT NULL,
    customer_tier     TEXT NOT NULL,
    created_at        REAL NOT NULL,
    arrival_seq       INTEGER NOT NULL,
    engineer_id       TEXT REFERENCES engineers (id),
    assigned_at       REAL,
    first_assigned_at REAL,
    ended_at          REAL,
    ended_by          TEXT,
    end_reason        TEXT,
    resolution        TEXT,
    ticket            TEXT,
    resume_token_hash TEXT NOT NULL
);
CREATE INDEX sessions_open ON sessions (state) WHERE state IN ('waiting', 'offered', 'active');
CREATE INDEX sessions_ended_at ON sessions (ended_at);
CREATE INDEX sessions_customer ON sessions (customer_id);

CREATE TABLE messages (
    id            TEXT PRIMARY KEY,
    session_id    TEXT NOT NULL REFERENCES sessions (id),
    seq           INTEGER NOT NULL,
    ts            REAL NOT NULL,
    sender_role   TEXT NOT NULL,
    sender_id     TEXT,
    sender_name   TEXT NOT NULL,
    kind          TEXT NOT NULL CHECK (kind IN ('text', 'attachment', 'system')),
    body          TEXT NOT NULL,
    client_msg_id TEXT,
    attachment    TEXT,
    event         TEXT,
    UNIQUE (session_id, seq)
);
CREATE UNIQUE INDEX messages_client_msg_id ON messages (session_id, client_msg_id)
    WHERE client_msg_id IS NOT NULL;

-- The outbox: one row per ended session and handoff backend, written with the end.
CREATE TABLE handoffs (
    id              TEXT PRIMARY KEY,
    session_id      TEXT NOT NULL REFERENCES sessions (id),
    backend         TEXT NOT NULL,
    state           TEXT NOT NULL DEFAULT 'pending'
                    CHECK (state IN ('pending', 'delivered', 'failed')),
    attempts        INTEGER NOT NULL DEFAULT 0,
    next_attempt_at REAL NOT NULL,
    created_at      REAL NOT NULL,
    updated_at      REAL NOT NULL,
    last_error      TEXT,
    result          TEXT,
    UNIQUE (session_id, backend)
);
CREATE INDEX handoffs_due ON handoffs (state, next_attempt_at);
