//! End to end with a real Prometheus Alertmanager (Debian's
//! `prometheus-alertmanager`, started by the test on loopback with its own
//! config and storage in a temp dir, clustering off): alerts injected
//! through Alertmanager's own API reach `firedrill serve` through its
//! webhook receiver. The matching runbook runs exactly once although
//! Alertmanager re-sends the alert, the resolved notification starts
//! nothing, and the cooldown holds for a new alert with the same key.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use firedrill::auth::Role;
use firedrill::server::ServerConfig;
use firedrill::store::{AuditFilter, RunFilter};
use firedrill_tests::TestEnv;
use firedrill_tests::free_port;
use serde_json::json;

const ALERTMANAGER: &str = "/usr/bin/prometheus-alertmanager";

const RUNBOOK: &str = r#"apiVersion: firedrill/v1
name: web-down
version: 1
inputs: { type: object, properties: { instance: { type: string } } }
steps:
  - id: one
    kernel: trivial@0.1.0
    targets: [demo-host]
triggers:
  - source: alertmanager
    match: { alertname: WebDown }
    inputs: { instance: "{{ alert.labels.instance }}" }
    cooldown: 1h
"#;

struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

async fn received(env: &TestEnv) -> Vec<String> {
    env.store
        .audit(&AuditFilter {
            action: Some("alert.received".into()),
            limit: 1000,
            ..AuditFilter::default()
        })
        .await
        .expect("audit")
        .into_iter()
        .map(|r| r.outcome)
        .collect()
}

async fn wait_until<F: AsyncFn() -> bool>(what: &str, f: F) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !f().await {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alertmanager_delivers_and_firedrill_runs_once() {
    assert!(
        std::path::Path::new(ALERTMANAGER).exists(),
        "{ALERTMANAGER} is missing: run scripts/test, which installs prometheus-alertmanager"
    );
    let env = TestEnv::new().await;
    env.publish(&[RUNBOOK]).await;
    let token = env.token("alertmanager", Role::Webhook, &[]).await;
    let (url, _) = env.serve(ServerConfig::default()).await;
    let firedrill = url.trim_start_matches("http://").to_string();

    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("token"), &token).expect("token file");
    // Short intervals so that Alertmanager re-sends the firing alert
    // (repeat_interval) within the test.
    let config = format!(
        "route:\n  receiver: firedrill\n  group_by: [alertname, instance]\n  group_wait: 100ms\n  group_interval: 1s\n  repeat_interval: 2s\nreceivers:\n  - name: firedrill\n    webhook_configs:\n      - url: http://{firedrill}/api/v1/alerts/alertmanager\n        send_resolved: true\n        http_config:\n          authorization:\n            type: Bearer\n            credentials_file: {}\n",
        dir.path().join("token").display()
    );
    std::fs::write(dir.path().join("alertmanager.yml"), config).expect("config");
    let am_port = free_port();
    let log = std::fs::File::create(dir.path().join("alertmanager.log")).expect("log");
    let _am = Killed(
        Command::new(ALERTMANAGER)
            .arg(format!(
                "--config.file={}",
                dir.path().join("alertmanager.yml").display()
            ))
            .arg(format!(
                "--storage.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{am_port}"))
            .arg("--cluster.listen-address=")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start alertmanager"),
    );
    let am = format!("http://127.0.0.1:{am_port}");
    let client = reqwest::Client::new();
    wait_until("alertmanager ready", async || {
        client
            .get(format!("{am}/-/ready"))
            .send()
            .await
            .is_ok_and(|r| r.status().is_success())
    })
    .await;

    let starts = humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string();
    let alert = |instance: &str, replica: &str, ends: Option<String>| {
        let mut a = json!({
            "labels": {"alertname": "WebDown", "instance": instance, "replica": replica},
            "annotations": {"summary": "web is down"},
            "startsAt": starts,
        });
        if let Some(e) = ends {
            a["endsAt"] = json!(e);
        }
        json!([a])
    };
    let post = async |body: serde_json::Value| {
        let r = client
            .post(format!("{am}/api/v2/alerts"))
            .json(&body)
            .send()
            .await
            .expect("post to alertmanager");
        assert!(
            r.status().is_success(),
            "alertmanager refused: {}",
            r.status()
        );
    };

    post(alert("web-1", "a", None)).await;
    // Delivered, then re-delivered at least once (repeat_interval 2s).
    wait_until("a duplicate delivery", async || {
        let r = received(&env).await;
        r.contains(&"started".to_string()) && r.contains(&"duplicate".to_string())
    })
    .await;
    let runs = env.store.runs(&RunFilter::default()).await.expect("runs");
    assert_eq!(runs.len(), 1);
    assert_eq!(runs[0].actor, "alert-source:alertmanager");
    assert_eq!(runs[0].inputs["instance"], "web-1");

    // Another alert, same instance (the key): cooldown.
    post(alert("web-1", "b", None)).await;
    wait_until("the cooldown decision", async || {
        received(&env).await.contains(&"cooldown".to_string())
    })
    .await;

    // Resolve the first: recorded, nothing started.
    let ended = humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string();
    post(alert("web-1", "a", Some(ended))).await;
    wait_until("the resolved notification", async || {
        received(&env).await.contains(&"resolved".to_string())
    })
    .await;
    let runs = env.store.runs(&RunFilter::default()).await.expect("runs");
    assert_eq!(runs.len(), 1, "exactly one run for all of it");
}
