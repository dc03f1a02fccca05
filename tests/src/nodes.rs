//! `firedrill serve` processes on a shared home, for the multi-node tests
//! and benchmark.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};

use firedrill::Mode;
use firedrill::audit::Actor;
use firedrill::executor::{RunRequest, RunbookSource};

use crate::{TestEnv, firedrill_bin};

/// `firedrill.toml` for nodes: `lease-ms`, `heartbeat-ms`, fast polling,
/// large queues, no drills.
pub fn config(lease_ms: u64, heartbeat_ms: u64) -> String {
    format!(
        "[node]\nlease-ms = {lease_ms}\nheartbeat-ms = {heartbeat_ms}\npoll-ms = 50\n\n[server]\nmax-concurrent-runs = 8\nmax-queued-runs = 5000\nmax-runs-per-runbook = 5000\ndrills = false\nshutdown-grace-ms = 100\n"
    )
}

/// A `firedrill serve` process on the environment's home.
#[derive(Debug)]
pub struct Node {
    child: Child,
    /// `http://127.0.0.1:PORT`, where it listens.
    pub url: String,
}

impl Node {
    /// Start a node on `env`'s home (`FAILPOINTS` = `failpoints`).
    ///
    /// # Panics
    /// If it does not start listening.
    pub fn start(env: &TestEnv, failpoints: Option<&str>) -> Node {
        Node::spawn(env, None, failpoints)
    }

    /// Start a node named `id` (`serve --node-id`), so a test can tell
    /// which node holds a run.
    ///
    /// # Panics
    /// If it does not start listening.
    pub fn start_as(env: &TestEnv, id: &str) -> Node {
        Node::spawn(env, Some(id), None)
    }

    #[allow(clippy::expect_used)]
    fn spawn(env: &TestEnv, id: Option<&str>, failpoints: Option<&str>) -> Node {
        let mut cmd = Command::new(firedrill_bin());
        cmd.env("FIREDRILL_HOME", env.home.path())
            .args([
                "--log",
                "firedrill=warn",
                "serve",
                "--listen",
                "127.0.0.1:0",
            ])
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        if let Some(id) = id {
            cmd.args(["--node-id", id]);
        }
        if let Some(f) = failpoints {
            cmd.env("FAILPOINTS", f);
        }
        let mut child = cmd.spawn().expect("start firedrill serve");
        let stdout = child.stdout.take().expect("stdout");
        let mut line = String::new();
        BufReader::new(stdout)
            .read_line(&mut line)
            .expect("read the address");
        // Listening: its store is open and its worker started.
        assert!(
            line.starts_with("listening on http://127.0.0.1:"),
            "unexpected first line {line:?}"
        );
        let url = line.trim().trim_start_matches("listening on ").to_string();
        Node { child, url }
    }

    pub fn pid(&self) -> nix::unistd::Pid {
        nix::unistd::Pid::from_raw(i32::try_from(self.child.id()).expect("pid"))
    }

    /// # Panics
    /// If the signal cannot be sent.
    #[allow(clippy::expect_used)]
    pub fn signal(&self, sig: nix::sys::signal::Signal) {
        nix::sys::signal::kill(self.pid(), sig).expect("signal");
    }

    pub fn try_signal(&self, sig: nix::sys::signal::Signal) {
        let _ = nix::sys::signal::kill(self.pid(), sig);
    }

    /// SIGKILL: no shutdown, no cleanup.
    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Whether the process has exited (a failpoint aborted it).
    pub fn exited(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(Some(_)))
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        if !self.exited() {
            self.try_signal(nix::sys::signal::Signal::SIGCONT);
        }
        self.kill9();
    }
}

/// Add `text` to the home's `firedrill.toml` (which may name the store).
///
/// # Panics
/// If the file cannot be written.
#[allow(clippy::expect_used)]
pub fn append_config(env: &TestEnv, text: &str) {
    use std::io::Write as _;
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(env.home.path().join("firedrill.toml"))
        .expect("open config");
    f.write_all(text.as_bytes()).expect("write config");
}

/// Queue `n` live runs of published `runbook` (as the API would), without
/// executing them in this process; returns their ids.
///
/// # Panics
/// If a run cannot be prepared or queued.
#[allow(clippy::expect_used)]
pub async fn queue(env: &TestEnv, runbook: &str, n: usize) -> Vec<String> {
    queue_mode(env, runbook, n, Mode::Live).await
}

/// [`queue`], in `mode`.
///
/// # Panics
/// If a run cannot be prepared or queued.
#[allow(clippy::expect_used)]
pub async fn queue_mode(env: &TestEnv, runbook: &str, n: usize, mode: Mode) -> Vec<String> {
    let mut ids = Vec::with_capacity(n);
    for _ in 0..n {
        let prepared = env
            .service
            .prepare(RunRequest {
                source: RunbookSource::Published {
                    name: runbook.into(),
                    version: None,
                },
                mode,
                actor: Actor::user("oncall"),
                inputs: Vec::new(),
            })
            .await
            .expect("prepare");
        ids.push(env.service.enqueue(prepared, None).await.expect("queued"));
    }
    ids
}
