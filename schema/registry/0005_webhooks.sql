-- `camledger webhooks add URL --events event,verdict`: where `serve` POSTs each new event and
-- verdict, signed with the hook's secret, in seq order per hook. `events_seq` and
-- `verdicts_seq` are the hook's checkpoints: the last seq of each kind the receiver answered
-- 2xx to (delivery resumes after them, also after a restart). The secret is kept as given: the
-- server needs it to sign; `webhooks list` masks it.
CREATE TABLE webhooks (
    id            TEXT    NOT NULL PRIMARY KEY,
    url           TEXT    NOT NULL,
    kinds         TEXT    NOT NULL CHECK (kinds IN ('event', 'verdict', 'event,verdict')),
    secret        TEXT    NOT NULL,
    created_at    TEXT    NOT NULL,
    events_seq    INTEGER NOT NULL DEFAULT 0 CHECK (events_seq >= 0),
    verdicts_seq  INTEGER NOT NULL DEFAULT 0 CHECK (verdicts_seq >= 0)
);
-- Recent delivery attempts (the last 100 per hook; older rows are deleted as new ones come),
-- for `webhooks deliveries`. `status` is the HTTP status when one came back; `error` says why
-- an attempt failed (NULL when it was delivered).
CREATE TABLE webhook_attempts (
    id         INTEGER NOT NULL PRIMARY KEY AUTOINCREMENT,
    hook       TEXT    NOT NULL REFERENCES webhooks (id) ON DELETE CASCADE,
    delivery   TEXT    NOT NULL,
    kind       TEXT    NOT NULL CHECK (kind IN ('event', 'verdict')),
    seq        INTEGER NOT NULL,
    attempt    INTEGER NOT NULL,
    at         TEXT    NOT NULL,
    status     INTEGER,
    error      TEXT
);
CREATE INDEX webhook_attempts_by_hook ON webhook_attempts (hook, id);
