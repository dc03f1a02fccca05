//! Restate, for the side-by-side benchmark: its server (from npm, pinned in
//! `tests/restate/package.json`, installed into `target/restate` by
//! `scripts/bench`) on loopback ports in a temp dir, and a Node service
//! with a three-step workflow (`tests/restate/service.mjs`), registered with
//! it. Stopped (SIGKILL) when dropped.
//!
//! Durability: the server's defaults, which fsync the log on every commit
//! (`[log-server]` and `[bifrost.local]` `rocksdb-disable-wal-fsync =
//! false`, written out in its config so a changed default cannot move it).

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::{free_port, workspace_root};

/// Where `scripts/bench` installs Restate.
pub fn dir() -> PathBuf {
    workspace_root().join("target/restate")
}

/// The server binary the npm package ships.
pub fn server_bin() -> PathBuf {
    dir().join("node_modules/@restatedev/restate-server-linux-x64/bin/restate-server")
}

/// A running Restate server with the `ThreeSteps` workflow registered.
#[derive(Debug)]
pub struct Restate {
    server: Child,
    service: Child,
    /// `http://127.0.0.1:PORT`, its HTTP ingress.
    pub ingress: String,
    /// Holds the server's data and log (`server.log`).
    pub base: tempfile::TempDir,
}

fn config(fabric: u16, admin: u16, ingress: u16) -> String {
    format!(
        r#"node-name = "bench"
cluster-name = "firedrill-bench"
disable-telemetry = true
listen-mode = "tcp"
auto-provision = true
bind-address = "127.0.0.1:{fabric}"
advertised-address = "http://127.0.0.1:{fabric}/"

[admin]
bind-address = "127.0.0.1:{admin}"
advertised-address = "http://127.0.0.1:{admin}/"
disable-web-ui = true

[ingress]
bind-address = "127.0.0.1:{ingress}"
advertised-address = "http://127.0.0.1:{ingress}/"

[log-server]
rocksdb-disable-wal-fsync = false

[bifrost.local]
rocksdb-disable-wal-fsync = false
"#
    )
}

impl Restate {
    /// Start the server and the service, wait until the server's worker is
    /// ready, register the service, and wait until a workflow runs.
    ///
    /// # Panics
    /// If Restate is not installed (run `scripts/bench`), or does not come
    /// up within a minute.
    #[allow(clippy::expect_used, clippy::panic)]
    pub async fn start() -> Restate {
        let bin = server_bin();
        assert!(
            bin.exists(),
            "{} is missing: scripts/bench installs Restate (npm ci in target/restate)",
            bin.display()
        );
        std::fs::copy(
            workspace_root().join("tests/restate/service.mjs"),
            dir().join("service.mjs"),
        )
        .expect("copy service.mjs");
        let base = tempfile::tempdir().expect("tempdir");
        let (fabric, admin, ingress, svc) = (free_port(), free_port(), free_port(), free_port());
        let conf = base.path().join("restate.toml");
        std::fs::write(&conf, config(fabric, admin, ingress)).expect("config");
        let log = std::fs::File::create(base.path().join("server.log")).expect("log");
        let server = Command::new(&bin)
            .env("DO_NOT_TRACK", "1")
            .arg("--no-logo")
            .arg("--base-dir")
            .arg(base.path())
            .arg("--config-file")
            .arg(&conf)
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("start restate-server");
        let mut service = Command::new("node")
            .current_dir(dir())
            .arg("service.mjs")
            .arg(svc.to_string())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start node service.mjs");
        let mut line = String::new();
        BufReader::new(service.stdout.take().expect("stdout"))
            .read_line(&mut line)
            .expect("read the service's first line");
        assert!(line.starts_with("listening on"), "service said {line:?}");
        let restate = Restate {
            server,
            service,
            ingress: format!("http://127.0.0.1:{ingress}"),
            base,
        };
        let client = reqwest::Client::new();
        let deadline = Instant::now() + Duration::from_secs(60);
        let until = |what: &str| {
            assert!(
                Instant::now() < deadline,
                "restate-server: {what} within 60 s; see {}/server.log",
                restate.base.path().display()
            );
        };
        loop {
            until("worker not ready");
            let health = client
                .get(format!("http://127.0.0.1:{fabric}/health"))
                .send()
                .await;
            if let Ok(r) = health
                && let Ok(v) = r.json::<serde_json::Value>().await
                && v["worker_status"] == "Ready"
            {
                break;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        loop {
            until("service not registered");
            let r = client
                .post(format!("http://127.0.0.1:{admin}/deployments"))
                .json(&serde_json::json!({"uri": format!("http://127.0.0.1:{svc}")}))
                .send()
                .await;
            if r.is_ok_and(|r| r.status().is_success()) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        let mut n = 0;
        loop {
            until("no workflow ran");
            n += 1;
            let r = client
                .post(restate.workflow_url(&format!("warm-{n}")))
                .json(&serde_json::json!({}))
                .send()
                .await;
            if r.is_ok_and(|r| r.status().is_success()) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        restate
    }

    /// Where a `ThreeSteps` workflow keyed `key` is started and awaited
    /// (`POST`; answers when it finished; a key runs once).
    pub fn workflow_url(&self, key: &str) -> String {
        format!("{}/ThreeSteps/{key}/run", self.ingress)
    }
}

impl Drop for Restate {
    fn drop(&mut self) {
        for child in [&mut self.service, &mut self.server] {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
