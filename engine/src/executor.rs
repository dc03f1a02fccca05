//! The run service: the one path through which every run starts (CLI today;
//! API, alerts and drills later), and the step state machine that executes it.
//!
//! A run is validated completely before anything is written. Then every
//! transition (run started, step started/skipped/retried/finished, each host
//! call, run finished) is persisted with its audit record in one batch as it
//! happens, so a crash leaves a truthful record of what was done.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::stream::{FuturesUnordered, StreamExt};
use serde_json::{Value, json};
use tracing::Instrument as _;

use crate::audit::{Actor, NewEvent, now_rfc3339};
use crate::kernel::{
    CallObserver, HostCall, InvokeError, InvokeReport, InvokeRequest, KernelHost, LoadedKernel,
    Registry, RegistryError,
};
use crate::metrics::Metrics;
use crate::runbook::{
    KernelCatalog, Problems, Runbook, Step, Templates, ValidRunbook, parse_runbook, validate,
};
use crate::store::{
    Applied, Batch, Fence, HostCallRow, RunRow, RunStatus, RunbookRow, StepRow, StepTargetRow,
    Store, StoreError, Write,
};

mod lease;
use crate::{Effect, Mode};
pub use lease::{NodeConfig, PickUp, RunLease};

/// How often a run waiting for approval checks for decisions.
const APPROVAL_POLL: Duration = Duration::from_millis(250);

/// The id of the approval a `require-approval` readiness policy puts before
/// the first step (not a valid step id, so it cannot clash).
pub const GATE_STEP: &str = "_readiness-approval";

/// Longest backoff between retries, whatever the policy asks.
pub const MAX_BACKOFF: Duration = Duration::from_secs(300);

/// Where a runbook comes from.
#[derive(Debug, Clone)]
pub enum RunbookSource {
    /// A published version; `None` is the latest.
    Published { name: String, version: Option<i64> },
    /// A file: run as a draft unless that exact content is published.
    File { path: String, text: String },
}

/// Everything needed to start a run.
#[derive(Debug, Clone)]
pub struct RunRequest {
    pub source: RunbookSource,
    pub mode: Mode,
    pub actor: Actor,
    /// `--input k=v` pairs; typed by the runbook's inputs schema.
    pub inputs: Vec<(String, String)>,
}

/// A run could not start. Nothing was written.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("{0}")]
    Invalid(Problems),
    #[error(
        "runbook {0} is not published; publish it with `firedrill runbook publish FILE` or run the file directly"
    )]
    NotFound(String),
    #[error("the run's inputs are not valid for {runbook}:\n  {}", problems.join("\n  "))]
    Inputs {
        runbook: String,
        problems: Vec<String>,
    },
    #[error("stored runbook {0} cannot be read: {1}")]
    Stored(String, String),
    #[error(
        "live automation of {runbook} is halted: {}; dry-runs are still allowed, and `firedrill switch off` (with a reason) lets live runs start again",
        switch.describe()
    )]
    Halted {
        runbook: String,
        switch: crate::switch::SwitchRow,
    },
    /// The queue is full (a limit named in the text).
    #[error("{0}")]
    Busy(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Publishing a runbook failed.
#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    #[error("{0}")]
    Invalid(Problems),
    #[error(
        "runbook {reference} is already published with different content (digest {existing}); runbook versions are immutable: bump `version` and publish again"
    )]
    Conflict { reference: String, existing: String },
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// A run that passed every check and has its id, not yet started.
#[derive(Debug)]
pub struct PreparedRun {
    pub id: String,
    pub runbook: String,
    pub mode: Mode,
    pub actor: Actor,
    draft: bool,
    inputs: Value,
    valid: ValidRunbook,
    /// Continue a halted run instead of starting one.
    resume: Option<Resume>,
    /// An approval to wait for before the first step (readiness policy
    /// `require-approval`).
    pub gate: Option<crate::runbook::Approval>,
}

/// A person's decision to continue a stopped run: it is queued again, and
/// the node that claims it picks up from its stored steps.
#[derive(Debug)]
struct Resume {
    /// The run's status now (halted or needs-attention).
    from: RunStatus,
    /// For a run that needs attention: the step without a result and what
    /// becomes of it (`retry`: run it again; `skipped`).
    step: Option<(String, &'static str)>,
    reason: String,
}

/// A run this node claimed: its fencing epoch, and whose lease expired
/// (a takeover) if any.
#[derive(Debug, Clone)]
pub struct Claim {
    pub run_id: String,
    pub epoch: i64,
    pub previous: Option<String>,
    sent_at: Instant,
}

/// A run could not be cancelled, resumed or abandoned.
#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    #[error("no run {0:?}")]
    NotFound(String),
    #[error("run {id} is {status}; {what}")]
    WrongState {
        id: String,
        status: &'static str,
        what: String,
    },
    #[error(
        "a reason is required (say why, for the audit log): one line of printable text, at most {} bytes",
        crate::switch::MAX_REASON_BYTES
    )]
    NoReason,
    #[error("{0}")]
    Refused(String),
    #[error(transparent)]
    Run(Box<RunError>),
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl From<RunError> for ControlError {
    fn from(e: RunError) -> Self {
        ControlError::Run(Box::new(e))
    }
}

fn reason_of(reason: &str) -> Result<String, ControlError> {
    crate::switch::valid_reason(reason)
        .map(str::to_string)
        .ok_or(ControlError::NoReason)
}

/// The engine's services, shared by every front end.
#[derive(Debug, Clone)]
pub struct Service {
    store: Arc<dyn Store>,
    host: Arc<KernelHost>,
    registry: Registry,
    templates: Arc<Templates>,
    metrics: Arc<Metrics>,
    node: Arc<NodeConfig>,
}

/// Parse `k=v` input values, typing each by the schema's declared type
/// (`string` stays text; other types parse as JSON when they can), then fill
/// in the `default` of every top-level property that was not given.
pub fn typed_inputs(schema: &Value, pairs: &[(String, String)]) -> Value {
    let mut map = serde_json::Map::new();
    for (k, v) in pairs {
        let declared = schema
            .pointer(&format!("/properties/{k}/type"))
            .and_then(Value::as_str);
        let value = match declared {
            Some("string") | None => Value::String(v.clone()),
            Some(_) => serde_json::from_str(v).unwrap_or_else(|_| Value::String(v.clone())),
        };
        map.insert(k.clone(), value);
    }
    if let Some(properties) = schema.get("properties").and_then(Value::as_object) {
        for (name, property) in properties {
            if let Some(default) = property.get("default")
                && !map.contains_key(name)
            {
                map.insert(name.clone(), default.clone());
            }
        }
    }
    Value::Object(map)
}

/// Shared state of one executing run.
struct RunCtx<'a> {
    id: String,
    valid: &'a ValidRunbook,
    mode: Mode,
    actor: Actor,
    /// Template context: inputs, steps (outputs so far), run.
    vars: Value,
    gate: Option<crate::runbook::Approval>,
    lease: Arc<RunLease>,
}

/// How a step ended.
enum StepEnd {
    Succeeded,
    Skipped,
    Failed(String),
}

/// How one target of a step ended.
struct TargetEnd {
    target: String,
    /// 0 when it never started.
    attempts: i64,
    result: Result<Value, String>,
    logs: Vec<Value>,
    duration_ms: i64,
}

/// Persists each host call with its audit record as it happens.
struct CallRecorder {
    store: Arc<dyn Store>,
    metrics: Arc<Metrics>,
    actor: Actor,
    run_id: String,
    step_id: String,
    target: String,
    attempt: i64,
    lease: Arc<RunLease>,
}

#[async_trait::async_trait]
impl CallObserver for CallRecorder {
    fn may_change(&self) -> Result<(), String> {
        self.lease.may_change()
    }

    async fn host_call(&self, call: &HostCall) {
        let record = serde_json::to_value(call).unwrap_or_default();
        let denied = call.is_denied();
        let mut details = json!({"step": self.step_id, "attempt": self.attempt});
        if let (Some(d), Some(r)) = (details.as_object_mut(), record.as_object()) {
            // stdout/stderr stay in the run's host-call records, not the audit log.
            for (k, v) in r {
                if k != "stdout" && k != "stderr" {
                    d.insert(k.clone(), v.clone());
                }
            }
        }
        let target = record.get("target").and_then(Value::as_str).unwrap_or("-");
        let outcome = record
            .get("outcome")
            .and_then(Value::as_str)
            .unwrap_or("ok");
        let kind = record.get("kind").and_then(Value::as_str).unwrap_or("-");
        let effect = record.get("effect").and_then(Value::as_str).unwrap_or("-");
        self.metrics.inc(
            "firedrill_host_calls_total",
            &[
                ("kind", kind),
                ("effect", effect),
                ("outcome", if call.simulated { "planned" } else { outcome }),
            ],
        );
        if denied {
            self.metrics.denied("capability");
        }
        self.metrics.add(
            "firedrill_retries_total",
            &[("kind", "connect")],
            u64::from(call.faults.retries),
        );
        self.metrics.add(
            "firedrill_retries_total",
            &[("kind", "reconnect")],
            u64::from(call.faults.reconnects),
        );
        let event = NewEvent::new(
            &self.actor,
            if denied {
                "capability.denied"
            } else {
                "host.call"
            },
            format!("target:{target}"),
        )
        .outcome(if call.simulated { "simulated" } else { outcome })
        .details(details)
        .run(&self.run_id);
        let batch = Batch::new()
            .write(Write::InsertHostCall(HostCallRow::new(
                &self.run_id,
                &self.step_id,
                &self.target,
                self.attempt,
                call,
            )))
            .event(event);
        if let Err(e) = apply_fenced(self.store.as_ref(), &self.lease.fence, batch).await {
            // The step's final record still carries every call; say loudly
            // that the incremental record failed.
            tracing::error!(run_id = %self.run_id, step = %self.step_id, error = %e, "cannot persist host call");
        }
    }
}

fn ms(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

/// Apply `batch` only while `fence` holds: [`Applied::Fenced`] is an error
/// (the run is no longer this node's).
async fn apply_fenced(
    store: &dyn Store,
    fence: &Fence,
    batch: Batch,
) -> Result<Applied, StoreError> {
    match store.apply(batch.fenced(fence)).await? {
        Applied::Fenced => Err(StoreError::Fenced {
            run_id: fence.run_id.clone(),
        }),
        other => Ok(other),
    }
}

impl Service {
    pub fn new(store: Arc<dyn Store>, host: Arc<KernelHost>, registry: Registry) -> Self {
        Service {
            store,
            host,
            registry,
            templates: Arc::new(Templates::default()),
            metrics: Arc::new(Metrics::default()),
            node: Arc::new(NodeConfig::default().resolved().unwrap_or_default()),
        }
    }

    /// This service as node `node` (checked with [`NodeConfig::resolved`]).
    pub fn with_node(mut self, node: NodeConfig) -> Self {
        self.node = Arc::new(node);
        self
    }

    pub fn node(&self) -> &NodeConfig {
        &self.node
    }

    /// Apply a batch of the run `ctx` executes, fenced by its lease.
    async fn write(&self, ctx: &RunCtx<'_>, batch: Batch) -> Result<Applied, StoreError> {
        let fence = &ctx.lease.fence;
        if ctx.lease.surrendered() {
            return Err(StoreError::Fenced {
                run_id: fence.run_id.clone(),
            });
        }
        apply_fenced(self.store.as_ref(), fence, batch).await
    }

    /// Make an earlier published version of `name` current again (what runs
    /// by name, what alerts and drills use) until a new version is
    /// published. Audited as `runbook.rolled-back`.
    pub async fn rollback_runbook(
        &self,
        name: &str,
        version: i64,
        actor: &Actor,
        reason: &str,
    ) -> Result<RunbookRow, ControlError> {
        let reason = reason_of(reason)?;
        let from = self
            .store
            .runbook(name, None)
            .await?
            .ok_or_else(|| ControlError::NotFound(name.to_string()))?;
        let row = self
            .store
            .runbook(name, Some(version))
            .await?
            .ok_or_else(|| {
                ControlError::Refused(format!("{name}@{version} was never published"))
            })?;
        self.store
            .apply(
                Batch::new()
                    .write(Write::SetCurrentRunbook {
                        name: name.to_string(),
                        version,
                        at: now_rfc3339(),
                        by: actor.to_string(),
                    })
                    .event(
                        NewEvent::new(actor, "runbook.rolled-back", format!("runbook:{name}"))
                            .details(json!({"from": from.version, "to": version, "digest": row.digest, "reason": reason})),
                    ),
            )
            .await?;
        Ok(row)
    }

    /// `name@version -> digest` of every kernel `runbook` uses, as runs
    /// record it; `None` when one is not published.
    pub async fn kernel_digests(&self, runbook: &Runbook) -> Result<Option<Value>, StoreError> {
        let mut out = BTreeMap::new();
        for step in runbook.all_steps().filter(|s| s.approval.is_none()) {
            let Ok(r) = step.kernel_ref() else {
                return Ok(None);
            };
            match self.store.kernel(&r.name, &r.version).await? {
                Some(k) => out.insert(r.to_string(), k.digest),
                None => return Ok(None),
            };
        }
        Ok(Some(json!(out)))
    }

    /// Counters and histograms of everything this service ran.
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    pub fn host(&self) -> &Arc<KernelHost> {
        &self.host
    }

    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// Resolve every kernel `runbook` names (or why it cannot be used).
    async fn catalog(&self, runbook: &Runbook) -> KernelCatalog {
        let mut catalog = KernelCatalog::new();
        for step in runbook.all_steps() {
            let Ok(r) = step.kernel_ref() else { continue };
            if catalog.contains_key(&r) {
                continue;
            }
            let resolved = self
                .registry
                .resolve(&self.host, &r.name, &r.version)
                .await
                .map_err(|e: RegistryError| e.to_string());
            catalog.insert(r, resolved);
        }
        catalog
    }

    /// Validate runbook `text` completely (kernels resolved from the registry).
    pub async fn validate(&self, file: &str, text: &str) -> Result<ValidRunbook, Problems> {
        let parsed = parse_runbook(file, text)?;
        let catalog = self.catalog(&parsed).await;
        validate(file, text, &catalog, &self.templates)
    }

    /// Validate and publish a runbook version, audited as `actor`.
    pub async fn publish_runbook(
        &self,
        file: &str,
        text: &str,
        actor: &Actor,
    ) -> Result<(RunbookRow, bool), PublishError> {
        let valid = self
            .validate(file, text)
            .await
            .map_err(PublishError::Invalid)?;
        let rb = &valid.runbook;
        let row = RunbookRow {
            name: rb.name.clone(),
            version: i64::from(rb.version),
            digest: valid.digest.clone(),
            source: valid.source.clone(),
            published_at: now_rfc3339(),
            published_by: actor.to_string(),
        };
        let reference = format!("{}@{}", rb.name, rb.version);
        let kernels: BTreeMap<String, String> = valid
            .kernels
            .iter()
            .map(|(r, k)| (r.to_string(), k.digest.clone()))
            .collect();
        let event = NewEvent::new(actor, "runbook.published", format!("runbook:{reference}"))
            .details(json!({"digest": valid.digest, "kernels": kernels}));
        match self
            .store
            .apply(
                Batch::new()
                    .write(Write::PublishRunbook(row.clone()))
                    .event(event),
            )
            .await?
        {
            Applied::Done => Ok((row, true)),
            Applied::AlreadyPresent => Ok((row, false)),
            Applied::Conflict { existing_digest } => Err(PublishError::Conflict {
                reference,
                existing: existing_digest,
            }),
            _ => Err(PublishError::Store(StoreError::Corrupt {
                what: "runbook publish",
                reason: "the store answered a publish as a conditional write".into(),
            })),
        }
    }

    /// Start a run and execute it to the end. Returns the run id; the run's
    /// record in the store is the result. This is the one path for every
    /// front end ([`Service::prepare`] then [`Service::execute_prepared`],
    /// which the API calls separately to answer before the run ends).
    pub async fn run(&self, request: RunRequest) -> Result<String, RunError> {
        let prepared = self.prepare(request).await?;
        self.execute_prepared(prepared).await
    }

    /// Execute a prepared run to the end in this process; returns its id.
    /// The run is queued and claimed by this node in one write, so no other
    /// node can take it first.
    pub async fn execute_prepared(&self, run: PreparedRun) -> Result<String, RunError> {
        let id = run.id.clone();
        let sent_at = Instant::now();
        let batch = self.admission(run, None).write(Write::ClaimQueued {
            owner: self.node.id.clone(),
            lease_ms: self.node.lease_ms_i64(),
            only: Some(id.clone()),
        });
        match self.store.apply(batch).await? {
            Applied::Claimed { run_id, epoch, .. } => {
                self.execute_claimed(Claim {
                    run_id,
                    epoch,
                    previous: None,
                    sent_at,
                })
                .await
            }
            Applied::Refused(why) => Err(RunError::Busy(why)),
            _ => Err(RunError::Busy(format!(
                "run {id} was no longer waiting to be resumed (someone else resumed, skipped or abandoned it)"
            ))),
        }
    }

    /// Admit a prepared run into the queue; a node claims it. With `limits`
    /// (`max_active`, `max_per_runbook`), refused when they are reached.
    pub async fn enqueue(
        &self,
        run: PreparedRun,
        limits: Option<(u64, u64)>,
    ) -> Result<String, RunError> {
        let id = run.id.clone();
        match self.store.apply(self.admission(run, limits)).await? {
            Applied::Done => Ok(id),
            Applied::Refused(why) => Err(RunError::Busy(why)),
            _ => Err(RunError::Busy(format!(
                "run {id} was no longer waiting to be resumed (someone else resumed, skipped or abandoned it)"
            ))),
        }
    }

    /// The writes that queue `run`: a new run (`run.started`), or a
    /// stopped one someone decided to continue (`run.resumed` /
    /// `step.skipped`).
    fn admission(&self, run: PreparedRun, limits: Option<(u64, u64)>) -> Batch {
        let PreparedRun {
            id,
            mode,
            actor,
            draft,
            inputs,
            valid,
            gate,
            resume,
            ..
        } = run;
        if let Some(resume) = resume {
            let mut batch = Batch::new();
            let mut action = "run.resumed";
            if let Some((step, to)) = &resume.step {
                let skipped = *to == "skipped";
                if skipped {
                    action = "run.step-skipped";
                }
                batch = batch.write(Write::DecideStep {
                    run_id: id.clone(),
                    step_id: step.clone(),
                    from: "running".into(),
                    to: (*to).to_string(),
                    error: skipped.then(|| format!("skipped by {actor}: {}", resume.reason)),
                });
            }
            return batch
                .write(Write::TransitionRun {
                    id: id.clone(),
                    from: vec![resume.from],
                    to: RunStatus::Queued,
                    error: None,
                    finished_at: None,
                })
                .event(
                    NewEvent::new(&actor, action, format!("run:{id}"))
                        .details(json!({
                            "reason": resume.reason,
                            "was": resume.from.as_str(),
                            "step": resume.step.as_ref().map(|(s, _)| s),
                        }))
                        .run(&id),
                );
        }
        let rb = &valid.runbook;
        let kernels: BTreeMap<String, String> = valid
            .kernels
            .iter()
            .map(|(r, k)| (r.to_string(), k.digest.clone()))
            .collect();
        let drill = actor == crate::drill::drill_actor();
        let row = RunRow {
            id: id.clone(),
            runbook: rb.name.clone(),
            runbook_version: i64::from(rb.version),
            runbook_digest: valid.digest.clone(),
            draft,
            mode: mode.as_str().to_string(),
            actor: actor.to_string(),
            status: RunStatus::Queued,
            inputs: inputs.clone(),
            kernels: json!(kernels),
            error: None,
            started_at: now_rfc3339(),
            finished_at: None,
            cancel_requested: None,
            drill,
            owner: None,
            epoch: 0,
            gate: gate.as_ref().and_then(|g| serde_json::to_value(g).ok()),
            source: draft.then(|| valid.source.clone()),
        };
        self.metrics
            .run_started(&rb.name, mode.as_str(), actor.kind.trigger());
        let (max_active, max_per_runbook) = limits.unwrap_or((u64::MAX, u64::MAX));
        Batch::new()
            .write(Write::EnqueueRun {
                run: row,
                max_active,
                max_per_runbook,
            })
            .event(
                NewEvent::new(
                    &actor,
                    "run.started",
                    format!("runbook:{}@{}", rb.name, rb.version),
                )
                .details(json!({
                    "mode": mode.as_str(),
                    "runbook_digest": valid.digest,
                    "draft": draft,
                    "drill": drill,
                    "kernels": kernels,
                    "inputs": inputs,
                }))
                .run(&id),
            )
    }

    /// Claim the oldest queued run for this node (`only` that one, when
    /// given). `None` when there is nothing to claim.
    pub async fn claim_queued(&self, only: Option<&str>) -> Result<Option<Claim>, StoreError> {
        self.claim(Write::ClaimQueued {
            owner: self.node.id.clone(),
            lease_ms: self.node.lease_ms_i64(),
            only: only.map(String::from),
        })
        .await
    }

    /// Take over one active run whose node stopped renewing its lease.
    pub async fn take_over(&self) -> Result<Option<Claim>, StoreError> {
        self.claim(Write::TakeOver {
            owner: self.node.id.clone(),
            lease_ms: self.node.lease_ms_i64(),
        })
        .await
    }

    async fn claim(&self, write: Write) -> Result<Option<Claim>, StoreError> {
        let sent_at = Instant::now();
        Ok(match self.store.apply(Batch::new().write(write)).await? {
            Applied::Claimed {
                run_id,
                epoch,
                previous,
            } => Some(Claim {
                run_id,
                epoch,
                previous,
                sent_at,
            }),
            _ => None,
        })
    }

    /// Execute a run this node claimed, from where its stored steps say
    /// (see [`lease::pick_up`]), renewing its lease until it ends.
    pub async fn execute_claimed(&self, claim: Claim) -> Result<String, RunError> {
        let id = claim.run_id.clone();
        let lease = Arc::new(RunLease::new(
            Fence {
                run_id: id.clone(),
                owner: self.node.id.clone(),
                epoch: claim.epoch,
            },
            self.node.lease(),
            claim.sent_at,
        ));
        let span = tracing::info_span!("run", run_id = %id);
        let work = self.pick_up_and_drive(&lease, &claim).instrument(span);
        tokio::select! {
            result = work => result,
            () = self.keep_lease(&lease) => Err(StoreError::Fenced { run_id: id }.into()),
        }
    }

    /// Renew `lease` every heartbeat; returns when the lease is lost.
    async fn keep_lease(&self, lease: &RunLease) {
        let every = Duration::from_millis(self.node.heartbeat_ms);
        loop {
            tokio::time::sleep(every).await;
            if lease.surrendered() {
                tracing::warn!(run_id = %lease.fence.run_id, "giving the run up: its lease ran low before a change (the node was paused or starved); another node takes it over");
                std::future::pending::<()>().await;
            }
            let sent_at = Instant::now();
            let batch = Batch::new()
                .write(Write::RenewLease {
                    run_id: lease.fence.run_id.clone(),
                    lease_ms: self.node.lease_ms_i64(),
                })
                .fenced(&lease.fence);
            match self.store.apply(batch).await {
                Ok(Applied::Done) => lease.renewed(sent_at),
                Ok(_) => {
                    tracing::warn!(run_id = %lease.fence.run_id, "lease lost: another node took the run over; stopping it here");
                    // Let the run's own next write see the fence and stop;
                    // give it a moment to do so cleanly.
                    tokio::time::sleep(every).await;
                    return;
                }
                Err(e) => {
                    tracing::warn!(run_id = %lease.fence.run_id, error = %e, "cannot renew the run's lease; live changes stop when it runs low");
                }
            }
        }
    }

    /// The runbook a stored run uses, checked against its recorded digests.
    async fn stored_runbook(&self, run: &RunRow) -> Result<ValidRunbook, String> {
        let (name, text) = match &run.source {
            Some(text) => (format!("{} (draft)", run.runbook), text.clone()),
            None => {
                let row = self
                    .store
                    .runbook(&run.runbook, Some(run.runbook_version))
                    .await
                    .map_err(|e| e.to_string())?
                    .ok_or_else(|| {
                        format!(
                            "{}@{} is no longer published",
                            run.runbook, run.runbook_version
                        )
                    })?;
                (format!("{}@{}", row.name, row.version), row.source)
            }
        };
        let valid = self
            .validate(&name, &text)
            .await
            .map_err(|p| p.to_string())?;
        if valid.digest != run.runbook_digest {
            return Err(format!("{name} no longer has the digest this run used"));
        }
        let kernels: BTreeMap<String, String> = valid
            .kernels
            .iter()
            .map(|(r, k)| (r.to_string(), k.digest.clone()))
            .collect();
        if json!(kernels) != run.kernels {
            return Err(format!(
                "the kernels of {name} no longer resolve to the digests this run used"
            ));
        }
        Ok(valid)
    }

    async fn pick_up_and_drive(
        &self,
        lease: &Arc<RunLease>,
        claim: &Claim,
    ) -> Result<String, RunError> {
        let id = claim.run_id.clone();
        let run = self
            .store
            .run(&id)
            .await?
            .ok_or_else(|| RunError::Stored(id.clone(), "the claimed run is gone".into()))?;
        let mut actor = Actor::parse(&run.actor).unwrap_or_else(|_| Actor::user(run.actor.clone()));
        actor.auth = Some(crate::audit::ActorAuth {
            via: crate::audit::Via::Run,
            person: None,
        });
        let mode = if run.mode == Mode::Live.as_str() {
            Mode::Live
        } else {
            Mode::DryRun
        };
        let fence = &lease.fence;
        let node = crate::audit::Actor::engine(
            crate::audit::ActorKind::Scheduler,
            format!("node:{}", self.node.id),
            crate::audit::Via::Engine,
        );
        let end = |status: RunStatus, action: &'static str, why: String| {
            Batch::new()
                .write(Write::TransitionRun {
                    id: id.clone(),
                    from: vec![RunStatus::Running, RunStatus::AwaitingApproval],
                    to: status,
                    error: Some(why.clone()),
                    finished_at: (status != RunStatus::NeedsAttention).then(now_rfc3339),
                })
                .event(
                    NewEvent::new(&node, action, format!("run:{id}"))
                        .outcome(status.as_str())
                        .details(json!({"error": why, "epoch": claim.epoch, "previous_owner": claim.previous}))
                        .run(&id),
                )
        };
        let valid = match self.stored_runbook(&run).await {
            Ok(v) => v,
            Err(why) => {
                let why = format!("cannot continue run {id}: {why}; it was not started again");
                apply_fenced(
                    self.store.as_ref(),
                    fence,
                    end(RunStatus::Failed, "run.finished", why),
                )
                .await?;
                return Ok(id);
            }
        };
        let rb = &valid.runbook;
        let main: Vec<&str> = rb.steps.iter().map(|s| s.id.as_str()).collect();
        let rows = self.store.steps(&id).await?;
        let targets = self.store.step_targets(&id).await?;
        let idempotent = |i: usize| {
            let step = &rb.steps[i];
            mode == Mode::DryRun
                || step.approval.is_some()
                || valid.kernel(step).is_some_and(|k| k.manifest.idempotent)
        };
        let (from, steps, gate_done, rerun) = match lease::pick_up(
            &main,
            &rows,
            &targets,
            &idempotent,
        ) {
            PickUp::Failed(why) => {
                apply_fenced(
                    self.store.as_ref(),
                    fence,
                    end(RunStatus::Failed, "run.finished", why),
                )
                .await?;
                self.metrics
                    .run_finished(&rb.name, mode.as_str(), "failed", Duration::ZERO);
                return Ok(id);
            }
            PickUp::NeedsAttention { step, why } => {
                tracing::warn!(run_id = %id, step = %step, "run needs attention: a non-idempotent step has no result");
                apply_fenced(
                    self.store.as_ref(),
                    fence,
                    end(RunStatus::NeedsAttention, "run.needs-attention", why),
                )
                .await?;
                return Ok(id);
            }
            PickUp::Continue {
                from,
                steps,
                gate_done,
                rerun,
            } => (from, steps, gate_done, rerun),
        };
        if run.status == RunStatus::AwaitingApproval {
            apply_fenced(
                self.store.as_ref(),
                fence,
                Batch::new().write(Write::TransitionRun {
                    id: id.clone(),
                    from: vec![RunStatus::AwaitingApproval],
                    to: RunStatus::Running,
                    error: None,
                    finished_at: None,
                }),
            )
            .await?;
        }
        if let Some(step) = &rerun {
            let why = if mode == Mode::DryRun {
                "dry-run: nothing was changed"
            } else {
                "its kernel declares idempotent"
            };
            let event = NewEvent::new(&node, "step.rerun", format!("step:{step}"))
                .details(json!({"why": why, "previous_owner": claim.previous}))
                .run(&id);
            apply_fenced(self.store.as_ref(), fence, Batch::new().event(event)).await?;
        }
        if claim.previous.is_some() || from > 0 {
            tracing::info!(run_id = %id, from, ?rerun, "run picked up");
        }
        let gate = if gate_done {
            None
        } else {
            run.gate
                .clone()
                .and_then(|g| serde_json::from_value(g).ok())
        };
        let ctx = RunCtx {
            id: id.clone(),
            valid: &valid,
            mode,
            actor: actor.clone(),
            vars: json!({
                "inputs": run.inputs,
                "steps": steps,
                "run": {"id": id, "mode": mode.as_str(), "actor": actor.to_string()},
            }),
            gate,
            lease: lease.clone(),
        };
        self.drive(ctx, from).await
    }

    /// Run `id`, or [`ControlError::NotFound`].
    async fn existing_run(&self, id: &str) -> Result<RunRow, ControlError> {
        self.store
            .run(id)
            .await?
            .ok_or_else(|| ControlError::NotFound(id.to_string()))
    }

    /// Apply a batch whose conditional write expects `run` in some state;
    /// [`ControlError::WrongState`] (saying `what`) when it was not.
    async fn apply_control(
        &self,
        run: &RunRow,
        batch: Batch,
        what: &str,
    ) -> Result<(), ControlError> {
        if self.store.apply(batch).await? == Applied::Stale {
            return Err(ControlError::WrongState {
                id: run.id.clone(),
                status: run.status.as_str(),
                what: what.to_string(),
            });
        }
        Ok(())
    }

    /// Ask a running run to stop at its next step boundary (the step in
    /// progress finishes). Audited with the actor and reason.
    pub async fn cancel(&self, id: &str, actor: &Actor, reason: &str) -> Result<(), ControlError> {
        let reason = reason_of(reason)?;
        let run = self.existing_run(id).await?;
        if run.status == RunStatus::Queued {
            // Not started: it ends here. (If a node claimed it meanwhile,
            // the request below stops it at its first step boundary.)
            let request = format!("{actor}: {reason}");
            let batch = Batch::new()
                .write(Write::TransitionRun {
                    id: id.to_string(),
                    from: vec![RunStatus::Queued],
                    to: RunStatus::Cancelled,
                    error: Some(format!("cancelled before it started (by {request})")),
                    finished_at: Some(now_rfc3339()),
                })
                .event(
                    NewEvent::new(actor, "run.cancelled", format!("run:{id}"))
                        .outcome("cancelled")
                        .details(json!({"reason": reason, "was": "queued"}))
                        .run(id),
                );
            if self.store.apply(batch).await? == Applied::Done {
                return Ok(());
            }
        }
        let batch = Batch::new()
            .write(Write::RequestCancel {
                id: id.to_string(),
                request: format!("{actor}: {reason}"),
            })
            .event(
                NewEvent::new(actor, "run.cancel-requested", format!("run:{id}"))
                    .details(json!({"reason": reason}))
                    .run(id),
            );
        self.apply_control(&run, batch, "only a running run can be cancelled")
            .await
    }

    /// Close a halted or interrupted run for good: it will not be resumed.
    pub async fn abandon(&self, id: &str, actor: &Actor, reason: &str) -> Result<(), ControlError> {
        let reason = reason_of(reason)?;
        let run = self.existing_run(id).await?;
        let error = format!(
            "abandoned by {actor}: {reason} (was {}: {})",
            run.status.as_str(),
            run.error.as_deref().unwrap_or("-")
        );
        let batch = Batch::new()
            .write(Write::TransitionRun {
                id: id.to_string(),
                from: vec![
                    RunStatus::Halted,
                    RunStatus::Interrupted,
                    RunStatus::NeedsAttention,
                ],
                to: RunStatus::Abandoned,
                error: Some(error),
                finished_at: Some(now_rfc3339()),
            })
            .event(
                NewEvent::new(actor, "run.abandoned", format!("run:{id}"))
                    .outcome("abandoned")
                    .details(json!({"reason": reason, "was": run.status.as_str()}))
                    .run(id),
            );
        self.apply_control(
            &run,
            batch,
            "only halted or interrupted runs, or runs that need attention, can be abandoned",
        )
        .await
    }

    /// Check that run `id` can continue: halted (from the step it stopped
    /// before), or needing attention (its step without a result runs
    /// again: the person resuming says that is safe). The same published
    /// runbook version and kernels, the switch off for live runs, no failed
    /// step. Queue it with [`Service::enqueue`] or execute it here with
    /// [`Service::execute_prepared`].
    pub async fn prepare_resume(
        &self,
        id: &str,
        actor: &Actor,
        reason: &str,
    ) -> Result<PreparedRun, ControlError> {
        self.prepare_continue(id, actor, reason, "retry").await
    }

    /// Check that run `id`, which needs attention, can continue after its
    /// step without a result (marked skipped, by `actor`, for `reason`).
    pub async fn prepare_skip(
        &self,
        id: &str,
        actor: &Actor,
        reason: &str,
    ) -> Result<PreparedRun, ControlError> {
        self.prepare_continue(id, actor, reason, "skipped").await
    }

    async fn prepare_continue(
        &self,
        id: &str,
        actor: &Actor,
        reason: &str,
        decision: &'static str,
    ) -> Result<PreparedRun, ControlError> {
        let reason = reason_of(reason)?;
        let run = self.existing_run(id).await?;
        let allowed = if decision == "skipped" {
            run.status == RunStatus::NeedsAttention
        } else {
            matches!(run.status, RunStatus::Halted | RunStatus::NeedsAttention)
        };
        if !allowed {
            return Err(ControlError::WrongState {
                id: id.to_string(),
                status: run.status.as_str(),
                what: if decision == "skipped" {
                    "only a run that needs attention has a step to skip".into()
                } else {
                    "only halted runs and runs that need attention can be resumed; start a new run instead".into()
                },
            });
        }
        let valid = self.stored_runbook(&run).await.map_err(|why| {
            ControlError::Refused(format!(
                "cannot continue run {id}: {why}; abandon it and start a new run"
            ))
        })?;
        let mode = if run.mode == Mode::Live.as_str() {
            Mode::Live
        } else {
            Mode::DryRun
        };
        if mode == Mode::Live
            && let Some(switch) = crate::switch::halting(self.store.as_ref(), &run.runbook).await?
        {
            return Err(RunError::Halted {
                runbook: run.runbook.clone(),
                switch,
            }
            .into());
        }
        let rows = self.store.steps(id).await?;
        if let Some(failed) = rows.iter().find(|r| r.status == "failed") {
            return Err(ControlError::Refused(format!(
                "step `{}` of run {id} failed before it stopped; its on_failure steps may be half done, so it cannot be resumed: abandon it",
                failed.step_id
            )));
        }
        let step = if run.status == RunStatus::NeedsAttention {
            let open = rows.iter().find(|r| r.status == "running").ok_or_else(|| {
                ControlError::Refused(format!("run {id} has no step without a result; abandon it"))
            })?;
            Some((open.step_id.clone(), decision))
        } else {
            None
        };
        Ok(PreparedRun {
            id: id.to_string(),
            runbook: run.runbook.clone(),
            mode,
            actor: actor.clone(),
            draft: run.draft,
            inputs: run.inputs.clone(),
            valid,
            gate: None,
            resume: Some(Resume {
                from: run.status,
                step,
                reason,
            }),
        })
    }

    /// Everything that can refuse a run, before anything is written:
    /// validation, inputs, the big red switch. The run gets its id here.
    pub async fn prepare(&self, request: RunRequest) -> Result<PreparedRun, RunError> {
        let (file, text, published) = match &request.source {
            RunbookSource::Published { name, version } => {
                let row = self.store.runbook(name, *version).await?.ok_or_else(|| {
                    RunError::NotFound(match version {
                        Some(v) => format!("{name}@{v}"),
                        None => name.clone(),
                    })
                })?;
                (format!("{}@{}", row.name, row.version), row.source, true)
            }
            RunbookSource::File { path, text } => (path.clone(), text.clone(), false),
        };
        let valid = self
            .validate(&file, &text)
            .await
            .map_err(RunError::Invalid)?;
        let rb = &valid.runbook;
        // A file whose exact content is published is that published version.
        let draft = !published
            && self
                .store
                .runbook(&rb.name, Some(i64::from(rb.version)))
                .await?
                .is_none_or(|row| row.digest != valid.digest);
        let inputs = typed_inputs(&rb.inputs, &request.inputs);
        let problems: Vec<String> = valid
            .inputs_schema
            .iter_errors(&inputs)
            .map(|e| {
                let at = e.instance_path().as_str().to_string();
                if at.is_empty() {
                    e.to_string()
                } else {
                    format!("{at}: {e}")
                }
            })
            .collect();
        if !problems.is_empty() {
            return Err(RunError::Inputs {
                runbook: format!("{}@{}", rb.name, rb.version),
                problems,
            });
        }
        if request.mode == Mode::Live
            && let Some(switch) = crate::switch::halting(self.store.as_ref(), &rb.name).await?
        {
            // A refusal is an act too: who tried, and why it was refused.
            self.store
                .apply(
                    Batch::new().event(
                        NewEvent::new(
                            &request.actor,
                            "run.refused",
                            format!("runbook:{}@{}", rb.name, rb.version),
                        )
                        .outcome("halted")
                        .details(json!({"mode": "live", "reason": switch.describe()})),
                    ),
                )
                .await?;
            return Err(RunError::Halted {
                runbook: rb.name.clone(),
                switch,
            });
        }
        Ok(PreparedRun {
            id: uuid::Uuid::now_v7().to_string(),
            runbook: rb.name.clone(),
            draft,
            mode: request.mode,
            actor: request.actor,
            inputs,
            valid,
            resume: None,
            gate: None,
        })
    }

    /// Why the run must stop before `step`: the big red switch (live runs)
    /// or a cancel request. `None` to go on.
    async fn stop_before(
        &self,
        ctx: &RunCtx<'_>,
        what: &str,
    ) -> Result<Option<(RunStatus, String)>, StoreError> {
        let rb = &ctx.valid.runbook;
        if let Some(request) = self
            .store
            .run(&ctx.id)
            .await?
            .and_then(|r| r.cancel_requested)
        {
            return Ok(Some((
                RunStatus::Cancelled,
                format!(
                    "cancelled before {what} (by {request}); the completed steps stand, nothing after them ran"
                ),
            )));
        }
        if ctx.mode == Mode::Live
            && let Some(switch) = crate::switch::halting(self.store.as_ref(), &rb.name).await?
        {
            return Ok(Some((
                RunStatus::Halted,
                format!(
                    "halted before {what}: {}; the completed steps stand, nothing after them ran",
                    switch.describe()
                ),
            )));
        }
        Ok(None)
    }

    /// Execute the steps from `from` (0, or where a resumed run stopped) and
    /// record how the run ended.
    async fn drive(&self, mut ctx: RunCtx<'_>, from: usize) -> Result<String, RunError> {
        let rb = &ctx.valid.runbook;
        let id = ctx.id.clone();
        let subject = format!("runbook:{}@{}", rb.name, rb.version);
        let started = Instant::now();
        let mut failure: Option<(String, String)> = None;
        let mut stopped: Option<(RunStatus, String)> = None;
        if let Some(gate) = ctx.gate.clone() {
            let step = Step::approval_gate(GATE_STEP, gate);
            if let StepEnd::Failed(error) = self
                .step(&mut ctx, 0, "gate", &step)
                .instrument(tracing::info_span!("step", step_id = GATE_STEP))
                .await?
            {
                failure = Some((GATE_STEP.to_string(), error));
            }
        }
        for (position, step) in rb.steps.iter().enumerate().skip(from) {
            if failure.is_some() {
                break;
            }
            // Checked before every step, so a run in progress stops at the
            // next step boundary.
            stopped = self
                .stop_before(&ctx, &format!("step `{}`", step.id))
                .await?;
            if stopped.is_some() {
                break;
            }
            let span = tracing::info_span!("step", step_id = %step.id);
            match self
                .step(&mut ctx, position, "main", step)
                .instrument(span)
                .await?
            {
                StepEnd::Failed(error) => {
                    failure = Some((step.id.clone(), error));
                    break;
                }
                StepEnd::Succeeded | StepEnd::Skipped => {}
            }
        }
        if let Some((failed_step, error)) = &failure {
            if let Some(vars) = ctx.vars.as_object_mut() {
                vars.insert(
                    "failed".into(),
                    json!({"step": failed_step, "error": error}),
                );
            }
            for (i, step) in rb.on_failure.iter().enumerate() {
                stopped = self
                    .stop_before(&ctx, &format!("on_failure step `{}`", step.id))
                    .await?;
                if stopped.is_some() {
                    break;
                }
                // on_failure steps are best effort: each runs even if one fails.
                let _ = self
                    .step(&mut ctx, rb.steps.len() + i, "on_failure", step)
                    .instrument(tracing::info_span!("step", step_id = %step.id))
                    .await?;
            }
        }
        // A cancel that ended a step (an approval wait) ends the run as cancelled.
        if stopped.is_none()
            && failure.is_some()
            && let Some(request) = self.store.run(&id).await?.and_then(|r| r.cancel_requested)
        {
            stopped = Some((RunStatus::Cancelled, format!("cancelled (by {request})")));
        }
        let (status, error) = match (stopped, failure) {
            (Some((status, why)), Some((step, error))) => (
                status,
                Some(format!("step `{step}` failed: {error}; then {why}")),
            ),
            (Some((status, why)), None) => (status, Some(why)),
            (None, Some((step, error))) => (
                RunStatus::Failed,
                Some(format!("step `{step}` failed: {error}")),
            ),
            (None, None) => (RunStatus::Succeeded, None),
        };
        self.write(
            &ctx,
            Batch::new()
                .write(Write::FinishRun {
                    id: id.clone(),
                    status,
                    error: error.clone(),
                    finished_at: now_rfc3339(),
                })
                .event(
                    NewEvent::new(&ctx.actor, "run.finished", subject)
                        .outcome(status.as_str())
                        .details(json!({"duration_ms": ms(started.elapsed()), "error": error}))
                        .run(&id),
                ),
        )
        .await?;
        tracing::info!(run_id = %id, status = status.as_str(), "run finished");
        self.metrics.run_finished(
            &rb.name,
            ctx.mode.as_str(),
            status.as_str(),
            started.elapsed(),
        );
        Ok(id)
    }

    fn step_row(ctx: &RunCtx<'_>, position: usize, phase: &str, step: &Step) -> StepRow {
        StepRow {
            run_id: ctx.id.clone(),
            step_id: step.id.clone(),
            position: i64::try_from(position).unwrap_or(i64::MAX),
            phase: phase.to_string(),
            kernel: step.kernel.clone(),
            kernel_digest: ctx.valid.kernel(step).map(|k| k.digest.clone()),
            status: "running".into(),
            attempts: 0,
            targets: json!([]),
            input: None,
            output: None,
            error: None,
            logs: json!([]),
            started_at: Some(now_rfc3339()),
            finished_at: None,
            duration_ms: None,
        }
    }

    /// Render targets and input, refusing an empty target set and unknown targets.
    fn prepare_step(
        &self,
        step: &Step,
        kernel: &LoadedKernel,
        vars: &minijinja::Value,
    ) -> Result<(Vec<String>, Value), String> {
        let mut targets = Vec::new();
        for t in &step.targets {
            // A template may render to one name or a list; blank names are
            // dropped, so a set that renders to nothing is refused below.
            let rendered = self
                .templates
                .render_value(t, vars)
                .map_err(|e| format!("targets: {e}"))?;
            let items = match rendered {
                Value::Array(items) => items,
                one => vec![one],
            };
            for item in items {
                match item {
                    Value::String(s) if s.trim().is_empty() => {}
                    Value::String(s) => targets.extend(
                        self.host
                            .targets()
                            .inventory()
                            .select(s.trim())
                            .map_err(|e| format!("targets: {e}"))?,
                    ),
                    other => {
                        return Err(format!(
                            "targets: {t:?} rendered to {other}, not a target name"
                        ));
                    }
                }
            }
        }
        targets.sort();
        targets.dedup();
        if targets.is_empty() {
            return Err(
                "the step's targets rendered to an empty set; an empty target set is refused, never read as \"all\""
                    .into(),
            );
        }
        let max_targets = step
            .max_targets
            .map_or(crate::runbook::MAX_TARGETS, |m| m as usize)
            .min(crate::runbook::MAX_TARGETS);
        if targets.len() > max_targets {
            return Err(format!(
                "the step's targets expand to {} targets, more than its max_targets of {max_targets}; nothing was run (raise max_targets only if that blast radius is intended)",
                targets.len()
            ));
        }
        let input = self
            .templates
            .render_json(&step.with, vars)
            .map_err(|e| format!("with: {e}"))?;
        kernel.validate_input(&input).map_err(|problems| {
            format!(
                "input does not satisfy {}'s input schema (the kernel was not started): {}",
                kernel.reference(),
                problems.join("; ")
            )
        })?;
        Ok((targets, input))
    }

    async fn step(
        &self,
        ctx: &mut RunCtx<'_>,
        position: usize,
        phase: &str,
        step: &Step,
    ) -> Result<StepEnd, StoreError> {
        let started = Instant::now();
        let mut row = Self::step_row(ctx, position, phase, step);
        let subject = format!("step:{}", step.id);
        let vars = minijinja::Value::from(minijinja::value::Serde(ctx.vars.clone()));
        // when:
        if let Some(when) = &step.when {
            match self.templates.condition(when, &vars) {
                Ok(true) => {}
                Ok(false) => {
                    row.status = "skipped".into();
                    row.finished_at = Some(now_rfc3339());
                    row.duration_ms = Some(0);
                    self.write(
                        ctx,
                        Batch::new().write(Write::UpsertStep(row)).event(
                            NewEvent::new(&ctx.actor, "step.skipped", subject)
                                .outcome("skipped")
                                .details(json!({"when": when, "reason": "condition was false"}))
                                .run(&ctx.id),
                        ),
                    )
                    .await?;
                    self.remember(ctx, step, "skipped", Value::Null);
                    return Ok(StepEnd::Skipped);
                }
                Err(e) => {
                    return self
                        .finish_step(ctx, row, started, Err(format!("when: {e}")))
                        .await;
                }
            }
        }
        if let Some(approval) = &step.approval {
            return self.approval_step(ctx, row, started, approval).await;
        }
        let Some(kernel) = ctx.valid.kernel(step).cloned() else {
            // Validation guarantees every kernel is resolved.
            return Ok(StepEnd::Failed(format!(
                "kernel {} is not resolved",
                step.kernel
            )));
        };
        let (targets, input) = match self.prepare_step(step, &kernel, &vars) {
            Ok(prepared) => prepared,
            Err(e) => return self.finish_step(ctx, row, started, Err(e)).await,
        };
        row.targets = json!(targets);
        row.input = Some(input.clone());
        self.write(
            ctx,
            Batch::new().write(Write::UpsertStep(row.clone())).event(
                NewEvent::new(&ctx.actor, "step.started", subject.clone())
                    .details(json!({
                        "kernel": kernel.reference(),
                        "digest": kernel.digest,
                        "targets": targets,
                        "phase": phase,
                    }))
                    .run(&ctx.id),
            ),
        )
        .await?;
        let n = targets.len();
        let concurrency = step.max_concurrency.map_or(1, |a| a.of(n)).max(1);
        let max_errors = step.max_errors.map_or(0, |a| a.of(n));
        let mut ends: Vec<TargetEnd> = Vec::with_capacity(n);
        let mut failures = 0;
        let mut not_started: Vec<String> = Vec::new();
        {
            let shared: &RunCtx<'_> = ctx;
            let mut pending = FuturesUnordered::new();
            let mut queue = targets.iter();
            let mut stopped = false;
            loop {
                while !stopped && pending.len() < concurrency {
                    match queue.next() {
                        Some(t) => pending.push(self.run_target(shared, step, &kernel, t, &input)),
                        None => break,
                    }
                }
                let Some(end) = pending.next().await else {
                    break;
                };
                let end = end?;
                if end.result.is_err() {
                    failures += 1;
                    // One failure too many: no new target starts; in-flight ones finish.
                    stopped = failures > max_errors;
                }
                self.record_target(shared, step, &end).await?;
                ends.push(end);
            }
            for t in queue {
                not_started.push(t.clone());
                let end = TargetEnd {
                    target: t.clone(),
                    attempts: 0,
                    result: Err("not started: the step's max_errors was exceeded first".into()),
                    logs: Vec::new(),
                    duration_ms: 0,
                };
                self.record_target(shared, step, &end).await?;
            }
        }
        ends.sort_by(|a, b| a.target.cmp(&b.target));
        row.attempts = ends.iter().map(|e| e.attempts).max().unwrap_or(0);
        row.logs = json!(
            ends.iter()
                .flat_map(|e| e.logs.iter().map(move |l| {
                    if n == 1 {
                        l.clone()
                    } else {
                        json!({"target": e.target, "line": l})
                    }
                }))
                .collect::<Vec<_>>()
        );
        let per_target: serde_json::Map<String, Value> = ends
            .iter()
            .map(|e| {
                let (status, output, error) = match &e.result {
                    Ok(o) => ("succeeded", o.clone(), Value::Null),
                    Err(err) => ("failed", Value::Null, json!(err)),
                };
                (
                    e.target.clone(),
                    json!({"status": status, "output": output, "error": error}),
                )
            })
            .collect();
        let result = if failures > max_errors {
            let first: Vec<String> = ends
                .iter()
                .filter_map(|e| {
                    e.result
                        .as_ref()
                        .err()
                        .map(|err| format!("{}: {err}", e.target))
                })
                .take(3)
                .collect();
            Err(if n == 1 {
                ends[0].result.clone().err().unwrap_or_default()
            } else {
                format!(
                    "{failures} of {n} targets failed (max_errors {max_errors}){}: {}",
                    if not_started.is_empty() {
                        String::new()
                    } else {
                        format!("; {} not started", not_started.len())
                    },
                    first.join("; ")
                )
            })
        } else if n == 1 {
            Ok(ends[0].result.clone().unwrap_or(Value::Null))
        } else {
            Ok(Value::Object(
                per_target
                    .iter()
                    .map(|(t, r)| (t.clone(), r["output"].clone()))
                    .collect(),
            ))
        };
        if let Some(steps) = ctx.vars.get_mut("steps").and_then(Value::as_object_mut) {
            steps.insert(
                step.id.clone(),
                json!({
                    "status": if result.is_ok() { "succeeded" } else { "failed" },
                    "output": result.as_ref().ok().cloned().unwrap_or(Value::Null),
                    "targets": per_target,
                }),
            );
        }
        self.finish_step(ctx, row, started, result).await
    }

    /// One target of a step: its attempts, with retries for retryable errors.
    async fn run_target(
        &self,
        ctx: &RunCtx<'_>,
        step: &Step,
        kernel: &Arc<LoadedKernel>,
        target: &str,
        input: &Value,
    ) -> Result<TargetEnd, StoreError> {
        let started = Instant::now();
        let max_retries = step.retries.as_ref().map_or(0, |r| r.max);
        let backoff = step
            .retries
            .as_ref()
            .and_then(|r| r.backoff)
            .map_or(Duration::from_secs(1), |b| b.0);
        let mut attempt: u32 = 0;
        let report = loop {
            attempt += 1;
            let report = self
                .attempt(ctx, step, kernel, target, input, i64::from(attempt))
                .await;
            let retryable = report.result.as_ref().is_err_and(InvokeError::is_retryable);
            if retryable && attempt <= max_retries {
                self.metrics
                    .inc("firedrill_retries_total", &[("kind", "step")]);
                let wait = crate::retry::backoff(backoff, attempt, MAX_BACKOFF);
                let error = report.result.as_ref().err().map(ToString::to_string);
                self.store
                    .apply(
                        Batch::new().event(
                            NewEvent::new(&ctx.actor, "step.retried", format!("step:{}", step.id))
                                .outcome("retrying")
                                .details(json!({"target": target, "attempt": attempt, "error": error, "backoff_ms": ms(wait)}))
                                .run(&ctx.id),
                        ),
                    )
                    .await?;
                tokio::time::sleep(wait).await;
                continue;
            }
            break report;
        };
        if let Err(InvokeError::Limit(l)) = &report.result {
            self.store
                .apply(
                    Batch::new().event(
                        NewEvent::new(&ctx.actor, "limit.exceeded", format!("step:{}", step.id))
                            .outcome("failed")
                            .details(json!({"target": target, "limit": l.limit, "value": l.value, "config_key": l.limit.config_key()}))
                            .run(&ctx.id),
                    ),
                )
                .await?;
        }
        Ok(TargetEnd {
            target: target.to_string(),
            attempts: i64::from(attempt),
            result: report.result.map_err(|e| e.to_string()),
            logs: report
                .logs
                .iter()
                .map(|l| serde_json::to_value(l).unwrap_or_default())
                .collect(),
            duration_ms: ms(started.elapsed()),
        })
    }

    /// Persist one target's result with its audit record.
    async fn record_target(
        &self,
        ctx: &RunCtx<'_>,
        step: &Step,
        end: &TargetEnd,
    ) -> Result<(), StoreError> {
        let (status, output, error) = match &end.result {
            Ok(o) => ("succeeded", Some(o.clone()), None),
            Err(_) if end.attempts == 0 => ("not-started", None, end.result.clone().err()),
            Err(e) => ("failed", None, Some(e.clone())),
        };
        self.write(
            ctx,
            Batch::new()
                .write(Write::UpsertStepTarget(StepTargetRow {
                    run_id: ctx.id.clone(),
                    step_id: step.id.clone(),
                    target: end.target.clone(),
                    status: status.into(),
                    attempts: end.attempts,
                    output,
                    error: error.clone(),
                    duration_ms: Some(end.duration_ms),
                }))
                .event(
                    NewEvent::new(
                        &ctx.actor,
                        "step.target.finished",
                        format!("target:{}", end.target),
                    )
                    .outcome(status)
                    .details(json!({"step": step.id, "attempts": end.attempts, "error": error}))
                    .run(&ctx.id),
                ),
        )
        .await?;
        Ok(())
    }

    /// One invocation of the step's kernel, bounded by the step's timeout.
    async fn attempt(
        &self,
        ctx: &RunCtx<'_>,
        step: &Step,
        kernel: &Arc<LoadedKernel>,
        target: &str,
        input: &Value,
        attempt: i64,
    ) -> InvokeReport {
        let observer = Arc::new(CallRecorder {
            store: self.store.clone(),
            metrics: self.metrics.clone(),
            actor: ctx.actor.clone(),
            run_id: ctx.id.clone(),
            step_id: step.id.clone(),
            target: target.to_string(),
            attempt,
            lease: ctx.lease.clone(),
        });
        let request = InvokeRequest {
            run_id: ctx.id.clone(),
            step_id: step.id.clone(),
            mode: ctx.mode,
            actor: ctx.actor.to_string(),
            targets: vec![target.to_string()],
            input: input.clone(),
            observer: Some(observer),
        };
        let invoke = self.host.invoke(kernel, request);
        match step.timeout {
            None => invoke.await,
            Some(t) => match tokio::time::timeout(t.0, invoke).await {
                Ok(report) => report,
                Err(_) => InvokeReport {
                    kernel: kernel.reference(),
                    digest: kernel.digest.clone(),
                    mode: ctx.mode,
                    result: Err(InvokeError::Retryable(format!(
                        "the step's timeout of {t} elapsed; raise `timeout` on the step if the action legitimately takes longer"
                    ))),
                    host_calls: Vec::new(),
                    logs: Vec::new(),
                    stdout: String::new(),
                    stderr: String::new(),
                    duration_ms: u64::try_from(t.0.as_millis()).unwrap_or(u64::MAX),
                },
            },
        }
    }

    /// An approval step: in a live run, wait (the run is
    /// `awaiting-approval`) until `required` distinct people with an allowed
    /// role approve, someone denies, the timeout passes, or the run is
    /// cancelled or halted. Dry-runs and drills record where approval would
    /// be needed and go on.
    async fn approval_step(
        &self,
        ctx: &mut RunCtx<'_>,
        mut row: StepRow,
        started: Instant,
        approval: &crate::runbook::Approval,
    ) -> Result<StepEnd, StoreError> {
        let subject = format!("step:{}", row.step_id);
        let roles: Vec<&str> = approval.roles().iter().map(|r| r.as_str()).collect();
        let spec = json!({"required": approval.required, "roles": roles, "timeout": approval.timeout.to_string(), "reason": approval.reason});
        row.kernel = "approval".into();
        row.input = Some(spec.clone());
        let drill = ctx.actor == crate::drill::drill_actor();
        if ctx.mode == Mode::DryRun || drill {
            let why = if drill {
                "drill: approvals are given by people, not drills; not waited for"
            } else {
                "dry-run: a live run waits here for approval"
            };
            self.write(
                ctx,
                Batch::new().write(Write::UpsertStep(row.clone())).event(
                    NewEvent::new(&ctx.actor, "step.started", subject)
                        .details(json!({"approval": spec, "note": why}))
                        .run(&ctx.id),
                ),
            )
            .await?;
            let output = json!({"approved": false, "would_require": spec, "note": why});
            let result = Ok(output);
            self.remember_result(ctx, &row.step_id, &result);
            return self.finish_step(ctx, row, started, result).await;
        }
        row.status = "awaiting-approval".into();
        self.write(
            ctx,
            Batch::new()
                .write(Write::UpsertStep(row.clone()))
                .write(Write::TransitionRun {
                    id: ctx.id.clone(),
                    from: vec![RunStatus::Running],
                    to: RunStatus::AwaitingApproval,
                    error: None,
                    finished_at: None,
                })
                .event(
                    NewEvent::new(&ctx.actor, "approval.requested", subject.clone())
                        .details(spec.clone())
                        .run(&ctx.id),
                ),
        )
        .await?;
        tracing::info!(required = approval.required, "waiting for approval");
        let deadline = started + approval.timeout.0;
        let result = loop {
            let decisions = self.store.approvals(&ctx.id, &row.step_id).await?;
            if let Some(deny) = decisions.iter().find(|d| d.decision == "deny") {
                break Err(format!("denied by {}: {}", deny.approver, deny.comment));
            }
            let approvers: Vec<&str> = decisions.iter().map(|d| d.approver.as_str()).collect();
            if approvers.len() >= approval.required as usize {
                break Ok(json!({"approved": true, "approvers": approvers}));
            }
            if let Some(r) = self.store.run(&ctx.id).await?
                && let Some(request) = r.cancel_requested
            {
                break Err(format!(
                    "cancelled while waiting for approval (by {request})"
                ));
            }
            if let Some(switch) =
                crate::switch::halting(self.store.as_ref(), &ctx.valid.runbook.name).await?
            {
                break Err(format!(
                    "the big red switch was engaged while waiting for approval: {}",
                    switch.describe()
                ));
            }
            if Instant::now() >= deadline {
                break Err(format!(
                    "approval timed out after {}: {} of {} approvals",
                    approval.timeout,
                    approvers.len(),
                    approval.required
                ));
            }
            tokio::time::sleep(APPROVAL_POLL).await;
        };
        self.write(
            ctx,
            Batch::new().write(Write::TransitionRun {
                id: ctx.id.clone(),
                from: vec![RunStatus::AwaitingApproval],
                to: RunStatus::Running,
                error: None,
                finished_at: None,
            }),
        )
        .await?;
        self.remember_result(ctx, &row.step_id, &result);
        self.finish_step(ctx, row, started, result).await
    }

    fn remember_result(&self, ctx: &mut RunCtx<'_>, step_id: &str, result: &Result<Value, String>) {
        if let Some(steps) = ctx.vars.get_mut("steps").and_then(Value::as_object_mut) {
            steps.insert(
                step_id.to_string(),
                json!({
                    "status": if result.is_ok() { "succeeded" } else { "failed" },
                    "output": result.as_ref().ok().cloned().unwrap_or(Value::Null),
                }),
            );
        }
    }

    /// Approve or deny the approval step `run_id` is waiting at, as `actor`
    /// (with `role` when it is an API token). The run's initiator cannot
    /// decide on it, a person counts once, and only allowed roles count.
    pub async fn decide_approval(
        &self,
        run_id: &str,
        actor: &Actor,
        role: Option<crate::auth::Role>,
        approve: bool,
        comment: &str,
    ) -> Result<String, ControlError> {
        let comment = reason_of(comment)?;
        let run = self.existing_run(run_id).await?;
        let step = self
            .store
            .steps(run_id)
            .await?
            .into_iter()
            .find(|s| s.status == "awaiting-approval")
            .filter(|_| run.status == RunStatus::AwaitingApproval)
            .ok_or_else(|| ControlError::WrongState {
                id: run_id.to_string(),
                status: run.status.as_str(),
                what: "it is not waiting for approval".into(),
            })?;
        if actor.kind == crate::audit::ActorKind::Token
            && actor.auth.as_ref().is_none_or(|a| a.person.is_none())
        {
            return Err(ControlError::Refused(format!(
                "token {:?} has no owner, so the person deciding is unknown; create a token with an owner (`firedrill token create --owner NAME`) to approve",
                actor.id
            )));
        }
        // People are counted, not tokens or names: the person behind the
        // decision (a token's owner, the OS user at the CLI).
        let person = actor.person();
        if person == self.run_starter(run_id, &run.actor).await? {
            return Err(ControlError::Refused(format!(
                "{actor} ({person}) started run {run_id}; the two-person rule needs someone else to approve or deny it"
            )));
        }
        let allowed: Vec<String> = step
            .input
            .as_ref()
            .and_then(|i| i["roles"].as_array().cloned())
            .unwrap_or_default()
            .iter()
            .filter_map(|r| r.as_str().map(String::from))
            .collect();
        if let Some(role) = role
            && !allowed.iter().any(|r| r == role.as_str())
        {
            return Err(ControlError::Refused(format!(
                "step `{}` takes approvals from {}; this token's role is {}",
                step.step_id,
                allowed.join(", "),
                role.as_str()
            )));
        }
        let decision = if approve { "approve" } else { "deny" };
        let applied = self
            .store
            .apply(
                Batch::new()
                    .write(Write::InsertApproval(crate::store::ApprovalRow {
                        run_id: run_id.to_string(),
                        step_id: step.step_id.clone(),
                        approver: person.clone(),
                        decision: decision.to_string(),
                        comment: comment.clone(),
                        at: now_rfc3339(),
                    }))
                    .event(
                        NewEvent::new(
                            actor,
                            if approve {
                                "approval.approved"
                            } else {
                                "approval.denied"
                            },
                            format!("step:{}", step.step_id),
                        )
                        .details(json!({"comment": comment}))
                        .run(run_id),
                    ),
            )
            .await?;
        if applied != Applied::Done {
            return Err(ControlError::Refused(format!(
                "{person} already decided on step `{}` of run {run_id} (as {actor} or another of their tokens); one person counts once",
                step.step_id
            )));
        }
        Ok(step.step_id)
    }

    /// The person who started `run_id`, as its `run.started` record
    /// established them; else the run's recorded actor.
    async fn run_starter(&self, run_id: &str, recorded: &str) -> Result<String, StoreError> {
        let started = self
            .store
            .audit(&crate::store::AuditFilter {
                run_id: Some(run_id.to_string()),
                action: Some("run.started".into()),
                limit: 1,
                ..Default::default()
            })
            .await?;
        let person = started.first().and_then(|r| {
            let details: Value = serde_json::from_str(&r.details).ok()?;
            details["actor_auth"]["person"]
                .as_str()
                .map(|p| format!("person:{p}"))
        });
        Ok(person.unwrap_or_else(|| recorded.to_string()))
    }

    fn remember(&self, ctx: &mut RunCtx<'_>, step: &Step, status: &str, output: Value) {
        if let Some(steps) = ctx.vars.get_mut("steps").and_then(Value::as_object_mut) {
            steps.insert(step.id.clone(), json!({"status": status, "output": output}));
        }
    }

    async fn finish_step(
        &self,
        ctx: &RunCtx<'_>,
        mut row: StepRow,
        started: Instant,
        result: Result<Value, String>,
    ) -> Result<StepEnd, StoreError> {
        let subject = format!("step:{}", row.step_id);
        row.finished_at = Some(now_rfc3339());
        row.duration_ms = Some(ms(started.elapsed()));
        let (end, outcome) = match &result {
            Ok(output) => {
                row.status = "succeeded".into();
                row.output = Some(output.clone());
                (StepEnd::Succeeded, "succeeded")
            }
            Err(e) => {
                row.status = "failed".into();
                row.error = Some(e.clone());
                (StepEnd::Failed(e.clone()), "failed")
            }
        };
        tracing::info!(
            status = outcome,
            duration_ms = row.duration_ms,
            "step finished"
        );
        self.metrics.observe(
            "firedrill_step_duration_seconds",
            &[("runbook", &ctx.valid.runbook.name), ("status", outcome)],
            started.elapsed(),
        );
        let batch = Batch::new();
        let event = NewEvent::new(&ctx.actor, "step.finished", subject)
            .outcome(outcome)
            .details(json!({
                "kernel": row.kernel,
                "digest": row.kernel_digest,
                "attempts": row.attempts,
                "duration_ms": row.duration_ms,
                "error": row.error,
            }))
            .run(&ctx.id);
        self.write(ctx, batch.write(Write::UpsertStep(row)).event(event))
            .await?;
        Ok(end)
    }
}

/// The planned changes (simulated `change` calls) in a run's host-call records.
pub fn planned_changes(calls: &[HostCallRow]) -> Vec<&HostCallRow> {
    calls
        .iter()
        .filter(|c| {
            c.call.get("simulated") == Some(&Value::Bool(true))
                && c.call.get("effect").and_then(Value::as_str) == Some(Effect::Change.as_str())
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inputs_are_typed_by_schema_and_defaults_fill_in() {
        let schema = json!({"type": "object", "properties": {
            "unit": {"type": "string"},
            "count": {"type": "integer"},
            "force": {"type": "boolean", "default": false},
            "host": {"type": "string", "default": "demo-host"},
        }});
        let pairs = [("unit", "007"), ("count", "3"), ("host", "web-1")]
            .map(|(k, v)| (k.to_string(), v.to_string()));
        assert_eq!(
            typed_inputs(&schema, &pairs),
            json!({"unit": "007", "count": 3, "force": false, "host": "web-1"})
        );
        // Not parseable as the declared type: kept as text, so the schema
        // check reports it instead of a silent coercion.
        let pairs = [("count".to_string(), "three".to_string())];
        assert_eq!(typed_inputs(&schema, &pairs)["count"], json!("three"));
    }
}
