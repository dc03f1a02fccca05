//! The audit chain on a real store: verifies after a mix of runs, refuses
//! updates and deletes, and names the first bad record for each kind of
//! tampering done behind firedrill's back.

use firedrill::Mode;
use firedrill::store::verify_store;
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

/// A connection to the environment's database behind firedrill's back.
pub(crate) enum Raw {
    Sqlite(SqliteConnection),
    Pg(sqlx::PgConnection),
}

impl Raw {
    pub(crate) async fn exec(&mut self, statement: &str) -> Result<(), sqlx::Error> {
        let sql = || sqlx::AssertSqlSafe(statement.to_string());
        match self {
            Raw::Sqlite(c) => sqlx::query(sql()).execute(c).await.map(|_| ()),
            Raw::Pg(c) => sqlx::query(sql()).execute(c).await.map(|_| ()),
        }
    }

    /// The integer `statement` returns (one row, one column).
    pub(crate) async fn int(&mut self, statement: &str) -> i64 {
        let sql = || sqlx::AssertSqlSafe(statement.to_string());
        match self {
            Raw::Sqlite(c) => sqlx::query_scalar(sql()).fetch_one(c).await,
            Raw::Pg(c) => sqlx::query_scalar(sql()).fetch_one(c).await,
        }
        .unwrap_or_else(|e| panic!("{statement}: {e}"))
    }

    /// Statements that remove the append-only guards (records, checkpoints).
    pub(crate) fn drop_guards(&self) -> &'static [&'static str] {
        match self {
            Raw::Sqlite(_) => &[
                "DROP TRIGGER audit_events_no_update",
                "DROP TRIGGER audit_events_no_delete",
                "DROP TRIGGER audit_checkpoints_no_update",
                "DROP TRIGGER audit_checkpoints_no_delete",
            ],
            Raw::Pg(_) => &[
                "DROP TRIGGER audit_events_no_change ON audit_events",
                "DROP TRIGGER audit_checkpoints_no_change ON audit_checkpoints",
            ],
        }
    }
}

pub(crate) async fn raw(env: &TestEnv) -> Raw {
    match &env.database {
        Some(url) => Raw::Pg(
            <sqlx::PgConnection as sqlx::Connection>::connect(url)
                .await
                .expect("raw connection"),
        ),
        None => Raw::Sqlite(
            SqliteConnection::connect(&format!(
                "sqlite://{}",
                env.home.path().join("firedrill.db").display()
            ))
            .await
            .expect("raw connection"),
        ),
    }
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
        let err = db.exec(statement).await.expect_err("append-only");
        assert!(err.to_string().contains("append-only"), "{err}");
    }
    // Someone with raw write access drops the guard; the chain still tells.
    for statement in db.drop_guards() {
        db.exec(statement).await.expect("drop trigger");
    }

    // Each case: tamper, check the first bad record named, undo, check clean.
    let far = total + 100;
    /// (what, tamper statements, first bad seq, words in the problem, undo statements)
    type Case = (&'static str, Vec<String>, i64, &'static str, Vec<String>);
    let cases: Vec<Case> = vec![
        (
            "modified",
            vec!["UPDATE audit_events SET actor_id = 'mallory' WHERE seq = 7".into()],
            7,
            "modified",
            vec!["UPDATE audit_events SET actor_id = 'tester' WHERE seq = 7".into()],
        ),
        (
            "deleted",
            vec![
                "CREATE TABLE saved AS SELECT * FROM audit_events WHERE seq = 10".into(),
                "DELETE FROM audit_events WHERE seq = 10".into(),
            ],
            11,
            "deleted",
            vec!["INSERT INTO audit_events SELECT * FROM saved".into()],
        ),
        (
            "inserted",
            vec![
                "DELETE FROM audit_events WHERE seq = 10".into(),
                "INSERT INTO audit_events SELECT 10, time, actor_kind, 'mallory', action, subject, outcome, details, run_id, prev_hash, hash FROM saved".into(),
            ],
            10,
            "modified",
            vec![
                "DELETE FROM audit_events WHERE seq = 10".into(),
                "INSERT INTO audit_events SELECT * FROM saved".into(),
            ],
        ),
        (
            "reordered",
            vec![
                format!("UPDATE audit_events SET seq = {far} WHERE seq = 12"),
                "UPDATE audit_events SET seq = 12 WHERE seq = 13".into(),
                format!("UPDATE audit_events SET seq = 13 WHERE seq = {far}"),
            ],
            12,
            "",
            vec![],
        ),
    ];
    for (what, tamper, seq, words, undo) in cases {
        run_sql(&mut db, &tamper).await;
        let bad = verify_store(env.store.as_ref())
            .await
            .expect("verify")
            .first_bad
            .unwrap_or_else(|| panic!("{what}: not detected"));
        assert_eq!(bad.seq, seq, "{what}: {}", bad.problem);
        assert!(bad.problem.contains(words), "{what}: {}", bad.problem);
        if !undo.is_empty() {
            run_sql(&mut db, &undo).await;
            let clean = verify_store(env.store.as_ref()).await.expect("verify");
            assert_eq!(clean.first_bad, None, "{what}: undo");
        }
    }
}

async fn run_sql(db: &mut Raw, statements: &[String]) {
    for statement in statements {
        db.exec(statement)
            .await
            .unwrap_or_else(|e| panic!("{statement}: {e}"));
    }
}

/// `verify` reads the chain a page at a time, each page as one JSON row,
/// and hashes a page while reading the next: across page boundaries, with
/// awkward text in every field, it reads exactly what was stored and still
/// names the first bad record.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_reads_exact_records_across_pages_and_finds_tampering_on_a_later_page() {
    use firedrill::audit::{Actor, NewEvent, VERIFY_PAGE};
    use firedrill::store::{AuditFilter, Batch};
    let env = TestEnv::new().await;
    let before = verify_store(env.store.as_ref())
        .await
        .expect("verify")
        .records as i64;
    let awkward = [
        "plain",
        "quote \" backslash \\ tab \t newline \n",
        "unicode é ü 日本 🔥",
        "control \u{1} \u{1f}",
        "json-looking {\"a\": [1, 2]}",
    ];
    let records = 2 * VERIFY_PAGE + 500;
    let mut appended = 0;
    while appended < records {
        let mut batch = Batch::new();
        for _ in 0..500.min(records - appended) {
            let text = awkward[(appended % 5) as usize];
            let mut event =
                NewEvent::custom(&Actor::user(text), text, format!("{text}:{appended}"))
                    .details(serde_json::json!({ "text": text, "i": appended }));
            if appended % 2 == 0 {
                event = event.run(&format!("run-{}", appended / 10));
            }
            batch = batch.event(event);
            appended += 1;
        }
        env.store.apply(batch).await.expect("append");
    }
    // A page read as JSON equals the same records read row by row.
    let by_rows = env
        .store
        .audit(&AuditFilter {
            limit: 50,
            ..AuditFilter::default()
        })
        .await
        .expect("rows");
    let head = by_rows.iter().map(|r| r.seq).max().expect("records");
    let page = env.store.audit_page(head - 50, 50).await.expect("page");
    let mut by_rows = by_rows;
    by_rows.sort_by_key(|r| r.seq);
    assert_eq!(page, by_rows);

    let v = verify_store(env.store.as_ref()).await.expect("verify");
    assert_eq!(v.first_bad, None);
    assert_eq!(v.records as i64, before + records);

    // Tamper with a record on the third page: named, and nothing after it.
    let victim = before + 2 * VERIFY_PAGE + 7;
    let mut db = raw(&env).await;
    for statement in db.drop_guards() {
        db.exec(statement).await.expect("drop trigger");
    }
    db.exec(&format!(
        "UPDATE audit_events SET subject = 'mallory' WHERE seq = {victim}"
    ))
    .await
    .expect("tamper");
    let bad = verify_store(env.store.as_ref())
        .await
        .expect("verify")
        .first_bad
        .expect("detected");
    assert_eq!(bad.seq, victim, "{}", bad.problem);
    assert!(bad.problem.contains("modified"), "{}", bad.problem);
}

/// Every audit action the engine can write is asserted by some test: its
/// name appears, quoted, in a test (the integration suite, or the test
/// modules of the engine). ARCHITECTURE.md's table is checked against the
/// same list (`action.rs::architecture_lists_exactly_the_audit_actions`).
#[test]
fn every_audit_action_is_asserted_by_some_test() {
    fn sources(dir: &std::path::Path, out: &mut Vec<(std::path::PathBuf, String)>) {
        for entry in std::fs::read_dir(dir).expect("read dir") {
            let path = entry.expect("entry").path();
            if path.is_dir() {
                sources(&path, out);
            } else if path.extension().is_some_and(|e| e == "rs") {
                let text = std::fs::read_to_string(&path).expect("read");
                out.push((path, text));
            }
        }
    }
    let root = firedrill_tests::workspace_root();
    let mut tests = Vec::new();
    sources(&root.join("tests/integration"), &mut tests);
    let mut engine = Vec::new();
    sources(&root.join("engine/src"), &mut engine);
    // Only the test code of engine files: after `#[cfg(test)]`, or a
    // `tests.rs` module.
    for (path, text) in engine {
        if path.ends_with("audit/action.rs") {
            continue;
        }
        let test_code = if path.file_name().is_some_and(|n| n == "tests.rs") {
            text
        } else {
            text.split_once("#[cfg(test)]")
                .map(|(_, t)| t.to_string())
                .unwrap_or_default()
        };
        tests.push((path, test_code));
    }
    let this = "every_audit_action_is_asserted_by_some_test";
    let unasserted: Vec<&str> = firedrill::audit::Action::ALL
        .iter()
        .map(|a| a.as_str())
        .filter(|name| {
            let quoted = format!("\"{name}\"");
            !tests.iter().any(|(_, text)| {
                text.contains(&quoted) && !text.contains(this) || {
                    // This file: anywhere but this test.
                    text.contains(this)
                        && text
                            .split(this)
                            .next()
                            .is_some_and(|before| before.contains(&quoted))
                }
            })
        })
        .collect();
    assert!(
        unasserted.is_empty(),
        "no test asserts these audit actions are written: {unasserted:?}"
    );
}
