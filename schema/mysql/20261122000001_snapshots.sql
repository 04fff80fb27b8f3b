-- Snapshots of a camledger data dir (crates/backup). One row per snapshot; a snapshot
-- without a parent is full, otherwise it holds only the objects its parent lacks.
-- All rows of one snapshot are written in a single transaction.
CREATE TABLE snapshots (
    id              BIGINT      NOT NULL AUTO_INCREMENT PRIMARY KEY,
    parent_id       BIGINT      NULL,
    created_at_ms   BIGINT      NOT NULL,
    -- JSON: {"refs": {"refs/heads/events": "<hex>", ...}, "head": "refs/heads/events"}
    manifest        LONGTEXT    NOT NULL,
    objects         BIGINT      NOT NULL,
    raw_bytes       BIGINT      NOT NULL,
    stored_bytes    BIGINT      NOT NULL,
    events_head_seq BIGINT      NULL,
    CONSTRAINT snapshots_parent_fk FOREIGN KEY (parent_id) REFERENCES snapshots (id)
) ENGINE = InnoDB;

-- One row per artifact of a snapshot: 'pack' (git pack of the new objects) and,
-- when the data dir has one, 'state' (a VACUUM INTO copy of camledger.sqlite).
-- Both are zstd-compressed and cut into chunks; raw_* describe the bytes before zstd.
CREATE TABLE snapshot_artifacts (
    snapshot_id   BIGINT      NOT NULL,
    artifact      VARCHAR(16) NOT NULL,
    chunks        INT         NOT NULL,
    objects       BIGINT      NOT NULL,
    raw_bytes     BIGINT      NOT NULL,
    stored_bytes  BIGINT      NOT NULL,
    raw_sha256    CHAR(64)    NOT NULL,
    stored_sha256 CHAR(64)    NOT NULL,
    PRIMARY KEY (snapshot_id, artifact),
    CONSTRAINT snapshot_artifacts_snapshot_fk FOREIGN KEY (snapshot_id)
        REFERENCES snapshots (id) ON DELETE CASCADE
) ENGINE = InnoDB;

-- Chunks stay <= 8 MiB so one row always fits MariaDB's default 16 MiB max_allowed_packet.
CREATE TABLE snapshot_chunks (
    snapshot_id BIGINT      NOT NULL,
    artifact    VARCHAR(16) NOT NULL,
    seq         INT         NOT NULL,
    sha256      CHAR(64)    NOT NULL,
    bytes       LONGBLOB    NOT NULL,
    PRIMARY KEY (snapshot_id, artifact, seq),
    CONSTRAINT snapshot_chunks_snapshot_fk FOREIGN KEY (snapshot_id)
        REFERENCES snapshots (id) ON DELETE CASCADE
) ENGINE = InnoDB;
