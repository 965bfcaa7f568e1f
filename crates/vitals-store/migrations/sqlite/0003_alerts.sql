-- Alerting (issue 7).
-- `alert_docs`: rules, notification channels and maintenance windows, one JSON document each
--   (validated by the hub; `kind` is `rule`, `channel` or `window`).
-- `alert_state`: the engine's state per (rule, device, subject) while not OK, so a restart
--   neither repeats nor forgets a pending or firing alert.
-- `alert_events`: one row per alert (fired .. resolved), with its JSON view.
-- `alert_outbox`: notifications still to deliver, written in the same transaction as the state
--   change that caused them; retried with backoff until `done`.
-- `alert_deliveries`: the delivery log, one row per attempt.

CREATE TABLE alert_docs (
    kind       TEXT NOT NULL,
    id         TEXT NOT NULL,
    data       TEXT NOT NULL,
    updated_at INTEGER NOT NULL,
    PRIMARY KEY (kind, id)
);

CREATE TABLE alert_state (
    key  TEXT PRIMARY KEY,
    data TEXT NOT NULL
);

CREATE TABLE alert_events (
    id         TEXT PRIMARY KEY,
    active     INTEGER NOT NULL,
    started_at INTEGER NOT NULL,
    data       TEXT NOT NULL
);
CREATE INDEX alert_events_active ON alert_events(active, started_at);
CREATE INDEX alert_events_started ON alert_events(started_at);

CREATE TABLE alert_outbox (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    event_id   TEXT NOT NULL,
    channel_id TEXT NOT NULL,
    data       TEXT NOT NULL,
    attempts   INTEGER NOT NULL DEFAULT 0,
    next_at    INTEGER NOT NULL,
    done       INTEGER NOT NULL DEFAULT 0,
    created_at INTEGER NOT NULL
);
CREATE INDEX alert_outbox_due ON alert_outbox(done, next_at);

CREATE TABLE alert_deliveries (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    at         INTEGER NOT NULL,
    outbox_id  INTEGER,
    event_id   TEXT,
    channel_id TEXT NOT NULL,
    kind       TEXT NOT NULL,
    attempt    INTEGER NOT NULL,
    ok         INTEGER NOT NULL,
    status     INTEGER,
    error      TEXT
);
CREATE INDEX alert_deliveries_at ON alert_deliveries(at);
