//! The 3-step remediation over SSH against a local sshd: the demo runbook
//! (`probe` = `systemctl is-active`, `restart` = `systemctl restart` and
//! wait until active, `verify` = `systemctl is-active`) run **live** on a
//! target reached through a real OpenSSH server on loopback (started by the
//! bench, as in the tests), the unit stopped before each run so that every
//! run really restarts it.
//!
//! Three settings: SSH with a `warm` pool (default: the session is pooled
//! and reused by every step and run), SSH `cold` (`idle-timeout-ms = 0`:
//! every command opens, verifies and authenticates a new connection), and
//! the same runbook on the `local` demo target, the baseline: the difference
//! is what SSH costs.
//!
//! `cargo bench -p firedrill-tests --bench ssh` (env SSH_RUNS, default 25
//! per setting; raw numbers in target/bench-ssh.json).

use std::time::{Duration, Instant};

use firedrill::Mode;
use firedrill::store::RunStatus;
use firedrill::target::{Inventory, SshConfig, TargetsConfig};
use firedrill_tests::sshd::Sshd;
use firedrill_tests::{TestEnv, workspace_root};

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let idx = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[idx.min(sorted.len() - 1)]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn main() {
    let runs: usize = std::env::var("SSH_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(25);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let text =
        std::fs::read_to_string(workspace_root().join("runbooks/demo/restart-demo-web.yaml"))
            .expect("demo runbook");
    let mut results = Vec::new();
    for (label, idle_timeout_ms) in [("local", 60_000), ("warm", 60_000), ("cold", 0)] {
        let sshd = Sshd::start();
        let mut extra = Inventory::default();
        extra.targets.insert("ssh-host".into(), sshd.spec());
        let config = TargetsConfig {
            ssh: SshConfig {
                idle_timeout_ms,
                ..SshConfig::default()
            },
            ..TargetsConfig::default()
        };
        let mut times = Vec::with_capacity(runs);
        rt.block_on(async {
            let env = TestEnv::with_targets(extra, config).await;
            let local = label == "local";
            let host = if local { "demo-host" } else { "ssh-host" };
            let systemctl = |verb: &str| {
                if local {
                    env.systemctl(verb, "web")
                } else {
                    sshd.systemctl(verb, "web")
                }
            };
            assert!(systemctl("start"));
            // One unmeasured run: compiles the kernels into the cache.
            for i in 0..=runs {
                assert!(systemctl("stop"));
                let started = Instant::now();
                let id = env
                    .run_text(&text, Mode::Live, &[("unit", "web"), ("host", host)])
                    .await
                    .expect("run");
                let elapsed = started.elapsed();
                let run = env.store.run(&id).await.expect("read").expect("run");
                assert_eq!(run.status, RunStatus::Succeeded, "{run:?}");
                if i > 0 {
                    times.push(elapsed);
                }
            }
            let restarts = if local {
                env.restarts("web")
            } else {
                sshd.restarts("web")
            };
            assert_eq!(restarts, runs + 1, "every run restarted the unit");
        });
        times.sort();
        let median = percentile(&times, 0.5);
        println!(
            "3-step live remediation, {label:<5}: n={runs} median {:.1} ms  p90 {:.1} ms  min {:.1} ms  max {:.1} ms  logins {}",
            ms(median),
            ms(percentile(&times, 0.9)),
            ms(times[0]),
            ms(times[times.len() - 1]),
            sshd.logins(),
        );
        results.push(serde_json::json!({
            "pool": label,
            "runs": runs,
            "median_ms": ms(median),
            "p90_ms": ms(percentile(&times, 0.9)),
            "min_ms": ms(times[0]),
            "max_ms": ms(times[times.len() - 1]),
            "sshd_logins": sshd.logins(),
        }));
    }
    let out = workspace_root().join("target/bench-ssh.json");
    let _ = std::fs::write(
        &out,
        serde_json::to_string_pretty(&results).unwrap_or_default(),
    );
}
