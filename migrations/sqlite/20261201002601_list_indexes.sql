-- Screens at volume (issue #26): every order and every search of the token list and every
-- filter of the audit page walks an index, so a page costs the same at 1,000,000 tokens and
-- 10,000,000 events as at a hundred (store::token_pages, store::audit::page).

-- Token list orders (`store::token_pages::TokenSort::key`, declared identically).
CREATE INDEX tokens_captured ON tokens (captured_at);
CREATE INDEX tokens_owner_nocase ON tokens (ifnull(owner, '') COLLATE NOCASE);
CREATE INDEX tokens_state ON tokens (state);
-- The counts per state and policy above the list: read from this index alone.
CREATE INDEX tokens_state_policy ON tokens (state, policy);
CREATE INDEX tokens_deadline ON tokens (retention_deadline);
-- Token search: the start of a serial or a display name (the owner uses tokens_owner_nocase).
CREATE INDEX tokens_serial_nocase ON tokens (serial COLLATE NOCASE);
CREATE INDEX tokens_display_name_nocase ON tokens (ifnull(display_name, '') COLLATE NOCASE);

-- Audit page filters, newest first within each (the seq is the rowid every index ends with).
CREATE INDEX audit_events_actor ON audit_events (actor);
CREATE INDEX audit_events_action ON audit_events (action);
CREATE INDEX audit_events_outcome ON audit_events (outcome);
