//! End to end over real OpenSSH: the example fleet runbook
//! (`runbooks/fleet/restart-unit-fleet.yaml`) against five sshd "hosts" and
//! an HTTP health endpoint; dry-run leaves the fleet untouched, live
//! restarts exactly the hosts that were down; fan-out stops at max_errors;
//! an empty selector runs nothing.

use firedrill::Mode;
use firedrill::store::RunStatus;
use firedrill::transport::{HttpTarget, Inventory, RetryConfig, TargetSpec, TargetsConfig};
use firedrill_tests::sshd::Sshd;
use firedrill_tests::web::WebServer;
use firedrill_tests::{TestEnv, workspace_root};

struct Fleet {
    hosts: Vec<Sshd>,
    web: WebServer,
    env: TestEnv,
}

/// `web-1`..`web-n` (SSH, label role=web, group webs) and `lb` (HTTP).
async fn fleet(n: usize) -> Fleet {
    let hosts: Vec<Sshd> = (0..n).map(|_| Sshd::start()).collect();
    let web = WebServer::start().await;
    let mut extra = Inventory::default();
    let mut members = Vec::new();
    for (i, h) in hosts.iter().enumerate() {
        let name = format!("web-{}", i + 1);
        let mut spec = h.spec();
        spec.labels_mut().insert("role".into(), "web".into());
        extra.targets.insert(name.clone(), spec);
        members.push(name);
    }
    extra.groups.insert("webs".into(), members);
    extra.targets.insert(
        "lb".into(),
        TargetSpec::Http(HttpTarget {
            base_url: web.url(""),
            auth_secret: None,
            allow_private: true,
            labels: Default::default(),
        }),
    );
    let config = TargetsConfig {
        retry: RetryConfig {
            attempts: 2,
            base_delay_ms: 50,
            max_delay_ms: 100,
        },
        ..TargetsConfig::default()
    };
    let env = TestEnv::with_targets(extra, config).await;
    Fleet { hosts, web, env }
}

fn example() -> String {
    std::fs::read_to_string(workspace_root().join("runbooks/fleet/restart-unit-fleet.yaml"))
        .expect("example runbook")
}

fn active(h: &Sshd) -> bool {
    h.systemctl("is-active", "web")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn example_fleet_runbook_dry_run_then_live_restarts_only_the_down_hosts() {
    let f = fleet(5).await;
    for h in &f.hosts {
        assert!(h.systemctl("start", "web"));
    }
    // web-2 and web-4 are down.
    assert!(f.hosts[1].systemctl("stop", "web"));
    assert!(f.hosts[3].systemctl("stop", "web"));
    let inputs = [("unit", "web"), ("hosts", "webs")];

    let dry = f
        .env
        .run_text(&example(), Mode::DryRun, &inputs)
        .await
        .expect("dry-run");
    let run = f.env.store.run(&dry).await.expect("read").expect("run");
    assert_eq!(run.status, RunStatus::Succeeded, "{run:?}");
    // The plan: a simulated restart on exactly web-2 and web-4; nothing changed.
    let calls = f.env.store.host_calls(&dry).await.expect("calls");
    let mut planned: Vec<&str> = calls
        .iter()
        .filter(|c| c.call["simulated"] == true)
        .map(|c| c.target.as_str())
        .collect();
    planned.sort_unstable();
    assert_eq!(planned, ["web-2", "web-4"]);
    assert!(f.hosts.iter().all(|h| h.restarts("web") == 0));
    assert!(!active(&f.hosts[1]) && !active(&f.hosts[3]));

    let live = f
        .env
        .run_text(&example(), Mode::Live, &inputs)
        .await
        .expect("live");
    let run = f.env.store.run(&live).await.expect("read").expect("run");
    assert_eq!(run.status, RunStatus::Succeeded, "{run:?}");
    let restarts: Vec<usize> = f.hosts.iter().map(|h| h.restarts("web")).collect();
    assert_eq!(restarts, [0, 1, 0, 1, 0]);
    assert!(f.hosts.iter().all(active));
    // The health check went through the HTTP endpoint.
    let steps = f.env.store.steps(&live).await.expect("steps");
    let health = steps
        .iter()
        .find(|s| s.step_id == "health")
        .expect("health");
    assert_eq!(health.output.as_ref().expect("output")["status"], 200);
    assert!(f.web.requests() >= 2);
    // Sessions are pooled across steps and runs: one login per host for
    // two runs of three SSH steps each.
    for h in &f.hosts {
        assert_eq!(h.logins(), 1, "{}", h.log());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fan_out_over_five_hosts_stops_at_max_errors_with_the_failure_recorded() {
    let mut f = fleet(5).await;
    for h in &f.hosts {
        assert!(h.systemctl("start", "web"));
    }
    // web-3 is unreachable: its sshd is gone.
    f.hosts[2].kill();
    let text = "apiVersion: firedrill/v1\nname: rolling\nversion: 1\nsteps:\n  - id: status\n    kernel: service-status@1.0.0\n    targets: [\"label:role=web\"]\n    max_concurrency: 1\n    max_errors: 0\n    with: { unit: web }\n";
    let id = f.env.run_text(text, Mode::Live, &[]).await.expect("runs");
    let run = f.env.store.run(&id).await.expect("read").expect("run");
    assert_eq!(run.status, RunStatus::Failed);
    let statuses: Vec<(String, String)> = f
        .env
        .store
        .step_targets(&id)
        .await
        .expect("targets")
        .into_iter()
        .map(|t| (t.target, t.status.to_string()))
        .collect();
    assert_eq!(
        statuses,
        [
            ("web-1".to_string(), "succeeded".to_string()),
            ("web-2".into(), "succeeded".into()),
            ("web-3".into(), "failed".into()),
            ("web-4".into(), "not-started".into()),
            ("web-5".into(), "not-started".into()),
        ]
    );
    // web-4 and web-5 were never contacted.
    assert_eq!(f.hosts[3].logins(), 0);
    assert_eq!(f.hosts[4].logins(), 0);
    // The connection retry is in web-3's host call record and in the audit log.
    let calls = f.env.store.host_calls(&id).await.expect("calls");
    let failed = calls
        .iter()
        .find(|c| c.target == "web-3")
        .expect("web-3 call");
    assert_eq!(failed.call["outcome"], "failed");
    assert_eq!(failed.call["faults"]["retries"], 1);
    assert!(
        failed.call["reason"]
            .as_str()
            .is_some_and(|r| r.contains("after 2 connection attempts")),
        "{}",
        failed.call
    );
    let audit = f
        .env
        .store
        .audit(&firedrill::store::AuditFilter {
            run_id: Some(id.clone()),
            ..Default::default()
        })
        .await
        .expect("audit");
    assert!(
        audit.iter().any(|r| r.action == "host.call"
            && serde_json::from_str::<serde_json::Value>(&r.details)
                .is_ok_and(|d| d["faults"]["retries"] == 1)),
        "no audited retry"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_empty_selector_is_refused_and_no_host_is_contacted() {
    let f = fleet(2).await;
    let text = "apiVersion: firedrill/v1\nname: none\nversion: 1\nsteps:\n  - id: status\n    kernel: service-status@1.0.0\n    targets: [\"label:role=nothing\"]\n    with: { unit: web }\n";
    let id = f
        .env
        .run_text(text, Mode::Live, &[])
        .await
        .expect("recorded");
    let run = f.env.store.run(&id).await.expect("read").expect("run");
    assert_eq!(run.status, RunStatus::Failed);
    let steps = f.env.store.steps(&id).await.expect("steps");
    let error = steps[0].error.clone().unwrap_or_default();
    assert!(error.contains("empty"), "{error}");
    assert!(f.env.store.host_calls(&id).await.expect("calls").is_empty());
    assert!(f.hosts.iter().all(|h| h.logins() == 0));
}
