//! The audit log as a verifiable log, as the database owner attacks it:
//! deleting the tail, rewriting from the middle with recomputed hashes,
//! keeping two histories; checkpoints signed by unknown keys or covering
//! more than the log; key rotation; proofs checked by the independent
//! verifier (`tools/verify-audit.py`); `serve` shipping checkpoints to
//! witnesses (one of them down) and exporting to a real rsyslog.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use firedrill::audit::checkpoint::{Checkpoint, SignerKey};
use firedrill::audit::{Actor, NewEvent};
use firedrill::store::Batch;
use firedrill_tests::TestEnv;

use super::audit::{Raw, raw};

pub(crate) const PROBE: &str = r#"apiVersion: firedrill/v1
name: probe
version: 1
steps:
  - id: probe
    kernel: service-status@1.0.0
    targets: [demo-host]
    with: { unit: web }
"#;

fn cli(env: &TestEnv, args: &[&str]) -> Output {
    Command::new(firedrill_tests::firedrill_bin())
        .arg("--home")
        .arg(env.home.path())
        .args(["--actor", "auditor"])
        .args(args)
        .output()
        .expect("run firedrill")
}

pub(crate) fn text(o: &[u8]) -> String {
    String::from_utf8_lossy(o).into_owned()
}

/// Append `n` records of our own.
async fn append(env: &TestEnv, n: usize, tag: &str) {
    let actor = Actor::user("tester");
    let mut batch = Batch::new();
    for i in 0..n {
        batch = batch.event(
            NewEvent::custom(&actor, "test.record", format!("{tag}:{i}"))
                .details(serde_json::json!({ "i": i, "tag": tag })),
        );
    }
    env.store.apply(batch).await.expect("append");
}

async fn head(env: &TestEnv) -> i64 {
    firedrill::store::verify_store(env.store.as_ref())
        .await
        .expect("verify")
        .head_seq
}

/// `audit checkpoint`, saved (as a witness would keep it) to `dir/name`.
fn checkpoint(env: &TestEnv, dir: &Path, name: &str) -> PathBuf {
    let out = cli(env, &["audit", "checkpoint"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let path = dir.join(name);
    std::fs::write(&path, &out.stdout).expect("keep checkpoint");
    path
}

/// `audit verify --checkpoint F...`: (exit code, stdout).
fn verify(env: &TestEnv, files: &[&Path]) -> (i32, String) {
    let mut args = vec!["audit".to_string(), "verify".to_string()];
    for f in files {
        args.push("--checkpoint".into());
        args.push(f.display().to_string());
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = cli(env, &args);
    (
        out.status.code().unwrap_or(-1),
        text(&out.stdout) + &text(&out.stderr),
    )
}

async fn sql(db: &mut Raw, statements: &[String]) {
    for s in statements {
        db.exec(s).await.unwrap_or_else(|e| panic!("{s}: {e}"));
    }
}

async fn unguarded(env: &TestEnv) -> Raw {
    let mut db = raw(env).await;
    for s in db.drop_guards() {
        db.exec(s).await.expect("drop guard");
    }
    db
}

/// The issue's reproduction: the last records deleted (and the freed
/// sequence numbers reused), caught only by a checkpoint held elsewhere.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deleted_tail_is_caught_by_a_witnessed_checkpoint_even_after_new_writes() {
    let env = TestEnv::new().await;
    let held = tempfile::tempdir().expect("tempdir");
    append(&env, 30, "a").await;
    let early = checkpoint(&env, held.path(), "early");
    append(&env, 30, "b").await;
    let late = checkpoint(&env, held.path(), "late");
    let size = head(&env).await;
    let (code, out) = verify(&env, &[&early, &late]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("checkpoints OK"), "{out}");

    // The database owner deletes the last 10 records and every checkpoint
    // the store keeps.
    let mut db = unguarded(&env).await;
    sql(
        &mut db,
        &[
            format!("DELETE FROM audit_events WHERE seq > {}", size - 10),
            "DELETE FROM audit_checkpoints".into(),
        ],
    )
    .await;
    // The last checkpoint this home signed (audit/signed, outside the
    // database) already tells.
    let (code, out) = verify(&env, &[]);
    assert_eq!(code, 3, "{out}");
    // Without it (the machine's owner removed it too), the chain alone
    // cannot tell, and verify says so.
    std::fs::remove_file(env.home.path().join("audit/signed")).expect("remove");
    let (code, out) = verify(&env, &[]);
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("audit chain OK") && out.contains("no trusted checkpoint"),
        "{out}"
    );
    // The witnessed checkpoint does.
    let (code, out) = verify(&env, &[&early, &late]);
    assert_eq!(code, 3, "{out}");
    assert!(
        out.contains(&format!(
            "TRUNCATED: {} covers {size} records but the log holds {}: records {} to {size} were deleted",
            late.display(),
            size - 10,
            size - 9
        )),
        "{out}"
    );

    // New writes reuse the freed numbers: the log is long enough again,
    // but it is not the history the checkpoint signed.
    append(&env, 20, "c").await;
    let (code, out) = verify(&env, &[&early, &late]);
    assert_eq!(code, 4, "{out}");
    assert!(
        out.contains(&format!(
            "REWRITTEN: the log's first {size} records are not the ones {} signed",
            late.display()
        )) && out.contains("still matches the checkpoint of"),
        "{out}"
    );
}

/// A rewrite from record K on, every hash recomputed: the chain verifies,
/// the checkpoints do not, and the message bounds where it happened.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rewrite_with_recomputed_hashes_is_located_between_checkpoints() {
    let env = TestEnv::new().await;
    let held = tempfile::tempdir().expect("tempdir");
    append(&env, 20, "a").await;
    let before = checkpoint(&env, held.path(), "before");
    let intact = head(&env).await;
    append(&env, 20, "b").await;
    let after = checkpoint(&env, held.path(), "after");
    let victim = intact + 5;

    let mut db = unguarded(&env).await;
    let records = env
        .store
        .audit_page(victim - 1, 1_000)
        .await
        .expect("records");
    let mut prev = records[0].prev_hash.clone();
    let mut statements = Vec::new();
    for mut r in records {
        if r.seq == victim {
            r.actor_id = "mallory".into();
        }
        r.prev_hash = prev.clone();
        r.hash = firedrill::audit::record_hash(&r);
        statements.push(format!(
            "UPDATE audit_events SET actor_id = '{}', prev_hash = '{}', hash = '{}' WHERE seq = {}",
            r.actor_id.replace('\'', "''"),
            r.prev_hash,
            r.hash,
            r.seq
        ));
        prev = r.hash;
    }
    sql(&mut db, &statements).await;
    let chain = firedrill::store::verify_store(env.store.as_ref())
        .await
        .expect("verify");
    assert_eq!(chain.first_bad, None, "the rewrite is a consistent chain");

    // The store's own checkpoints already tell (unless deleted too)...
    let (code, out) = verify(&env, &[]);
    assert_eq!(code, 4, "{out}");
    // ...and the witnessed ones name the range.
    sql(&mut db, &["DELETE FROM audit_checkpoints".into()]).await;
    let (code, out) = verify(&env, &[&before, &after]);
    assert_eq!(code, 4, "{out}");
    let after_size = intact + 20;
    assert!(
        out.contains(&format!(
            "REWRITTEN: the log's first {after_size} records are not the ones {} signed; the log still matches the checkpoint of {intact} records, so records after {intact} (up to {after_size}) were rewritten",
            after.display()
        )),
        "{out}"
    );
    // A value that is not text (SQLite lets a BLOB into a TEXT column;
    // its JSON functions would render it raw): the record is named.
    if matches!(db, Raw::Sqlite(_)) {
        sql(
            &mut db,
            &["UPDATE audit_events SET actor_id = CAST('\"root\"' AS BLOB) WHERE seq = 2".into()],
        )
        .await;
        let (code, out) = verify(&env, &[]);
        assert_eq!(code, 1, "{out}");
        assert!(
            out.contains("BROKEN at record 2") && out.contains("not text"),
            "{out}"
        );
    }
    // Proofs against the witnessed checkpoint are refused, not forged.
    let out = cli(
        &env,
        &[
            "audit",
            "prove",
            &victim.to_string(),
            "--checkpoint",
            after.to_str().expect("utf8"),
        ],
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("the log was rewritten"),
        "{}",
        text(&out.stderr)
    );
}

/// Two histories from one checkpoint, both signed: a fork.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_signed_histories_from_one_checkpoint_are_a_fork() {
    let env = TestEnv::new().await;
    let held = tempfile::tempdir().expect("tempdir");
    append(&env, 10, "common").await;
    let common = checkpoint(&env, held.path(), "common");
    let fork_point = head(&env).await;
    append(&env, 10, "ours").await;
    let ours = checkpoint(&env, held.path(), "ours");
    // The database owner goes back to the common point, writes another
    // history of the same length and has the engine sign it.
    let mut db = unguarded(&env).await;
    sql(
        &mut db,
        &[
            format!("DELETE FROM audit_events WHERE seq > {fork_point}"),
            format!("DELETE FROM audit_checkpoints WHERE size > {fork_point}"),
        ],
    )
    .await;
    append(&env, 10, "theirs").await;
    // The engine refuses to sign a log that does not extend what it
    // signed last...
    let out = cli(&env, &["audit", "checkpoint"]);
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("refusing to sign"),
        "{}",
        text(&out.stderr)
    );
    // ...unless the machine's owner also removes its memory of it.
    std::fs::remove_file(env.home.path().join("audit/signed")).expect("remove");
    let theirs = checkpoint(&env, held.path(), "theirs");
    assert_ne!(
        std::fs::read(&ours).expect("read"),
        std::fs::read(&theirs).expect("read")
    );
    let (code, out) = verify(&env, &[&common, &ours]);
    assert_eq!(code, 5, "{out}");
    assert!(
        out.contains("FORK:") && out.contains(&ours.display().to_string()),
        "{out}"
    );
    // The consistency proof from the common checkpoint to their head
    // exists; to ours it is refused.
    let out = cli(
        &env,
        &[
            "audit",
            "consistency",
            common.to_str().expect("utf8"),
            ours.to_str().expect("utf8"),
        ],
    );
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stdout));
    let out = cli(
        &env,
        &["audit", "consistency", common.to_str().expect("utf8")],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
}

/// Checkpoints that must not be believed: an unknown key, a size past the
/// log's end, an altered note; and a rotated key that still verifies old
/// checkpoints.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_keys_future_sizes_and_altered_notes_are_refused_and_rotation_keeps_history() {
    let env = TestEnv::new().await;
    let held = tempfile::tempdir().expect("tempdir");
    append(&env, 5, "a").await;
    let genuine = checkpoint(&env, held.path(), "genuine");
    let note = std::fs::read_to_string(&genuine).expect("read");
    let origin = note.lines().next().expect("origin").to_string();
    let size = head(&env).await as u64;
    let leaves = firedrill::tlog::leaves(env.store.as_ref(), None)
        .await
        .expect("leaves");
    let root = firedrill::audit::tree::root(&leaves);

    // The log's true state, signed by a key nobody configured.
    let stranger = SignerKey::generate(&origin).expect("key");
    let forged = held.path().join("forged");
    std::fs::write(
        &forged,
        Checkpoint {
            origin: origin.clone(),
            size,
            root,
        }
        .sign(&stranger),
    )
    .expect("write");
    let (code, out) = verify(&env, &[&forged]);
    assert_eq!(code, 6, "{out}");
    assert!(
        out.contains("no signature by a trusted key") && out.contains(&stranger.verifier().id()),
        "{out}"
    );

    // Signed by the real key, but for more records than the log has.
    let key = std::fs::read_to_string(env.home.path().join("audit/signing.key")).expect("key");
    let real = SignerKey::parse(&key).expect("parse");
    let ahead = held.path().join("ahead");
    std::fs::write(
        &ahead,
        Checkpoint {
            origin: origin.clone(),
            size: size + 7,
            root,
        }
        .sign(&real),
    )
    .expect("write");
    let (code, out) = verify(&env, &[&ahead]);
    assert_eq!(code, 3, "{out}");
    assert!(
        out.contains(&format!("covers {} records", size + 7)),
        "{out}"
    );

    // One character of the genuine note changed.
    let altered = held.path().join("altered");
    std::fs::write(
        &altered,
        note.replacen(&format!("\n{size}\n"), &format!("\n{}\n", size - 1), 1),
    )
    .expect("write");
    let (code, out) = verify(&env, &[&altered]);
    assert_eq!(code, 6, "{out}");
    assert!(out.contains("does not verify"), "{out}");

    // Rotation: audited, the new key signs, the old checkpoint verifies.
    let before = text(&cli(&env, &["audit", "key"]).stdout);
    let out = cli(&env, &["audit", "key", "rotate"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let after = text(&out.stdout);
    assert_ne!(before.trim(), after.trim());
    let rotated = env
        .store
        .audit(&firedrill::store::AuditFilter {
            action: Some("audit.key.rotated".into()),
            limit: 10,
            ..Default::default()
        })
        .await
        .expect("audit");
    assert_eq!(rotated.len(), 1);
    assert_eq!(rotated[0].actor_id, "auditor");
    assert!(
        rotated[0].details.contains(before.trim()),
        "{}",
        rotated[0].details
    );
    assert!(
        !rotated[0].details.contains("PRIVATE"),
        "no secret in the audit log"
    );
    append(&env, 3, "b").await;
    let newer = checkpoint(&env, held.path(), "newer");
    assert!(
        std::fs::read_to_string(&newer)
            .expect("read")
            .contains(&format!("\u{2014} {origin} ")),
    );
    let (code, out) = verify(&env, &[&genuine, &newer]);
    assert_eq!(code, 0, "{out}");
    // The key file stays owner-only.
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(env.home.path().join("audit/signing.key"))
        .expect("meta")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
}

fn python_verifier(what: &str, key: &str, file: &Path) -> Output {
    Command::new("python3")
        .arg(firedrill_tests::workspace_root().join("tools/verify-audit.py"))
        .args([what, "--key", key])
        .arg(file)
        .output()
        .expect("python3 runs")
}

/// Inclusion and consistency proofs from the engine, checked by the
/// independent Python verifier, at sizes around powers of two; tampered
/// proofs fail it. A log written before checkpoints existed is covered by
/// its first checkpoint (the migration).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_independent_verifier_accepts_the_engines_proofs_and_refuses_tampered_ones() {
    let env = TestEnv::new().await;
    let held = tempfile::tempdir().expect("tempdir");
    // Awkward text in every field the record hash covers.
    let actor = Actor::user("tester");
    env.store
        .apply(
            Batch::new().event(
                NewEvent::custom(&actor, "test.awkward", "quote \" é 日本 \u{1} \\ /")
                    .details(serde_json::json!({"s": "tab\tnew\nline \u{7f}"}))
                    .run("run-x"),
            ),
        )
        .await
        .expect("append");
    let key = text(&cli(&env, &["audit", "key"]).stdout)
        .trim()
        .to_string();
    let created = env.audited("audit.key.created").await;
    assert_eq!(
        created.len(),
        1,
        "the first use generates and audits the key"
    );
    assert!(created[0].details.contains(&key), "{}", created[0].details);
    let mut cps: Vec<(i64, PathBuf)> = Vec::new();
    while head(&env).await < 35 {
        append(&env, 1, "grow").await;
        let size = head(&env).await;
        if [1, 2, 3, 4, 5, 7, 8, 9, 15, 16, 17, 31, 32, 33].contains(&size) || size % 6 == 0 {
            cps.push((size, checkpoint(&env, held.path(), &format!("cp-{size}"))));
        }
    }
    assert!(cps.len() >= 8, "{cps:?}");
    let (newest_size, newest) = cps.last().cloned().expect("one");

    let out = python_verifier("checkpoint", &key, &newest);
    assert!(out.status.success(), "{}", text(&out.stderr));
    for seq in [1, 2, 3, 4, 8, 9, 16, 17, newest_size - 1, newest_size] {
        let out = cli(
            &env,
            &[
                "audit",
                "prove",
                &seq.to_string(),
                "--checkpoint",
                newest.to_str().expect("utf8"),
            ],
        );
        assert!(out.status.success(), "prove {seq}: {}", text(&out.stderr));
        let proof = held.path().join(format!("inclusion-{seq}.json"));
        std::fs::write(&proof, &out.stdout).expect("write");
        let checked = python_verifier("inclusion", &key, &proof);
        assert!(
            checked.status.success(),
            "record {seq}: {}{}",
            text(&checked.stdout),
            text(&checked.stderr)
        );
        // The record changed, or a proof hash changed: refused.
        let mut json: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
        json["record"]["outcome"] = "denied".into();
        std::fs::write(&proof, json.to_string()).expect("write");
        let refused = python_verifier("inclusion", &key, &proof);
        assert_eq!(refused.status.code(), Some(1), "record {seq} tampered");
        assert!(
            text(&refused.stderr).contains("modified"),
            "{}",
            text(&refused.stderr)
        );
    }
    for (i, (old_size, old)) in cps.iter().enumerate() {
        for (new_size, new) in cps.iter().skip(i) {
            let out = cli(
                &env,
                &[
                    "audit",
                    "consistency",
                    old.to_str().expect("utf8"),
                    new.to_str().expect("utf8"),
                ],
            );
            assert!(
                out.status.success(),
                "{old_size} -> {new_size}: {}",
                text(&out.stderr)
            );
            let proof = held.path().join("consistency.json");
            std::fs::write(&proof, &out.stdout).expect("write");
            let checked = python_verifier("consistency", &key, &proof);
            assert!(
                checked.status.success(),
                "{old_size} -> {new_size}: {}",
                text(&checked.stderr)
            );
            let mut json: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
            if let Some(first) = json["proof"].as_array_mut().and_then(|p| p.first_mut()) {
                *first = "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=".into();
                std::fs::write(&proof, json.to_string()).expect("write");
                let refused = python_verifier("consistency", &key, &proof);
                assert_eq!(
                    refused.status.code(),
                    Some(1),
                    "{old_size} -> {new_size} tampered"
                );
            }
        }
    }
    // Another key: the verifier refuses the checkpoint.
    let stranger = SignerKey::generate("firedrill.test/other")
        .expect("key")
        .verifier();
    let out = python_verifier("checkpoint", &stranger.to_string(), &newest);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("no signature by a trusted key"));
}

/// A minimal HTTP witness: answers 200 to POSTs bearing `token`, keeps
/// the bodies.
async fn http_witness(
    listener: tokio::net::TcpListener,
    token: String,
    kept: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    loop {
        let Ok((mut sock, _)) = listener.accept().await else {
            return;
        };
        let token = token.clone();
        let kept = kept.clone();
        tokio::spawn(async move {
            let mut buf = Vec::new();
            let mut chunk = [0u8; 4096];
            loop {
                let n = sock.read(&mut chunk).await.unwrap_or(0);
                if n == 0 {
                    return;
                }
                buf.extend_from_slice(&chunk[..n]);
                let text = String::from_utf8_lossy(&buf).to_string();
                if let Some(end) = text.find("\r\n\r\n") {
                    let len: usize = text[..end]
                        .lines()
                        .find_map(|l| {
                            l.to_ascii_lowercase()
                                .strip_prefix("content-length:")
                                .map(|v| v.trim().parse().unwrap_or(0))
                        })
                        .unwrap_or(0);
                    if buf.len() >= end + 4 + len {
                        let authorized = text[..end].contains(&format!("Bearer {token}"))
                            || text[..end].contains(&format!("bearer {token}"));
                        let status = if authorized {
                            kept.lock().expect("lock").push(text[end + 4..].to_string());
                            "200 OK"
                        } else {
                            "401 Unauthorized"
                        };
                        let _ = sock
                            .write_all(format!("HTTP/1.1 {status}\r\ncontent-length: 0\r\nconnection: close\r\n\r\n").as_bytes())
                            .await;
                        return;
                    }
                }
            }
        });
    }
}

/// A real rsyslogd on a loopback TCP port, writing what it receives to a
/// file; stopped when dropped.
struct Rsyslog {
    child: std::process::Child,
    port: u16,
    out: PathBuf,
    _dir: tempfile::TempDir,
}

impl Rsyslog {
    fn start() -> Rsyslog {
        let dir = tempfile::tempdir().expect("tempdir");
        let port = free_port();
        let out = dir.path().join("received.log");
        let conf = dir.path().join("rsyslog.conf");
        std::fs::write(
            &conf,
            format!(
                "global(workDirectory=\"{dir}\" maxMessageSize=\"64k\")\n\
                 module(load=\"imtcp\")\n\
                 input(type=\"imtcp\" address=\"127.0.0.1\" port=\"{port}\")\n\
                 template(name=\"raw\" type=\"string\" string=\"%rawmsg%\\n\")\n\
                 action(type=\"omfile\" file=\"{out}\" template=\"raw\" flushOnTXEnd=\"on\")\n",
                dir = dir.path().display(),
                out = out.display(),
            ),
        )
        .expect("conf");
        let child = Command::new("/usr/sbin/rsyslogd")
            .args(["-n", "-f"])
            .arg(&conf)
            .arg("-i")
            .arg(dir.path().join("pid"))
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::inherit())
            .spawn()
            .expect("rsyslogd (Debian package rsyslog; scripts/prepare installs it)");
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                std::time::Instant::now() < deadline,
                "rsyslogd did not listen"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        Rsyslog {
            child,
            port,
            out,
            _dir: dir,
        }
    }

    fn received(&self) -> String {
        std::fs::read_to_string(&self.out).unwrap_or_default()
    }
}

impl Drop for Rsyslog {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port()
}

async fn wait_for(what: &str, mut check: impl AsyncFnMut() -> bool) {
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while !check().await {
        assert!(
            std::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// `serve` signs checkpoints as the log grows and ships them: to a
/// directory, to an HTTP witness that is down at first (runs continue,
/// the lag is reported, it catches up when it comes back), and to a real
/// rsyslog, which also receives every record through the export. The
/// newest checkpoint is served to readers only.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_ships_checkpoints_to_witnesses_and_records_to_syslog_and_a_down_witness_blocks_nothing()
 {
    let env = TestEnv::new().await;
    let witness_dir = tempfile::tempdir().expect("tempdir");
    let secrets = env.home.path().join("secrets");
    std::fs::create_dir_all(&secrets).expect("secrets");
    let token = "witness-token-9d2e";
    std::fs::write(secrets.join("witness-token"), token).expect("secret");
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(
        secrets.join("witness-token"),
        std::fs::Permissions::from_mode(0o600),
    )
    .expect("chmod");
    let http_port = free_port();
    let syslog = Rsyslog::start();
    firedrill_tests::nodes::append_config(
        &env,
        &format!(
            "\n[secrets]\nprovider = \"file\"\n\n[audit]\ncheckpoint-every-records = 5\ncheckpoint-interval-s = 1\nwitness-retry-s = 1\nsyslog-export = \"tcp://127.0.0.1:{syslog}\"\n\n\
             [[audit.witnesses]]\nkind = \"directory\"\npath = {dir:?}\n\n\
             [[audit.witnesses]]\nkind = \"http\"\nurl = \"http://127.0.0.1:{http_port}/witness\"\ntoken-secret = \"witness-token\"\n\n\
             [[audit.witnesses]]\nkind = \"syslog\"\naddress = \"tcp://127.0.0.1:{syslog}\"\n",
            syslog = syslog.port,
            dir = witness_dir.path().display().to_string(),
        ),
    );
    // An existing log (written before any checkpoint): covered at start.
    append(&env, 12, "before-serve").await;
    let node = firedrill_tests::nodes::Node::start(&env, None);
    let reader = env
        .token("reader", firedrill::auth::Role::Viewer, &[])
        .await;
    let scoped = env
        .token("scoped", firedrill::auth::Role::Viewer, &["web"])
        .await;
    let client = reqwest::Client::new();
    let metrics = || async {
        client
            .get(format!("{}/metrics", node.url))
            .bearer_auth(&reader)
            .send()
            .await
            .expect("metrics")
            .text()
            .await
            .expect("text")
    };
    let http_witness_name = format!("http:http://127.0.0.1:{http_port}/witness");
    let lag_of = |m: &str, w: &str| -> Option<f64> {
        m.lines()
            .find(|l| {
                l.starts_with(&format!(
                    "firedrill_audit_witness_lag_records{{witness=\"{w}\"}}"
                ))
            })
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
    };
    let dir_name = format!("directory:{}", witness_dir.path().display());
    // The directory receives checkpoints; the HTTP witness is down.
    wait_for("a checkpoint in the witness directory", async || {
        witness_dir.path().join("latest").exists()
    })
    .await;
    // Runs are not blocked while a witness is down.
    for i in 0..3 {
        env.run_text(PROBE, firedrill::Mode::DryRun, &[])
            .await
            .unwrap_or_else(|e| panic!("run {i}: {e}"));
    }
    wait_for("the down witness's lag in /metrics", async || {
        let m = metrics().await;
        lag_of(&m, &http_witness_name).is_some_and(|l| l > 0.0)
            && lag_of(&m, &dir_name) == Some(0.0)
            && m.contains("firedrill_audit_checkpoint_size ")
            && m.contains(&format!(
                "firedrill_audit_witness_failures{{witness=\"{http_witness_name}\"}}"
            ))
    })
    .await;
    // The witness comes back: it catches up.
    let kept = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", http_port))
        .await
        .expect("bind the witness port");
    tokio::spawn(http_witness(listener, token.to_string(), kept.clone()));
    wait_for("the witness to catch up", async || {
        lag_of(&metrics().await, &http_witness_name) == Some(0.0)
    })
    .await;
    let note = kept
        .lock()
        .expect("lock")
        .last()
        .cloned()
        .expect("a delivery");
    // The newest checkpoint, served to a reader; not to strangers or a
    // token scoped to some runbooks.
    let served = client
        .get(format!("{}/api/v1/audit/checkpoint", node.url))
        .bearer_auth(&reader)
        .send()
        .await
        .expect("send");
    assert_eq!(served.status(), 200);
    let served = served.text().await.expect("text");
    assert!(served.contains("\n\n\u{2014} "), "{served}");
    for (bearer, status) in [(None, 401), (Some(scoped.as_str()), 403)] {
        let mut req = client.get(format!("{}/api/v1/audit/checkpoint", node.url));
        if let Some(b) = bearer {
            req = req.bearer_auth(b);
        }
        assert_eq!(req.send().await.expect("send").status(), status);
    }
    // Everything the witnesses hold verifies against the log.
    let out = cli(
        &env,
        &[
            "audit",
            "verify",
            "--witness-dir",
            witness_dir.path().to_str().expect("utf8"),
        ],
    );
    assert!(
        out.status.success(),
        "{}{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    let held = tempfile::NamedTempFile::new().expect("temp");
    std::fs::write(held.path(), &note).expect("write");
    let (code, out) = verify(&env, &[held.path()]);
    assert_eq!(code, 0, "{out}");
    // rsyslog received checkpoints and the records, as RFC 5424.
    wait_for(
        "rsyslog to receive the export and a checkpoint",
        async || {
            let got = syslog.received();
            got.contains("firedrill-audit/1")
                && got.contains("\"action\":\"run.finished\"")
                && got.contains(" checkpoint - {")
        },
    )
    .await;
    let got = syslog.received();
    let line = got
        .lines()
        .find(|l| l.contains("\"action\":\"run.started\""))
        .expect("a run.started line");
    assert!(line.starts_with("<110>1 "), "{line}");
    let json: serde_json::Value =
        serde_json::from_str(&line[line.find('{').expect("json")..]).expect("json");
    for field in [
        "seq", "time", "actor", "action", "target", "outcome", "origin", "log", "hash",
    ] {
        assert!(json.get(field).is_some(), "{field} in {json}");
    }
    assert!(!got.contains(firedrill_tests::CANARY));
    assert!(
        !got.contains(token),
        "the witness token never reaches syslog"
    );
    drop(node);
}

/// `audit export` writes every record once, in order, with the AU-3
/// fields, from a sequence number on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn export_writes_json_lines_with_the_documented_fields() {
    let env = TestEnv::new().await;
    append(&env, 25, "x").await;
    let total = head(&env).await;
    let out = cli(&env, &["audit", "export"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let lines: Vec<serde_json::Value> = text(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).expect("one JSON object per line"))
        .collect();
    assert_eq!(lines.len() as i64, total);
    for (i, l) in lines.iter().enumerate() {
        assert_eq!(l["schema"], "firedrill-audit/1");
        assert_eq!(l["seq"], i as i64 + 1);
        for field in [
            "time", "actor", "action", "target", "outcome", "origin", "log", "hash",
        ] {
            assert!(!l[field].is_null(), "{field} in {l}");
        }
    }
    let last = lines.last().expect("one");
    assert_eq!(last["actor"]["kind"], "user");
    assert_eq!(last["actor"]["id"], "tester");
    assert_eq!(last["action"], "test.record");
    assert_eq!(last["details"]["tag"], "x");
    let out = cli(
        &env,
        &["audit", "export", "--after", &(total - 3).to_string()],
    );
    assert_eq!(text(&out.stdout).lines().count(), 3);

    // --follow: what is written later arrives too, once each, in order.
    let mut follow = Command::new(firedrill_tests::firedrill_bin())
        .arg("--home")
        .arg(env.home.path())
        .args(["audit", "export", "--follow", "--after", &total.to_string()])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("export --follow");
    let stdout = follow.stdout.take().expect("stdout");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        use std::io::BufRead as _;
        for line in std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
        {
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    append(&env, 4, "later").await;
    let got: Vec<serde_json::Value> = (0..4)
        .map(|_| {
            let line = rx
                .recv_timeout(Duration::from_secs(30))
                .expect("a followed record");
            serde_json::from_str(&line).expect("json")
        })
        .collect();
    let _ = follow.kill();
    let _ = follow.wait();
    for (i, l) in got.iter().enumerate() {
        assert_eq!(l["seq"], total + 1 + i as i64);
        assert_eq!(l["details"]["tag"], "later");
    }
}

/// The shipped rules about the log itself and about what automation
/// could not do pass `promtool check rules`, and their unit tests pass
/// `promtool test rules`; they use only metrics firedrill serves.
#[test]
fn the_shipped_alerting_rules_pass_promtool() {
    let dir = firedrill_tests::workspace_root().join("deploy/prometheus");
    let served = ["engine/src/server/health.rs", "engine/src/metrics.rs"]
        .iter()
        .map(|f| {
            std::fs::read_to_string(firedrill_tests::workspace_root().join(f)).expect("source")
        })
        .collect::<String>();
    for name in ["firedrill-audit-rules", "firedrill-automation-rules"] {
        let rules_file = format!("{name}.yml");
        let tests_file = format!("{name}.test.yml");
        for args in [
            vec!["check", "rules", rules_file.as_str()],
            vec!["test", "rules", tests_file.as_str()],
        ] {
            let out = Command::new("promtool")
                .args(&args)
                .current_dir(&dir)
                .output()
                .expect("promtool (Debian package prometheus; scripts/prepare installs it)");
            assert!(
                out.status.success(),
                "promtool {args:?}: {}{}",
                text(&out.stdout),
                text(&out.stderr)
            );
        }
        let rules = std::fs::read_to_string(dir.join(&rules_file)).expect("rules");
        for word in rules.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_')) {
            if word.starts_with("firedrill_") {
                assert!(
                    served.contains(&format!("\"{word}\"")),
                    "{rules_file}: {word} is not served"
                );
            }
        }
    }
}
