-- Per-target results of a step (fan-out).
CREATE TABLE step_targets (
    run_id       TEXT    NOT NULL REFERENCES runs (id),
    step_id      TEXT    NOT NULL,
    target       TEXT    NOT NULL,
    status       TEXT    NOT NULL,
    attempts     INTEGER NOT NULL,
    output       TEXT,
    error        TEXT,
    duration_ms  INTEGER,
    PRIMARY KEY (run_id, step_id, target)
);

-- Host calls are keyed by target too: a fanned-out step runs one invocation
-- per target, each with its own attempts.
CREATE TABLE host_calls_by_target (
    run_id     TEXT    NOT NULL REFERENCES runs (id),
    step_id    TEXT    NOT NULL,
    target     TEXT    NOT NULL,
    attempt    INTEGER NOT NULL,
    idx        INTEGER NOT NULL,
    record     TEXT    NOT NULL,
    PRIMARY KEY (run_id, step_id, target, attempt, idx)
);
INSERT INTO host_calls_by_target (run_id, step_id, target, attempt, idx, record)
    SELECT run_id, step_id, '', attempt, idx, record FROM host_calls;
DROP TABLE host_calls;
ALTER TABLE host_calls_by_target RENAME TO host_calls;
