-- Upload links (`POST /v1/upload-links`, `camledger links`): a camera's uploads without its
-- token, through `POST /v1/u/<secret>`, for a while and a number of images.
-- Only the SHA-256 of the secret is stored; `id` is public (list, revoke) and says nothing
-- about the secret. `used` counts uses reserved before admission, so it can never pass
-- `max_uploads` (the CHECK is the backstop behind the reserving UPDATE's own condition).
CREATE TABLE upload_links (
    id            TEXT    NOT NULL PRIMARY KEY,
    secret_hash   BLOB    NOT NULL UNIQUE CHECK (length(secret_hash) = 32),
    camera        TEXT    NOT NULL,
    created_at    TEXT    NOT NULL,
    created_by    TEXT    NOT NULL,
    -- Unix milliseconds: compared as a number, never as text.
    expires_at_ms INTEGER NOT NULL,
    max_uploads   INTEGER NOT NULL CHECK (max_uploads BETWEEN 1 AND 10000),
    used          INTEGER NOT NULL DEFAULT 0 CHECK (used BETWEEN 0 AND max_uploads),
    revoked_at    TEXT
);
CREATE INDEX upload_links_camera ON upload_links (camera);
