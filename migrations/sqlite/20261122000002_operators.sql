-- Operators sign in with WebAuthn credentials only; invites bootstrap them.

CREATE TABLE operators (
    id          INTEGER PRIMARY KEY,
    name        TEXT    NOT NULL UNIQUE,
    -- WebAuthn user handle (UUID): comes back from discoverable sign-in
    user_handle TEXT    NOT NULL UNIQUE,
    roles       TEXT    NOT NULL,            -- comma-separated, e.g. "admin,helpdesk"
    disabled    INTEGER NOT NULL DEFAULT 0 CHECK (disabled IN (0, 1)),
    created_at  INTEGER NOT NULL
) STRICT;

CREATE TABLE credentials (
    id            INTEGER PRIMARY KEY,
    operator_id   INTEGER NOT NULL REFERENCES operators (id) ON DELETE CASCADE,
    credential_id BLOB    NOT NULL UNIQUE,
    label         TEXT    NOT NULL,
    passkey       TEXT    NOT NULL,          -- webauthn-rs Passkey as JSON (public key + counter)
    created_at    INTEGER NOT NULL,
    last_used_at  INTEGER
) STRICT;

CREATE INDEX credentials_operator ON credentials (operator_id);

CREATE TABLE invites (
    id          INTEGER PRIMARY KEY,
    token_hash  BLOB    NOT NULL UNIQUE,     -- SHA-256 of the invite token; the token itself is never stored
    name        TEXT    NOT NULL,
    roles       TEXT    NOT NULL,
    created_by  TEXT    NOT NULL,
    created_at  INTEGER NOT NULL,
    expires_at  INTEGER NOT NULL,
    used_at     INTEGER,
    used_by     INTEGER REFERENCES operators (id)
) STRICT;
