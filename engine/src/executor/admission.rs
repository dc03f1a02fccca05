//! Admission: where a run comes from, every check that can refuse it before
//! anything is written ([`Service::prepare`]), a person's decision to
//! continue a stopped run, and queueing.

use std::sync::Arc;
use std::time::Instant;

use serde_json::{Value, json};

use super::claim::Claim;
use super::error::{ControlError, RunError, reason_of};
use super::journal::{self, RunControl};
use super::{Service, mode_of};
use crate::Mode;
use crate::audit::{Actor, now_rfc3339};
use crate::runbook::ValidRunbook;
use crate::store::{Applied, Batch, RunRow, RunStatus, StepStatus, StoreError};

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

/// A run that passed every check and has its id, not yet started.
#[derive(Debug)]
pub struct PreparedRun {
    pub id: String,
    pub runbook: String,
    pub mode: Mode,
    pub actor: Actor,
    draft: bool,
    inputs: Value,
    valid: Arc<ValidRunbook>,
    /// Continue a halted run instead of starting one.
    resume: Option<Resume>,
    /// An approval to wait for before the first step (readiness policy
    /// `require-approval`).
    pub gate: Option<crate::runbook::Approval>,
    /// Writes and audit records that go in the admission's own batch
    /// ([`PreparedRun::with`]): kept together with it or not at all.
    with: Batch,
}

impl PreparedRun {
    /// Admit this run together with `batch`, in one transaction: its
    /// writes come before the run's (a conditional one that writes nothing
    /// refuses the run: [`RunError::Preempted`]), its audit records before
    /// `run.started`. An alert's claim and `alert.received` go with the run
    /// they start this way, so a crash leaves all three or none.
    pub fn with(mut self, batch: Batch) -> Self {
        self.with = batch;
        self
    }
}

/// A run admitted and claimed by this node in one write
/// ([`Service::admit_claimed`]), not yet executing.
#[derive(Debug)]
pub struct Started {
    claim: Claim,
    known: Option<(RunRow, Arc<ValidRunbook>)>,
}

impl Started {
    pub fn run_id(&self) -> &str {
        &self.claim.run_id
    }

    pub fn epoch(&self) -> i64 {
        self.claim.epoch
    }
}

/// A person's decision to continue a stopped run: it is queued again, and
/// the node that claims it picks up from its stored steps.
#[derive(Debug)]
struct Resume {
    /// The run's status now (halted or needs-attention).
    from: RunStatus,
    /// For a run that needs attention: the step without a result and what
    /// becomes of it ([`StepStatus::Retry`]: run it again; or skipped).
    step: Option<(String, StepStatus)>,
    reason: String,
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

impl Service {
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
        let started = self.admit_claimed(run, None).await?;
        self.execute_started(started).await
    }

    /// Admit a prepared run and claim it for this node in one write (with
    /// `limits` as [`Service::enqueue`]), to execute it here at once with
    /// [`Service::execute_started`].
    pub async fn admit_claimed(
        &self,
        run: PreparedRun,
        limits: Option<(u64, u64)>,
    ) -> Result<Started, RunError> {
        let sent_at = Instant::now();
        let owner = self.node.id.clone();
        let claim_by = Some((owner.as_str(), self.node.lease_ms_i64()));
        let valid = run.valid.clone();
        match self.admit(run, limits, claim_by).await? {
            (Applied::Claimed { run_id, epoch, .. }, row) => Ok(Started {
                claim: Claim::new(run_id, epoch, None, sent_at),
                known: row.map(|row| (*row, valid)),
            }),
            (other, _) => Err(StoreError::Corrupt {
                what: "run admission",
                reason: format!("the store answered an admission and claim with {other:?}"),
            }
            .into()),
        }
    }

    /// Execute a run [`Service::admit_claimed`] admitted, to the end.
    pub async fn execute_started(&self, started: Started) -> Result<String, RunError> {
        // A new run admitted and claimed in one write has nothing stored
        // beyond its row: no read, no second validation.
        self.execute_known(started.claim, started.known).await
    }

    /// Admit a prepared run into the queue; a node claims it. With `limits`
    /// (`max_active`, `max_per_runbook`), refused when they are reached.
    pub async fn enqueue(
        &self,
        run: PreparedRun,
        limits: Option<(u64, u64)>,
    ) -> Result<String, RunError> {
        let id = run.id.clone();
        self.admit(run, limits, None).await?;
        Ok(id)
    }

    /// Queue `run` through the journal: a new run (`run.started`), or a
    /// stopped one someone decided to continue (`run.resumed` /
    /// `run.step-skipped`). [`RunError::Busy`] when the queue is full,
    /// [`RunError::LostRace`] when someone else continued the run first.
    /// With the store's answer, the row of a new run as it was queued.
    async fn admit(
        &self,
        run: PreparedRun,
        limits: Option<(u64, u64)>,
        claim_by: Option<(&str, i64)>,
    ) -> Result<(Applied, Option<Box<RunRow>>), RunError> {
        let PreparedRun {
            id,
            mode,
            actor,
            draft,
            inputs,
            valid,
            gate,
            resume,
            with,
            ..
        } = run;
        let mut admitted = None;
        let (control, was) = match &resume {
            Some(resume) => (
                RunControl::Continue {
                    id: &id,
                    was: resume.from,
                    step: resume.step.as_ref().map(|(s, to)| (s.as_str(), *to)),
                    reason: &resume.reason,
                    claim_by,
                },
                Some(resume.from),
            ),
            None => {
                let rb = &valid.runbook;
                let kernels = super::resolve::kernel_map(&valid);
                let drill = actor.is_drill();
                let details = json!({
                    "mode": mode.as_str(),
                    "runbook_digest": valid.digest,
                    "draft": draft,
                    "drill": drill,
                    "kernels": kernels,
                    "inputs": inputs,
                });
                let row = RunRow {
                    id: id.clone(),
                    runbook: rb.name.clone(),
                    runbook_version: i64::from(rb.version),
                    runbook_digest: valid.digest.clone(),
                    draft,
                    mode: mode.as_str().to_string(),
                    actor: actor.to_string(),
                    status: RunStatus::Queued,
                    inputs,
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
                let (max_active, max_per_runbook) = limits.unwrap_or((u64::MAX, u64::MAX));
                let row = Box::new(row);
                admitted = claim_by.is_some().then(|| row.clone());
                (
                    RunControl::Admit {
                        run: row,
                        details,
                        max_active,
                        max_per_runbook,
                        claim_by,
                    },
                    None,
                )
            }
        };
        let applied =
            journal::control_with(self.store.as_ref(), &self.metrics, &actor, control, with)
                .await?;
        match (applied, was) {
            (Applied::Refused(why), _) => Err(RunError::Busy(why)),
            (Applied::Stale, Some(was)) => Err(RunError::LostRace { id, was }),
            (Applied::Exists, _) => Err(RunError::Preempted { id }),
            (applied, _) => Ok((applied, admitted)),
        }
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
        self.prepare_continue(id, actor, reason, StepStatus::Retry)
            .await
    }

    /// Check that run `id`, which needs attention, can continue after its
    /// step without a result (marked skipped, by `actor`, for `reason`).
    pub async fn prepare_skip(
        &self,
        id: &str,
        actor: &Actor,
        reason: &str,
    ) -> Result<PreparedRun, ControlError> {
        self.prepare_continue(id, actor, reason, StepStatus::Skipped)
            .await
    }

    async fn prepare_continue(
        &self,
        id: &str,
        actor: &Actor,
        reason: &str,
        decision: StepStatus,
    ) -> Result<PreparedRun, ControlError> {
        let reason = reason_of(reason)?;
        let run = self.existing_run(id).await?;
        let skip = decision == StepStatus::Skipped;
        let allowed = if skip {
            run.status == RunStatus::NeedsAttention
        } else {
            matches!(run.status, RunStatus::Halted | RunStatus::NeedsAttention)
        };
        if !allowed {
            return Err(ControlError::WrongState {
                id: id.to_string(),
                status: run.status,
                what: if skip {
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
        let mode = mode_of(&run);
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
        if let Some(failed) = rows.iter().find(|r| r.status == StepStatus::Failed) {
            return Err(ControlError::Refused(format!(
                "step `{}` of run {id} failed before it stopped; its on_failure steps may be half done, so it cannot be resumed: abandon it",
                failed.step_id
            )));
        }
        let step = if run.status == RunStatus::NeedsAttention {
            let open = rows
                .iter()
                .find(|r| r.status == StepStatus::Running)
                .ok_or_else(|| {
                    ControlError::Refused(format!(
                        "run {id} has no step without a result; abandon it"
                    ))
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
            with: Batch::new(),
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
            .validate_keeping(&file, &text, published)
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
            journal::control(
                self.store.as_ref(),
                &self.metrics,
                &request.actor,
                RunControl::Refused {
                    runbook: format!("{}@{}", rb.name, rb.version),
                    reason: switch.describe(),
                },
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
            with: Batch::new(),
        })
    }
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
