-- Signed checkpoints of the audit log (tlog-checkpoint notes): the tree
-- size, its RFC 9162 root (base64) and the signed note. Kept here so that
-- the latest can be served and verified; the copies that protect against
-- the database owner are the ones shipped to witnesses.
CREATE TABLE audit_checkpoints (
    size       INTEGER PRIMARY KEY,
    root       TEXT NOT NULL,
    note       TEXT NOT NULL,
    signer     TEXT NOT NULL,
    created_at TEXT NOT NULL
);
CREATE TRIGGER audit_checkpoints_no_update BEFORE UPDATE ON audit_checkpoints
BEGIN SELECT RAISE(ABORT, 'audit_checkpoints is append-only'); END;
CREATE TRIGGER audit_checkpoints_no_delete BEFORE DELETE ON audit_checkpoints
BEGIN SELECT RAISE(ABORT, 'audit_checkpoints is append-only'); END;
