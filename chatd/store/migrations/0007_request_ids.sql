-- chatd schema, version 7: the customer's id for the chat:request that opened a session,
-- so that a retried request (its answer lost) finds the session (docs/protocol.md).
ALTER TABLE sessions ADD COLUMN request_id TEXT;
