-- The directory of record (issue 17): per owner, the phone numbers, manager and department an
-- operator checks a caller against. Filled only by a sync (CSV or LDAP), never by a caller.
-- `owner` matches tokens.owner without regard to case (UPNs and mail addresses are
-- case-insensitive).
CREATE TABLE directory_entries (
    owner         TEXT NOT NULL PRIMARY KEY COLLATE NOCASE,
    display_name  TEXT,
    -- JSON array of numbers normalised to '+' and digits.
    phones        TEXT NOT NULL DEFAULT '[]',
    manager       TEXT,
    manager_phone TEXT,
    department    TEXT,
    mail          TEXT,
    source        TEXT NOT NULL CHECK (source = 'csv' OR source = 'ldap'),
    synced_at     INTEGER NOT NULL
) STRICT;

-- The last sync of each source: what happened, when, and when it last succeeded. A failed
-- sync writes only here; the entries keep the last good data.
CREATE TABLE directory_syncs (
    source      TEXT NOT NULL PRIMARY KEY CHECK (source = 'csv' OR source = 'ldap'),
    outcome     TEXT NOT NULL CHECK (outcome = 'ok' OR outcome = 'failed'),
    message     TEXT NOT NULL,
    at          INTEGER NOT NULL,
    last_ok_at  INTEGER
) STRICT;
