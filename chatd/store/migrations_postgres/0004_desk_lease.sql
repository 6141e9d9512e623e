-- The desk's lease (docs/design.md#one-desk-per-database): one row, held by the process
-- that runs the desk until expires_at (the database's clock), renewed by it; term goes up
-- at every change of holder, and every write of the holder checks it (fencing).
CREATE TABLE desk_lease (
    name TEXT PRIMARY KEY,
    holder TEXT NOT NULL,
    term BIGINT NOT NULL,
    acquired_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    expires_at TIMESTAMPTZ NOT NULL
);
