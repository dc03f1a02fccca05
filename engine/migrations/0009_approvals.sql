-- Approvals of `approval` steps: one row per (run, step, person); a person
-- counts once.
CREATE TABLE approvals (
    run_id   TEXT NOT NULL,
    step_id  TEXT NOT NULL,
    approver TEXT NOT NULL,
    decision TEXT NOT NULL CHECK (decision IN ('approve', 'deny')),
    comment  TEXT NOT NULL,
    at       TEXT NOT NULL,
    PRIMARY KEY (run_id, step_id, approver)
);
