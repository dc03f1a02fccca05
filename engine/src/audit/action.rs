//! [`Action`]: every audit action the engine writes, named once.

/// Declares [`Action`] with its stored names.
macro_rules! actions {
    ($($(#[$doc:meta])* $variant:ident => $name:literal,)*) => {
        /// What an audit record says was done. The engine writes only these;
        /// ARCHITECTURE.md lists them, and a test checks that list is current.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum Action {
            $($(#[$doc])* $variant,)*
        }

        impl Action {
            /// Every action, in declaration order.
            pub const ALL: &'static [Action] = &[$(Action::$variant,)*];

            /// The name stored in the record's `action` column.
            pub fn as_str(self) -> &'static str {
                match self {
                    $(Action::$variant => $name,)*
                }
            }
        }
    };
}

actions! {
    /// A run was admitted (queued).
    RunStarted => "run.started",
    /// A live run was refused before anything was written (the switch).
    RunRefused => "run.refused",
    /// A node claimed a queued run.
    RunClaimed => "run.claimed",
    /// A node took over a run whose lease expired.
    RunTakenOver => "run.taken-over",
    /// A claimed run stopped at a step without a result (not idempotent).
    RunNeedsAttention => "run.needs-attention",
    /// A person queued a stopped run again.
    RunResumed => "run.resumed",
    /// A person marked a step without a result skipped and queued the run.
    RunStepSkipped => "run.step-skipped",
    /// A person asked a running run to stop at its next step boundary.
    RunCancelRequested => "run.cancel-requested",
    /// A queued run was cancelled before it started.
    RunCancelled => "run.cancelled",
    /// A person closed a stopped run for good.
    RunAbandoned => "run.abandoned",
    /// `serve` shut down with the run in progress.
    RunInterrupted => "run.interrupted",
    /// A run ended: succeeded, failed, halted or cancelled.
    RunFinished => "run.finished",
    /// A runbook ran whose current version no drill has shown to work.
    RunUntested => "run.untested",
    /// A step that may have been in flight runs again after a takeover.
    StepRerun => "step.rerun",
    StepStarted => "step.started",
    StepSkipped => "step.skipped",
    StepRetried => "step.retried",
    StepTargetFinished => "step.target.finished",
    StepFinished => "step.finished",
    /// A kernel called the host.
    HostCall => "host.call",
    /// A kernel's host call was refused by its capabilities or grants.
    CapabilityDenied => "capability.denied",
    /// A kernel hit one of its limits.
    LimitExceeded => "limit.exceeded",
    ApprovalRequested => "approval.requested",
    ApprovalApproved => "approval.approved",
    ApprovalDenied => "approval.denied",
    KernelPublished => "kernel.published",
    RunbookPublished => "runbook.published",
    RunbookRolledBack => "runbook.rolled-back",
    SwitchEngaged => "switch.engaged",
    SwitchReleased => "switch.released",
    TokenCreated => "token.created",
    TokenRevoked => "token.revoked",
    ConsoleSignedIn => "console.signed-in",
    ConsoleSignedOut => "console.signed-out",
    /// An authenticated request was refused (role, scope, limits).
    RequestRefused => "request.refused",
    /// An alert was matched against the published runbooks' triggers.
    AlertReceived => "alert.received",
    /// A delivery that carries no alert (a PagerDuty event type other
    /// than an incident's).
    AlertIgnored => "alert.ignored",
    /// Alerts of one notification matched no trigger (one event per
    /// notification, with their count and the first few).
    AlertUnmatched => "alert.unmatched",
    TriggerBreakerReset => "trigger.breaker.reset",
    /// A notification sink was first told of a condition (a run awaiting
    /// approval, an open breaker...): posted to Alertmanager, or queued in
    /// the outbox of a webhook or Slack sink.
    NotificationRaised => "notification.raised",
    /// A notification sink was told (or a message queued) that a condition ended.
    NotificationResolved => "notification.resolved",
    /// A queued notification was delivered to its webhook or Slack sink.
    NotificationDelivered => "notification.delivered",
    /// A queued notification was given up (its sink's outbox full, too
    /// old, or the sink removed from the config).
    NotificationDropped => "notification.dropped",
    /// Someone asked for a drill to run now.
    DrillRequested => "drill.requested",
    /// A due drill did not start (busy, halted, refused).
    DrillSkipped => "drill.skipped",
    /// The audit log's checkpoint signing key was generated.
    AuditKeyCreated => "audit.key.created",
    /// The checkpoint signing key was replaced (the old one stays trusted).
    AuditKeyRotated => "audit.key.rotated",
    /// A consistent copy of the SQLite store was written (`firedrill backup`).
    StoreBackedUp => "store.backed-up",
    /// The store was replaced by a checked backup (`firedrill restore`);
    /// the first record of the restored log's continuation.
    StoreRestored => "store.restored",
}

impl std::fmt::Display for Action {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::Action;

    #[test]
    fn action_names_are_distinct_and_well_formed() {
        let mut seen = std::collections::BTreeSet::new();
        for a in Action::ALL {
            let name = a.as_str();
            assert!(seen.insert(name), "{name} is declared twice");
            assert!(
                name.contains('.')
                    && name
                        .chars()
                        .all(|c| c.is_ascii_lowercase() || c == '.' || c == '-'),
                "{name} is not area.verb"
            );
        }
    }

    /// ARCHITECTURE.md's "Audit actions" table lists exactly the actions
    /// the engine writes.
    #[test]
    fn architecture_lists_exactly_the_audit_actions() {
        let doc = include_str!("../../../ARCHITECTURE.md");
        let start = doc
            .find("\n## Audit actions\n")
            .expect("ARCHITECTURE.md has a section `## Audit actions`");
        let section = &doc[start + 1..];
        let section = &section[..section[3..].find("\n## ").map_or(section.len(), |e| e + 3)];
        let listed: std::collections::BTreeSet<&str> = section
            .lines()
            .filter_map(|l| l.strip_prefix("| `"))
            .filter_map(|l| l.split('`').next())
            .collect();
        let actual: std::collections::BTreeSet<&str> =
            Action::ALL.iter().map(|a| a.as_str()).collect();
        let missing: Vec<_> = actual.difference(&listed).collect();
        let stale: Vec<_> = listed.difference(&actual).collect();
        assert!(
            missing.is_empty() && stale.is_empty(),
            "ARCHITECTURE.md \"Audit actions\": add {missing:?}, remove {stale:?}"
        );
    }
}
