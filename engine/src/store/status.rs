//! The statuses of runs, steps and targets, and the one table of the moves
//! a run's status may make ([`RunStatus::may_move`]), which the store
//! asserts on every status write.

use serde::{Deserialize, Serialize};

/// Declares a status enum with its stored names (`as_str`, `parse`, `ALL`).
macro_rules! statuses {
    ($(#[$meta:meta])* $name:ident { $($(#[$doc:meta])* $variant:ident => $text:literal,)* }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
        pub enum $name {
            $($(#[$doc])* #[serde(rename = $text)] $variant,)*
        }

        impl $name {
            /// Every value, in declaration order.
            pub const ALL: &'static [$name] = &[$($name::$variant,)*];

            /// The name stored in the database and shown to people.
            pub fn as_str(self) -> &'static str {
                match self {
                    $($name::$variant => $text,)*
                }
            }

            pub fn parse(text: &str) -> Option<Self> {
                match text {
                    $($text => Some($name::$variant),)*
                    _ => None,
                }
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}

statuses! {
    /// Run status. Terminal: succeeded, failed, cancelled, abandoned.
    /// Halted and needs-attention runs wait for a person to resume or
    /// abandon them; interrupted runs can only be abandoned.
    RunStatus {
        /// Admitted and waiting for a node to claim it.
        Queued => "queued",
        Running => "running",
        Succeeded => "succeeded",
        Failed => "failed",
        /// The engine stopped (crash, kill) while the run was in progress.
        Interrupted => "interrupted",
        /// Stopped at a step boundary by the big red switch.
        Halted => "halted",
        /// Stopped at a step boundary because someone cancelled it.
        Cancelled => "cancelled",
        /// A halted, interrupted or needs-attention run someone closed for good.
        Abandoned => "abandoned",
        /// Waiting at an `approval` step for people to approve or deny.
        AwaitingApproval => "awaiting-approval",
        /// The node running it stopped (crash, lost lease) during a step whose
        /// kernel is not idempotent, so the step may or may not have made its
        /// change: a person decides (resume, skip, abandon).
        NeedsAttention => "needs-attention",
    }
}

impl RunStatus {
    /// The statuses a run holds a place in the queue with (counted against
    /// the queue limits; what a node may claim or take over).
    pub const ACTIVE: &'static [RunStatus] = &[
        RunStatus::Queued,
        RunStatus::Running,
        RunStatus::AwaitingApproval,
    ];

    /// Whether a run may move from `self` to `to`. Claims (queued ->
    /// running) are the store's own conditional writes; every other status
    /// write names where it comes from, and the store refuses a move this
    /// table does not have.
    pub fn may_move(self, to: RunStatus) -> bool {
        use RunStatus::*;
        match self {
            Queued => matches!(to, Running | Cancelled),
            Running => matches!(
                to,
                AwaitingApproval
                    | Succeeded
                    | Failed
                    | Halted
                    | Cancelled
                    | Interrupted
                    | NeedsAttention
            ),
            AwaitingApproval => matches!(
                to,
                Running | Failed | Cancelled | Halted | Interrupted | NeedsAttention
            ),
            Halted | NeedsAttention => matches!(to, Queued | Abandoned),
            Interrupted => to == Abandoned,
            Succeeded | Failed | Cancelled | Abandoned => false,
        }
    }

    /// Queued, running or awaiting approval: not stopped yet.
    pub fn is_pending(self) -> bool {
        Self::ACTIVE.contains(&self)
    }

    /// A node is responsible for the run (it holds or must take over the lease).
    pub fn is_active(self) -> bool {
        matches!(self, RunStatus::Running | RunStatus::AwaitingApproval)
    }
}

statuses! {
    /// Status of one step of a run.
    StepStatus {
        /// Started, no result yet (its intent is recorded).
        Running => "running",
        Succeeded => "succeeded",
        Failed => "failed",
        /// Its `when` was false, or a person skipped it after a crash.
        Skipped => "skipped",
        /// An approval step waiting for decisions.
        AwaitingApproval => "awaiting-approval",
        /// A person decided a step without a result runs again.
        Retry => "retry",
    }
}

statuses! {
    /// Status of one target of a fanned-out step.
    TargetStatus {
        Succeeded => "succeeded",
        Failed => "failed",
        /// Never started: the step's `max_errors` was exceeded first.
        NotStarted => "not-started",
    }
}

statuses! {
    /// Which part of a runbook a step belongs to.
    Phase {
        /// The readiness approval before the first step.
        Gate => "gate",
        Main => "main",
        OnFailure => "on_failure",
    }
}

/// Why the queue refused a run ([`super::Write::EnqueueRun`]).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum QueueRefusal {
    #[error(
        "{active} runs are already executing or queued (server.max-concurrent-runs + server.max-queued-runs = {max}); retry later"
    )]
    Full { active: i64, max: u64 },
    #[error(
        "runbook {runbook} already has {active} runs executing or queued (server.max-runs-per-runbook = {max}); wait for them or retry later"
    )]
    RunbookBusy {
        runbook: String,
        active: i64,
        max: u64,
    },
}

impl QueueRefusal {
    /// The `reason` label of `firedrill_shed_total`.
    pub fn shed_reason(&self) -> &'static str {
        match self {
            QueueRefusal::Full { .. } => "run-queue-full",
            QueueRefusal::RunbookBusy { .. } => "runbook-busy",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_status_round_trips_through_its_name() {
        for s in RunStatus::ALL {
            assert_eq!(RunStatus::parse(s.as_str()), Some(*s));
            assert_eq!(serde_json::to_value(s).unwrap(), s.as_str());
        }
        for s in StepStatus::ALL {
            assert_eq!(StepStatus::parse(s.as_str()), Some(*s));
        }
        for s in TargetStatus::ALL {
            assert_eq!(TargetStatus::parse(s.as_str()), Some(*s));
        }
        for p in Phase::ALL {
            assert_eq!(Phase::parse(p.as_str()), Some(*p));
        }
        assert_eq!(RunStatus::parse("RUNNING"), None);
    }

    #[test]
    fn finished_runs_never_move_and_nothing_moves_to_queued_but_a_resume() {
        for from in RunStatus::ALL {
            assert!(!from.may_move(*from), "{from} -> itself");
            for to in RunStatus::ALL {
                if matches!(
                    from,
                    RunStatus::Succeeded
                        | RunStatus::Failed
                        | RunStatus::Cancelled
                        | RunStatus::Abandoned
                ) {
                    assert!(!from.may_move(*to), "{from} -> {to}");
                }
                if *to == RunStatus::Queued {
                    assert_eq!(
                        from.may_move(*to),
                        matches!(from, RunStatus::Halted | RunStatus::NeedsAttention),
                        "{from} -> queued"
                    );
                }
            }
        }
        // Every status but queued is reachable.
        for to in RunStatus::ALL.iter().filter(|s| **s != RunStatus::Queued) {
            assert!(
                RunStatus::ALL.iter().any(|f| f.may_move(*to)),
                "nothing reaches {to}"
            );
        }
    }

    /// The status lists written into the SQL are `RunStatus` names, and
    /// every list of active runs is exactly [`RunStatus::ACTIVE`].
    #[test]
    fn status_lists_in_the_sql_are_run_statuses() {
        let active: Vec<String> = RunStatus::ACTIVE
            .iter()
            .map(|s| format!("'{}'", s.as_str()))
            .collect();
        let active = active.join(", ");
        let mut lists = 0;
        for sql in [
            include_str!("sql.rs"),
            include_str!("writer.rs"),
            include_str!("writes.rs"),
            include_str!("reads.rs"),
            include_str!("sqlite.rs"),
            include_str!("postgres.rs"),
        ] {
            for pattern in ["status IN (", "status NOT IN ("] {
                for (at, _) in sql.match_indices(pattern) {
                    let rest = &sql[at + pattern.len()..];
                    let list = &rest[..rest.find(')').expect("a closed list")];
                    for name in list.split(',') {
                        let name = name.trim().trim_matches('\'');
                        assert!(RunStatus::parse(name).is_some(), "{name:?} in `{list}`");
                    }
                    if list.contains("'queued'") {
                        assert_eq!(
                            list, active,
                            "an active-run list differs from RunStatus::ACTIVE"
                        );
                    }
                    lists += 1;
                }
            }
            for (at, _) in sql.match_indices("status = '") {
                let rest = &sql[at + "status = '".len()..];
                let name = &rest[..rest.find('\'').expect("a closed literal")];
                assert!(RunStatus::parse(name).is_some(), "status = {name:?}");
            }
        }
        assert!(
            lists >= 6,
            "found only {lists} status lists; did the SQL move?"
        );
    }
}
