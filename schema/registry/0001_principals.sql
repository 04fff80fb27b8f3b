-- The camera registry and reader tokens of one data dir (<data-dir>/camledger.sqlite).
-- Tokens are stored only as SHA-256 hashes; the plaintext is shown once, when created.
CREATE TABLE principals (
    role        TEXT    NOT NULL CHECK (role IN ('camera', 'auditor', 'admin')),
    name        TEXT    NOT NULL,
    token_hash  BLOB    NOT NULL UNIQUE CHECK (length(token_hash) = 32),
    created_at  TEXT    NOT NULL,
    revoked_at  TEXT,
    PRIMARY KEY (role, name)
);
