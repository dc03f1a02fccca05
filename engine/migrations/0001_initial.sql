-- firedrill store, version 1. Times are UTC RFC 3339 text; JSON is text.

CREATE TABLE kernels (
    name          TEXT    NOT NULL,
    version       TEXT    NOT NULL,
    digest        TEXT    NOT NULL,
    size_bytes    INTEGER NOT NULL,
    manifest      TEXT    NOT NULL,
    published_at  TEXT    NOT NULL,
    published_by  TEXT    NOT NULL,
    PRIMARY KEY (name, version)
);

CREATE TABLE runbook_versions (
    name          TEXT    NOT NULL,
    version       INTEGER NOT NULL,
    digest        TEXT    NOT NULL,
    source        TEXT    NOT NULL,
    published_at  TEXT    NOT NULL,
    published_by  TEXT    NOT NULL,
    PRIMARY KEY (name, version)
);

CREATE TABLE runs (
    id               TEXT    PRIMARY KEY,
    runbook          TEXT    NOT NULL,
    runbook_version  INTEGER NOT NULL,
    runbook_digest   TEXT    NOT NULL,
    draft            INTEGER NOT NULL,
    mode             TEXT    NOT NULL,
    actor            TEXT    NOT NULL,
    status           TEXT    NOT NULL,
    inputs           TEXT    NOT NULL,
    kernels          TEXT    NOT NULL,
    error            TEXT,
    started_at       TEXT    NOT NULL,
    finished_at      TEXT
);
CREATE INDEX runs_by_start ON runs (started_at DESC, id DESC);
CREATE INDEX runs_by_runbook ON runs (runbook, started_at DESC);

CREATE TABLE steps (
    run_id         TEXT    NOT NULL REFERENCES runs (id),
    step_id        TEXT    NOT NULL,
    position       INTEGER NOT NULL,
    phase          TEXT    NOT NULL,
    kernel         TEXT    NOT NULL,
    kernel_digest  TEXT,
    status         TEXT    NOT NULL,
    attempts       INTEGER NOT NULL,
    targets        TEXT    NOT NULL,
    input          TEXT,
    output         TEXT,
    error          TEXT,
    logs           TEXT    NOT NULL,
    started_at     TEXT,
    finished_at    TEXT,
    duration_ms    INTEGER,
    PRIMARY KEY (run_id, step_id)
);

CREATE TABLE host_calls (
    run_id     TEXT    NOT NULL REFERENCES runs (id),
    step_id    TEXT    NOT NULL,
    attempt    INTEGER NOT NULL,
    idx        INTEGER NOT NULL,
    record     TEXT    NOT NULL,
    PRIMARY KEY (run_id, step_id, attempt, idx)
);

CREATE TABLE audit_events (
    seq         INTEGER PRIMARY KEY,
    time        TEXT    NOT NULL,
    actor_kind  TEXT    NOT NULL,
    actor_id    TEXT    NOT NULL,
    action      TEXT    NOT NULL,
    subject     TEXT    NOT NULL,
    outcome     TEXT    NOT NULL,
    details     TEXT    NOT NULL,
    run_id      TEXT,
    prev_hash   TEXT    NOT NULL,
    hash        TEXT    NOT NULL
);
CREATE INDEX audit_by_run ON audit_events (run_id, seq);
CREATE INDEX audit_by_actor ON audit_events (actor_kind, actor_id, seq);

-- The audit log is append-only through firedrill. (Someone with raw write
-- access can drop these; the hash chain is what detects that.)
CREATE TRIGGER audit_events_no_update BEFORE UPDATE ON audit_events
BEGIN SELECT RAISE(ABORT, 'audit_events is append-only'); END;
CREATE TRIGGER audit_events_no_delete BEFORE DELETE ON audit_events
BEGIN SELECT RAISE(ABORT, 'audit_events is append-only'); END;
