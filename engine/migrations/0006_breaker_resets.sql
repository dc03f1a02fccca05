-- Circuit breaker resets: a runbook's breaker counts only triggered runs
-- started after its latest reset.
CREATE TABLE breaker_resets (
    runbook  TEXT PRIMARY KEY,
    reset_at TEXT NOT NULL,
    actor    TEXT NOT NULL,
    reason   TEXT NOT NULL
);
