-- chatd schema, version 3: handoff delivery bookkeeping (docs/handoff.md).
-- claimed_at is set while an attempt is in flight: a row still claimed when the process
-- starts was interrupted (kill -9) and is retried at once, with the same id as its key.
ALTER TABLE handoffs ADD COLUMN claimed_at REAL;
ALTER TABLE handoffs ADD COLUMN last_status INTEGER;
ALTER TABLE handoffs ADD COLUMN last_response TEXT;
ALTER TABLE handoffs ADD COLUMN delivered_at REAL;
-- A manual retry restarts the dead-letter horizon from here instead of created_at.
ALTER TABLE handoffs ADD COLUMN requeued_at REAL;
ALTER TABLE handoffs ADD COLUMN ticket TEXT;
-- 'chat' for a live chat, 'offline' for a ticket left with POST /api/tickets (never queued).
ALTER TABLE sessions ADD COLUMN origin TEXT NOT NULL DEFAULT 'chat';
