//! Kernels in three languages pass the same conformance checks: a Rust kernel
//! (restart-service), a Python kernel (log-rotate-py, componentize-py) and a
//! JavaScript kernel (cert-expiry-js, componentize-js), all built from
//! source. Each runs through the real host against a real local target:
//! manifest, schemas, dry-run interception (checked on the target), capability
//! denial (an input that would smuggle a second command), and limits. Then
//! the three run together in one runbook, dry-run and live.

use std::path::Path;
use std::process::Command;

use firedrill::Mode;
use firedrill::executor::planned_changes;
use firedrill::kernel::{CallOutcome, InvokeError, KernelLimits, Limit};
use firedrill::secret::StaticSecrets;
use firedrill::transport::{Inventory, TargetSpec};
use firedrill_tests::{
    TestEnv, demo_inventory, foreign_kernel, guest_bytes, host_with, invoke_on_web1,
};
use serde_json::{Value, json};

/// One kernel under the conformance checks, with what it needs on a target.
struct Case {
    lang: &'static str,
    bytes: fn() -> Vec<u8>,
    /// Prepare `dir` (the demo state directory) so that a run has a change
    /// to make; the input for that run.
    setup: fn(&Path) -> Value,
    /// Whether the change was made.
    changed: fn(&Path) -> bool,
    /// An input the kernel's input schema refuses.
    invalid: Value,
    /// An input the schema accepts that puts `; reboot` into a command.
    smuggle: fn(&Path) -> Value,
}

fn read(path: &Path) -> Vec<u8> {
    std::fs::read(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
}

fn cases() -> Vec<Case> {
    vec![
        Case {
            lang: "rust",
            bytes: || guest_bytes("restart-service"),
            // A unit that is down: the stand-in has no pid file for it.
            setup: |_| json!({"unit": "web", "verify_timeout_ms": 5000, "poll_interval_ms": 100}),
            changed: |dir| dir.join("web.restarts").exists(),
            invalid: json!({"unit": "web", "verify_timeout_ms": "soon"}),
            smuggle: |_| json!({"unit": "web; reboot"}),
        },
        Case {
            lang: "python",
            bytes: || read(&foreign_kernel("log-rotate-py")),
            setup: |dir| {
                let logs = dir.join("logs");
                std::fs::create_dir_all(&logs).expect("logs dir");
                std::fs::write(logs.join("app.log"), vec![b'x'; 300 << 10]).expect("write");
                // A name with a space is still one word for the host.
                std::fs::write(logs.join("old app.log"), vec![b'x'; 200 << 10]).expect("write");
                std::fs::write(logs.join("keep.txt"), vec![b'x'; 300 << 10]).expect("write");
                // Any filesystem in use is over 1%: the kernel acts.
                json!({"path": logs.display().to_string(), "max_use_percent": 1})
            },
            changed: |dir| std::fs::metadata(dir.join("logs/app.log")).is_ok_and(|m| m.len() == 0),
            invalid: json!({"path": "/var/log", "max_files": 0}),
            smuggle: |dir| json!({"path": format!("{}; reboot", dir.display()), "max_use_percent": 1}),
        },
        Case {
            lang: "javascript",
            bytes: || read(&foreign_kernel("cert-expiry-js")),
            setup: |dir| {
                let certs = dir.join("certs");
                std::fs::create_dir_all(&certs).expect("certs dir");
                let status = Command::new("openssl")
                    .args(["req", "-x509", "-newkey", "ec", "-pkeyopt"])
                    .arg("ec_paramgen_curve:prime256v1")
                    .args(["-nodes", "-days", "5", "-subj", "/CN=web", "-keyout"])
                    .arg(certs.join("web.key"))
                    .arg("-out")
                    .arg(certs.join("web.pem"))
                    .stderr(std::process::Stdio::null())
                    .status()
                    .expect("openssl");
                assert!(status.success(), "openssl made no certificate");
                json!({"file": certs.join("web.pem").display().to_string(), "cert_name": "web"})
            },
            changed: |dir| dir.join("web.renewals").exists(),
            invalid: json!({"file": "/etc/ssl/web.pem", "cert_name": "web; reboot"}),
            smuggle: |dir| json!({"file": format!("{}/certs/web.pem; reboot", dir.display()), "cert_name": "web"}),
        },
    ]
}

/// A local target `web-1` with the demo stand-ins (`systemctl`, `certbot`)
/// and a `reboot` that leaves a mark, keeping state in `dir`.
fn inventory(dir: &Path) -> Inventory {
    let bin = dir.join("bin");
    std::fs::create_dir_all(&bin).expect("bin");
    let reboot = bin.join("reboot");
    std::fs::write(
        &reboot,
        "#!/bin/sh\ntouch \"$FIREDRILL_DEMO_DIR/rebooted\"\n",
    )
    .expect("write");
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::set_permissions(&reboot, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let mut inventory = demo_inventory("web-1", dir);
    if let Some(TargetSpec::Local(spec)) = inventory.targets.get_mut("web-1") {
        let path = spec.env.get("PATH").cloned().unwrap_or_default();
        spec.env
            .insert("PATH".into(), format!("{}:{path}", bin.display()));
    }
    inventory
}

#[tokio::test(flavor = "multi_thread")]
async fn every_language_passes_the_same_conformance_checks() {
    for case in cases() {
        let lang = case.lang;
        let bytes = (case.bytes)();
        let dir = tempfile::tempdir().expect("tmp");
        let host = host_with(
            KernelLimits::default(),
            inventory(dir.path()),
            StaticSecrets::default(),
        );

        // Manifest: loads, describes itself stably, schemas are valid.
        let kernel = host
            .load(&bytes)
            .await
            .unwrap_or_else(|e| panic!("{lang}: {e}"));
        assert!(
            kernel.manifest.idempotent,
            "{lang}: examples are idempotent"
        );
        assert!(
            kernel
                .manifest
                .capabilities
                .exec
                .iter()
                .any(|c| c.effect == firedrill::Effect::Change),
            "{lang}: declares a change"
        );

        // Schemas: a bad input is refused before the kernel runs.
        let report = invoke_on_web1(&host, &bytes, Mode::DryRun, case.invalid.clone()).await;
        assert!(
            matches!(report.result, Err(InvokeError::InvalidInput(_))),
            "{lang}: {:?}",
            report.result
        );
        assert!(report.host_calls.is_empty(), "{lang}: ran with a bad input");

        // Dry-run: observes for real, plans the change, changes nothing.
        let input = (case.setup)(dir.path());
        let dry = invoke_on_web1(&host, &bytes, Mode::DryRun, input.clone()).await;
        let output = dry
            .result
            .as_ref()
            .unwrap_or_else(|e| panic!("{lang}: dry-run {e}"));
        assert!(
            dry.planned_changes().count() >= 1,
            "{lang}: no plan in {output}"
        );
        assert!(
            dry.host_calls
                .iter()
                .any(|c| c.effect == Some(firedrill::Effect::Observe)
                    && !c.simulated
                    && matches!(c.outcome, CallOutcome::Ok { .. })),
            "{lang}: observed nothing for real"
        );
        assert!(
            !(case.changed)(dir.path()),
            "{lang}: dry-run changed the target"
        );

        // Live: the change is made, on the target.
        let live = invoke_on_web1(&host, &bytes, Mode::Live, input).await;
        live.result
            .as_ref()
            .unwrap_or_else(|e| panic!("{lang}: live {e}"));
        assert_eq!(live.planned_changes().count(), 0, "{lang}");
        assert!(
            (case.changed)(dir.path()),
            "{lang}: live run changed nothing"
        );

        // Denial: an input that would run a second command never does.
        let smuggled = invoke_on_web1(&host, &bytes, Mode::Live, (case.smuggle)(dir.path())).await;
        assert!(
            !dir.path().join("rebooted").exists(),
            "{lang}: `reboot` ran"
        );
        if lang != "rust" {
            // The kernel interpolates the input into a command; the host
            // splits it into words, which no longer match the capability.
            assert_eq!(
                smuggled.denials().count(),
                1,
                "{lang}: {:?}",
                smuggled.host_calls
            );
            assert!(
                smuggled.result.is_err(),
                "{lang}: a denied call must fail the run"
            );
        } else {
            // The Rust SDK passes arguments as words: `web; reboot` is one
            // (quoted) argument, within the capability, and nothing else ran.
            assert_eq!(smuggled.denials().count(), 0, "{lang}");
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn every_language_is_held_to_the_limits() {
    let dir = tempfile::tempdir().expect("tmp");
    let inv = inventory(dir.path());
    let limited = |limits: KernelLimits| host_with(limits, inv.clone(), StaticSecrets::default());
    let output = limited(KernelLimits {
        output_bytes: 16,
        ..KernelLimits::default()
    });
    let calls = limited(KernelLimits {
        host_calls: 1,
        ..KernelLimits::default()
    });
    for case in cases() {
        let lang = case.lang;
        let bytes = (case.bytes)();
        let input = (case.setup)(dir.path());

        let report = invoke_on_web1(&output, &bytes, Mode::DryRun, input.clone()).await;
        assert!(
            matches!(&report.result, Err(InvokeError::Limit(l)) if l.limit == Limit::Output),
            "{lang}: {:?}",
            report.result
        );
        let report = invoke_on_web1(&calls, &bytes, Mode::DryRun, input.clone()).await;
        assert!(
            matches!(&report.result, Err(InvokeError::Limit(l)) if l.limit == Limit::HostCalls),
            "{lang}: {:?}",
            report.result
        );
    }
}

const THREE_LANGUAGES: &str = r#"
apiVersion: firedrill/v1
name: three-languages
version: 1
description: Free disk space and renew a certificate, with kernels in Rust, Python and JavaScript
inputs:
  type: object
  required: [logs, cert]
  properties:
    logs: { type: string }
    cert: { type: string }
steps:
  - id: usage
    kernel: disk-usage@1.0.0
    targets: [web-1]
    with: { path: "{{ inputs.logs }}" }
  - id: rotate
    kernel: log-rotate-py@1.0.0
    targets: [web-1]
    with: { path: "{{ inputs.logs }}", max_use_percent: 1 }
  - id: renew
    kernel: cert-expiry-js@1.0.0
    targets: [web-1]
    with: { file: "{{ inputs.cert }}", cert_name: web, warn_days: 14 }
"#;

#[tokio::test(flavor = "multi_thread")]
async fn rust_python_and_javascript_kernels_run_in_one_runbook() {
    // `demo-host` has the demo stand-ins (`systemctl`, `certbot`) on its PATH.
    let env = TestEnv::new().await;
    let state = env.demo_state();
    std::fs::create_dir_all(&state).expect("state");
    for name in ["log-rotate-py", "cert-expiry-js"] {
        env.service
            .registry()
            .publish(
                env.service.host(),
                &read(&foreign_kernel(name)),
                &firedrill::audit::Actor::user("publisher"),
            )
            .await
            .unwrap_or_else(|e| panic!("{name} publishes: {e}"));
    }
    let cases = cases();
    let logs = (cases[1].setup)(&state)["path"].clone();
    let cert = (cases[2].setup)(&state)["file"].clone();
    let text = THREE_LANGUAGES.replace("web-1", "demo-host");
    let inputs = [
        ("logs", logs.as_str().expect("path")),
        ("cert", cert.as_str().expect("file")),
    ];

    let dry = env
        .run_text(&text, Mode::DryRun, &inputs)
        .await
        .expect("dry-run");
    let calls = env.store.host_calls(&dry).await.expect("calls");
    let plan: Vec<String> = planned_changes(&calls)
        .iter()
        .map(|c| c.call["command"].as_str().unwrap_or("").to_string())
        .collect();
    assert!(
        plan.iter().any(|c| c.starts_with("truncate -s 0 ")),
        "{plan:?}"
    );
    assert!(
        plan.iter().any(|c| c.starts_with("certbot renew ")),
        "{plan:?}"
    );
    assert!(!(cases[1].changed)(&state) && !(cases[2].changed)(&state));

    let live = env
        .run_text(&text, Mode::Live, &inputs)
        .await
        .expect("live");
    let run = env.store.run(&live).await.expect("read").expect("run");
    assert_eq!(
        run.status,
        firedrill::store::RunStatus::Succeeded,
        "{:?}",
        run.error
    );
    assert!((cases[1].changed)(&state), "logs not truncated");
    let spaced = std::fs::metadata(state.join("logs/old app.log")).expect("spaced log");
    assert_eq!(
        spaced.len(),
        0,
        "a log whose name has a space is truncated too"
    );
    assert!((cases[2].changed)(&state), "certificate not renewed");
    let steps = env.store.steps(&live).await.expect("steps");
    let renew = steps
        .iter()
        .find(|s| s.step_id == "renew")
        .expect("renew step");
    let out: Value = renew.output.clone().expect("output");
    assert_eq!(out["action"], json!("renewed"));
    assert!(out["days_left"].as_i64().unwrap_or(0) >= 80, "{out}");
}
