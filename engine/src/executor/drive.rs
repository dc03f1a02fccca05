//! The step driver: the steps of a claimed run in order, the big red switch
//! and cancel checks at every step boundary, `when`, rendering targets and
//! input, on_failure, and how the run ends.

use std::sync::Arc;
use std::time::Instant;

use serde_json::{Value, json};
use tracing::Instrument as _;

use super::error::RunError;
use super::journal::{Journal, RunEvent, ms};
use super::{GATE_STEP, Service};
use crate::Mode;
use crate::audit::{Actor, now_rfc3339};
use crate::kernel::LoadedKernel;
use crate::runbook::{Step, ValidRunbook};
use crate::store::{Phase, RunStatus, StepRow, StepStatus, StoreError};

/// Shared state of one executing run.
pub(super) struct RunCtx<'a> {
    pub(super) id: String,
    pub(super) valid: &'a ValidRunbook,
    pub(super) mode: Mode,
    pub(super) actor: Actor,
    /// Template context: inputs, steps (outputs so far), run.
    pub(super) vars: Value,
    pub(super) gate: Option<crate::runbook::Approval>,
    /// The one writer of this run's records (host calls included).
    pub(super) journal: Arc<Journal>,
}

/// How a step ended.
pub(super) enum StepEnd {
    Succeeded,
    Skipped,
    Failed(String),
}

impl Service {
    /// Why the run must stop before `what`: a cancel request, or the big
    /// red switch (live runs). `None` to go on.
    async fn stop_before(
        &self,
        ctx: &RunCtx<'_>,
        what: &str,
    ) -> Result<Option<(RunStatus, String)>, StoreError> {
        let rb = &ctx.valid.runbook;
        if let Some(request) = self.store.cancel_requested(&ctx.id).await? {
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
    pub(super) async fn drive(&self, mut ctx: RunCtx<'_>, from: usize) -> Result<String, RunError> {
        let rb = &ctx.valid.runbook;
        let id = ctx.id.clone();
        let started = Instant::now();
        let mut failure: Option<(String, String)> = None;
        let mut stopped: Option<(RunStatus, String)> = None;
        if let Some(gate) = ctx.gate.clone() {
            let step = Step::approval_gate(GATE_STEP, gate);
            if let StepEnd::Failed(error) = self
                .step(&mut ctx, 0, Phase::Gate, &step)
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
                .step(&mut ctx, position, Phase::Main, step)
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
                    .step(&mut ctx, rb.steps.len() + i, Phase::OnFailure, step)
                    .instrument(tracing::info_span!("step", step_id = %step.id))
                    .await?;
            }
        }
        // A cancel that ended a step (an approval wait) ends the run as cancelled.
        if stopped.is_none()
            && failure.is_some()
            && let Some(request) = self.store.cancel_requested(&id).await?
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
        ctx.journal
            .record(RunEvent::RunFinished {
                status,
                error,
                runbook: &rb.name,
                version: rb.version,
                mode: ctx.mode.as_str(),
                took: started.elapsed(),
            })
            .await?;
        Ok(id)
    }

    /// The intent row of `step` at `position`.
    fn step_row(ctx: &RunCtx<'_>, position: usize, phase: Phase, step: &Step) -> StepRow {
        StepRow {
            run_id: ctx.id.clone(),
            step_id: step.id.clone(),
            position: i64::try_from(position).unwrap_or(i64::MAX),
            phase,
            kernel: step.kernel.clone(),
            kernel_digest: ctx.valid.kernel(step).map(|k| k.digest.clone()),
            status: StepStatus::Running,
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
        phase: Phase,
        step: &Step,
    ) -> Result<StepEnd, StoreError> {
        let started = Instant::now();
        let mut row = Self::step_row(ctx, position, phase, step);
        let vars = minijinja::Value::from(minijinja::value::Serde(ctx.vars.clone()));
        if let Some(when) = &step.when {
            match self.templates.condition(when, &vars) {
                Ok(true) => {}
                Ok(false) => {
                    row.status = StepStatus::Skipped;
                    row.finished_at = Some(now_rfc3339());
                    row.duration_ms = Some(0);
                    ctx.journal
                        .record(RunEvent::StepSkipped { row, when })
                        .await?;
                    remember(ctx, &step.id, StepStatus::Skipped, Value::Null, None);
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
        ctx.journal
            .record(RunEvent::StepStarted {
                row: row.clone(),
                kernel: kernel.reference(),
                digest: kernel.digest.clone(),
            })
            .await?;
        let result = self
            .fan_out(ctx, step, &kernel, &targets, &input, &mut row)
            .await?;
        self.finish_step(ctx, row, started, result).await
    }

    /// Record how a step ended (its result in `row`).
    pub(super) async fn finish_step(
        &self,
        ctx: &RunCtx<'_>,
        mut row: StepRow,
        started: Instant,
        result: Result<Value, String>,
    ) -> Result<StepEnd, StoreError> {
        row.finished_at = Some(now_rfc3339());
        row.duration_ms = Some(ms(started.elapsed()));
        let end = match &result {
            Ok(output) => {
                row.status = StepStatus::Succeeded;
                row.output = Some(output.clone());
                StepEnd::Succeeded
            }
            Err(e) => {
                row.status = StepStatus::Failed;
                row.error = Some(e.clone());
                StepEnd::Failed(e.clone())
            }
        };
        ctx.journal
            .record(RunEvent::StepFinished {
                row,
                runbook: &ctx.valid.runbook.name,
                took: started.elapsed(),
            })
            .await?;
        Ok(end)
    }
}

/// Keep a step's outcome in the template context (`steps.<id>`), for the
/// steps after it.
pub(super) fn remember(
    ctx: &mut RunCtx<'_>,
    step_id: &str,
    status: StepStatus,
    output: Value,
    targets: Option<Value>,
) {
    if let Some(steps) = ctx.vars.get_mut("steps").and_then(Value::as_object_mut) {
        let mut entry = json!({"status": status.as_str(), "output": output});
        if let Some(targets) = targets {
            entry["targets"] = targets;
        }
        steps.insert(step_id.to_string(), entry);
    }
}

/// [`remember`] a step's result.
pub(super) fn remember_result(
    ctx: &mut RunCtx<'_>,
    step_id: &str,
    result: &Result<Value, String>,
    targets: Option<Value>,
) {
    let (status, output) = match result {
        Ok(o) => (StepStatus::Succeeded, o.clone()),
        Err(_) => (StepStatus::Failed, Value::Null),
    };
    remember(ctx, step_id, status, output, targets);
}
