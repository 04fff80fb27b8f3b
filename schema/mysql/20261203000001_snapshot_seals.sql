-- Authentication of snapshots (crates/backup/src/key.rs): HMAC-SHA256 with a key that never
-- lives in this database. `seal` covers the snapshot row (id, parent, manifest, totals) and
-- every artifact row; `mac` covers one chunk (snapshot, artifact, seq, SHA-256 of its bytes).
-- NULL in rows written before this migration: such snapshots are refused by verify and
-- restore (an unauthenticated manifest could carry anything).
ALTER TABLE snapshots ADD COLUMN seal CHAR(64) NULL;
ALTER TABLE snapshot_chunks ADD COLUMN mac CHAR(64) NULL;
