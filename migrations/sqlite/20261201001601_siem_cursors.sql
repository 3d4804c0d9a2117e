-- SIEM forwarding: per sink, the last audit seq the sink acknowledged. A side table keyed by
-- the sink's configured name, so a restart or an outage resumes where it stopped.
CREATE TABLE siem_cursors (
    sink TEXT PRIMARY KEY NOT NULL,
    acked_seq INTEGER NOT NULL CHECK (acked_seq >= 0),
    updated_at INTEGER NOT NULL
);
