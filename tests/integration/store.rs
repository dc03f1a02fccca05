//! The group-commit writer: many concurrent batches, one of them a conflict,
//! at both edges of `write-batch-max`. The conflicting batch rolls back alone,
//! every other batch is durable, and the audit chain stays gap-free.

use std::sync::Arc;

use firedrill::audit::{Actor, NewEvent};
use firedrill::store::verify_store;
use firedrill::store::{
    Applied, AuditFilter, Batch, KernelRow, SqliteStore, Store, StoreConfig, Write,
};

fn kernel(name: &str, digest: &str) -> KernelRow {
    KernelRow {
        name: name.into(),
        version: "1.0.0".into(),
        digest: digest.into(),
        size_bytes: 1,
        manifest: serde_json::json!({}),
        published_at: "2026-11-23T00:00:00Z".into(),
        published_by: "user:test".into(),
    }
}

fn publish(name: &str, digest: &str) -> Batch {
    Batch::new()
        .write(Write::PublishKernel(kernel(name, digest)))
        .event(NewEvent::new(
            &Actor::user("test"),
            firedrill::audit::Action::KernelPublished,
            format!("kernel:{name}@1.0.0"),
        ))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_batches_with_a_conflict_commit_together_and_keep_the_chain() {
    for batch_max in [1, 256] {
        let dir = tempfile::tempdir().expect("tempdir");
        let config = StoreConfig {
            write_batch_max: batch_max,
            write_queue: 8,
            ..StoreConfig::default()
        };
        let store: Arc<dyn Store> = Arc::new(
            SqliteStore::open(&dir.path().join("firedrill.db"), &config)
                .await
                .expect("store"),
        );
        assert_eq!(
            store.apply(publish("k0", "sha256:a")).await.expect("apply"),
            Applied::Done
        );
        // 100 concurrent batches (more than the queue holds, so writers wait):
        // 98 new kernels, one identical republish, one conflicting republish.
        let mut tasks = Vec::new();
        for i in 1..=100 {
            let store = store.clone();
            tasks.push(tokio::spawn(async move {
                let batch = match i {
                    50 => publish("k0", "sha256:a"),
                    51 => publish("k0", "sha256:DIFFERENT"),
                    _ => publish(&format!("k{i}"), "sha256:b"),
                };
                (i, store.apply(batch).await.expect("apply"))
            }));
        }
        for t in tasks {
            let (i, applied) = t.await.expect("task");
            let expected = match i {
                50 => Applied::AlreadyPresent,
                51 => Applied::Conflict {
                    existing_digest: "sha256:a".into(),
                },
                _ => Applied::Done,
            };
            assert_eq!(
                applied, expected,
                "batch {i} with write-batch-max {batch_max}"
            );
        }
        assert_eq!(store.kernels().await.expect("kernels").len(), 99);
        let v = verify_store(store.as_ref()).await.expect("verify");
        assert_eq!(v.first_bad, None);
        // One record per applied publish: the no-op and the conflict wrote none.
        assert_eq!(v.records, 99);
        let audit = store
            .audit(&AuditFilter {
                limit: 1000,
                ..AuditFilter::default()
            })
            .await
            .expect("audit");
        let seqs: Vec<i64> = audit.iter().map(|r| r.seq).collect();
        assert_eq!(seqs, (1..=99).collect::<Vec<_>>(), "gap-free");
    }
}

/// The two databases' schemas are written separately (SQLite's migrations
/// grew one change at a time; PostgreSQL's started from the result): they
/// must agree, table by table and column by column. Starts its own
/// throwaway PostgreSQL, whichever backend the suite runs on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sqlite_and_postgresql_schemas_have_the_same_tables_and_columns() {
    use sqlx::Row as _;
    use std::collections::BTreeSet;

    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("schema.db");
    SqliteStore::open(&path, &StoreConfig::default())
        .await
        .expect("sqlite migrates");
    let url = firedrill_tests::pg::new_database().await;
    firedrill::store::PgStore::open(&url, &StoreConfig::default())
        .await
        .expect("postgres migrates");

    let mut lite = <sqlx::SqliteConnection as sqlx::Connection>::connect(&format!(
        "sqlite://{}",
        path.display()
    ))
    .await
    .expect("sqlite");
    let tables: Vec<String> = sqlx::query_scalar(
        "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' AND name NOT LIKE '_sqlx%' ORDER BY name",
    )
    .fetch_all(&mut lite)
    .await
    .expect("tables");
    let mut sqlite_columns = BTreeSet::new();
    for table in &tables {
        // `table` comes from sqlite_master, not from input.
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!("PRAGMA table_info({table})")))
            .fetch_all(&mut lite)
            .await
            .expect("columns");
        for r in rows {
            sqlite_columns.insert((table.clone(), r.get::<String, _>("name")));
        }
    }
    let mut pg = <sqlx::PgConnection as sqlx::Connection>::connect(&url)
        .await
        .expect("postgres");
    let pg_columns: BTreeSet<(String, String)> = sqlx::query_as(
        "SELECT table_name::text, column_name::text FROM information_schema.columns WHERE table_schema = 'public' AND table_name NOT LIKE '_sqlx%'",
    )
    .fetch_all(&mut pg)
    .await
    .expect("pg columns")
    .into_iter()
    .collect();
    assert!(sqlite_columns.len() > 40, "{sqlite_columns:?}");
    let only_sqlite: Vec<_> = sqlite_columns.difference(&pg_columns).collect();
    let only_pg: Vec<_> = pg_columns.difference(&sqlite_columns).collect();
    assert!(
        only_sqlite.is_empty() && only_pg.is_empty(),
        "the schemas differ: only in SQLite {only_sqlite:?}; only in PostgreSQL {only_pg:?}"
    );
}

/// A store a newer firedrill migrated (one migration more than this binary
/// knows, and a table it does not know) is refused by this binary, in
/// process and on the command line, naming both schema versions and what
/// to do; and it is left as it was (no migration applied or undone, no
/// table added), so the newer binary can still open it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_written_by_a_newer_schema_is_refused_and_left_unchanged() {
    let env = firedrill_tests::TestEnv::new().await;
    let mut raw = super::audit::raw(&env).await;
    let known = raw.int("SELECT MAX(version) FROM _sqlx_migrations").await;
    let newer = known + 1;
    let (blob, tables) = match raw {
        super::audit::Raw::Sqlite(_) => ("X'00'", "SELECT COUNT(*) FROM sqlite_master"),
        super::audit::Raw::Pg(_) => (
            "'\\x00'::bytea",
            "SELECT COUNT(*) FROM information_schema.tables WHERE table_schema = current_schema()",
        ),
    };
    raw.exec("CREATE TABLE from_a_newer_firedrill (x INTEGER)")
        .await
        .expect("newer table");
    raw.exec(&format!(
        "INSERT INTO _sqlx_migrations (version, description, success, checksum, execution_time)
         VALUES ({newer}, 'from a newer firedrill', TRUE, {blob}, 1)"
    ))
    .await
    .expect("newer migration");
    let before = (
        raw.int("SELECT COUNT(*) FROM _sqlx_migrations").await,
        raw.int(tables).await,
    );

    let home = firedrill::home::Home::open(env.home.path()).expect("home");
    let err = home
        .store()
        .await
        .expect_err("a store from a newer schema is refused")
        .to_string();
    let out = std::process::Command::new(firedrill_tests::firedrill_bin())
        .arg("--home")
        .arg(env.home.path())
        .args(["runs", "list"])
        .output()
        .expect("run firedrill");
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let printed = String::from_utf8_lossy(&out.stderr).into_owned();
    for said in [&err, &printed] {
        for needle in [
            "written by a newer firedrill".to_string(),
            format!("schema version {newer}"),
            format!("this binary knows up to {known}"),
            "nothing was changed".to_string(),
            "run the newer firedrill".to_string(),
        ] {
            assert!(said.contains(&needle), "{needle}: {said}");
        }
    }
    let after = (
        raw.int("SELECT COUNT(*) FROM _sqlx_migrations").await,
        raw.int(tables).await,
    );
    assert_eq!(before, after, "the refused store was changed");
    assert_eq!(
        raw.int(&format!(
            "SELECT COUNT(*) FROM _sqlx_migrations WHERE version = {newer}"
        ))
        .await,
        1
    );
}
