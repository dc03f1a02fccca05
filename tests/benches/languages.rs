//! The same kernel in Rust, Python and JavaScript: the `firedrill kernel new`
//! scaffold (check a unit, restart it if down, verify), built from source by
//! its own build.sh, then loaded and invoked through the real host with
//! scripted target answers (no process spawns, so the kernel is measured).
//!
//! Per language: build time (warm tools), component size, first load
//! (compile to native code, cache miss), cached load (a new engine reading
//! the compiled-component cache), and instantiate + run (median, p99).
//!
//! `cargo bench -p firedrill-tests --bench languages`
//! (`LANG_RUNS=N` invocations per round, default 200; `LANG_ROUNDS`,
//! default 3). Part of `scripts/bench`.

use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use firedrill::Mode;
use firedrill::cli::author::{Lang, scaffold};
use firedrill::kernel::{HostConfig, InvokeRequest, KernelHost, KernelLimits};
use firedrill::secret::StaticSecrets;
use firedrill::transport::{MockTargets, Targets};
use firedrill_tests::bench::{self, Measure};
use firedrill_tests::{foreign_kernel, reuse_language_tools};

fn host(cache: &Path) -> KernelHost {
    let mut mock = MockTargets::default();
    mock.add_exec("systemctl is-active -- *=>0,active")
        .expect("mock");
    KernelHost::new(
        HostConfig {
            limits: KernelLimits::default(),
            cache_dir: Some(cache.to_path_buf()),
            ..HostConfig::default()
        },
        Targets::mocked(&["web-1".to_string()], mock),
        Arc::new(StaticSecrets::default()),
    )
    .expect("host")
}

/// Build the scaffold in `dir`; the build time.
fn build(dir: &Path, name: &str) -> Duration {
    let mut cmd = Command::new(dir.join("build.sh"));
    cmd.arg(dir.join(format!("{name}.wasm")));
    reuse_language_tools(dir, &mut cmd);
    let started = Instant::now();
    let status = cmd.status().expect("build.sh");
    assert!(status.success(), "{name}: build failed");
    started.elapsed()
}

#[allow(clippy::expect_used, clippy::print_stdout)]
fn main() {
    // Installs the pinned Python and JavaScript tools (and builds the examples).
    foreign_kernel("log-rotate-py");
    let runs = bench::size("LANG_RUNS", 200, 20);
    let rounds = bench::size("LANG_ROUNDS", 3, 1);
    let first_loads = bench::size("LANG_FIRST_LOADS", 3, 1);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let tmp = tempfile::tempdir().expect("tmp");
    let mut measures = Vec::new();
    println!(
        "{:<11} {:>9} {:>10} {:>11} {:>11} {:>11} {:>11}",
        "language", "build s", "size MB", "first ms", "cached ms", "run p50 ms", "run p99 ms"
    );
    for (lang, label) in [
        (Lang::Rust, "rust"),
        (Lang::Python, "python"),
        (Lang::Js, "javascript"),
    ] {
        let name = format!("bench-{label}");
        let dir = tmp.path().join(&name);
        scaffold(lang, &name, &dir, None).expect("scaffold");
        // Rust: a first build compiles the SDK's dependencies; time the
        // kernel's own build, as for the others.
        if lang == Lang::Rust {
            build(&dir, &name);
            std::fs::write(
                dir.join("src/lib.rs"),
                std::fs::read_to_string(dir.join("src/lib.rs")).expect("read") + "\n",
            )
            .expect("touch");
        }
        let build_time = build(&dir, &name);
        let bytes = std::fs::read(dir.join(format!("{name}.wasm"))).expect("component");

        // First load: compile (a fresh cache each time), three times.
        let mut first = Vec::new();
        for i in 0..first_loads {
            let cache = tmp.path().join(format!("cache-{label}-{i}"));
            let h = host(&cache);
            let t = Instant::now();
            rt.block_on(h.load(&bytes)).expect("loads");
            first.push(t.elapsed());
        }
        // Cached load: a new engine each time, reading the cache.
        let cache = tmp.path().join(format!("cache-{label}-0"));
        let mut cached = Vec::new();
        for _ in 0..first_loads + 2 {
            let h = host(&cache);
            let t = Instant::now();
            let k = rt.block_on(h.load(&bytes)).expect("loads");
            cached.push(t.elapsed());
            assert_eq!(k.cache, firedrill::kernel::CacheOutcome::Hit);
        }
        // Instantiate + run.
        let h = host(&cache);
        let kernel = rt.block_on(h.load(&bytes)).expect("loads");
        let request = InvokeRequest {
            run_id: "bench".into(),
            step_id: "step".into(),
            mode: Mode::Live,
            actor: "user:bench".into(),
            targets: vec!["web-1".into()],
            input: serde_json::json!({"unit": "web"}),
            observer: None,
        };
        let mut samples = Vec::with_capacity(rounds);
        for _ in 0..rounds {
            let mut times = Vec::with_capacity(runs);
            for _ in 0..runs {
                let t = Instant::now();
                let report = rt.block_on(h.invoke(&kernel, request.clone()));
                times.push(bench::us(t.elapsed()));
                assert!(report.result.is_ok(), "{label}: {:?}", report.result);
            }
            samples.push(times);
        }
        let ms_of = |v: &[Duration]| vec![v.iter().map(|d| bench::ms(*d)).collect::<Vec<_>>()];
        let run = Measure::from_samples(
            &format!("invoke.scaffold.{label}"),
            &format!("kernel instantiate + run, {label} (scaffold, 1 exec)"),
            "µs",
            &samples,
        )
        .detail(serde_json::json!({
            "build_s": build_time.as_secs_f64(),
            "size_bytes": bytes.len(),
        }));
        println!(
            "{:<11} {:>9.1} {:>10.1} {:>11.0} {:>11.1} {:>11.3} {:>11.3}",
            label,
            build_time.as_secs_f64(),
            bytes.len() as f64 / 1e6,
            bench::median(&ms_of(&first)[0]),
            bench::median(&ms_of(&cached)[0]),
            run.median / 1e3,
            run.p99 / 1e3,
        );
        measures.push(run);
        measures.push(Measure::from_samples(
            &format!("load.first.{label}"),
            &format!("first load (compile), {label}"),
            "ms",
            &ms_of(&first),
        ));
        measures.push(Measure::from_samples(
            &format!("load.cached.{label}"),
            &format!("cached load, {label}"),
            "ms",
            &ms_of(&cached),
        ));
    }
    bench::write(
        "languages",
        "cargo bench -p firedrill-tests --bench languages",
        &measures,
    );
}
