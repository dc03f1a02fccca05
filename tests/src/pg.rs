//! A throwaway PostgreSQL server for the tests: Debian's binaries
//! (`postgresql-15`), `initdb` into a temp dir, a free loopback port, one
//! server per test process, one database per test environment. The server
//! dies with the test process (`setpriv --pdeathsig`), and its data dir is
//! a temp dir. Selected with `FIREDRILL_TEST_BACKEND=postgres`.

use crate::free_port;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// Whether this test run uses PostgreSQL (`FIREDRILL_TEST_BACKEND=postgres`).
pub fn enabled() -> bool {
    std::env::var("FIREDRILL_TEST_BACKEND").is_ok_and(|b| b == "postgres")
}

/// The server binaries: `FIREDRILL_PG_BIN`, else the newest Debian one.
fn bin_dir() -> PathBuf {
    if let Ok(dir) = std::env::var("FIREDRILL_PG_BIN") {
        return PathBuf::from(dir);
    }
    let mut versions: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .map(|d| d.flatten().map(|e| e.path().join("bin")).collect())
        .unwrap_or_default();
    versions.sort();
    versions
        .pop()
        .unwrap_or_else(|| panic!("no PostgreSQL server binaries under /usr/lib/postgresql; install postgresql (scripts/test does)"))
}

/// Run as the `postgres` user when we are root (the server refuses root).
fn as_server_user(program: &Path) -> Command {
    let root = nix::unistd::geteuid().is_root();
    let mut cmd = Command::new(if root { Path::new("setpriv") } else { program });
    if root {
        cmd.args([
            "--reuid=postgres",
            "--regid=postgres",
            "--init-groups",
            "--pdeathsig=TERM",
        ])
        .arg(program);
    }
    cmd
}

struct Server {
    port: u16,
    _dir: tempfile::TempDir,
}

#[allow(clippy::expect_used)]
fn start() -> Server {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    std::fs::create_dir(&data).expect("data dir");
    if nix::unistd::geteuid().is_root() {
        let status = Command::new("chown")
            .args(["-R", "postgres:postgres"])
            .arg(dir.path())
            .status()
            .expect("chown");
        assert!(status.success(), "chown the data dir to postgres");
    }
    let bin = bin_dir();
    let out = as_server_user(&bin.join("initdb"))
        .args(["-D"])
        .arg(&data)
        .args(["-U", "postgres", "--auth=trust", "--no-sync", "-E", "UTF8"])
        .output()
        .expect("run initdb");
    assert!(
        out.status.success(),
        "initdb failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let port = free_port();
    // Started from a thread that lives as long as the process, so the
    // parent-death signal fires when the test process exits, not when
    // the test that first needed the server ends.
    let (tx, rx) = std::sync::mpsc::channel();
    let data_for_thread = data.clone();
    let socket_dir = dir.path().to_path_buf();
    std::thread::spawn(move || {
        let child = as_server_user(&bin.join("postgres"))
            .arg("-D")
            .arg(&data_for_thread)
            .args(["-p", &port.to_string(), "-c", "listen_addresses=127.0.0.1"])
            .arg("-c")
            .arg(format!("unix_socket_directories={}", socket_dir.display()))
            .args(["-c", "max_connections=400", "-c", "fsync=on"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn();
        let _ = tx.send(child.map(|c| c.id()));
        loop {
            std::thread::park();
        }
    });
    rx.recv().expect("server thread").expect("start postgres");
    let deadline = Instant::now() + Duration::from_secs(30);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            Instant::now() < deadline,
            "postgres did not start listening"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    Server { port, _dir: dir }
}

fn server() -> &'static Server {
    static SERVER: OnceLock<Server> = OnceLock::new();
    SERVER.get_or_init(start)
}

/// A new, empty database on the test server; its URL.
///
/// # Panics
/// If the server cannot be started or the database created.
#[allow(clippy::expect_used)]
pub async fn new_database() -> String {
    let port = server().port;
    let name = format!("fd_{}", uuid_tail());
    let admin = format!("postgres://postgres@127.0.0.1:{port}/postgres");
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut conn = loop {
        match <sqlx::PgConnection as sqlx::Connection>::connect(&admin).await {
            Ok(c) => break c,
            Err(e) => {
                assert!(Instant::now() < deadline, "cannot connect to postgres: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    };
    // `name` is digits and underscores made here.
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
        .execute(&mut conn)
        .await
        .expect("create database");
    format!("postgres://postgres@127.0.0.1:{port}/{name}")
}

fn uuid_tail() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    format!(
        "{}_{}",
        std::process::id(),
        N.fetch_add(1, Ordering::SeqCst)
    )
}
