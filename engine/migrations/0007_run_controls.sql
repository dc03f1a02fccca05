-- A cancel asked of a running run ("actor: reason"), honoured at the next
-- step boundary.
ALTER TABLE runs ADD COLUMN cancel_requested TEXT;
-- Newest-first pagination walks runs by id (UUIDv7: time-ordered).
CREATE INDEX runs_by_id_desc ON runs (id DESC);
