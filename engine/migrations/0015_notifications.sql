-- Notifications (issue 21). `notified`: what each sink was told is raised
-- (so a restart or another node taking over the notifier neither repeats a
-- notification nor forgets to resolve one). `notification_outbox`: the
-- deliveries to webhook and Slack sinks not yet made, retried with backoff,
-- bounded per sink ([notify] max-queued, give-up-s).
CREATE TABLE notified (
    sink      TEXT NOT NULL,
    key       TEXT NOT NULL,
    raised_at TEXT NOT NULL,
    condition TEXT NOT NULL,
    PRIMARY KEY (sink, key)
);
CREATE TABLE notification_outbox (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    sink            TEXT NOT NULL,
    idempotency_key TEXT NOT NULL UNIQUE,
    notified_key    TEXT NOT NULL,
    transition      TEXT NOT NULL,
    event           TEXT NOT NULL,
    subject         TEXT NOT NULL,
    run_id          TEXT,
    payload         TEXT NOT NULL,
    created_at      TEXT NOT NULL,
    next_at_ms      INTEGER NOT NULL,
    attempts        INTEGER NOT NULL DEFAULT 0,
    last_error      TEXT
);
-- A sink's queue is delivered in order, from its head.
CREATE INDEX notification_outbox_sink ON notification_outbox (sink, id);
