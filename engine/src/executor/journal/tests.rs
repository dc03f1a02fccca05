//! The journal's promises: fenced, nothing after surrender, the only writer.

use std::time::Instant;

use super::*;
use crate::kernel::{CallKind, CallOutcome, Limit};
use crate::store::{AuditFilter, RunRow, SqliteStore, StepStatus, StoreConfig};

/// A store holding one run claimed by node `n1` (epoch 1).
async fn claimed_run(dir: &std::path::Path) -> Arc<dyn Store> {
    claimed_run_with(dir, &StoreConfig::default()).await
}

/// [`claimed_run`] on a store opened with `config`.
async fn claimed_run_with(dir: &std::path::Path, config: &StoreConfig) -> Arc<dyn Store> {
    let store = SqliteStore::open(&dir.join("db.sqlite"), config)
        .await
        .expect("store");
    let store: Arc<dyn Store> = Arc::new(store);
    let run = RunRow {
        id: "run-1".into(),
        runbook: "rb".into(),
        runbook_version: 1,
        runbook_digest: "sha256:x".into(),
        draft: false,
        mode: "live".into(),
        actor: "user:alice".into(),
        status: RunStatus::Queued,
        inputs: json!({}),
        kernels: json!({}),
        error: None,
        started_at: now_rfc3339(),
        finished_at: None,
        cancel_requested: None,
        drill: false,
        owner: None,
        epoch: 0,
        gate: None,
        source: None,
    };
    let admitted = control(
        store.as_ref(),
        &Metrics::default(),
        &Actor::user("alice"),
        RunControl::Admit {
            run: Box::new(run),
            details: json!({}),
            max_active: 10,
            max_per_runbook: 10,
            claim_by: Some(("n1", 60_000)),
        },
    )
    .await
    .expect("admit");
    assert!(
        matches!(admitted, Applied::Claimed { epoch: 1, .. }),
        "{admitted:?}"
    );
    // Its step `restart` has started (by the holder).
    let holder = Journal::new(
        store.clone(),
        Arc::new(Metrics::default()),
        lease(1, Instant::now()),
        Actor::user("alice"),
    );
    assert_eq!(
        holder
            .record(started("restart", 0, StepStatus::Running))
            .await
            .expect("started"),
        Applied::Done
    );
    store
}

/// Step `id` (at `position`) recorded as started, in `status`.
fn started(id: &str, position: i64, status: StepStatus) -> RunEvent<'static> {
    RunEvent::StepStarted {
        row: StepRow {
            run_id: "run-1".into(),
            step_id: id.into(),
            position,
            phase: crate::store::Phase::Main,
            kernel: "k@1.0.0".into(),
            kernel_digest: None,
            status,
            attempts: 0,
            targets: json!(["web-1"]),
            input: None,
            output: None,
            error: None,
            logs: json!([]),
            started_at: Some(now_rfc3339()),
            finished_at: None,
            duration_ms: None,
        },
        kernel: "k@1.0.0".into(),
        digest: "sha256:k".into(),
    }
}

fn lease(epoch: i64, sent_at: Instant) -> Arc<RunLease> {
    Arc::new(RunLease::new(
        Fence {
            run_id: "run-1".into(),
            owner: "n1".into(),
            epoch,
        },
        Duration::from_secs(60),
        sent_at,
    ))
}

fn call() -> HostCall {
    HostCall {
        index: 0,
        call: CallKind::Exec {
            target: "web-1".into(),
            command: "systemctl restart web".into(),
        },
        effect: Some(crate::Effect::Change),
        simulated: false,
        outcome: CallOutcome::Failed {
            reason: "exit 1".into(),
        },
        started_at_ms: 0,
        duration_ms: 1,
        faults: Default::default(),
    }
}

async fn records(store: &dyn Store) -> Vec<String> {
    store
        .audit(&AuditFilter {
            run_id: Some("run-1".into()),
            limit: 1000,
            ..Default::default()
        })
        .await
        .expect("audit")
        .into_iter()
        .map(|r| r.action)
        .collect()
}

/// The events the executor records between a step's start and end,
/// retries and limits included (they once bypassed the fence).
fn events<'a>(limit: &'a LimitExceeded, call: &'a HostCall) -> Vec<RunEvent<'a>> {
    vec![
        RunEvent::StepRetried {
            step: "restart",
            target: "web-1",
            attempt: 1,
            error: Some("exit 1".into()),
            backoff: Duration::from_millis(10),
        },
        RunEvent::LimitExceeded {
            step: "restart",
            target: "web-1",
            limit,
        },
        RunEvent::HostCall {
            step: "restart",
            target: "web-1",
            attempt: 1,
            call,
        },
    ]
}

#[tokio::test]
async fn a_node_that_lost_the_run_records_no_retry_limit_or_host_call() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = claimed_run(dir.path()).await;
    let before = records(store.as_ref()).await;
    let limit = LimitExceeded {
        limit: Limit::Memory,
        value: 1,
    };
    let call = call();
    // Epoch 0: another node has claimed the run since (it is at 1).
    let stale_metrics = Arc::new(Metrics::default());
    let stale = Journal::new(
        store.clone(),
        stale_metrics.clone(),
        lease(0, Instant::now()),
        Actor::user("alice"),
    );
    for event in events(&limit, &call) {
        let e = stale.record(event).await.expect_err("fenced");
        assert!(matches!(e, StoreError::Fenced { .. }), "{e}");
    }
    stale.host_call("restart", "web-1", 1, &call).await;
    assert_eq!(records(store.as_ref()).await, before);
    assert!(store.host_calls("run-1").await.expect("calls").is_empty());
    // What it did not record, it does not count either.
    let counted = stale_metrics.render(&[]);
    for family in ["firedrill_retries_total{", "firedrill_host_calls_total{"] {
        assert!(!counted.contains(family), "{family} counted:\n{counted}");
    }

    // The holder's journal records each of them.
    let holder = Journal::new(
        store.clone(),
        Arc::new(Metrics::default()),
        lease(1, Instant::now()),
        Actor::user("alice"),
    );
    for event in events(&limit, &call) {
        assert_eq!(holder.record(event).await.expect("recorded"), Applied::Done);
    }
    let counted = holder.sink.metrics.render(&[]);
    assert!(
        counted.contains("firedrill_retries_total{kind=\"step\"} 1"),
        "{counted}"
    );
    assert!(counted.contains("firedrill_host_calls_total{"), "{counted}");
    let after = records(store.as_ref()).await;
    for want in ["step.retried", "limit.exceeded", "host.call"] {
        assert!(
            after.iter().any(|a| a == want),
            "{want} missing from {after:?}"
        );
    }
    assert_eq!(store.host_calls("run-1").await.expect("calls").len(), 1);
}

#[tokio::test]
async fn a_node_that_gave_the_run_up_records_nothing_more_host_calls_included() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = claimed_run(dir.path()).await;
    let before = records(store.as_ref()).await;
    // The fence still holds in the store, but the node's own clock says
    // its lease ran low: it surrenders the run at its next change.
    let low = lease(1, Instant::now() - Duration::from_secs(59));
    let journal = Journal::new(
        store.clone(),
        Arc::new(Metrics::default()),
        low.clone(),
        Actor::user("alice"),
    );
    assert!(journal.may_change().is_err());
    assert!(low.surrendered());
    let limit = LimitExceeded {
        limit: Limit::Memory,
        value: 1,
    };
    let call = call();
    for event in events(&limit, &call) {
        let e = journal.record(event).await.expect_err("given up");
        assert!(matches!(e, StoreError::Fenced { .. }), "{e}");
    }
    // The recorder path of a kernel's host calls.
    journal.host_call("restart", "web-1", 1, &call).await;
    assert_eq!(records(store.as_ref()).await, before);
    assert!(store.host_calls("run-1").await.expect("calls").is_empty());
}

/// Every write of a run's rows is in this file: no other file of the
/// engine names a write of run, step, target or host-call rows, and no
/// other executor file applies a batch (publish and rollback of
/// runbooks, in `resolve.rs`, are not run rows).
#[test]
fn only_the_journal_writes_a_run() {
    const RUN_WRITES: &[&str] = &[
        "Write::EnqueueRun",
        "Write::FinishRun",
        "Write::TransitionRun",
        "Write::UpsertStep",
        "Write::UpsertStepTarget",
        "Write::InsertHostCall",
        "Write::RequestCancel",
        "Write::DecideStep",
        "Write::InsertApproval",
        "Write::RenewLease",
        "Write::ClaimQueued",
        "Write::TakeOver",
    ];
    let src = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut stack = vec![src.clone()];
    let mut seen = 0;
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).expect("read src") {
            let path = entry.expect("entry").path();
            if path.is_dir() {
                stack.push(path);
                continue;
            }
            if path.extension().is_none_or(|e| e != "rs") {
                continue;
            }
            let name = path
                .strip_prefix(&src)
                .expect("under src")
                .to_string_lossy()
                .to_string();
            let text = std::fs::read_to_string(&path).expect("read");
            seen += 1;
            // The store defines and applies them; the journal writes them;
            // claims are the journal's `claim`, called from claim.rs.
            if name.starts_with("store") || name.starts_with("executor/journal") {
                continue;
            }
            for write in RUN_WRITES {
                let allowed = name == "executor/claim.rs"
                    && matches!(*write, "Write::ClaimQueued" | "Write::TakeOver");
                assert!(
                    allowed || !text.contains(write),
                    "{name} builds {write}; record it through the journal (executor/journal.rs)"
                );
            }
            if name.starts_with("executor") && name != "executor/resolve.rs" {
                assert!(
                    !text.contains(".apply("),
                    "{name} applies a store write itself; record it through the journal"
                );
            }
        }
    }
    assert!(seen > 50, "only {seen} source files found");
}

/// A status write the transition table does not have is refused whole
/// (`BadTransition`), and `FinishRun` ends only a running run.
#[tokio::test]
async fn the_store_refuses_a_move_the_table_does_not_have() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = claimed_run(dir.path()).await;
    let actor = Actor::user("alice");
    let before = records(store.as_ref()).await;
    let revive = Batch::new()
        .write(Write::TransitionRun {
            id: "run-1".into(),
            from: vec![RunStatus::Succeeded],
            to: RunStatus::Running,
            error: None,
            finished_at: None,
        })
        .event(NewEvent::new(&actor, Action::RunResumed, "run:run-1").run("run-1"));
    let e = store
        .apply(revive)
        .await
        .expect_err("a finished run never moves");
    assert!(matches!(e, StoreError::BadTransition { .. }), "{e}");
    let finish = |status| {
        Batch::new()
            .write(Write::FinishRun {
                id: "run-1".into(),
                status,
                error: None,
                finished_at: now_rfc3339(),
            })
            .event(NewEvent::new(&actor, Action::RunFinished, "run:run-1").run("run-1"))
    };
    let e = store
        .apply(finish(RunStatus::Queued))
        .await
        .expect_err("finishing into queued is no move");
    assert!(matches!(e, StoreError::BadTransition { .. }), "{e}");
    assert_eq!(
        records(store.as_ref()).await,
        before,
        "refused batches leave no record"
    );
    assert_eq!(
        store
            .apply(finish(RunStatus::Succeeded))
            .await
            .expect("ends"),
        Applied::Done
    );
    assert_eq!(
        store
            .apply(finish(RunStatus::Failed))
            .await
            .expect("answers"),
        Applied::Stale,
        "a finished run is not finished again"
    );
    let run = store.run("run-1").await.expect("read").expect("run");
    assert_eq!(run.status, RunStatus::Succeeded);
}

fn finished() -> RunEvent<'static> {
    RunEvent::RunFinished {
        status: RunStatus::Succeeded,
        error: None,
        runbook: "rb",
        version: 1,
        mode: "dry-run",
        took: Duration::from_millis(5),
    }
}

/// The step rows in the store: id and status, by position.
async fn step_rows(store: &dyn Store) -> Vec<(String, StepStatus)> {
    store
        .steps("run-1")
        .await
        .expect("steps")
        .into_iter()
        .map(|s| (s.step_id, s.status))
        .collect()
}

fn deferring(store: &Arc<dyn Store>, epoch: i64, window_ms: u64, records: usize) -> Journal {
    Journal::new(
        store.clone(),
        Arc::new(Metrics::default()),
        lease(epoch, Instant::now()),
        Actor::user("alice"),
    )
    .deferring(Deferral {
        window: Duration::from_millis(window_ms),
        records,
    })
}

/// Wait up to 10 s for `check` to hold.
async fn eventually<F: std::future::Future<Output = bool>>(mut check: impl FnMut() -> F) -> bool {
    for _ in 0..200 {
        if check().await {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    false
}

#[tokio::test]
async fn a_dry_runs_step_records_are_held_for_their_window_and_only_their_last_state_written() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = claimed_run(dir.path()).await;
    let journal = deferring(&store, 1, 2_000, 256);
    let audited = records(store.as_ref()).await.len();
    for status in [StepStatus::Running, StepStatus::Succeeded] {
        assert_eq!(
            journal
                .record(started("probe", 1, status))
                .await
                .expect("held"),
            Applied::Done
        );
    }
    // Held: neither the row nor its audit records are in the store yet.
    assert_eq!(
        step_rows(store.as_ref()).await,
        [("restart".to_string(), StepStatus::Running)]
    );
    assert_eq!(records(store.as_ref()).await.len(), audited);
    // Within the window (and a margin) both are written, once, in order;
    // the step row in its last state.
    assert!(
        eventually(|| async { step_rows(store.as_ref()).await.len() == 2 }).await,
        "the window passed and nothing was written"
    );
    assert_eq!(
        step_rows(store.as_ref()).await[1],
        ("probe".to_string(), StepStatus::Succeeded)
    );
    let after = records(store.as_ref()).await;
    assert_eq!(after.len(), audited + 2, "{after:?}");
    assert!(
        after[audited..].iter().all(|a| a == "step.started"),
        "{after:?}"
    );
}

#[tokio::test]
async fn held_records_are_written_at_the_record_limit_and_with_the_runs_end() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = claimed_run(dir.path()).await;
    // A window far longer than the test: only the limit and the end write.
    let journal = deferring(&store, 1, 60_000, 2);
    journal
        .record(started("a", 1, StepStatus::Succeeded))
        .await
        .expect("held");
    assert_eq!(step_rows(store.as_ref()).await.len(), 1);
    // The second record reaches `records`: both are written now.
    journal
        .record(started("b", 2, StepStatus::Succeeded))
        .await
        .expect("written");
    assert_eq!(step_rows(store.as_ref()).await.len(), 3);
    journal
        .record(started("c", 3, StepStatus::Succeeded))
        .await
        .expect("held");
    assert_eq!(step_rows(store.as_ref()).await.len(), 3);
    // The run's end takes what is held with it.
    assert_eq!(
        journal.record(finished()).await.expect("finished"),
        Applied::Done
    );
    assert_eq!(step_rows(store.as_ref()).await.len(), 4);
    let run = store.run("run-1").await.expect("read").expect("run");
    assert_eq!(run.status, RunStatus::Succeeded);
    let chain = crate::store::verify_store(store.as_ref())
        .await
        .expect("verify");
    assert!(chain.first_bad.is_none(), "{chain:?}");
}

#[tokio::test]
async fn a_failed_write_keeps_what_was_held_and_the_timer_tries_again() {
    let dir = tempfile::tempdir().expect("tempdir");
    // A short busy timeout, so a locked database fails the write quickly.
    let config = StoreConfig {
        busy_timeout_ms: 50,
        ..StoreConfig::default()
    };
    let store = claimed_run_with(dir.path(), &config).await;
    let journal = deferring(&store, 1, 100, 256);
    // Another process holds the database's write lock.
    let mut other = {
        use sqlx::ConnectOptions as _;
        sqlx::sqlite::SqliteConnectOptions::new()
            .filename(dir.path().join("db.sqlite"))
            .connect()
            .await
            .expect("second connection")
    };
    sqlx::query("BEGIN EXCLUSIVE")
        .execute(&mut other)
        .await
        .expect("lock");
    journal
        .record(started("probe", 1, StepStatus::Succeeded))
        .await
        .expect("held");
    // Several windows pass with every write refused: nothing is written.
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(step_rows(store.as_ref()).await.len(), 1);
    sqlx::query("COMMIT")
        .execute(&mut other)
        .await
        .expect("unlock");
    // Once the lock is gone, the next try writes what was held.
    assert!(
        eventually(|| async { step_rows(store.as_ref()).await.len() == 2 }).await,
        "the held record was lost after a failed write"
    );
    journal.record(finished()).await.expect("finished");
    let after = records(store.as_ref()).await;
    assert_eq!(
        after.iter().filter(|a| *a == "step.started").count(),
        2,
        "written once: {after:?}"
    );
}

#[tokio::test]
async fn a_fenced_write_makes_a_deferring_journal_refuse_every_later_record() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = claimed_run(dir.path()).await;
    let before = records(store.as_ref()).await;
    // Epoch 0: the run is another node's (at epoch 1).
    let stale = deferring(&store, 0, 60_000, 2);
    // Held: nothing is written, so nothing is refused yet.
    assert_eq!(
        stale
            .record(started("a", 1, StepStatus::Succeeded))
            .await
            .expect("held"),
        Applied::Done
    );
    // The write at the limit is fenced...
    let e = stale
        .record(started("b", 2, StepStatus::Succeeded))
        .await
        .expect_err("fenced");
    assert!(matches!(e, StoreError::Fenced { .. }), "{e}");
    // ...and from then on every record is refused at once, held or not.
    for event in [started("c", 3, StepStatus::Succeeded), finished()] {
        let e = stale.record(event).await.expect_err("refused");
        assert!(matches!(e, StoreError::Fenced { .. }), "{e}");
    }
    assert_eq!(records(store.as_ref()).await, before);
    assert_eq!(step_rows(store.as_ref()).await.len(), 1);
    let run = store.run("run-1").await.expect("read").expect("run");
    assert_eq!(run.status, RunStatus::Running);
}
