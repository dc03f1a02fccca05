-- One row per (alert, runbook) decision. The primary key makes an alert
-- (source + fingerprint + startsAt) start at most one run per runbook, even
-- when Alertmanager delivers it again or an HA pair delivers it twice.
CREATE TABLE alert_claims (
    source      TEXT NOT NULL,
    fingerprint TEXT NOT NULL,
    starts_at   TEXT NOT NULL,
    runbook     TEXT NOT NULL,
    -- The trigger's cooldown key.
    key         TEXT NOT NULL,
    -- started, cooldown, halted, refused
    outcome     TEXT NOT NULL,
    run_id      TEXT,
    received_at TEXT NOT NULL,
    PRIMARY KEY (source, fingerprint, starts_at, runbook)
);
CREATE INDEX alert_claims_key ON alert_claims (runbook, key, outcome, received_at);
