//! firedrill and Restate side by side, through HTTP on both sides, driven
//! by the same load generator: a three-step durable workflow started and
//! awaited until it finished durably, by 1, 16 and 64 concurrent callers,
//! in alternating rounds (firedrill dry-run, firedrill live, Restate; then
//! again).
//!
//! - firedrill: the engine-only runbook (three steps of the `trivial`
//!   kernel, no process; the third runs live only), started with
//!   `POST /api/v1/runs {"wait_ms": ...}`, which answers when the run has
//!   finished and its end is committed. Embedded SQLite, `synchronous =
//!   FULL` (an fsync per commit), audit chain on. The server runs in this
//!   process on a runtime of its own (2 threads).
//! - Restate (tests/restate: server 1.7.12 and TypeScript SDK 1.17.2 from
//!   npm): a workflow of three `ctx.run` steps on Node, started with
//!   `POST /ThreeSteps/{key}/run` on its ingress, which answers when it
//!   finished. Its log fsyncs every commit (the default, written out in its
//!   config: `rocksdb-disable-wal-fsync = false`).
//! - The load generator: one reqwest client (HTTP/1.1, keep-alive) on a
//!   runtime of its own (1 thread), closed loop.
//!
//! `cargo bench -p firedrill-tests --bench sidebyside` (after
//! `scripts/bench` installed Restate into target/restate; env SIDE_TOTAL:
//! workflows per round at concurrency 16, default 400 (a quarter at 1,
//! twice at 64); SIDE_ROUNDS, default 3; SIDE_ONLY=dry-run measures
//! firedrill's dry-runs alone and writes no results: for profiling). Part
//! of `scripts/bench`.

use std::fmt::Write as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use firedrill::auth::Role;
use firedrill::server::ServerConfig;
use firedrill_tests::TestEnv;
use firedrill_tests::bench::{self, ENGINE_ONLY, Goal, Measure, Stat};
use firedrill_tests::restate::Restate;
use serde_json::{Value, json};

const CONCURRENCY: [usize; 3] = [1, 16, 64];

/// One side of the comparison: how to start one workflow and await it.
#[derive(Clone)]
enum Side {
    Firedrill {
        url: String,
        token: String,
        mode: &'static str,
    },
    Restate {
        ingress: String,
        next: Arc<AtomicUsize>,
    },
}

impl Side {
    fn key(&self) -> &'static str {
        match self {
            Side::Firedrill { mode: "live", .. } => "firedrill-live",
            Side::Firedrill { .. } => "firedrill-dry",
            Side::Restate { .. } => "restate",
        }
    }

    /// Start one workflow, await its end; panics if it did not succeed.
    async fn one(&self, client: &reqwest::Client) -> Duration {
        let started = Instant::now();
        match self {
            Side::Firedrill { url, token, mode } => {
                let resp = client
                    .post(format!("{url}/api/v1/runs"))
                    .bearer_auth(token)
                    .json(&json!({"runbook": "engine-only", "mode": mode, "inputs": {"unit": "web"}, "wait_ms": 20_000}))
                    .send()
                    .await
                    .expect("firedrill answers");
                let status = resp.status();
                let body: Value = resp.json().await.unwrap_or(Value::Null);
                let elapsed = started.elapsed();
                assert_eq!(status, 200, "firedrill: {body}");
                assert_eq!(body["run"]["status"], "succeeded", "firedrill: {body}");
                elapsed
            }
            Side::Restate { ingress, next } => {
                let n = next.fetch_add(1, Ordering::Relaxed);
                let resp = client
                    .post(format!("{ingress}/ThreeSteps/bench-{n}/run"))
                    .json(&json!({}))
                    .send()
                    .await
                    .expect("restate answers");
                let status = resp.status();
                let body = resp.text().await.unwrap_or_default();
                let elapsed = started.elapsed();
                assert_eq!(status, 200, "restate: {body}");
                elapsed
            }
        }
    }
}

/// `n` workflows by `concurrency` callers: latencies (ms) and wall time.
async fn phase(
    side: &Side,
    client: &reqwest::Client,
    concurrency: usize,
    n: usize,
) -> (Vec<f64>, Duration) {
    let per = (n / concurrency).max(1);
    let started = Instant::now();
    let tasks: Vec<_> = (0..concurrency)
        .map(|_| {
            let (side, client) = (side.clone(), client.clone());
            tokio::spawn(async move {
                let mut lat = Vec::with_capacity(per);
                for _ in 0..per {
                    lat.push(bench::ms(side.one(&client).await));
                }
                lat
            })
        })
        .collect();
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.expect("caller"));
    }
    (all, started.elapsed())
}

/// Drill the engine-only runbook live once, so live runs of it are
/// `ready` (no `force_untested`, no extra audit record per run).
async fn drill_live(client: &reqwest::Client, url: &str, token: &str) {
    let resp = client
        .post(format!("{url}/api/v1/drills/engine-only/run"))
        .bearer_auth(token)
        .send()
        .await
        .expect("drill");
    let body: Value = resp.json().await.expect("drill answer");
    let id = body["run_id"].as_str().expect("drill run id").to_string();
    for _ in 0..600 {
        let run: Value = client
            .get(format!("{url}/api/v1/runs/{id}"))
            .bearer_auth(token)
            .send()
            .await
            .expect("run")
            .json()
            .await
            .expect("run json");
        match run["status"].as_str() {
            Some("succeeded") => return,
            Some("queued" | "running") => tokio::time::sleep(Duration::from_millis(50)).await,
            _ => panic!("the live drill did not pass: {run}"),
        }
    }
    panic!("the live drill did not finish");
}

struct Figures {
    rates: Vec<f64>,
    latencies: Vec<f64>,
}

fn main() {
    let total = bench::size("SIDE_TOTAL", 400, 16);
    let rounds = bench::size("SIDE_ROUNDS", 3, 1);
    let server_rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("firedrill-server")
        .enable_all()
        .build()
        .expect("server runtime");
    let load_rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name("load")
        .enable_all()
        .build()
        .expect("load runtime");
    let (env, url, token) = server_rt.block_on(async {
        let env = TestEnv::new().await;
        let text = format!("{ENGINE_ONLY}drill: {{ every: 1h, mode: live, max_age: 3h }}\n");
        env.publish(&[&text]).await;
        let (url, _) = env
            .serve(ServerConfig {
                drills: false,
                max_concurrent_runs: 64,
                max_queued_runs: 1024,
                max_runs_per_runbook: 1024,
                ..ServerConfig::default()
            })
            .await;
        let token = env.token("bench", Role::Operator, &[]).await;
        (env, url, token)
    });
    let only_dry = std::env::var("SIDE_ONLY").is_ok_and(|v| v == "dry-run");
    let sides_and_restate = load_rt.block_on(async {
        let client = reqwest::Client::new();
        let dry = Side::Firedrill {
            url: url.clone(),
            token: token.clone(),
            mode: "dry-run",
        };
        if only_dry {
            return (vec![dry], None);
        }
        drill_live(&client, &url, &token).await;
        let restate = Restate::start().await;
        let sides = vec![
            dry,
            Side::Firedrill {
                url: url.clone(),
                token: token.clone(),
                mode: "live",
            },
            Side::Restate {
                ingress: restate.ingress.clone(),
                next: Arc::default(),
            },
        ];
        (sides, Some(restate))
    });
    let (sides, restate) = sides_and_restate;
    let figures = load_rt.block_on(async {
        let client = reqwest::Client::new();
        let mut figures: Vec<Vec<Figures>> = sides
            .iter()
            .map(|_| {
                CONCURRENCY
                    .iter()
                    .map(|_| Figures {
                        rates: Vec::new(),
                        latencies: Vec::new(),
                    })
                    .collect()
            })
            .collect();
        // Warm up both: caches, connections, JIT.
        for side in &sides {
            phase(side, &client, 4, 40.min(total * 2)).await;
        }
        for round in 0..rounds {
            for (ci, &c) in CONCURRENCY.iter().enumerate() {
                let n = match c {
                    1 => total / 4,
                    16 => total,
                    _ => total * 2,
                }
                .max(c);
                for (si, side) in sides.iter().enumerate() {
                    let (lat, wall) = phase(side, &client, c, n).await;
                    let rate = lat.len() as f64 / wall.as_secs_f64();
                    println!("  round {round} c={c:<2} {:<15} {rate:>7.0}/s", side.key());
                    let f = &mut figures[si][ci];
                    f.rates.push(rate);
                    f.latencies.extend(lat);
                }
            }
        }
        figures
    });
    drop(restate);
    if only_dry {
        return;
    }
    let mut measures = Vec::new();
    let mut table = String::from(
        "| 3-step durable workflow, over HTTP | c = 1 | c = 16 | c = 64 |\n|---|---|---|---|\n",
    );
    let label = |key: &str| match key {
        "firedrill-dry" => "firedrill dry-run",
        "firedrill-live" => "firedrill live",
        _ => "Restate 1.7.12",
    };
    for (si, side) in sides.iter().enumerate() {
        let _ = write!(table, "| {} |", label(side.key()));
        for (ci, &c) in CONCURRENCY.iter().enumerate() {
            let f = &figures[si][ci];
            let (p50, p99) = bench::p50_p99(&f.latencies);
            let rate = bench::median(&f.rates);
            let _ = write!(table, " {rate:.0}/s, p50 {p50:.1} ms, p99 {p99:.1} ms |");
            measures.push(
                Measure::from_rates(
                    &format!("sidebyside.{}.c{c}", side.key()),
                    &format!("{} over HTTP, concurrency {c}", label(side.key())),
                    "wf/s",
                    &f.rates,
                )
                .detail(
                    json!({"latency_ms": {"p50": p50, "p99": p99}, "samples": f.latencies.len()}),
                ),
            );
        }
        table.push('\n');
    }
    let restate_index = sides.len() - 1;
    for (si, side) in sides.iter().enumerate().take(restate_index) {
        let _ = write!(table, "| ratio, {} / Restate |", label(side.key()));
        for (ci, &c) in CONCURRENCY.iter().enumerate() {
            // Per round: the rounds alternate, so each ratio compares
            // figures taken moments apart.
            let ratios: Vec<f64> = figures[si][ci]
                .rates
                .iter()
                .zip(&figures[restate_index][ci].rates)
                .map(|(a, b)| a / b)
                .collect();
            let _ = write!(table, " {:.2}× |", bench::median(&ratios));
            measures.push(
                Measure::from_rates(
                    &format!("sidebyside.ratio.{}.c{c}", side.key()),
                    &format!(
                        "{} / Restate throughput, concurrency {c}",
                        label(side.key())
                    ),
                    "×",
                    &ratios,
                )
                .goal(Goal::at_least(Stat::Median, 3.0)),
            );
        }
        table.push('\n');
    }
    println!("\n{table}");
    drop(env);
    bench::write(
        "sidebyside",
        "cargo bench -p firedrill-tests --bench sidebyside",
        &measures,
    );
}
