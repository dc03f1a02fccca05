//! Approval steps (the run waits, `awaiting-approval`, for people) and
//! people's decisions on them: the two-person rule, one person counted
//! once, allowed roles only.

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use super::Service;
use super::drive::{RunCtx, StepEnd, remember_result};
use super::error::{ControlError, reason_of};
use super::journal::{self, RunControl, RunEvent};
use crate::Mode;
use crate::audit::{Action, Actor, now_rfc3339};
use crate::store::{Applied, ApprovalRow, RunStatus, StepRow, StepStatus, StoreError};

/// How often a run waiting for approval checks for decisions.
const APPROVAL_POLL: Duration = Duration::from_millis(250);

/// A person's decision on an approval step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    Approve,
    Deny,
}

impl Decision {
    /// The name stored in the approval's row.
    pub fn as_str(self) -> &'static str {
        match self {
            Decision::Approve => "approve",
            Decision::Deny => "deny",
        }
    }
}

impl Service {
    /// An approval step: in a live run, wait (the run is
    /// `awaiting-approval`) until `required` distinct people with an allowed
    /// role approve, someone denies, the timeout passes, or the run is
    /// cancelled or halted. Dry-runs record where approval would be needed
    /// and go on. A live drill waits like any live run: neither the
    /// scheduler nor an operator asking for a drill may pass a gate that
    /// needs another person.
    pub(super) async fn approval_step(
        &self,
        ctx: &mut RunCtx<'_>,
        mut row: StepRow,
        started: Instant,
        approval: &crate::runbook::Approval,
    ) -> Result<StepEnd, StoreError> {
        let roles: Vec<&str> = approval.roles().iter().map(|r| r.as_str()).collect();
        let spec = json!({"required": approval.required, "roles": roles, "timeout": approval.timeout.to_string(), "reason": approval.reason});
        row.kernel = "approval".into();
        row.input = Some(spec.clone());
        if ctx.mode == Mode::DryRun {
            let note = "dry-run: a live run waits here for approval";
            ctx.journal
                .record(RunEvent::ApprovalNoted {
                    row: row.clone(),
                    spec: &spec,
                    note,
                })
                .await?;
            let result = Ok(json!({"approved": false, "would_require": spec, "note": note}));
            remember_result(ctx, &row.step_id, &result, None);
            return self.finish_step(ctx, row, started, result).await;
        }
        row.status = StepStatus::AwaitingApproval;
        ctx.journal
            .record(RunEvent::ApprovalRequested {
                row: row.clone(),
                spec: &spec,
            })
            .await?;
        let deadline = started + approval.timeout.0;
        let result = loop {
            let decisions = self.store.approvals(&ctx.id, &row.step_id).await?;
            if let Some(deny) = decisions
                .iter()
                .find(|d| d.decision == Decision::Deny.as_str())
            {
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
        ctx.journal.record(RunEvent::ApprovalWaitEnded).await?;
        remember_result(ctx, &row.step_id, &result, None);
        self.finish_step(ctx, row, started, result).await
    }

    /// Approve or deny the approval step `run_id` is waiting at, as `actor`
    /// (with `role` when it is an API token). The run's initiator cannot
    /// decide on it, a person counts once, and only allowed roles count.
    pub async fn decide_approval(
        &self,
        run_id: &str,
        actor: &Actor,
        role: Option<crate::auth::Role>,
        decision: Decision,
        comment: &str,
    ) -> Result<String, ControlError> {
        let comment = reason_of(comment)?;
        let run = self.existing_run(run_id).await?;
        let step = self
            .store
            .steps(run_id)
            .await?
            .into_iter()
            .find(|s| s.status == StepStatus::AwaitingApproval)
            .filter(|_| run.status == RunStatus::AwaitingApproval)
            .ok_or_else(|| ControlError::WrongState {
                id: run_id.to_string(),
                status: run.status,
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
        let applied = journal::control(
            self.store.as_ref(),
            &self.metrics,
            actor,
            RunControl::Decide(ApprovalRow {
                run_id: run_id.to_string(),
                step_id: step.step_id.clone(),
                approver: person.clone(),
                decision: decision.as_str().to_string(),
                comment,
                at: now_rfc3339(),
            }),
        )
        .await?;
        if applied == Applied::Exists {
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
                action: Some(Action::RunStarted.as_str().into()),
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
}

/// Who may decide an approval step with `spec` (as recorded in the step's
/// input) in a run started by `initiator`: "2 approval(s) from approver,
/// admin (not user:alice)".
pub fn who_may_approve(spec: &serde_json::Value, initiator: &str) -> String {
    let roles = spec["roles"]
        .as_array()
        .map(|r| {
            r.iter()
                .filter_map(serde_json::Value::as_str)
                .collect::<Vec<_>>()
                .join(", ")
        })
        .filter(|r| !r.is_empty())
        .unwrap_or_else(|| "the approver or admin role".to_string());
    format!(
        "{} approval(s) from {roles} (not {initiator})",
        spec["required"].as_i64().unwrap_or(1)
    )
}
