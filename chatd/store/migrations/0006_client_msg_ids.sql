-- chatd schema, version 6: client_msg_id is no longer indexed (docs/design.md#storage).
-- The single writer recognises retries from the ids of each open session, which it reads
-- once per session from the database; the index cost every append a write to a random
-- page of it. A closed session takes no messages, so needs no check.
DROP INDEX messages_client_msg_id;
