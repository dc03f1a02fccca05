//! Several nodes on one store: how fast 1, 2 and 3 `firedrill serve` processes
//! drain a queue of live runs (a one-step runbook whose kernel spawns no
//! process: the engine's and the store's own cost, claims, leases and
//! fencing included), and how many audit records the store appends per
//! second (16 concurrent writers, one record per durable batch).
//!
//! `cargo bench -p firedrill-tests --bench nodes` (env NODES_RUNS: runs per
//! round, default 600; NODES_ROUNDS: rounds, default 3).
//! Backend: the embedded SQLite store, nodes sharing one home (WAL); with
//! `FIREDRILL_TEST_BACKEND=postgres`, a throwaway PostgreSQL server on
//! loopback (started by the bench, as the tests do).

use std::sync::Arc;
use std::time::{Duration, Instant};

use firedrill::audit::{Actor, NewEvent};
use firedrill::store::{Batch, RunStatus, Store};
use firedrill_tests::TestEnv;
use firedrill_tests::nodes::{Node, config, queue};

const ONE_STEP: &str = "apiVersion: firedrill/v1\nname: one-step\nversion: 1\nsteps:\n  - id: only\n    kernel: trivial@0.1.0\n    targets: [demo-host]\n";

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn median(mut xs: Vec<f64>) -> f64 {
    xs.sort_by(f64::total_cmp);
    xs[xs.len() / 2]
}

/// Runs per second for `nodes` nodes draining `runs` queued runs.
async fn drain(nodes: usize, runs: usize) -> f64 {
    let env = TestEnv::new().await;
    firedrill_tests::nodes::append_config(&env, &config(15_000, 3_000));
    env.publish(&[ONE_STEP]).await;
    let ids = queue(&env, "one-step", runs).await;
    let started = Instant::now();
    let procs: Vec<Node> = (0..nodes).map(|_| Node::start(&env, None)).collect();
    loop {
        let queued = env.store.queued_runs().await.expect("count");
        if queued == 0 {
            let mut settled = true;
            for id in ids.iter().rev().take(16) {
                let run = env.store.run(id).await.expect("read").expect("run");
                settled &= !run.status.is_pending();
            }
            if settled {
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let elapsed = started.elapsed();
    for id in &ids {
        let mut status = RunStatus::Queued;
        for _ in 0..500 {
            status = env.store.run(id).await.expect("read").expect("run").status;
            if !status.is_pending() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(status, RunStatus::Succeeded, "run {id}");
    }
    drop(procs);
    runs as f64 / elapsed.as_secs_f64()
}

/// Audit records appended per second: `writers` tasks, one record per batch.
async fn audit_appends(store: Arc<dyn Store>, writers: usize, total: usize) -> f64 {
    let started = Instant::now();
    let tasks: Vec<_> = (0..writers)
        .map(|w| {
            let store = store.clone();
            tokio::spawn(async move {
                let actor = Actor::user("bench");
                for i in 0..total / writers {
                    store
                        .apply(Batch::new().event(NewEvent::custom(
                            &actor,
                            "bench.append",
                            format!("w{w}:{i}"),
                        )))
                        .await
                        .expect("append");
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.expect("writer");
    }
    (total / writers * writers) as f64 / started.elapsed().as_secs_f64()
}

/// `label: median X unit (rounds: a, b, c)`.
fn report(label: &str, unit: &str, rates: &[f64]) {
    let rounds: Vec<String> = rates.iter().map(|r| format!("{r:.0}")).collect();
    println!(
        "  {label}: median {:.0} {unit} (rounds: {})",
        median(rates.to_vec()),
        rounds.join(", ")
    );
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let runs = env_usize("NODES_RUNS", 600);
    let rounds = env_usize("NODES_ROUNDS", 5);
    let backend = if firedrill_tests::pg::enabled() {
        "PostgreSQL (a throwaway server on loopback)"
    } else {
        "SQLite (synchronous = full; nodes share one home)"
    };
    println!("nodes bench: {runs} queued live runs per round, {rounds} rounds, {backend}");
    // Build the node binary before anything is timed.
    let _ = firedrill_tests::firedrill_bin();
    for nodes in [1, 2, 3] {
        let mut rates = Vec::new();
        for _ in 0..rounds {
            rates.push(drain(nodes, runs).await);
        }
        report(&format!("{nodes} node(s)"), "runs/s", &rates);
    }
    let mut rates = Vec::new();
    for _ in 0..rounds {
        let env = TestEnv::new().await;
        rates.push(audit_appends(env.store.clone(), 16, 8_000).await);
    }
    report(
        "audit appends (16 writers, 1 record per durable batch)",
        "records/s",
        &rates,
    );
}
