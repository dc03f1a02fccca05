//! Several `firedrill serve` processes on one database, and crashes: real
//! node processes on a shared home (SQLite in WAL mode, the same store
//! code every backend implements), killed with SIGKILL, paused with
//! SIGSTOP, or aborted at a failpoint after each durable transition. What
//! the target saw is counted on the target: the `ledger` kernel is not
//! idempotent and appends one line per execution (`tests/bin/ledger`).

use std::collections::{BTreeMap, HashSet};
use std::time::{Duration, Instant};

use firedrill::audit::Actor;
use firedrill::store::{AuditFilter, RunFilter, RunStatus, StepStatus};
use firedrill_tests::nodes::{Node, config, queue};
use firedrill_tests::{TestEnv, guest_bytes};

/// Short leases, so takeovers happen within a test (light load only: a
/// lease must outlast the slowest store write under load).
const SHORT: (u64, u64) = (1500, 300);

/// One step: append this run's id to the ledger (optionally slowly).
fn ledger_runbook(name: &str, before_ms: u64) -> String {
    format!(
        "apiVersion: firedrill/v1\nname: {name}\nversion: 1\nsteps:\n  - id: probe\n    kernel: trivial@0.1.0\n    targets: [demo-host]\n  - id: append\n    kernel: ledger@0.1.0\n    targets: [demo-host]\n    with: {{ entry: \"{{{{ run.id }}}}\", before_ms: {before_ms} }}\n    timeout: 60s\n"
    )
}

async fn env_with_ledger(runbooks: &[&str], (lease_ms, heartbeat_ms): (u64, u64)) -> TestEnv {
    let env = TestEnv::new().await;
    firedrill_tests::nodes::append_config(&env, &config(lease_ms, heartbeat_ms));
    env.service
        .registry()
        .publish(
            env.service.host(),
            &guest_bytes("test-kernel-ledger"),
            &Actor::user("publisher"),
        )
        .await
        .expect("publish ledger");
    env.publish(runbooks).await;
    env
}

/// The ledger on the target: entry -> how many times it was appended.
fn ledger(env: &TestEnv) -> BTreeMap<String, usize> {
    let mut counts = BTreeMap::new();
    if let Ok(text) = std::fs::read_to_string(env.demo_state().join("ledger")) {
        for line in text.lines() {
            *counts.entry(line.to_string()).or_insert(0) += 1;
        }
    }
    counts
}

/// Wait (up to a minute) for `node` to abort at failpoint `point`.
async fn crashed(node: &mut Node, point: &str) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !node.exited() {
        assert!(
            Instant::now() < deadline,
            "the node never reached failpoint {point} (is the `failpoints` feature on?)"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Wait until every run in `ids` satisfies `done`; returns their statuses.
async fn wait_all(
    env: &TestEnv,
    ids: &[String],
    within: Duration,
    done: impl Fn(RunStatus) -> bool,
) -> Vec<RunStatus> {
    let deadline = Instant::now() + within;
    loop {
        let mut statuses = Vec::with_capacity(ids.len());
        for id in ids {
            statuses.push(env.store.run(id).await.expect("read").expect("run").status);
        }
        if statuses.iter().all(|s| done(*s)) {
            return statuses;
        }
        assert!(
            Instant::now() < deadline,
            "runs did not settle within {within:?}: {statuses:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn actions(env: &TestEnv, run_id: &str) -> Vec<(String, String)> {
    env.store
        .audit(&AuditFilter {
            run_id: Some(run_id.to_string()),
            limit: 10_000,
            ..AuditFilter::default()
        })
        .await
        .expect("audit")
        .into_iter()
        .map(|r| (r.action, format!("{}:{}", r.actor_kind, r.actor_id)))
        .collect()
}

async fn chain_verifies(env: &TestEnv) {
    let report = firedrill::store::verify_store(env.store.as_ref())
        .await
        .expect("verify");
    assert!(report.first_bad.is_none(), "audit chain: {report:?}");
}

/// Wait until every run in `ids` has recorded its `append` step's intent.
/// SIGSTOP `node`, but not while it holds SQLite's write lock: a process
/// frozen inside a write transaction blocks every other writer of the file
/// until it runs again (a limit of one SQLite file shared by processes;
/// PostgreSQL is the backend for several nodes). Under load that was hit
/// in one of two full runs: the other node could not even take over. So:
/// pause, and if the file cannot be written, let it run a moment and
/// pause again. On PostgreSQL, a plain pause.
async fn pause_outside_a_write(env: &TestEnv, node: &Node) {
    use nix::sys::signal::Signal;
    use sqlx::Connection as _;
    for _ in 0..100 {
        node.signal(Signal::SIGSTOP);
        if env.database.is_some() {
            return;
        }
        let options = sqlx::sqlite::SqliteConnectOptions::new()
            .filename(env.home.path().join("firedrill.db"))
            .busy_timeout(Duration::from_millis(0));
        let mut probe = sqlx::SqliteConnection::connect_with(&options)
            .await
            .expect("open the store file");
        let writable = sqlx::query("BEGIN IMMEDIATE")
            .execute(&mut probe)
            .await
            .is_ok();
        if writable {
            let _ = sqlx::query("ROLLBACK").execute(&mut probe).await;
            return;
        }
        node.signal(Signal::SIGCONT);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("the node was inside a write every time it was paused");
}

async fn wait_for_intent(env: &TestEnv, ids: &[String]) {
    let deadline = Instant::now() + Duration::from_secs(60);
    for id in ids {
        loop {
            let steps = env.store.steps(id).await.expect("steps");
            if steps
                .iter()
                .any(|s| s.step_id == "append" && s.status == StepStatus::Running)
            {
                break;
            }
            assert!(Instant::now() < deadline, "run {id} never reached `append`");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_execute_a_thousand_queued_runs_exactly_once() {
    let env = env_with_ledger(&[&ledger_runbook("append", 0)], (15_000, 3_000)).await;
    let ids = queue(&env, "append", 1000).await;
    let a = Node::start(&env, None);
    let b = Node::start(&env, None);
    let statuses = wait_all(&env, &ids, Duration::from_secs(300), |s| !s.is_pending()).await;
    for (id, status) in ids.iter().zip(&statuses) {
        if *status != RunStatus::Succeeded {
            let run = env.store.run(id).await.expect("read").expect("run");
            let steps = env.store.steps(id).await.expect("steps");
            panic!(
                "run {id} ended {status:?}: {:?}; steps: {steps:?}",
                run.error
            );
        }
    }
    let counts = ledger(&env);
    assert_eq!(counts.len(), 1000, "one ledger entry per run");
    for id in &ids {
        assert_eq!(counts.get(id), Some(&1), "run {id} appended exactly once");
    }
    // Both nodes took part, and each run was claimed once.
    let runs = env
        .store
        .runs(&RunFilter {
            limit: 10_000,
            ..RunFilter::default()
        })
        .await
        .expect("runs");
    let owners: HashSet<_> = runs.iter().filter_map(|r| r.owner.clone()).collect();
    assert_eq!(owners.len(), 2, "both nodes executed runs: {owners:?}");
    assert!(
        runs.iter().all(|r| r.epoch == 1),
        "no run was claimed twice"
    );
    chain_verifies(&env).await;
    drop((a, b));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_nodes_runs_are_taken_over_and_the_unsafe_step_waits_for_a_person() {
    let env = env_with_ledger(&[&ledger_runbook("slow", 3000)], SHORT).await;
    let ids = queue(&env, "slow", 3).await;
    let mut a = Node::start(&env, None);
    wait_for_intent(&env, &ids).await;
    a.kill9();
    let first_owner = env
        .store
        .run(&ids[0])
        .await
        .expect("read")
        .expect("run")
        .owner;
    let _b = Node::start(&env, None);
    // After the lease expires, the other node takes each run over; the
    // `append` step had started and its kernel is not idempotent.
    let statuses = wait_all(&env, &ids, Duration::from_secs(60), |s| {
        s == RunStatus::NeedsAttention
    })
    .await;
    assert_eq!(statuses.len(), 3);
    assert!(
        ledger(&env).is_empty(),
        "nothing was appended: {:?}",
        ledger(&env)
    );
    let run = env.store.run(&ids[0]).await.expect("read").expect("run");
    assert_ne!(run.owner, first_owner, "another node holds it now");
    assert!(run.epoch >= 2, "a takeover increments the epoch");
    let error = run.error.expect("why");
    assert!(
        error.contains("`append`") && error.contains("not idempotent"),
        "{error}"
    );
    let acts = actions(&env, &ids[0]).await;
    let names: Vec<&str> = acts.iter().map(|(a, _)| a.as_str()).collect();
    assert!(names.contains(&"run.taken-over"), "{names:?}");
    assert!(names.contains(&"run.needs-attention"), "{names:?}");

    // A person decides: resume one (run the step again), skip one, abandon one.
    let person = Actor::user("oncall-2");
    let p = env
        .service
        .prepare_resume(&ids[0], &person, "checked: nothing was appended")
        .await
        .expect("resume");
    env.service.enqueue(p, None).await.expect("queued");
    let p = env
        .service
        .prepare_skip(&ids[1], &person, "appended by hand")
        .await
        .expect("skip");
    env.service.enqueue(p, None).await.expect("queued");
    env.service
        .abandon(&ids[2], &person, "not needed any more")
        .await
        .expect("abandon");
    let statuses = wait_all(&env, &ids, Duration::from_secs(60), |s| !s.is_pending()).await;
    assert_eq!(
        statuses,
        vec![
            RunStatus::Succeeded,
            RunStatus::Succeeded,
            RunStatus::Abandoned
        ]
    );
    let counts = ledger(&env);
    assert_eq!(counts.get(&ids[0]), Some(&1), "resumed: appended once");
    assert_eq!(counts.get(&ids[1]), None, "skipped: not appended");
    assert_eq!(counts.get(&ids[2]), None, "abandoned: not appended");
    let steps = env.store.steps(&ids[1]).await.expect("steps");
    let skipped = steps.iter().find(|s| s.step_id == "append").expect("step");
    assert_eq!(skipped.status, StepStatus::Skipped);
    assert!(
        skipped
            .error
            .as_deref()
            .is_some_and(|e| e.contains("user:oncall-2")),
        "{skipped:?}"
    );
    let acts = actions(&env, &ids[1]).await;
    assert!(
        acts.iter()
            .any(|(a, who)| a == "run.step-skipped" && who == "user:oncall-2"),
        "{acts:?}"
    );
    chain_verifies(&env).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_queued_run_cancelled_before_a_node_claims_it_never_runs() {
    let env = env_with_ledger(&[&ledger_runbook("queued", 0)], SHORT).await;
    let ids = queue(&env, "queued", 2).await;
    env.service
        .cancel(&ids[0], &Actor::user("oncall"), "not needed any more")
        .await
        .expect("cancel");
    let run = env.store.run(&ids[0]).await.expect("read").expect("run");
    assert_eq!(run.status, RunStatus::Cancelled);
    assert!(
        run.error
            .as_deref()
            .is_some_and(|e| e.contains("cancelled before it started")),
        "{:?}",
        run.error
    );
    let _a = Node::start(&env, None);
    let statuses = wait_all(&env, &ids, Duration::from_secs(60), |s| !s.is_pending()).await;
    assert_eq!(statuses, vec![RunStatus::Cancelled, RunStatus::Succeeded]);
    let counts = ledger(&env);
    assert_eq!(counts.get(&ids[0]), None, "cancelled: not appended");
    assert_eq!(counts.get(&ids[1]), Some(&1), "the other: appended once");
    let cancelled = env.audited("run.cancelled").await;
    let record = cancelled
        .iter()
        .find(|r| r.run_id.as_deref() == Some(ids[0].as_str()))
        .expect("run.cancelled");
    assert_eq!(
        (record.actor_id.as_str(), record.outcome.as_str()),
        ("oncall", "cancelled")
    );
    let acts = actions(&env, &ids[0]).await;
    assert!(!acts.iter().any(|(a, _)| a == "run.claimed"), "{acts:?}");
    chain_verifies(&env).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_node_past_its_lease_cannot_change_or_record_anything() {
    let env = env_with_ledger(&[&ledger_runbook("paused", 2500)], SHORT).await;
    let ids = queue(&env, "paused", 1).await;
    let a = Node::start(&env, None);
    wait_for_intent(&env, &ids).await;
    pause_outside_a_write(&env, &a).await;
    let _b = Node::start(&env, None);
    wait_all(&env, &ids, Duration::from_secs(60), |s| {
        s == RunStatus::NeedsAttention
    })
    .await;
    let before = env.store.audit_page(0, 100_000).await.expect("audit").len();
    // Wake the paused node: its kernel finishes sleeping and tries the
    // change; its lease is gone, so the change is refused and every write
    // it attempts is fenced off.
    a.signal(nix::sys::signal::Signal::SIGCONT);
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert!(ledger(&env).is_empty(), "the paused node changed nothing");
    let run = env.store.run(&ids[0]).await.expect("read").expect("run");
    assert_eq!(run.status, RunStatus::NeedsAttention, "not overwritten");
    let after = env.store.audit_page(0, 100_000).await.expect("audit");
    assert_eq!(
        after.len(),
        before,
        "no late record from the paused node: {:?}",
        &after[before..]
    );
    let steps = env.store.steps(&ids[0]).await.expect("steps");
    let append = steps.iter().find(|s| s.step_id == "append").expect("step");
    assert_eq!(
        append.status,
        StepStatus::Running,
        "its late result was rejected"
    );
    chain_verifies(&env).await;
}

/// For each durable transition in turn: a node aborts right after it,
/// another node (or the restarted one) picks the run up. Afterwards the
/// store opens, the chain verifies, every run is terminal or needs
/// attention, and no non-idempotent change ran twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_at_every_durable_transition_loses_nothing_and_repeats_no_change() {
    let env = env_with_ledger(&[&ledger_runbook("crashy", 0)], SHORT).await;
    let points: Vec<String> = firedrill::store::TRANSITIONS
        .iter()
        // Not on this runbook's path: admission happens in the test
        // process, and there is no approval, takeover or long step.
        .filter(|t| {
            !matches!(
                **t,
                "enqueue-run" | "take-over" | "renew-lease" | "transition-run"
            )
        })
        .map(|t| format!("store.after.{t}"))
        .chain(["host.before-change".into(), "host.after-change".into()])
        .collect();
    let mut all = Vec::new();
    for point in &points {
        let ids = queue(&env, "crashy", 1).await;
        let mut crashing = Node::start(&env, Some(&format!("{point}=return")));
        crashed(&mut crashing, point).await;
        let recovery = Node::start(&env, None);
        let statuses = wait_all(&env, &ids, Duration::from_secs(60), |s| {
            !s.is_pending() || s == RunStatus::NeedsAttention
        })
        .await;
        assert!(
            matches!(
                statuses[0],
                RunStatus::Succeeded | RunStatus::NeedsAttention
            ),
            "after a crash at {point}: {statuses:?}"
        );
        let counts = ledger(&env);
        let n = counts.get(&ids[0]).copied().unwrap_or(0);
        assert!(n <= 1, "the change ran {n} times after a crash at {point}");
        if statuses[0] == RunStatus::Succeeded {
            assert_eq!(n, 1, "succeeded after a crash at {point}, so appended once");
        }
        drop(recovery);
        all.push((point.clone(), statuses[0], n));
    }
    // The crash right after the intent (or before the change) leaves a
    // step that needs a person; one after the result needs nobody.
    let status_at = |p: &str| {
        all.iter()
            .find(|(point, ..)| point == p)
            .map(|(_, s, _)| *s)
            .expect("point")
    };
    assert_eq!(
        status_at("store.after.step-intent"),
        RunStatus::Succeeded,
        "the intent of the idempotent probe step: re-run"
    );
    let reruns = env.audited("step.rerun").await;
    assert!(
        reruns
            .iter()
            .any(|r| r.subject == "step:probe" && r.run_id.is_some()),
        "{reruns:?}"
    );
    assert_eq!(status_at("host.after-change"), RunStatus::NeedsAttention);
    assert_eq!(status_at("store.after.finish-run"), RunStatus::Succeeded);
    chain_verifies(&env).await;
    eprintln!("crash points: {all:?}");
}

/// A dry-run's step records are written in windows (`node.dry-run-flush-ms`):
/// a crash after a window was written and before the run ended leaves the
/// run claimed with the steps written so far. The node that takes it over
/// runs the unfinished step again (a dry-run step always may be), records
/// its host calls again in place of the first node's, and finishes it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dry_run_crashed_between_its_windows_is_taken_over_and_finished() {
    let gate = tempfile::tempdir().expect("gate");
    let text = format!(
        "apiVersion: firedrill/v1\nname: waits\nversion: 1\nsteps:\n  - id: probe\n    kernel: trivial@0.1.0\n    targets: [demo-host]\n  - id: wait\n    kernel: hostile@0.1.0\n    targets: [demo-host]\n    with: {{ behaviour: wait-for, path: \"{}\" }}\n",
        gate.path().display()
    );
    // A window far longer than `probe`, even on a loaded machine: the
    // first window written holds `probe` finished and `wait` polling.
    let env = TestEnv::new().await;
    firedrill_tests::nodes::append_config(
        &env,
        &config(SHORT.0, SHORT.1).replace("[node]\n", "[node]\ndry-run-flush-ms = 2000\n"),
    );
    env.publish(&[&text]).await;
    let ids = firedrill_tests::nodes::queue_mode(&env, "waits", 1, firedrill::Mode::DryRun).await;
    let id = &ids[0];
    // The first window holding a step start: written while `wait` polls,
    // then the node dies.
    let mut crashing = Node::start(&env, Some("store.after.step-intent=return"));
    crashed(&mut crashing, "store.after.step-intent").await;
    let run = env.store.run(id).await.expect("read").expect("run");
    assert_eq!(run.status, RunStatus::Running, "claimed, not finished");
    let steps: Vec<(String, StepStatus)> = env
        .store
        .steps(id)
        .await
        .expect("steps")
        .into_iter()
        .map(|s| (s.step_id, s.status))
        .collect();
    assert_eq!(
        steps,
        [
            ("probe".to_string(), StepStatus::Succeeded),
            ("wait".to_string(), StepStatus::Running)
        ]
    );
    let first = env.store.host_calls(id).await.expect("calls");
    assert!(
        first.iter().any(|c| c.step_id == "wait"),
        "the window held the polls of `wait`: {first:?}"
    );
    std::fs::write(gate.path().join("go"), "").expect("go");
    let recovery = Node::start(&env, None);
    let statuses = wait_all(&env, &ids, Duration::from_secs(60), |s| !s.is_pending()).await;
    assert_eq!(statuses[0], RunStatus::Succeeded);
    let reruns = env.audited("step.rerun").await;
    assert!(
        reruns.iter().any(|r| r.subject == "step:wait"),
        "{reruns:?}"
    );
    let calls = env.store.host_calls(id).await.expect("calls");
    assert!(calls.iter().any(|c| c.step_id == "wait"), "{calls:?}");
    drop(recovery);
    chain_verifies(&env).await;
}

/// An alert's claim, the run it starts and its `alert.received` record are
/// one batch: a node that dies right after the claim is durable has
/// durably admitted (and claimed) the run too, so the run is taken over
/// and finished, and a redelivery is a duplicate of it. (Were the claim
/// written on its own, the crash would leave a claim with no run, and
/// every redelivery of the alert would be dropped as a duplicate of
/// nothing.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_after_an_alert_is_claimed_leaves_its_run_and_record() {
    const TRIGGERED: &str = "apiVersion: firedrill/v1\nname: triggered\nversion: 1\nsteps:\n  - id: probe\n    kernel: trivial@0.1.0\n    targets: [demo-host]\ntriggers:\n  - source: generic\n    match: { alertname: DiskFull }\n";
    let env = env_with_ledger(&[TRIGGERED], SHORT).await;
    let token = env
        .token("monitor", firedrill::auth::Role::Webhook, &[])
        .await;
    let alert = serde_json::json!({"alerts": [{
        "id": "disk-1", "status": "firing", "starts_at": "2026-11-23T02:00:00Z",
        "labels": {"alertname": "DiskFull", "instance": "web-1"}
    }]})
    .to_string();
    let deliver = |url: String| {
        let (token, alert) = (token.clone(), alert.clone());
        async move {
            reqwest::Client::new()
                .post(format!("{url}/api/v1/alerts/generic"))
                .bearer_auth(token)
                .header("content-type", "application/json")
                .body(alert)
                .send()
                .await
        }
    };
    let mut crashing = Node::start(&env, Some("store.after.claim-alert=return"));
    // The node aborts inside the request: no answer.
    assert!(deliver(crashing.url.clone()).await.is_err());
    crashed(&mut crashing, "store.after.claim-alert").await;
    let claimed = env
        .store
        .alert_claim_exists("generic", "disk-1", "2026-11-23T02:00:00Z", "triggered")
        .await
        .expect("read");
    let runs = env.store.runs(&RunFilter::default()).await.expect("runs");
    assert!(claimed, "the claim was durable when the node died");
    assert_eq!(
        runs.len(),
        1,
        "the claim's run is durable with it: {runs:?}"
    );
    let received = env.audited("alert.received").await;
    assert_eq!(received.len(), 1, "{received:?}");
    let details: serde_json::Value = serde_json::from_str(&received[0].details).expect("json");
    assert_eq!(details["decision"]["outcome"], "started", "{details}");
    assert_eq!(
        details["decision"]["run_id"].as_str(),
        Some(runs[0].id.as_str())
    );
    let recovery = Node::start(&env, None);
    let ids = vec![runs[0].id.clone()];
    let statuses = wait_all(&env, &ids, Duration::from_secs(60), |s| !s.is_pending()).await;
    assert_eq!(statuses[0], RunStatus::Succeeded);
    let again: serde_json::Value = deliver(recovery.url.clone())
        .await
        .expect("deliver")
        .json()
        .await
        .expect("json");
    assert_eq!(again["decisions"][0]["outcome"], "duplicate", "{again}");
    assert_eq!(
        env.store
            .runs(&RunFilter::default())
            .await
            .expect("runs")
            .len(),
        1
    );
    drop(recovery);
    chain_verifies(&env).await;
}

/// A bounded soak: two nodes execute live runs while one of them is
/// killed with SIGKILL and restarted (under the same node id), again and
/// again, each time while it is inside the non-idempotent step of a run.
/// Afterwards every run is terminal or needs attention, no change ran
/// twice, every run that succeeded made its change exactly once, and the
/// audit chain verifies.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kill9_soak_against_live_runs_keeps_every_invariant() {
    // A kill interrupts up to 8 runs (a node's slots): enough runs that
    // most of them still succeed.
    const RUNS: usize = 150;
    const KILLS: usize = 8;
    /// How long after the victim entered the step it is killed, in ms
    /// (fixed, so a failure replays).
    const PAUSES: [u64; KILLS] = [100, 450, 20, 700, 250, 50, 600, 300];
    // Each run spends a second inside its non-idempotent step.
    let env = env_with_ledger(&[&ledger_runbook("soak", 1000)], SHORT).await;
    let ids = queue(&env, "soak", RUNS).await;
    let names = ["soak-a", "soak-b"];
    let mut nodes = names.map(|n| Node::start_as(&env, n));
    let mut kills = 0;
    for (i, pause) in PAUSES.iter().enumerate() {
        let victim = i % 2;
        // Wait until the victim is inside the ledger step of some run.
        let deadline = Instant::now() + Duration::from_secs(60);
        let mut inside = false;
        while !inside && Instant::now() < deadline {
            for id in &ids {
                let run = env.store.run(id).await.expect("read").expect("run");
                if run.owner.as_deref() != Some(names[victim]) || run.status != RunStatus::Running {
                    continue;
                }
                let steps = env.store.steps(id).await.expect("steps");
                if steps
                    .iter()
                    .any(|s| s.step_id == "append" && s.status == StepStatus::Running)
                {
                    inside = true;
                    break;
                }
            }
            if !inside {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
        if !inside {
            break; // the work ran out before the kills did
        }
        tokio::time::sleep(Duration::from_millis(*pause)).await;
        nodes[victim].kill9();
        kills += 1;
        nodes[victim] = Node::start_as(&env, names[victim]);
    }
    let statuses = wait_all(&env, &ids, Duration::from_secs(180), |s| {
        !s.is_pending() || s == RunStatus::NeedsAttention
    })
    .await;
    let counts = ledger(&env);
    let mut summary: BTreeMap<String, usize> = BTreeMap::new();
    for (id, status) in ids.iter().zip(&statuses) {
        *summary.entry(status.as_str().to_string()).or_insert(0) += 1;
        let n = counts.get(id).copied().unwrap_or(0);
        assert!(n <= 1, "run {id} appended {n} times");
        match status {
            RunStatus::Succeeded => assert_eq!(n, 1, "run {id} succeeded"),
            RunStatus::NeedsAttention => {}
            other => {
                let run = env.store.run(id).await.expect("read").expect("run");
                let steps = env.store.steps(id).await.expect("steps");
                panic!(
                    "run {id} ended {other:?}: {:?}; steps: {steps:?}",
                    run.error
                )
            }
        }
    }
    chain_verifies(&env).await;
    eprintln!("soak: {kills} kills, {summary:?}");
    // The soak exercised what it claims: most kills landed inside the
    // step (runs needing attention), and the rest of the work got done.
    assert!(kills >= KILLS / 2, "only {kills} kills landed on live work");
    assert!(
        summary.contains_key("needs-attention"),
        "no kill interrupted a change: {summary:?}"
    );
    assert!(summary.contains_key("succeeded"), "{summary:?}");
    drop(nodes);
}
