//! `{{name}}`: restart a systemd unit when it is not active, then verify.
//!
//! A firedrill recovery kernel in Rust, on the firedrill SDK. It reaches the
//! world only through the firedrill host: every command must match a
//! capability declared in `declare()`, on a target the runbook step granted.
//! `observe` commands run in dry-runs too; a `change` in a dry-run is
//! recorded as the plan and answered with `simulated: true` instead.

use firedrill_sdk::prelude::*;

/// Which unit to look after.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Input {
    /// The systemd unit, e.g. `nginx`.
    #[schemars(regex(pattern = r"^[A-Za-z0-9@._-]{1,128}$"))]
    pub unit: String,
}

/// What the kernel did.
#[derive(Debug, Serialize, JsonSchema, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum Action {
    None,
    Restarted,
    RestartPlanned,
}

/// The output.
#[derive(Debug, Serialize, JsonSchema)]
pub struct Output {
    pub unit: String,
    pub was_active: bool,
    pub action: Action,
}

/// The kernel.
#[derive(Debug)]
pub struct Kernel;

fn is_active(ctx: &Context<'_>, target: &str, unit: &str) -> Result<bool, KernelError> {
    let r = ctx.exec_words(target, &["systemctl", "is-active", "--", unit])?;
    Ok(r.stdout.trim() == "active")
}

impl firedrill_sdk::Kernel for Kernel {
    type Input = Input;
    type Output = Output;

    fn declare() -> Declaration {
        Declaration::new(
            "{{name}}",
            env!("CARGO_PKG_VERSION"),
            "Restart a systemd unit when it is not active, then verify (Rust)",
        )
        // Restarting a unit that is down, twice, leaves it as once.
        .idempotent(true)
        .observe_exec("systemctl is-active -- *")
        .change_exec("systemctl restart -- *")
    }

    fn run(ctx: &Context<'_>, input: Input) -> Result<Output, KernelError> {
        let target = ctx.single_target()?;
        let unit = input.unit;
        if is_active(ctx, target, &unit)? {
            ctx.info(&format!("{unit} on {target} is active; nothing to do"));
            return Ok(Output { unit, was_active: true, action: Action::None });
        }
        let restart = ctx.exec_words(target, &["systemctl", "restart", "--", &unit])?;
        if restart.simulated {
            ctx.info(&format!("dry-run: would restart {unit} on {target}"));
            return Ok(Output { unit, was_active: false, action: Action::RestartPlanned });
        }
        if !restart.success() {
            return Err(KernelError::Failed(format!(
                "systemctl restart {unit} exited {}: {}",
                restart.exit_code,
                restart.stderr.trim()
            )));
        }
        if !is_active(ctx, target, &unit)? {
            return Err(KernelError::Retryable(format!(
                "{unit} on {target} was restarted but is not active; check `journalctl -u {unit}`"
            )));
        }
        ctx.info(&format!("restarted {unit} on {target}"));
        Ok(Output { unit, was_active: false, action: Action::Restarted })
    }
}

export_kernel!(Kernel);

#[cfg(test)]
mod tests {
    use super::*;
    use firedrill_sdk::testing::MockHost;
    use serde_json::json;

    #[test]
    fn an_active_unit_is_left_alone() {
        let mut host = MockHost::for_kernel::<Kernel>();
        host.on_exec("systemctl is-active -- nginx", ExecResult::ok("active\n"));
        let out = host
            .run::<Kernel>(Mode::Live, &["web-1"], json!({"unit": "nginx"}))
            .expect("runs");
        assert_eq!(out["action"], json!("none"));
        assert!(host.planned_changes().is_empty());
    }

    #[test]
    fn dry_run_plans_the_restart_of_a_failed_unit_and_performs_nothing() {
        let mut host = MockHost::for_kernel::<Kernel>();
        host.on_exec("systemctl is-active -- nginx", ExecResult::fail(3, "failed"));
        let out = host
            .run::<Kernel>(Mode::DryRun, &["web-1"], json!({"unit": "nginx"}))
            .expect("runs");
        assert_eq!(out["action"], json!("restart-planned"));
        assert_eq!(host.planned_changes().len(), 1);
    }
}
