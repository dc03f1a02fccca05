//! Why a run could not start, be published, or be controlled. Each error
//! names what failed and what to do; `server/error.rs` gives each one
//! its HTTP status, `cli/exit.rs` its exit code.

use crate::runbook::Problems;
use crate::store::{QueueRefusal, RunStatus, StoreError};

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
    /// The queue is full.
    #[error("{0}")]
    Busy(QueueRefusal),
    /// Someone else continued, skipped or abandoned the run first.
    #[error(
        "run {id} was no longer {was}: someone else resumed, skipped or abandoned it first; see `firedrill runs show {id}`"
    )]
    LostRace { id: String, was: RunStatus },
    /// A write admitted with the run ([`super::PreparedRun::with`]) found
    /// its row taken: nothing was written.
    #[error(
        "run {id} was not started: what had to be written with it was taken first (another delivery of the alert that started it); nothing was written"
    )]
    Preempted { id: String },
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

/// A run could not be cancelled, resumed or abandoned, or a decision on
/// it was refused.
#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    #[error("no run {0:?}")]
    NotFound(String),
    #[error("run {id} is {status}; {what}")]
    WrongState {
        id: String,
        status: RunStatus,
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

/// `reason` as the audit log keeps it, or [`ControlError::NoReason`].
pub(super) fn reason_of(reason: &str) -> Result<String, ControlError> {
    crate::switch::valid_reason(reason)
        .map(str::to_string)
        .ok_or(ControlError::NoReason)
}
