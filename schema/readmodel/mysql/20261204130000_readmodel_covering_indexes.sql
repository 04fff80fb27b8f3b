-- Covering indexes: see the SQLite migration of the same name. An existing read model gets
-- them built here from its rows; no reindex is needed.

ALTER TABLE rm_events
    DROP KEY rm_events_camera,
    ADD KEY rm_events_camera (camera, seq, spam, media_type, camera_model, received_at),
    DROP KEY rm_events_camera_spam,
    ADD KEY rm_events_camera_spam (camera, spam, seq, media_type, camera_model, received_at),
    DROP KEY rm_events_received_at,
    ADD KEY rm_events_time (received_at, day, camera, media_type, camera_model, spam);
ALTER TABLE rm_counts ADD KEY rm_counts_combo (camera, media_type, camera_model, uploads, spam, last_seen);
ALTER TABLE rm_reason_counts ADD KEY rm_reason_counts_reason (reason, n);
ALTER TABLE rm_reasons ADD KEY rm_reasons_seq (seq, reason);
