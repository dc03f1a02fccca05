//! `restart-service`: restart a systemd unit on a target and verify it comes back.

use firedrill_sdk::prelude::*;
use kernel_systemd::{IS_ACTIVE_PATTERN, unit_state};

fn default_verify_timeout_ms() -> u64 {
    30_000
}

fn default_poll_interval_ms() -> u64 {
    500
}

/// Which unit to restart and how long to wait for it.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Input {
    /// The systemd unit, e.g. `nginx`.
    pub unit: String,
    /// How long to wait for the unit to report `active` after the restart.
    #[serde(default = "default_verify_timeout_ms")]
    #[schemars(range(min = 0, max = 600_000))]
    pub verify_timeout_ms: u64,
    /// How often to poll while waiting.
    #[serde(default = "default_poll_interval_ms")]
    #[schemars(range(min = 50, max = 60_000))]
    pub poll_interval_ms: u64,
}

/// What happened.
#[derive(Debug, Serialize, JsonSchema)]
pub struct Output {
    pub unit: String,
    pub target: String,
    /// State before the restart.
    pub before: String,
    /// State after the restart (equal to `before` in dry-run).
    pub after: String,
    /// True when the restart was performed (false in dry-run).
    pub restarted: bool,
    /// True when the restart was only planned (dry-run).
    pub simulated: bool,
}

/// The kernel.
#[derive(Debug)]
pub struct RestartService;

impl Kernel for RestartService {
    type Input = Input;
    type Output = Output;

    fn declare() -> Declaration {
        Declaration::new(
            "restart-service",
            env!("CARGO_PKG_VERSION"),
            "Restart a systemd unit on the target and wait until it reports active",
        )
        // Restarting twice leaves the unit in the same state as restarting once.
        .idempotent(true)
        .observe_exec(IS_ACTIVE_PATTERN)
        .change_exec("systemctl restart -- *")
    }

    fn run(ctx: &Context<'_>, input: Input) -> Result<Output, KernelError> {
        if input.unit.is_empty() {
            return Err(KernelError::InvalidInput("unit must not be empty".into()));
        }
        let target = ctx.single_target()?;
        let before = unit_state(ctx, target, &input.unit)?;
        let restart = ctx.exec_words(target, &["systemctl", "restart", "--", &input.unit])?;
        if restart.simulated {
            ctx.info(&format!(
                "dry-run: would restart {} on {target} (now {before})",
                input.unit
            ));
            return Ok(Output {
                unit: input.unit,
                target: target.to_string(),
                after: before.clone(),
                before,
                restarted: false,
                simulated: true,
            });
        }
        if !restart.success() {
            return Err(KernelError::Failed(format!(
                "systemctl restart {} on {target} exited {}: {}",
                input.unit,
                restart.exit_code,
                restart.stderr.trim()
            )));
        }
        let deadline = ctx.now().saturating_add(input.verify_timeout_ms);
        loop {
            let after = unit_state(ctx, target, &input.unit)?;
            if after == "active" {
                ctx.info(&format!("{} on {target}: {before} -> active", input.unit));
                return Ok(Output {
                    unit: input.unit,
                    target: target.to_string(),
                    before,
                    after,
                    restarted: true,
                    simulated: false,
                });
            }
            if ctx.now() >= deadline {
                return Err(KernelError::Retryable(format!(
                    "{} on {target} was restarted but is {after:?}, not active, after {} ms; check `journalctl -u {}` on the target",
                    input.unit, input.verify_timeout_ms, input.unit
                )));
            }
            ctx.sleep(input.poll_interval_ms);
        }
    }
}

export_kernel!(RestartService);

#[cfg(test)]
mod tests {
    use super::*;
    use firedrill_sdk::testing::{MockCall, MockHost};
    use serde_json::json;

    /// What `systemctl is-active` prints for a failed unit.
    fn failed() -> ExecResult {
        ExecResult {
            exit_code: 3,
            stdout: "failed\n".into(),
            ..ExecResult::default()
        }
    }

    #[test]
    fn dry_run_plans_the_restart_and_performs_nothing() {
        let mut host = MockHost::for_kernel::<RestartService>();
        host.on_exec("systemctl is-active -- nginx", failed());
        // Scripted so that a performed restart would be visible as an answer.
        host.on_exec(
            "systemctl restart -- nginx",
            ExecResult::fail(99, "must not run"),
        );
        let out = host
            .run::<RestartService>(Mode::DryRun, &["web-1"], json!({"unit": "nginx"}))
            .expect("dry-run succeeds");
        assert_eq!(out["simulated"], json!(true));
        assert_eq!(out["restarted"], json!(false));
        assert_eq!(
            host.planned_changes(),
            vec![MockCall::Exec {
                target: "web-1".into(),
                command: "systemctl restart -- nginx".into(),
                effect: Effect::Change,
                simulated: true,
            }]
        );
    }

    #[test]
    fn live_restarts_and_verifies() {
        let mut host = MockHost::for_kernel::<RestartService>();
        host.on_exec("systemctl restart -- nginx", ExecResult::ok(""))
            .on_exec("systemctl is-active -- nginx", ExecResult::ok("active\n"));
        let out = host
            .run::<RestartService>(Mode::Live, &["web-1"], json!({"unit": "nginx"}))
            .expect("live succeeds");
        assert_eq!(out["restarted"], json!(true));
        assert_eq!(out["after"], json!("active"));
        assert_eq!(
            host.commands(),
            vec![
                "systemctl is-active -- nginx",
                "systemctl restart -- nginx",
                "systemctl is-active -- nginx"
            ]
        );
    }

    #[test]
    fn unit_that_stays_down_is_retryable_after_the_verify_timeout() {
        let mut host = MockHost::for_kernel::<RestartService>();
        host.on_exec("systemctl restart -- nginx", ExecResult::ok(""))
            .on_exec("systemctl is-active -- *", failed());
        let err = host
            .run::<RestartService>(
                Mode::Live,
                &["web-1"],
                json!({"unit": "nginx", "verify_timeout_ms": 2000, "poll_interval_ms": 500}),
            )
            .unwrap_err();
        assert!(
            matches!(&err, KernelError::Retryable(m) if m.contains("\"failed\", not active")),
            "{err}"
        );
        // 2000 ms at 500 ms a poll: the initial check, then 5 polls.
        assert_eq!(host.commands().len(), 1 + 1 + 5);
    }

    #[test]
    fn failed_restart_reports_stderr() {
        let mut host = MockHost::for_kernel::<RestartService>();
        host.on_exec("systemctl is-active -- *", ExecResult::ok("failed\n"))
            .on_exec(
                "systemctl restart -- *",
                ExecResult::fail(5, "Unit nginx.service not found."),
            );
        let err = host
            .run::<RestartService>(Mode::Live, &["web-1"], json!({"unit": "nginx"}))
            .unwrap_err();
        assert!(err.to_string().contains("not found"), "{err}");
    }
}
