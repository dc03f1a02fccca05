//! Run control by people: cancel (a queued run ends at once; a running one
//! at its next step boundary) and abandon (a stopped run closed for good).

use super::Service;
use super::error::{ControlError, reason_of};
use super::journal::{self, RunControl};
use crate::audit::Actor;
use crate::store::{Applied, RunRow, RunStatus};

impl Service {
    /// Run `id`, or [`ControlError::NotFound`].
    pub(super) async fn existing_run(&self, id: &str) -> Result<RunRow, ControlError> {
        self.store
            .run(id)
            .await?
            .ok_or_else(|| ControlError::NotFound(id.to_string()))
    }

    /// Record `control` as `actor`; [`ControlError::WrongState`] (saying
    /// `what`) when its conditional write found `run` in another state.
    async fn apply_control(
        &self,
        run: &RunRow,
        actor: &Actor,
        control: RunControl<'_>,
        what: &str,
    ) -> Result<(), ControlError> {
        match journal::control(self.store.as_ref(), &self.metrics, actor, control).await? {
            Applied::Stale => Err(ControlError::WrongState {
                id: run.id.clone(),
                status: run.status,
                what: what.to_string(),
            }),
            _ => Ok(()),
        }
    }

    /// Ask a running run to stop at its next step boundary (the step in
    /// progress finishes). Audited with the actor and reason.
    pub async fn cancel(&self, id: &str, actor: &Actor, reason: &str) -> Result<(), ControlError> {
        let reason = reason_of(reason)?;
        let run = self.existing_run(id).await?;
        if run.status == RunStatus::Queued {
            // Not started: it ends here. (If a node claimed it meanwhile,
            // the request below stops it at its first step boundary.)
            let control = RunControl::CancelQueued {
                id,
                reason: &reason,
            };
            if journal::control(self.store.as_ref(), &self.metrics, actor, control).await?
                == Applied::Done
            {
                return Ok(());
            }
        }
        self.apply_control(
            &run,
            actor,
            RunControl::RequestCancel {
                id,
                reason: &reason,
            },
            "only a running run can be cancelled",
        )
        .await
    }

    /// Close a halted or interrupted run, or one that needs attention, for
    /// good: it will not be resumed.
    pub async fn abandon(&self, id: &str, actor: &Actor, reason: &str) -> Result<(), ControlError> {
        let reason = reason_of(reason)?;
        let run = self.existing_run(id).await?;
        let what = "only halted or interrupted runs, or runs that need attention, can be abandoned";
        if !run.status.may_move(RunStatus::Abandoned) {
            return Err(ControlError::WrongState {
                id: id.to_string(),
                status: run.status,
                what: what.into(),
            });
        }
        let control = RunControl::Abandon {
            id,
            was: run.status,
            was_error: run.error.as_deref(),
            reason: &reason,
        };
        self.apply_control(&run, actor, control, what).await
    }
}
