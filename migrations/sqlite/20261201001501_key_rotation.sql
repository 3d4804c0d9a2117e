-- Key rotation (issue 15). The data key's generation: 0 for the key made at init, one more at
-- each `seedvault key rotate`; sealed blobs from generation 1 on name theirs in their header.
ALTER TABLE vault_meta ADD COLUMN key_generation INTEGER NOT NULL DEFAULT 0;

-- A rotation under way: the new data key sealed under the current one, so that every process
-- holding the current key (the running server, a resumed or crashed rotation, the next start)
-- can open the seeds already re-sealed. Deleted in the transaction that finishes the rotation,
-- together with the old slots, so the old key then wraps nothing that is stored.
CREATE TABLE key_rotation (
    id          INTEGER PRIMARY KEY CHECK (id = 1),
    generation  INTEGER NOT NULL,
    next_key    BLOB    NOT NULL,
    started_at  INTEGER NOT NULL,
    started_by  TEXT    NOT NULL
) STRICT;
