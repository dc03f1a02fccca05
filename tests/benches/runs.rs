//! Runbook throughput: dry-runs of a 3-step runbook end to end (durable
//! store with `synchronous = FULL`, audit chain) by 1, 16 and 64 concurrent
//! callers, in repeated rounds: the engine-only runbook (the `trivial`
//! kernel, no process: firedrill's own cost) and the demo runbook (real
//! kernels, real commands on the local target).
//!
//! `cargo bench -p firedrill-tests --bench runs` (env RUNS_TOTAL: runs per
//! round at concurrency 16, default 800 (a quarter at 1, twice at 64);
//! RUNS_ROUNDS, default 3; RUNS_ONLY=engine measures the engine-only runbook
//! alone and writes no results: for profiling; RUNS_GROWTH, the store sizes
//! of the cost-growth figures, default 1000,10000,100000). Part of
//! `scripts/bench`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use firedrill::Mode;
use firedrill::audit::Actor;
use firedrill::executor::{RunRequest, RunbookSource, Service};
use firedrill::store::{RunFilter, RunStatus};
use firedrill_tests::bench::{self, ENGINE_ONLY, Goal, Measure, Stat};
use firedrill_tests::{TestEnv, workspace_root};

async fn one_run(service: &Service, runbook: &'static str) -> Duration {
    let started = Instant::now();
    let id = service
        .run(RunRequest {
            source: RunbookSource::Published {
                name: runbook.into(),
                version: None,
            },
            mode: Mode::DryRun,
            actor: Actor::user("bench"),
            inputs: vec![("unit".into(), "web".into())],
        })
        .await
        .expect("run starts");
    let elapsed = started.elapsed();
    let run = service
        .store()
        .run(&id)
        .await
        .expect("read")
        .expect("exists");
    assert_eq!(run.status, RunStatus::Succeeded, "{:?}", run.error);
    elapsed
}

async fn phase(
    service: &Arc<Service>,
    runbook: &'static str,
    concurrency: usize,
    total: usize,
) -> (Vec<Duration>, Duration) {
    let started = Instant::now();
    let per_worker = total / concurrency;
    let mut tasks = Vec::new();
    for _ in 0..concurrency {
        let service = service.clone();
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::with_capacity(per_worker);
            for _ in 0..per_worker {
                lat.push(one_run(&service, runbook).await);
            }
            lat
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.expect("worker"));
    }
    let wall = started.elapsed();
    all.sort();
    (all, wall)
}

/// Cost growth: on a fresh store, engine-only dry-runs at concurrency 1
/// and 64 once the store already holds each of `RUNS_GROWTH` runs
/// (default 1,000, 10,000 and 100,000; filled by the same runs at
/// concurrency 64, each with its steps and audit records).
async fn growth(total: usize) -> Vec<Measure> {
    let sizes: Vec<usize> = std::env::var("RUNS_GROWTH")
        .ok()
        .map(|v| v.split(',').filter_map(|n| n.trim().parse().ok()).collect())
        .unwrap_or_else(|| {
            if bench::smoke() {
                vec![20, 40]
            } else {
                vec![1_000, 10_000, 100_000]
            }
        });
    let env = TestEnv::new().await;
    env.service
        .publish_runbook("engine-only.yaml", ENGINE_ONLY, &Actor::user("bench"))
        .await
        .expect("publish");
    let service = Arc::new(env.service.clone());
    let mut stored = 0;
    let mut measures = Vec::new();
    for size in sizes {
        if size > stored {
            let (lat, _) = phase(&service, "engine-only", 64, size - stored).await;
            stored += lat.len();
        }
        for concurrency in [1, 64] {
            let n = if concurrency == 1 {
                total / 4
            } else {
                total * 2
            }
            .max(concurrency);
            let (lat, wall) = phase(&service, "engine-only", concurrency, n).await;
            stored += lat.len();
            let rate = lat.len() as f64 / wall.as_secs_f64();
            let (p50, p99) = bench::p50_p99(&lat.iter().map(|d| bench::ms(*d)).collect::<Vec<_>>());
            println!(
                "  growth: {size} runs stored, concurrency {concurrency}: {rate:.0} runs/s, p50 {p50:.2} ms, p99 {p99:.2} ms"
            );
            measures.push(
                Measure::from_rates(
                    &format!("runs.growth.{size}.c{concurrency}"),
                    &format!("dry-run 3-step, engine only, {size} runs already stored, concurrency {concurrency}"),
                    "runs/s",
                    &[rate],
                )
                .detail(serde_json::json!({
                    "stored_before": size,
                    "runs": n,
                    "latency_ms": {"p50": p50, "p99": p99},
                })),
            );
        }
    }
    measures
}

fn main() {
    let total = bench::size("RUNS_TOTAL", 800, 32);
    let rounds = bench::size("RUNS_ROUNDS", 3, 1);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let measures = rt.block_on(async {
        let env = TestEnv::new().await;
        let text =
            std::fs::read_to_string(workspace_root().join("runbooks/demo/restart-demo-web.yaml"))
                .expect("demo runbook");
        env.service
            .publish_runbook("restart-demo-web.yaml", &text, &Actor::user("bench"))
            .await
            .expect("publish");
        env.service
            .publish_runbook("engine-only.yaml", ENGINE_ONLY, &Actor::user("bench"))
            .await
            .expect("publish");
        let service = Arc::new(env.service.clone());
        let mut measures = Vec::new();
        let engine_only = std::env::var("RUNS_ONLY").is_ok_and(|v| v == "engine");
        for (runbook, key, label) in [
            (
                "engine-only",
                "engine",
                "engine only: trivial kernel, no process",
            ),
            (
                "restart-demo-web",
                "demo",
                "demo runbook: 2 commands on the local target",
            ),
        ] {
            if engine_only && key != "engine" {
                continue;
            }
            // Warm up: compile caches, page cache, connection pool.
            phase(&service, runbook, 4, 40.min(total)).await;
            for concurrency in [1, 16, 64] {
                let n = match concurrency {
                    1 => total / 4,
                    16 => total,
                    _ => total * 2,
                }
                .max(concurrency);
                let mut rates = Vec::new();
                let mut latencies = Vec::new();
                for _ in 0..rounds {
                    let (lat, wall) = phase(&service, runbook, concurrency, n).await;
                    rates.push(lat.len() as f64 / wall.as_secs_f64());
                    latencies.extend(lat.iter().map(|d| bench::ms(*d)));
                }
                let (p50, p99) = bench::p50_p99(&latencies);
                let mut m = Measure::from_rates(
                    &format!("runs.{key}.c{concurrency}"),
                    &format!("dry-run 3-step, {label}, concurrency {concurrency}"),
                    "runs/s",
                    &rates,
                )
                .detail(serde_json::json!({
                    "runs_per_round": n,
                    "latency_ms": {"p50": p50, "p99": p99},
                }));
                if key == "engine" && concurrency == 64 {
                    m = m.goal(Goal::at_least(Stat::Median, 2500.0));
                }
                println!("  latency p50 {p50:.2} ms, p99 {p99:.2} ms");
                measures.push(m);
            }
        }
        if engine_only {
            return None;
        }
        // Checkpointing beside the runs (as `serve` does, here every 100
        // records or second, to a directory witness): alternating rounds
        // without and with it, engine-only at concurrency 64.
        let witness = tempfile::tempdir().expect("tempdir");
        let config = firedrill::audit::AuditConfig {
            checkpoint_every_records: 100,
            checkpoint_interval_s: 1,
            witnesses: vec![firedrill::audit::WitnessConfig::Directory {
                path: witness.path().to_path_buf(),
            }],
            ..Default::default()
        };
        let n = (total * 2).max(64);
        let (mut plain, mut checkpointed) = (Vec::new(), Vec::new());
        let mut signed = 0;
        for _ in 0..rounds {
            let (lat, wall) = phase(&service, "engine-only", 64, n).await;
            plain.push(lat.len() as f64 / wall.as_secs_f64());
            let tlog = firedrill::tlog::serve::spawn(
                env.store.clone(),
                env.home.path(),
                &config,
                &firedrill::secret::EnvSecrets,
            )
            .await
            .expect("checkpointer starts");
            let (lat, wall) = phase(&service, "engine-only", 64, n).await;
            checkpointed.push(lat.len() as f64 / wall.as_secs_f64());
            tlog.stop(Duration::from_secs(5)).await;
            signed = std::fs::read_dir(witness.path()).map_or(0, |d| d.count());
        }
        assert!(signed > 1, "checkpoints reached the witness");
        let ratio = bench::median(&checkpointed) / bench::median(&plain);
        println!("  with checkpoints / without: {ratio:.2} ({signed} witness files)");
        measures.push(
            Measure::from_rates(
                "runs.engine.c64.checkpointed",
                "dry-run 3-step, engine only, concurrency 64, checkpointing every 100 records to a directory witness",
                "runs/s",
                &checkpointed,
            )
            .detail(serde_json::json!({
                "runs_per_round": n,
                "without_checkpoints_runs_per_s": bench::median(&plain),
                "ratio_with_to_without": ratio,
            })),
        );
        let runs = env
            .store
            .runs(&RunFilter {
                limit: 100_000,
                ..RunFilter::default()
            })
            .await
            .expect("runs");
        assert!(runs.iter().all(|r| r.status == RunStatus::Succeeded));
        measures.extend(growth(total).await);
        Some(measures)
    });
    if let Some(measures) = measures {
        bench::write(
            "runs",
            "cargo bench -p firedrill-tests --bench runs",
            &measures,
        );
    }
}
