//! systemd helpers shared by the example kernels (`service-status`, `restart-service`).

use firedrill_sdk::{Context, KernelError};

/// Exec capability pattern for [`unit_state`]; declare it as `observe`.
pub const IS_ACTIVE_PATTERN: &str = "systemctl is-active -- *";

/// The state `systemctl is-active` reports for `unit` on `target`
/// (active, inactive, failed, activating, ...).
pub fn unit_state(ctx: &Context<'_>, target: &str, unit: &str) -> Result<String, KernelError> {
    let r = ctx.exec_words(target, &["systemctl", "is-active", "--", unit])?;
    let state = r.stdout.trim();
    // `systemctl is-active` exits 0 when active, 3 when not; it prints the state either way.
    if state.is_empty() {
        return Err(KernelError::Failed(format!(
            "systemctl is-active printed nothing for unit {unit:?} on {target} (exit {}): {}",
            r.exit_code,
            r.stderr.trim()
        )));
    }
    Ok(state.to_string())
}
