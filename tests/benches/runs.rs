//! Runbook throughput: dry-runs of the 3-step demo runbook end to end (real
//! kernels, real commands on the local target, durable store with
//! `synchronous = FULL`, audit chain), sequentially and 16 at a time.
//!
//! `cargo bench -p firedrill-tests --bench runs` (env RUNS_TOTAL to change
//! the number of runs per phase; default 800).

use std::sync::Arc;
use std::time::{Duration, Instant};

use firedrill::Mode;
use firedrill::audit::Actor;
use firedrill::executor::{RunRequest, RunbookSource, Service};
use firedrill::store::{RunFilter, RunStatus};
use firedrill_tests::{TestEnv, workspace_root};

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let idx = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[idx.min(sorted.len() - 1)]
}

/// The same three-step shape (a probe, a conditional step, a final step)
/// with a kernel that spawns no process: firedrill's own cost per run.
const ENGINE_ONLY: &str = r#"apiVersion: firedrill/v1
name: engine-only
version: 1
inputs: { type: object, properties: { unit: { type: string } } }
steps:
  - id: probe
    kernel: trivial@0.1.0
    targets: [demo-host]
  - id: act
    kernel: trivial@0.1.0
    when: "{{ steps.probe.output.now_ms > 0 }}"
    targets: [demo-host]
  - id: verify
    kernel: trivial@0.1.0
    when: "{{ run.mode == 'live' }}"
    targets: [demo-host]
"#;

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

fn main() {
    let total: usize = std::env::var("RUNS_TOTAL")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(800);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let env = TestEnv::new().await;
        let text = std::fs::read_to_string(workspace_root().join("runbooks/demo/restart-demo-web.yaml"))
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
        let mut results = Vec::new();
        for (runbook, label) in [
            ("restart-demo-web", "demo runbook (local target, 2 commands)"),
            ("engine-only", "engine only (trivial kernel, no commands)"),
        ] {
        // Warm up: compile caches, page cache, connection pool.
        phase(&service, runbook, 4, 40).await;
        for concurrency in [1, 16] {
            let n = if concurrency == 1 { total / 4 } else { total };
            let (lat, wall) = phase(&service, runbook, concurrency, n).await;
            let rate = lat.len() as f64 / wall.as_secs_f64();
            println!(
                "dry-run 3-step {label}, concurrency {concurrency:>2}: {} runs in {:.2} s = {rate:.0} runs/s; latency p50 {:.2} ms, p99 {:.2} ms",
                lat.len(),
                wall.as_secs_f64(),
                percentile(&lat, 0.50).as_secs_f64() * 1e3,
                percentile(&lat, 0.99).as_secs_f64() * 1e3,
            );
            results.push(serde_json::json!({
                "runbook": runbook, "concurrency": concurrency, "runs": lat.len(), "runs_per_s": rate,
                "p50_ms": percentile(&lat, 0.50).as_secs_f64() * 1e3,
                "p99_ms": percentile(&lat, 0.99).as_secs_f64() * 1e3,
            }));
        }
        }
        let runs = env.store.runs(&RunFilter { limit: 10_000, ..RunFilter::default() }).await.expect("runs");
        println!("store holds {} runs; audit head verified by the test suite", runs.len());
        let out = workspace_root().join("target/bench-runs.json");
        let _ = std::fs::write(&out, serde_json::to_string_pretty(&results).unwrap_or_default());
    });
}
