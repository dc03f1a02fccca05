//! The big red switch: engaged, it refuses new live runs of what it covers
//! and stops live runs in progress at the next step boundary (`halted`);
//! dry-runs still run; every flip needs a reason and is audited.

use std::time::Duration;

use firedrill::Mode;
use firedrill::audit::Actor;
use firedrill::executor::RunError;
use firedrill::store::{AuditFilter, RunFilter, RunStatus, StepStatus};
use firedrill::switch::{self, SwitchError};
use firedrill_tests::TestEnv;

fn two_steps(name: &str, dir: &std::path::Path) -> String {
    format!(
        "apiVersion: firedrill/v1\nname: {name}\nversion: 1\nsteps:\n  - id: first\n    kernel: hostile@0.1.0\n    targets: [demo-host]\n    with: {{ behaviour: wait-for, path: {d} }}\n  - id: second\n    kernel: hostile@0.1.0\n    targets: [demo-host]\n    with: {{ behaviour: fail-on, path: {d}, fail_targets: [] }}\non_failure:\n  - id: cleanup\n    kernel: hostile@0.1.0\n    targets: [demo-host]\n    with: {{ behaviour: fail-on, path: {d}/cleanup, fail_targets: [] }}\n",
        d = dir.display()
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn engaged_switch_refuses_live_runs_but_not_dry_runs_and_is_scoped() {
    let env = TestEnv::new().await;
    let dir = env.home.path().join("marks");
    std::fs::create_dir_all(&dir).expect("dir");
    std::fs::write(dir.join("go"), "").expect("go");
    let alice = Actor::user("alice");
    let store = env.store.as_ref();

    let err = switch::flip(store, None, true, "  ", &alice)
        .await
        .unwrap_err();
    assert!(matches!(err, SwitchError::Reason), "{err}");

    switch::flip(store, Some("alpha"), true, "alpha is misbehaving", &alice)
        .await
        .expect("engaged");
    let err = env
        .run_text(&two_steps("alpha", &dir), Mode::Live, &[])
        .await
        .unwrap_err();
    assert!(matches!(err, RunError::Halted { .. }), "{err}");
    let text = err.to_string();
    assert!(
        text.contains("runbook:alpha")
            && text.contains("user:alice")
            && text.contains("alpha is misbehaving"),
        "{text}"
    );
    // Refused before anything was written.
    assert!(
        env.store
            .runs(&RunFilter::default())
            .await
            .expect("runs")
            .is_empty()
    );
    // Dry-runs still run; another runbook is not covered.
    let dry = env
        .run_text(&two_steps("alpha", &dir), Mode::DryRun, &[])
        .await
        .expect("dry-run allowed");
    assert_eq!(
        env.store
            .run(&dry)
            .await
            .expect("read")
            .expect("run")
            .status,
        RunStatus::Succeeded
    );
    env.run_text(&two_steps("beta", &dir), Mode::Live, &[])
        .await
        .expect("beta not covered");

    // The global switch covers everything; releasing it lets runs start.
    switch::flip(
        store,
        None,
        true,
        "incident 42: stop all automation",
        &alice,
    )
    .await
    .expect("engaged");
    assert!(matches!(
        env.run_text(&two_steps("beta", &dir), Mode::Live, &[])
            .await,
        Err(RunError::Halted { .. })
    ));
    switch::flip(store, None, false, "incident 42 over", &alice)
        .await
        .expect("released");
    switch::flip(store, Some("alpha"), false, "fixed", &alice)
        .await
        .expect("released");
    env.run_text(&two_steps("alpha", &dir), Mode::Live, &[])
        .await
        .expect("runs again");

    let flips = env
        .store
        .audit(&AuditFilter {
            actor: Some("user:alice".into()),
            ..AuditFilter::default()
        })
        .await
        .expect("audit");
    let actions: Vec<&str> = flips.iter().map(|r| r.action.as_str()).collect();
    assert_eq!(
        actions,
        [
            "switch.engaged",
            "switch.engaged",
            "switch.released",
            "switch.released"
        ]
    );
    assert!(
        flips[1]
            .details
            .contains("incident 42: stop all automation")
    );
}

/// Start a live run of `two_steps` and engage the global switch while
/// its first step is in flight; returns the run's id once it halted.
async fn halted_run(env: &TestEnv, dir: &std::path::Path) -> String {
    std::fs::create_dir_all(dir.join("cleanup")).expect("dir");
    let service = env.service.clone();
    let text = two_steps("gamma", dir);
    let run = tokio::spawn(async move {
        service
            .run(firedrill::executor::RunRequest {
                source: firedrill::executor::RunbookSource::File {
                    path: "gamma.yaml".into(),
                    text,
                },
                mode: Mode::Live,
                actor: Actor::user("oncall"),
                inputs: Vec::new(),
            })
            .await
    });
    // Wait until the first step is in flight.
    let id = loop {
        let runs = env.store.runs(&RunFilter::default()).await.expect("runs");
        if let Some(r) = runs.first() {
            let steps = env.store.steps(&r.id).await.expect("steps");
            if steps
                .iter()
                .any(|s| s.step_id == "first" && s.status == StepStatus::Running)
            {
                break r.id.clone();
            }
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    switch::flip(
        env.store.as_ref(),
        None,
        true,
        "stop everything",
        &Actor::user("alice"),
    )
    .await
    .expect("engaged");
    // Let the first step finish.
    std::fs::write(dir.join("go"), "").expect("go");
    assert_eq!(run.await.expect("joins").expect("runs"), id);
    id
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_live_run_in_progress_halts_at_the_next_step_boundary() {
    let env = TestEnv::new().await;
    let dir = env.home.path().join("marks");
    let id = halted_run(&env, &dir).await;

    let row = env.store.run(&id).await.expect("read").expect("run");
    assert_eq!(row.status, RunStatus::Halted);
    let error = row.error.unwrap_or_default();
    assert!(
        error.contains("halted before step `second`") && error.contains("user:alice"),
        "{error}"
    );
    let steps = env.store.steps(&id).await.expect("steps");
    assert_eq!(steps.len(), 1, "only the first step ran");
    assert_eq!(steps[0].status, StepStatus::Succeeded);
    // Neither the second step nor on_failure touched the target.
    assert!(!dir.join("demo-host").exists());
    assert!(!dir.join("cleanup").join("demo-host").exists());
    let finished = env
        .store
        .audit(&AuditFilter {
            run_id: Some(id.clone()),
            action: Some("run.finished".into()),
            ..AuditFilter::default()
        })
        .await
        .expect("audit");
    assert_eq!(finished[0].outcome, "halted");
}

/// Two people resume the same halted run at once: one wins; the other is
/// told someone else continued it first (409 conflict), not that the queue
/// is full (429), and no load is counted as shed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_people_resuming_one_halted_run_the_second_gets_a_conflict_not_a_full_queue() {
    let env = TestEnv::new().await;
    let dir = env.home.path().join("marks");
    let id = halted_run(&env, &dir).await;
    switch::flip(
        env.store.as_ref(),
        None,
        false,
        "incident over",
        &Actor::user("alice"),
    )
    .await
    .expect("released");
    let service = &env.service;
    let mut prepared = Vec::new();
    for who in ["alice", "bob", "carol"] {
        prepared.push(
            service
                .prepare_resume(&id, &Actor::user(who), "the incident is over")
                .await
                .expect("halted runs can be resumed"),
        );
    }
    let carol = prepared.pop().expect("carol");
    let bob = prepared.pop().expect("bob");
    let alice = prepared.pop().expect("alice");
    let state = firedrill::server::AppState::new(
        service.clone(),
        firedrill::server::ServerConfig::default(),
    );
    assert_eq!(state.admit(alice).await.expect("the first resume wins"), id);
    let lost = state.admit(bob).await.expect_err("the second loses");
    assert_eq!(lost.status.as_u16(), 409, "{}", lost.message);
    assert_eq!(lost.code, "conflict");
    assert!(lost.message.contains("someone else"), "{}", lost.message);
    assert_eq!(
        service.metrics().shed_total(),
        0,
        "a lost race is not shed load"
    );
    // The same at the service (the CLI's path).
    let err = service.enqueue(carol, None).await.expect_err("loses too");
    assert!(
        matches!(
            err,
            RunError::LostRace {
                was: RunStatus::Halted,
                ..
            }
        ),
        "{err}"
    );
    // One resume is recorded, not three.
    let resumed = env
        .store
        .audit(&AuditFilter {
            run_id: Some(id.clone()),
            action: Some("run.resumed".into()),
            ..AuditFilter::default()
        })
        .await
        .expect("audit");
    assert_eq!(resumed.len(), 1);
    assert_eq!(resumed[0].actor_id, "alice");
}
