//! The example kernels, built from source, through the full host path against
//! a real local target. Dry-run and live are checked on the target itself.

use std::path::Path;
use std::process::Command;

use firedrill::Mode;
use firedrill::kernel::{InvokeReport, KernelHost, KernelLimits};
use firedrill::secret::StaticSecrets;
use firedrill_tests::{demo_inventory, guest_bytes, host_with, invoke_on_web1, workspace_root};
use serde_json::json;

struct Demo {
    dir: tempfile::TempDir,
    host: std::sync::Arc<KernelHost>,
}

impl Demo {
    fn new() -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let host = host_with(
            KernelLimits::default(),
            demo_inventory("web-1", dir.path()),
            StaticSecrets::default(),
        );
        Demo { dir, host }
    }

    fn systemctl(&self, verb: &str) -> bool {
        Command::new(workspace_root().join("runbooks/demo/bin/systemctl"))
            .args([verb, "--", "web"])
            .env("FIREDRILL_DEMO_DIR", self.dir.path())
            .status()
            .expect("run systemctl stand-in")
            .success()
    }

    fn restarts(&self) -> usize {
        std::fs::read_to_string(self.dir.path().join("web.restarts"))
            .map(|s| s.lines().count())
            .unwrap_or(0)
    }

    async fn invoke(&self, package: &str, mode: Mode, input: serde_json::Value) -> InvokeReport {
        invoke_on_web1(&self.host, &guest_bytes(package), mode, input).await
    }
}

impl Drop for Demo {
    fn drop(&mut self) {
        self.systemctl("stop");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn service_status_reports_the_real_state() {
    let demo = Demo::new();
    let out = demo
        .invoke("service-status", Mode::DryRun, json!({"unit": "web"}))
        .await;
    assert_eq!(out.result.expect("runs")["state"], json!("inactive"));
    assert!(demo.systemctl("start"));
    let out = demo
        .invoke("service-status", Mode::DryRun, json!({"unit": "web"}))
        .await;
    assert_eq!(out.result.expect("runs")["active"], json!(true));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_service_dry_run_changes_nothing_and_live_restarts() {
    let demo = Demo::new();
    let input = json!({"unit": "web", "verify_timeout_ms": 5000, "poll_interval_ms": 100});

    let dry = demo
        .invoke("restart-service", Mode::DryRun, input.clone())
        .await;
    let out = dry.result.as_ref().expect("dry-run succeeds");
    assert_eq!(out["simulated"], json!(true));
    assert_eq!(demo.restarts(), 0, "dry-run restarted the unit");
    assert!(!demo.systemctl("is-active"), "dry-run started the unit");
    let planned: Vec<_> = dry.planned_changes().collect();
    assert_eq!(planned.len(), 1);
    assert_eq!(
        serde_json::to_value(planned[0]).expect("json")["command"],
        json!("systemctl restart -- web")
    );

    let live = demo.invoke("restart-service", Mode::Live, input).await;
    let out = live.result.as_ref().expect("live succeeds");
    assert_eq!(out["restarted"], json!(true));
    assert_eq!(out["after"], json!("active"));
    assert_eq!(demo.restarts(), 1);
    assert!(
        demo.systemctl("is-active"),
        "live did not bring the unit up"
    );
    assert!(live.host_calls.iter().all(|c| !c.simulated));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disk_usage_reads_real_df() {
    let demo = Demo::new();
    let out = demo
        .invoke("disk-usage", Mode::DryRun, json!({"path": "/"}))
        .await;
    let out = out.result.expect("runs");
    assert_eq!(out["mounted_on"], json!("/"));
    assert!(out["size_kib"].as_u64().expect("size") > 0);
    let missing = demo
        .invoke(
            "disk-usage",
            Mode::DryRun,
            json!({"path": "/definitely/not/here"}),
        )
        .await;
    let err = missing.result.expect_err("df fails").to_string();
    assert!(err.contains("No such file"), "{err}");
    assert!(Path::new("/").exists());
}
