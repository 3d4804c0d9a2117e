-- Foundation schema: vault metadata, key slots, tokens, append-only audit trail.
-- Times are unix seconds (INTEGER) except audit_events.time, which is the RFC 3339 text that
-- the event hash covers.

CREATE TABLE vault_meta (
    id                 INTEGER PRIMARY KEY CHECK (id = 1),
    vault_id           TEXT    NOT NULL,
    created_at         INTEGER NOT NULL,
    -- a known value sealed under the data key: tells a wrong key from a corrupt vault
    key_check          BLOB    NOT NULL,
    -- Ed25519 audit signing key, sealed under the data key; its public half in clear
    audit_signing_key  BLOB    NOT NULL,
    audit_public_key   BLOB    NOT NULL
) STRICT;

CREATE TABLE key_slots (
    id                   INTEGER PRIMARY KEY,
    kind                 TEXT    NOT NULL CHECK (kind IN ('development', 'passphrase', 'identity', 'recipient')),
    label                TEXT    NOT NULL UNIQUE,
    recipient            TEXT,
    wrapped_key          BLOB    NOT NULL,
    -- only development slots: their deliberately unprotected age identity
    development_identity TEXT CHECK ((kind = 'development') = (development_identity IS NOT NULL)),
    created_at           INTEGER NOT NULL
) STRICT;

CREATE TABLE tokens (
    id                 INTEGER PRIMARY KEY,
    token_id           TEXT    NOT NULL UNIQUE,  -- random id bound into the sealed seed's associated data
    serial             TEXT    NOT NULL UNIQUE,
    owner              TEXT,
    display_name       TEXT,
    manufacturer       TEXT,
    model              TEXT,
    algorithm          TEXT    NOT NULL CHECK (algorithm IN ('SHA1', 'SHA256', 'SHA512')),
    digits             INTEGER NOT NULL CHECK (digits IN (6, 8)),
    period             INTEGER NOT NULL CHECK (period BETWEEN 1 AND 3600),
    t0                 INTEGER NOT NULL DEFAULT 0,
    drift_steps        INTEGER NOT NULL DEFAULT 0,
    policy             TEXT    NOT NULL,
    state              TEXT    NOT NULL CHECK (state IN ('escrowed', 'delivered', 'cancelled', 'expired', 'purged')),
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

CREATE INDEX tokens_state_deadline ON tokens (state, retention_deadline);
CREATE INDEX tokens_owner ON tokens (owner);

CREATE TABLE audit_events (
    seq       INTEGER PRIMARY KEY,
    time      TEXT NOT NULL,
    actor     TEXT NOT NULL,
    action    TEXT NOT NULL,
    target    TEXT NOT NULL,
    outcome   TEXT NOT NULL,
    details   TEXT NOT NULL,
    prev_hash BLOB NOT NULL,
    hash      BLOB NOT NULL,
    sig       BLOB NOT NULL
) STRICT;

CREATE INDEX audit_events_target ON audit_events (target);

CREATE TRIGGER audit_events_no_update BEFORE UPDATE ON audit_events
BEGIN
    SELECT RAISE(ABORT, 'audit_events is append-only');
END;

CREATE TRIGGER audit_events_no_delete BEFORE DELETE ON audit_events
BEGIN
    SELECT RAISE(ABORT, 'audit_events is append-only');
END;
