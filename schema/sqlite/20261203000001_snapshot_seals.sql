-- Authentication of snapshots; see schema/mysql/20261203000001_snapshot_seals.sql.
ALTER TABLE snapshots ADD COLUMN seal TEXT NULL;
ALTER TABLE snapshot_chunks ADD COLUMN mac TEXT NULL;
