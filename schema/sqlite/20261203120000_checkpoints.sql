-- Signed checkpoints (the anchor store); see schema/mysql/20261203120000_checkpoints.sql.
CREATE TABLE checkpoints (
    id            INTEGER NOT NULL PRIMARY KEY AUTOINCREMENT,
    origin        TEXT    NOT NULL,
    events_seq    INTEGER NOT NULL,
    events_head   TEXT    NOT NULL,
    verdicts_seq  INTEGER NOT NULL,
    verdicts_head TEXT    NOT NULL,
    time          TEXT    NOT NULL,
    note          TEXT    NOT NULL,
    created_at_ms INTEGER NOT NULL
);
CREATE INDEX checkpoints_origin ON checkpoints (origin, id);
