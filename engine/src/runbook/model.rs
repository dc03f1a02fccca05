//! The runbook format, `apiVersion: firedrill/v1`, as Rust types. The JSON
//! Schema that editors use (`runbooks/runbook.schema.json`) is generated from
//! these types, so the two cannot drift apart.

use std::fmt;
use std::time::Duration;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// The only supported `apiVersion`.
pub const API_VERSION: &str = "firedrill/v1";
/// Most retries a step may ask for.
pub const MAX_RETRIES: u32 = 10;
/// Most steps (including `on_failure`) in one runbook.
pub const MAX_STEPS: usize = 100;
/// Most targets one step may name.
pub const MAX_TARGETS: usize = 1000;

/// A runbook: a versioned composition of recovery kernels.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
#[schemars(title = "firedrill runbook (firedrill/v1)")]
pub struct Runbook {
    /// Always `firedrill/v1`.
    pub api_version: String,
    /// Lower-case letters, digits and `-`, starting with a letter.
    pub name: String,
    /// Integer version; a published name@version never changes.
    #[schemars(range(min = 1))]
    pub version: u32,
    /// What the runbook fixes, for the person about to run it.
    #[serde(default)]
    pub description: String,
    /// JSON Schema of the runbook's inputs (`--input k=v`).
    #[serde(default = "empty_object_schema")]
    #[schemars(schema_with = "any_object")]
    pub inputs: serde_json::Value,
    /// The steps, run in order.
    #[schemars(length(min = 1, max = 100))]
    pub steps: Vec<Step>,
    /// Steps run, in the same mode, after a step fails.
    #[serde(default, rename = "on_failure", alias = "onFailure")]
    #[schemars(length(max = 100))]
    pub on_failure: Vec<Step>,
    /// Alerts that start this runbook automatically (published versions only).
    #[serde(default)]
    #[schemars(length(max = 20))]
    pub triggers: Vec<Trigger>,
    /// How `firedrill serve` exercises this runbook so it is known to work.
    #[serde(default)]
    pub drill: Option<Drill>,
    /// What a live run started by an alert does when this runbook is not
    /// `ready` (no passing live drill within `drill.max_age`): `block`
    /// (default: run nothing, say why), `require-approval` (start, but wait
    /// for an approver before the first step) or `warn` (run, and record
    /// that it ran untested).
    #[serde(default, rename = "readiness_policy", alias = "readinessPolicy")]
    pub readiness_policy: Option<ReadinessPolicy>,
}

/// What an alert-triggered live run does when the runbook is not ready.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum ReadinessPolicy {
    Block,
    /// Start the run, but wait for one approver before its first step.
    RequireApproval,
    Warn,
}

/// A drill: when and how the runbook is exercised.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Drill {
    /// Run every this long (`6h`); or give `cron`.
    #[serde(default)]
    #[schemars(with = "Option<String>")]
    pub every: Option<HumanDuration>,
    /// A cron expression in UTC (`0 */6 * * *`); or give `every`.
    #[serde(default)]
    pub cron: Option<String>,
    /// Each drill starts up to this much later than scheduled, at random,
    /// so drills do not all start at once. Default 0.
    #[serde(default)]
    #[schemars(with = "Option<String>")]
    pub jitter: Option<HumanDuration>,
    /// `live` (on drill targets, e.g. a canary host) or `dry-run` (default).
    /// Only a passing live drill makes the runbook `ready`.
    #[serde(default)]
    pub mode: Option<TriggerMode>,
    /// The runbook's inputs for the drill (e.g. the canary host).
    #[serde(default)]
    #[schemars(with = "std::collections::BTreeMap<String, serde_json::Value>")]
    pub inputs: std::collections::BTreeMap<String, serde_json::Value>,
    /// How old the last passing drill may be before the runbook is `stale`.
    #[schemars(with = "String")]
    pub max_age: HumanDuration,
}

/// Shortest drill interval.
pub const MIN_DRILL_INTERVAL: Duration = Duration::from_secs(60);

impl Drill {
    pub fn mode(&self) -> crate::Mode {
        match self.mode {
            Some(TriggerMode::Live) => crate::Mode::Live,
            _ => crate::Mode::DryRun,
        }
    }

    pub fn jitter(&self) -> Duration {
        self.jitter.map_or(Duration::ZERO, |j| j.0)
    }
}

/// Most triggers one runbook may declare.
pub const MAX_TRIGGERS: usize = 20;
/// Longest cooldown a trigger may ask for.
pub const MAX_COOLDOWN: Duration = Duration::from_secs(7 * 24 * 3600);
/// Cooldown when a trigger does not set one.
pub const DEFAULT_COOLDOWN: Duration = Duration::from_secs(300);

/// An alert that starts the runbook.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Trigger {
    /// Where the alert comes from: `alertmanager`, `pagerduty` or `generic`.
    pub source: TriggerSource,
    /// Label matchers, all of which must hold: `alertname: WebDown`.
    #[serde(rename = "match")]
    pub matchers: std::collections::BTreeMap<String, String>,
    /// `dry-run` (default) or `live`: automation is dry-run unless the
    /// runbook says otherwise.
    #[serde(default)]
    pub mode: Option<TriggerMode>,
    /// Runbook inputs; string templates over `alert` (`{{ alert.labels.instance }}`,
    /// `alert.annotations`, `alert.fingerprint`, `alert.starts_at`).
    #[serde(default)]
    #[schemars(with = "std::collections::BTreeMap<String, String>")]
    pub inputs: std::collections::BTreeMap<String, String>,
    /// What counts as "the same problem" for the cooldown (a template over
    /// `alert`). Default: the rendered inputs.
    #[serde(default)]
    pub key: Option<String>,
    /// After a run starts for a key, further alerts with that key start
    /// nothing for this long (`10m`). Default 5m, at most 7 days.
    #[serde(default)]
    #[schemars(with = "Option<String>")]
    pub cooldown: Option<HumanDuration>,
    /// At most this many runs per key within a window
    /// (`{ count: 3, per: 1h }`), whatever the cooldown.
    #[serde(default)]
    pub max_runs: Option<RunBudget>,
    /// Circuit breaker: after this many consecutive failed triggered runs
    /// of the runbook, its triggers start nothing until
    /// `firedrill trigger reset`. Default 3; 0 turns the breaker off.
    #[serde(default)]
    #[schemars(range(max = 100))]
    pub breaker: Option<u32>,
    /// What one breaker covers: `key` (default: consecutive failures for
    /// one key pause that key only, so one bad unit cannot pause the
    /// others) or `runbook` (any keys' failures pause every key: for a
    /// runbook whose failures mean the remediation itself is broken).
    #[serde(default)]
    pub breaker_scope: Option<BreakerScope>,
}

/// What a trigger's circuit breaker counts failures over.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum BreakerScope {
    Key,
    Runbook,
}

impl BreakerScope {
    pub fn as_str(self) -> &'static str {
        match self {
            BreakerScope::Key => "key",
            BreakerScope::Runbook => "runbook",
        }
    }
}

/// Default consecutive failures that open a trigger's circuit breaker.
pub const DEFAULT_BREAKER: u32 = 3;

/// A number of runs per window.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RunBudget {
    #[schemars(range(min = 1, max = 1000))]
    pub count: u32,
    /// The window, e.g. `1h`.
    #[schemars(with = "String")]
    pub per: HumanDuration,
}

impl Trigger {
    pub fn breaker(&self) -> u32 {
        self.breaker.unwrap_or(DEFAULT_BREAKER)
    }

    pub fn breaker_scope(&self) -> BreakerScope {
        self.breaker_scope.unwrap_or(BreakerScope::Key)
    }

    pub fn mode(&self) -> crate::Mode {
        match self.mode {
            Some(TriggerMode::Live) => crate::Mode::Live,
            _ => crate::Mode::DryRun,
        }
    }

    pub fn cooldown(&self) -> Duration {
        self.cooldown.map_or(DEFAULT_COOLDOWN, |c| c.0)
    }

    /// Whether an alert with `labels` matches every matcher.
    pub fn matches(&self, labels: &std::collections::BTreeMap<String, String>) -> bool {
        !self.matchers.is_empty()
            && self
                .matchers
                .iter()
                .all(|(k, v)| labels.get(k).is_some_and(|l| l == v))
    }
}

/// Alert sources.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum TriggerSource {
    /// Prometheus Alertmanager webhooks (`POST /api/v1/alerts/alertmanager`).
    Alertmanager,
    /// PagerDuty v3 webhooks (`POST /api/v1/alerts/pagerduty`): labels
    /// `event_type`, `incident_id`, `service`, `service_id`, `urgency`,
    /// `priority`, `title`, `incident_key`.
    Pagerduty,
    /// Any system that can post JSON (`POST /api/v1/alerts/generic`).
    Generic,
}

impl TriggerSource {
    pub fn as_str(self) -> &'static str {
        match self {
            TriggerSource::Alertmanager => "alertmanager",
            TriggerSource::Pagerduty => "pagerduty",
            TriggerSource::Generic => "generic",
        }
    }
}

/// Mode of a triggered run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum TriggerMode {
    DryRun,
    Live,
}

fn empty_object_schema() -> serde_json::Value {
    serde_json::json!({"type": "object"})
}

fn any_object(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({"type": "object"})
}

/// One step: a kernel invocation, or an approval gate.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(extend("anyOf" = [{"required": ["kernel"]}, {"required": ["approval"]}]))]
pub struct Step {
    /// Unique within the runbook; later steps refer to `steps.<id>.output`.
    #[schemars(regex(pattern = r"^[a-z][a-z0-9_-]{0,62}$"))]
    pub id: String,
    /// `name@version`, an exact published kernel version (e.g.
    /// `restart-service@1.0.0`); or give `approval` instead.
    #[serde(default)]
    #[schemars(regex(pattern = r"^([a-z][a-z0-9-]*@\d+\.\d+\.\d+([-+].*)?)?$"))]
    pub kernel: String,
    /// Instead of a kernel: wait until people approve (live runs only;
    /// dry-runs and drills show where approval would be needed).
    #[serde(default)]
    pub approval: Option<Approval>,
    /// Target names (templates allowed). An empty set is an error, never "all".
    #[serde(default)]
    #[schemars(length(max = 1000))]
    pub targets: Vec<String>,
    /// The kernel's input; string values are templates
    /// (`{{ inputs.x }}`, `{{ steps.probe.output.y }}`).
    #[serde(default = "empty_object", rename = "with")]
    #[schemars(schema_with = "any_object")]
    pub with: serde_json::Value,
    /// Expression; the step is skipped (and says so) when it is false.
    #[serde(default)]
    pub when: Option<String>,
    /// Time limit of one attempt, e.g. `60s`, `5m` (at most the kernel wall-clock limit).
    #[serde(default)]
    #[schemars(with = "Option<String>")]
    pub timeout: Option<HumanDuration>,
    /// Retries of `retryable` kernel errors.
    #[serde(default)]
    pub retries: Option<Retries>,
    /// Targets worked on at once (a count, or a percent like `25%`). Default 1.
    #[serde(default)]
    pub max_concurrency: Option<Amount>,
    /// Failed targets tolerated (a count or a percent); one more and no new
    /// target starts (in-flight ones finish) and the step fails. Default 0.
    #[serde(default)]
    pub max_errors: Option<Amount>,
    /// Blast-radius cap: a step whose targets expand to more is refused
    /// before anything runs. Default 1,000.
    #[serde(default)]
    #[schemars(range(min = 1, max = 1000))]
    pub max_targets: Option<u32>,
}

/// An approval gate.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Approval {
    /// Distinct people who must approve, 1 to 10. Default 1.
    #[serde(default = "one")]
    pub required: u32,
    /// Token roles whose approvals count (API). Default: approver, admin.
    #[serde(default)]
    pub roles: Vec<crate::role::Role>,
    /// How long to wait before the step fails (`30m`). At most 7 days.
    #[schemars(with = "String")]
    pub timeout: HumanDuration,
    /// What the approvers are asked, shown with the request.
    #[serde(default)]
    pub reason: Option<String>,
}

fn one() -> u32 {
    1
}

impl Step {
    /// A step that only waits for `approval` (the readiness gate).
    pub fn approval_gate(id: &str, approval: Approval) -> Step {
        Step {
            id: id.to_string(),
            kernel: String::new(),
            approval: Some(approval),
            targets: Vec::new(),
            with: empty_object(),
            when: None,
            timeout: None,
            retries: None,
            max_concurrency: None,
            max_errors: None,
            max_targets: None,
        }
    }
}

impl Approval {
    /// The roles whose approvals count.
    pub fn roles(&self) -> Vec<crate::role::Role> {
        if self.roles.is_empty() {
            vec![crate::role::Role::Approver, crate::role::Role::Admin]
        } else {
            self.roles.clone()
        }
    }
}

/// A count (`3`) or a percentage of the step's targets (`"25%"`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Amount {
    Count(u32),
    Percent(u8),
}

impl Amount {
    /// The number this amount means for `n` targets. Percentages round up,
    /// so `10%` of 5 targets is 1.
    pub fn of(self, n: usize) -> usize {
        match self {
            Amount::Count(c) => c as usize,
            Amount::Percent(p) => (n * usize::from(p)).div_ceil(100),
        }
    }
}

impl fmt::Display for Amount {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Amount::Count(c) => write!(f, "{c}"),
            Amount::Percent(p) => write!(f, "{p}%"),
        }
    }
}

impl Serialize for Amount {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Amount::Count(c) => s.serialize_u32(*c),
            Amount::Percent(_) => s.serialize_str(&self.to_string()),
        }
    }
}

impl<'de> Deserialize<'de> for Amount {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Count(u32),
            Text(String),
        }
        match Raw::deserialize(d)? {
            Raw::Count(c) => Ok(Amount::Count(c)),
            Raw::Text(t) => t
                .strip_suffix('%')
                .and_then(|p| p.trim().parse::<u8>().ok())
                .filter(|p| (1..=100).contains(p))
                .map(Amount::Percent)
                .ok_or_else(|| {
                    serde::de::Error::custom(format!(
                        "{t:?} is neither a count nor a percentage from 1% to 100%"
                    ))
                }),
        }
    }
}

impl JsonSchema for Amount {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "Amount".into()
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "description": "A count, or a percentage of the step's targets such as \"25%\"",
            "anyOf": [
                {"type": "integer", "minimum": 0},
                {"type": "string", "pattern": "^([1-9][0-9]?|100)%$"}
            ]
        })
    }
}

fn empty_object() -> serde_json::Value {
    serde_json::json!({})
}

/// Retry policy for `retryable` errors.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Retries {
    /// Retries after the first attempt (0 to 10).
    #[schemars(range(max = 10))]
    pub max: u32,
    /// Wait before the first retry, doubled for each further one, e.g. `5s`.
    #[serde(default)]
    #[schemars(with = "Option<String>")]
    pub backoff: Option<HumanDuration>,
}

/// A duration written like `500ms`, `60s`, `5m`, `1h`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HumanDuration(pub Duration);

impl fmt::Display for HumanDuration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", humantime::format_duration(self.0))
    }
}

impl Serialize for HumanDuration {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_string())
    }
}

impl<'de> Deserialize<'de> for HumanDuration {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        humantime::parse_duration(&text)
            .map(HumanDuration)
            .map_err(|e| {
                serde::de::Error::custom(format!("{text:?} is not a duration like 30s or 5m: {e}"))
            })
    }
}

/// A parsed `kernel:` reference.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct KernelRef {
    pub name: String,
    pub version: String,
}

impl fmt::Display for KernelRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}@{}", self.name, self.version)
    }
}

impl KernelRef {
    /// Parse `name@x.y.z`; ranges and `latest` are refused: a run pins exact code.
    pub fn parse(text: &str) -> Result<Self, String> {
        let (name, version) = text
            .split_once('@')
            .ok_or_else(|| format!("{text:?} is not name@version (e.g. restart-service@1.0.0)"))?;
        if !firedrill_sdk::manifest::valid_name(name) {
            return Err(format!("kernel name {name:?} is not valid"));
        }
        semver::Version::parse(version).map_err(|e| {
            format!("{version:?} is not an exact semantic version ({e}); runbooks pin exact kernel versions")
        })?;
        Ok(KernelRef {
            name: name.to_string(),
            version: version.to_string(),
        })
    }
}

impl Step {
    pub fn kernel_ref(&self) -> Result<KernelRef, String> {
        KernelRef::parse(&self.kernel)
    }
}

impl Runbook {
    /// Every step, main steps first, then `on_failure`.
    pub fn all_steps(&self) -> impl Iterator<Item = &Step> {
        self.steps.iter().chain(self.on_failure.iter())
    }

    /// The JSON Schema of the runbook format.
    pub fn json_schema() -> serde_json::Value {
        schemars::schema_for!(Runbook).to_value()
    }
}
