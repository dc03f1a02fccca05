//! Building what the tests run from source: the guest kernels (Rust, and
//! Python/JavaScript through their tools), and the `firedrill` binary.

use super::*;

/// Guest crates and the component file each produces.
pub const GUESTS: &[(&str, &str)] = &[
    ("service-status", "service_status"),
    ("restart-service", "restart_service"),
    ("disk-usage", "disk_usage"),
    ("http-health", "http_health"),
    ("test-kernel-hostile", "test_kernel_hostile"),
    ("test-kernel-liar", "test_kernel_liar"),
    ("test-kernel-trivial", "test_kernel_trivial"),
    ("test-kernel-ledger", "test_kernel_ledger"),
];

/// The workspace root.
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from(".."))
}

/// A `cargo` command (the cargo running this test, if any) without the
/// variables cargo sets for the crate under test (`CARGO_MANIFEST_DIR`,
/// `CARGO_PKG_NAME`, ...). Build scripts that track them, such as ring's,
/// would otherwise see a changed environment and rebuild, and the next
/// top-level build would rebuild them back: about a minute each way on two
/// cores, several times per CI run.
pub fn cargo() -> Command {
    let mut cmd = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    for (name, _) in std::env::vars_os() {
        if name.to_str().is_some_and(set_for_crate) {
            cmd.env_remove(name);
        }
    }
    cmd
}

/// Whether `name` is a variable cargo sets for the crate it builds or runs
/// (not a setting for cargo itself, such as `CARGO_HOME` or
/// `CARGO_TARGET_DIR`).
fn set_for_crate(name: &str) -> bool {
    const PREFIXES: [&str; 3] = ["CARGO_PKG_", "CARGO_MANIFEST_", "CARGO_BIN_"];
    const NAMES: [&str; 5] = [
        "CARGO_CRATE_NAME",
        "CARGO_PRIMARY_PACKAGE",
        "CARGO_TARGET_TMPDIR",
        "CARGO_RUSTC_CURRENT_DIR",
        "OUT_DIR",
    ];
    PREFIXES.iter().any(|p| name.starts_with(p)) || NAMES.contains(&name)
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
            let mut cmd = cargo();
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

/// Example kernels written in Python and JavaScript (`plugins/<name>`),
/// built from source by `scripts/build-kernels`.
pub const FOREIGN: &[&str] = &["log-rotate-py", "cert-expiry-js"];

/// The component of foreign-language kernel `name` (one of [`FOREIGN`]),
/// built from source first (once per process; the script skips kernels
/// whose sources did not change, and serialises concurrent builds).
///
/// # Panics
/// If the build fails: the tests cannot run without the kernels.
#[allow(clippy::panic)]
pub fn foreign_kernel(name: &str) -> PathBuf {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    assert!(FOREIGN.contains(&name), "unknown foreign kernel {name}");
    BUILT
        .get_or_init(|| {
            let status = Command::new(workspace_root().join("scripts/build-kernels"))
                .status()
                .unwrap_or_else(|e| panic!("cannot run scripts/build-kernels: {e}"));
            assert!(
                status.success(),
                "scripts/build-kernels failed; it needs python3 (venv, pip) and node/npm, and PyPI and npm reachable"
            );
            workspace_root().join("target/kernels")
        })
        .join(format!("{name}.wasm"))
}

/// Let a scaffolded kernel project in `dir` reuse the language tools the
/// example kernels installed (the same pinned versions), so that building it
/// downloads nothing: `cmd` (its build.sh or test.sh) gets the examples'
/// virtualenv and a shared cargo target dir; a JavaScript project gets the
/// example's `node_modules` and lock file.
///
/// # Panics
/// If the links cannot be made.
#[allow(clippy::expect_used)]
pub fn reuse_language_tools(dir: &Path, cmd: &mut Command) {
    let root = workspace_root();
    if dir.join("package.json").exists() && !dir.join("node_modules").exists() {
        let example = root.join("plugins/cert-expiry-js");
        std::os::unix::fs::symlink(example.join("node_modules"), dir.join("node_modules"))
            .expect("link node_modules");
        std::fs::copy(
            example.join("package-lock.json"),
            dir.join("package-lock.json"),
        )
        .expect("copy lock");
    }
    cmd.env("CARGO_TARGET_DIR", root.join("target/scaffold"))
        .env(
            "FIREDRILL_PY_VENV",
            root.join("plugins/log-rotate-py/.venv"),
        );
    // The outer cargo's settings must not leak into the kernel's build.
    for var in ["RUSTFLAGS", "CARGO_BUILD_TARGET", "CARGO_ENCODED_RUSTFLAGS"] {
        cmd.env_remove(var);
    }
}

/// The compiled-component cache every test host shares, so that a large
/// (Python, JavaScript) component is compiled once per machine, not once
/// per test. Entries are keyed by component digest and engine settings.
pub fn kernel_cache_dir() -> PathBuf {
    workspace_root().join("target/test-cache/kernels")
}

/// The `firedrill` binary of this build (`target/<profile>/firedrill`,
/// beside this test's `deps/`), built first if this test run did not.
///
/// # Panics
/// If it cannot be built.
#[allow(clippy::panic)]
pub fn firedrill_bin() -> PathBuf {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    BUILT
        .get_or_init(|| {
            let exe = std::env::current_exe().unwrap_or_else(|e| panic!("current exe: {e}"));
            let dir = exe
                .parent()
                .and_then(Path::parent)
                .unwrap_or_else(|| panic!("no target dir above {}", exe.display()));
            // Always (a no-op when up to date): a stale binary would test
            // old code. With failpoints, as this crate's dependency has
            // them, so `cargo test --workspace` builds the same binary.
            // A release build (benches) goes to its own target directory:
            // `cargo bench -p firedrill-tests` resolves features differently
            // from `cargo build -p firedrill`, and sharing target/release
            // made each rebuild the other's dependencies (minutes per switch).
            let release = dir.ends_with("release");
            let bench_dir = workspace_root().join("target/bench-node");
            let bin = if release {
                bench_dir.join("release/firedrill")
            } else {
                dir.join("firedrill")
            };
            let mut cmd = cargo();
            cmd.current_dir(workspace_root())
                .args(["build", "-p", "firedrill", "--bin", "firedrill"])
                .args(["--features", "failpoints"]);
            if release {
                cmd.arg("--release").arg("--target-dir").arg(&bench_dir);
            }
            let status = cmd
                .status()
                .unwrap_or_else(|e| panic!("cannot run cargo: {e}"));
            assert!(status.success(), "building the firedrill binary failed");
            bin
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

#[cfg(test)]
mod tests {
    use super::set_for_crate;

    #[test]
    fn nested_cargo_drops_the_crate_variables_and_keeps_cargo_settings() {
        for name in [
            "CARGO_MANIFEST_DIR",
            "CARGO_MANIFEST_PATH",
            "CARGO_PKG_NAME",
            "CARGO_PKG_VERSION_MAJOR",
            "CARGO_CRATE_NAME",
            "CARGO_BIN_EXE_firedrill",
            "CARGO_PRIMARY_PACKAGE",
            "CARGO_TARGET_TMPDIR",
            "OUT_DIR",
        ] {
            assert!(set_for_crate(name), "{name} should be dropped");
        }
        for name in [
            "CARGO",
            "CARGO_HOME",
            "CARGO_TARGET_DIR",
            "CARGO_INCREMENTAL",
            "CARGO_PROFILE_DEV_DEBUG",
            "CARGO_BUILD_JOBS",
            "RUSTFLAGS",
            "PATH",
        ] {
            assert!(!set_for_crate(name), "{name} should be kept");
        }
    }
}
