-- chatd schema, version 2: attachments. The bytes live in the upload folder under
-- stored_name (random); filename is the sanitised display name only.
CREATE TABLE attachments (
    id             TEXT PRIMARY KEY,
    session_id     TEXT NOT NULL REFERENCES sessions (id),
    uploader_role  TEXT NOT NULL CHECK (uploader_role IN ('customer', 'engineer', 'lead')),
    uploader_id    TEXT,
    filename       TEXT NOT NULL,
    content_type   TEXT NOT NULL,
    size           INTEGER NOT NULL CHECK (size >= 0),
    sha256         TEXT NOT NULL,
    stored_name    TEXT NOT NULL UNIQUE,
    thumbnail_name TEXT UNIQUE,
    thumbnail_type TEXT,
    created_at     REAL NOT NULL
);
CREATE INDEX attachments_session ON attachments (session_id, created_at);
