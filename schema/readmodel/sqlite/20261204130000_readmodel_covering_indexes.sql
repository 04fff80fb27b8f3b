-- Covering indexes (docs/design.md, "A read model in SQL", "Measured at a million
-- events"). Event rows are wide (about 1.3 kB of JSON each): a search now finds the seqs of
-- its page from one index holding every filter column and reads only those rows; the
-- whole-ledger stats group the counters by (camera, format, model) and the reasons by reason
-- from an index; stats over a time range read their columns from the time index.
-- An existing read model gets the indexes built here from its rows (about 10 s per million
-- events); no reindex is needed.

DROP INDEX rm_events_camera;
CREATE INDEX rm_events_camera ON rm_events (camera, seq, spam, media_type, camera_model, received_at);
DROP INDEX rm_events_camera_spam;
CREATE INDEX rm_events_camera_spam ON rm_events (camera, spam, seq, media_type, camera_model, received_at);
-- Replaces rm_events_received_at (its prefix).
DROP INDEX rm_events_received_at;
CREATE INDEX rm_events_time ON rm_events (received_at, day, camera, media_type, camera_model, spam);
CREATE INDEX rm_counts_combo ON rm_counts (camera, media_type, camera_model, uploads, spam, last_seen);
CREATE INDEX rm_reason_counts_reason ON rm_reason_counts (reason, n);
-- The reasons of an event (stats over a time range).
CREATE INDEX rm_reasons_seq ON rm_reasons (seq, reason);
