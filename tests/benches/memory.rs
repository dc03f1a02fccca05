//! Memory under many waiting runs: 1,000 live runs queued, then one
//! `firedrill serve` process (release build, 1,000 run slots and sandbox
//! slots) picks them all up; each run's step (`http-health`, a real
//! WebAssembly instance) waits on a slow HTTP endpoint that answers after a
//! minute. Once every run is inside its request (the endpoint counts them),
//! the process's resident memory is sampled from /proc (VmRSS, and VmHWM,
//! the peak); then the process is killed. Repeated rounds, a fresh home each.
//!
//! `cargo bench -p firedrill-tests --bench memory` (env MEMORY_RUNS,
//! default 1,000; MEMORY_ROUNDS, default 3). Part of `scripts/bench`.

use std::time::{Duration, Instant};

use firedrill::store::RunFilter;
use firedrill::transport::TargetsConfig;
use firedrill_tests::TestEnv;
use firedrill_tests::bench::{self, Goal, Measure, Stat};
use firedrill_tests::nodes::{Node, append_config, queue};
use firedrill_tests::web::WebServer;

/// How long the slow endpoint takes to answer.
const SLOW_MS: u64 = 60_000;

const WAITING: &str = "apiVersion: firedrill/v1\nname: wait-on-slow\nversion: 1\nsteps:\n  - id: probe\n    kernel: http-health@1.0.0\n    targets: [slow-api]\n    with: { path: /wait/60000, fail_unhealthy: false }\n";

/// `VmRSS` and `VmHWM` of `pid`, in MiB.
fn rss_mib(pid: nix::unistd::Pid) -> (f64, f64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("proc status");
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
            .expect("field")
            / 1024.0
    };
    (field("VmRSS:"), field("VmHWM:"))
}

/// One round: (RSS samples while every run waits, peak, idle RSS).
async fn round(runs: usize) -> (Vec<f64>, f64, f64) {
    let web = WebServer::start().await;
    let env = TestEnv::with_targets(web.inventory("slow-api"), TargetsConfig::default()).await;
    append_config(
        &env,
        &format!(
            "[kernel]\nmax-concurrent-invocations = {runs}\n\n[kernel.limits]\nexec-timeout-ms = {t}\nwall-clock-ms = {t}\n\n\
             [server]\nmax-concurrent-runs = {runs}\nmax-queued-runs = {runs}\nmax-runs-per-runbook = {runs}\ndrills = false\nshutdown-grace-ms = 100\n\n\
             [node]\npoll-ms = 50\n",
            t = SLOW_MS * 2
        ),
    );
    env.publish(&[WAITING]).await;
    queue(&env, "wait-on-slow", runs).await;
    let mut node = Node::start(&env, None);
    let pid = node.pid();
    let idle = rss_mib(pid).0;
    let deadline = Instant::now() + Duration::from_millis(SLOW_MS / 2);
    while web.requests() < runs {
        if Instant::now() > deadline {
            let listed = env
                .store
                .runs(&RunFilter {
                    limit: 5,
                    ..RunFilter::default()
                })
                .await
                .expect("runs");
            panic!(
                "only {} of {runs} runs reached the slow endpoint; some runs: {:#?}",
                web.requests(),
                listed
                    .iter()
                    .map(|r| (&r.status, &r.error))
                    .collect::<Vec<_>>()
            );
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Every run is inside its step; sample for a second.
    let mut samples = Vec::new();
    for _ in 0..20 {
        samples.push(rss_mib(pid).0);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let peak = rss_mib(pid).1;
    assert_eq!(web.requests(), runs, "no run finished or retried meanwhile");
    node.kill9();
    (samples, peak, idle)
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let runs = bench::size("MEMORY_RUNS", 1_000, 20);
    let rounds = bench::size("MEMORY_ROUNDS", 3, 1);
    // Build the node binary before anything is measured.
    let _ = firedrill_tests::firedrill_bin();
    let (mut samples, mut peaks, mut idle) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..rounds {
        let (s, p, i) = round(runs).await;
        println!(
            "  {runs} waiting runs: RSS median {:.1} MiB, peak {p:.1} MiB (idle {i:.1} MiB)",
            bench::median(&s)
        );
        samples.push(s);
        peaks.push(p);
        idle.push(i);
    }
    let measure = Measure::from_samples(
        "memory.waiting-runs",
        &format!("RSS, {runs} live runs waiting on a slow target"),
        "MiB",
        &samples,
    )
    .goal(Goal::at_most(Stat::P99, 256.0))
    .detail(serde_json::json!({
        "runs": runs,
        "peak_vmhwm_mib": peaks,
        "idle_rss_mib": idle,
        "per_run_kib": (bench::median(&samples.concat()) - bench::median(&idle)) * 1024.0 / runs as f64,
    }));
    bench::write(
        "memory",
        "cargo bench -p firedrill-tests --bench memory",
        &[measure],
    );
}
