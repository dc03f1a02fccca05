//! The CLI's exit codes, and the one classifier from an error to its code.
//!
//! - 0: done (a run succeeded).
//! - 1: a run ended other than succeeded, or firedrill itself failed (the
//!   store, I/O): look at the message and the run.
//! - 2: refused before anything was done: bad input, a run in the wrong
//!   state, the big red switch, a full queue, someone else acting first.

use std::process::ExitCode;

use crate::executor::{ControlError, PublishError, RunError};

/// Refused before anything ran.
pub(crate) const EXIT_INVALID: u8 = 2;

/// Whether `e` refused the run before anything was written or done (as
/// opposed to the engine failing).
pub(crate) fn run_refused(e: &RunError) -> bool {
    !matches!(e, RunError::Store(_))
}

/// Whether `e` refused a run control (cancel, resume, approve, ...)
/// before anything was done.
pub(crate) fn control_refused(e: &ControlError) -> bool {
    match e {
        ControlError::Store(_) => false,
        ControlError::Run(run) => run_refused(run),
        _ => true,
    }
}

/// The exit code of a command that ended in `e`.
pub(crate) fn code_of(e: &anyhow::Error) -> ExitCode {
    let refused = e.chain().any(|cause| {
        cause.downcast_ref::<RunError>().is_some_and(run_refused)
            || cause
                .downcast_ref::<ControlError>()
                .is_some_and(control_refused)
            || cause
                .downcast_ref::<PublishError>()
                .is_some_and(|p| !matches!(p, PublishError::Store(_)))
            || cause
                .downcast_ref::<crate::home::RestoreError>()
                .is_some_and(crate::home::RestoreError::refused)
            || cause
                .downcast_ref::<crate::store::StoreError>()
                .is_some_and(crate::store::StoreError::is_refusal)
            // `HomeError::Store` is transparent: its chain skips the store error.
            || cause
                .downcast_ref::<crate::home::HomeError>()
                .is_some_and(|h| matches!(h, crate::home::HomeError::Store(s) if s.is_refusal()))
    });
    if refused {
        ExitCode::from(EXIT_INVALID)
    } else {
        ExitCode::FAILURE
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{QueueRefusal, RunStatus, StoreError};

    #[test]
    fn refusals_exit_2_and_engine_failures_exit_1() {
        let lost = anyhow::Error::new(RunError::LostRace {
            id: "r".into(),
            was: RunStatus::Halted,
        });
        assert_eq!(code_of(&lost), ExitCode::from(EXIT_INVALID));
        let busy = anyhow::Error::new(RunError::Busy(QueueRefusal::Full { active: 3, max: 3 }))
            .context("cannot resume");
        assert_eq!(code_of(&busy), ExitCode::from(EXIT_INVALID));
        let wrong = anyhow::Error::new(ControlError::NoReason);
        assert_eq!(code_of(&wrong), ExitCode::from(EXIT_INVALID));
        let store = anyhow::Error::new(RunError::Store(StoreError::WriterGone));
        assert_eq!(code_of(&store), ExitCode::FAILURE);
        let nested = anyhow::Error::new(ControlError::Run(Box::new(RunError::Store(
            StoreError::WriterGone,
        ))));
        assert_eq!(code_of(&nested), ExitCode::FAILURE);
        assert_eq!(code_of(&anyhow::anyhow!("disk full")), ExitCode::FAILURE);
    }
}
