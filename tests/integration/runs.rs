//! The executor: dry-run changes nothing (checked on the target), live does;
//! `when`, retries, `on_failure`, runtime input and target checks; every run
//! records its runbook and kernel digests.

use firedrill::Mode;
use firedrill::executor::planned_changes;
use firedrill::store::{AuditFilter, RunStatus, StepStatus};
use firedrill_tests::TestEnv;

const RESTART: &str = r#"apiVersion: firedrill/v1
name: restart-web
version: 1
inputs:
  type: object
  required: [unit]
  properties: { unit: { type: string } }
steps:
  - id: probe
    kernel: service-status@1.0.0
    targets: [demo-host]
    with: { unit: "{{ inputs.unit }}" }
  - id: restart
    kernel: restart-service@1.0.0
    when: "{{ not steps.probe.output.active }}"
    targets: [demo-host]
    with: { unit: "{{ inputs.unit }}", verify_timeout_ms: 5000, poll_interval_ms: 100 }
  - id: verify
    kernel: service-status@1.0.0
    when: "{{ run.mode == 'live' }}"
    targets: [demo-host]
    with: { unit: "{{ inputs.unit }}", expect_active: true }
"#;

async fn status(env: &TestEnv, id: &str) -> RunStatus {
    env.store
        .run(id)
        .await
        .expect("read")
        .expect("run exists")
        .status
}

async fn step_status(env: &TestEnv, id: &str) -> Vec<(String, String, i64)> {
    env.store
        .steps(id)
        .await
        .expect("steps")
        .into_iter()
        .map(|s| (s.step_id, s.status.to_string(), s.attempts))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dry_run_changes_nothing_on_the_target_and_live_does() {
    let env = TestEnv::new().await;
    assert!(!env.systemctl("is-active", "web"));

    let dry = env
        .run_text(RESTART, Mode::DryRun, &[("unit", "web")])
        .await
        .expect("runs");
    assert_eq!(status(&env, &dry).await, RunStatus::Succeeded);
    // Checked on the target itself: not restarted, still down.
    assert_eq!(env.restarts("web"), 0);
    assert!(!env.systemctl("is-active", "web"));
    let calls = env.store.host_calls(&dry).await.expect("calls");
    let planned = planned_changes(&calls);
    assert_eq!(planned.len(), 1);
    assert_eq!(planned[0].call["command"], "systemctl restart -- web");
    assert_eq!(
        step_status(&env, &dry).await,
        vec![
            ("probe".into(), "succeeded".into(), 1),
            ("restart".into(), "succeeded".into(), 1),
            ("verify".into(), "skipped".into(), 0)
        ]
    );

    let live = env
        .run_text(RESTART, Mode::Live, &[("unit", "web")])
        .await
        .expect("runs");
    assert_eq!(status(&env, &live).await, RunStatus::Succeeded);
    assert_eq!(env.restarts("web"), 1);
    assert!(env.systemctl("is-active", "web"));
    assert!(planned_changes(&env.store.host_calls(&live).await.expect("calls")).is_empty());

    // Now healthy: the restart step is skipped, and says so.
    let again = env
        .run_text(RESTART, Mode::Live, &[("unit", "web")])
        .await
        .expect("runs");
    let steps = step_status(&env, &again).await;
    assert_eq!(steps[1], ("restart".into(), "skipped".into(), 0));
    assert_eq!(env.restarts("web"), 1);
    let skipped = env
        .store
        .audit(&AuditFilter {
            run_id: Some(again.clone()),
            action: Some("step.skipped".into()),
            ..AuditFilter::default()
        })
        .await
        .expect("audit");
    assert_eq!(skipped.len(), 1);
    assert_eq!(skipped[0].subject, "step:restart");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runs_record_runbook_and_kernel_digests_and_the_actor() {
    let env = TestEnv::new().await;
    let id = env
        .run_text(RESTART, Mode::DryRun, &[("unit", "web")])
        .await
        .expect("runs");
    let run = env.store.run(&id).await.expect("read").expect("exists");
    assert!(run.draft, "a file that is not published runs as a draft");
    assert_eq!(
        run.runbook_digest,
        firedrill::runbook::source_digest(RESTART)
    );
    assert_eq!(run.actor, "user:tester");
    let claimed = env.audited("run.claimed").await;
    assert!(
        claimed
            .iter()
            .filter(|r| r.run_id.as_deref() == Some(id.as_str()))
            .any(|r| r.subject == format!("run:{id}") && r.actor_kind == "scheduler"),
        "{claimed:?}"
    );
    let finished = env.audited("step.finished").await;
    assert!(
        finished
            .iter()
            .filter(|r| r.run_id.as_deref() == Some(id.as_str()))
            .any(|r| r.subject == "step:probe" && r.outcome == "succeeded"),
        "{finished:?}"
    );
    let target_finished = env.audited("step.target.finished").await;
    assert!(
        target_finished
            .iter()
            .filter(|r| r.run_id.as_deref() == Some(id.as_str()))
            .any(|r| r.subject == "target:demo-host" && r.outcome == "succeeded"),
        "{target_finished:?}"
    );
    let kernels = run.kernels.as_object().expect("map");
    assert!(
        kernels["service-status@1.0.0"]
            .as_str()
            .expect("digest")
            .starts_with("sha256:")
    );
    assert!(kernels.contains_key("restart-service@1.0.0"));
    for step in env.store.steps(&id).await.expect("steps") {
        if step.status != StepStatus::Skipped {
            assert_eq!(
                step.kernel_digest.as_deref(),
                kernels[&step.kernel].as_str()
            );
        }
    }
    // Published content runs as the published version, not a draft.
    env.service
        .publish_runbook("r.yaml", RESTART, &firedrill::audit::Actor::user("tester"))
        .await
        .expect("publish");
    let id = env
        .run_text(RESTART, Mode::DryRun, &[("unit", "web")])
        .await
        .expect("runs");
    assert!(
        !env.store
            .run(&id)
            .await
            .expect("read")
            .expect("exists")
            .draft
    );
}

fn hostile(steps: &str, on_failure: &str) -> String {
    format!(
        "apiVersion: firedrill/v1\nname: hostile-run\nversion: 1\nsteps:\n{steps}{}",
        if on_failure.is_empty() {
            String::new()
        } else {
            format!("on_failure:\n{on_failure}")
        }
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retryable_errors_are_retried_with_backoff_then_succeed() {
    let env = TestEnv::new().await;
    let marker = env.home.path().join("flaky-marker");
    let text = hostile(
        &format!(
            "  - id: flaky\n    kernel: hostile@0.1.0\n    targets: [demo-host]\n    with: {{ behaviour: flaky, path: {} }}\n    retries: {{ max: 2, backoff: 10ms }}\n",
            marker.display()
        ),
        "",
    );
    let id = env.run_text(&text, Mode::Live, &[]).await.expect("runs");
    assert_eq!(status(&env, &id).await, RunStatus::Succeeded);
    assert_eq!(
        step_status(&env, &id).await,
        vec![("flaky".into(), "succeeded".into(), 2)]
    );
    let retried = env
        .store
        .audit(&AuditFilter {
            run_id: Some(id),
            action: Some("step.retried".into()),
            ..AuditFilter::default()
        })
        .await
        .expect("audit");
    assert_eq!(retried.len(), 1);
    assert!(
        retried[0].details.contains("first attempt always fails"),
        "{}",
        retried[0].details
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retries_run_out_then_on_failure_runs_in_the_same_mode() {
    let env = TestEnv::new().await;
    let marker = env.home.path().join("on-failure-ran");
    let text = hostile(
        "  - id: doomed\n    kernel: hostile@0.1.0\n    targets: [demo-host]\n    with: { behaviour: retryable }\n    retries: { max: 2, backoff: 10ms }\n  - id: never\n    kernel: disk-usage@1.0.0\n    targets: [demo-host]\n",
        &format!(
            "  - id: cleanup\n    kernel: hostile@0.1.0\n    targets: [demo-host]\n    with: {{ behaviour: change, path: {} }}\n",
            marker.display()
        ),
    );
    // Dry-run: on_failure runs in dry-run too, so its change is only planned.
    let dry = env.run_text(&text, Mode::DryRun, &[]).await.expect("runs");
    assert_eq!(status(&env, &dry).await, RunStatus::Failed);
    assert_eq!(
        step_status(&env, &dry).await,
        vec![
            ("doomed".into(), "failed".into(), 3),
            ("cleanup".into(), "succeeded".into(), 1)
        ]
    );
    assert!(
        !marker.exists(),
        "on_failure in a dry-run performed a change"
    );
    let run = env.store.run(&dry).await.expect("read").expect("exists");
    assert!(
        run.error
            .as_deref()
            .is_some_and(|e| e.contains("step `doomed` failed")),
        "{:?}",
        run.error
    );

    let live = env.run_text(&text, Mode::Live, &[]).await.expect("runs");
    assert_eq!(status(&env, &live).await, RunStatus::Failed);
    assert!(
        marker.exists(),
        "on_failure in a live run did not perform its change"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rendered_input_failing_the_kernel_schema_never_starts_the_kernel() {
    let env = TestEnv::new().await;
    let text = hostile(
        "  - id: probe\n    kernel: disk-usage@1.0.0\n    targets: [demo-host]\n    with: { threshold_percent: \"{{ run.id }}\" }\n",
        "",
    );
    let id = env.run_text(&text, Mode::Live, &[]).await.expect("runs");
    assert_eq!(status(&env, &id).await, RunStatus::Failed);
    let steps = env.store.steps(&id).await.expect("steps");
    assert!(
        steps[0]
            .error
            .as_deref()
            .is_some_and(|e| e.contains("the kernel was not started")),
        "{:?}",
        steps[0].error
    );
    assert!(env.store.host_calls(&id).await.expect("calls").is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn targets_rendering_empty_or_unknown_are_refused() {
    let env = TestEnv::new().await;
    for (target, words) in [
        ("\"{{ inputs.host }}\"", "empty target set is refused"),
        (
            "nowhere",
            "\"nowhere\" is neither a target nor a group in the inventory",
        ),
    ] {
        let text = format!(
            "apiVersion: firedrill/v1\nname: t\nversion: 1\ninputs: {{ type: object, properties: {{ host: {{ type: string }} }} }}\nsteps:\n  - id: probe\n    kernel: disk-usage@1.0.0\n    targets: [{target}]\n"
        );
        let id = env
            .run_text(&text, Mode::Live, &[("host", "")])
            .await
            .expect("runs");
        assert_eq!(status(&env, &id).await, RunStatus::Failed);
        let steps = env.store.steps(&id).await.expect("steps");
        assert!(
            steps[0].error.as_deref().is_some_and(|e| e.contains(words)),
            "{:?}",
            steps[0].error
        );
        assert!(env.store.host_calls(&id).await.expect("calls").is_empty());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn denials_and_limits_are_audited_per_run() {
    let env = TestEnv::with_limits(firedrill_tests::test_limits()).await;
    let text = hostile(
        "  - id: sneaky\n    kernel: hostile@0.1.0\n    targets: [demo-host]\n    with: { behaviour: undeclared-command }\n",
        "  - id: greedy\n    kernel: hostile@0.1.0\n    targets: [demo-host]\n    with: { behaviour: memory-bomb }\n",
    );
    let id = env.run_text(&text, Mode::Live, &[]).await.expect("runs");
    assert_eq!(status(&env, &id).await, RunStatus::Failed);
    let audit = env
        .store
        .audit(&AuditFilter {
            run_id: Some(id.clone()),
            ..AuditFilter::default()
        })
        .await
        .expect("audit");
    let actions: Vec<&str> = audit.iter().map(|r| r.action.as_str()).collect();
    assert!(actions.contains(&"capability.denied"), "{actions:?}");
    assert!(actions.contains(&"limit.exceeded"), "{actions:?}");
    let denied = audit
        .iter()
        .find(|r| r.action == "capability.denied")
        .expect("denied");
    assert_eq!(denied.outcome, "denied");
    assert!(denied.details.contains("rm -rf /"), "{}", denied.details);
    let limit = audit
        .iter()
        .find(|r| r.action == "limit.exceeded")
        .expect("limit");
    assert!(
        limit.details.contains("kernel.limits.memory-bytes"),
        "{}",
        limit.details
    );
    assert_eq!(actions.first(), Some(&"run.started"));
    assert_eq!(actions.last(), Some(&"run.finished"));
}

/// Through the binary, as an operator would run it: in-process log
/// capture would race with other tests over tracing's global callsite cache.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_logs_carry_the_run_and_step_ids() {
    let env = TestEnv::new().await;
    let file = env.home.path().join("logged.yaml");
    std::fs::write(
        &file,
        "apiVersion: firedrill/v1\nname: logged\nversion: 1\nsteps:\n  - id: only\n    kernel: trivial@0.1.0\n    targets: [demo-host]\n",
    )
    .expect("write");
    let out = std::process::Command::new(firedrill_tests::firedrill_bin())
        .env("FIREDRILL_HOME", env.home.path())
        .args(["--log", "firedrill=info", "--log-json", "run", "--json"])
        .arg(&file)
        .output()
        .expect("run the binary");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    let run: serde_json::Value =
        serde_json::from_str(stdout.lines().last().expect("the report line")).expect("run JSON");
    let id = run["run_id"].as_str().expect("run id");
    let text = String::from_utf8_lossy(&out.stderr);
    let finished: Vec<serde_json::Value> = text
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v["fields"]["message"] == "step finished")
        .collect();
    assert_eq!(finished.len(), 1, "{text}");
    let spans = finished[0]["spans"].as_array().expect("spans");
    assert!(spans.iter().any(|s| s["run_id"] == id), "{text}");
    assert!(spans.iter().any(|s| s["step_id"] == "only"), "{text}");
}

/// A run started in a free slot of a node's worker (as the API starts
/// one) wakes whoever watches it when its slot frees: no timer and no
/// store poll in this test, so a missing wake-up hangs it (the guard ends
/// it after a minute). Nothing stays watched, and the slot is free again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_started_in_a_free_slot_wakes_its_watchers_when_it_ends() {
    use firedrill::audit::Actor;
    use firedrill::executor::{RunRequest, RunbookSource, Worker};
    let env = TestEnv::new().await;
    env.publish(&[
        "apiVersion: firedrill/v1\nname: quick\nversion: 1\nsteps:\n  - id: a\n    kernel: trivial@0.1.0\n    targets: [demo-host]\n",
    ])
    .await;
    let worker = Worker::new(env.service.clone(), 1);
    let prepared = env
        .service
        .prepare(RunRequest {
            source: RunbookSource::Published {
                name: "quick".into(),
                version: None,
            },
            mode: Mode::DryRun,
            actor: Actor::user("oncall"),
            inputs: Vec::new(),
        })
        .await
        .expect("prepare");
    let id = prepared.id.clone();
    let (mut first, mut second) = (worker.watch(&id), worker.watch(&id));
    assert_eq!(worker.watched(), 1, "one entry per run");
    let slot = worker.try_slot().expect("a free slot");
    assert!(worker.try_slot().is_none(), "the only slot is taken");
    let started = env
        .service
        .admit_claimed(prepared, None)
        .await
        .expect("admitted and claimed");
    worker.execute_started(slot, started);
    let guard = std::time::Duration::from_secs(60);
    tokio::time::timeout(guard, first.stopped())
        .await
        .expect("the run's end woke the first watcher");
    tokio::time::timeout(guard, second.stopped())
        .await
        .expect("and the second");
    assert_eq!(status(&env, &id).await, RunStatus::Succeeded);
    assert_eq!(worker.watched(), 0);
    assert!(worker.try_slot().is_some(), "the slot is free again");
    // A watcher that goes away forgets its entry.
    let gone = worker.watch("some-other-run");
    assert_eq!(worker.watched(), 1);
    drop(gone);
    assert_eq!(worker.watched(), 0);
}
