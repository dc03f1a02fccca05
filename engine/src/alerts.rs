//! Alerts that start runbooks: the payloads of Alertmanager, PagerDuty and
//! the generic endpoint (each parsed into [`Alert`]s), matching against
//! published runbooks' `triggers` (through the [`TriggerIndex`]), and the
//! decisions that keep automation from making an incident worse:
//!
//! - **dedup**: an alert (source + fingerprint + startsAt) starts at most one
//!   run per runbook, however often it is delivered (a claim row with that
//!   primary key is written before the run starts). Only a started run is
//!   claimed: every other decision is taken again on the next delivery, so
//!   an alert that keeps firing is acted on once its reason has passed;
//! - **resolved** notifications are recorded, never run;
//! - **cooldown**: after a run starts for a trigger key, alerts with the same
//!   key start nothing for the trigger's cooldown;
//! - **max_runs** per key per window, and a **circuit breaker** after
//!   consecutive failed triggered runs, per key (default) or per runbook;
//! - the **big red switch** refuses live triggered runs like any other;
//! - a global rate of triggered runs (`server.trigger-runs-per-minute`),
//!   applied by the server when it admits the run: beyond it the alert is
//!   shed (503) with nothing claimed, so the sender's retry can start it.
//!   (The claim, the run and its `alert.received` record are one batch:
//!   all kept, or none.)
//!
//! Every decision is an `alert.received` audit event with the alert source
//! as actor; alerts that match no trigger are an `alert.unmatched` event
//! per notification, counted, and kept (the last few) with the triggers
//! that came closest, for "why did nothing run?".

mod alertmanager;
mod generic;
mod index;
mod pagerduty;

use std::collections::{BTreeMap, VecDeque};
use std::sync::Mutex;

pub use alertmanager::AlertmanagerPayload;
pub use generic::GenericPayload;
pub use index::{MAX_KEPT_LABELS, MAX_KEPT_VALUE, MAX_NEAREST, Mismatch, Nearest, TriggerIndex};
pub use pagerduty::{
    MAX_SIGNATURES, PagerDutyDelivery, PagerDutyEvent, verify_pagerduty_signature,
};

use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::audit::{Actor, NewEvent, now_rfc3339};
use crate::executor::{RunError, RunRequest, RunbookSource, Service};
use crate::runbook::{BreakerScope, Templates};
use crate::store::{Batch, StoreError, Write};
use index::Candidate;

/// How long a `require-approval` run of an untested runbook waits for an
/// approver before it fails.
pub const READINESS_APPROVAL_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30 * 60);

/// Most alerts one notification may carry.
pub const MAX_ALERTS: usize = 1000;
/// Most labels (and annotations) one alert may carry.
pub const MAX_LABELS: usize = 128;
/// Longest label or annotation value.
pub const MAX_LABEL_BYTES: usize = 64 << 10;
/// Longest alert identity (fingerprint, incident id, generic id).
pub const MAX_ID_BYTES: usize = 128;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AlertStatus {
    Firing,
    Resolved,
}

/// An alert from any source, as triggers see it (`alert.*` in templates).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Alert {
    pub source: &'static str,
    pub status: AlertStatus,
    pub fingerprint: String,
    pub starts_at: String,
    pub labels: BTreeMap<String, String>,
    pub annotations: BTreeMap<String, String>,
}

impl Alert {
    /// The checks every source's alerts pass; `at` names the alert and
    /// `time_field` its start time in errors.
    fn checked(self, at: &str, time_field: &str) -> Result<Alert, String> {
        let id_ok = !self.fingerprint.is_empty()
            && self.fingerprint.len() <= MAX_ID_BYTES
            && self
                .fingerprint
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "._:-".contains(c));
        if !id_ok {
            return Err(format!(
                "{at}: the alert's identity {:?} must be 1 to {MAX_ID_BYTES} letters, digits, `.`, `_`, `:` or `-`",
                self.fingerprint
            ));
        }
        if self.labels.len() > MAX_LABELS || self.annotations.len() > MAX_LABELS {
            return Err(format!(
                "{at} has more than {MAX_LABELS} labels or annotations"
            ));
        }
        if let Some((k, _)) = self
            .labels
            .iter()
            .chain(&self.annotations)
            .find(|(k, v)| k.len() > MAX_LABEL_BYTES || v.len() > MAX_LABEL_BYTES)
        {
            return Err(format!(
                "{at}: label or annotation {:?} is longer than {MAX_LABEL_BYTES} bytes",
                truncate(k, 64)
            ));
        }
        if time::OffsetDateTime::parse(
            &self.starts_at,
            &time::format_description::well_known::Rfc3339,
        )
        .is_err()
        {
            return Err(format!(
                "{at}.{time_field} {:?} is not an RFC 3339 time",
                truncate(&self.starts_at, 64)
            ));
        }
        Ok(self)
    }
}

fn truncate(text: &str, max: usize) -> &str {
    match text.char_indices().nth(max) {
        Some((i, _)) => &text[..i],
        None => text,
    }
}

/// What happened to one alert for one runbook.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "outcome", rename_all = "kebab-case")]
pub enum Decision {
    Started {
        runbook: String,
        run_id: String,
    },
    /// Already delivered: the run it started (if any) stands.
    Duplicate {
        runbook: String,
    },
    Resolved {
        runbook: String,
    },
    /// A run started for this key within the cooldown; a delivery after
    /// `until` is decided again.
    Cooldown {
        runbook: String,
        key: String,
        until: String,
    },
    /// `max_runs` for this key within its window was reached; the window
    /// has room again at `until`.
    RateLimited {
        runbook: String,
        key: String,
        until: String,
    },
    /// The last `failures` triggered runs of this key (scope `key`) or of
    /// the runbook (scope `runbook`) all failed: paused until
    /// `firedrill trigger reset`.
    BreakerOpen {
        runbook: String,
        failures: u32,
        scope: String,
        #[serde(skip_serializing_if = "Option::is_none")]
        key: Option<String>,
    },
    Halted {
        runbook: String,
        reason: String,
    },
    /// The rendered inputs or the runbook refused the run.
    Refused {
        runbook: String,
        reason: String,
    },
    /// A live trigger of a runbook that is not `ready` (no passing live
    /// drill within its max_age) under `readiness_policy: block`.
    NotReady {
        runbook: String,
        state: String,
    },
    /// The run was not admitted (queue or run limit full, the trigger
    /// rate spent); nothing was claimed, so a redelivery can start it.
    Shed {
        runbook: String,
        reason: String,
    },
    /// The alert matches a runbook outside the sending token's scope:
    /// nothing started. The runbook is named in the audit log only; the
    /// sender is not told which runbook it was.
    OutOfScope {
        #[serde(skip)]
        runbook: String,
        reason: String,
    },
}

fn render(templates: &Templates, text: &str, alert: &Alert) -> Result<String, String> {
    let ctx = minijinja::Value::from(minijinja::value::Serde(json!({"alert": alert})));
    match templates.render_value(text, &ctx) {
        Ok(serde_json::Value::String(s)) => Ok(s),
        Ok(other) => Ok(other.to_string()),
        Err(e) => Err(e.to_string()),
    }
}

/// Whether a trigger circuit breaker is open: the newest `threshold`
/// triggered runs of `runbook` (of `key` only, when given) since the last
/// reset all failed (0: never).
pub async fn breaker_open(
    store: &dyn crate::store::Store,
    runbook: &str,
    key: Option<&str>,
    threshold: u32,
) -> Result<bool, StoreError> {
    if threshold == 0 {
        return Ok(false);
    }
    let last = store.triggered_outcomes(runbook, key, threshold).await?;
    Ok(all_failed(&last, threshold))
}

fn all_failed(last: &[crate::store::RunStatus], threshold: u32) -> bool {
    threshold > 0
        && last.len() == threshold as usize
        && last.iter().all(|s| *s == crate::store::RunStatus::Failed)
}

/// Finished triggered runs read to tell which keys' breakers are open
/// (the newest, per runbook): a key whose failures are older than these is
/// reported closed here, though an alert for it still finds it open.
pub const BREAKER_SCAN: u32 = 1000;

/// One trigger's circuit breaker, as the triggers API and `/metrics` show it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BreakerState {
    /// The trigger's position in the runbook's `triggers`.
    pub trigger: usize,
    pub threshold: u32,
    pub scope: &'static str,
    /// Open for the whole runbook (scope `runbook`) or for any key.
    pub open: bool,
    /// The keys whose breaker is open (scope `key`), the first
    /// [`MAX_OPEN_KEYS_LISTED`]; `open_keys_total` counts them all.
    pub open_keys: Vec<String>,
    pub open_keys_total: usize,
}

/// Most open keys listed per trigger (all are counted).
pub const MAX_OPEN_KEYS_LISTED: usize = 100;

/// The breaker of each of `triggers` (those of `runbook`'s current version).
pub async fn breaker_states(
    store: &dyn crate::store::Store,
    runbook: &str,
    triggers: &[crate::runbook::Trigger],
) -> Result<Vec<BreakerState>, StoreError> {
    if triggers.is_empty() {
        return Ok(Vec::new());
    }
    let recent = store.recent_triggered(runbook, BREAKER_SCAN).await?;
    let mut by_key: BTreeMap<&str, Vec<crate::store::RunStatus>> = BTreeMap::new();
    for (k, status) in &recent {
        by_key.entry(k.as_str()).or_default().push(*status);
    }
    Ok(triggers
        .iter()
        .enumerate()
        .map(|(i, t)| {
            let threshold = t.breaker();
            let take =
                |v: &[crate::store::RunStatus]| v[..v.len().min(threshold as usize)].to_vec();
            let (open, open_keys) = match t.breaker_scope() {
                BreakerScope::Runbook => {
                    let all: Vec<_> = recent.iter().map(|(_, s)| *s).collect();
                    (all_failed(&take(&all), threshold), Vec::new())
                }
                BreakerScope::Key => {
                    let keys: Vec<String> = by_key
                        .iter()
                        .filter(|(_, v)| all_failed(&take(v), threshold))
                        .map(|(k, _)| (*k).to_string())
                        .collect();
                    (!keys.is_empty(), keys)
                }
            };
            let total = open_keys.len();
            BreakerState {
                trigger: i,
                threshold,
                scope: t.breaker_scope().as_str(),
                open,
                open_keys: open_keys
                    .into_iter()
                    .take(MAX_OPEN_KEYS_LISTED)
                    .map(|k| index::clip(&k).to_string())
                    .collect(),
                open_keys_total: total,
            }
        })
        .collect())
}

/// Close `runbook`'s trigger circuit breaker: only triggered runs started
/// from now on count. Audited with the reason.
pub async fn reset_breaker(
    service: &Service,
    runbook: &str,
    reason: &str,
    actor: &Actor,
) -> Result<(), String> {
    let Some(reason) = crate::switch::valid_reason(reason) else {
        return Err(format!(
            "a reason is required to reset a circuit breaker (say why, for the audit log): one line of printable text, at most {} bytes",
            crate::switch::MAX_REASON_BYTES
        ));
    };
    if service
        .store()
        .runbook(runbook, None)
        .await
        .map_err(|e| e.to_string())?
        .is_none()
    {
        return Err(format!("no published runbook {runbook:?}"));
    }
    service
        .store()
        .apply(
            Batch::new()
                .write(Write::ResetBreaker {
                    runbook: runbook.to_string(),
                    reset_at: now_rfc3339(),
                    actor: actor.to_string(),
                    reason: reason.to_string(),
                })
                .event(
                    NewEvent::new(
                        actor,
                        crate::audit::Action::TriggerBreakerReset,
                        format!("runbook:{runbook}"),
                    )
                    .details(json!({"reason": reason})),
                ),
        )
        .await
        .map_err(|e| e.to_string())?;
    Ok(())
}

/// Most run starts read per key for the cooldown and `max_runs` (whose
/// count is at most 1,000).
const MAX_STARTS_READ: u32 = 1000;

/// Default of `server.unmatched-alerts-kept`.
pub const DEFAULT_UNMATCHED_KEPT: usize = 100;
/// Most `server.unmatched-alerts-kept`.
pub const MAX_UNMATCHED_KEPT: usize = 10_000;
/// Most unmatched alerts one `alert.unmatched` audit event lists (all are counted).
pub const MAX_UNMATCHED_AUDITED: usize = 20;

/// An alert that matched no trigger, as kept for the API.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Unmatched {
    pub received_at: String,
    pub source: &'static str,
    pub fingerprint: String,
    pub status: AlertStatus,
    /// The alert's labels: the first [`MAX_KEPT_LABELS`], values cut at
    /// [`MAX_KEPT_VALUE`] bytes.
    pub labels: BTreeMap<String, String>,
    pub labels_dropped: usize,
    /// The triggers of its source that came closest, with the matchers
    /// that failed.
    pub nearest: Vec<Nearest>,
}

/// What matching alerts keeps between notifications: the compiled
/// triggers and the last unmatched alerts.
#[derive(Debug)]
pub struct Alerts {
    pub index: TriggerIndex,
    kept: usize,
    unmatched: Mutex<VecDeque<Unmatched>>,
}

/// What one notification came to.
#[derive(Debug)]
pub struct Handled {
    pub decisions: Vec<Decision>,
    /// Alerts that matched no trigger.
    pub unmatched: usize,
}

impl Default for Alerts {
    fn default() -> Self {
        Alerts::new(DEFAULT_UNMATCHED_KEPT)
    }
}

impl Alerts {
    /// Keeping the last `kept` unmatched alerts (at most [`MAX_UNMATCHED_KEPT`]).
    pub fn new(kept: usize) -> Alerts {
        Alerts {
            index: TriggerIndex::default(),
            kept: kept.min(MAX_UNMATCHED_KEPT),
            unmatched: Mutex::new(VecDeque::new()),
        }
    }

    /// For each alert, the (runbook, trigger position) it matches, through
    /// the index (nothing is decided or recorded).
    pub async fn matching(
        &self,
        store: &dyn crate::store::Store,
        alerts: &[Alert],
    ) -> Result<Vec<Vec<(String, usize)>>, StoreError> {
        let index = self.index.snapshot(store).await?;
        Ok(alerts
            .iter()
            .map(|a| {
                index
                    .candidates(a)
                    .into_iter()
                    .map(|c| (c.runbook, c.index))
                    .collect()
            })
            .collect())
    }

    /// The circuit breaker of every trigger of every current runbook:
    /// (runbook, state).
    pub async fn breakers(
        &self,
        store: &dyn crate::store::Store,
    ) -> Result<Vec<(String, BreakerState)>, StoreError> {
        let index = self.index.snapshot(store).await?;
        let mut out = Vec::new();
        for rb in &index.runbooks {
            for b in breaker_states(store, &rb.name, &rb.triggers).await? {
                out.push((rb.name.clone(), b));
            }
        }
        Ok(out)
    }

    /// The last unmatched alerts, newest first.
    pub fn unmatched(&self) -> Vec<Unmatched> {
        self.ring().iter().rev().cloned().collect()
    }

    fn ring(&self) -> std::sync::MutexGuard<'_, VecDeque<Unmatched>> {
        self.unmatched.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Decide, and start runs through `admit`, for every alert.
    ///
    /// `scope` is the runbooks the sender's token is limited to (empty: all);
    /// a matching runbook outside it starts nothing ([`Decision::OutOfScope`]).
    pub async fn handle(
        &self,
        service: &Service,
        actor: &Actor,
        scope: &[String],
        alerts: &[Alert],
        admit: &crate::drill::Admit,
    ) -> Result<Handled, StoreError> {
        let templates = Templates::default();
        let index = self.index.snapshot(service.store().as_ref()).await?;
        let mut decisions = Vec::new();
        let mut unmatched = Vec::new();
        for alert in alerts {
            let candidates = index.candidates(alert);
            if candidates.is_empty() {
                unmatched.push(alert);
                continue;
            }
            for c in candidates {
                let decision = if scope.is_empty() || scope.contains(&c.runbook) {
                    decide(service, actor, &templates, alert, &c, admit).await?
                } else {
                    Decision::OutOfScope {
                        runbook: c.runbook.clone(),
                        reason: format!(
                            "this alert matches a runbook outside the scope of {actor} (limited to {}); nothing was started",
                            scope.join(", ")
                        ),
                    }
                };
                // A started run's record went with its admission (`decide`).
                if !matches!(decision, Decision::Started { .. }) {
                    service
                        .store()
                        .apply(Batch::new().event(received(actor, alert, &c, &decision)))
                        .await?;
                }
                decisions.push(decision);
            }
        }
        let count = unmatched.len();
        if let Some(first) = unmatched.first() {
            let now = now_rfc3339();
            let kept_labels = |a: &Alert| -> BTreeMap<String, String> {
                a.labels
                    .iter()
                    .take(MAX_KEPT_LABELS)
                    .map(|(k, v)| (index::clip(k).to_string(), index::clip(v).to_string()))
                    .collect()
            };
            // Only the alerts the ring keeps are explained (the newest).
            let records: Vec<Unmatched> = unmatched
                .iter()
                .skip(unmatched.len().saturating_sub(self.kept))
                .map(|a| Unmatched {
                    received_at: now.clone(),
                    source: a.source,
                    fingerprint: a.fingerprint.clone(),
                    status: a.status,
                    labels: kept_labels(a),
                    labels_dropped: a.labels.len().saturating_sub(MAX_KEPT_LABELS),
                    nearest: index.nearest(a),
                })
                .collect();
            let listed: Vec<_> = unmatched
                .iter()
                .take(MAX_UNMATCHED_AUDITED)
                .map(|a| json!({"fingerprint": a.fingerprint, "status": a.status, "labels": kept_labels(a)}))
                .collect();
            service
                .store()
                .apply(
                    Batch::new().event(
                        NewEvent::new(actor, crate::audit::Action::AlertUnmatched, first.source)
                            .outcome("unmatched")
                            .details(json!({
                                "source": first.source,
                                "count": count,
                                "alerts": listed,
                                "listed": listed.len(),
                            })),
                    ),
                )
                .await?;
            let mut ring = self.ring();
            for r in records {
                if ring.len() >= self.kept {
                    ring.pop_front();
                }
                ring.push_back(r);
            }
        }
        Ok(Handled {
            decisions,
            unmatched: count,
        })
    }
}

/// Since when a trigger's starts of a key count: for its cooldown, and for
/// its `max_runs` window. Computed once per decision, so the checks and
/// the claim statement count the same starts.
struct Since {
    cooldown: String,
    window: Option<(String, i64)>,
}

impl Since {
    fn of(trigger: &crate::runbook::Trigger) -> Since {
        let cooldown = trigger.cooldown();
        Since {
            // No cooldown: a bound no start can reach (text compares after
            // every RFC 3339 time), so starts of one moment do not block
            // each other.
            cooldown: if cooldown.is_zero() {
                "9999".to_string()
            } else {
                ago(cooldown)
            },
            window: trigger
                .max_runs
                .as_ref()
                .map(|b| (ago(b.per.0), i64::from(b.count))),
        }
    }
}

/// The cooldown or the rate limit that holds `key` of `runbook`, if any.
async fn limited(
    store: &dyn crate::store::Store,
    runbook: &str,
    key: &str,
    trigger: &crate::runbook::Trigger,
    since: &Since,
) -> Result<Option<Decision>, StoreError> {
    let recent = store
        .alert_starts_since(runbook, key, &since.cooldown, MAX_STARTS_READ)
        .await?;
    if let Some(last) = recent.last() {
        return Ok(Some(Decision::Cooldown {
            runbook: runbook.to_string(),
            key: key.to_string(),
            until: rfc3339_plus(last, trigger.cooldown()),
        }));
    }
    if let (Some(budget), Some((window_since, _))) = (&trigger.max_runs, &since.window) {
        let window = store
            .alert_starts_since(runbook, key, window_since, MAX_STARTS_READ)
            .await?;
        let count = budget.count as usize;
        if window.len() >= count {
            // Room again when the oldest start that keeps it full leaves the window.
            return Ok(Some(Decision::RateLimited {
                runbook: runbook.to_string(),
                key: key.to_string(),
                until: rfc3339_plus(&window[window.len().saturating_sub(count)], budget.per.0),
            }));
        }
    }
    Ok(None)
}

/// `d` ago, in the format of `received_at`, so the two compare as text.
fn ago(d: std::time::Duration) -> String {
    humantime::format_rfc3339_millis(
        std::time::SystemTime::now()
            .checked_sub(d)
            .unwrap_or(std::time::UNIX_EPOCH),
    )
    .to_string()
}

fn rfc3339_plus(at: &str, d: std::time::Duration) -> String {
    humantime::parse_rfc3339_weak(at)
        .ok()
        .and_then(|t| t.checked_add(d))
        .map_or_else(
            || at.to_string(),
            |t| humantime::format_rfc3339_millis(t).to_string(),
        )
}

impl Decision {
    /// The decision's name (`started`, `duplicate`, ...), as in its JSON.
    pub fn outcome(&self) -> String {
        serde_json::to_value(self)
            .ok()
            .and_then(|v| v["outcome"].as_str().map(String::from))
            .unwrap_or_default()
    }

    /// What a later delivery of the same alert does, for the sender and
    /// the audit log: a suppressed decision is taken again, a refusal is final.
    pub fn redelivery(&self) -> String {
        match self {
            Decision::Started { .. } | Decision::Duplicate { .. } => {
                "duplicate: the run it started stands".into()
            }
            Decision::Resolved { .. } => "nothing: a resolved alert starts nothing".into(),
            Decision::Cooldown { until, .. } => {
                format!("decided again: starts the runbook if delivered after {until} (the cooldown's end)")
            }
            Decision::RateLimited { until, .. } => {
                format!("decided again: starts the runbook if delivered after {until} (when max_runs has room)")
            }
            Decision::BreakerOpen { runbook, .. } => format!(
                "decided again: starts the runbook once the breaker is reset (firedrill trigger reset {runbook} --reason ...)"
            ),
            Decision::NotReady { runbook, .. } => format!(
                "decided again: starts the runbook once it passes a live drill (firedrill drill run {runbook})"
            ),
            Decision::Halted { .. } => {
                "decided again: starts the runbook once the big red switch is released".into()
            }
            Decision::Shed { .. } => {
                "decided again: starts the runbook when the server has room (retry after the Retry-After header)".into()
            }
            Decision::Refused { .. } => "never: the same alert is refused again by this runbook version; fix the trigger or the alert and publish a new version".into(),
            Decision::OutOfScope { .. } => "never: this token may not start that runbook; send it with a token whose scope includes it".into(),
        }
    }

    /// The decision as the audit log and the webhook's answer give it:
    /// its fields and what a redelivery does.
    pub fn detail(&self) -> serde_json::Value {
        let mut v = serde_json::to_value(self).unwrap_or_else(|_| json!({}));
        if let Some(o) = v.as_object_mut() {
            if matches!(self, Decision::OutOfScope { .. }) {
                o.insert("runbook".into(), json!(self.runbook()));
            }
            o.insert("redelivery".into(), json!(self.redelivery()));
            if let Decision::BreakerOpen { runbook, .. } = self {
                o.insert(
                    "reset".into(),
                    json!(format!("firedrill trigger reset {runbook} --reason ...")),
                );
            }
            if let Decision::NotReady { runbook, .. } = self {
                o.insert("fix".into(), json!(format!("drill it live (firedrill drill run {runbook}) or set readiness_policy: warn")));
            }
        }
        v
    }

    /// The decision as the sender sees it: [`Decision::detail`] without
    /// what it may not know (the runbook outside its scope).
    pub fn answer(&self) -> serde_json::Value {
        let mut v = self.detail();
        if matches!(self, Decision::OutOfScope { .. })
            && let Some(o) = v.as_object_mut()
        {
            o.remove("runbook");
        }
        v
    }

    /// Whether a later delivery is decided again (a suppression whose
    /// reason may pass), as opposed to started, final or resolved.
    pub fn suppressed(&self) -> bool {
        matches!(
            self,
            Decision::Cooldown { .. }
                | Decision::RateLimited { .. }
                | Decision::BreakerOpen { .. }
                | Decision::NotReady { .. }
                | Decision::Halted { .. }
                | Decision::Shed { .. }
        )
    }

    pub fn runbook(&self) -> &str {
        match self {
            Decision::Started { runbook, .. }
            | Decision::Duplicate { runbook }
            | Decision::Resolved { runbook }
            | Decision::Cooldown { runbook, .. }
            | Decision::RateLimited { runbook, .. }
            | Decision::BreakerOpen { runbook, .. }
            | Decision::Halted { runbook, .. }
            | Decision::Refused { runbook, .. }
            | Decision::NotReady { runbook, .. }
            | Decision::Shed { runbook, .. }
            | Decision::OutOfScope { runbook, .. } => runbook,
        }
    }
}

fn outcome_name(d: &Decision) -> &'static str {
    match d {
        Decision::Started { .. } => "started",
        Decision::Duplicate { .. } => "duplicate",
        Decision::Resolved { .. } => "resolved",
        Decision::Cooldown { .. } => "cooldown",
        Decision::RateLimited { .. } => "rate-limited",
        Decision::BreakerOpen { .. } => "breaker-open",
        Decision::Halted { .. } => "halted",
        Decision::Refused { .. } => "refused",
        Decision::NotReady { .. } => "not-ready",
        Decision::Shed { .. } => "shed",
        Decision::OutOfScope { .. } => "out-of-scope",
    }
}

/// The `alert.received` audit record of `decision` on `alert` for trigger `c`.
fn received(actor: &Actor, alert: &Alert, c: &Candidate, decision: &Decision) -> NewEvent {
    let mut detail = decision.detail();
    detail["trigger"] = json!(c.index);
    NewEvent::new(
        actor,
        crate::audit::Action::AlertReceived,
        format!("runbook:{}", c.runbook),
    )
    .outcome(outcome_name(decision))
    .details(json!({
        "source": alert.source,
        "fingerprint": alert.fingerprint,
        "starts_at": alert.starts_at,
        "status": alert.status,
        "labels": alert.labels,
        "decision": detail,
    }))
}

async fn decide(
    service: &Service,
    actor: &Actor,
    templates: &Templates,
    alert: &Alert,
    c: &Candidate,
    admit: &crate::drill::Admit,
) -> Result<Decision, StoreError> {
    let runbook = c.runbook.clone();
    if alert.status == AlertStatus::Resolved {
        return Ok(Decision::Resolved { runbook });
    }
    let mut inputs = Vec::new();
    for (name, text) in &c.trigger.inputs {
        match render(templates, text, alert) {
            Ok(v) => inputs.push((name.clone(), v)),
            Err(e) => {
                return Ok(Decision::Refused {
                    runbook,
                    reason: format!("trigger input `{name}`: {e}"),
                });
            }
        }
    }
    let key = match &c.trigger.key {
        Some(k) => match render(templates, k, alert) {
            Ok(k) => k,
            Err(e) => {
                return Ok(Decision::Refused {
                    runbook,
                    reason: format!("trigger key: {e}"),
                });
            }
        },
        None => json!(inputs.iter().cloned().collect::<BTreeMap<_, _>>()).to_string(),
    };
    let store = service.store();
    if store
        .alert_claim_exists(alert.source, &alert.fingerprint, &alert.starts_at, &runbook)
        .await?
    {
        return Ok(Decision::Duplicate { runbook });
    }
    // Suppressions claim nothing: the next delivery is decided again.
    let breaker = c.trigger.breaker();
    let scope = c.trigger.breaker_scope();
    let breaker_key = (scope == BreakerScope::Key).then_some(key.as_str());
    if breaker_open(store.as_ref(), &runbook, breaker_key, breaker).await? {
        tracing::warn!(runbook = %runbook, key = breaker_key, failures = breaker, "trigger circuit breaker open");
        return Ok(Decision::BreakerOpen {
            runbook,
            failures: breaker,
            scope: scope.as_str().to_string(),
            key: breaker_key.map(String::from),
        });
    }
    let since = Since::of(&c.trigger);
    if let Some(d) = limited(store.as_ref(), &runbook, &key, &c.trigger, &since).await? {
        // The start that holds this key may be another delivery of this
        // very alert, claimed since the check above (an HA pair of
        // Alertmanagers): that is a duplicate, not a cooldown.
        if store
            .alert_claim_exists(alert.source, &alert.fingerprint, &alert.starts_at, &runbook)
            .await?
        {
            return Ok(Decision::Duplicate { runbook });
        }
        return Ok(d);
    }
    // Emergency policy: live automation runs only code that passed a live drill.
    let mut untested = None;
    if c.trigger.mode() == crate::Mode::Live
        && let Some(row) = store.runbook(&runbook, Some(c.version)).await?
    {
        let state = crate::drill::readiness_of(service, &row, std::time::SystemTime::now())
            .await?
            .state;
        if state != crate::drill::Readiness::Ready {
            if c.policy == crate::runbook::ReadinessPolicy::Block {
                return Ok(Decision::NotReady {
                    runbook,
                    state: state.as_str().to_string(),
                });
            }
            untested = Some(state.as_str());
        }
    }
    let gate = (untested.is_some()
        && c.policy == crate::runbook::ReadinessPolicy::RequireApproval)
        .then(|| crate::runbook::Approval {
            required: 1,
            roles: Vec::new(),
            timeout: crate::runbook::HumanDuration(READINESS_APPROVAL_TIMEOUT),
            reason: Some(format!(
                "{runbook} is {}: it has not passed a live drill within its max_age; approve to run it live anyway",
                untested.unwrap_or_default()
            )),
        });
    if let Some(state) = untested {
        tracing::warn!(runbook = %runbook, readiness = state, "live trigger of an untested runbook (readiness_policy: warn)");
        store
            .apply(Batch::new().event(
                NewEvent::new(actor, crate::audit::Action::RunUntested, format!("runbook:{runbook}"))
                    .outcome(state)
                    .details(json!({"policy": if gate.is_some() { "require-approval" } else { "warn" }, "readiness": state, "fingerprint": alert.fingerprint})),
            ))
            .await?;
    }
    let prepared = service
        .prepare(RunRequest {
            source: RunbookSource::Published {
                name: runbook.clone(),
                version: Some(c.version),
            },
            mode: c.trigger.mode(),
            actor: actor.clone(),
            inputs,
        })
        .await;
    let prepared = match prepared {
        Ok(mut p) => {
            p.gate = gate;
            p
        }
        Err(RunError::Store(e)) => return Err(e),
        Err(e @ RunError::Halted { .. }) => {
            return Ok(Decision::Halted {
                runbook,
                reason: e.to_string(),
            });
        }
        Err(e) => {
            return Ok(Decision::Refused {
                runbook,
                reason: e.to_string(),
            });
        }
    };
    // The claim decides between concurrent deliveries: one wins. It goes
    // in the admission's own batch with the run and its `alert.received`
    // record: one durable write, and a crash leaves all three or none (a
    // claim without its run would swallow every redelivery).
    let run_id = prepared.id.clone();
    let claim = Write::ClaimAlert {
        source: alert.source.to_string(),
        fingerprint: alert.fingerprint.clone(),
        starts_at: alert.starts_at.clone(),
        runbook: runbook.clone(),
        key: key.clone(),
        outcome: "started".to_string(),
        run_id: Some(run_id.clone()),
        received_at: now_rfc3339(),
        cooldown_since: since.cooldown.clone(),
        window_since: since
            .window
            .as_ref()
            .map_or_else(|| "9999".to_string(), |(w, _)| w.clone()),
        max_in_window: since.window.as_ref().map_or(i64::MAX, |(_, n)| *n),
    };
    let started = Decision::Started {
        runbook: runbook.clone(),
        run_id,
    };
    let record = received(actor, alert, c, &started);
    let prepared = prepared.with(Batch::new().write(claim).event(record));
    let reason = match admit(prepared).await {
        Ok(_) => return Ok(started),
        Err(reason) => reason,
    };
    // Nothing was written. Another delivery of this alert, or another
    // alert of this key, started a run first (the claim found its row
    // taken);
    if store
        .alert_claim_exists(alert.source, &alert.fingerprint, &alert.starts_at, &runbook)
        .await?
    {
        return Ok(Decision::Duplicate { runbook });
    }
    // or one started inside the cooldown, or filled the rate window,
    // between the checks and the claim;
    if let Some(d) = limited(store.as_ref(), &runbook, &key, &c.trigger, &since).await? {
        return Ok(d);
    }
    // or the run was not admitted (full, over the trigger rate): the
    // sender retries (503, Retry-After) and this alert may start then.
    Ok(Decision::Shed { runbook, reason })
}
