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
//! (`LANG_RUNS=N` invocations per language, default 200; results also in
//! target/bench-languages.json)

use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use firedrill::Mode;
use firedrill::cli::author::{Lang, scaffold};
use firedrill::kernel::{HostConfig, InvokeRequest, KernelHost, KernelLimits};
use firedrill::secret::StaticSecrets;
use firedrill::target::{MockTargets, Targets};
use firedrill_tests::{foreign_kernel, reuse_language_tools, workspace_root};

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

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
    let runs: usize = std::env::var("LANG_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let tmp = tempfile::tempdir().expect("tmp");
    let mut rows = Vec::new();
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
        for i in 0..3 {
            let cache = tmp.path().join(format!("cache-{label}-{i}"));
            let h = host(&cache);
            let t = Instant::now();
            rt.block_on(h.load(&bytes)).expect("loads");
            first.push(t.elapsed());
        }
        // Cached load: a new engine each time, reading the cache.
        let cache = tmp.path().join(format!("cache-{label}-0"));
        let mut cached = Vec::new();
        for _ in 0..5 {
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
        let mut times = Vec::with_capacity(runs);
        for _ in 0..runs {
            let t = Instant::now();
            let report = rt.block_on(h.invoke(&kernel, request.clone()));
            times.push(t.elapsed());
            assert!(report.result.is_ok(), "{label}: {:?}", report.result);
        }
        for v in [&mut first, &mut cached, &mut times] {
            v.sort();
        }
        let row = serde_json::json!({
            "language": label,
            "build_s": build_time.as_secs_f64(),
            "size_bytes": bytes.len(),
            "first_load_ms_median": ms(percentile(&first, 0.5)),
            "cached_load_ms_median": ms(percentile(&cached, 0.5)),
            "run_ms_p50": ms(percentile(&times, 0.5)),
            "run_ms_p99": ms(percentile(&times, 0.99)),
            "runs": runs,
        });
        println!(
            "{:<11} {:>9.1} {:>10.1} {:>11.0} {:>11.1} {:>11.3} {:>11.3}",
            label,
            build_time.as_secs_f64(),
            bytes.len() as f64 / 1e6,
            ms(percentile(&first, 0.5)),
            ms(percentile(&cached, 0.5)),
            ms(percentile(&times, 0.5)),
            ms(percentile(&times, 0.99)),
        );
        rows.push(row);
    }
    let out = workspace_root().join("target/bench-languages.json");
    std::fs::write(&out, serde_json::to_string_pretty(&rows).expect("json")).expect("write");
    println!("raw results: {}", out.display());
}
