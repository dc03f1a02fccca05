//! End to end with a real Prometheus Alertmanager (Debian's
//! `prometheus-alertmanager`, started by the test on loopback with its own
//! config and storage in a temp dir, clustering off): alerts injected
//! through Alertmanager's own API reach `firedrill serve` through its
//! webhook receiver. The matching runbook runs exactly once although
//! Alertmanager re-sends the alert, the resolved notification starts
//! nothing, and the cooldown holds for a new alert with the same key.
//! Every suppressed decision is taken again when Alertmanager re-sends the
//! alert (`repeat_interval`): a second failure inside the cooldown is
//! remediated after it, a rate limit after its window, an open breaker
//! after its reset (and a breaker on one key never pauses another), a
//! not-ready runbook after its drill, the switch after its release; an
//! alert that matches nothing is counted and listed.

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

/// A real Alertmanager on loopback whose one receiver is `firedrill`'s
/// Alertmanager webhook, re-sending firing alerts every `repeat`.
struct Alertmanager {
    url: String,
    client: reqwest::Client,
    _process: Killed,
    _dir: tempfile::TempDir,
}

impl Alertmanager {
    /// An Alertmanager with no receiver of ours (firedrill only posts to it).
    async fn start_alone() -> Alertmanager {
        Alertmanager::with_config(
            "route:\n  receiver: nobody\nreceivers:\n  - name: nobody\n".into(),
            tempfile::tempdir().expect("tempdir"),
        )
        .await
    }

    async fn start(firedrill: &str, token: &str, repeat: &str) -> Alertmanager {
        let firedrill = firedrill.trim_start_matches("http://");
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join("token"), token).expect("token file");
        // Short intervals so that Alertmanager re-sends the firing alert
        // (repeat_interval) within the test.
        let config = format!(
            "route:\n  receiver: firedrill\n  group_by: ['...']\n  group_wait: 100ms\n  group_interval: 1s\n  repeat_interval: {repeat}\nreceivers:\n  - name: firedrill\n    webhook_configs:\n      - url: http://{firedrill}/api/v1/alerts/alertmanager\n        send_resolved: true\n        http_config:\n          authorization:\n            type: Bearer\n            credentials_file: {}\n",
            dir.path().join("token").display()
        );
        Alertmanager::with_config(config, dir).await
    }

    async fn with_config(config: String, dir: tempfile::TempDir) -> Alertmanager {
        assert!(
            std::path::Path::new(ALERTMANAGER).exists(),
            "{ALERTMANAGER} is missing: run scripts/test, which installs prometheus-alertmanager"
        );
        std::fs::write(dir.path().join("alertmanager.yml"), config).expect("config");
        let port = free_port();
        let log = std::fs::File::create(dir.path().join("alertmanager.log")).expect("log");
        let process = Killed(
            Command::new(ALERTMANAGER)
                .arg(format!(
                    "--config.file={}",
                    dir.path().join("alertmanager.yml").display()
                ))
                .arg(format!(
                    "--storage.path={}",
                    dir.path().join("data").display()
                ))
                .arg(format!("--web.listen-address=127.0.0.1:{port}"))
                .arg("--cluster.listen-address=")
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(log)
                .spawn()
                .expect("start alertmanager"),
        );
        let am = Alertmanager {
            url: format!("http://127.0.0.1:{port}"),
            client: reqwest::Client::new(),
            _process: process,
            _dir: dir,
        };
        wait_until("alertmanager ready", async || {
            am.client
                .get(format!("{}/-/ready", am.url))
                .send()
                .await
                .is_ok_and(|r| r.status().is_success())
        })
        .await;
        am
    }

    /// Inject one alert through Alertmanager's own API.
    async fn post(&self, labels: serde_json::Value, starts: &str, ends: Option<&str>) {
        let mut a = json!({
            "labels": labels,
            "annotations": {"summary": "down"},
            "startsAt": starts,
        });
        if let Some(e) = ends {
            a["endsAt"] = json!(e);
        }
        let r = self
            .client
            .post(format!("{}/api/v2/alerts", self.url))
            .json(&json!([a]))
            .send()
            .await
            .expect("post to alertmanager");
        assert!(
            r.status().is_success(),
            "alertmanager refused: {}",
            r.status()
        );
    }
}

fn now() -> String {
    humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alertmanager_delivers_and_firedrill_runs_once() {
    let env = TestEnv::new().await;
    env.publish(&[RUNBOOK]).await;
    let token = env.token("alertmanager", Role::Webhook, &[]).await;
    let (url, _) = env.serve(ServerConfig::default()).await;
    let am = Alertmanager::start(&url, &token, "2s").await;
    let starts = now();
    let labels = |instance: &str, replica: &str| json!({"alertname": "WebDown", "instance": instance, "replica": replica});

    am.post(labels("web-1", "a"), &starts, None).await;
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
    am.post(labels("web-1", "b"), &starts, None).await;
    wait_until("the cooldown decision", async || {
        received(&env).await.contains(&"cooldown".to_string())
    })
    .await;

    // Resolve the first: recorded, nothing started.
    am.post(labels("web-1", "a"), &starts, Some(&now())).await;
    wait_until("the resolved notification", async || {
        received(&env).await.contains(&"resolved".to_string())
    })
    .await;
    let runs = env.store.runs(&RunFilter::default()).await.expect("runs");
    assert_eq!(runs.len(), 1, "exactly one run for all of it");
}

/// web-down with a short cooldown; rate-limited with one run per 4 s;
/// gated (live, readiness blocks); switched (live, readiness warn); with
/// `UNIT_FIX` (per-key breaker of 2).
const REEVALUATED: &[&str] = &[
    r#"apiVersion: firedrill/v1
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
    cooldown: 4s
"#,
    r#"apiVersion: firedrill/v1
name: limited
version: 1
steps:
  - id: one
    kernel: trivial@0.1.0
    targets: [demo-host]
triggers:
  - source: alertmanager
    match: { alertname: Limited }
    key: "{{ alert.labels.instance }}"
    cooldown: 1ms
    max_runs: { count: 1, per: 4s }
"#,
    r#"apiVersion: firedrill/v1
name: gated
version: 1
steps:
  - id: one
    kernel: trivial@0.1.0
    targets: [demo-host]
drill:
  every: 24h
  mode: live
  max_age: 24h
triggers:
  - source: alertmanager
    match: { alertname: GatedDown }
    mode: live
"#,
    r#"apiVersion: firedrill/v1
name: switched
version: 1
steps:
  - id: one
    kernel: trivial@0.1.0
    targets: [demo-host]
triggers:
  - source: alertmanager
    match: { alertname: SwitchedDown }
    mode: live
readiness_policy: warn
"#,
];

async fn runs_of(env: &TestEnv, runbook: &str) -> Vec<firedrill::store::RunRow> {
    env.store
        .runs(&RunFilter {
            runbook: Some(runbook.into()),
            limit: 100,
            ..RunFilter::default()
        })
        .await
        .expect("runs")
}

/// Outcomes of `alert.received` for `runbook`, oldest first.
async fn decided(env: &TestEnv, runbook: &str) -> Vec<String> {
    let mut v: Vec<_> = env
        .store
        .audit(&AuditFilter {
            action: Some("alert.received".into()),
            limit: 1000,
            ..AuditFilter::default()
        })
        .await
        .expect("audit")
        .into_iter()
        .filter(|r| r.subject == format!("runbook:{runbook}"))
        .collect();
    v.sort_by_key(|r| r.seq);
    v.into_iter().map(|r| r.outcome).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_suppressed_alert_is_decided_again_when_alertmanager_resends_it() {
    let env = TestEnv::new().await;
    env.publish(REEVALUATED).await;
    env.publish(&[firedrill_tests::UNIT_FIX]).await;
    let token = env.token("alertmanager", Role::Webhook, &[]).await;
    let viewer = env.token("viewer", Role::Viewer, &[]).await;
    firedrill::switch::flip(
        env.store.as_ref(),
        Some("switched"),
        true,
        "maintenance",
        &firedrill::audit::Actor::user("alice"),
    )
    .await
    .expect("engage");
    let (url, _) = env
        .serve(ServerConfig {
            drills: false,
            ..ServerConfig::default()
        })
        .await;
    let am = Alertmanager::start(&url, &token, "1s").await;
    let starts = now();
    let fire = async |labels: serde_json::Value| am.post(labels, &starts, None).await;

    // A failure, remediated; a second failure of the same instance inside
    // the cooldown (4 s): suppressed, then remediated once the cooldown is
    // over, on Alertmanager's next re-send.
    fire(json!({"alertname": "WebDown", "instance": "web-1", "replica": "a"})).await;
    wait_until("the first remediation", async || {
        runs_of(&env, "web-down").await.len() == 1
    })
    .await;
    fire(json!({"alertname": "WebDown", "instance": "web-1", "replica": "b"})).await;
    // Two fires of one key in a row: rate-limited, then started when the window moves.
    fire(json!({"alertname": "Limited", "instance": "db-1", "replica": "a"})).await;
    wait_until("the first limited run", async || {
        runs_of(&env, "limited").await.len() == 1
    })
    .await;
    fire(json!({"alertname": "Limited", "instance": "db-1", "replica": "b"})).await;
    // Never drilled (policy block): not-ready until it passes a live drill.
    fire(json!({"alertname": "GatedDown"})).await;
    // The runbook's switch is engaged: halted until released.
    fire(json!({"alertname": "SwitchedDown"})).await;
    // Two failures of unit `bad` open its breaker; `good` is not paused.
    for replica in ["a", "b"] {
        fire(json!({"alertname": "UnitDown", "unit": "bad", "behaviour": "fail", "replica": replica})).await;
    }
    wait_until("two failed runs of unit bad", async || {
        runs_of(&env, "unit-fix")
            .await
            .iter()
            .filter(|r| r.status == firedrill::store::RunStatus::Failed)
            .count()
            == 2
    })
    .await;
    fire(json!({"alertname": "UnitDown", "unit": "bad", "behaviour": "ok", "replica": "c"})).await;
    fire(json!({"alertname": "UnitDown", "unit": "good", "behaviour": "ok", "replica": "a"})).await;
    // Matches nothing: counted and listed.
    fire(json!({"alertname": "NobodyListens", "instance": "x"})).await;

    wait_until("every suppression, decided at least twice", async || {
        let twice = |v: &[String], o: &str| v.iter().filter(|d| *d == o).count() >= 2;
        twice(&decided(&env, "gated").await, "not-ready")
            && twice(&decided(&env, "switched").await, "halted")
            && twice(&decided(&env, "unit-fix").await, "breaker-open")
    })
    .await;
    let web = decided(&env, "web-down").await;
    assert!(web.contains(&"cooldown".to_string()), "{web:?}");
    // The second failure was remediated after its cooldown.
    wait_until("the second remediation, after the cooldown", async || {
        runs_of(&env, "web-down").await.len() == 2
    })
    .await;
    let web = decided(&env, "web-down").await;
    let first_cooldown = web.iter().position(|d| d == "cooldown").expect("cooldown");
    assert!(
        web[first_cooldown..].contains(&"started".to_string()),
        "started after the cooldown: {web:?}"
    );
    wait_until("the second limited run, after its window", async || {
        runs_of(&env, "limited").await.len() == 2
    })
    .await;
    assert!(
        decided(&env, "limited")
            .await
            .contains(&"rate-limited".to_string())
    );
    // Unit good ran (and succeeded) while unit bad's breaker was open.
    let units = runs_of(&env, "unit-fix").await;
    assert_eq!(units.len(), 3, "two bad, one good: {units:?}");

    // The unmatched alert: counted, listed with its nearest trigger.
    let get = async |path: &str| {
        reqwest::Client::new()
            .get(format!("{url}{path}"))
            .bearer_auth(&viewer)
            .send()
            .await
            .expect("get")
            .text()
            .await
            .expect("text")
    };
    let metrics = get("/metrics").await;
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("firedrill_alerts_unmatched_total{source=\"alertmanager\"}")),
        "{metrics}"
    );
    let unmatched: serde_json::Value =
        serde_json::from_str(&get("/api/v1/alerts/unmatched").await).expect("json");
    assert!(
        unmatched["alerts"]
            .as_array()
            .expect("alerts")
            .iter()
            .any(|a| a["labels"]["alertname"] == "NobodyListens"),
        "{unmatched}"
    );

    // Each reason passes; the next re-send acts.
    let p = firedrill::drill::prepare_drill(&env.service, "gated")
        .await
        .expect("prepare");
    env.service.execute_prepared(p).await.expect("drill");
    firedrill::switch::flip(
        env.store.as_ref(),
        Some("switched"),
        false,
        "maintenance over",
        &firedrill::audit::Actor::user("alice"),
    )
    .await
    .expect("release");
    firedrill::alerts::reset_breaker(
        &env.service,
        "unit-fix",
        "fixed the unit",
        &firedrill::audit::Actor::user("alice"),
    )
    .await
    .expect("reset");
    wait_until("the not-ready alert started after the drill", async || {
        runs_of(&env, "gated").await.iter().any(|r| !r.drill)
    })
    .await;
    wait_until("the halted alert started after the release", async || {
        !runs_of(&env, "switched").await.is_empty()
    })
    .await;
    wait_until(
        "the breaker-open alert started after the reset",
        async || runs_of(&env, "unit-fix").await.len() == 4,
    )
    .await;
}

/// firedrill raises its own alert in a real Alertmanager for a run waiting
/// for approval (who may approve, the command, a console link), read back
/// from Alertmanager's API; approved, the alert is resolved there. Both
/// deliveries are audited.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_awaiting_approval_is_raised_in_alertmanager_and_resolved_when_decided() {
    let env = TestEnv::new().await;
    env.publish(&[firedrill_tests::GATED]).await;
    let boss = env.token_of("boss", Role::Admin, &[], "alice").await;
    let carol = env.token_of("carol", Role::Approver, &[], "carol").await;
    let (url, state) = env.serve(ServerConfig::default()).await;
    let am = Alertmanager::start_alone().await;
    let config = firedrill::notify::NotifyConfig {
        console_url: Some("https://firedrill.example.com".into()),
        resend_s: 1,
        alertmanager: vec![firedrill::notify::AlertmanagerSink {
            url: am.url.clone(),
            token_secret: None,
            timeout_ms: 2000,
            events: Vec::new(),
            runbooks: Vec::new(),
        }],
        ..firedrill::notify::NotifyConfig::default()
    };
    let _notifier = firedrill::notify::spawn(
        env.service.clone(),
        state.alerts.clone(),
        &config,
        &firedrill::secret::EnvSecrets,
    )
    .expect("notify config")
    .expect("a notifier");
    let client = reqwest::Client::new();
    let started: serde_json::Value = client
        .post(format!("{url}/api/v1/runs"))
        .bearer_auth(&boss)
        .json(&json!({"runbook": "gated", "mode": "live", "force_untested": true}))
        .send()
        .await
        .expect("start")
        .json()
        .await
        .expect("json");
    let id = started["run_id"].as_str().expect("run id").to_string();
    let ours = async || -> Vec<serde_json::Value> {
        let all: serde_json::Value = client
            .get(format!("{}/api/v2/alerts", am.url))
            .send()
            .await
            .expect("alertmanager alerts")
            .json()
            .await
            .expect("json");
        all.as_array()
            .expect("alerts")
            .iter()
            .filter(|a| a["labels"]["run"] == id.as_str() && a["status"]["state"] == "active")
            .cloned()
            .collect()
    };
    wait_until("firedrill's alert in alertmanager", async || {
        !ours().await.is_empty()
    })
    .await;
    let alert = ours().await.remove(0);
    firedrill_tests::assert_awaiting_approval(&alert, &id);

    // Approved: the condition ends, and Alertmanager is told so.
    let approved = client
        .post(format!("{url}/api/v1/runs/{id}/approve"))
        .bearer_auth(&carol)
        .json(&json!({"comment": "go"}))
        .send()
        .await
        .expect("approve");
    assert!(approved.status().is_success());
    wait_until("the alert resolved in alertmanager", async || {
        ours().await.is_empty()
    })
    .await;
    wait_until("both deliveries audited", async || {
        !env.audited("notification.resolved").await.is_empty()
    })
    .await;
    let raised = env.audited("notification.raised").await;
    let mine: Vec<_> = raised
        .iter()
        .filter(|r| r.run_id.as_deref() == Some(id.as_str()))
        .collect();
    assert_eq!(
        mine.len(),
        1,
        "raised once however often re-sent: {raised:?}"
    );
    assert_eq!(mine[0].actor_id, "notifier");
    assert_eq!(mine[0].outcome, "awaiting-approval");
}
