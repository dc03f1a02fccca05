//! The big red switch: halt live automation, globally or for one runbook.
//!
//! While a switch that covers a runbook is engaged, new live runs of it are
//! refused and a live run in progress stops at the next step boundary in
//! state `halted` (the step in flight finishes; no on_failure steps run).
//! Dry-runs are never halted. Flipping a switch needs a reason and is an
//! audit event (`switch.engaged` / `switch.released`) with its actor, in the
//! same transaction as the change.

use crate::audit::{Actor, NewEvent, now_rfc3339};
use crate::store::{Batch, Store, StoreError, Write};

/// The scope that covers every runbook.
pub const GLOBAL: &str = "global";

/// Longest reason accepted, in bytes.
pub const MAX_REASON_BYTES: usize = 1024;

/// A reason or comment as given: trimmed, 1 to [`MAX_REASON_BYTES`] bytes,
/// one line of printable text (no control characters: a reason is shown
/// in terminals and consoles, and must not be able to fake their output).
pub fn valid_reason(reason: &str) -> Option<&str> {
    let reason = reason.trim();
    (!reason.is_empty()
        && reason.len() <= MAX_REASON_BYTES
        && !reason.chars().any(char::is_control))
    .then_some(reason)
}

/// The scope of one runbook's switch.
pub fn runbook_scope(name: &str) -> String {
    format!("runbook:{name}")
}

pub use crate::store::SwitchRow;

impl SwitchRow {
    /// One line for humans: what is halted, by whom, why.
    pub fn describe(&self) -> String {
        format!(
            "the big red switch ({}) was engaged by {} at {}: {}",
            self.scope,
            self.actor,
            self.changed_at,
            // Shown in terminals: a reason written straight into the store
            // cannot fake a line of output.
            crate::term::field(&self.reason)
        )
    }
}

/// A flip that cannot be made.
#[derive(Debug, thiserror::Error)]
pub enum SwitchError {
    #[error(
        "a reason is required to flip the switch (say why, for the audit log): one line of printable text, at most {MAX_REASON_BYTES} bytes"
    )]
    Reason,
    #[error("runbook name {0:?} is not valid for a switch scope")]
    Scope(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The engaged switch that halts live runs of `runbook`, if any (the global
/// switch first).
pub async fn halting(store: &dyn Store, runbook: &str) -> Result<Option<SwitchRow>, StoreError> {
    let switches = store.switches().await?;
    let scope = runbook_scope(runbook);
    Ok(switches
        .iter()
        .find(|s| s.engaged && s.scope == GLOBAL)
        .or_else(|| switches.iter().find(|s| s.engaged && s.scope == scope))
        .cloned())
}

/// Engage (`engaged: true`) or release a switch: `runbook: None` is the
/// global one.
pub async fn flip(
    store: &dyn Store,
    runbook: Option<&str>,
    engaged: bool,
    reason: &str,
    actor: &Actor,
) -> Result<SwitchRow, SwitchError> {
    let reason = valid_reason(reason).ok_or(SwitchError::Reason)?;
    let scope = match runbook {
        None => GLOBAL.to_string(),
        Some(name) => {
            let valid = !name.is_empty()
                && name.len() <= 128
                && name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
            if !valid {
                return Err(SwitchError::Scope(name.to_string()));
            }
            runbook_scope(name)
        }
    };
    let previous = store
        .switches()
        .await?
        .into_iter()
        .find(|s| s.scope == scope)
        .is_some_and(|s| s.engaged);
    let row = SwitchRow {
        scope: scope.clone(),
        engaged,
        reason: reason.to_string(),
        actor: actor.to_string(),
        changed_at: now_rfc3339(),
    };
    let action = if engaged {
        crate::audit::Action::SwitchEngaged
    } else {
        crate::audit::Action::SwitchReleased
    };
    store
        .apply(
            Batch::new().write(Write::SetSwitch(row.clone())).event(
                NewEvent::new(actor, action, format!("switch:{scope}"))
                    .details(serde_json::json!({"reason": reason, "was_engaged": previous})),
            ),
        )
        .await?;
    tracing::warn!(scope = %scope, engaged, actor = %actor, reason, "big red switch flipped");
    Ok(row)
}
