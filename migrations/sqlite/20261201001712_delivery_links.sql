-- Self-service delivery links (issue 17): the owner confirms delivery by typing the code on
-- the physical token at <origin>/deliver/<TOKEN>. Only the SHA-256 of the link's token is
-- stored; a new link for a token voids the open one.
CREATE TABLE delivery_links (
    id          INTEGER PRIMARY KEY,
    token_id    INTEGER NOT NULL REFERENCES tokens (id),
    link_hash   BLOB    NOT NULL UNIQUE,
    created_by  TEXT    NOT NULL,
    created_at  INTEGER NOT NULL,
    expires_at  INTEGER NOT NULL,
    wrong_codes INTEGER NOT NULL DEFAULT 0,
    -- open; used (delivery confirmed); void (replaced by a newer link); locked (5 wrong codes)
    state       TEXT    NOT NULL DEFAULT 'open'
                CHECK (state = 'open' OR state = 'used' OR state = 'void' OR state = 'locked')
) STRICT;

CREATE INDEX delivery_links_token ON delivery_links (token_id);
