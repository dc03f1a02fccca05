//! The audit chain on a real store: verifies after a mix of runs, refuses
//! updates and deletes, and names the first bad record for each kind of
//! tampering done behind firedrill's back.

use firedrill::Mode;
use firedrill::audit::verify_store;
use firedrill_tests::TestEnv;
use sqlx::{Connection, SqliteConnection};

const MIXED: &str = r#"apiVersion: firedrill/v1
name: mixed
version: 1
inputs: { type: object, properties: { behaviour: { type: string } } }
steps:
  - id: probe
    kernel: service-status@1.0.0
    targets: [demo-host]
    with: { unit: web }
  - id: act
    kernel: hostile@0.1.0
    targets: [demo-host]
    with: { behaviour: "{{ inputs.behaviour }}" }
"#;

async fn raw(env: &TestEnv) -> SqliteConnection {
    SqliteConnection::connect(&format!(
        "sqlite://{}",
        env.home.path().join("firedrill.db").display()
    ))
    .await
    .expect("raw connection")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chain_verifies_after_mixed_runs_and_detects_each_tampering() {
    let env = TestEnv::new().await;
    for (mode, behaviour) in [
        (Mode::DryRun, "ok"),
        (Mode::Live, "ok"),
        (Mode::Live, "fail"),
        (Mode::Live, "undeclared-command"),
        (Mode::DryRun, "retryable"),
    ] {
        env.run_text(MIXED, mode, &[("behaviour", behaviour)])
            .await
            .expect("runs");
    }
    let v = verify_store(env.store.as_ref()).await.expect("verify");
    assert_eq!(v.first_bad, None);
    assert!(v.records > 30, "{}", v.records);
    let total = v.records as i64;

    let mut db = raw(&env).await;
    // firedrill itself refuses to change history.
    for statement in [
        "UPDATE audit_events SET outcome = 'ok' WHERE seq = 5",
        "DELETE FROM audit_events WHERE seq = 5",
    ] {
        let err = sqlx::query(statement)
            .execute(&mut db)
            .await
            .expect_err("append-only");
        assert!(err.to_string().contains("append-only"), "{err}");
    }
    // Someone with raw write access drops the guard; the chain still tells.
    for t in ["audit_events_no_update", "audit_events_no_delete"] {
        sqlx::query(sqlx::AssertSqlSafe(format!("DROP TRIGGER {t}")))
            .execute(&mut db)
            .await
            .expect("drop trigger");
    }
    let exec = |sql: String| sqlx::query(sqlx::AssertSqlSafe(sql));

    // Modified: change one field of record 7.
    exec("UPDATE audit_events SET actor_id = 'mallory' WHERE seq = 7".into())
        .execute(&mut db)
        .await
        .expect("tamper");
    let bad = verify_store(env.store.as_ref())
        .await
        .expect("verify")
        .first_bad
        .expect("detected");
    assert_eq!(bad.seq, 7);
    assert!(bad.problem.contains("modified"), "{}", bad.problem);
    exec("UPDATE audit_events SET actor_id = 'tester' WHERE seq = 7".into())
        .execute(&mut db)
        .await
        .expect("undo");
    assert_eq!(
        verify_store(env.store.as_ref())
            .await
            .expect("verify")
            .first_bad,
        None
    );

    // Deleted: remove record 10 (keep a copy to put back).
    exec("CREATE TABLE saved AS SELECT * FROM audit_events WHERE seq = 10".into())
        .execute(&mut db)
        .await
        .expect("save");
    exec("DELETE FROM audit_events WHERE seq = 10".into())
        .execute(&mut db)
        .await
        .expect("tamper");
    let bad = verify_store(env.store.as_ref())
        .await
        .expect("verify")
        .first_bad
        .expect("detected");
    assert_eq!(bad.seq, 11);
    assert!(bad.problem.contains("deleted"), "{}", bad.problem);

    // Inserted: a forged record in the gap.
    exec("INSERT INTO audit_events SELECT 10, time, actor_kind, 'mallory', action, subject, outcome, details, run_id, prev_hash, hash FROM saved".into())
        .execute(&mut db).await.expect("tamper");
    let bad = verify_store(env.store.as_ref())
        .await
        .expect("verify")
        .first_bad
        .expect("detected");
    assert_eq!(bad.seq, 10);
    exec("DELETE FROM audit_events WHERE seq = 10".into())
        .execute(&mut db)
        .await
        .expect("undo");
    exec("INSERT INTO audit_events SELECT * FROM saved".into())
        .execute(&mut db)
        .await
        .expect("undo");
    assert_eq!(
        verify_store(env.store.as_ref())
            .await
            .expect("verify")
            .first_bad,
        None
    );

    // Reordered: swap records 12 and 13 (seq kept in place).
    exec(format!(
        "UPDATE audit_events SET seq = {} WHERE seq = 12",
        total + 100
    ))
    .execute(&mut db)
    .await
    .expect("tamper");
    exec("UPDATE audit_events SET seq = 12 WHERE seq = 13".into())
        .execute(&mut db)
        .await
        .expect("tamper");
    exec(format!(
        "UPDATE audit_events SET seq = 13 WHERE seq = {}",
        total + 100
    ))
    .execute(&mut db)
    .await
    .expect("tamper");
    let bad = verify_store(env.store.as_ref())
        .await
        .expect("verify")
        .first_bad
        .expect("detected");
    assert_eq!(bad.seq, 12);
    assert!(
        bad.problem.contains("prev_hash") || bad.problem.contains("modified"),
        "{}",
        bad.problem
    );
}
