//! Drills and readiness: the scheduler with a fake clock (first schedule,
//! due, jitter bounds, never two at once, no double start across a restart,
//! a missed slot runs once, the switch respected), every readiness
//! transition for the exact version, rollback, the emergency policy for
//! live triggers, and `--force-untested` on the CLI.

use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use clap::Parser as _;
use firedrill::auth::Role;
use firedrill::drill::{DrillEvent, FakeClock, Readiness};
use firedrill::server::{AppState, ServerConfig};
use firedrill::store::{AuditFilter, RunFilter, RunStatus};
use firedrill_tests::{TestEnv, alertmanager_payload};
use serde_json::json;

/// A live drill every hour (up to 10 minutes late), on a gate: the drill
/// waits for `<dir>/go`, so a test decides when it finishes.
fn gated(version: u32, dir: &std::path::Path) -> String {
    format!(
        r#"apiVersion: firedrill/v1
name: gated
version: {version}
inputs: {{ type: object, properties: {{ dir: {{ type: string }} }} }}
steps:
  - id: wait
    kernel: hostile@0.1.0
    targets: [demo-host]
    with: {{ behaviour: wait-for, path: "{{{{ inputs.dir }}}}" }}
drill:
  every: 1h
  jitter: 10m
  mode: live
  inputs: {{ dir: "{}" }}
  max_age: 3h
"#,
        dir.display()
    )
}

/// A runbook whose drill succeeds or fails by input, with a live trigger.
fn probe(version: u32, mode: &str, fail: bool, policy: Option<&str>) -> String {
    let behaviour = if fail { "fail" } else { "ok" };
    let policy = policy
        .map(|p| format!("readiness_policy: {p}\n"))
        .unwrap_or_default();
    format!(
        r#"apiVersion: firedrill/v1
name: probe
version: {version}
steps:
  - id: one
    kernel: hostile@0.1.0
    targets: [demo-host]
    with: {{ behaviour: {behaviour} }}
drill:
  every: 1h
  mode: {mode}
  max_age: 2h
triggers:
  - source: alertmanager
    match: {{ alertname: ProbeDown }}
    mode: live
    key: "{{{{ alert.fingerprint }}}}"
    cooldown: 1s
    breaker: 0
{policy}"#
    )
}

struct Drills {
    env: TestEnv,
    clock: Arc<FakeClock>,
    state: AppState,
}

impl Drills {
    async fn new() -> Self {
        let env = TestEnv::new().await;
        let clock = Arc::new(FakeClock::new(SystemTime::now()));
        let state = AppState::with_clock(
            env.service.clone(),
            ServerConfig {
                drills: false,
                ..ServerConfig::default()
            },
            clock.clone(),
        );
        Drills { env, clock, state }
    }

    async fn tick(&self) -> Vec<DrillEvent> {
        self.state.drill_tick().await.expect("tick")
    }

    async fn wait(&self, id: &str) -> RunStatus {
        for _ in 0..600 {
            if let Some(r) = self.env.store.run(id).await.expect("read")
                && !r.status.is_pending()
            {
                return r.status;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("run {id} did not finish");
    }

    async fn state_of(&self, runbook: &str) -> Readiness {
        firedrill::drill::readiness(&self.env.service, self.clock.now_for_test())
            .await
            .expect("readiness")
            .into_iter()
            .find(|r| r.runbook == runbook)
            .expect("runbook")
            .state
    }

    async fn due(&self, runbook: &str) -> SystemTime {
        let row = self
            .env
            .store
            .drill_schedules()
            .await
            .expect("schedules")
            .into_iter()
            .find(|s| s.runbook == runbook)
            .expect("scheduled");
        humantime::parse_rfc3339_weak(&row.next_due_at).expect("time")
    }

    async fn drill_runs(&self) -> usize {
        self.env
            .store
            .runs(&RunFilter::default())
            .await
            .expect("runs")
            .iter()
            .filter(|r| r.drill)
            .count()
    }
}

/// The fake clock's time, without importing the trait in every test.
trait Now {
    fn now_for_test(&self) -> SystemTime;
}

impl Now for FakeClock {
    fn now_for_test(&self) -> SystemTime {
        use firedrill::drill::Clock as _;
        self.now()
    }
}

fn started(events: &[DrillEvent]) -> Vec<String> {
    events
        .iter()
        .filter_map(|e| match e {
            DrillEvent::Started { run_id, .. } => Some(run_id.clone()),
            _ => None,
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_scheduler_runs_due_drills_once_with_jitter_and_never_two_at_once() {
    let d = Drills::new().await;
    let gate = d.env.home.path().join("gate");
    std::fs::create_dir_all(&gate).expect("gate");
    d.env.publish(&[&gated(1, &gate)]).await;
    let t0 = d.clock.now_for_test();

    // First sight: scheduled within the jitter, nothing started.
    let events = d.tick().await;
    assert!(
        matches!(events.as_slice(), [DrillEvent::Scheduled { .. }]),
        "{events:?}"
    );
    let first_due = d.due("gated").await;
    assert!(first_due >= t0 && first_due <= t0 + Duration::from_secs(600));
    assert_eq!(d.state_of("gated").await, Readiness::NeverDrilled);

    // Due: one drill starts, as scheduler:drill, marked as a drill.
    d.clock.advance(Duration::from_secs(601));
    let ids = started(&d.tick().await);
    assert_eq!(ids.len(), 1);
    let id = ids[0].clone();
    let next = d.due("gated").await;
    let base = first_due + Duration::from_secs(3600);
    assert!(
        next >= base && next <= base + Duration::from_secs(600),
        "next drill within [due + 1h, due + 1h + jitter]"
    );
    // Overdue (several slots) while the first still runs: busy, not a
    // second drill.
    d.clock.advance(Duration::from_secs(5 * 3600));
    for _ in 0..3 {
        let events = d.tick().await;
        assert!(started(&events).is_empty(), "{events:?}");
    }
    assert_eq!(d.drill_runs().await, 1);
    std::fs::write(gate.join("go"), "").expect("go");
    assert_eq!(d.wait(&id).await, RunStatus::Succeeded);
    let run = d.env.store.run(&id).await.expect("read").expect("run");
    assert!(run.drill);
    assert_eq!(run.actor, "scheduler:drill");
    assert_eq!(run.mode, "live");
    let run_started = d
        .env
        .store
        .audit(&AuditFilter {
            run_id: Some(id.clone()),
            action: Some("run.started".into()),
            ..AuditFilter::default()
        })
        .await
        .expect("audit");
    let details: serde_json::Value = serde_json::from_str(&run_started[0].details).expect("json");
    assert_eq!(details["drill"], true, "marked as a drill in the audit log");

    // A restart (a new server on the same store) finds the drill due (its
    // slots were missed while busy) and starts it once, not once per slot;
    // the next is a full interval (plus jitter) from now.
    let restarted = AppState::with_clock(
        d.env.service.clone(),
        ServerConfig {
            drills: false,
            ..ServerConfig::default()
        },
        d.clock.clone(),
    );
    let ids = started(&restarted.drill_tick().await.expect("tick"));
    assert_eq!(ids.len(), 1);
    assert_eq!(d.wait(&ids[0]).await, RunStatus::Succeeded);
    let now = d.clock.now_for_test();
    let next = d.due("gated").await;
    assert!(
        next >= now + Duration::from_secs(3600) && next <= now + Duration::from_secs(4200),
        "next slot from now, not in the past"
    );
    assert!(started(&d.tick().await).is_empty());
    assert!(started(&restarted.drill_tick().await.expect("tick")).is_empty());
    assert_eq!(d.drill_runs().await, 2);

    // Two schedulers at the same due time (two nodes, or a tick racing a
    // restart): one drill.
    d.clock.advance(Duration::from_secs(2 * 3600));
    let (a, b) = tokio::join!(d.tick(), restarted.drill_tick());
    let total = started(&a).len() + started(&b.expect("tick")).len();
    assert_eq!(total, 1);

    // The big red switch: a live drill that is due is skipped and recorded.
    for id in d
        .env
        .store
        .runs(&RunFilter::default())
        .await
        .expect("runs")
        .iter()
        .map(|r| r.id.clone())
    {
        d.wait(&id).await;
    }
    // ...and until both servers have let go of them.
    for _ in 0..600 {
        if d.state.executing_runs() == 0 && restarted.executing_runs() == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    firedrill::switch::flip(
        d.env.store.as_ref(),
        None,
        true,
        "maintenance",
        &firedrill::audit::Actor::user("oncall"),
    )
    .await
    .expect("engage");
    d.clock.advance(Duration::from_secs(2 * 3600));
    let events = d.tick().await;
    assert!(
        matches!(events.as_slice(), [DrillEvent::Skipped { reason, .. }] if reason.contains("halted")),
        "{events:?}"
    );
    let skipped = d
        .env
        .store
        .audit(&AuditFilter {
            action: Some("drill.skipped".into()),
            ..AuditFilter::default()
        })
        .await
        .expect("audit");
    assert_eq!(skipped.len(), 1);
    assert_eq!(d.drill_runs().await, 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readiness_follows_the_exact_version_through_drills_publishes_and_rollback() {
    let d = Drills::new().await;
    let service = &d.env.service;
    let drill_now = |name: &'static str| async move {
        let p = firedrill::drill::prepare_drill(service, name)
            .await
            .expect("prepare");
        service.execute_prepared(p).await.expect("drill")
    };
    // v1 drills in dry-run only: less proven.
    d.env.publish(&[&probe(1, "dry-run", false, None)]).await;
    assert_eq!(d.state_of("probe").await, Readiness::NeverDrilled);
    drill_now("probe").await;
    assert_eq!(d.state_of("probe").await, Readiness::DryRunOnly);
    // v2 drills live: ready; then too old: stale.
    d.env.publish(&[&probe(2, "live", false, None)]).await;
    assert_eq!(d.state_of("probe").await, Readiness::NeverDrilled);
    drill_now("probe").await;
    assert_eq!(d.state_of("probe").await, Readiness::Ready);
    let real = d.clock.now_for_test();
    d.clock.advance(Duration::from_secs(3 * 3600));
    assert_eq!(d.state_of("probe").await, Readiness::Stale);
    // Back to the real time: later drills finish "now".
    d.clock.set(real);
    // v3's drill fails: failing, with the reason.
    d.env.publish(&[&probe(3, "live", true, None)]).await;
    drill_now("probe").await;
    let rows = firedrill::drill::readiness(service, d.clock.now_for_test())
        .await
        .expect("readiness");
    let row = rows.iter().find(|r| r.runbook == "probe").expect("probe");
    assert_eq!(row.state, Readiness::Failing);
    assert_eq!(row.version, 3);
    assert!(row.last_failure.as_deref().is_some_and(|f| !f.is_empty()));
    // Roll back to v2, which passed a live drill within max_age: ready at
    // once, for v2's code.
    service
        .rollback_runbook(
            "probe",
            2,
            &firedrill::audit::Actor::user("oncall"),
            "v3 fails its drill",
        )
        .await
        .expect("rollback");
    assert_eq!(d.state_of("probe").await, Readiness::Ready);
    let current = d
        .env
        .store
        .runbook("probe", None)
        .await
        .expect("read")
        .expect("row");
    assert_eq!(current.version, 2);
    // Publishing v4 ends the rollback: v4 is current and never drilled.
    d.env.publish(&[&probe(4, "live", false, None)]).await;
    assert_eq!(d.state_of("probe").await, Readiness::NeverDrilled);
    // Rolling back to a version that passed recently is ready immediately.
    service
        .rollback_runbook(
            "probe",
            2,
            &firedrill::audit::Actor::user("oncall"),
            "back again",
        )
        .await
        .expect("rollback");
    assert_eq!(d.state_of("probe").await, Readiness::Ready);
    let rolled = d
        .env
        .store
        .audit(&AuditFilter {
            action: Some("runbook.rolled-back".into()),
            ..AuditFilter::default()
        })
        .await
        .expect("audit");
    assert_eq!(rolled.len(), 2);
    let published = d.env.audited("runbook.published").await;
    let versions: Vec<&str> = published
        .iter()
        .filter_map(|r| r.subject.strip_prefix("runbook:probe@"))
        .collect();
    assert_eq!(versions, ["1", "2", "3", "4"], "{published:?}");
    assert!(
        published.iter().all(|r| r.actor_id == "admin"),
        "{published:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_triggers_of_untested_runbooks_follow_the_readiness_policy() {
    let env = TestEnv::new().await;
    let token = env.token("am", Role::Webhook, &[]).await;
    let (url, _) = env
        .serve(ServerConfig {
            drills: false,
            ..ServerConfig::default()
        })
        .await;
    let client = reqwest::Client::new();
    let post = |fp: &'static str| {
        let client = client.clone();
        let url = url.clone();
        let token = token.clone();
        async move {
            let body = alertmanager_payload(&[(fp, json!({"alertname": "ProbeDown"}))]);
            let answer: serde_json::Value = client
                .post(format!("{url}/api/v1/alerts/alertmanager"))
                .bearer_auth(&token)
                .json(&body)
                .send()
                .await
                .expect("send")
                .json()
                .await
                .expect("json");
            answer["decisions"][0].clone()
        }
    };
    // Default policy (block): never drilled, nothing runs, the answer says why.
    env.publish(&[&probe(1, "live", false, None)]).await;
    let d = post("aa01").await;
    assert_eq!(d["outcome"], "not-ready", "{d}");
    assert_eq!(d["state"], "never-drilled");
    assert!(
        env.store
            .runs(&RunFilter::default())
            .await
            .expect("runs")
            .is_empty()
    );
    // After a passing live drill: it runs.
    let p = firedrill::drill::prepare_drill(&env.service, "probe")
        .await
        .expect("prepare");
    env.service.execute_prepared(p).await.expect("drill");
    assert_eq!(post("aa02").await["outcome"], "started");
    // warn: an untested version runs, and the audit log says so.
    env.publish(&[&probe(2, "live", false, Some("warn"))]).await;
    assert_eq!(post("aa03").await["outcome"], "started");
    let untested = env
        .store
        .audit(&AuditFilter {
            action: Some("run.untested".into()),
            ..AuditFilter::default()
        })
        .await
        .expect("audit");
    assert_eq!(untested.len(), 1);
    assert_eq!(untested[0].outcome, "never-drilled");
    // Through the API, a live run of the untested v2 needs force_untested.
    let ops = env.token("ops", Role::Operator, &[]).await;
    let start = |force: bool| {
        client
            .post(format!("{url}/api/v1/runs"))
            .bearer_auth(&ops)
            .json(&json!({"runbook": "probe", "mode": "live", "force_untested": force}))
            .send()
    };
    let refused = start(false).await.expect("send");
    assert_eq!(refused.status(), 409);
    let err: serde_json::Value = refused.json().await.expect("json");
    assert_eq!(err["error"]["code"], "not-ready");
    assert_eq!(start(true).await.expect("send").status(), 202);
    let forced = env
        .store
        .audit(&AuditFilter {
            action: Some("run.untested".into()),
            actor: Some("token:ops".into()),
            ..AuditFilter::default()
        })
        .await
        .expect("audit");
    assert_eq!(forced.len(), 1);
    // A drill run by hand through the API (operator), then the status.
    let resp = client
        .post(format!("{url}/api/v1/drills/probe/run"))
        .bearer_auth(&ops)
        .send()
        .await
        .expect("send");
    assert_eq!(resp.status(), 202);
    let id = resp.json::<serde_json::Value>().await.expect("json")["run_id"]
        .as_str()
        .expect("id")
        .to_string();
    let requested = env.audited("drill.requested").await;
    let record = requested
        .iter()
        .find(|r| r.details.contains(&id))
        .expect("drill.requested names the run");
    assert_eq!(
        (record.subject.as_str(), record.actor_id.as_str()),
        ("runbook:probe", "ops")
    );
    for _ in 0..600 {
        if env
            .store
            .run(&id)
            .await
            .expect("read")
            .is_some_and(|r| !r.status.is_pending())
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let status: serde_json::Value = client
        .get(format!("{url}/api/v1/drills"))
        .bearer_auth(&ops)
        .send()
        .await
        .expect("send")
        .json()
        .await
        .expect("json");
    assert_eq!(status["runbooks"][0]["state"], "ready", "{status}");
    let metrics = client
        .get(format!("{url}/metrics"))
        .bearer_auth(&ops)
        .send()
        .await
        .expect("send")
        .text()
        .await
        .expect("text");
    assert!(
        metrics.contains("firedrill_runbook_ready{runbook=\"probe\"} 1"),
        "{metrics}"
    );
    assert!(metrics.contains("firedrill_drill_age_seconds{runbook=\"probe\"}"));
    assert!(metrics.contains(
        "firedrill_runs_started_total{runbook=\"probe\",mode=\"live\",trigger=\"drill\"}"
    ));
    // The shipped Prometheus rules use only metrics firedrill serves.
    let rules = std::fs::read_to_string(
        firedrill_tests::workspace_root().join("deploy/prometheus/firedrill-rules.yml"),
    )
    .expect("rules");
    let parsed: serde_json::Value = serde_yaml::from_str(&rules).expect("rules are YAML");
    let exprs: Vec<&str> = parsed["groups"][0]["rules"]
        .as_array()
        .expect("rules")
        .iter()
        .map(|r| r["expr"].as_str().expect("expr"))
        .collect();
    assert_eq!(exprs.len(), 3);
    for expr in exprs {
        for word in expr.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_')) {
            if word.starts_with("firedrill_") {
                assert!(
                    metrics.contains(&format!("\n{word}{{")),
                    "{word} is not served"
                );
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_refuses_live_runs_of_untested_runbooks_unless_forced() {
    let env = TestEnv::new().await;
    env.publish(&[&probe(1, "live", false, None)]).await;
    let home = env.home.path().display().to_string();
    let cli = |args: &[&str]| {
        let mut all = vec!["firedrill", "--home", home.as_str(), "--actor", "alice"];
        all.extend_from_slice(args);
        firedrill::cli::Cli::try_parse_from(all).expect("args")
    };
    let code = firedrill::cli::run(cli(&["run", "probe", "--live"]))
        .await
        .expect("cli");
    assert_eq!(code, ExitCode::from(2));
    assert!(
        env.store
            .runs(&RunFilter::default())
            .await
            .expect("runs")
            .is_empty()
    );
    // Dry-runs are never refused for readiness.
    let code = firedrill::cli::run(cli(&["run", "probe"]))
        .await
        .expect("cli");
    assert_eq!(code, ExitCode::SUCCESS);
    let code = firedrill::cli::run(cli(&["run", "probe", "--live", "--force-untested"]))
        .await
        .expect("cli");
    assert_eq!(code, ExitCode::SUCCESS);
    let forced = env
        .store
        .audit(&AuditFilter {
            action: Some("run.untested".into()),
            ..AuditFilter::default()
        })
        .await
        .expect("audit");
    assert_eq!(forced.len(), 1);
    assert_eq!(forced[0].actor_id, "alice");
    // `drill run` then `drill status`: ready, and a live run needs no force.
    let code = firedrill::cli::run(cli(&["drill", "run", "probe"]))
        .await
        .expect("cli");
    assert_eq!(code, ExitCode::SUCCESS);
    let code = firedrill::cli::run(cli(&["run", "probe", "--live"]))
        .await
        .expect("cli");
    assert_eq!(code, ExitCode::SUCCESS);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drill_specs_are_validated_before_publish() {
    let env = TestEnv::new().await;
    let base = "apiVersion: firedrill/v1\nname: v\nversion: 1\ninputs: { type: object, required: [unit], properties: { unit: { type: string } } }\nsteps:\n  - id: one\n    kernel: trivial@0.1.0\n    targets: [demo-host]\n";
    for (drill, needle) in [
        ("drill: { max_age: 1h }", "exactly one of `every`"),
        (
            "drill: { every: 1h, cron: \"0 * * * *\", max_age: 3h, inputs: { unit: web } }",
            "exactly one of `every`",
        ),
        (
            "drill: { cron: \"every day\", max_age: 3h, inputs: { unit: web } }",
            "not a cron expression",
        ),
        (
            "drill: { every: 10s, max_age: 3h, inputs: { unit: web } }",
            "at most every minute",
        ),
        (
            "drill: { every: 1h, jitter: 2h, max_age: 9h, inputs: { unit: web } }",
            "jitter is longer",
        ),
        (
            "drill: { every: 6h, max_age: 1h, inputs: { unit: web } }",
            "would go stale",
        ),
        ("drill: { every: 1h, max_age: 3h }", "drill inputs"),
        (
            "drill: { every: 1h, max_age: 3h, inputs: { unit: web }, mode: sometimes }",
            "mode",
        ),
    ] {
        let text = format!("{base}{drill}\n");
        let err = env
            .service
            .validate("v.yaml", &text)
            .await
            .expect_err(drill)
            .to_string();
        assert!(err.contains(needle), "{drill}: {err}");
    }
    let ok = format!(
        "{base}drill: {{ cron: \"0 */6 * * *\", jitter: 5m, max_age: 13h, inputs: {{ unit: web }} }}\n"
    );
    env.service.validate("v.yaml", &ok).await.expect("valid");
}

/// A live drill waits at an approval step like any live run: neither the
/// scheduler nor an operator asking for a drill may pass a gate that needs
/// another person (the drill would otherwise make the change behind it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_live_drill_waits_for_approval_like_any_live_run() {
    let d = Drills::new().await;
    d.env
        .publish(&[r#"apiVersion: firedrill/v1
name: gated-change
version: 1
steps:
  - id: ask
    approval: { required: 1, timeout: 10m, reason: "a person checks first" }
  - id: act
    kernel: hostile@0.1.0
    targets: [demo-host]
    with: { behaviour: ok }
drill:
  every: 1h
  mode: live
  max_age: 2h
"#])
        .await;
    let prepared = firedrill::drill::prepare_drill(&d.env.service, "gated-change")
        .await
        .expect("a drill");
    let id = d.state.admit(prepared).await.expect("admitted");
    let mut status = RunStatus::Queued;
    for _ in 0..600 {
        status = d
            .env
            .store
            .run(&id)
            .await
            .expect("read")
            .expect("run")
            .status;
        if status != RunStatus::Queued && status != RunStatus::Running {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        status,
        RunStatus::AwaitingApproval,
        "the drill did not wait"
    );
    let steps = d.env.store.steps(&id).await.expect("steps");
    assert!(
        steps.iter().all(|s| s.step_id != "act"),
        "the step behind the gate ran: {steps:?}"
    );
    d.env
        .service
        .cancel(&id, &firedrill::audit::Actor::user("alice"), "test over")
        .await
        .expect("cancel");
    assert_eq!(d.wait(&id).await, RunStatus::Cancelled);
}
