-- firedrill store on PostgreSQL: the same tables as the SQLite store
-- (engine/migrations, 0001-0010 folded into one), with BIGINT integers and
-- BOOLEAN flags. Times are UTC RFC 3339 text; JSON is text.

CREATE TABLE kernels (
    name          TEXT    NOT NULL,
    version       TEXT    NOT NULL,
    digest        TEXT    NOT NULL,
    size_bytes    BIGINT  NOT NULL,
    manifest      TEXT    NOT NULL,
    published_at  TEXT    NOT NULL,
    published_by  TEXT    NOT NULL,
    PRIMARY KEY (name, version)
);

CREATE TABLE runbook_versions (
    name          TEXT    NOT NULL,
    version       BIGINT  NOT NULL,
    digest        TEXT    NOT NULL,
    source        TEXT    NOT NULL,
    published_at  TEXT    NOT NULL,
    published_by  TEXT    NOT NULL,
    PRIMARY KEY (name, version)
);

CREATE TABLE runbook_current (
    name    TEXT PRIMARY KEY,
    version BIGINT NOT NULL,
    set_at  TEXT NOT NULL,
    set_by  TEXT NOT NULL
);

CREATE TABLE runs (
    id               TEXT    PRIMARY KEY,
    runbook          TEXT    NOT NULL,
    runbook_version  BIGINT  NOT NULL,
    runbook_digest   TEXT    NOT NULL,
    draft            BOOLEAN NOT NULL,
    mode             TEXT    NOT NULL,
    actor            TEXT    NOT NULL,
    status           TEXT    NOT NULL,
    inputs           TEXT    NOT NULL,
    kernels          TEXT    NOT NULL,
    error            TEXT,
    started_at       TEXT    NOT NULL,
    finished_at      TEXT,
    cancel_requested TEXT,
    drill            BOOLEAN NOT NULL DEFAULT FALSE,
    owner            TEXT,
    epoch            BIGINT  NOT NULL DEFAULT 0,
    lease_until      BIGINT,
    gate             TEXT,
    source           TEXT
);
CREATE INDEX runs_by_start ON runs (started_at DESC, id DESC);
CREATE INDEX runs_by_runbook ON runs (runbook, started_at DESC);
CREATE INDEX runs_by_id_desc ON runs (id DESC);
CREATE INDEX runs_drills ON runs (runbook, runbook_digest, drill, status);
CREATE INDEX runs_by_status ON runs (status, id);

CREATE TABLE steps (
    run_id         TEXT    NOT NULL REFERENCES runs (id),
    step_id        TEXT    NOT NULL,
    position       BIGINT  NOT NULL,
    phase          TEXT    NOT NULL,
    kernel         TEXT    NOT NULL,
    kernel_digest  TEXT,
    status         TEXT    NOT NULL,
    attempts       BIGINT  NOT NULL,
    targets        TEXT    NOT NULL,
    input          TEXT,
    output         TEXT,
    error          TEXT,
    logs           TEXT    NOT NULL,
    started_at     TEXT,
    finished_at    TEXT,
    duration_ms    BIGINT,
    PRIMARY KEY (run_id, step_id)
);

CREATE TABLE step_targets (
    run_id       TEXT    NOT NULL REFERENCES runs (id),
    step_id      TEXT    NOT NULL,
    target       TEXT    NOT NULL,
    status       TEXT    NOT NULL,
    attempts     BIGINT  NOT NULL,
    output       TEXT,
    error        TEXT,
    duration_ms  BIGINT,
    PRIMARY KEY (run_id, step_id, target)
);

CREATE TABLE host_calls (
    run_id     TEXT    NOT NULL REFERENCES runs (id),
    step_id    TEXT    NOT NULL,
    target     TEXT    NOT NULL,
    attempt    BIGINT  NOT NULL,
    idx        BIGINT  NOT NULL,
    record     TEXT    NOT NULL,
    PRIMARY KEY (run_id, step_id, target, attempt, idx)
);

CREATE TABLE audit_events (
    seq         BIGINT  PRIMARY KEY,
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

-- Append-only through firedrill (the hash chain detects anyone who drops this).
CREATE FUNCTION audit_events_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'audit_events is append-only';
END;
$$;
CREATE TRIGGER audit_events_no_change BEFORE UPDATE OR DELETE ON audit_events
    FOR EACH ROW EXECUTE FUNCTION audit_events_append_only();

CREATE TABLE switches (
    scope      TEXT    PRIMARY KEY,
    engaged    BOOLEAN NOT NULL,
    reason     TEXT    NOT NULL,
    actor      TEXT    NOT NULL,
    changed_at TEXT    NOT NULL
);

CREATE TABLE tokens (
    id         TEXT PRIMARY KEY,
    name       TEXT NOT NULL,
    role       TEXT NOT NULL,
    runbooks   TEXT NOT NULL,
    hash       TEXT NOT NULL UNIQUE,
    created_at TEXT NOT NULL,
    created_by TEXT NOT NULL,
    revoked_at TEXT
);
CREATE UNIQUE INDEX tokens_live_name ON tokens (name) WHERE revoked_at IS NULL;

CREATE TABLE alert_claims (
    source      TEXT NOT NULL,
    fingerprint TEXT NOT NULL,
    starts_at   TEXT NOT NULL,
    runbook     TEXT NOT NULL,
    key         TEXT NOT NULL,
    outcome     TEXT NOT NULL,
    run_id      TEXT,
    received_at TEXT NOT NULL,
    PRIMARY KEY (source, fingerprint, starts_at, runbook)
);
CREATE INDEX alert_claims_key ON alert_claims (runbook, key, outcome, received_at);

CREATE TABLE breaker_resets (
    runbook  TEXT PRIMARY KEY,
    reset_at TEXT NOT NULL,
    actor    TEXT NOT NULL,
    reason   TEXT NOT NULL
);

CREATE TABLE drill_schedule (
    runbook     TEXT PRIMARY KEY,
    next_due_at TEXT NOT NULL,
    last_run_id TEXT
);

CREATE TABLE approvals (
    run_id   TEXT NOT NULL,
    step_id  TEXT NOT NULL,
    approver TEXT NOT NULL,
    decision TEXT NOT NULL CHECK (decision IN ('approve', 'deny')),
    comment  TEXT NOT NULL,
    at       TEXT NOT NULL,
    PRIMARY KEY (run_id, step_id, approver)
);

CREATE TABLE leases (
    name        TEXT PRIMARY KEY,
    owner       TEXT NOT NULL,
    lease_until BIGINT NOT NULL
);
