-- The `programming` state (issue #19): a token whose seed seedvault generated and showed once,
-- waiting for a code from the device it was programmed into; it holds a sealed seed like an
-- escrowed token, so the seed-exists CHECK admits both states.
--
-- SQLite cannot alter a CHECK in place, so `tokens` is rebuilt exactly as migration
-- 20261130000001 did it (same columns, `=`/`OR` CHECKs, children `reveals` and
-- `delivery_attempts` rebuilt with it so that foreign keys stay enforced throughout); rows,
-- ids and indexes are copied unchanged.

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
    state              TEXT    NOT NULL CHECK (state = 'programming' OR state = 'escrowed' OR state = 'delivered' OR state = 'cancelled' OR state = 'expired' OR state = 'purged'),
    sealed_seed        BLOB,
    captured_by        TEXT    NOT NULL,
    captured_at        INTEGER NOT NULL,
    retention_deadline INTEGER NOT NULL,
    delivered_at       INTEGER,
    delivered_by       TEXT,
    purged_at          INTEGER,
    purge_reason       TEXT,
    -- a seed exists exactly while the token is being programmed or is escrowed
    CHECK ((state = 'escrowed' OR state = 'programming') = (sealed_seed IS NOT NULL))
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

-- Whether a generated seed was shown yet (it is shown once: in the API's reply, or on the first
-- visit of its page by the operator who generated it), and by whom it was generated.
CREATE TABLE token_programming (
    token_id     INTEGER PRIMARY KEY REFERENCES tokens (id),
    generated_by TEXT    NOT NULL,
    shown_at     INTEGER
) STRICT;
