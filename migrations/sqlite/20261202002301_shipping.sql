-- Shipping (issue #23): a token verified against its physical device before it leaves, and its
-- journey in the post. Plain added columns (no rebuild of `tokens`): all are nullable facts
-- about an escrowed token, kept after the purge as part of its history.
ALTER TABLE tokens ADD COLUMN verified_at INTEGER;
ALTER TABLE tokens ADD COLUMN verified_by TEXT;
ALTER TABLE tokens ADD COLUMN shipped_at INTEGER;
ALTER TABLE tokens ADD COLUMN shipped_by TEXT;
ALTER TABLE tokens ADD COLUMN carrier TEXT;
ALTER TABLE tokens ADD COLUMN tracking TEXT;
-- The expected delivery date, `YYYY-MM-DD` (a calendar date, so it compares as text).
ALTER TABLE tokens ADD COLUMN expected TEXT;

-- Tokens in the post, for the dashboard's and `status`'s in-transit figures.
CREATE INDEX tokens_in_transit ON tokens (expected) WHERE shipped_at IS NOT NULL AND state = 'escrowed';
