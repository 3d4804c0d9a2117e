-- The same constraints on `tokens`, written so that SQLite can check them cheaply.
--
-- SQLite evaluates a CHECK of the form `x IN ('a', 'b', 'c')` (three or more constants) by
-- building a temporary b-tree of the list, and inside a CHECK it builds it again for every row
-- written: that was a quarter of the CPU time of a 100,000-token import. `x = 'a' OR x = 'b' OR
-- …` accepts exactly the same values and needs no b-tree. `digits IN (6, 8)` (two constants)
-- is compiled to plain comparisons already and stays as it is.
--
-- SQLite cannot alter a CHECK in place, so `tokens` is rebuilt. Its two child tables are
-- rebuilt with it: with foreign keys enforced (they are, and sqlx runs each migration inside
-- a transaction, where `PRAGMA foreign_keys` cannot be switched off) dropping a parent table
-- that still has children fails. The new children reference `tokens_new`; renaming it to
-- `tokens` rewrites those references. Rows, ids and indexes are copied unchanged.

CREATE TABLE tokens_new (
    id                 INTEGER PRIMARY KEY,
    token_id           TEXT    NOT NULL UNIQUE,  -- random id bound into the sealed seed's associated data
    serial             TEXT    NOT NULL UNIQUE,
    owner              TEXT,
    display_name       TEXT,
    manufacturer       TEXT,
    model              TEXT,
    algorithm          TEXT    NOT NULL CHECK (algorithm = 'SHA1' OR algorithm = 'SHA256' OR algorithm = 'SHA512'),
    digits             INTEGER NOT NULL CHECK (digits IN (6, 8)),
    period             INTEGER NOT NULL CHECK (period BETWEEN 1 AND 3600),
    t0                 INTEGER NOT NULL DEFAULT 0,
    drift_steps        INTEGER NOT NULL DEFAULT 0,
    policy             TEXT    NOT NULL,
    state              TEXT    NOT NULL CHECK (state = 'escrowed' OR state = 'delivered' OR state = 'cancelled' OR state = 'expired' OR state = 'purged'),
    sealed_seed        BLOB,
    captured_by        TEXT    NOT NULL,
    captured_at        INTEGER NOT NULL,
    retention_deadline INTEGER NOT NULL,
    delivered_at       INTEGER,
    delivered_by       TEXT,
    purged_at          INTEGER,
    purge_reason       TEXT,
    -- a seed exists exactly while the token is escrowed
    CHECK ((state = 'escrowed') = (sealed_seed IS NOT NULL))
) STRICT;

INSERT INTO tokens_new (id, token_id, serial, owner, display_name, manufacturer, model, algorithm, digits, period,
                        t0, drift_steps, policy, state, sealed_seed, captured_by, captured_at, retention_deadline,
                        delivered_at, delivered_by, purged_at, purge_reason)
SELECT id, token_id, serial, owner, display_name, manufacturer, model, algorithm, digits, period,
       t0, drift_steps, policy, state, sealed_seed, captured_by, captured_at, retention_deadline,
       delivered_at, delivered_by, purged_at, purge_reason
FROM tokens;

CREATE TABLE reveals_new (
    id          INTEGER PRIMARY KEY,
    token_id    INTEGER NOT NULL REFERENCES tokens_new (id),
    operator_id INTEGER NOT NULL REFERENCES operators (id),
    at          INTEGER NOT NULL
) STRICT;

INSERT INTO reveals_new (id, token_id, operator_id, at)
SELECT id, token_id, operator_id, at FROM reveals;

CREATE TABLE delivery_attempts_new (
    id          INTEGER PRIMARY KEY,
    token_id    INTEGER NOT NULL REFERENCES tokens_new (id),
    at          INTEGER NOT NULL
) STRICT;

INSERT INTO delivery_attempts_new (id, token_id, at)
SELECT id, token_id, at FROM delivery_attempts;

-- Children first, so that dropping `tokens` leaves no row pointing at it.
DROP TABLE delivery_attempts;
DROP TABLE reveals;
DROP TABLE tokens;

ALTER TABLE tokens_new RENAME TO tokens;
ALTER TABLE reveals_new RENAME TO reveals;
ALTER TABLE delivery_attempts_new RENAME TO delivery_attempts;

CREATE INDEX tokens_state_deadline ON tokens (state, retention_deadline);
CREATE INDEX tokens_owner ON tokens (owner);
CREATE INDEX reveals_token_at ON reveals (token_id, at);
CREATE INDEX reveals_operator_at ON reveals (operator_id, at);
CREATE INDEX delivery_attempts_token_at ON delivery_attempts (token_id, at);
