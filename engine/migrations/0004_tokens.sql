-- API tokens. Only a SHA-256 hash of each token is stored; the token itself
-- is shown once, when created.
CREATE TABLE tokens (
    id         TEXT PRIMARY KEY,
    name       TEXT NOT NULL,
    role       TEXT NOT NULL,
    -- JSON array of runbook names the token is limited to; [] = all.
    runbooks   TEXT NOT NULL,
    hash       TEXT NOT NULL UNIQUE,
    created_at TEXT NOT NULL,
    created_by TEXT NOT NULL,
    revoked_at TEXT
);
-- A name is unique among live tokens (a revoked name may be reused).
CREATE UNIQUE INDEX tokens_live_name ON tokens (name) WHERE revoked_at IS NULL;
