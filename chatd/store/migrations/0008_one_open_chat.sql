-- chatd schema, version 8: one open chat per customer, kept by the database as well as by
-- the desk (docs/design.md#storage).
CREATE UNIQUE INDEX sessions_one_open_per_customer ON sessions (customer_id)
    WHERE state IN ('waiting', 'offered', 'active');
