//! Shared support for the integration tests and benchmarks: builds the guest
//! kernels from source and starts kernel hosts with test-sized limits.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, OnceLock};

pub mod bench;
pub mod browser;
pub mod nodes;
pub mod pg;
pub mod sshd;
pub mod web;

use firedrill::audit::Actor;
use firedrill::executor::{RunRequest, RunbookSource, Service};
use firedrill::kernel::{HostConfig, KernelHost, KernelLimits, Registry};
use firedrill::secret::StaticSecrets;
use firedrill::store::{SqliteStore, Store, StoreConfig};
use firedrill::transport::{Inventory, TargetSpec, Targets, TargetsConfig};

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

/// Run the `firedrill` binary of this build on `home` with `args`.
///
/// # Panics
/// If it cannot be run.
#[allow(clippy::expect_used)]
pub fn run_firedrill(home: &Path, args: &[&str]) -> std::process::Output {
    Command::new(firedrill_bin())
        .args(args)
        .env("FIREDRILL_HOME", home)
        .env_remove("FIREDRILL_ACTOR")
        .output()
        .expect("run firedrill")
}

/// A command's stdout and stderr, as text.
pub fn output_text(out: &std::process::Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// One API call: `method path` on `base` with an optional bearer token and
/// JSON body; the status and the body (JSON, or the text as a string).
///
/// # Panics
/// If the request cannot be sent or its body read.
#[allow(clippy::expect_used)]
pub async fn api_call(
    client: &reqwest::Client,
    base: &str,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Option<serde_json::Value>,
) -> (reqwest::StatusCode, serde_json::Value) {
    let mut req = client.request(method.parse().expect("method"), format!("{base}{path}"));
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    if let Some(b) = body {
        req = req.json(&b);
    }
    let resp = req.send().await.expect("request");
    let status = resp.status();
    let text = resp.text().await.expect("body");
    (
        status,
        serde_json::from_str(&text).unwrap_or(serde_json::Value::String(text)),
    )
}

/// A port free on loopback right now (for a server a test starts).
///
/// # Panics
/// If no port can be bound.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or_else(|e| panic!("no free port: {e}"))
}

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

/// A complete engine on a temp home: store, kernel host with a `demo-host`
/// local target (the `systemctl` stand-in), registry, run service, and the
/// example and test kernels published from source.
pub struct TestEnv {
    pub home: tempfile::TempDir,
    pub service: Service,
    pub store: Arc<dyn Store>,
    /// The PostgreSQL database (`FIREDRILL_TEST_BACKEND=postgres`), also
    /// written to the home's `firedrill.toml` for the binary; `None`: SQLite.
    pub database: Option<String>,
}

impl std::fmt::Debug for TestEnv {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestEnv")
            .field("home", &self.home.path())
            .finish()
    }
}

/// The value of the secret `canary` in every [`TestEnv`]; it must never
/// appear in anything firedrill records.
pub const CANARY: &str = "canary-s3cr3t-7f3a9c";
/// A second secret (`canary-next`), e.g. the new one during a rotation.
pub const CANARY_NEXT: &str = "canary-n3xt-s3cr3t-51d0";

/// Kernels every [`TestEnv`] publishes.
pub const PUBLISHED: &[&str] = &[
    "service-status",
    "restart-service",
    "disk-usage",
    "http-health",
    "test-kernel-hostile",
    "test-kernel-trivial",
];

impl TestEnv {
    /// A fresh environment with default limits.
    ///
    /// # Panics
    /// If anything cannot be set up.
    #[allow(clippy::expect_used)]
    pub async fn new() -> Self {
        Self::with_limits(KernelLimits::default()).await
    }

    /// A fresh environment with `limits`.
    ///
    /// # Panics
    /// If anything cannot be set up.
    #[allow(clippy::expect_used)]
    pub async fn with_limits(limits: KernelLimits) -> Self {
        Self::build(limits, 0, Inventory::default(), TargetsConfig::default()).await
    }

    /// An environment whose inventory also has `extra`'s targets and groups
    /// (SSH servers, HTTP endpoints), reached with `config`.
    pub async fn with_targets(extra: Inventory, config: TargetsConfig) -> Self {
        Self::build(KernelLimits::default(), 0, extra, config).await
    }

    /// An environment whose inventory also has a fleet `web-1`..`web-N`
    /// (local targets labelled `role=web`, group `webs`).
    pub async fn with_fleet(n: usize) -> Self {
        Self::build(
            KernelLimits::default(),
            n,
            Inventory::default(),
            TargetsConfig::default(),
        )
        .await
    }

    #[allow(clippy::expect_used)]
    async fn build(
        limits: KernelLimits,
        fleet: usize,
        extra: Inventory,
        targets: TargetsConfig,
    ) -> Self {
        let home = tempfile::tempdir().expect("tempdir");
        let mut inventory = demo_inventory("demo-host", &home.path().join("demo-state"));
        let template = inventory.get("demo-host").cloned().expect("demo host");
        let mut members = Vec::new();
        for i in 1..=fleet {
            let name = format!("web-{i}");
            let mut spec = template.clone();
            spec.labels_mut().insert("role".into(), "web".into());
            inventory.targets.insert(name.clone(), spec);
            members.push(name);
        }
        if fleet > 0 {
            inventory.groups.insert("webs".into(), members);
        }
        inventory.targets.extend(extra.targets);
        inventory.groups.extend(extra.groups);
        std::fs::write(
            home.path().join("inventory.yaml"),
            serde_json::to_string(&inventory_json(&inventory)).expect("json"),
        )
        .expect("write inventory");
        let database = if pg::enabled() {
            Some(pg::new_database().await)
        } else {
            None
        };
        let store: Arc<dyn Store> = match &database {
            Some(url) => {
                std::fs::write(
                    home.path().join("firedrill.toml"),
                    format!("[store]\nurl = {url:?}\n"),
                )
                .expect("write config");
                Arc::new(
                    firedrill::store::PgStore::open(url, &StoreConfig::default())
                        .await
                        .expect("store opens"),
                )
            }
            None => Arc::new(
                SqliteStore::open(&home.path().join("firedrill.db"), &StoreConfig::default())
                    .await
                    .expect("store opens"),
            ),
        };
        let host = Arc::new(
            KernelHost::new(
                HostConfig {
                    limits,
                    max_concurrent_invocations: 32,
                    cache_dir: Some(kernel_cache_dir()),
                    ..HostConfig::default()
                },
                Targets::with_config(inventory, &targets),
                Arc::new(StaticSecrets(
                    [
                        ("canary".to_string(), firedrill::secret::Secret::new(CANARY)),
                        (
                            "canary-next".to_string(),
                            firedrill::secret::Secret::new(CANARY_NEXT),
                        ),
                    ]
                    .into(),
                )),
            )
            .expect("host"),
        );
        let registry = Registry::new(home.path().join("kernels"), store.clone());
        let service = Service::new(store.clone(), host, registry);
        let actor = Actor::user("publisher");
        for package in PUBLISHED {
            service
                .registry()
                .publish(service.host(), &guest_bytes(package), &actor)
                .await
                .expect("kernel publishes");
        }
        TestEnv {
            home,
            service,
            store,
            database,
        }
    }

    /// The demo state directory (unit pid files, restart log).
    pub fn demo_state(&self) -> PathBuf {
        self.home.path().join("demo-state")
    }

    /// Run the `systemctl` stand-in against this environment's demo host.
    ///
    /// # Panics
    /// If the stand-in cannot be started.
    #[allow(clippy::expect_used)]
    pub fn systemctl(&self, verb: &str, unit: &str) -> bool {
        Command::new(workspace_root().join("runbooks/demo/bin/systemctl"))
            .args([verb, "--", unit])
            .env("FIREDRILL_DEMO_DIR", self.demo_state())
            .stdout(std::process::Stdio::null())
            .status()
            .expect("run systemctl stand-in")
            .success()
    }

    /// How often `unit` was restarted through the stand-in.
    pub fn restarts(&self, unit: &str) -> usize {
        std::fs::read_to_string(self.demo_state().join(format!("{unit}.restarts")))
            .map(|s| s.lines().count())
            .unwrap_or(0)
    }

    /// Everything the store holds: every byte of its files (database,
    /// WAL) on SQLite, the text of every row of every table on PostgreSQL,
    /// to search for things that must never be recorded.
    ///
    /// # Panics
    /// If the store cannot be read.
    #[allow(clippy::expect_used)]
    pub async fn store_bytes(&self) -> Vec<u8> {
        let mut all = Vec::new();
        if let Some(url) = &self.database {
            let mut db = <sqlx::PgConnection as sqlx::Connection>::connect(url)
                .await
                .expect("connect");
            let tables: Vec<String> = sqlx::query_scalar(
                "SELECT table_name::text FROM information_schema.tables WHERE table_schema = 'public'",
            )
            .fetch_all(&mut db)
            .await
            .expect("tables");
            for table in tables {
                // Table names come from the catalogue, quoted.
                let rows: Vec<String> = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
                    "SELECT CAST(t AS text) FROM \"{table}\" t"
                )))
                .fetch_all(&mut db)
                .await
                .expect("rows");
                for row in rows {
                    all.extend(row.into_bytes());
                    all.push(b'\n');
                }
            }
            return all;
        }
        for entry in std::fs::read_dir(self.home.path()).expect("home") {
            let path = entry.expect("entry").path();
            let is_store = path
                .file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("firedrill.db"));
            if is_store {
                all.extend(std::fs::read(&path).expect("read"));
            }
        }
        all
    }

    /// Publish each runbook in `texts` as user `admin`.
    ///
    /// # Panics
    /// If one does not publish.
    #[allow(clippy::expect_used)]
    pub async fn publish(&self, texts: &[&str]) {
        for text in texts {
            self.service
                .publish_runbook("rb.yaml", text, &Actor::user("admin"))
                .await
                .expect("publish");
        }
    }

    /// An API token (`name`, `role`, limited to `runbooks` unless empty),
    /// created by user `admin`, belonging to a person of the same name.
    ///
    /// # Panics
    /// If it cannot be created.
    #[allow(clippy::expect_used)]
    pub async fn token(
        &self,
        name: &str,
        role: firedrill::auth::Role,
        runbooks: &[&str],
    ) -> String {
        self.token_of(name, role, runbooks, name).await
    }

    /// As [`TestEnv::token`], belonging to the person `owner`.
    ///
    /// # Panics
    /// If it cannot be created.
    #[allow(clippy::expect_used)]
    pub async fn token_of(
        &self,
        name: &str,
        role: firedrill::auth::Role,
        runbooks: &[&str],
        owner: &str,
    ) -> String {
        firedrill::auth::create(
            self.store.as_ref(),
            firedrill::auth::TokenSpec {
                name: name.to_string(),
                role,
                runbooks: runbooks.iter().map(|s| s.to_string()).collect(),
                owner: owner.to_string(),
            },
            None,
            &Actor::user("admin"),
        )
        .await
        .expect("token")
        .1
    }

    /// `firedrill serve` for this environment on a free loopback port, until
    /// the test's runtime ends. Returns the base URL and the server state.
    ///
    /// # Panics
    /// If no port can be bound.
    #[allow(clippy::expect_used)]
    pub async fn serve(
        &self,
        config: firedrill::server::ServerConfig,
    ) -> (String, firedrill::server::AppState) {
        let state = firedrill::server::AppState::new(self.service.clone(), config);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let url = format!("http://{}", listener.local_addr().expect("addr"));
        let s = state.clone();
        tokio::spawn(async move {
            let _ = firedrill::server::serve(s, listener, std::future::pending()).await;
        });
        (url, state)
    }

    /// Run runbook `text` (as a draft file) in `mode` with `inputs`.
    pub async fn run_text(
        &self,
        text: &str,
        mode: firedrill::Mode,
        inputs: &[(&str, &str)],
    ) -> Result<String, firedrill::executor::RunError> {
        self.service
            .run(RunRequest {
                source: RunbookSource::File {
                    path: "test.yaml".into(),
                    text: text.to_string(),
                },
                mode,
                actor: Actor::user("tester"),
                inputs: inputs
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
            })
            .await
    }
}

impl Drop for TestEnv {
    fn drop(&mut self) {
        // Stop any demo process the test started.
        if let Ok(entries) = std::fs::read_dir(self.demo_state()) {
            for e in entries.flatten() {
                let name = e.file_name().to_string_lossy().into_owned();
                if let Some(unit) = name.strip_suffix(".pid") {
                    self.systemctl("stop", unit);
                }
            }
        }
    }
}

/// The inventory as the JSON (a YAML subset) `inventory.yaml` holds.
fn inventory_json(inventory: &Inventory) -> serde_json::Value {
    serde_json::to_value(inventory).unwrap_or_default()
}

/// An Alertmanager webhook body (version 4) with one firing alert per
/// `(fingerprint, labels)`.
pub fn alertmanager_payload(alerts: &[(&str, serde_json::Value)]) -> serde_json::Value {
    serde_json::json!({
        "version": "4",
        "groupKey": "{}:{alertname=\"bench\"}",
        "truncatedAlerts": 0,
        "status": "firing",
        "receiver": "firedrill",
        "groupLabels": {},
        "commonLabels": {},
        "commonAnnotations": {},
        "externalURL": "http://alertmanager.example:9093",
        "alerts": alerts.iter().map(|(fp, labels)| serde_json::json!({
            "status": "firing",
            "labels": labels,
            "annotations": {},
            "startsAt": "2026-11-23T10:00:00.000Z",
            "endsAt": "0001-01-01T00:00:00Z",
            "generatorURL": "http://prometheus.example/graph",
            "fingerprint": fp,
        })).collect::<Vec<_>>(),
    })
}

/// A runbook that alerts `alertname=<alertname>` start (live) for one unit
/// on the demo host: one read step (a real command), keyed per alert so
/// every distinct alert starts a run; `readiness_policy: warn`, so it runs
/// although it was never drilled.
pub fn probe_on_alert(name: &str, alertname: &str) -> String {
    format!(
        r#"apiVersion: firedrill/v1
name: {name}
version: 1
inputs: {{ type: object, properties: {{ unit: {{ type: string }} }} }}
steps:
  - id: probe
    kernel: service-status@1.0.0
    targets: [demo-host]
    with: {{ unit: "{{{{ inputs.unit }}}}" }}
triggers:
  - source: alertmanager
    match: {{ alertname: {alertname} }}
    mode: live
    inputs: {{ unit: web }}
    key: "{{{{ alert.fingerprint }}}}"
    cooldown: 1s
    breaker: 0
readiness_policy: warn
"#
    )
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
