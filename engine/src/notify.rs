//! Notifications of what automation could not do: runs awaiting approval
//! or needing attention, failed runs, open trigger breakers, engaged
//! switches, runbooks whose readiness was lost.
//!
//! Every `resend-s` the notifier reads these conditions from the store and
//! compares them with what each sink was told (`notified`, in the store,
//! so restarts and lease handovers neither repeat nor forget):
//! - an Alertmanager sink (`POST /api/v2/alerts`) gets a state sync, the
//!   way Prometheus feeds it: each active condition with `endsAt` four
//!   intervals ahead, `endsAt = now` for each that ended;
//! - a webhook (HMAC-SHA256 signed) or Slack-compatible sink gets one
//!   delivery per change, through the durable outbox: queued in the
//!   transaction that records the change, delivered in order from the
//!   head by the sink's own task, retried with backoff, bounded by
//!   `max-queued` and `give-up-s`, each delivery and drop audited.
//!
//! One node holds the `notifier` lease, renewed every second by its own
//! task; the others stand by.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::audit::{Actor, ActorKind, NewEvent, Via};
use crate::executor::Service;
use crate::store::{Batch, NotifiedRow, OutboxRow, RunFilter, RunStatus, StepStatus, StoreError};

/// `[notify]` in `firedrill.toml`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "kebab-case", default)]
pub struct NotifyConfig {
    /// The console's address as people reach it (`https://firedrill.example.com`),
    /// for links in notifications. Default none (no link).
    pub console_url: Option<String>,
    /// How often the conditions are read (and sent again to Alertmanager,
    /// which resolves an alert not re-sent before its `endsAt`, here four
    /// intervals), in seconds. 1 to 3,600. Default 30.
    pub resend_s: u64,
    /// How long a failed run stays raised, in seconds. 1 to 604,800.
    /// Default 3,600.
    pub failed_run_s: u64,
    /// Most alerts sent to one Alertmanager per tick (more are counted in
    /// `firedrill_notifications_dropped_total{reason="max-alerts"}` and sent
    /// when there is room), and most changes queued for one webhook or
    /// Slack sink per tick (the rest wait for the next). 1 to 100,000.
    /// Default 1,000.
    pub max_alerts: usize,
    /// Most deliveries queued for one webhook or Slack sink; beyond it the
    /// oldest is dropped (counted and audited). 1 to 100,000. Default 1,000.
    pub max_queued: usize,
    /// Wait before the second attempt of a delivery, in milliseconds;
    /// doubled per failure up to `retry-max-ms`. 100 to 60,000. Default 1,000.
    pub retry_first_ms: u64,
    /// Longest wait between attempts, in milliseconds. `retry-first-ms` to
    /// 3,600,000. Default 300,000.
    pub retry_max_ms: u64,
    /// A delivery not made this many seconds after it was queued is given
    /// up (counted and audited). 1 to 604,800. Default 86,400.
    pub give_up_s: u64,
    /// Alertmanagers to raise firedrill's alerts in. Default none.
    pub alertmanager: Vec<AlertmanagerSink>,
    /// Webhooks to post signed notifications to. Default none.
    pub webhook: Vec<WebhookSink>,
    /// Slack-compatible incoming webhooks (Slack, Mattermost, Rocket.Chat).
    /// Default none.
    pub slack: Vec<SlackSink>,
}

impl Default for NotifyConfig {
    fn default() -> Self {
        NotifyConfig {
            console_url: None,
            resend_s: 30,
            failed_run_s: 3600,
            max_alerts: 1000,
            max_queued: 1000,
            retry_first_ms: 1000,
            retry_max_ms: 300_000,
            give_up_s: 86_400,
            alertmanager: Vec::new(),
            webhook: Vec::new(),
            slack: Vec::new(),
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

/// A webhook: each notification POSTed as JSON, signed with HMAC-SHA256
/// (`X-Firedrill-Signature`), through the durable outbox.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct WebhookSink {
    /// How metrics, logs and the audit log name it (`webhook:NAME`; its
    /// URL may carry a credential, so it is never shown). Renaming a sink
    /// drops its queue and raises its conditions again.
    pub name: String,
    /// Where to POST, e.g. `https://hooks.example.com/firedrill`.
    pub url: String,
    /// The secret (from `[secrets]`, at least 16 bytes) that signs each
    /// delivery. Required.
    pub signing_secret: String,
    /// A secret sent as `Authorization: Bearer`, when the receiver wants one.
    #[serde(default)]
    pub token_secret: Option<String>,
    /// Deadline of one post, in milliseconds. Default 5,000.
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u64,
    /// Only these events (empty: all).
    #[serde(default)]
    pub events: Vec<Event>,
    /// Only conditions of these runbooks (empty: all).
    #[serde(default)]
    pub runbooks: Vec<String>,
}

/// A Slack-compatible incoming webhook: each notification as one
/// `{"text": ...}` message, through the durable outbox.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct SlackSink {
    /// How metrics, logs and the audit log name it (`slack:NAME`); the URL
    /// is a credential and never shown.
    pub name: String,
    /// The secret (from `[secrets]`) holding the incoming-webhook URL.
    pub url_secret: String,
    /// Deadline of one post, in milliseconds. Default 5,000.
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u64,
    /// Only these events (empty: all).
    #[serde(default)]
    pub events: Vec<Event>,
    /// Only conditions of these runbooks (empty: all).
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
        let v: String = v.into();
        self.annotations
            .insert(k.into(), crate::term::clip(&v, MAX_NOTE_CHARS).to_string());
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

/// Longest annotation value (a run's error, a switch's reason), in bytes.
pub const MAX_NOTE_CHARS: usize = 2048;

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
                .note("state", r.state.as_str())
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

/// What kind of sink, and where it posts.
enum Kind {
    /// A state sync to `POST /api/v2/alerts`.
    Alertmanager { url: url::Url },
    /// Signed JSON through the outbox.
    Webhook { signing_key: crate::secret::Secret },
    /// `{"text": ...}` through the outbox.
    Slack,
}

/// One configured sink.
struct Sink {
    /// `alertmanager:URL`, `webhook:NAME`, `slack:NAME` (no credential).
    name: String,
    kind: Kind,
    endpoint: crate::outbound::Endpoint,
    events: Vec<Event>,
    runbooks: Vec<String>,
}

impl Sink {
    fn wants(&self, c: &Condition) -> bool {
        (self.events.is_empty() || self.events.contains(&c.event))
            && (self.runbooks.is_empty()
                || c.runbook
                    .as_ref()
                    .is_some_and(|r| self.runbooks.contains(r)))
    }
}

/// The notifier `serve` runs; stops when dropped.
#[derive(Debug)]
pub struct Notifier {
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Drop for Notifier {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

/// A sink name as metrics, logs and the audit log show it: printable
/// ASCII without quotes, at most 64 characters.
fn checked_name(what: &str, name: &str) -> Result<String, String> {
    if name.is_empty()
        || name.len() > 64
        || !name
            .chars()
            .all(|c| c.is_ascii_graphic() && c != '"' && c != '\\')
    {
        return Err(format!(
            "{what}: name {:?} must be 1 to 64 printable characters without quotes or spaces",
            crate::term::clip(name, 64)
        ));
    }
    Ok(name.to_string())
}

/// Shortest and longest `timeout-ms` of a sink.
pub const MIN_TIMEOUT_MS: u64 = 100;
pub const MAX_TIMEOUT_MS: u64 = 30_000;

fn in_range(what: &str, v: u64, lo: u64, hi: u64) -> Result<(), String> {
    if (lo..=hi).contains(&v) {
        Ok(())
    } else {
        Err(format!("[notify] {what} is {v}; it must be {lo} to {hi}"))
    }
}

/// The sinks of `config`, checked: every bound within its range, each URL
/// http(s) without credentials, each secret readable, names distinct.
fn checked(
    config: &NotifyConfig,
    secrets: &dyn crate::secret::SecretProvider,
) -> Result<Vec<Sink>, String> {
    in_range("resend-s", config.resend_s, 1, MAX_RESEND_S)?;
    in_range("max-queued", config.max_queued as u64, 1, MAX_QUEUED as u64)?;
    in_range("retry-first-ms", config.retry_first_ms, 100, 60_000)?;
    in_range(
        "retry-max-ms",
        config.retry_max_ms,
        config.retry_first_ms,
        3_600_000,
    )?;
    in_range("give-up-s", config.give_up_s, 1, MAX_GIVE_UP_S)?;
    in_range("max-alerts", config.max_alerts as u64, 1, MAX_QUEUED as u64)?;
    in_range("failed-run-s", config.failed_run_s, 1, MAX_GIVE_UP_S)?;
    if let Some(u) = &config.console_url
        && !url::Url::parse(u).is_ok_and(|u| matches!(u.scheme(), "http" | "https"))
    {
        return Err(format!(
            "[notify] console-url {:?} is not an http:// or https:// URL (the console's address, e.g. https://firedrill.example.com)",
            crate::outbound::without_credentials(u)
        ));
    }
    let mut sinks = Vec::new();
    for s in &config.alertmanager {
        in_range(
            "alertmanager timeout-ms",
            s.timeout_ms,
            MIN_TIMEOUT_MS,
            MAX_TIMEOUT_MS,
        )?;
        let endpoint = crate::outbound::Endpoint::new(
            "[[notify.alertmanager]]",
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
            name: format!("alertmanager:{}", endpoint.name),
            kind: Kind::Alertmanager { url },
            endpoint,
            events: s.events.clone(),
            runbooks: s.runbooks.clone(),
        });
    }
    for s in &config.webhook {
        let name = checked_name("[[notify.webhook]]", &s.name)?;
        in_range(
            &format!("webhook {name} timeout-ms"),
            s.timeout_ms,
            MIN_TIMEOUT_MS,
            MAX_TIMEOUT_MS,
        )?;
        // The URL is checked without the token, so that an error about it
        // (which must not show it: a path may hold a credential) and one
        // about the token secret are told apart.
        let mut endpoint =
            crate::outbound::Endpoint::new("webhook sink", &s.url, None, s.timeout_ms, secrets)
                .map_err(|_| {
                    format!(
                        "[[notify.webhook]] {name}: url must be an http:// or https:// URL without credentials in it (a token goes in token-secret)"
                    )
                })?;
        if let Some(t) = &s.token_secret {
            let token = secrets
                .get(t)
                .map_err(|e| format!("[[notify.webhook]] {name}: token-secret {t}: {e}"))?;
            endpoint.token = Some(token.expose().to_string());
        }
        endpoint.name = format!("webhook:{name}");
        let signing_key = secrets.get(&s.signing_secret).map_err(|e| {
            format!(
                "[[notify.webhook]] {name}: signing-secret {}: {e}",
                s.signing_secret
            )
        })?;
        if signing_key.expose().len() < 16 {
            return Err(format!(
                "[[notify.webhook]] {name}: the signing secret {} is shorter than 16 bytes; use a random one (openssl rand -hex 32)",
                s.signing_secret
            ));
        }
        sinks.push(Sink {
            name: format!("webhook:{name}"),
            kind: Kind::Webhook { signing_key },
            endpoint,
            events: s.events.clone(),
            runbooks: s.runbooks.clone(),
        });
    }
    for s in &config.slack {
        let name = checked_name("[[notify.slack]]", &s.name)?;
        in_range(
            &format!("slack {name} timeout-ms"),
            s.timeout_ms,
            MIN_TIMEOUT_MS,
            MAX_TIMEOUT_MS,
        )?;
        // The URL is the credential (Slack's token is its path): no error
        // or log ever shows it, only the sink's name.
        let url = secrets
            .get(&s.url_secret)
            .map_err(|e| format!("[[notify.slack]] {name}: url-secret {}: {e}", s.url_secret))?;
        let mut endpoint = crate::outbound::Endpoint::new(
            "slack sink",
            url.expose().trim(),
            None,
            s.timeout_ms,
            secrets,
        )
        .map_err(|_| {
            format!(
                "[[notify.slack]] {name}: the secret {} does not hold an http:// or https:// URL without credentials (an incoming-webhook URL)",
                s.url_secret
            )
        })?;
        endpoint.name = format!("slack:{name}");
        if endpoint.url.scheme() == "http"
            && !endpoint
                .url
                .host_str()
                .is_some_and(|h| h == "127.0.0.1" || h == "localhost" || h == "[::1]")
        {
            tracing::warn!(sink = %endpoint.name, "the incoming-webhook URL is a credential and crosses the network in clear text; use https://");
        }
        sinks.push(Sink {
            name: format!("slack:{name}"),
            kind: Kind::Slack,
            endpoint,
            events: s.events.clone(),
            runbooks: s.runbooks.clone(),
        });
    }
    let mut seen = BTreeSet::new();
    for s in &sinks {
        if !seen.insert(s.name.clone()) {
            return Err(format!(
                "[notify]: two sinks are called {}; give each its own name (or URL)",
                s.name
            ));
        }
    }
    Ok(sinks)
}

/// Until when (ms since the epoch) this node holds the notifier lease, as
/// far as it knows: renewed every second, with a third of the lease as
/// margin. Every write of the notifier checks it first, so a node that
/// lost the lease stops writing before another can take it.
#[derive(Debug, Default)]
struct Leader(std::sync::atomic::AtomicI64);

impl Leader {
    fn leading(&self) -> bool {
        crate::store::now_ms() < self.0.load(std::sync::atomic::Ordering::SeqCst)
    }

    fn set(&self, until: i64) {
        self.0.store(until, std::sync::atomic::Ordering::SeqCst);
    }
}

/// Check `[notify]` and start the notifier: a task that holds the
/// `notifier` lease (renewed every second), a task that reads the
/// conditions every `resend-s` and tells each sink (Alertmanager syncs
/// side by side), and one task per webhook or Slack sink that delivers its
/// queue, so a sink that hangs holds up no other. With no sink configured
/// it only clears what removed sinks left in the store, then stops.
pub fn spawn(
    service: Service,
    alerts: Arc<crate::alerts::Alerts>,
    config: &NotifyConfig,
    secrets: &dyn crate::secret::SecretProvider,
) -> Result<Option<Notifier>, String> {
    let sinks: Vec<Arc<Sink>> = checked(config, secrets)?
        .into_iter()
        .map(Arc::new)
        .collect();
    let config = Arc::new(config.clone());
    let leader = Arc::new(Leader::default());
    let mut tasks = Vec::new();
    if sinks.is_empty() {
        tasks.push(tokio::spawn(async move {
            for _ in 0..CLEANUP_TRIES {
                match hold_lease(&service).await {
                    Ok(Some(until)) => leader.set(until),
                    Ok(None) => return,
                    Err(e) => tracing::warn!(error = %e, "notifications: could not hold the notifier lease"),
                }
                if leader.leading() {
                    match forget_removed(&service, &[], &leader).await {
                        Ok(()) => return,
                        Err(e) => tracing::warn!(error = %e, "notifications: could not clear the sinks no longer in [notify]; retrying"),
                    }
                }
                tokio::time::sleep(Duration::from_secs(config.resend_s)).await;
            }
        }));
        return Ok(Some(Notifier { tasks }));
    }
    for sink in sinks
        .iter()
        .filter(|s| !matches!(s.kind, Kind::Alertmanager { .. }))
    {
        let (service, config, sink, leader) = (
            service.clone(),
            config.clone(),
            sink.clone(),
            leader.clone(),
        );
        tasks.push(tokio::spawn(async move {
            let mut tick = tokio::time::interval(TICK);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                if let Err(e) = deliver(&service, &config, &sink, &leader).await {
                    tracing::warn!(sink = %sink.name, error = %e, "notifications: could not read or update the outbox; retrying at the next tick");
                }
            }
        }));
    }
    let (lease_service, lease_leader) = (service.clone(), leader.clone());
    tasks.push(tokio::spawn(async move {
        let mut tick = tokio::time::interval(TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            match hold_lease(&lease_service).await {
                Ok(Some(until)) => lease_leader.set(until),
                Ok(None) => lease_leader.set(0),
                Err(e) => {
                    lease_leader.set(0);
                    tracing::warn!(error = %e, "notifications: could not hold the notifier lease; retrying at the next tick");
                }
            }
        }
    }));
    tasks.push(tokio::spawn(async move {
        let mut tick = tokio::time::interval(TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let resend = Duration::from_secs(config.resend_s);
        let mut last_scan: Option<tokio::time::Instant> = None;
        loop {
            tick.tick().await;
            if !leader.leading() || last_scan.is_some_and(|t| t.elapsed() < resend) {
                continue;
            }
            last_scan = Some(tokio::time::Instant::now());
            if let Err(e) = forget_removed(&service, &sinks, &leader).await {
                tracing::warn!(error = %e, "notifications: could not clear removed sinks; retrying at the next scan");
            }
            if let Err(e) = scan(&service, &alerts, &config, &sinks, &leader).await {
                tracing::warn!(error = %e, "notifications: could not read the conditions; retrying at the next scan");
            }
        }
    }));
    Ok(Some(Notifier { tasks }))
}

/// How often a node with no sink tries to clear what removed sinks left.
const CLEANUP_TRIES: usize = 10;

/// How often the lease is renewed and queued deliveries are looked at.
const TICK: Duration = Duration::from_secs(1);

/// Most `max-queued` and `max-alerts`.
pub const MAX_QUEUED: usize = 100_000;

/// Longest `give-up-s` and `failed-run-s` (a week).
pub const MAX_GIVE_UP_S: u64 = 7 * 24 * 3600;

/// Most conditions a sink is remembered to have been told of (a tick
/// reads them all; more than the conditions a tick can produce).
const MAX_TOLD: i64 = 10_000;

/// Most deliveries of one sink read per tick (its queue's head).
const DELIVERY_BATCH: i64 = 100;

/// Most deliveries dropped in one audited batch.
const MAX_DROPPED: i64 = 1000;

fn alert_json(c: &Condition, starts: &str, ends: &str) -> Value {
    json!({"labels": c.labels, "annotations": c.annotations, "startsAt": starts, "endsAt": ends})
}

fn condition_json(c: &Condition) -> Value {
    json!({"event": c.event, "runbook": c.runbook, "labels": c.labels, "annotations": c.annotations})
}

fn notifier() -> Actor {
    Actor::engine(ActorKind::Scheduler, "notifier", Via::Engine)
}

/// Take or keep the notifier lease: until when this node may notify
/// (ms since the epoch, with a third of the lease as margin), or `None`
/// while another node holds it.
async fn hold_lease(service: &Service) -> Result<Option<i64>, StoreError> {
    let node = service.node();
    let lease_ms = node.lease_ms_i64().max(3000);
    let asked = crate::store::now_ms();
    let held = service
        .store()
        .apply(Batch::new().write(crate::store::Write::HoldLease {
            name: NOTIFIER_LEASE.into(),
            owner: node.id.clone(),
            lease_ms,
        }))
        .await?;
    Ok((held == crate::store::Applied::Done).then(|| asked.saturating_add(lease_ms * 2 / 3)))
}

/// One scan: read the conditions, tell every sink what changed, side by
/// side (a sink's failure is logged and leaves the others alone).
async fn scan(
    service: &Service,
    alerts: &crate::alerts::Alerts,
    config: &NotifyConfig,
    sinks: &[Arc<Sink>],
    leader: &Leader,
) -> Result<(), StoreError> {
    let now = SystemTime::now();
    let all = conditions(service, alerts, config, now).await?;
    futures::future::join_all(sinks.iter().map(|sink| {
        let all = &all;
        async move {
            if let Err(e) = scan_sink(service, config, sink, all, now, leader).await {
                tracing::warn!(sink = %sink.name, error = %e, "notifications: could not update this sink; retrying at the next scan");
            }
        }
    }))
    .await;
    Ok(())
}

async fn scan_sink(
    service: &Service,
    config: &NotifyConfig,
    sink: &Sink,
    all: &[Condition],
    now: SystemTime,
    leader: &Leader,
) -> Result<(), StoreError> {
    let mut active: BTreeMap<String, &Condition> = BTreeMap::new();
    for c in all.iter().filter(|c| sink.wants(c)) {
        active.insert(c.key(), c);
    }
    let told: BTreeMap<String, NotifiedRow> = service
        .store()
        .notified(&sink.name, MAX_TOLD)
        .await?
        .into_iter()
        .map(|n| (n.key.clone(), n))
        .collect();
    let gone: Vec<&NotifiedRow> = told
        .iter()
        .filter(|(k, _)| !active.contains_key(*k))
        .map(|(_, n)| n)
        .collect();
    let changes = Changes {
        active: &active,
        told: &told,
        gone: &gone,
        now,
    };
    match &sink.kind {
        Kind::Alertmanager { url } => {
            sync_alertmanager(service, config, sink, url, &changes, leader).await
        }
        Kind::Webhook { .. } | Kind::Slack => {
            queue(service, config, sink, &changes, leader).await?;
            trim(service, config, sink, leader).await
        }
    }
}

/// What a sink was told, against what holds now.
struct Changes<'a> {
    active: &'a BTreeMap<String, &'a Condition>,
    told: &'a BTreeMap<String, NotifiedRow>,
    gone: &'a [&'a NotifiedRow],
    now: SystemTime,
}

/// Post every active condition (and each ended one, with `endsAt = now`)
/// to an Alertmanager; record what it was told once it answered.
async fn sync_alertmanager(
    service: &Service,
    config: &NotifyConfig,
    sink: &Sink,
    url: &url::Url,
    changes: &Changes<'_>,
    leader: &Leader,
) -> Result<(), StoreError> {
    let Changes {
        active,
        told,
        gone,
        now,
    } = *changes;
    let metrics = service.metrics();
    let now_s = rfc3339(now);
    let hold = rfc3339(now + Duration::from_secs(config.resend_s.saturating_mul(4)));
    let mut body = Vec::new();
    for n in gone {
        body.push(json!({"labels": n.condition["labels"], "annotations": n.condition["annotations"], "startsAt": n.raised_at, "endsAt": now_s}));
    }
    for c in active.values() {
        let ends = match &c.ends_at {
            Some(e) if *e < hold => e.clone(),
            _ => hold.clone(),
        };
        let starts = told
            .get(&c.key())
            .map_or(now_s.clone(), |n| n.raised_at.clone());
        body.push(alert_json(c, &starts, &ends));
    }
    if body.len() > config.max_alerts {
        let dropped = body.len() - config.max_alerts;
        metrics.add(
            "firedrill_notifications_dropped_total",
            &[("sink", &sink.name), ("reason", "max-alerts")],
            dropped as u64,
        );
        tracing::warn!(sink = %sink.name, dropped, "more notifications than [notify] max-alerts; the rest are sent when there is room");
        body.truncate(config.max_alerts);
    }
    if body.is_empty() {
        return Ok(());
    }
    let sent = serde_json::to_vec(&body).unwrap_or_default();
    if let Err(e) = sink.endpoint.post(url, "application/json", &[], sent).await {
        metrics.inc(
            "firedrill_notifications_total",
            &[("sink", &sink.name), ("outcome", "failed")],
        );
        tracing::warn!(sink = %sink.name, error = %e, "could not notify; sending again at the next scan");
        return Ok(());
    }
    metrics.inc(
        "firedrill_notifications_total",
        &[("sink", &sink.name), ("outcome", "sent")],
    );
    let posted: BTreeSet<String> = body
        .iter()
        .map(|a| serde_json::to_string(&a["labels"]).unwrap_or_default())
        .collect();
    let actor = notifier();
    for n in gone.iter().filter(|n| posted.contains(&n.key)) {
        resolve(service, sink, n, None, &actor, leader).await?;
    }
    for c in active.values() {
        if posted.contains(&c.key()) && !told.contains_key(&c.key()) {
            raise(service, sink, c, &now_s, None, &actor, leader).await?;
        }
    }
    Ok(())
}

/// Record that `sink` was told of `c` (with its delivery, for the outbox).
/// The batch is one transaction: when it finds the condition recorded
/// already (another scan, another node), nothing of it is written.
async fn raise(
    service: &Service,
    sink: &Sink,
    c: &Condition,
    now: &str,
    delivery: Option<OutboxRow>,
    actor: &Actor,
    leader: &Leader,
) -> Result<(), StoreError> {
    if !leader.leading() {
        return Ok(());
    }
    let mut batch = Batch::new().write(crate::store::Write::RaiseNotified(NotifiedRow {
        sink: sink.name.clone(),
        key: c.key(),
        raised_at: now.to_string(),
        condition: condition_json(c),
    }));
    let mut e = audit(
        actor,
        crate::audit::Action::NotificationRaised,
        &sink.name,
        c.event.as_str(),
        &c.labels,
    );
    if let Some(d) = delivery {
        e = e.details(
            json!({"sink": sink.name, "labels": c.labels, "idempotency_key": d.idempotency_key}),
        );
        batch = batch.write(crate::store::Write::PushOutbox(d));
    }
    service.store().apply(batch.event(e)).await?;
    Ok(())
}

/// Record that `sink` was told `n` ended (with its delivery, for the outbox).
async fn resolve(
    service: &Service,
    sink: &Sink,
    n: &NotifiedRow,
    delivery: Option<OutboxRow>,
    actor: &Actor,
    leader: &Leader,
) -> Result<(), StoreError> {
    if !leader.leading() {
        return Ok(());
    }
    let labels: BTreeMap<String, String> =
        serde_json::from_value(n.condition["labels"].clone()).unwrap_or_default();
    let event = n.condition["event"].as_str().unwrap_or_default();
    let mut batch = Batch::new().write(crate::store::Write::ResolveNotified {
        sink: sink.name.clone(),
        key: n.key.clone(),
    });
    let mut e = audit(
        actor,
        crate::audit::Action::NotificationResolved,
        &sink.name,
        event,
        &labels,
    );
    if let Some(d) = delivery {
        e = e.details(
            json!({"sink": sink.name, "labels": labels, "idempotency_key": d.idempotency_key}),
        );
        batch = batch.write(crate::store::Write::PushOutbox(d));
    }
    service.store().apply(batch.event(e)).await?;
    Ok(())
}

/// The idempotency key of one notification: the same for every attempt,
/// another for another raise of the same condition.
fn idempotency_key(sink: &str, key: &str, raised_at: &str, transition: &str) -> String {
    use sha2::Digest;
    let mut h = sha2::Sha256::new();
    for part in [sink, key, raised_at, transition] {
        h.update(part.as_bytes());
        h.update([0]);
    }
    hex::encode(&h.finalize()[..16])
}

/// The notification a webhook receives (and a Slack message is made of).
fn delivery(
    sink: &Sink,
    condition: &Value,
    key: &str,
    raised_at: &str,
    transition: &str,
    now: &str,
) -> OutboxRow {
    let id = idempotency_key(&sink.name, key, raised_at, transition);
    let labels = &condition["labels"];
    let run = labels["run"].as_str().map(String::from);
    let runbook = condition["runbook"].as_str();
    let subject = match (&run, runbook) {
        (Some(r), _) => format!("run:{r}"),
        (None, Some(rb)) => format!("runbook:{rb}"),
        _ => "notify".to_string(),
    };
    let event = condition["event"].as_str().unwrap_or_default().to_string();
    OutboxRow {
        id: 0,
        sink: sink.name.clone(),
        idempotency_key: id.clone(),
        notified_key: key.to_string(),
        transition: transition.into(),
        event: event.clone(),
        subject,
        run_id: run.clone(),
        payload: json!({
            "version": 1,
            "id": id,
            "sink": sink.name,
            "transition": transition,
            "event": event,
            "runbook": runbook,
            "run": run,
            "raised_at": raised_at,
            "at": now,
            "labels": labels,
            "annotations": condition["annotations"],
        }),
        created_at: now.to_string(),
        next_at_ms: crate::store::now_ms(),
        attempts: 0,
        last_error: None,
    }
}

/// Queue one delivery per change: each new condition raised, each ended
/// one resolved (a failed run is a moment, not a state: no resolution is
/// sent or audited for it). At most `max-alerts` changes per scan (the
/// rest wait for the next). Returns how many deliveries were queued.
async fn queue(
    service: &Service,
    config: &NotifyConfig,
    sink: &Sink,
    changes: &Changes<'_>,
    leader: &Leader,
) -> Result<(), StoreError> {
    let now_s = rfc3339(changes.now);
    let actor = notifier();
    let mut budget = config.max_alerts;
    for n in changes.gone {
        if budget == 0 || !leader.leading() {
            break;
        }
        budget -= 1;
        if n.condition["event"] == Event::RunFailed.as_str() {
            service
                .store()
                .apply(Batch::new().write(crate::store::Write::ForgetNotified {
                    sink: sink.name.clone(),
                    key: n.key.clone(),
                }))
                .await?;
            continue;
        }
        let d = delivery(sink, &n.condition, &n.key, &n.raised_at, "resolved", &now_s);
        resolve(service, sink, n, Some(d), &actor, leader).await?;
    }
    for (key, c) in changes.active {
        if changes.told.contains_key(key) {
            continue;
        }
        if budget == 0 {
            break;
        }
        budget -= 1;
        let d = delivery(sink, &condition_json(c), key, &now_s, "raised", &now_s);
        raise(service, sink, c, &now_s, Some(d), &actor, leader).await?;
    }
    Ok(())
}

/// Drop the oldest deliveries beyond `max-queued` (counted and audited),
/// but never the head, which may be under way or waiting out its backoff.
async fn trim(
    service: &Service,
    config: &NotifyConfig,
    sink: &Sink,
    leader: &Leader,
) -> Result<(), StoreError> {
    let queued = service
        .store()
        .outbox_depths()
        .await?
        .into_iter()
        .find(|d| d.sink == sink.name)
        .map_or(0, |d| d.queued);
    let limit = i64::try_from(config.max_queued).unwrap_or(i64::MAX);
    if queued <= limit || !leader.leading() {
        return Ok(());
    }
    let oldest = service
        .store()
        .outbox(&sink.name, (queued - limit).min(MAX_DROPPED) + 1)
        .await?;
    drop_deliveries(
        service,
        &sink.name,
        oldest.get(1..).unwrap_or_default(),
        "queue-full",
        format!(
            "the sink's outbox held more than [notify] max-queued = {} deliveries; the oldest after its head are dropped",
            config.max_queued
        ),
    )
    .await
}

/// Give deliveries of one sink up: removed, counted, and audited in one
/// record (their count, the first ones' subjects and keys, the last error).
async fn drop_deliveries(
    service: &Service,
    sink: &str,
    rows: &[OutboxRow],
    reason: &str,
    why: String,
) -> Result<(), StoreError> {
    let Some(first) = rows.first() else {
        return Ok(());
    };
    let subject = if rows.len() == 1 {
        first.subject.clone()
    } else {
        format!("notify:{sink}")
    };
    let listed: Vec<Value> = rows
        .iter()
        .take(20)
        .map(|r| {
            json!({
                "subject": r.subject,
                "event": r.event,
                "transition": r.transition,
                "idempotency_key": r.idempotency_key,
                "queued_at": r.created_at,
                "attempts": r.attempts,
            })
        })
        .collect();
    let mut e = NewEvent::new(
        &notifier(),
        crate::audit::Action::NotificationDropped,
        subject,
    )
    .outcome(reason)
    .details(json!({
        "sink": sink,
        "count": rows.len(),
        "deliveries": listed,
        "transition": first.transition,
        "attempts": first.attempts,
        "last_error": rows.iter().rev().find_map(|r| r.last_error.clone()),
        "why": why,
    }));
    if rows.len() == 1
        && let Some(run) = &first.run_id
    {
        e = e.run(run);
    }
    let mut batch = Batch::new().event(e);
    for r in rows {
        batch = batch.write(crate::store::Write::RemoveOutbox { id: r.id });
        // A raise given up for lateness is raised again at the next scan
        // if its condition still holds (the sink may be back by then).
        if reason == "gave-up" && r.transition == "raised" {
            batch = batch.write(crate::store::Write::ForgetNotified {
                sink: sink.to_string(),
                key: r.notified_key.clone(),
            });
        }
    }
    let applied = service.store().apply(batch).await?;
    if applied.wrote() {
        service.metrics().add(
            "firedrill_notifications_dropped_total",
            &[("sink", sink), ("reason", reason)],
            rows.len() as u64,
        );
        tracing::warn!(sink, reason, count = rows.len(), %why, "notifications were dropped");
    }
    Ok(())
}

/// Forget what sinks no longer configured were told, and drop their
/// queued deliveries (audited). Every node must have the same `[notify]`
/// (a node without a sink clears it when it holds the lease).
async fn forget_removed(
    service: &Service,
    sinks: &[Arc<Sink>],
    leader: &Leader,
) -> Result<(), StoreError> {
    let store = service.store();
    for name in store.notification_sinks().await? {
        if sinks.iter().any(|s| s.name == name) {
            continue;
        }
        loop {
            let told = store.notified(&name, MAX_DROPPED).await?;
            if told.is_empty() || !leader.leading() {
                break;
            }
            tracing::info!(sink = %name, conditions = told.len(), "notifications: forgetting a sink no longer in [notify]");
            let mut batch = Batch::new();
            for n in told {
                batch = batch.write(crate::store::Write::ForgetNotified {
                    sink: name.clone(),
                    key: n.key,
                });
            }
            store.apply(batch).await?;
        }
        loop {
            let rows = store.outbox(&name, MAX_DROPPED).await?;
            if rows.is_empty() || !leader.leading() {
                break;
            }
            drop_deliveries(
                service,
                &name,
                &rows,
                "sink-removed",
                "the sink is no longer in [notify]".into(),
            )
            .await?;
        }
    }
    Ok(())
}

/// The wait before attempt `attempts + 1`: `retry-first-ms` doubled per
/// failed attempt up to `retry-max-ms`, then between half and all of it
/// (jitter, so that sinks that come back are not hit at once).
fn backoff(config: &NotifyConfig, attempts: i64) -> Duration {
    let doublings = u32::try_from(attempts.saturating_sub(1).clamp(0, 32)).unwrap_or(32);
    let full = config
        .retry_first_ms
        .saturating_mul(1u64 << doublings)
        .min(config.retry_max_ms);
    Duration::from_millis(rand::random_range(full / 2..=full))
}

/// What a failed answer means for the delivery.
#[derive(Debug, PartialEq, Eq)]
enum Answer {
    /// 409: the receiver has it already (a repeat of a delivered key).
    Had,
    /// 4xx the request itself causes (400, 413, 422...): a retry cannot help.
    Rejected,
    /// No answer, 5xx, 408, 429, or a setup problem a person can fix (401,
    /// 403 credentials; 404, 410 the hook's URL): held and retried.
    Retry,
}

fn answer(status: Option<u16>) -> Answer {
    match status {
        Some(409) => Answer::Had,
        Some(401 | 403 | 404 | 408 | 410 | 429) | None => Answer::Retry,
        Some(s) if (400..500).contains(&s) => Answer::Rejected,
        _ => Answer::Retry,
    }
}

/// Deliver a sink's queue in order, from its head: a head older than
/// `give-up-s` or rejected is dropped (audited); a head whose retry is not
/// yet due, or that fails now, holds the queue (the sink is down or
/// misconfigured: one attempt per backoff, and what was queued after it
/// stays after it).
async fn deliver(
    service: &Service,
    config: &NotifyConfig,
    sink: &Sink,
    leader: &Leader,
) -> Result<(), StoreError> {
    let store = service.store();
    let give_up = Duration::from_secs(config.give_up_s);
    // Only the head, while it waits out its backoff.
    let head = store.outbox(&sink.name, 1).await?;
    let Some(first) = head.first() else {
        return Ok(());
    };
    let due = |row: &OutboxRow| row.next_at_ms <= crate::store::now_ms();
    // Given up only once tried: a delivery queued just before a stop is
    // attempted when the notifier is back, however long that took.
    let late = |row: &OutboxRow| {
        row.attempts > 0
            && humantime::parse_rfc3339_weak(&row.created_at)
                .ok()
                .and_then(|t| SystemTime::now().duration_since(t).ok())
                .is_some_and(|age| age > give_up)
    };
    if !leader.leading() || (!due(first) && !late(first)) {
        return Ok(());
    }
    for row in store.outbox(&sink.name, DELIVERY_BATCH).await? {
        if !leader.leading() {
            break;
        }
        if late(&row) {
            let why = format!(
                "not delivered after {} attempts in [notify] give-up-s = {} s",
                row.attempts, config.give_up_s
            );
            drop_deliveries(
                service,
                &sink.name,
                std::slice::from_ref(&row),
                "gave-up",
                why,
            )
            .await?;
            continue;
        }
        if !due(&row) {
            break;
        }
        let attempts = row.attempts + 1;
        let sent = post(sink, &row).await;
        let failure = match sent {
            Ok(()) => None,
            Err(f) if answer(f.status) == Answer::Had => None,
            Err(f) => Some(f),
        };
        let Some(f) = failure else {
            delivered(service, sink, &row, attempts).await?;
            continue;
        };
        service.metrics().inc(
            "firedrill_notifications_total",
            &[("sink", &sink.name), ("outcome", "failed")],
        );
        let error = crate::term::clip(&f.message, MAX_NOTE_CHARS).to_string();
        if answer(f.status) == Answer::Rejected {
            let mut row = row.clone();
            row.attempts = attempts;
            row.last_error = Some(error);
            let why = "the sink refused the request itself (4xx); a retry cannot help".to_string();
            drop_deliveries(service, &sink.name, &[row], "rejected", why).await?;
            continue;
        }
        let wait = backoff(config, attempts);
        tracing::warn!(sink = %sink.name, error = %f.message, attempts, retry_in_s = wait.as_secs_f64(), "could not deliver a notification; it stays queued, and so do those after it");
        store
            .apply(
                Batch::new().write(crate::store::Write::RetryOutbox {
                    id: row.id,
                    attempts,
                    next_at_ms: crate::store::now_ms()
                        .saturating_add(i64::try_from(wait.as_millis()).unwrap_or(i64::MAX)),
                    error,
                }),
            )
            .await?;
        break;
    }
    Ok(())
}

/// A delivery made: removed from the outbox, counted, audited.
async fn delivered(
    service: &Service,
    sink: &Sink,
    row: &OutboxRow,
    attempts: i64,
) -> Result<(), StoreError> {
    service.metrics().inc(
        "firedrill_notifications_total",
        &[("sink", &sink.name), ("outcome", "sent")],
    );
    let mut e = NewEvent::new(
        &notifier(),
        crate::audit::Action::NotificationDelivered,
        &row.subject,
    )
    .outcome(&row.transition)
    .details(json!({
        "sink": sink.name,
        "idempotency_key": row.idempotency_key,
        "event": row.event,
        "attempts": attempts,
        "queued_at": row.created_at,
    }));
    if let Some(run) = &row.run_id {
        e = e.run(run);
    }
    service
        .store()
        .apply(
            Batch::new()
                .write(crate::store::Write::RemoveOutbox { id: row.id })
                .event(e),
        )
        .await?;
    Ok(())
}

/// Header names of a webhook delivery.
pub const SIGNATURE_HEADER: &str = "x-firedrill-signature";
pub const TIMESTAMP_HEADER: &str = "x-firedrill-timestamp";
pub const IDEMPOTENCY_HEADER: &str = "idempotency-key";

/// `sha256=HEX` of HMAC-SHA256 over `TIMESTAMP.BODY` with `key`.
pub fn signature(key: &[u8], timestamp: &str, body: &[u8]) -> String {
    use hmac::Mac;
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(key)
        .unwrap_or_else(|_| unreachable!("HMAC takes a key of any length"));
    mac.update(timestamp.as_bytes());
    mac.update(b".");
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

/// One attempt of one delivery.
async fn post(sink: &Sink, row: &OutboxRow) -> Result<(), crate::outbound::Failure> {
    let endpoint = &sink.endpoint;
    match &sink.kind {
        Kind::Webhook { signing_key } => {
            let body = serde_json::to_vec(&row.payload).unwrap_or_default();
            let ts = SystemTime::now()
                .duration_since(SystemTime::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs())
                .to_string();
            let sig = signature(signing_key.expose().as_bytes(), &ts, &body);
            let headers = [
                (IDEMPOTENCY_HEADER, row.idempotency_key.as_str()),
                (TIMESTAMP_HEADER, &ts),
                (SIGNATURE_HEADER, &sig),
            ];
            endpoint
                .send(&endpoint.url, "application/json", &headers, body)
                .await
        }
        Kind::Slack => {
            let text = slack_text(&row.payload);
            let body = serde_json::to_vec(&json!({ "text": text })).unwrap_or_default();
            endpoint
                .send(&endpoint.url, "application/json", &[], body)
                .await
        }
        Kind::Alertmanager { .. } => Ok(()),
    }
}

/// Text for Slack's mrkdwn and the Markdown of Mattermost and
/// Rocket.Chat: `&`, `<` and `>` escaped (Slack's links and `<!channel>`),
/// a zero-width space after each `@` (`@channel`, `@all`, `@here`) and
/// between `]` and `(` (Markdown links and images), control characters,
/// line separators and bidirectional overrides (a forged line, reordered
/// text) as spaces. So nothing in a
/// label, reason or error can mention people or forge a link or a line.
fn slack_escape(s: &str) -> String {
    s.chars()
        .map(|c| if crate::term::dangerous(c) { ' ' } else { c })
        .collect::<String>()
        .replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('@', "@\u{200B}")
        .replace("](", "]\u{200B}(")
}

/// A notification as one chat message: the summary, then each annotation.
pub fn slack_text(payload: &Value) -> String {
    let notes = &payload["annotations"];
    let summary = notes["summary"]
        .as_str()
        .unwrap_or("firedrill notification");
    let resolved = payload["transition"] == "resolved";
    let severity = payload["labels"]["severity"].as_str().unwrap_or_default();
    let icon = match (resolved, severity) {
        (true, _) => ":white_check_mark:",
        (false, "critical") => ":rotating_light:",
        _ => ":warning:",
    };
    let mut text = format!(
        "{icon} {}*{}*",
        if resolved { "Resolved: " } else { "" },
        slack_escape(summary)
    );
    if !resolved && let Some(obj) = notes.as_object() {
        for (k, v) in obj {
            let Some(v) = v.as_str() else { continue };
            if k == "summary" || k == "url" || v.is_empty() {
                continue;
            }
            let v = slack_escape(v);
            if matches!(k.as_str(), "approve" | "reset" | "fix") {
                text.push_str(&format!(
                    "\n*{}*: `{}`",
                    slack_escape(k),
                    v.replace('`', "'")
                ));
            } else {
                text.push_str(&format!("\n*{}*: {v}", slack_escape(k)));
            }
        }
    }
    if let Some(url) = notes["url"].as_str()
        && url.starts_with("http")
        && !url.contains(['|', '<', '>', ' '])
    {
        text.push_str(&format!("\n<{url}|Open in the console>"));
    }
    text
}

fn audit(
    actor: &Actor,
    action: crate::audit::Action,
    sink: &str,
    event: &str,
    labels: &BTreeMap<String, String>,
) -> NewEvent {
    let subject = match (labels.get("run"), labels.get("runbook")) {
        (Some(run), _) => format!("run:{run}"),
        (None, Some(rb)) => format!("runbook:{rb}"),
        _ => "notify".to_string(),
    };
    let mut e = NewEvent::new(actor, action, subject)
        .outcome(event)
        .details(json!({"sink": sink, "labels": labels}));
    if let Some(run) = labels.get("run") {
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
            let Kind::Alertmanager { url } = &sinks[0].kind else {
                panic!("not an alertmanager sink");
            };
            assert_eq!(url.as_str(), "http://127.0.0.1:9/am/api/v2/alerts");
        }
    }

    fn secrets() -> crate::secret::StaticSecrets {
        crate::secret::StaticSecrets(BTreeMap::from([
            (
                "key".to_string(),
                crate::secret::Secret::new("0123456789abcdef"),
            ),
            ("short".to_string(), crate::secret::Secret::new("tooshort")),
            (
                "slack".to_string(),
                crate::secret::Secret::new("https://hooks.slack.test/services/T0/B0/SEKRIT"),
            ),
            (
                "not-a-url".to_string(),
                crate::secret::Secret::new("SEKRIT-not-a-url"),
            ),
        ]))
    }

    fn webhook(name: Option<&str>, url: &str, key: &str) -> WebhookSink {
        WebhookSink {
            name: name.unwrap_or("hook").into(),
            url: url.into(),
            signing_secret: key.into(),
            token_secret: None,
            timeout_ms: 100,
            events: Vec::new(),
            runbooks: Vec::new(),
        }
    }

    fn slack(name: &str, secret: &str) -> SlackSink {
        SlackSink {
            name: name.into(),
            url_secret: secret.into(),
            timeout_ms: 100,
            events: Vec::new(),
            runbooks: Vec::new(),
        }
    }

    #[test]
    fn webhook_and_slack_sinks_are_checked_without_showing_a_secret() {
        let s = secrets();
        let refuse = |config: NotifyConfig, needle: &str| {
            let Err(err) = checked(&config, &s) else {
                panic!("accepted: {config:?}");
            };
            assert!(err.contains(needle), "{err}");
            assert!(
                !err.contains("SEKRIT") && !err.contains("0123456789abcdef"),
                "{err}"
            );
        };
        let with = |webhook: Vec<WebhookSink>, slack: Vec<SlackSink>| NotifyConfig {
            webhook,
            slack,
            ..NotifyConfig::default()
        };
        refuse(
            with(
                vec![webhook(None, "http://127.0.0.1:9/h", "missing")],
                vec![],
            ),
            "signing-secret missing",
        );
        refuse(
            with(vec![webhook(None, "http://127.0.0.1:9/h", "short")], vec![]),
            "shorter than 16 bytes",
        );
        refuse(
            with(
                vec![webhook(Some("a b"), "http://127.0.0.1:9/h", "key")],
                vec![],
            ),
            "printable",
        );
        refuse(
            with(
                vec![webhook(
                    Some(&"x".repeat(65)),
                    "http://127.0.0.1:9/h",
                    "key",
                )],
                vec![],
            ),
            "1 to 64",
        );
        refuse(
            with(vec![], vec![slack("ops", "not-a-url")]),
            "does not hold an http",
        );
        refuse(with(vec![], vec![slack("ops", "nope")]), "url-secret nope");
        refuse(
            with(vec![], vec![slack("ops", "slack"), slack("ops", "slack")]),
            "two sinks are called slack:ops",
        );
        let mut c = with(
            vec![webhook(Some("bus"), "http://127.0.0.1:9/h", "key")],
            vec![slack("ops", "slack")],
        );
        let sinks = checked(&c, &s).expect("valid");
        let names: Vec<&str> = sinks.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, ["webhook:bus", "slack:ops"]);
        // The Slack URL is named by the sink, never shown.
        assert_eq!(sinks[1].endpoint.name, "slack:ops");
        assert!(!format!("{:?}", sinks[1].endpoint).contains("SEKRIT"));
        for (field, bad) in [("max-queued", 0usize), ("max-queued", MAX_QUEUED + 1)] {
            c.max_queued = bad;
            refuse(c.clone(), field);
        }
        c.max_queued = MAX_QUEUED;
        checked(&c, &s).expect("max-queued at its edge");
        c.retry_max_ms = c.retry_first_ms - 1;
        refuse(c.clone(), "retry-max-ms");
        c.retry_max_ms = c.retry_first_ms;
        c.give_up_s = 0;
        refuse(c.clone(), "give-up-s is 0");
        c.give_up_s = MAX_GIVE_UP_S;
        checked(&c, &s).expect("give-up-s at its edge");
        c.max_alerts = 0;
        refuse(c.clone(), "max-alerts is 0");
        c.max_alerts = 1;
        c.console_url = Some("firedrill.example.com".into());
        refuse(c.clone(), "console-url");
        c.console_url = Some("https://firedrill.example.com".into());
        checked(&c, &s).expect("valid console-url");
    }

    /// Any secret, valid for any use (a URL that is also 16 bytes long).
    struct AnySecret;

    impl crate::secret::SecretProvider for AnySecret {
        fn get(&self, _name: &str) -> Result<crate::secret::Secret, crate::secret::SecretError> {
            Ok(crate::secret::Secret::new(
                "https://hooks.slack.test/services/T0/B0/x",
            ))
        }
    }

    #[test]
    fn every_notify_example_in_the_docs_passes_the_config_check() {
        #[derive(Deserialize)]
        struct File {
            notify: NotifyConfig,
        }
        let docs = include_str!("../../docs/alerts.md");
        let mut seen = 0;
        for block in docs.split("```toml\n").skip(1) {
            let block = block.split("```").next().unwrap_or_default();
            if !block.starts_with("[notify]") {
                continue;
            }
            let file: File = toml::from_str(block).unwrap_or_else(|e| panic!("{e}\n{block}"));
            checked(&file.notify, &AnySecret).unwrap_or_else(|e| panic!("{e}\n{block}"));
            seen += 1;
        }
        assert!(seen >= 3, "{seen} examples");
    }

    #[test]
    fn the_signature_is_hmac_sha256_over_timestamp_dot_body() {
        // Computed independently: python3 -c 'import hmac,hashlib;
        // print(hmac.new(b"Jefe", b"1700000000.{\"a\":1}", hashlib.sha256).hexdigest())'
        assert_eq!(
            signature(b"Jefe", "1700000000", br#"{"a":1}"#),
            "sha256=fa5f6481efc59da48b19c9dc10196c9953e5651f8304b3a318b6b87d70272e0a"
        );
    }

    #[test]
    fn a_chat_message_escapes_what_could_mention_or_link() {
        let payload = json!({
            "transition": "raised",
            "labels": {"severity": "warning"},
            "annotations": {
                "summary": "The big red switch (global) is engaged <!channel>",
                "reason": "db <http://evil|click> & <@U123>",
                "approve": "firedrill approve r-1 `rm -rf`",
                "url": "https://firedrill.example.com/console/runs/r-1",
            },
        });
        let text = slack_text(&payload);
        assert!(
            !text.contains("<!channel>")
                && !text.contains("<@U123>")
                && !text.contains("<http://evil"),
            "{text}"
        );
        assert!(
            text.contains("&lt;!channel&gt;") && text.contains("&amp;"),
            "{text}"
        );
        assert!(text.contains("`firedrill approve r-1 'rm -rf'`"), "{text}");
        assert!(
            text.ends_with("<https://firedrill.example.com/console/runs/r-1|Open in the console>"),
            "{text}"
        );
        // Mattermost and Rocket.Chat: plain mentions, Markdown links and
        // images, a newline that would forge a line.
        let hostile = slack_text(&json!({
            "transition": "raised",
            "labels": {},
            "annotations": {"summary": "s", "error": "@channel @all [x](http://evil) ![](http://evil/p)\n:white_check_mark: Resolved: *fake*"},
        }));
        assert_eq!(hostile.lines().count(), 2, "{hostile}");
        let separators = slack_text(&json!({
            "transition": "raised",
            "labels": {},
            "annotations": {"summary": "s", "error": "a\u{2028}forged\u{2029}line \u{202E}desrever"},
        }));
        assert!(
            !separators.contains(['\u{2028}', '\u{2029}', '\u{202E}']),
            "{separators:?}"
        );
        for bad in ["@channel", "@all", "](http", "\n:white"] {
            assert!(!hostile.contains(bad), "{bad} in {hostile}");
        }
        assert!(hostile.contains("@\u{200B}channel"), "{hostile}");
        let resolved = slack_text(
            &json!({"transition": "resolved", "labels": {}, "annotations": {"summary": "x"}}),
        );
        assert_eq!(resolved, ":white_check_mark: Resolved: *x*");
        // A link that would break out of `<url|text>` is left out.
        let bad = slack_text(
            &json!({"transition": "raised", "labels": {}, "annotations": {"summary": "x", "url": "https://a|b>"}}),
        );
        assert!(!bad.contains("Open in the console"), "{bad}");
    }

    #[test]
    fn backoff_doubles_to_its_cap_with_jitter() {
        let c = NotifyConfig::default();
        for (attempts, full) in [
            (1, 1000),
            (2, 2000),
            (3, 4000),
            (9, 256_000),
            (10, 300_000),
            (1000, 300_000),
        ] {
            for _ in 0..20 {
                let d = backoff(&c, attempts).as_millis() as u64;
                assert!((full / 2..=full).contains(&d), "attempt {attempts}: {d} ms");
            }
        }
    }
}
