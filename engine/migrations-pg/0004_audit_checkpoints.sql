-- Signed checkpoints of the audit log (tlog-checkpoint notes): the tree
-- size, its RFC 9162 root (base64) and the signed note. Kept here so that
-- the latest can be served and verified; the copies that protect against
-- the database owner are the ones shipped to witnesses.
CREATE TABLE audit_checkpoints (
    size       BIGINT PRIMARY KEY,
    root       TEXT NOT NULL,
    note       TEXT NOT NULL,
    signer     TEXT NOT NULL,
    created_at TEXT NOT NULL
);
CREATE TRIGGER audit_checkpoints_no_change BEFORE UPDATE OR DELETE ON audit_checkpoints
    FOR EACH ROW EXECUTE FUNCTION audit_events_append_only();
