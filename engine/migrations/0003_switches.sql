-- The big red switch: halts live automation, globally (scope 'global') or
-- for one runbook (scope 'runbook:<name>'). One row per scope that was ever
-- flipped; its history is in the audit log.
CREATE TABLE switches (
    scope      TEXT    PRIMARY KEY,
    engaged    INTEGER NOT NULL,
    reason     TEXT    NOT NULL,
    actor      TEXT    NOT NULL,
    changed_at TEXT    NOT NULL
);
