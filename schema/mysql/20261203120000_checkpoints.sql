-- Signed checkpoints of ledgers (crates/backup/src/anchor.rs): the anchor store. Each row is
-- one C2SP signed note (`note`, the only authoritative column) and its fields copied out for
-- queries; every row read is parsed, its signature checked and compared with these columns.
-- A new row must extend the latest row of the same origin (checked under SELECT … FOR UPDATE).
-- Production keeps this database on another machine than the ledger it anchors.
CREATE TABLE checkpoints (
    id            BIGINT       NOT NULL AUTO_INCREMENT PRIMARY KEY,
    origin        VARCHAR(300) NOT NULL,
    events_seq    BIGINT       NOT NULL,
    events_head   CHAR(40)     NOT NULL,
    verdicts_seq  BIGINT       NOT NULL,
    verdicts_head CHAR(40)     NOT NULL,
    -- RFC 3339 UTC, seconds precision, as in the note.
    time          CHAR(20)     NOT NULL,
    note          TEXT         NOT NULL,
    created_at_ms BIGINT       NOT NULL,
    KEY checkpoints_origin (origin, id)
) ENGINE = InnoDB;
