//! Instantiate + run of a trivial kernel through the full host path: input
//! schema check, sandbox slot, fresh store with limits and WASI, instantiate
//! from the `*Pre`, `run` (one log line, one host call), output schema check.
//! Each invocation is timed on its own; rounds of invocations, one at a time.
//!
//! `cargo bench -p firedrill-tests --bench invoke` (env INVOKE_RUNS per
//! round, default 5,000; INVOKE_ROUNDS, default 5). Part of `scripts/bench`.

use std::time::Instant;

use firedrill::Mode;
use firedrill::kernel::InvokeRequest;
use firedrill_tests::bench::{self, Goal, Measure, Stat};
use firedrill_tests::{guest_bytes, test_host};

fn main() {
    let runs = bench::size("INVOKE_RUNS", 5_000, 50);
    let rounds = bench::size("INVOKE_ROUNDS", 5, 2);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let host = test_host();
    let kernel = rt
        .block_on(host.load(&guest_bytes("test-kernel-trivial")))
        .expect("loads");
    let request = InvokeRequest {
        run_id: "bench".into(),
        step_id: "step".into(),
        mode: Mode::DryRun,
        actor: "user:bench".into(),
        targets: vec!["local".into()],
        input: serde_json::json!({}),
        observer: None,
    };
    let samples: Vec<Vec<f64>> = rt.block_on(async {
        // Warm up (and check: only successful invocations are measured).
        for _ in 0..runs.min(500) {
            let report = host.invoke(&kernel, request.clone()).await;
            assert!(report.result.is_ok(), "{:?}", report.result);
        }
        let mut all = Vec::new();
        for _ in 0..rounds {
            let mut round = Vec::with_capacity(runs);
            for _ in 0..runs {
                let request = request.clone();
                let started = Instant::now();
                let report = host.invoke(&kernel, request).await;
                round.push(bench::us(started.elapsed()));
                assert!(report.result.is_ok(), "{:?}", report.result);
            }
            all.push(round);
        }
        all
    });
    let measure = Measure::from_samples(
        "invoke.rust",
        "kernel instantiate + run, Rust (trivial)",
        "µs",
        &samples,
    )
    .goal(Goal::at_most(Stat::Median, 30.0))
    .detail(serde_json::json!({"kernel": "tests/kernels/trivial", "per_round": runs}));
    bench::write(
        "invoke",
        "cargo bench -p firedrill-tests --bench invoke",
        &[measure],
    );
}
