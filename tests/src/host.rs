//! Kernel hosts with test-sized limits, and the demo inventory.

use super::*;

/// A kernel host with `limits`, `inventory` and `secrets`.
///
/// # Panics
/// If the engine cannot start.
#[allow(clippy::panic)]
pub fn host_with(
    limits: KernelLimits,
    inventory: Inventory,
    secrets: StaticSecrets,
) -> Arc<KernelHost> {
    let config = HostConfig {
        limits,
        max_concurrent_invocations: 16,
        cache_dir: Some(kernel_cache_dir()),
        ..HostConfig::default()
    };
    let targets = Targets::new(inventory);
    Arc::new(
        KernelHost::new(config, targets, Arc::new(secrets))
            .unwrap_or_else(|e| panic!("kernel host: {e}")),
    )
}

/// Load `bytes` into `host` and invoke it once on target `web-1` (run
/// `run-1`, step `step`, actor `user:test`).
///
/// # Panics
/// If the component does not load.
#[allow(clippy::expect_used)]
pub async fn invoke_on_web1(
    host: &KernelHost,
    bytes: &[u8],
    mode: firedrill::Mode,
    input: serde_json::Value,
) -> firedrill::kernel::InvokeReport {
    let kernel = host.load(bytes).await.expect("loads");
    host.invoke(
        &kernel,
        firedrill::kernel::InvokeRequest {
            run_id: "run-1".into(),
            step_id: "step".into(),
            mode,
            actor: "user:test".into(),
            targets: vec!["web-1".into()],
            input,
            observer: None,
        },
    )
    .await
}

/// A kernel host with test-sized limits (quick to hit) and one local target.
pub fn test_host() -> Arc<KernelHost> {
    host_with(
        test_limits(),
        Inventory::default().with_local("local"),
        StaticSecrets::default(),
    )
}

/// Limits small enough that hostile kernels hit them fast.
pub fn test_limits() -> KernelLimits {
    KernelLimits {
        memory_bytes: 16 << 20,
        cpu_ms: 300,
        wall_clock_ms: 2_000,
        output_bytes: 64 << 10,
        log_bytes: 16 << 10,
        host_calls: 100,
        exec_output_bytes: 4 << 10,
        exec_timeout_ms: 10_000,
    }
}

/// A local target whose `systemctl` is the demo stand-in
/// (`runbooks/demo/bin/systemctl`), keeping unit state in `state_dir`.
pub fn demo_inventory(name: &str, state_dir: &Path) -> Inventory {
    let mut inventory = Inventory::default().with_local(name);
    if let Some(TargetSpec::Local(spec)) = inventory.targets.get_mut(name) {
        let bin = workspace_root().join("runbooks/demo/bin");
        // tests/bin: test-only stand-ins (`ledger`).
        let test_bin = workspace_root().join("tests/bin");
        spec.env.insert(
            "PATH".into(),
            format!(
                "{}:{}:/usr/local/bin:/usr/bin:/bin",
                bin.display(),
                test_bin.display()
            ),
        );
        spec.env
            .insert("FIREDRILL_DEMO_DIR".into(), state_dir.display().to_string());
    }
    inventory
}
