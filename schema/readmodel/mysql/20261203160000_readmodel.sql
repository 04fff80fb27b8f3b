-- The read model: a projection of refs/heads/events and refs/heads/verdicts, rebuilt from
-- git at any time (`camledger reindex`). See docs/design.md, "A read model in SQL".
-- Binary collation: filters compare exactly, as on SQLite.

CREATE TABLE rm_state (
    id INT NOT NULL PRIMARY KEY,
    events_seq BIGINT NOT NULL,
    verdicts_seq BIGINT NOT NULL
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;
INSERT INTO rm_state (id, events_seq, verdicts_seq) VALUES (1, 0, 0);

CREATE TABLE rm_events (
    seq BIGINT NOT NULL PRIMARY KEY,
    commit_id CHAR(40) NOT NULL,
    camera VARCHAR(64) NOT NULL,
    received_at CHAR(27) NOT NULL,
    day CHAR(10) NOT NULL,
    media_type VARCHAR(32) NOT NULL,
    camera_model VARCHAR(255) NULL,
    event_json MEDIUMTEXT NOT NULL,
    spam TINYINT NULL,
    verdict_id CHAR(40) NULL,
    verdict_json MEDIUMTEXT NULL,
    KEY rm_events_camera (camera, seq),
    KEY rm_events_camera_spam (camera, spam, seq),
    KEY rm_events_spam (spam, seq),
    KEY rm_events_media_type (media_type, seq),
    KEY rm_events_camera_model (camera_model, seq),
    KEY rm_events_received_at (received_at)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;

CREATE TABLE rm_reasons (
    reason VARCHAR(32) NOT NULL,
    seq BIGINT NOT NULL,
    PRIMARY KEY (reason, seq)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;

CREATE TABLE rm_counts (
    day CHAR(10) NOT NULL,
    camera VARCHAR(64) NOT NULL,
    media_type VARCHAR(32) NOT NULL,
    camera_model VARCHAR(255) NOT NULL,
    uploads BIGINT NOT NULL,
    spam BIGINT NOT NULL,
    last_seen CHAR(27) NOT NULL,
    PRIMARY KEY (day, camera, media_type, camera_model),
    KEY rm_counts_camera (camera, day)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;

CREATE TABLE rm_reason_counts (
    day CHAR(10) NOT NULL,
    camera VARCHAR(64) NOT NULL,
    reason VARCHAR(32) NOT NULL,
    n BIGINT NOT NULL,
    PRIMARY KEY (day, camera, reason),
    KEY rm_reason_counts_camera (camera, day)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;
