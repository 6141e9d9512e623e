-- chatd schema, version 9: read receipts are stored (docs/protocol.md#read-marks).
-- How far each side of a chat has read: the highest seq its `message:read` named. A row of
-- its own, not a column of sessions, so that a read mark never waits for a message's
-- write of the chat's row. Only ever raised: a lower seq does not move it back.
CREATE TABLE read_marks (
    session_id TEXT NOT NULL REFERENCES sessions (id) ON DELETE CASCADE,
    role       TEXT NOT NULL CHECK (role IN ('customer', 'engineer')),
    seq        INTEGER NOT NULL CHECK (seq >= 1),
    PRIMARY KEY (session_id, role)
) WITHOUT ROWID;
