//! Instantiate + run of a trivial kernel through the full host path: input
//! schema check, sandbox slot, fresh store with limits and WASI, instantiate
//! from the `*Pre`, `run` (one log line, one host call), output schema check.
//!
//! `cargo bench -p firedrill-tests --bench invoke`

use criterion::{Criterion, criterion_group, criterion_main};
use firedrill::Mode;
use firedrill::kernel::InvokeRequest;
use firedrill_tests::{guest_bytes, test_host};

#[allow(clippy::expect_used)]
fn invoke(c: &mut Criterion) {
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
    // Sanity: the benchmark measures successful invocations only.
    let report = rt.block_on(host.invoke(&kernel, request.clone()));
    assert!(report.result.is_ok(), "{:?}", report.result);

    c.bench_function("invoke/trivial", |b| {
        b.to_async(&rt).iter(|| {
            let request = request.clone();
            let (host, kernel) = (&host, &kernel);
            async move {
                let report = host.invoke(kernel, request).await;
                assert!(report.result.is_ok());
                report
            }
        });
    });
}

criterion_group!(benches, invoke);
criterion_main!(benches);
