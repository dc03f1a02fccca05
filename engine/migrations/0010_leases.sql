-- Durable queue and leases (several nodes, crash recovery).
-- A run is inserted `queued` when admitted; a node claims it (owner, epoch + 1,
-- lease_until in ms since the Unix epoch) and renews the lease while it works.
-- A write of the run carries (owner, epoch) and is refused once another node
-- has taken the run over after the lease expired.
ALTER TABLE runs ADD COLUMN owner TEXT;
ALTER TABLE runs ADD COLUMN epoch INTEGER NOT NULL DEFAULT 0;
ALTER TABLE runs ADD COLUMN lease_until INTEGER;
-- The readiness approval gate (JSON) of a queued run, and a draft's text.
ALTER TABLE runs ADD COLUMN gate TEXT;
ALTER TABLE runs ADD COLUMN source TEXT;
CREATE INDEX runs_by_status ON runs (status, id);

-- Singleton leases (the drill scheduler): one holder at a time.
CREATE TABLE leases (
    name        TEXT PRIMARY KEY,
    owner       TEXT NOT NULL,
    lease_until INTEGER NOT NULL
);
