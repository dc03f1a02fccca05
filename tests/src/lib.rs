//! Shared support for the integration tests and benchmarks: builds the guest
//! kernels from source and starts kernel hosts with test-sized limits.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, OnceLock};

use firedrill::kernel::{HostConfig, KernelHost, KernelLimits};
use firedrill::secret::StaticSecrets;
use firedrill::target::{Inventory, Targets};

/// Guest crates and the component file each produces.
pub const GUESTS: &[(&str, &str)] = &[
    ("service-status", "service_status"),
    ("restart-service", "restart_service"),
    ("disk-usage", "disk_usage"),
    ("test-kernel-hostile", "test_kernel_hostile"),
    ("test-kernel-liar", "test_kernel_liar"),
    ("test-kernel-trivial", "test_kernel_trivial"),
];

/// The workspace root.
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from(".."))
}

/// Where guest components are built.
pub fn guest_dir() -> PathBuf {
    workspace_root().join("target/guests/wasm32-wasip2/guest")
}

/// Build every guest kernel (once per process; cargo makes it a no-op when
/// up to date and serialises concurrent builds itself) and return the
/// directory holding the `.wasm` files.
///
/// # Panics
/// If the build fails: the tests cannot run without the kernels.
#[allow(clippy::panic)]
pub fn build_guests() -> PathBuf {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    BUILT
        .get_or_init(|| {
            let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
            let mut cmd = Command::new(cargo);
            cmd.current_dir(workspace_root())
                .args(["build", "--profile", "guest", "--target", "wasm32-wasip2"])
                .arg("--target-dir")
                .arg(workspace_root().join("target/guests"));
            for (package, _) in GUESTS {
                cmd.args(["-p", package]);
            }
            // The outer cargo's settings must not leak into the guest build.
            for var in ["CARGO_TARGET_DIR", "RUSTFLAGS", "CARGO_BUILD_TARGET", "CARGO_ENCODED_RUSTFLAGS"] {
                cmd.env_remove(var);
            }
            let status = cmd
                .status()
                .unwrap_or_else(|e| panic!("cannot run cargo to build the guest kernels: {e}"));
            assert!(
                status.success(),
                "building the guest kernels failed; is the wasm32-wasip2 target installed? (rustup target add wasm32-wasip2)"
            );
            guest_dir()
        })
        .clone()
}

/// The component file of guest crate `package`, built from source.
///
/// # Panics
/// If `package` is not one of [`GUESTS`].
#[allow(clippy::panic)]
pub fn guest(package: &str) -> PathBuf {
    let file = GUESTS
        .iter()
        .find(|(p, _)| *p == package)
        .map(|(_, f)| *f)
        .unwrap_or_else(|| panic!("unknown guest {package}"));
    build_guests().join(format!("{file}.wasm"))
}

/// The bytes of guest `package`.
///
/// # Panics
/// If the file cannot be read after building.
#[allow(clippy::panic)]
pub fn guest_bytes(package: &str) -> Vec<u8> {
    let path = guest(package);
    std::fs::read(&path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()))
}

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
        ..HostConfig::default()
    };
    let targets = Targets::new(inventory);
    Arc::new(
        KernelHost::new(config, targets, Arc::new(secrets))
            .unwrap_or_else(|e| panic!("kernel host: {e}")),
    )
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
    if let Some(spec) = inventory.targets.get_mut(name) {
        let bin = workspace_root().join("runbooks/demo/bin");
        spec.env.insert(
            "PATH".into(),
            format!("{}:/usr/local/bin:/usr/bin:/bin", bin.display()),
        );
        spec.env
            .insert("FIREDRILL_DEMO_DIR".into(), state_dir.display().to_string());
    }
    inventory
}
