-- Chunked bulk imports (issue #27, "fast while busy"): an import's rows go into `tokens` in
-- many short write transactions, tagged with their import, so that reveals can commit in
-- between. Until the import's own row here says it committed, every read of `tokens` treats
-- its rows as absent (`store::tokens::VISIBLE`); committing is one O(1) update of this row with
-- the import's audit event. An import whose process died or gave up is deleted at start.
CREATE TABLE imports (
    id           INTEGER PRIMARY KEY,
    actor        TEXT    NOT NULL,
    file         TEXT    NOT NULL,
    started_at   INTEGER NOT NULL,
    -- the importing process (pid and its start time in clock ticks since boot, from
    -- /proc/<pid>/stat), so another process can tell that it is gone
    pid          INTEGER NOT NULL,
    pid_start    INTEGER NOT NULL,
    -- written with every chunk; an import silent for long is abandoned even if a process
    -- with its pid lives
    heartbeat_at INTEGER NOT NULL,
    committed_at INTEGER
);

-- NULL for every token not bulk imported (and those imported before this migration). No
-- foreign key: abandoned rows are deleted before their import, and a key would make each
-- import's delete scan `tokens`.
ALTER TABLE tokens ADD COLUMN import_id INTEGER;
CREATE INDEX tokens_import ON tokens (import_id) WHERE import_id IS NOT NULL;
-- The uncommitted imports, which every read of `tokens` looks up.
CREATE INDEX imports_uncommitted ON imports (id) WHERE committed_at IS NULL;
