//! The kernel host: one wasmtime `Engine` per process, a `*Pre` per kernel
//! digest, and a fresh `Store` per invocation.
//!
//! One file of about 750 lines, on purpose: loading (compile, link,
//! describe twice, validate) and invoking (sandbox slot, limits, epoch
//! deadline, wall clock, redaction of the report) share the engine's
//! configuration and the pooling allocator's invariants, and reading them
//! side by side is how a change to one is checked against the other.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use firedrill_sdk::manifest::{
    Capabilities, Effect, ExecCapability, HttpCapability, Manifest, ManifestError, Mode,
};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tokio::sync::Semaphore;
use wasmtime::component::{HasSelf, Linker};
use wasmtime::{Config, Engine, InstanceAllocationStrategy, PoolingAllocationConfig, Store};

use super::bindings::firedrill::kernel::types as wit;
use super::bindings::{Kernel as KernelWorld, KernelPre};
use super::cache::{CacheOutcome, ComponentCache};
use super::limits::{KernelLimits, Limit, LimitExceeded};
use super::sandbox::{
    CallObserver, HostCall, ImpureDescribe, LogLine, Phase, Sandbox, SandboxSetup,
};
use crate::secret::{Redactor, SecretProvider};
use crate::transport::Targets;

/// Settings of the kernel host (`[kernel]` in `firedrill.toml`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "kebab-case", default)]
pub struct HostConfig {
    pub limits: KernelLimits,
    /// Invocations running at once; further ones wait for a slot. Also sizes
    /// the pooling allocator. Default 64.
    pub max_concurrent_invocations: u32,
    /// Period of the epoch ticker that meters guest CPU time, in
    /// milliseconds. Default 10.
    pub epoch_tick_ms: u64,
    /// Distinct kernels kept compiled in memory. Default 256.
    pub max_loaded_kernels: usize,
    /// Bytes of each pooled sandbox's linear memory kept resident between
    /// invocations and reset in place (only the pages a kernel dirtied, on
    /// Linux 6.7+), instead of released and faulted back in. Warm slots hold
    /// at most `max-concurrent-invocations` times this. 0: release all.
    /// Default 2 MiB. On kernels without `PAGEMAP_SCAN` (before 6.7) the
    /// whole amount is memset after every invocation: set it to 65536 or 0
    /// there.
    pub keep_resident_bytes: usize,
    /// Where compiled components are cached (`<home>/cache/kernels` by
    /// default; none disables the cache).
    pub cache_dir: Option<PathBuf>,
}

impl Default for HostConfig {
    fn default() -> Self {
        HostConfig {
            limits: KernelLimits::default(),
            max_concurrent_invocations: 64,
            epoch_tick_ms: 10,
            max_loaded_kernels: 256,
            keep_resident_bytes: KEEP_RESIDENT_BYTES,
            cache_dir: None,
        }
    }
}

/// The kernel host could not start.
#[derive(Debug, thiserror::Error)]
#[error("cannot start the WebAssembly engine: {0}")]
pub struct HostStartError(String);

/// A component could not be loaded as a kernel.
#[derive(Debug, Clone, thiserror::Error)]
pub enum LoadError {
    #[error("not a valid WebAssembly component: {0}")]
    NotAComponent(String),
    #[error(
        "the component does not fit the firedrill:kernel@0.1.0 contract: {0}; build it against sdk/wit/kernel.wit"
    )]
    Contract(String),
    #[error("describe() failed: {0}")]
    Describe(String),
    #[error("the manifest is not valid: {0}")]
    Manifest(#[from] ManifestError),
    #[error("the manifest's {which} schema is not a valid JSON Schema: {reason}")]
    Schema { which: &'static str, reason: String },
    #[error(
        "describe() answered differently on two calls ({first} then {second}); a kernel must describe itself the same way every time"
    )]
    Unstable { first: String, second: String },
}

/// A compiled, described kernel, ready to instantiate.
pub struct LoadedKernel {
    pub digest: String,
    pub manifest: Manifest,
    pub version: semver::Version,
    pub cache: CacheOutcome,
    pub size_bytes: usize,
    /// The instantiable component; `None` for a [`LoadedKernel::declared`]
    /// kernel, which validation can use and nothing can run.
    pre: Option<KernelPre<Sandbox>>,
    capabilities: Arc<Capabilities>,
    input_schema: Arc<jsonschema::Validator>,
    output_schema: Arc<jsonschema::Validator>,
}

impl std::fmt::Debug for LoadedKernel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoadedKernel")
            .field("reference", &self.manifest.reference())
            .field("digest", &self.digest)
            .finish_non_exhaustive()
    }
}

/// Compile one of a manifest's schemas.
fn compile_schema(
    which: &'static str,
    schema: &serde_json::Value,
) -> Result<Arc<jsonschema::Validator>, LoadError> {
    jsonschema::validator_for(schema)
        .map(Arc::new)
        .map_err(|e| LoadError::Schema {
            which,
            reason: e.to_string(),
        })
}

impl LoadedKernel {
    /// A kernel known by its manifest alone (checked like a loaded one's),
    /// with no code: runbook validation accepts it as it would the
    /// component, and an invocation fails saying there is nothing to run.
    /// For validating runbooks, and testing validation, without building
    /// or publishing components.
    pub fn declared(manifest: Manifest, digest: &str) -> Result<Self, LoadError> {
        let version = manifest.validate()?;
        Ok(LoadedKernel {
            input_schema: compile_schema("input", &manifest.input_schema)?,
            output_schema: compile_schema("output", &manifest.output_schema)?,
            capabilities: Arc::new(manifest.capabilities.clone()),
            digest: digest.to_string(),
            manifest,
            version,
            cache: CacheOutcome::Disabled,
            size_bytes: 0,
            pre: None,
        })
    }

    /// `name@version`.
    pub fn reference(&self) -> String {
        self.manifest.reference()
    }

    /// Check `input` against the kernel's input schema; every problem is listed.
    pub fn validate_input(&self, input: &serde_json::Value) -> Result<(), Vec<String>> {
        let problems: Vec<String> = self
            .input_schema
            .iter_errors(input)
            .map(|e| format!("{} (at {})", e, e.instance_path()))
            .collect();
        if problems.is_empty() {
            Ok(())
        } else {
            Err(problems)
        }
    }
}

/// One call of a kernel's `run`.
#[derive(Clone)]
pub struct InvokeRequest {
    pub run_id: String,
    pub step_id: String,
    pub mode: Mode,
    /// `kind:id`, e.g. `user:alice`.
    pub actor: String,
    /// The targets the step grants; nothing else is reachable.
    pub targets: Vec<String>,
    pub input: serde_json::Value,
    /// Told about each host call as it happens.
    pub observer: Option<Arc<dyn CallObserver>>,
}

/// Why an invocation did not produce output.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, Serialize)]
#[serde(tag = "kind", content = "message", rename_all = "kebab-case")]
pub enum InvokeError {
    /// Input did not satisfy the kernel's schema (the kernel never ran), or
    /// the kernel reported `invalid-input`.
    #[error("invalid input: {0}")]
    InvalidInput(String),
    /// The kernel reported `failed`.
    #[error("kernel failed: {0}")]
    Failed(String),
    /// The kernel reported `retryable`.
    #[error("kernel failed (retryable): {0}")]
    Retryable(String),
    /// A limit was exceeded; the invocation was stopped.
    #[error("{0}")]
    Limit(LimitExceeded),
    /// The kernel crashed (panic, unreachable, out-of-bounds access...).
    #[error("kernel trapped: {0}")]
    Trap(String),
    /// The kernel returned output that is not JSON or not valid for its output schema.
    #[error("kernel returned invalid output: {0}")]
    BadOutput(String),
}

impl std::fmt::Debug for InvokeRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InvokeRequest")
            .field("run_id", &self.run_id)
            .field("step_id", &self.step_id)
            .field("mode", &self.mode)
            .field("actor", &self.actor)
            .field("targets", &self.targets)
            .finish_non_exhaustive()
    }
}

impl InvokeError {
    /// This error with every known secret value replaced.
    pub fn redacted(self, r: &Redactor) -> Self {
        match self {
            InvokeError::InvalidInput(m) => InvokeError::InvalidInput(r.text(&m)),
            InvokeError::Failed(m) => InvokeError::Failed(r.text(&m)),
            InvokeError::Retryable(m) => InvokeError::Retryable(r.text(&m)),
            InvokeError::Trap(m) => InvokeError::Trap(r.text(&m)),
            InvokeError::BadOutput(m) => InvokeError::BadOutput(r.text(&m)),
            limit @ InvokeError::Limit(_) => limit,
        }
    }

    /// Whether the engine may retry under a step's retry policy.
    pub fn is_retryable(&self) -> bool {
        matches!(self, InvokeError::Retryable(_))
    }
}

/// Everything one invocation did.
#[derive(Debug, Clone, Serialize)]
pub struct InvokeReport {
    pub kernel: String,
    pub digest: String,
    pub mode: Mode,
    pub result: Result<serde_json::Value, InvokeError>,
    pub host_calls: Vec<HostCall>,
    pub logs: Vec<LogLine>,
    /// What the kernel wrote to WASI stdout and stderr (bounded by the log limit).
    pub stdout: String,
    pub stderr: String,
    pub duration_ms: u64,
}

impl InvokeReport {
    /// Calls refused by the capability check.
    pub fn denials(&self) -> impl Iterator<Item = &HostCall> {
        self.host_calls.iter().filter(|c| c.is_denied())
    }

    /// Changes recorded as planned instead of performed (the dry-run plan).
    pub fn planned_changes(&self) -> impl Iterator<Item = &HostCall> {
        self.host_calls
            .iter()
            .filter(|c| c.simulated && c.effect == Some(Effect::Change))
    }
}

/// Increments the engine epoch on a fixed period until dropped.
struct EpochTicker {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl EpochTicker {
    fn start(engine: Engine, period: Duration) -> std::io::Result<Self> {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::Builder::new()
            .name("firedrill-epoch".into())
            .spawn(move || {
                while !flag.load(Ordering::Relaxed) {
                    std::thread::sleep(period);
                    engine.increment_epoch();
                }
            })?;
        Ok(EpochTicker {
            stop,
            thread: Some(thread),
        })
    }
}

impl Drop for EpochTicker {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Runs kernels in sandboxes. Cheap to share behind an `Arc`.
pub struct KernelHost {
    engine: Engine,
    linker: Linker<Sandbox>,
    config: HostConfig,
    limits: Arc<KernelLimits>,
    targets: Targets,
    secrets: Arc<dyn SecretProvider>,
    cache: ComponentCache,
    loaded: Mutex<HashMap<String, Arc<LoadedKernel>>>,
    /// Loads in progress, one lock per digest: concurrent loads of the same
    /// kernel (a burst of runs after a restart) wait for the first instead
    /// of each compiling it.
    loading: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    permits: Arc<Semaphore>,
    _ticker: EpochTicker,
}

impl std::fmt::Debug for KernelHost {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KernelHost")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

fn start_error(e: impl std::fmt::Display) -> HostStartError {
    HostStartError(e.to_string())
}

/// Default of `[kernel] keep-resident-bytes`.
pub const KEEP_RESIDENT_BYTES: usize = 2 << 20;

/// sha256 of `bytes`, as `sha256:<hex>`.
pub fn digest_of(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
}

impl KernelHost {
    /// Start the engine with `config`, reaching `targets` and reading `secrets`.
    pub fn new(
        config: HostConfig,
        targets: Targets,
        secrets: Arc<dyn SecretProvider>,
    ) -> Result<Self, HostStartError> {
        let n = config.max_concurrent_invocations.max(1);
        let memory = usize::try_from(config.limits.memory_bytes).map_err(start_error)?;
        let mut pool = PoolingAllocationConfig::default();
        pool.total_component_instances(n)
            .total_core_instances(n.saturating_mul(16))
            .total_memories(n.saturating_mul(2))
            .total_tables(n.saturating_mul(8))
            .total_stacks(n)
            .max_memory_size(memory)
            .table_elements(100_000)
            // Reset a slot by rewriting only the pages the last kernel
            // dirtied (found with Linux's PAGEMAP_SCAN, 6.7+; elsewhere the
            // first bytes are memset) and keep them resident, instead of
            // madvise + a page fault per page on the next use: that was
            // nearly half of an invocation's time (BENCHMARKS.md).
            .pagemap_scan(wasmtime::Enabled::Auto)
            .linear_memory_keep_resident(config.keep_resident_bytes.min(memory))
            .table_keep_resident(config.keep_resident_bytes / 16);
        let mut wasm = Config::new();
        wasm.wasm_component_model(true)
            .epoch_interruption(true)
            .allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
        let engine = Engine::new(&wasm).map_err(start_error)?;
        let mut linker = Linker::<Sandbox>::new(&engine);
        wasmtime_wasi::p2::add_to_linker_async(&mut linker).map_err(start_error)?;
        KernelWorld::add_to_linker::<Sandbox, HasSelf<Sandbox>>(&mut linker, |s| s)
            .map_err(start_error)?;
        let ticker = EpochTicker::start(
            engine.clone(),
            Duration::from_millis(config.epoch_tick_ms.max(1)),
        )
        .map_err(start_error)?;
        Ok(KernelHost {
            cache: ComponentCache::new(config.cache_dir.clone()),
            limits: Arc::new(config.limits.clone()),
            permits: Arc::new(Semaphore::new(n as usize)),
            engine,
            linker,
            config,
            targets,
            secrets,
            loaded: Mutex::new(HashMap::new()),
            loading: Mutex::new(HashMap::new()),
            _ticker: ticker,
        })
    }

    pub fn config(&self) -> &HostConfig {
        &self.config
    }

    pub fn targets(&self) -> &Targets {
        &self.targets
    }

    /// Where secret values come from (also for the server's webhook secrets).
    pub fn secrets(&self) -> &Arc<dyn SecretProvider> {
        &self.secrets
    }

    fn setup(&self, capabilities: Arc<Capabilities>) -> SandboxSetup {
        SandboxSetup {
            limits: self.limits.clone(),
            capabilities,
            targets: self.targets.clone(),
            secrets: self.secrets.clone(),
            cpu_budget_ticks: (self.config.limits.cpu_ms / self.config.epoch_tick_ms.max(1)).max(1),
        }
    }

    fn store(&self, sandbox: Sandbox) -> Store<Sandbox> {
        let mut store = Store::new(&self.engine, sandbox);
        store.limiter(|s| s);
        // Called each epoch tick while guest code runs: meters CPU time and
        // yields to the async runtime so a spinning guest cannot starve others
        // (or its own wall-clock timeout).
        store.epoch_deadline_callback(|mut ctx| {
            let s = ctx.data_mut();
            s.cpu_ticks += 1;
            if s.cpu_ticks > s.cpu_budget_ticks {
                return Err(wasmtime::Error::new(s.limits.exceeded(Limit::Cpu)));
            }
            Ok(wasmtime::UpdateDeadline::Yield(1))
        });
        store.set_epoch_deadline(1);
        store
    }

    /// Compile (or fetch from cache), link and describe a component.
    pub async fn load(&self, bytes: &[u8]) -> Result<Arc<LoadedKernel>, LoadError> {
        let digest = digest_of(bytes);
        if let Some(k) = self.loaded_kernel(&digest) {
            return Ok(k);
        }
        // One load per digest at a time; whoever waited finds it loaded.
        let gate = self
            .loading
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .entry(digest.clone())
            .or_default()
            .clone();
        let _loading = gate.lock().await;
        if let Some(k) = self.loaded_kernel(&digest) {
            return Ok(k);
        }
        let loaded = self.load_uncached(bytes, digest.clone()).await;
        self.loading
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .remove(&digest);
        loaded
    }

    async fn load_uncached(
        &self,
        bytes: &[u8],
        digest: String,
    ) -> Result<Arc<LoadedKernel>, LoadError> {
        let (engine, cache, owned, d) = (
            self.engine.clone(),
            self.cache.clone(),
            bytes.to_vec(),
            digest.clone(),
        );
        let (component, cache_outcome) =
            tokio::task::spawn_blocking(move || cache.load_or_compile(&engine, &d, &owned))
                .await
                .map_err(|e| LoadError::NotAComponent(format!("compilation panicked: {e}")))?
                .map_err(|e| LoadError::NotAComponent(format!("{e:#}")))?;
        let pre = self
            .linker
            .instantiate_pre(&component)
            .and_then(KernelPre::new)
            .map_err(|e| LoadError::Contract(format!("{e:#}")))?;
        let first = self.describe(&pre).await?;
        let second = self.describe(&pre).await?;
        if first != second {
            return Err(LoadError::Unstable {
                first: first.reference(),
                second: second.reference(),
            });
        }
        let version = first.validate()?;
        let kernel = Arc::new(LoadedKernel {
            input_schema: compile_schema("input", &first.input_schema)?,
            output_schema: compile_schema("output", &first.output_schema)?,
            capabilities: Arc::new(first.capabilities.clone()),
            digest: digest.clone(),
            manifest: first,
            version,
            cache: cache_outcome,
            size_bytes: bytes.len(),
            pre: Some(pre),
        });
        self.remember(digest, kernel.clone());
        Ok(kernel)
    }

    fn loaded_kernel(&self, digest: &str) -> Option<Arc<LoadedKernel>> {
        self.loaded
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(digest)
            .cloned()
    }

    fn remember(&self, digest: String, kernel: Arc<LoadedKernel>) {
        let mut loaded = self
            .loaded
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if loaded.len() >= self.config.max_loaded_kernels.max(1) {
            // Evict one entry; it is recompiled from the disk cache on demand.
            if let Some(victim) = loaded.keys().next().cloned() {
                loaded.remove(&victim);
            }
        }
        loaded.insert(digest, kernel);
    }

    /// Call `describe` in a fresh sandbox that refuses every host call.
    async fn describe(&self, pre: &KernelPre<Sandbox>) -> Result<Manifest, LoadError> {
        let _permit = self
            .permits
            .acquire()
            .await
            .map_err(|e| LoadError::Describe(e.to_string()))?;
        let sandbox = Sandbox::new(
            self.setup(Arc::new(Capabilities::default())),
            Phase::Describe,
            Mode::DryRun,
            Vec::new(),
            None,
        );
        let mut store = self.store(sandbox);
        let call = async {
            let instance = pre.instantiate_async(&mut store).await?;
            instance.call_describe(&mut store).await
        };
        let m = tokio::time::timeout(self.limits.wall_clock(), call)
            .await
            .map_err(|_| LoadError::Describe(self.limits.exceeded(Limit::WallClock).to_string()))?
            .map_err(|e| LoadError::Describe(describe_trap(&e)))?;
        let schema = |which: &'static str, text: &str| {
            serde_json::from_str::<serde_json::Value>(text).map_err(|e| LoadError::Schema {
                which,
                reason: format!("not JSON: {e}"),
            })
        };
        Ok(Manifest {
            input_schema: schema("input", &m.input_schema)?,
            output_schema: schema("output", &m.output_schema)?,
            name: m.name,
            version: m.version,
            description: m.description,
            idempotent: m.idempotent,
            capabilities: Capabilities {
                exec: m
                    .capabilities
                    .exec
                    .into_iter()
                    .map(|c| ExecCapability {
                        pattern: c.pattern,
                        effect: effect(c.effect),
                    })
                    .collect(),
                http: m
                    .capabilities
                    .http
                    .into_iter()
                    .map(|c| HttpCapability {
                        method: c.method,
                        url_pattern: c.url_pattern,
                        effect: effect(c.effect),
                    })
                    .collect(),
                secrets: m.capabilities.secrets,
            },
        })
    }

    /// Run `kernel` once in a fresh sandbox. Never fails as a whole: every
    /// outcome, including a misbehaving kernel, is in the report.
    pub async fn invoke(&self, kernel: &LoadedKernel, request: InvokeRequest) -> InvokeReport {
        let started = Instant::now();
        let mut report = InvokeReport {
            kernel: kernel.reference(),
            digest: kernel.digest.clone(),
            mode: request.mode,
            result: Err(InvokeError::Trap("not started".into())),
            host_calls: Vec::new(),
            logs: Vec::new(),
            stdout: String::new(),
            stderr: String::new(),
            duration_ms: 0,
        };
        if let Err(problems) = kernel.validate_input(&request.input) {
            report.result = Err(InvokeError::InvalidInput(format!(
                "input does not satisfy {}'s input schema: {}",
                kernel.reference(),
                problems.join("; ")
            )));
            return report;
        }
        let Ok(_permit) = self.permits.acquire().await else {
            report.result = Err(InvokeError::Trap("kernel host is shutting down".into()));
            return report;
        };
        let sandbox = Sandbox::new(
            self.setup(kernel.capabilities.clone()),
            Phase::Run,
            request.mode,
            request.targets.clone(),
            request.observer.clone(),
        );
        let mut store = self.store(sandbox);
        let invocation = wit::Invocation {
            run_id: request.run_id,
            step_id: request.step_id,
            mode: match request.mode {
                Mode::DryRun => wit::Mode::DryRun,
                Mode::Live => wit::Mode::Live,
            },
            actor: request.actor,
            targets: request.targets,
            input: request.input.to_string(),
        };
        let outcome = {
            let call = async {
                let pre = kernel.pre.as_ref().ok_or_else(|| {
                    wasmtime::Error::msg(format!(
                        "{} is a declaration without code; publish its component to run it",
                        kernel.reference()
                    ))
                })?;
                let instance = pre.instantiate_async(&mut store).await?;
                instance.call_run(&mut store, &invocation).await
            };
            tokio::time::timeout(self.limits.wall_clock(), call).await
        };
        let sandbox = store.into_data();
        let log_overflow = sandbox.captured_bytes() > self.limits.log_bytes;
        report.result = match outcome {
            Err(_elapsed) => Err(InvokeError::Limit(self.limits.exceeded(Limit::WallClock))),
            Ok(Err(trap)) if log_overflow => {
                tracing::debug!(error = %trap, "kernel trapped after overflowing its log");
                Err(InvokeError::Limit(self.limits.exceeded(Limit::Log)))
            }
            Ok(Err(trap)) => Err(classify_trap(&trap)),
            Ok(Ok(_)) if log_overflow => Err(InvokeError::Limit(self.limits.exceeded(Limit::Log))),
            Ok(Ok(Err(e))) => Err(match e {
                wit::KernelError::InvalidInput(m) => InvokeError::InvalidInput(m),
                wit::KernelError::Failed(m) => InvokeError::Failed(m),
                wit::KernelError::Retryable(m) => InvokeError::Retryable(m),
            }),
            Ok(Ok(Ok(output))) => self.check_output(kernel, &output),
        };
        // Nothing the kernel was told in secret leaves the host unredacted:
        // output, errors, logs, stdio and call records.
        let r = &sandbox.redactor;
        report.result = match report.result {
            Ok(value) => Ok(r.json(&value)),
            Err(e) => Err(e.redacted(r)),
        };
        report.stdout = r.text(&String::from_utf8_lossy(&sandbox.stdout.contents()));
        report.stderr = r.text(&String::from_utf8_lossy(&sandbox.stderr.contents()));
        report.host_calls = sandbox.records.iter().map(|c| c.redacted(r)).collect();
        report.logs = sandbox
            .logs
            .iter()
            .map(|l| LogLine {
                level: l.level,
                message: r.text(&l.message),
            })
            .collect();
        report.duration_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
        report
    }

    fn check_output(
        &self,
        kernel: &LoadedKernel,
        output: &str,
    ) -> Result<serde_json::Value, InvokeError> {
        if output.len() as u64 > self.limits.output_bytes {
            return Err(InvokeError::Limit(self.limits.exceeded(Limit::Output)));
        }
        let value: serde_json::Value = serde_json::from_str(output).map_err(|e| {
            InvokeError::BadOutput(format!(
                "output is not JSON ({e}); a kernel returns one JSON document"
            ))
        })?;
        let problems: Vec<String> = kernel
            .output_schema
            .iter_errors(&value)
            .map(|e| format!("{} (at {})", e, e.instance_path()))
            .collect();
        if !problems.is_empty() {
            return Err(InvokeError::BadOutput(format!(
                "output does not satisfy the kernel's own output schema: {}",
                problems.join("; ")
            )));
        }
        Ok(value)
    }
}

fn effect(e: wit::Effect) -> Effect {
    match e {
        wit::Effect::Observe => Effect::Observe,
        wit::Effect::Change => Effect::Change,
    }
}

/// Turn an error from inside the sandbox into what the caller needs to know.
fn classify_trap(error: &wasmtime::Error) -> InvokeError {
    if let Some(limit) = error.downcast_ref::<LimitExceeded>() {
        return InvokeError::Limit(*limit);
    }
    if let Some(e) = error.downcast_ref::<ImpureDescribe>() {
        return InvokeError::Trap(e.to_string());
    }
    if let Some(pool) = error.downcast_ref::<wasmtime::PoolConcurrencyLimitError>() {
        return InvokeError::Trap(format!(
            "no sandbox slot free ({pool}); raise kernel.max-concurrent-invocations"
        ));
    }
    // Panics and other traps: the first line carries the trap kind; the
    // backtrace helps the kernel's author.
    InvokeError::Trap(format!("{error:#}"))
}

fn describe_trap(error: &wasmtime::Error) -> String {
    classify_trap(error).to_string()
}
