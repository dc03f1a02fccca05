-- Only a started remediation deduplicates later deliveries of an alert
-- (issue 21): a suppressed decision (cooldown, rate-limited, breaker-open,
-- not-ready, halted, refused) is re-evaluated on the next delivery, so it
-- is no longer kept as a claim. Claims written by older versions for those
-- outcomes would keep answering `duplicate`; drop them.
DELETE FROM alert_claims WHERE outcome <> 'started';
-- The breaker reads a runbook's started claims newest first.
CREATE INDEX alert_claims_runbook ON alert_claims (runbook, outcome, received_at);
