//! `service-status`: report whether a systemd unit is active on a target (observe only).

use firedrill_sdk::prelude::*;
use kernel_systemd::{IS_ACTIVE_PATTERN, unit_state};

/// Which unit to query.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Input {
    /// The systemd unit, e.g. `nginx` or `nginx.service`.
    pub unit: String,
    /// When set, fail unless the unit's activity matches (use it to verify).
    #[serde(default)]
    pub expect_active: Option<bool>,
}

/// The unit's state.
#[derive(Debug, Serialize, JsonSchema)]
pub struct Output {
    pub unit: String,
    /// True when systemd reports the unit `active`.
    pub active: bool,
    /// The state systemd reports: active, inactive, failed, activating, unknown...
    pub state: String,
    pub target: String,
}

/// The kernel.
#[derive(Debug)]
pub struct ServiceStatus;

impl Kernel for ServiceStatus {
    type Input = Input;
    type Output = Output;

    fn declare() -> Declaration {
        Declaration::new(
            "service-status",
            env!("CARGO_PKG_VERSION"),
            "Report whether a systemd unit is active on the target",
        )
        .idempotent(true)
        .observe_exec(IS_ACTIVE_PATTERN)
    }

    fn run(ctx: &Context<'_>, input: Input) -> Result<Output, KernelError> {
        if input.unit.is_empty() {
            return Err(KernelError::InvalidInput("unit must not be empty".into()));
        }
        let target = ctx.single_target()?;
        let state = unit_state(ctx, target, &input.unit)?;
        ctx.info(&format!("{} on {target} is {state}", input.unit));
        let active = state == "active";
        if let Some(expected) = input.expect_active
            && expected != active
        {
            return Err(KernelError::Failed(format!(
                "{} on {target} is {state}; expected it {}",
                input.unit,
                if expected { "active" } else { "not active" }
            )));
        }
        Ok(Output {
            active,
            unit: input.unit,
            state,
            target: target.to_string(),
        })
    }
}

export_kernel!(ServiceStatus);

#[cfg(test)]
mod tests {
    use super::*;
    use firedrill_sdk::testing::{MockCall, MockHost};
    use serde_json::json;

    #[test]
    fn reports_active_unit_in_dry_run_because_it_only_observes() {
        let mut host = MockHost::for_kernel::<ServiceStatus>();
        host.on_exec("systemctl is-active -- nginx", ExecResult::ok("active\n"));
        let out = host
            .run::<ServiceStatus>(Mode::DryRun, &["web-1"], json!({"unit": "nginx"}))
            .expect("runs");
        assert_eq!(out["active"], json!(true));
        assert_eq!(out["state"], json!("active"));
        assert_eq!(
            host.calls(),
            vec![MockCall::Exec {
                target: "web-1".into(),
                command: "systemctl is-active -- nginx".into(),
                effect: Effect::Observe,
                simulated: false,
            }]
        );
    }

    #[test]
    fn reports_failed_unit() {
        let mut host = MockHost::for_kernel::<ServiceStatus>();
        host.on_exec(
            "systemctl is-active -- *",
            ExecResult {
                exit_code: 3,
                stdout: "failed\n".into(),
                ..ExecResult::default()
            },
        );
        let out = host
            .run::<ServiceStatus>(Mode::Live, &["web-1"], json!({"unit": "nginx"}))
            .expect("runs");
        assert_eq!(out["active"], json!(false));
        assert_eq!(out["state"], json!("failed"));
    }

    #[test]
    fn expectation_mismatch_fails() {
        let mut host = MockHost::for_kernel::<ServiceStatus>();
        host.on_exec(
            "systemctl is-active -- *",
            ExecResult {
                exit_code: 3,
                stdout: "inactive\n".into(),
                ..ExecResult::default()
            },
        );
        let err = host
            .run::<ServiceStatus>(
                Mode::Live,
                &["web-1"],
                json!({"unit": "nginx", "expect_active": true}),
            )
            .unwrap_err();
        assert!(
            err.to_string()
                .contains("nginx on web-1 is inactive; expected it active"),
            "{err}"
        );
        let out = host
            .run::<ServiceStatus>(
                Mode::Live,
                &["web-1"],
                json!({"unit": "nginx", "expect_active": false}),
            )
            .expect("matches");
        assert_eq!(out["active"], json!(false));
    }

    #[test]
    fn hostile_unit_name_stays_one_quoted_word() {
        let mut host = MockHost::for_kernel::<ServiceStatus>();
        host.on_exec("systemctl is-active -- *", ExecResult::ok("inactive\n"));
        host.run::<ServiceStatus>(Mode::Live, &["web-1"], json!({"unit": "x; reboot"}))
            .expect("runs");
        assert_eq!(host.commands(), vec!["systemctl is-active -- 'x; reboot'"]);
    }

    #[test]
    fn rejects_bad_input_and_wrong_target_count() {
        let mut host = MockHost::for_kernel::<ServiceStatus>();
        let err = host
            .run::<ServiceStatus>(Mode::DryRun, &["web-1"], json!({"service": "nginx"}))
            .unwrap_err();
        assert!(matches!(err, KernelError::InvalidInput(_)), "{err}");
        let err = host
            .run::<ServiceStatus>(Mode::DryRun, &[], json!({"unit": "nginx"}))
            .unwrap_err();
        assert!(err.to_string().contains("granted 0"), "{err}");
    }

    #[test]
    fn empty_output_is_a_clear_failure() {
        let mut host = MockHost::for_kernel::<ServiceStatus>();
        host.on_exec(
            "systemctl is-active -- *",
            ExecResult::fail(1, "Failed to connect to bus"),
        );
        let err = host
            .run::<ServiceStatus>(Mode::DryRun, &["web-1"], json!({"unit": "nginx"}))
            .unwrap_err();
        assert!(
            err.to_string().contains("Failed to connect to bus"),
            "{err}"
        );
    }
}
