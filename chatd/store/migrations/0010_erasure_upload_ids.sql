-- chatd schema, version 10: customer erasure and idempotent uploads
-- (docs/operations.md#erasure-and-export, docs/attachments.md#retrying-an-upload).
-- One line per erasure, holding no personal data: who asked, when, how much went, and a
-- keyed hash of what was asked for (NULL when no erasure key is configured).
CREATE TABLE erasures (
    id           TEXT PRIMARY KEY,
    erased_at    REAL NOT NULL,
    requested_by TEXT NOT NULL,
    via          TEXT NOT NULL CHECK (via IN ('cli', 'http')),
    subject_hash TEXT,
    chats        INTEGER NOT NULL,
    messages     INTEGER NOT NULL,
    files        INTEGER NOT NULL,
    handoffs     INTEGER NOT NULL
);
CREATE INDEX erasures_erased_at ON erasures (erased_at);
-- A guest is a new customer id on every visit: their chats are found by email.
CREATE INDEX sessions_customer_email ON sessions (lower(customer_email));
-- The client's id for an upload, so that a retry finds the file stored the first time.
ALTER TABLE attachments ADD COLUMN upload_id TEXT;
CREATE UNIQUE INDEX attachments_upload_id ON attachments (session_id, upload_id)
    WHERE upload_id IS NOT NULL;
