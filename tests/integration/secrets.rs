//! A canary secret that a kernel tries to leak every way it can must appear
//! in nothing firedrill records, while the kernel really used its value.

use firedrill::Mode;
use firedrill::store::{AuditFilter, RunStatus};
use firedrill_tests::{CANARY, TestEnv};

fn runbook(dir: &std::path::Path, fail: bool) -> String {
    format!(
        "apiVersion: firedrill/v1\nname: leaky\nversion: 1\nsteps:\n  - id: leak\n    kernel: hostile@0.1.0\n    targets: [demo-host]\n    with: {{ behaviour: leak-secret, path: {}, fail: {fail} }}\n",
        dir.display()
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_canary_secret_never_reaches_the_store_audit_or_outputs() {
    let env = TestEnv::new().await;
    let used = env.home.path().join("used");
    std::fs::create_dir_all(&used).expect("dir");

    let ok = env
        .run_text(&runbook(&used, false), Mode::Live, &[])
        .await
        .expect("runs");
    let failed = env
        .run_text(&runbook(&used, true), Mode::Live, &[])
        .await
        .expect("runs");
    // The kernel really had the value: it named a file after it on the target.
    assert!(
        used.join(CANARY).exists(),
        "the kernel did not receive the secret"
    );

    let run = env.store.run(&ok).await.expect("read").expect("run");
    assert_eq!(run.status, RunStatus::Succeeded);
    let steps = env.store.steps(&ok).await.expect("steps");
    let output = steps[0].output.as_ref().expect("output");
    assert_eq!(output["leaked"], "[redacted]");
    assert_eq!(output["echo"], "[redacted]\n");
    assert!(
        steps[0]
            .logs
            .to_string()
            .contains("the secret is [redacted]")
    );
    let calls = env.store.host_calls(&ok).await.expect("calls");
    assert!(
        calls
            .iter()
            .any(|c| c.call["command"] == "echo '[redacted]'"
                || c.call["command"] == "echo [redacted]"),
        "{calls:?}"
    );

    let run = env.store.run(&failed).await.expect("read").expect("run");
    assert_eq!(run.status, RunStatus::Failed);
    assert!(
        run.error
            .as_deref()
            .is_some_and(|e| e.contains("failed while holding [redacted]")),
        "{:?}",
        run.error
    );

    // Nowhere, in any form firedrill keeps: rows, audit, or raw database bytes.
    for id in [&ok, &failed] {
        let view = serde_json::json!({
            "run": env.store.run(id).await.expect("run"),
            "steps": env.store.steps(id).await.expect("steps"),
            "calls": env.store.host_calls(id).await.expect("calls"),
            "audit": env.store.audit(&AuditFilter { run_id: Some(id.clone()), ..AuditFilter::default() }).await.expect("audit"),
        });
        assert!(!view.to_string().contains(CANARY), "leaked in {view}");
    }
    let bytes = env.store_bytes().await;
    assert!(!bytes.is_empty());
    assert!(
        !bytes.windows(CANARY.len()).any(|w| w == CANARY.as_bytes()),
        "the canary is in the database files"
    );
}
