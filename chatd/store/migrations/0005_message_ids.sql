-- chatd schema, version 5: message ids are no longer indexed (docs/design.md#storage).
-- Nothing looks a message up by its id (random UUIDs, unique by construction), and the
-- index cost every append a write to a random page of it. Messages are read by
-- (session_id, seq) and (session_id, client_msg_id), which keep their indexes.
CREATE TABLE messages_v5 (
    id            TEXT NOT NULL,
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
INSERT INTO messages_v5 (id, session_id, seq, ts, sender_role, sender_id, sender_name, kind,
                         body, client_msg_id, attachment, event)
    SELECT id, session_id, seq, ts, sender_role, sender_id, sender_name, kind, body,
           client_msg_id, attachment, event
    FROM messages ORDER BY session_id, seq;
DROP TABLE messages;
ALTER TABLE messages_v5 RENAME TO messages;
CREATE UNIQUE INDEX messages_client_msg_id ON messages (session_id, client_msg_id)
    WHERE client_msg_id IS NOT NULL;
