-- One row per granted reveal: the rate limits count these (the audit trail records the rest).
CREATE TABLE reveals (
    id          INTEGER PRIMARY KEY,
    token_id    INTEGER NOT NULL REFERENCES tokens (id),
    operator_id INTEGER NOT NULL REFERENCES operators (id),
    at          INTEGER NOT NULL
) STRICT;

CREATE INDEX reveals_token_at ON reveals (token_id, at);
CREATE INDEX reveals_operator_at ON reveals (operator_id, at);

-- Wrong codes entered at delivery, for the brute-force limit.
CREATE TABLE delivery_attempts (
    id          INTEGER PRIMARY KEY,
    token_id    INTEGER NOT NULL REFERENCES tokens (id),
    at          INTEGER NOT NULL
) STRICT;

CREATE INDEX delivery_attempts_token_at ON delivery_attempts (token_id, at);
