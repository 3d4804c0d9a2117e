-- Notices to token owners (issue 17): written in the same transaction as the action they tell
-- of (reveal grant, delivery, cancellation, purge, a delivery link), sent afterwards by the
-- server's sender task. A row keeps the facts, not the rendered text, so template edits apply
-- to pending notices; it never holds a code or a seed.
CREATE TABLE outbox (
    id              INTEGER PRIMARY KEY,
    -- reveal, delivered, cancelled, expired, delivery-link
    kind            TEXT    NOT NULL,
    serial          TEXT    NOT NULL,
    owner           TEXT    NOT NULL,
    notify_manager  INTEGER NOT NULL DEFAULT 0 CHECK (notify_manager = 0 OR notify_manager = 1),
    -- JSON: operator, time, ticket, ... (a delivery link's URL until it is sent, then removed)
    facts           TEXT    NOT NULL,
    created_at      INTEGER NOT NULL,
    -- pending: to send; sent; failed: refused for good or out of attempts; unsent: never
    -- tried (no SMTP configured, no address known)
    state           TEXT    NOT NULL DEFAULT 'pending'
                    CHECK (state = 'pending' OR state = 'sent' OR state = 'failed' OR state = 'unsent'),
    attempts        INTEGER NOT NULL DEFAULT 0,
    next_attempt_at INTEGER NOT NULL,
    last_error      TEXT,
    recipients      TEXT,
    sent_at         INTEGER
) STRICT;

CREATE INDEX outbox_due ON outbox (next_attempt_at) WHERE state = 'pending';
