-- Four-eyes reveals (policy `[approval] second_operator = true`): one row per request a
-- requester makes and a second operator decides. `binding` is the SHA-256 of what was approved
-- (token, owner, requester, checks, ticket, note, policy and its content hash): a reveal whose
-- own binding differs voids the approval instead of using it.
CREATE TABLE approvals (
    id           INTEGER PRIMARY KEY,
    token_id     INTEGER NOT NULL REFERENCES tokens (id),
    requester_id INTEGER NOT NULL REFERENCES operators (id),
    policy       TEXT NOT NULL,
    policy_hash  TEXT NOT NULL,
    checks       TEXT NOT NULL,      -- JSON array of the check ids the requester ticked
    ticket       TEXT,
    note         TEXT,
    binding      TEXT NOT NULL,
    status       TEXT NOT NULL CHECK (status = 'pending' OR status = 'approved' OR status = 'denied'
                                      OR status = 'used' OR status = 'expired' OR status = 'void'),
    created_at   INTEGER NOT NULL,
    -- A pending request waits until then for a decision; an approved one is usable until then.
    expires_at   INTEGER NOT NULL,
    decided_by   INTEGER REFERENCES operators (id),
    decision     TEXT CHECK (decision IS NULL OR decision = 'approved' OR decision = 'denied'),
    decided_at   INTEGER,
    reason       TEXT,
    used_at      INTEGER
) STRICT;

-- The pending list, the header's count and the sweeper read pending rows by expiry.
CREATE INDEX approvals_status_expires ON approvals (status, expires_at);
-- An approver's approvals within the operator window (their limit).
CREATE INDEX approvals_decided_by_at ON approvals (decided_by, decided_at);
