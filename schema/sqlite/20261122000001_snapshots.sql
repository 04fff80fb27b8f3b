-- Snapshots of a camledger data dir (crates/backup); same model as schema/mysql.
CREATE TABLE snapshots (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    parent_id       INTEGER NULL REFERENCES snapshots (id),
    created_at_ms   INTEGER NOT NULL,
    manifest        TEXT    NOT NULL,
    objects         INTEGER NOT NULL,
    raw_bytes       INTEGER NOT NULL,
    stored_bytes    INTEGER NOT NULL,
    events_head_seq INTEGER NULL
);

CREATE TABLE snapshot_artifacts (
    snapshot_id   INTEGER NOT NULL REFERENCES snapshots (id) ON DELETE CASCADE,
    artifact      TEXT    NOT NULL,
    chunks        INTEGER NOT NULL,
    objects       INTEGER NOT NULL,
    raw_bytes     INTEGER NOT NULL,
    stored_bytes  INTEGER NOT NULL,
    raw_sha256    TEXT    NOT NULL,
    stored_sha256 TEXT    NOT NULL,
    PRIMARY KEY (snapshot_id, artifact)
);

CREATE TABLE snapshot_chunks (
    snapshot_id INTEGER NOT NULL REFERENCES snapshots (id) ON DELETE CASCADE,
    artifact    TEXT    NOT NULL,
    seq         INTEGER NOT NULL,
    sha256      TEXT    NOT NULL,
    bytes       BLOB    NOT NULL,
    PRIMARY KEY (snapshot_id, artifact, seq)
);
