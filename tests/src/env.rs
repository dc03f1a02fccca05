//! [`TestEnv`]: a home, a store (SQLite, or PostgreSQL with
//! `FIREDRILL_TEST_BACKEND=postgres`), the kernels published, a service.

use super::*;

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

    /// The audit records with `action`, oldest first (at most 1,000).
    ///
    /// # Panics
    /// If the store cannot be read.
    #[allow(clippy::expect_used)]
    pub async fn audited(&self, action: &str) -> Vec<firedrill::audit::AuditRecord> {
        self.store
            .audit(&firedrill::store::AuditFilter {
                action: Some(action.to_string()),
                limit: 1_000,
                ..Default::default()
            })
            .await
            .expect("read audit")
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
