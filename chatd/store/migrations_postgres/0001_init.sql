-- chatd schema for PostgreSQL, version 1: the SQLite schema as of its version 7, with
-- every invariant kept by the database (docs/scaling.md#what-the-database-guarantees).
-- Times are seconds since the epoch (UTC) as double precision, exactly as chatd gives them.
CREATE TABLE engineers (
    id            TEXT PRIMARY KEY,
    email         TEXT NOT NULL,
    name          TEXT NOT NULL,
    role          TEXT NOT NULL CHECK (role IN ('engineer', 'lead')),
    password_hash TEXT NOT NULL,
    disabled      BOOLEAN NOT NULL DEFAULT FALSE,
    created_at    DOUBLE PRECISION NOT NULL
);
-- Emails compare without case, as they do in SQLite (COLLATE NOCASE).
CREATE UNIQUE INDEX engineers_email ON engineers (lower(email));

CREATE TABLE engineer_tokens (
    token_hash  TEXT PRIMARY KEY,
    engineer_id TEXT NOT NULL REFERENCES engineers (id),
    created_at  DOUBLE PRECISION NOT NULL,
    expires_at  DOUBLE PRECISION NOT NULL,
    revoked_at  DOUBLE PRECISION
);
CREATE INDEX engineer_tokens_engineer ON engineer_tokens (engineer_id);
CREATE INDEX engineer_tokens_expires ON engineer_tokens (expires_at);

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
    created_at        DOUBLE PRECISION NOT NULL,
    arrival_seq       BIGINT NOT NULL,
    engineer_id       TEXT REFERENCES engineers (id),
    assigned_at       DOUBLE PRECISION,
    first_assigned_at DOUBLE PRECISION,
    ended_at          DOUBLE PRECISION,
    ended_by          TEXT,
    end_reason        TEXT,
    resolution        TEXT,
    ticket            TEXT,
    resume_token_hash TEXT NOT NULL,
    origin            TEXT NOT NULL DEFAULT 'chat',
    request_id        TEXT,
    -- The chat's message counter: the last seq given. Every append locks this row in its
    -- transaction, so seqs are gap-free whichever process appends.
    last_seq          BIGINT NOT NULL DEFAULT 0
);
CREATE INDEX sessions_open ON sessions (state) WHERE state IN ('waiting', 'offered', 'active');
CREATE INDEX sessions_ended_at ON sessions (ended_at);
CREATE INDEX sessions_customer ON sessions (customer_id);
CREATE INDEX sessions_first_assigned_at ON sessions (first_assigned_at);
-- One open chat per customer.
CREATE UNIQUE INDEX sessions_one_open_per_customer ON sessions (customer_id)
    WHERE state IN ('waiting', 'offered', 'active');

CREATE TABLE messages (
    id            TEXT NOT NULL,
    session_id    TEXT NOT NULL REFERENCES sessions (id),
    seq           BIGINT NOT NULL,
    ts            DOUBLE PRECISION NOT NULL,
    sender_role   TEXT NOT NULL,
    sender_id     TEXT,
    sender_name   TEXT NOT NULL,
    kind          TEXT NOT NULL CHECK (kind IN ('text', 'attachment', 'system')),
    body          TEXT NOT NULL,
    client_msg_id TEXT,
    attachment    TEXT,
    event         TEXT,
    PRIMARY KEY (session_id, seq)
);
-- A client's retry is recognised by this constraint, whichever process takes it.
CREATE UNIQUE INDEX messages_client_msg_id ON messages (session_id, client_msg_id)
    WHERE client_msg_id IS NOT NULL;

CREATE TABLE attachments (
    id             TEXT PRIMARY KEY,
    session_id     TEXT NOT NULL REFERENCES sessions (id),
    uploader_role  TEXT NOT NULL CHECK (uploader_role IN ('customer', 'engineer', 'lead')),
    uploader_id    TEXT,
    filename       TEXT NOT NULL,
    content_type   TEXT NOT NULL,
    size           BIGINT NOT NULL CHECK (size >= 0),
    sha256         TEXT NOT NULL,
    stored_name    TEXT NOT NULL UNIQUE,
    thumbnail_name TEXT UNIQUE,
    thumbnail_type TEXT,
    created_at     DOUBLE PRECISION NOT NULL
);
CREATE INDEX attachments_session ON attachments (session_id, created_at);

-- The outbox: one row per ended session and handoff backend, written with the end.
-- A claim is a lease: next_attempt_at is pushed past the attempt, and claims are taken
-- with FOR UPDATE SKIP LOCKED, so two processes never take the same row.
CREATE TABLE handoffs (
    id              TEXT PRIMARY KEY,
    session_id      TEXT NOT NULL REFERENCES sessions (id),
    backend         TEXT NOT NULL,
    state           TEXT NOT NULL DEFAULT 'pending'
                    CHECK (state IN ('pending', 'delivered', 'failed')),
    attempts        INTEGER NOT NULL DEFAULT 0,
    next_attempt_at DOUBLE PRECISION NOT NULL,
    created_at      DOUBLE PRECISION NOT NULL,
    updated_at      DOUBLE PRECISION NOT NULL,
    last_error      TEXT,
    result          TEXT,
    claimed_at      DOUBLE PRECISION,
    last_status     INTEGER,
    last_response   TEXT,
    delivered_at    DOUBLE PRECISION,
    requeued_at     DOUBLE PRECISION,
    ticket          TEXT,
    UNIQUE (session_id, backend)
);
CREATE INDEX handoffs_due ON handoffs (state, next_attempt_at);

CREATE TABLE status_banner (
    id         INTEGER PRIMARY KEY CHECK (id = 1),
    text       TEXT NOT NULL,
    link       TEXT,
    updated_at DOUBLE PRECISION NOT NULL,
    updated_by TEXT
);
