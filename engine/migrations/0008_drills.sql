-- Drills: runs started by the drill scheduler are marked, so readiness can
-- be computed from them for the exact runbook digest + kernel digests.
ALTER TABLE runs ADD COLUMN drill INTEGER NOT NULL DEFAULT 0;
CREATE INDEX runs_drills ON runs (runbook, runbook_digest, drill, status);

-- When each runbook's next drill is due (survives restarts; moved forward
-- by a conditional update so a due drill starts once).
CREATE TABLE drill_schedule (
    runbook     TEXT PRIMARY KEY,
    next_due_at TEXT NOT NULL,
    last_run_id TEXT
);

-- A rollback pins a runbook's current version; publishing a new version
-- removes the pin (the newest is current again).
CREATE TABLE runbook_current (
    name    TEXT PRIMARY KEY,
    version INTEGER NOT NULL,
    set_at  TEXT NOT NULL,
    set_by  TEXT NOT NULL
);
