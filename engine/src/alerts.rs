//! Alerts that start runbooks: the payloads of Alertmanager, PagerDuty and
//! the generic endpoint (each parsed into [`Alert`]s), matching against
//! published runbooks' `triggers`, and the decisions that keep automation
//! from making an incident worse:
//!
//! - **dedup**: an alert (source + fingerprint + startsAt) starts at most one
//!   run per runbook, however often it is delivered (a claim row with that
//!   primary key is written before the run starts);
//! - **resolved** notifications are recorded, never run;
//! - **cooldown**: after a run starts for a trigger key, alerts with the same
//!   key start nothing for the trigger's cooldown;
//! - **max_runs** per key per window, and a per-runbook **circuit breaker**
//!   after consecutive failed triggered runs;
//! - the **big red switch** refuses live triggered runs like any other;
//! - a global rate of triggered runs (`server.trigger-runs-per-minute`),
//!   applied by the server when it admits the run: beyond it the alert is
//!   shed (503) and its claim released, so the sender's retry can start it.
//!
//! Every decision is an `alert.received` audit event with the alert source
//! as actor.

mod alertmanager;
mod generic;
mod pagerduty;

use std::collections::BTreeMap;

pub use alertmanager::AlertmanagerPayload;
pub use generic::GenericPayload;
pub use pagerduty::{
    MAX_SIGNATURES, PagerDutyDelivery, PagerDutyEvent, verify_pagerduty_signature,
};

use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::audit::{Actor, NewEvent, now_rfc3339};
use crate::executor::{RunError, RunRequest, RunbookSource, Service};
use crate::runbook::{Templates, parse_runbook};
use crate::store::{Applied, Batch, StoreError, Write};

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
    Cooldown {
        runbook: String,
        key: String,
    },
    /// `max_runs` for this key within its window was reached.
    RateLimited {
        runbook: String,
        key: String,
    },
    /// The runbook's last triggered runs all failed: its triggers are paused
    /// until `firedrill trigger reset`.
    BreakerOpen {
        runbook: String,
        failures: u32,
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
    /// The run queue is full; the claim was released so a redelivery can start it.
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

/// A matching trigger, ready to decide on.
struct Candidate {
    runbook: String,
    version: i64,
    trigger: crate::runbook::Trigger,
    policy: crate::runbook::ReadinessPolicy,
}

/// Triggers of the newest published version of every runbook that match `alert`.
async fn candidates(service: &Service, alert: &Alert) -> Result<Vec<Candidate>, StoreError> {
    let mut out = Vec::new();
    // The current version of each runbook (the newest, or a rollback's pin).
    for row in service.store().current_runbooks().await? {
        let Ok(rb) = parse_runbook(&row.name, &row.source) else {
            continue;
        };
        let policy = rb
            .readiness_policy
            .unwrap_or(crate::runbook::ReadinessPolicy::Block);
        if let Some(t) = rb
            .triggers
            .into_iter()
            .find(|t| t.source.as_str() == alert.source && t.matches(&alert.labels))
        {
            out.push(Candidate {
                runbook: row.name,
                version: row.version,
                trigger: t,
                policy,
            });
        }
    }
    Ok(out)
}

fn render(templates: &Templates, text: &str, alert: &Alert) -> Result<String, String> {
    let ctx = minijinja::Value::from(minijinja::value::Serde(json!({"alert": alert})));
    match templates.render_value(text, &ctx) {
        Ok(serde_json::Value::String(s)) => Ok(s),
        Ok(other) => Ok(other.to_string()),
        Err(e) => Err(e.to_string()),
    }
}

/// Whether `runbook`'s trigger circuit breaker is open: its newest
/// `threshold` triggered runs since the last reset all failed (0: never).
pub async fn breaker_open(
    store: &dyn crate::store::Store,
    runbook: &str,
    threshold: u32,
) -> Result<bool, StoreError> {
    if threshold == 0 {
        return Ok(false);
    }
    let last = store.triggered_outcomes(runbook, threshold).await?;
    Ok(last.len() == threshold as usize
        && last.iter().all(|s| *s == crate::store::RunStatus::Failed))
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

/// Decide, and start runs through `admit`, for every alert.
///
/// `scope` is the runbooks the sender's token is limited to (empty: all);
/// a matching runbook outside it starts nothing ([`Decision::OutOfScope`]).
pub async fn handle(
    service: &Service,
    actor: &Actor,
    scope: &[String],
    alerts: &[Alert],
    admit: &crate::drill::Admit,
) -> Result<Vec<Decision>, StoreError> {
    let templates = Templates::default();
    let mut decisions = Vec::new();
    for alert in alerts {
        for c in candidates(service, alert).await? {
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
            let (outcome, detail) = match &decision {
                Decision::Started { run_id, .. } => ("started", json!({"run_id": run_id})),
                Decision::Duplicate { .. } => ("duplicate", json!({})),
                Decision::Resolved { .. } => ("resolved", json!({})),
                Decision::Cooldown { key, .. } => ("cooldown", json!({"key": key})),
                Decision::RateLimited { key, .. } => ("rate-limited", json!({"key": key})),
                Decision::BreakerOpen { failures, .. } => (
                    "breaker-open",
                    json!({"consecutive_failures": failures, "reset": format!("firedrill trigger reset {} --reason ...", c.runbook)}),
                ),
                Decision::NotReady { state, .. } => (
                    "not-ready",
                    json!({"readiness": state, "policy": "block", "fix": format!("drill it live (firedrill drill run {}) or set readiness_policy: warn", c.runbook)}),
                ),
                Decision::Halted { reason, .. }
                | Decision::Refused { reason, .. }
                | Decision::OutOfScope { reason, .. }
                | Decision::Shed { reason, .. } => {
                    (outcome_name(&decision), json!({"reason": reason}))
                }
            };
            service
                .store()
                .apply(
                    Batch::new().event(
                        NewEvent::new(
                            actor,
                            crate::audit::Action::AlertReceived,
                            format!("runbook:{}", c.runbook),
                        )
                        .outcome(outcome)
                        .details(json!({
                            "source": alert.source,
                            "fingerprint": alert.fingerprint,
                            "starts_at": alert.starts_at,
                            "status": alert.status,
                            "labels": alert.labels,
                            "decision": detail,
                        })),
                    ),
                )
                .await?;
            decisions.push(decision);
        }
    }
    Ok(decisions)
}

/// Record `decision` as the alert's claim for its runbook; when another
/// delivery claimed the alert first, that one stands and this is a duplicate.
async fn settle(
    store: &dyn crate::store::Store,
    claim: Write,
    decision: Decision,
) -> Result<Decision, StoreError> {
    let runbook = decision.runbook().to_string();
    Ok(match store.apply(Batch::new().write(claim)).await? {
        Applied::Done => decision,
        _ => Decision::Duplicate { runbook },
    })
}

impl Decision {
    /// The decision's name (`started`, `duplicate`, ...), as in its JSON.
    pub fn outcome(&self) -> String {
        serde_json::to_value(self)
            .ok()
            .and_then(|v| v["outcome"].as_str().map(String::from))
            .unwrap_or_default()
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
    let claim = |outcome: &str, run_id: Option<String>| Write::ClaimAlert {
        source: alert.source.to_string(),
        fingerprint: alert.fingerprint.clone(),
        starts_at: alert.starts_at.clone(),
        runbook: runbook.clone(),
        key: key.clone(),
        outcome: outcome.to_string(),
        run_id,
        received_at: now_rfc3339(),
    };
    let ago = |d: std::time::Duration| {
        // Same format as `received_at`, so the two compare as text.
        humantime::format_rfc3339_millis(
            std::time::SystemTime::now()
                .checked_sub(d)
                .unwrap_or(std::time::UNIX_EPOCH),
        )
        .to_string()
    };
    let breaker = c.trigger.breaker();
    if breaker_open(store.as_ref(), &runbook, breaker).await? {
        tracing::warn!(runbook = %runbook, failures = breaker, "trigger circuit breaker open");
        let claimed = claim("breaker-open", None);
        return settle(
            store.as_ref(),
            claimed,
            Decision::BreakerOpen {
                runbook,
                failures: breaker,
            },
        )
        .await;
    }
    if store
        .alert_runs_since(&runbook, &key, &ago(c.trigger.cooldown()))
        .await?
        > 0
    {
        let claimed = claim("cooldown", None);
        return settle(store.as_ref(), claimed, Decision::Cooldown { runbook, key }).await;
    }
    if let Some(budget) = &c.trigger.max_runs
        && store
            .alert_runs_since(&runbook, &key, &ago(budget.per.0))
            .await?
            >= u64::from(budget.count)
    {
        let claimed = claim("rate-limited", None);
        return settle(
            store.as_ref(),
            claimed,
            Decision::RateLimited { runbook, key },
        )
        .await;
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
                let claimed = claim("not-ready", None);
                return settle(
                    store.as_ref(),
                    claimed,
                    Decision::NotReady {
                        runbook,
                        state: state.as_str().to_string(),
                    },
                )
                .await;
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
            let reason = e.to_string();
            let claimed = claim("halted", None);
            return settle(
                store.as_ref(),
                claimed,
                Decision::Halted { runbook, reason },
            )
            .await;
        }
        Err(e) => {
            let reason = e.to_string();
            let claimed = claim("refused", None);
            return settle(
                store.as_ref(),
                claimed,
                Decision::Refused { runbook, reason },
            )
            .await;
        }
    };
    // The claim decides between concurrent deliveries: one wins.
    let run_id = prepared.id.clone();
    if store
        .apply(Batch::new().write(claim("started", Some(run_id.clone()))))
        .await?
        != Applied::Done
    {
        return Ok(Decision::Duplicate { runbook });
    }
    match admit(prepared).await {
        Ok(run_id) => Ok(Decision::Started { runbook, run_id }),
        Err(reason) => {
            store
                .apply(Batch::new().write(Write::ReleaseAlert {
                    source: alert.source.to_string(),
                    fingerprint: alert.fingerprint.clone(),
                    starts_at: alert.starts_at.clone(),
                    runbook: runbook.clone(),
                }))
                .await?;
            Ok(Decision::Shed { runbook, reason })
        }
    }
}
