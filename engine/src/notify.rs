//! Notifications of what automation could not do, raised as firedrill's
//! own alerts in a Prometheus Alertmanager (`POST /api/v2/alerts`), so that
//! a team's routing, silences and inhibitions deliver them.
//!
//! Alertmanager keeps an alert only while it is re-sent, so the sink is a
//! state sync, the way Prometheus feeds it: every `resend-s` the notifier
//! reads the conditions from the store (runs awaiting approval or needing
//! attention, open trigger breakers, engaged switches, runbooks whose
//! readiness was lost, recently failed runs), posts each active one with
//! `endsAt` a few intervals ahead, and posts `endsAt = now` for each that
//! ended. Nothing is queued in memory: what failed to send is sent again
//! from the store's state at the next tick, after a restart too (an alert
//! that ended while firedrill was down expires at its `endsAt`). Each
//! condition's first delivery and its resolution are audited
//! (`notification.raised`, `notification.resolved`).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::audit::{Actor, ActorKind, NewEvent, Via};
use crate::executor::Service;
use crate::store::{Batch, RunFilter, RunStatus, StepStatus, StoreError};

/// `[notify]` in `firedrill.toml`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "kebab-case", default)]
pub struct NotifyConfig {
    /// The console's address as people reach it (`https://firedrill.example.com`),
    /// for links in notifications. Default none (no link).
    pub console_url: Option<String>,
    /// How often active conditions are sent again, in seconds (Alertmanager
    /// resolves an alert that is not re-sent before its `endsAt`, here four
    /// intervals). At least 1. Default 30.
    pub resend_s: u64,
    /// How long a failed run stays raised, in seconds. Default 3,600.
    pub failed_run_s: u64,
    /// Most alerts sent to one sink per tick; more are counted in
    /// `firedrill_notifications_dropped_total`. Default 1,000.
    pub max_alerts: usize,
    /// Alertmanagers to raise firedrill's alerts in. Default none.
    pub alertmanager: Vec<AlertmanagerSink>,
}

impl Default for NotifyConfig {
    fn default() -> Self {
        NotifyConfig {
            console_url: None,
            resend_s: 30,
            failed_run_s: 3600,
            max_alerts: 1000,
            alertmanager: Vec::new(),
        }
    }
}

/// One Alertmanager (an HA pair is two sinks: Alertmanager deduplicates).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct AlertmanagerSink {
    /// Its base address, e.g. `http://alertmanager:9093`.
    pub url: String,
    /// The secret (from `[secrets]`) sent as `Authorization: Bearer`.
    #[serde(default)]
    pub token_secret: Option<String>,
    /// Deadline of one post, in milliseconds. Default 5,000.
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u64,
    /// Only these events (empty: all).
    #[serde(default)]
    pub events: Vec<Event>,
    /// Only conditions of these runbooks (empty: all; a switch's global
    /// scope has no runbook and is sent only when this is empty).
    #[serde(default)]
    pub runbooks: Vec<String>,
}

fn default_timeout_ms() -> u64 {
    5000
}

/// What firedrill tells people about.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, schemars::JsonSchema,
)]
#[serde(rename_all = "kebab-case")]
pub enum Event {
    AwaitingApproval,
    NeedsAttention,
    RunFailed,
    BreakerOpen,
    SwitchEngaged,
    ReadinessLost,
}

impl Event {
    pub fn as_str(self) -> &'static str {
        match self {
            Event::AwaitingApproval => "awaiting-approval",
            Event::NeedsAttention => "needs-attention",
            Event::RunFailed => "run-failed",
            Event::BreakerOpen => "breaker-open",
            Event::SwitchEngaged => "switch-engaged",
            Event::ReadinessLost => "readiness-lost",
        }
    }

    fn alertname(self) -> &'static str {
        match self {
            Event::AwaitingApproval => "FiredrillRunAwaitingApproval",
            Event::NeedsAttention => "FiredrillRunNeedsAttention",
            Event::RunFailed => "FiredrillRunFailed",
            Event::BreakerOpen => "FiredrillTriggerBreakerOpen",
            Event::SwitchEngaged => "FiredrillSwitchEngaged",
            Event::ReadinessLost => "FiredrillRunbookReadinessLost",
        }
    }
}

/// One active condition, as an Alertmanager alert.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Condition {
    pub event: Event,
    pub runbook: Option<String>,
    pub labels: BTreeMap<String, String>,
    pub annotations: BTreeMap<String, String>,
    /// When it ends by itself (a failed run's raise), RFC 3339.
    pub ends_at: Option<String>,
}

impl Condition {
    fn new(event: Event, runbook: Option<&str>, severity: &str) -> Condition {
        let mut labels = BTreeMap::from([
            ("alertname".to_string(), event.alertname().to_string()),
            ("event".to_string(), event.as_str().to_string()),
            ("severity".to_string(), severity.to_string()),
            ("source".to_string(), "firedrill".to_string()),
        ]);
        if let Some(rb) = runbook {
            labels.insert("runbook".into(), rb.to_string());
        }
        Condition {
            event,
            runbook: runbook.map(String::from),
            labels,
            annotations: BTreeMap::new(),
            ends_at: None,
        }
    }

    fn label(mut self, k: &str, v: impl Into<String>) -> Self {
        self.labels.insert(k.into(), v.into());
        self
    }

    fn note(mut self, k: &str, v: impl Into<String>) -> Self {
        self.annotations.insert(k.into(), v.into());
        self
    }

    /// Its identity in Alertmanager: the label set.
    fn key(&self) -> String {
        serde_json::to_string(&self.labels).unwrap_or_default()
    }
}

fn rfc3339(t: SystemTime) -> String {
    humantime::format_rfc3339_millis(t).to_string()
}

/// Longest `resend-s` (an hour: Alertmanager holds an alert four intervals).
pub const MAX_RESEND_S: u64 = 3600;

/// The lease one node holds to notify (the others stand by).
pub const NOTIFIER_LEASE: &str = "notifier";

/// Most waiting runs and failed runs read per tick.
const SCAN: i64 = 1000;

/// Every condition people should know of now.
pub async fn conditions(
    service: &Service,
    alerts: &crate::alerts::Alerts,
    config: &NotifyConfig,
    now: SystemTime,
) -> Result<Vec<Condition>, StoreError> {
    let store = service.store();
    let link = |run: &str| {
        config
            .console_url
            .as_ref()
            .map(|u| format!("{}/console/runs/{run}", u.trim_end_matches('/')))
    };
    let mut out = Vec::new();
    for w in store.waiting_runs(SCAN).await? {
        let run = store.run(&w.id).await?;
        let initiator = run.map(|r| r.actor).unwrap_or_default();
        let mut c = match w.status {
            RunStatus::AwaitingApproval => {
                let steps = store.steps(&w.id).await?;
                let gate = steps
                    .iter()
                    .find(|s| s.status == StepStatus::AwaitingApproval);
                let spec = gate.and_then(|s| s.input.clone()).unwrap_or(Value::Null);
                Condition::new(Event::AwaitingApproval, Some(&w.runbook), "warning")
                    .note(
                        "summary",
                        format!("Run {} of {} is waiting for approval", w.id, w.runbook),
                    )
                    .note(
                        "approvers",
                        crate::executor::who_may_approve(&spec, &initiator),
                    )
                    .note("approve", format!("firedrill approve {} --comment \"...\"", w.id))
                    .note(
                        "reason",
                        spec["reason"].as_str().unwrap_or_default().to_string(),
                    )
                    .note("waiting_since", w.since.clone())
            }
            _ => Condition::new(Event::NeedsAttention, Some(&w.runbook), "critical")
                .note(
                    "summary",
                    format!("Run {} of {} needs attention", w.id, w.runbook),
                )
                .note(
                    "description",
                    format!(
                        "It stopped where it could not tell what happened. Read `firedrill runs show {}`, check the target, then `firedrill runs resume|skip|abandon {} --reason TEXT`.",
                        w.id, w.id
                    ),
                ),
        }
        .label("run", w.id.clone());
        if let Some(l) = link(&w.id) {
            c = c.note("url", l);
        }
        out.push(c);
    }
    let failed_since = rfc3339(
        now.checked_sub(Duration::from_secs(config.failed_run_s))
            .unwrap_or(SystemTime::UNIX_EPOCH),
    );
    for r in store
        .runs(&RunFilter {
            status: Some(RunStatus::Failed),
            limit: SCAN,
            ..RunFilter::default()
        })
        .await?
    {
        let Some(finished) = r.finished_at.clone() else {
            continue;
        };
        if finished < failed_since {
            continue;
        }
        let ends = humantime::parse_rfc3339_weak(&finished)
            .ok()
            .and_then(|t| t.checked_add(Duration::from_secs(config.failed_run_s)))
            .map(rfc3339);
        let mut c = Condition::new(Event::RunFailed, Some(&r.runbook), "warning")
            .label("run", r.id.clone())
            .note(
                "summary",
                format!("Run {} of {} ({}) failed", r.id, r.runbook, r.mode),
            )
            .note("error", r.error.clone().unwrap_or_default())
            .note("started_by", r.actor.clone());
        if let Some(l) = link(&r.id) {
            c = c.note("url", l);
        }
        c.ends_at = ends;
        out.push(c);
    }
    for (runbook, b) in alerts.breakers(store.as_ref()).await? {
        if !b.open {
            continue;
        }
        out.push(
            Condition::new(Event::BreakerOpen, Some(&runbook), "critical")
                .label("trigger", b.trigger.to_string())
                .note(
                    "summary",
                    format!(
                        "Alerts for {runbook} (trigger {}) start nothing: its circuit breaker is open",
                        b.trigger
                    ),
                )
                .note("keys", if b.scope == "key" { b.open_keys.join(", ") } else { "every key".into() })
                .note("reset", format!("firedrill trigger reset {runbook} --reason ...")),
        );
    }
    for s in store.switches().await? {
        if !s.engaged {
            continue;
        }
        let runbook = s.scope.strip_prefix("runbook:");
        out.push(
            Condition::new(Event::SwitchEngaged, runbook, "warning")
                .label("scope", s.scope.clone())
                .note(
                    "summary",
                    format!(
                        "The big red switch ({}) is engaged: live automation is halted",
                        s.scope
                    ),
                )
                .note("reason", s.reason.clone())
                .note("engaged_by", s.actor.clone()),
        );
    }
    for r in crate::drill::readiness(service, now).await? {
        use crate::drill::Readiness;
        if !matches!(r.state, Readiness::Stale | Readiness::Failing) {
            continue;
        }
        out.push(
            Condition::new(Event::ReadinessLost, Some(&r.runbook), "warning")
                .label("state", r.state.as_str())
                .note(
                    "summary",
                    format!(
                        "Runbook {} is no longer known to work ({})",
                        r.runbook,
                        r.state.as_str()
                    ),
                )
                .note("fix", format!("firedrill drill run {}", r.runbook)),
        );
    }
    Ok(out)
}

/// One sink and what it was last told.
struct Sink {
    config: AlertmanagerSink,
    endpoint: crate::outbound::Endpoint,
    url: url::Url,
    /// Conditions delivered and not yet resolved there, by key.
    raised: BTreeMap<String, Condition>,
}

impl Sink {
    fn wants(&self, c: &Condition) -> bool {
        (self.config.events.is_empty() || self.config.events.contains(&c.event))
            && (self.config.runbooks.is_empty()
                || c.runbook
                    .as_ref()
                    .is_some_and(|r| self.config.runbooks.contains(r)))
    }

    fn name(&self) -> String {
        format!("alertmanager:{}", self.endpoint.name)
    }
}

/// The notifier `serve` runs; stops when dropped.
#[derive(Debug)]
pub struct Notifier {
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Notifier {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The sinks of `config`, checked: `resend-s` within bounds, each URL
/// http(s) without credentials, each token secret readable.
fn checked(
    config: &NotifyConfig,
    secrets: &dyn crate::secret::SecretProvider,
) -> Result<Vec<Sink>, String> {
    if !(1..=MAX_RESEND_S).contains(&config.resend_s) {
        return Err(format!(
            "[notify] resend-s is {}; it must be 1 to {MAX_RESEND_S}",
            config.resend_s
        ));
    }
    let mut sinks = Vec::new();
    for s in &config.alertmanager {
        let endpoint = crate::outbound::Endpoint::new(
            "notification sink",
            &s.url,
            s.token_secret.as_deref(),
            s.timeout_ms,
            secrets,
        )?;
        // Under the base URL's path (`http://host/alertmanager/` too).
        let mut base = endpoint.url.clone();
        if !base.path().ends_with('/') {
            base.set_path(&format!("{}/", base.path()));
        }
        let url = base
            .join("api/v2/alerts")
            .map_err(|e| format!("notification sink {}: {e}", endpoint.name))?;
        sinks.push(Sink {
            config: s.clone(),
            endpoint,
            url,
            raised: BTreeMap::new(),
        });
    }
    Ok(sinks)
}

/// Check `[notify]` and start the notifier (`None` when no sink is set).
pub fn spawn(
    service: Service,
    alerts: Arc<crate::alerts::Alerts>,
    config: &NotifyConfig,
    secrets: &dyn crate::secret::SecretProvider,
) -> Result<Option<Notifier>, String> {
    if config.alertmanager.is_empty() {
        return Ok(None);
    }
    let mut sinks = checked(config, secrets)?;
    let config = config.clone();
    let task = tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(config.resend_s));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            if let Err(e) = once(&service, &alerts, &config, &mut sinks).await {
                tracing::warn!(error = %e, "notifications: could not read the store; retrying at the next tick");
            }
        }
    });
    Ok(Some(Notifier { task }))
}

fn alert_json(c: &Condition, starts: &str, ends: &str) -> Value {
    json!({"labels": c.labels, "annotations": c.annotations, "startsAt": starts, "endsAt": ends})
}

/// One tick: read the conditions, tell every sink.
async fn once(
    service: &Service,
    alerts: &crate::alerts::Alerts,
    config: &NotifyConfig,
    sinks: &mut [Sink],
) -> Result<(), StoreError> {
    // One node notifies at a time; it keeps the lease while it ticks.
    let node = service.node();
    let held =
        service
            .store()
            .apply(Batch::new().write(crate::store::Write::HoldLease {
                name: NOTIFIER_LEASE.into(),
                owner: node.id.clone(),
                lease_ms:
                    node.lease_ms_i64().max(
                        i64::try_from(config.resend_s.saturating_mul(3000)).unwrap_or(i64::MAX),
                    ),
            }))
            .await?;
    if held != crate::store::Applied::Done {
        return Ok(());
    }
    let now = SystemTime::now();
    let all = conditions(service, alerts, config, now).await?;
    let metrics = service.metrics();
    let actor = Actor::engine(ActorKind::Scheduler, "notifier", Via::Engine);
    let now_s = rfc3339(now);
    let hold = rfc3339(now + Duration::from_secs(config.resend_s.saturating_mul(4)));
    for sink in sinks.iter_mut() {
        let mut active: BTreeMap<String, &Condition> = BTreeMap::new();
        for c in all.iter().filter(|c| sink.wants(c)) {
            active.insert(c.key(), c);
        }
        let resolved: Vec<Condition> = sink
            .raised
            .iter()
            .filter(|(k, _)| !active.contains_key(*k))
            .map(|(_, c)| c.clone())
            .collect();
        let mut body = Vec::new();
        for c in resolved.iter() {
            body.push(alert_json(c, &now_s, &now_s));
        }
        for c in active.values() {
            let ends = match &c.ends_at {
                Some(e) if *e < hold => e.clone(),
                _ => hold.clone(),
            };
            body.push(alert_json(c, &now_s, &ends));
        }
        let name = sink.name();
        if body.len() > config.max_alerts {
            let dropped = body.len() - config.max_alerts;
            metrics.add(
                "firedrill_notifications_dropped_total",
                &[("sink", &name)],
                dropped as u64,
            );
            tracing::warn!(sink = %name, dropped, "more notifications than [notify] max-alerts; the rest are sent when there is room");
            body.truncate(config.max_alerts);
        }
        if body.is_empty() {
            continue;
        }
        let sent = serde_json::to_vec(&body).unwrap_or_default();
        match sink
            .endpoint
            .post(&sink.url, "application/json", sent)
            .await
        {
            Ok(()) => {
                metrics.inc(
                    "firedrill_notifications_total",
                    &[("sink", &name), ("outcome", "sent")],
                );
                let mut batch = Batch::new();
                let told: BTreeSet<String> = body
                    .iter()
                    .map(|a| serde_json::to_string(&a["labels"]).unwrap_or_default())
                    .collect();
                for c in resolved.iter().filter(|c| told.contains(&c.key())) {
                    sink.raised.remove(&c.key());
                    batch = batch.event(audit(
                        &actor,
                        crate::audit::Action::NotificationResolved,
                        &name,
                        c,
                    ));
                }
                for c in active.values().filter(|c| told.contains(&c.key())) {
                    if let std::collections::btree_map::Entry::Vacant(v) =
                        sink.raised.entry(c.key())
                    {
                        batch = batch.event(audit(
                            &actor,
                            crate::audit::Action::NotificationRaised,
                            &name,
                            c,
                        ));
                        v.insert((*c).clone());
                    }
                }
                service.store().apply(batch).await?;
            }
            Err(e) => {
                metrics.inc(
                    "firedrill_notifications_total",
                    &[("sink", &name), ("outcome", "failed")],
                );
                tracing::warn!(sink = %name, error = %e, "could not notify; sending again at the next tick");
            }
        }
    }
    Ok(())
}

fn audit(actor: &Actor, action: crate::audit::Action, sink: &str, c: &Condition) -> NewEvent {
    let subject = match (&c.labels.get("run"), &c.runbook) {
        (Some(run), _) => format!("run:{run}"),
        (None, Some(rb)) => format!("runbook:{rb}"),
        _ => "notify".to_string(),
    };
    let mut e = NewEvent::new(actor, action, subject)
        .outcome(c.event.as_str())
        .details(json!({"sink": sink, "labels": c.labels}));
    if let Some(run) = c.labels.get("run") {
        e = e.run(run);
    }
    e
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sink(url: &str) -> AlertmanagerSink {
        AlertmanagerSink {
            url: url.into(),
            token_secret: None,
            timeout_ms: 100,
            events: Vec::new(),
            runbooks: Vec::new(),
        }
    }

    #[test]
    fn the_config_is_checked_at_its_edges() {
        let secrets = crate::secret::EnvSecrets;
        let with = |resend_s: u64, url: &str| NotifyConfig {
            resend_s,
            alertmanager: vec![sink(url)],
            ..NotifyConfig::default()
        };
        for (resend, url, needle) in [
            (0, "http://127.0.0.1:9093", "resend-s is 0"),
            (
                MAX_RESEND_S + 1,
                "http://127.0.0.1:9093",
                "must be 1 to 3600",
            ),
            (
                30,
                "http://user:pw@127.0.0.1:9093",
                "no credentials in the URL",
            ),
            (30, "ftp://127.0.0.1/", "http:// or https://"),
        ] {
            let Err(err) = checked(&with(resend, url), &secrets) else {
                panic!("{url} accepted");
            };
            assert!(err.contains(needle), "{err}");
            assert!(!err.contains("pw"), "{err}");
        }
        for resend in [1, MAX_RESEND_S] {
            let sinks = checked(&with(resend, "http://127.0.0.1:9/am"), &secrets).expect("edge");
            // The path prefix is kept.
            assert_eq!(sinks[0].url.as_str(), "http://127.0.0.1:9/am/api/v2/alerts");
        }
    }
}
