//! What people and front ends do to a run ([`RunControl`]: admit, resume,
//! refuse, cancel, abandon, decide) and claims: conditional writes on the
//! run's status, not under a fence.

use serde_json::{Value, json};

use crate::audit::{Action, Actor, NewEvent, now_rfc3339};
use crate::metrics::Metrics;
use crate::store::{
    Applied, ApprovalRow, Batch, RunRow, RunStatus, StepStatus, Store, StoreError, Write,
};

/// What a person or front end does to a run (not under a fence: these are
/// conditional writes on the run's status).
pub(in crate::executor) enum RunControl<'a> {
    /// Queue a new run (`run.started`); with `claim_by`, this node claims
    /// it in the same batch (the CLI executing its own run).
    Admit {
        run: Box<RunRow>,
        details: Value,
        max_active: u64,
        max_per_runbook: u64,
        claim_by: Option<(&'a str, i64)>,
    },
    /// Queue a stopped run again (`run.resumed`), or mark its step without
    /// a result skipped first (`run.step-skipped`).
    Continue {
        id: &'a str,
        was: RunStatus,
        step: Option<(&'a str, StepStatus)>,
        reason: &'a str,
        claim_by: Option<(&'a str, i64)>,
    },
    /// A live run refused by the big red switch before anything was written.
    Refused { runbook: String, reason: String },
    /// End a queued run before it started.
    CancelQueued { id: &'a str, reason: &'a str },
    /// Ask a running run to stop at its next step boundary.
    RequestCancel { id: &'a str, reason: &'a str },
    /// Close a stopped run for good.
    Abandon {
        id: &'a str,
        was: RunStatus,
        was_error: Option<&'a str>,
        reason: &'a str,
    },
    /// A person's decision on the approval step a run waits at.
    Decide(ApprovalRow),
}

/// Record `control` as `actor`: its writes and audit record in one batch.
pub(in crate::executor) async fn control(
    store: &dyn Store,
    metrics: &Metrics,
    actor: &Actor,
    control: RunControl<'_>,
) -> Result<Applied, StoreError> {
    control_with(store, metrics, actor, control, Batch::new()).await
}

/// [`control`], with `with`'s writes and audit records first in the same
/// batch: all of them are kept, or none.
pub(in crate::executor) async fn control_with(
    store: &dyn Store,
    metrics: &Metrics,
    actor: &Actor,
    control: RunControl<'_>,
    with: Batch,
) -> Result<Applied, StoreError> {
    let claim = |batch: Batch, claim_by: Option<(&str, i64)>, id: &str| match claim_by {
        Some((owner, lease_ms)) => batch.write(Write::ClaimQueued {
            owner: owner.to_string(),
            lease_ms,
            only: Some(id.to_string()),
        }),
        None => batch,
    };
    // A new run is counted once its admission is kept (not when it is
    // refused, or its alert's claim was taken first).
    let mut started = None;
    let batch = match control {
        RunControl::Admit {
            run,
            details,
            max_active,
            max_per_runbook,
            claim_by,
        } => {
            started = Some((run.runbook.clone(), run.mode.clone()));
            let id = run.id.clone();
            let event = NewEvent::new(
                actor,
                Action::RunStarted,
                format!("runbook:{}@{}", run.runbook, run.runbook_version),
            )
            .details(details)
            .run(&id);
            let batch = Batch::new()
                .write(Write::EnqueueRun {
                    run: *run,
                    max_active,
                    max_per_runbook,
                })
                .event(event);
            claim(batch, claim_by, &id)
        }
        RunControl::Continue {
            id,
            was,
            step,
            reason,
            claim_by,
        } => {
            let mut batch = Batch::new();
            let mut action = Action::RunResumed;
            if let Some((step, to)) = step {
                let skipped = to == StepStatus::Skipped;
                if skipped {
                    action = Action::RunStepSkipped;
                }
                batch = batch.write(Write::DecideStep {
                    run_id: id.to_string(),
                    step_id: step.to_string(),
                    from: StepStatus::Running,
                    to,
                    error: skipped.then(|| format!("skipped by {actor}: {reason}")),
                });
            }
            let batch = batch
                .write(Write::TransitionRun {
                    id: id.to_string(),
                    from: vec![was],
                    to: RunStatus::Queued,
                    error: None,
                    finished_at: None,
                })
                .event(
                    NewEvent::new(actor, action, format!("run:{id}"))
                        .details(json!({
                            "reason": reason,
                            "was": was.as_str(),
                            "step": step.map(|(s, _)| s),
                        }))
                        .run(id),
                );
            claim(batch, claim_by, id)
        }
        RunControl::Refused { runbook, reason } => Batch::new().event(
            NewEvent::new(actor, Action::RunRefused, format!("runbook:{runbook}"))
                .outcome("halted")
                .details(json!({"mode": "live", "reason": reason})),
        ),
        RunControl::CancelQueued { id, reason } => Batch::new()
            .write(Write::TransitionRun {
                id: id.to_string(),
                from: vec![RunStatus::Queued],
                to: RunStatus::Cancelled,
                error: Some(format!(
                    "cancelled before it started (by {actor}: {reason})"
                )),
                finished_at: Some(now_rfc3339()),
            })
            .event(
                NewEvent::new(actor, Action::RunCancelled, format!("run:{id}"))
                    .outcome("cancelled")
                    .details(json!({"reason": reason, "was": "queued"}))
                    .run(id),
            ),
        RunControl::RequestCancel { id, reason } => Batch::new()
            .write(Write::RequestCancel {
                id: id.to_string(),
                request: format!("{actor}: {reason}"),
            })
            .event(
                NewEvent::new(actor, Action::RunCancelRequested, format!("run:{id}"))
                    .details(json!({"reason": reason}))
                    .run(id),
            ),
        RunControl::Abandon {
            id,
            was,
            was_error,
            reason,
        } => Batch::new()
            .write(Write::TransitionRun {
                id: id.to_string(),
                from: vec![was],
                to: RunStatus::Abandoned,
                error: Some(format!(
                    "abandoned by {actor}: {reason} (was {was}: {})",
                    was_error.unwrap_or("-")
                )),
                finished_at: Some(now_rfc3339()),
            })
            .event(
                NewEvent::new(actor, Action::RunAbandoned, format!("run:{id}"))
                    .outcome("abandoned")
                    .details(json!({"reason": reason, "was": was.as_str()}))
                    .run(id),
            ),
        RunControl::Decide(row) => {
            let action = if row.decision == crate::executor::Decision::Approve.as_str() {
                Action::ApprovalApproved
            } else {
                Action::ApprovalDenied
            };
            let event = NewEvent::new(actor, action, format!("step:{}", row.step_id))
                .details(json!({"comment": row.comment}))
                .run(&row.run_id);
            Batch::new().write(Write::InsertApproval(row)).event(event)
        }
    };
    let applied = store.apply(with.then(batch)).await?;
    if let Some((runbook, mode)) = started
        && applied.wrote()
    {
        metrics.run_started(&runbook, &mode, actor.kind.trigger());
    }
    Ok(applied)
}

/// Claim a run for a node (`ClaimQueued` or `TakeOver`); the store writes
/// `run.claimed` / `run.taken-over` in the same transaction.
pub(in crate::executor) async fn claim(
    store: &dyn Store,
    write: Write,
) -> Result<Applied, StoreError> {
    debug_assert!(matches!(
        write,
        Write::ClaimQueued { .. } | Write::TakeOver { .. }
    ));
    store.apply(Batch::new().write(write)).await
}
