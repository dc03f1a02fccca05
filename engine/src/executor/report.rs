//! [`RunReport`]: the one view of a run, shown by the CLI (`runs show
//! --json`), the API (`GET /api/v1/runs/{id}`), its event stream and the
//! web console.

use serde::Serialize;
use serde_json::Value;

use super::planned_changes;
use crate::audit::AuditRecord;
use crate::store::{
    ApprovalRow, HostCallRow, Phase, RunRow, RunStatus, StepRow, StepStatus, StepTargetRow, Store,
    StoreError, TargetStatus,
};

/// A run as lists show it (`runs list --json`, `GET /api/v1/runs`): the
/// same fields, with the same names, as the top of its [`RunReport`].
#[derive(Debug, Clone, Serialize)]
pub struct RunSummary {
    pub run_id: String,
    pub runbook: String,
    pub runbook_version: i64,
    pub runbook_digest: String,
    /// Run from a file without publishing.
    pub draft: bool,
    /// Started by the drill scheduler (or `firedrill drill run`).
    pub drill: bool,
    pub mode: String,
    pub actor: String,
    pub status: RunStatus,
    pub error: Option<String>,
    pub inputs: Value,
    pub kernels: Value,
    pub started_at: String,
    pub finished_at: Option<String>,
    /// Who asked to cancel the run and why, while it is honoured.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cancel_requested: Option<String>,
    /// The node holding the run's lease, or the last one that held it
    /// (none while queued).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub owner: Option<String>,
}

impl RunSummary {
    pub fn new(run: &RunRow) -> Self {
        RunSummary {
            run_id: run.id.clone(),
            runbook: run.runbook.clone(),
            runbook_version: run.runbook_version,
            runbook_digest: run.runbook_digest.clone(),
            draft: run.draft,
            drill: run.drill,
            mode: run.mode.clone(),
            actor: run.actor.clone(),
            status: run.status,
            error: run.error.clone(),
            inputs: run.inputs.clone(),
            kernels: run.kernels.clone(),
            started_at: run.started_at.clone(),
            finished_at: run.finished_at.clone(),
            cancel_requested: run.cancel_requested.clone(),
            owner: run.owner.clone(),
        }
    }
}

/// A run, its steps with their targets and host calls, and the changes a
/// dry-run planned.
#[derive(Debug, Clone, Serialize)]
pub struct RunReport {
    #[serde(flatten)]
    pub run: RunSummary,
    pub steps: Vec<StepReport>,
    /// The simulated `change` calls: what a live run would do.
    pub planned_changes: Vec<Value>,
    /// The approval the run waits for, with the decisions so far.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pending_approval: Option<PendingApproval>,
    /// The run's audit records, when asked for.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub audit: Option<Vec<AuditRecord>>,
}

/// One step of a [`RunReport`].
#[derive(Debug, Clone, Serialize)]
pub struct StepReport {
    pub id: String,
    pub phase: Phase,
    pub kernel: String,
    pub kernel_digest: Option<String>,
    pub status: StepStatus,
    pub attempts: i64,
    pub targets: Value,
    pub input: Option<Value>,
    pub output: Option<Value>,
    pub error: Option<String>,
    pub logs: Value,
    pub duration_ms: Option<i64>,
    pub host_calls: Vec<Value>,
    pub targets_detail: Vec<TargetReport>,
}

/// One target of a [`StepReport`].
#[derive(Debug, Clone, Serialize)]
pub struct TargetReport {
    pub target: String,
    pub status: TargetStatus,
    pub attempts: i64,
    pub output: Option<Value>,
    pub error: Option<String>,
    pub duration_ms: Option<i64>,
}

/// The approval step a run waits at.
#[derive(Debug, Clone, Serialize)]
pub struct PendingApproval {
    pub step: String,
    pub spec: Option<Value>,
    pub decisions: Vec<ApprovalRow>,
}

impl RunReport {
    /// The report of `run` from its stored rows.
    pub fn new(
        run: &RunRow,
        steps: &[StepRow],
        targets: &[StepTargetRow],
        calls: &[HostCallRow],
    ) -> Self {
        let steps = steps
            .iter()
            .map(|st| StepReport {
                id: st.step_id.clone(),
                phase: st.phase,
                kernel: st.kernel.clone(),
                kernel_digest: st.kernel_digest.clone(),
                status: st.status,
                attempts: st.attempts,
                targets: st.targets.clone(),
                input: st.input.clone(),
                output: st.output.clone(),
                error: st.error.clone(),
                logs: st.logs.clone(),
                duration_ms: st.duration_ms,
                host_calls: calls
                    .iter()
                    .filter(|c| c.step_id == st.step_id)
                    .map(|c| c.call.clone())
                    .collect(),
                targets_detail: targets
                    .iter()
                    .filter(|t| t.step_id == st.step_id)
                    .map(|t| TargetReport {
                        target: t.target.clone(),
                        status: t.status,
                        attempts: t.attempts,
                        output: t.output.clone(),
                        error: t.error.clone(),
                        duration_ms: t.duration_ms,
                    })
                    .collect(),
            })
            .collect();
        RunReport {
            run: RunSummary::new(run),
            steps,
            planned_changes: planned_changes(calls)
                .into_iter()
                .map(|c| c.call.clone())
                .collect(),
            pending_approval: None,
            audit: None,
        }
    }

    /// The report of run `id` from the store (with the pending approval's
    /// decisions); `None` when there is no such run.
    pub async fn load(store: &dyn Store, id: &str) -> Result<Option<Self>, StoreError> {
        let Some(run) = store.run(id).await? else {
            return Ok(None);
        };
        let steps = store.steps(id).await?;
        let targets = store.step_targets(id).await?;
        let calls = store.host_calls(id).await?;
        let mut report = RunReport::new(&run, &steps, &targets, &calls);
        if let Some(step) = steps
            .iter()
            .find(|s| s.status == StepStatus::AwaitingApproval)
        {
            report.pending_approval = Some(PendingApproval {
                step: step.step_id.clone(),
                spec: step.input.clone(),
                decisions: store.approvals(id, &step.step_id).await?,
            });
        }
        Ok(Some(report))
    }

    /// The report as JSON.
    pub fn to_json(&self) -> Value {
        serde_json::to_value(self).unwrap_or_default()
    }
}
