//! Fan-out over a fleet: groups and label selectors, one invocation per
//! target, `max_concurrency`, `max_errors` (no new target after one failure
//! too many), `max_targets` (blast radius), per-target results.

use firedrill::Mode;
use firedrill::store::{RunStatus, TargetStatus};
use firedrill_tests::TestEnv;

fn runbook(targets: &str, limits: &str, dir: &std::path::Path, fail: &[&str]) -> String {
    format!(
        "apiVersion: firedrill/v1\nname: fleet\nversion: 1\nsteps:\n  - id: each\n    kernel: hostile@0.1.0\n    targets: {targets}\n{limits}    with: {{ behaviour: fail-on, path: {}, fail_targets: {fail:?} }}\n",
        dir.display()
    )
}

fn ran(dir: &std::path::Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .expect("dir")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_group_fans_out_one_invocation_per_target_with_per_target_results() {
    let env = TestEnv::with_fleet(5).await;
    let dir = env.home.path().join("ran");
    std::fs::create_dir_all(&dir).expect("dir");
    let text = runbook("[webs]", "    max_concurrency: 2\n", &dir, &[]);
    let id = env.run_text(&text, Mode::Live, &[]).await.expect("runs");
    assert_eq!(
        env.store.run(&id).await.expect("read").expect("run").status,
        RunStatus::Succeeded
    );
    assert_eq!(ran(&dir), ["web-1", "web-2", "web-3", "web-4", "web-5"]);
    let per_target = env.store.step_targets(&id).await.expect("targets");
    assert_eq!(per_target.len(), 5);
    assert!(
        per_target
            .iter()
            .all(|t| t.status == TargetStatus::Succeeded && t.attempts == 1)
    );
    // Each invocation was granted only its own target.
    let calls = env.store.host_calls(&id).await.expect("calls");
    assert_eq!(calls.len(), 5);
    assert!(calls.iter().all(|c| c.call["target"] == c.target.as_str()));
    let step = &env.store.steps(&id).await.expect("steps")[0];
    assert_eq!(
        step.output.as_ref().expect("output")["web-3"]["target"],
        "web-3"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_errors_stops_new_targets_and_fails_the_step() {
    let env = TestEnv::with_fleet(5).await;
    let dir = env.home.path().join("ran");
    std::fs::create_dir_all(&dir).expect("dir");
    // One at a time (the default), one failure tolerated: web-1 and web-2
    // fail, so web-3..web-5 never start.
    let text = runbook(
        "[\"label:role=web\"]",
        "    max_errors: 1\n",
        &dir,
        &["web-1", "web-2"],
    );
    let id = env.run_text(&text, Mode::Live, &[]).await.expect("runs");
    assert_eq!(
        env.store.run(&id).await.expect("read").expect("run").status,
        RunStatus::Failed
    );
    assert_eq!(ran(&dir), ["web-1", "web-2"]);
    let statuses: Vec<(String, String)> = env
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
            ("web-1", "failed"),
            ("web-2", "failed"),
            ("web-3", "not-started"),
            ("web-4", "not-started"),
            ("web-5", "not-started")
        ]
        .map(|(a, b)| (a.to_string(), b.to_string()))
    );
    let step = &env.store.steps(&id).await.expect("steps")[0];
    let error = step.error.as_deref().expect("error");
    assert!(
        error.contains("2 of 5 targets failed (max_errors 1); 3 not started"),
        "{error}"
    );

    // Within the budget (20% of 5 = 1 failure), the step succeeds and every target runs.
    let dir2 = env.home.path().join("ran2");
    std::fs::create_dir_all(&dir2).expect("dir");
    let text = runbook(
        "[webs]",
        "    max_errors: 20%\n    max_concurrency: 100%\n",
        &dir2,
        &["web-4"],
    );
    let id = env.run_text(&text, Mode::Live, &[]).await.expect("runs");
    assert_eq!(
        env.store.run(&id).await.expect("read").expect("run").status,
        RunStatus::Succeeded
    );
    assert_eq!(ran(&dir2).len(), 5);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_targets_and_empty_selectors_are_refused_before_anything_runs() {
    let env = TestEnv::with_fleet(5).await;
    let dir = env.home.path().join("ran");
    std::fs::create_dir_all(&dir).expect("dir");
    for (targets, limits, words) in [
        (
            "[webs]",
            "    max_targets: 4\n",
            "expand to 5 targets, more than its max_targets of 4",
        ),
        (
            "[\"label:role=cache\"]",
            "",
            "an empty target set is refused",
        ),
    ] {
        let id = env
            .run_text(&runbook(targets, limits, &dir, &[]), Mode::Live, &[])
            .await
            .expect("runs");
        assert_eq!(
            env.store.run(&id).await.expect("read").expect("run").status,
            RunStatus::Failed
        );
        let step = &env.store.steps(&id).await.expect("steps")[0];
        assert!(
            step.error.as_deref().is_some_and(|e| e.contains(words)),
            "{:?}",
            step.error
        );
        assert!(ran(&dir).is_empty(), "a refused step ran something");
    }
}
