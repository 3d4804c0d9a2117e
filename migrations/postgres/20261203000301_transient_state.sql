-- What several instances on one database must share and SQLite keeps in the one process's
-- memory (issue #20): passkey ceremonies in flight, rate-limit events and sign-in sessions.
-- A schema of its own: this is the instances' working memory, not the vault's records, so it
-- stays out of the schema comparison with SQLite and out of `migrate-to-postgres`'s copy.
CREATE SCHEMA IF NOT EXISTS transient;

-- A ceremony between its start and finish (reveal, approval, sign-in), at most one per key;
-- `state` is the serialised WebAuthn challenge state: deleted when taken or expired. `client`
-- is who started it, for ceremonies anyone can start (sign-in; empty otherwise), so that one
-- client's flood cannot fill the kind's cap.
CREATE TABLE transient.pending_ceremonies (
    kind TEXT NOT NULL,
    key TEXT NOT NULL,
    state BYTEA NOT NULL,
    expires_at BIGINT NOT NULL,
    client TEXT NOT NULL DEFAULT '',
    PRIMARY KEY (kind, key)
);
CREATE INDEX pending_ceremonies_expiry ON transient.pending_ceremonies (kind, expires_at);
CREATE INDEX pending_ceremonies_client ON transient.pending_ceremonies (kind, client, expires_at);

-- One counted event of a sliding-window limit (a failed sign-in, a refused delivery link).
CREATE TABLE transient.rate_events (
    id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    limiter TEXT NOT NULL,
    key TEXT NOT NULL,
    at BIGINT NOT NULL
);
CREATE INDEX rate_events_window ON transient.rate_events (limiter, key, at);
CREATE INDEX rate_events_at ON transient.rate_events (at);

-- tower-sessions-sqlx-store's PostgresStore table, exactly as its own `migrate` creates it;
-- created here because sqlx's migrator holds a lock while two instances start at once, and
-- the store's `migrate` returns early without the table when they race on CREATE SCHEMA.
CREATE TABLE transient.sessions (
    id TEXT PRIMARY KEY NOT NULL,
    data BYTEA NOT NULL,
    expiry_date TIMESTAMPTZ NOT NULL
);
CREATE INDEX sessions_expiry ON transient.sessions (expiry_date);
