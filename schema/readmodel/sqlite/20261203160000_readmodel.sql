-- The read model: a projection of refs/heads/events and refs/heads/verdicts, rebuilt from
-- git at any time (`camledger reindex`). See docs/design.md, "A read model in SQL".

-- How far the projection got; updated in the same transaction as the rows it covers.
CREATE TABLE rm_state (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    events_seq INTEGER NOT NULL,
    verdicts_seq INTEGER NOT NULL
);
INSERT INTO rm_state (id, events_seq, verdicts_seq) VALUES (1, 0, 0);

-- One row per event; the verdict columns stay NULL until the event is judged.
CREATE TABLE rm_events (
    seq INTEGER PRIMARY KEY,
    commit_id TEXT NOT NULL,
    camera TEXT NOT NULL,
    -- event.json's received_at (RFC 3339 UTC, fixed width: sorts as time) and its UTC day.
    received_at TEXT NOT NULL,
    day TEXT NOT NULL,
    media_type TEXT NOT NULL,
    -- EXIF Make + Model, NULL without either.
    camera_model TEXT,
    -- event.json as stored in git (canonical JSON).
    event_json TEXT NOT NULL,
    spam INTEGER,
    verdict_id TEXT,
    -- verdict.json as stored in git (canonical JSON).
    verdict_json TEXT
);
CREATE INDEX rm_events_camera ON rm_events (camera, seq);
CREATE INDEX rm_events_camera_spam ON rm_events (camera, spam, seq);
CREATE INDEX rm_events_spam ON rm_events (spam, seq);
CREATE INDEX rm_events_media_type ON rm_events (media_type, seq);
CREATE INDEX rm_events_camera_model ON rm_events (camera_model, seq);
CREATE INDEX rm_events_received_at ON rm_events (received_at);

-- Every reason of every verdict (the `reason=` filter).
CREATE TABLE rm_reasons (
    reason TEXT NOT NULL,
    seq INTEGER NOT NULL,
    PRIMARY KEY (reason, seq)
);

-- Counters kept by the projector for stats: uploads and spam per UTC day, camera, media
-- type and camera model ('' for none).
CREATE TABLE rm_counts (
    day TEXT NOT NULL,
    camera TEXT NOT NULL,
    media_type TEXT NOT NULL,
    camera_model TEXT NOT NULL,
    uploads INTEGER NOT NULL,
    spam INTEGER NOT NULL,
    last_seen TEXT NOT NULL,
    PRIMARY KEY (day, camera, media_type, camera_model)
);
CREATE INDEX rm_counts_camera ON rm_counts (camera, day);

-- Reasons of spam verdicts per UTC day and camera.
CREATE TABLE rm_reason_counts (
    day TEXT NOT NULL,
    camera TEXT NOT NULL,
    reason TEXT NOT NULL,
    n INTEGER NOT NULL,
    PRIMARY KEY (day, camera, reason)
);
CREATE INDEX rm_reason_counts_camera ON rm_reason_counts (camera, day);
