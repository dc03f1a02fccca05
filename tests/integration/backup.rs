//! `firedrill backup` and `firedrill restore`, through the binary: a
//! backup taken while the store is written to, restored into a new home
//! (a machine lost), verified, and the chain going on; and what a restore
//! refuses: a store some process has open, a damaged or edited backup, a
//! backup from a newer schema, and records lost without `--accept-loss`.

use std::path::Path;
use std::process::{Command, Output};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use firedrill::audit::{Actor, NewEvent};
use firedrill::store::Batch;
use firedrill_tests::TestEnv;

use super::tlog::{PROBE, text};

fn cli(home: &Path, args: &[&str]) -> Output {
    Command::new(firedrill_tests::firedrill_bin())
        .arg("--home")
        .arg(home)
        .args(["--actor", "operator"])
        .args(args)
        .output()
        .expect("run firedrill")
}

fn json(out: &Output) -> serde_json::Value {
    assert!(out.status.success(), "{}", text(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", text(&out.stdout)))
}

/// The records `audit verify` counted, asserting it found nothing.
fn verified(home: &Path) -> u64 {
    let out = cli(home, &["audit", "verify", "--json"]);
    let report = json(&out);
    assert_eq!(report["findings"], serde_json::json!([]), "{report}");
    report["chain"]["records"].as_u64().expect("records")
}

/// A second home with everything of `from` but its database: the machine
/// rebuilt from configuration management, the store to come from a backup.
fn rebuilt(from: &Path) -> tempfile::TempDir {
    let to = tempfile::tempdir().expect("tempdir");
    copy_tree(from, to.path());
    to
}

fn copy_tree(from: &Path, to: &Path) {
    for entry in std::fs::read_dir(from).expect("read home") {
        let entry = entry.expect("entry");
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with("firedrill.db") {
            continue;
        }
        let path = entry.path();
        if path.is_dir() {
            std::fs::create_dir_all(to.join(&name)).expect("mkdir");
            copy_tree(&path, &to.join(&name));
        } else {
            std::fs::copy(&path, to.join(&name)).expect("copy");
        }
    }
}

/// Run `statements` on the SQLite file at `path`, behind firedrill's back.
async fn sql(path: &Path, statements: &[&str]) {
    use sqlx::Connection as _;
    let mut conn = sqlx::SqliteConnection::connect(&format!("sqlite://{}", path.display()))
        .await
        .expect("open");
    for s in statements {
        sqlx::query(sqlx::AssertSqlSafe(s.to_string()))
            .execute(&mut conn)
            .await
            .unwrap_or_else(|e| panic!("{s}: {e}"));
    }
}

async fn append(env: &TestEnv, n: usize, tag: &str) {
    let actor = Actor::user("tester");
    let mut batch = Batch::new();
    for i in 0..n {
        batch = batch.event(NewEvent::custom(
            &actor,
            "test.record",
            format!("{tag}:{i}"),
        ));
    }
    env.store.apply(batch).await.expect("append");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backup_under_load_restores_into_a_new_home_verifies_and_the_chain_goes_on() {
    let env = TestEnv::new().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("store.backup");
    let file_arg = file.to_str().expect("utf-8");
    if env.database.is_some() {
        // PostgreSQL has its own tools; nothing is written.
        for args in [vec!["backup", file_arg], vec!["restore", file_arg]] {
            let out = cli(env.home.path(), &args);
            assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
            assert!(
                text(&out.stderr).contains("pg_dump"),
                "{}",
                text(&out.stderr)
            );
        }
        assert!(!file.exists());
        return;
    }
    env.publish(&[PROBE]).await;
    append(&env, 50, "before").await;

    // Writes go on in this process while another process copies the store.
    let stop = Arc::new(AtomicBool::new(false));
    let load = {
        let (store, stop) = (env.store.clone(), stop.clone());
        tokio::spawn(async move {
            let mut batches = 0;
            while !stop.load(Ordering::SeqCst) {
                let actor = Actor::user("load");
                let mut batch = Batch::new();
                for i in 0..10 {
                    batch = batch.event(NewEvent::custom(&actor, "test.load", format!("load:{i}")));
                }
                store.apply(batch).await.expect("load");
                batches += 1;
            }
            batches
        })
    };
    let home = env.home.path().to_path_buf();
    let arg = file_arg.to_string();
    let out = tokio::task::spawn_blocking(move || cli(&home, &["backup", &arg, "--json"]))
        .await
        .expect("backup");
    stop.store(true, Ordering::SeqCst);
    let batches = load.await.expect("load");
    let info = json(&out);
    assert!(batches > 0, "no load ran during the backup");
    assert_eq!(info["recorded"], true, "{info}");
    let copied = info["audit_records"].as_u64().expect("records");
    assert!(copied >= 50, "{info}");
    // The copy is one committed state: its head is a record of the log,
    // and the `store.backed-up` record written after it is not in it.
    let live = verified(env.home.path());
    assert!(copied < live, "{copied} {live}");
    let backed = env.audited("store.backed-up").await;
    assert_eq!(backed.len(), 1);
    assert_eq!(backed[0].actor_id, "operator");
    let details: serde_json::Value = serde_json::from_str(&backed[0].details).expect("details");
    assert_eq!(details["audit_records"].as_u64(), Some(copied));
    assert_eq!(
        details["audit_head_hash"], info["audit_head_hash"],
        "{info}"
    );
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&file)
            .expect("backup")
            .permissions()
            .mode();
        assert_eq!(
            mode & 0o077,
            0,
            "the backup is readable by others: {mode:o}"
        );
    }

    // The machine is lost; a new one has the home's configuration, keys and
    // kernels, and the backup.
    let home2 = rebuilt(env.home.path());
    let restored = json(&cli(home2.path(), &["restore", file_arg, "--json"]));
    assert_eq!(restored["previous"], serde_json::Value::Null, "{restored}");
    assert_eq!(restored["backup"]["audit_records"].as_u64(), Some(copied));
    let after_restore = verified(home2.path());
    assert_eq!(after_restore, copied + 1, "the restore is the next record");
    let records = json(&cli(
        home2.path(),
        &["audit", "list", "--action", "store.restored", "--json"],
    ));
    let record = &records.as_array().expect("list")[0];
    assert_eq!(
        record["seq"].as_i64(),
        info["audit_head_seq"].as_i64().map(|s| s + 1),
        "{record}"
    );
    let details: serde_json::Value =
        serde_json::from_str(record["details"].as_str().expect("details")).expect("json");
    assert_eq!(details["backup_audit_head_hash"], info["audit_head_hash"]);

    // The restored home works, and its chain goes on and verifies.
    let out = cli(home2.path(), &["run", "probe"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(verified(home2.path()) > after_restore);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restore_refuses_an_open_store_a_bad_backup_and_an_unaccepted_loss_changing_nothing() {
    let env = TestEnv::new().await;
    if env.database.is_some() {
        return; // PostgreSQL: the first test checks both commands refuse.
    }
    env.publish(&[PROBE]).await;
    append(&env, 20, "before").await;
    env.token("ci", firedrill::auth::Role::Operator, &[]).await;
    let out = cli(env.home.path(), &["run", "probe"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let dir = tempfile::tempdir().expect("tempdir");
    let backup = dir.path().join("store.backup");
    let backup_arg = backup.to_str().expect("utf-8");
    let info = json(&cli(env.home.path(), &["backup", backup_arg, "--json"]));
    let copied = info["audit_records"].as_u64().expect("records");

    let refused = |home: &Path, args: &[&str], needle: &str| {
        let out = cli(home, args);
        assert_eq!(
            out.status.code(),
            Some(2),
            "{args:?}: {}",
            text(&out.stderr)
        );
        assert!(
            text(&out.stderr).contains(needle),
            "{needle}: {}",
            text(&out.stderr)
        );
    };
    // A store this process has open is not replaced under it.
    let before = std::fs::read(env.home.path().join("firedrill.db")).expect("db");
    refused(
        env.home.path(),
        &["restore", backup_arg],
        "is open in another process",
    );
    assert_eq!(
        std::fs::read(env.home.path().join("firedrill.db")).expect("db"),
        before
    );
    // A backup never replaces a file.
    refused(env.home.path(), &["backup", backup_arg], "already exists");

    let home2 = rebuilt(env.home.path());
    let db2 = home2.path().join("firedrill.db");
    // A WAL left behind by someone who removed the database by hand: it
    // must not be replayed onto the restored one.
    // A real one, with frames: the live store's own.
    let wal = std::fs::read(env.home.path().join("firedrill.db-wal")).expect("live WAL");
    assert!(
        wal.len() > 32 + 24 + 4096,
        "the live WAL has no frame: {}",
        wal.len()
    );
    std::fs::write(home2.path().join("firedrill.db-wal"), wal).expect("wal");
    let variant = |name: &str| {
        let path = dir.path().join(name);
        std::fs::copy(&backup, &path).expect("copy");
        path
    };
    // Damaged on disk.
    let damaged = variant("damaged");
    let mut bytes = std::fs::read(&damaged).expect("read");
    for b in &mut bytes[4096 + 8..3 * 4096] {
        *b = 0x5a;
    }
    std::fs::write(&damaged, bytes).expect("write");
    // One audit record edited by someone with the file.
    let edited = variant("edited");
    sql(
        &edited,
        &[
            "DROP TRIGGER audit_events_no_update",
            "UPDATE audit_events SET subject = 'nothing-happened' WHERE seq = 3",
        ],
    )
    .await;
    // A run in flight when the backup was taken.
    let in_flight = variant("in-flight");
    sql(
        &in_flight,
        &["UPDATE runs SET status = 'running' WHERE id = (SELECT MIN(id) FROM runs)"],
    )
    .await;
    // Written by a newer firedrill.
    let newer = variant("newer");
    sql(
        &newer,
        &[
            "INSERT INTO _sqlx_migrations (version, description, success, checksum, execution_time)
           VALUES (99999, 'newer', TRUE, X'00', 1)",
        ],
    )
    .await;
    let listing = |home: &Path| {
        let mut names: Vec<String> = std::fs::read_dir(home)
            .expect("home")
            .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    };
    let newer_said = format!(
        "the backup {} was written by a newer firedrill",
        std::fs::canonicalize(&newer).expect("path").display()
    );
    let mut first = None;
    for (path, needle) in [
        (&damaged, "is not a usable firedrill store"),
        (&edited, "fails the audit check"),
        (&newer, newer_said.as_str()),
    ] {
        refused(
            home2.path(),
            &["restore", path.to_str().expect("utf-8")],
            needle,
        );
        assert!(!db2.exists(), "{needle}: a store was installed");
        // Nothing left behind: no staged copy, no scratch directory.
        let now = listing(home2.path());
        assert!(!now.iter().any(|n| n.starts_with(".firedrill")), "{now:?}");
        assert_eq!(first.get_or_insert_with(|| now.clone()), &now, "{needle}");
    }

    // The good backup restores; the stale WAL is kept aside, not replayed.
    let done = json(&cli(home2.path(), &["restore", backup_arg, "--json"]));
    assert_eq!(done["switch_engaged"], false, "{done}");
    let previous = done["previous"].as_str().expect("the stale WAL is kept");
    assert!(Path::new(&format!("{previous}-wal")).is_file(), "{done}");
    assert_eq!(verified(home2.path()), copied + 1);
    // A token revoked after the backup stays revoked through a restore.
    let out = cli(home2.path(), &["token", "revoke", "ci"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let out = cli(home2.path(), &["run", "probe"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let out = cli(home2.path(), &["audit", "checkpoint"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let signed_size = verified(home2.path());

    // Restoring the backup again would lose what that checkpoint signed.
    let before = verified(home2.path());
    refused(home2.path(), &["restore", backup_arg], "--accept-loss");
    assert_eq!(
        verified(home2.path()),
        before,
        "the refused restore changed the store"
    );

    // Accepted: the loss is recorded, the old store and checkpoint kept,
    // and a switch engaged meanwhile stays engaged.
    let out = cli(
        home2.path(),
        &["switch", "on", "--reason", "db failover in progress"],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let done = json(&cli(
        home2.path(),
        &["restore", backup_arg, "--accept-loss", "--json"],
    ));
    assert_eq!(done["lost_from"].as_u64(), Some(copied + 1), "{done}");
    assert_eq!(done["lost_to"].as_u64(), Some(signed_size + 1), "{done}");
    assert_eq!(done["switch_engaged"], true, "{done}");
    let previous = done["previous"].as_str().expect("previous kept");
    assert!(Path::new(previous).is_file(), "{previous}");
    let moved = done["signed_checkpoint_moved_to"].as_str().expect("moved");
    assert_eq!(
        done["tokens_revoked_again"].as_array().map(Vec::len),
        Some(1),
        "{done}"
    );
    let tokens = json(&cli(home2.path(), &["token", "list", "--json"]));
    let ci = tokens
        .as_array()
        .expect("tokens")
        .iter()
        .find(|t| t["name"] == "ci")
        .expect("ci");
    assert!(ci["revoked_at"].is_string(), "{ci}");
    // The restore's record, then the switch it kept engaged.
    assert_eq!(verified(home2.path()), copied + 2);
    // The new history signs again; the kept checkpoint still proves the loss.
    let out = cli(home2.path(), &["audit", "checkpoint"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let out = cli(home2.path(), &["audit", "verify", "--checkpoint", moved]);
    assert!(!out.status.success(), "{}", text(&out.stdout));

    // A run in flight in the backup: restored with live automation halted.
    let home3 = rebuilt(env.home.path());
    let done = json(&cli(
        home3.path(),
        &["restore", in_flight.to_str().expect("utf-8"), "--json"],
    ));
    assert_eq!(done["runs_in_flight"], 1, "{done}");
    assert_eq!(done["switch_engaged"], true, "{done}");
    let out = cli(home3.path(), &["switch", "status"]);
    assert!(
        text(&out.stdout).contains("ENGAGED"),
        "{}",
        text(&out.stdout)
    );

    // The newest backup restored in place needs no --accept-loss (its own
    // `store.backed-up` is all the store holds past it), and a plain SQLite
    // connection that holds the store, without the lock file, is seen.
    let newest = dir.path().join("newest.backup");
    let newest_arg = newest.to_str().expect("utf-8");
    json(&cli(home3.path(), &["backup", newest_arg, "--json"]));
    let mut holder = {
        use sqlx::Connection as _;
        sqlx::SqliteConnection::connect(&format!(
            "sqlite://{}",
            home3.path().join("firedrill.db").display()
        ))
        .await
        .expect("connect")
    };
    sqlx::query("SELECT COUNT(*) FROM audit_events")
        .execute(&mut holder)
        .await
        .expect("read");
    let before = std::fs::read(home3.path().join("firedrill.db")).expect("db");
    refused(
        home3.path(),
        &["restore", newest_arg],
        "is open in another process",
    );
    assert_eq!(
        std::fs::read(home3.path().join("firedrill.db")).expect("db"),
        before
    );
    drop(holder);
    let done = json(&cli(home3.path(), &["restore", newest_arg, "--json"]));
    assert_eq!(done["lost_from"], serde_json::Value::Null, "{done}");
    verified(home3.path());
}
