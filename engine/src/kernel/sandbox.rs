//! The store data of one kernel sandbox: its limits, grants and capability
//! checks, and the host functions the kernel imports.
//!
//! Nothing is ambient: a sandbox can only reach the targets in `granted`, only
//! with calls its manifest declares, and only within `limits`. Every call is
//! recorded, refused ones included.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use firedrill_sdk::capability::check_target;
use firedrill_sdk::manifest::{Capabilities, Effect, Mode};
use serde::Serialize;
use wasmtime::component::ResourceTable;
use wasmtime_wasi::p2::pipe::MemoryOutputPipe;
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

use super::bindings::firedrill::kernel::{host, types as wit};
use super::limits::{KernelLimits, Limit};
use crate::secret::{Redactor, Secret, SecretProvider};
use crate::transport::{ExecError, ExecLimits, Faults, HttpRequest, TargetSpec, Targets};

/// Bytes of a command's stdout/stderr kept in the call record (the kernel
/// itself gets up to `exec-output-bytes`).
pub const RECORD_EXCERPT_BYTES: usize = 4096;

/// What a host call was.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum CallKind {
    Exec {
        target: String,
        command: String,
    },
    Http {
        target: String,
        method: String,
        url: String,
    },
    Secret {
        name: String,
    },
}

/// How a host call ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "outcome", rename_all = "kebab-case")]
pub enum CallOutcome {
    /// Performed (or simulated, see `HostCall::simulated`).
    Ok {
        #[serde(skip_serializing_if = "Option::is_none")]
        exit_code: Option<i32>,
        #[serde(skip_serializing_if = "Option::is_none")]
        status: Option<u16>,
        stdout: String,
        stderr: String,
        truncated: bool,
    },
    /// Refused by the capability check; nothing was attempted.
    Denied { reason: String },
    /// Attempted and failed.
    Failed { reason: String },
    /// Attempted and timed out.
    Timeout { reason: String },
}

impl CallOutcome {
    /// Success with nothing to show (a simulated change, a secret read).
    pub fn done() -> Self {
        CallOutcome::Ok {
            exit_code: None,
            status: None,
            stdout: String::new(),
            stderr: String::new(),
            truncated: false,
        }
    }
}

/// One host call, as recorded for the run view and the audit log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct HostCall {
    /// Position among this invocation's recorded calls, from 0.
    pub index: u32,
    #[serde(flatten)]
    pub call: CallKind,
    /// Declared effect; `None` when the call was refused before matching.
    pub effect: Option<Effect>,
    /// True when a `change` call was recorded as planned instead of performed.
    pub simulated: bool,
    #[serde(flatten)]
    pub outcome: CallOutcome,
    pub started_at_ms: u64,
    pub duration_ms: u64,
    /// Connection retries and reconnects this call needed (omitted when none).
    #[serde(skip_serializing_if = "Faults::is_empty")]
    pub faults: Faults,
}

impl HostCall {
    /// This record with every known secret value replaced.
    pub fn redacted(&self, r: &Redactor) -> HostCall {
        if r.is_empty() {
            return self.clone();
        }
        let mut c = self.clone();
        match &mut c.call {
            CallKind::Exec { target, command } => {
                *target = r.text(target);
                *command = r.text(command);
            }
            CallKind::Http {
                target,
                method,
                url,
            } => {
                *target = r.text(target);
                *method = r.text(method);
                *url = r.text(url);
            }
            CallKind::Secret { .. } => {}
        }
        match &mut c.outcome {
            CallOutcome::Ok { stdout, stderr, .. } => {
                *stdout = r.text(stdout);
                *stderr = r.text(stderr);
            }
            CallOutcome::Denied { reason }
            | CallOutcome::Failed { reason }
            | CallOutcome::Timeout { reason } => *reason = r.text(reason),
        }
        c
    }

    pub fn is_denied(&self) -> bool {
        matches!(self.outcome, CallOutcome::Denied { .. })
    }
}

/// A line the kernel logged.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LogLine {
    pub level: &'static str,
    pub message: String,
}

/// Told about each host call as soon as it is recorded (the executor
/// persists it, with its audit event, before the kernel continues).
#[async_trait::async_trait]
pub trait CallObserver: Send + Sync {
    async fn host_call(&self, call: &HostCall);

    /// Whether a live change may be made now (the run's lease holds);
    /// the refusal is recorded as a denied call.
    fn may_change(&self) -> Result<(), String> {
        Ok(())
    }
}

/// Which export is running: `describe` must not touch the host.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Phase {
    Describe,
    Run,
}

/// A kernel called the host from `describe`, which must be pure.
#[derive(Debug, Clone, thiserror::Error)]
#[error("kernel called host.{0} from describe(); describe must be pure (no host calls)")]
pub struct ImpureDescribe(pub &'static str);

/// Store data for one invocation.
pub(crate) struct Sandbox {
    wasi: WasiCtx,
    table: ResourceTable,
    pub(crate) limits: Arc<KernelLimits>,
    phase: Phase,
    mode: Mode,
    granted: Vec<String>,
    capabilities: Arc<Capabilities>,
    targets: Targets,
    secrets: Arc<dyn SecretProvider>,
    calls: u64,
    log_bytes: u64,
    pub(crate) cpu_ticks: u64,
    pub(crate) cpu_budget_ticks: u64,
    pub(crate) records: Vec<HostCall>,
    pub(crate) logs: Vec<LogLine>,
    pub(crate) stdout: MemoryOutputPipe,
    pub(crate) stderr: MemoryOutputPipe,
    observer: Option<std::sync::Arc<dyn CallObserver>>,
    /// Secret values handed to the kernel: removed from everything recorded.
    pub(crate) redactor: Redactor,
}

/// Everything a sandbox needs that is not per-call.
#[derive(Clone)]
pub(crate) struct SandboxSetup {
    pub limits: Arc<KernelLimits>,
    pub capabilities: Arc<Capabilities>,
    pub targets: Targets,
    pub secrets: Arc<dyn SecretProvider>,
    pub cpu_budget_ticks: u64,
}

impl Sandbox {
    pub(crate) fn new(
        setup: SandboxSetup,
        phase: Phase,
        mode: Mode,
        granted: Vec<String>,
        observer: Option<std::sync::Arc<dyn CallObserver>>,
    ) -> Self {
        // stdout and stderr share the log budget; a pipe one byte larger than
        // the budget lets us tell "exactly full" from "overflowed".
        let pipe_cap = usize::try_from(setup.limits.log_bytes)
            .unwrap_or(usize::MAX)
            .saturating_add(1);
        let stdout = MemoryOutputPipe::new(pipe_cap);
        let stderr = MemoryOutputPipe::new(pipe_cap);
        // No preopened directories, no environment, no arguments, no stdin,
        // no sockets. Clocks and randomness are allowed.
        let wasi = WasiCtx::builder()
            .stdout(stdout.clone())
            .stderr(stderr.clone())
            .allow_tcp(false)
            .allow_udp(false)
            .allow_ip_name_lookup(false)
            .socket_addr_check(|_, _| Box::pin(async { false }))
            .build();
        Sandbox {
            wasi,
            table: ResourceTable::new(),
            limits: setup.limits,
            phase,
            mode,
            granted,
            capabilities: setup.capabilities,
            targets: setup.targets,
            secrets: setup.secrets,
            calls: 0,
            log_bytes: 0,
            cpu_ticks: 0,
            cpu_budget_ticks: setup.cpu_budget_ticks,
            records: Vec::new(),
            logs: Vec::new(),
            stdout,
            stderr,
            observer,
            redactor: Redactor::default(),
        }
    }

    /// Tell the observer about the call recorded last (redacted).
    async fn emit(&mut self) {
        if let (Some(observer), Some(call)) = (&self.observer, self.records.last()) {
            let call = call.redacted(&self.redactor);
            observer.host_call(&call).await;
        }
    }

    /// Bytes written to stdout and stderr so far.
    pub(crate) fn captured_bytes(&self) -> u64 {
        (self.stdout.contents().len() + self.stderr.contents().len()) as u64
    }

    /// Count a host call; trap when the kernel is impure or over its budget.
    fn enter(&mut self, function: &'static str) -> wasmtime::Result<()> {
        if self.phase == Phase::Describe {
            return Err(wasmtime::Error::new(ImpureDescribe(function)));
        }
        self.calls += 1;
        if self.calls > self.limits.host_calls {
            return Err(wasmtime::Error::new(self.limits.exceeded(Limit::HostCalls)));
        }
        Ok(())
    }

    fn record(
        &mut self,
        call: CallKind,
        effect: Option<Effect>,
        simulated: bool,
        outcome: CallOutcome,
        started: (u64, Instant),
        faults: Faults,
    ) {
        let index = u32::try_from(self.records.len()).unwrap_or(u32::MAX);
        self.records.push(HostCall {
            index,
            call,
            effect,
            simulated,
            outcome,
            started_at_ms: started.0,
            duration_ms: u64::try_from(started.1.elapsed().as_millis()).unwrap_or(u64::MAX),
            faults,
        });
    }

    async fn deny(
        &mut self,
        call: CallKind,
        refusal: impl std::fmt::Display,
        started: (u64, Instant),
    ) -> wit::HostError {
        let reason = refusal.to_string();
        tracing::warn!(reason = %self.redactor.text(&reason), "host call denied");
        self.record(
            call,
            None,
            false,
            CallOutcome::Denied {
                reason: reason.clone(),
            },
            started,
            Faults::default(),
        );
        self.emit().await;
        wit::HostError::Denied(reason)
    }

    /// Time and size caps of one `exec` or `http` call.
    fn call_limits(&self) -> ExecLimits {
        ExecLimits {
            timeout: self.limits.exec_timeout(),
            output_bytes: usize::try_from(self.limits.exec_output_bytes).unwrap_or(usize::MAX),
        }
    }

    /// The resolved `auth-secret` of HTTP endpoint `target`, if it has one.
    /// Its value joins the redactor: the kernel never sees it, but an
    /// endpoint might echo it back.
    fn endpoint_auth(&mut self, target: &str) -> Result<Option<Secret>, ExecError> {
        let Some(TargetSpec::Http(spec)) = self.targets.inventory().get(target) else {
            return Ok(None);
        };
        let Some(name) = &spec.auth_secret else {
            return Ok(None);
        };
        let secret = self.secrets.get(name).map_err(|e| ExecError::Failed {
            target: target.to_string(),
            reason: format!("cannot read the endpoint's auth-secret: {e}"),
        })?;
        self.redactor.add(secret.expose());
        Ok(Some(secret))
    }

    /// Before a live change: the observer's refusal (the run's lease is
    /// running out), and the crash-test hook.
    fn before_change(&self, effect: Effect) -> Result<(), String> {
        if effect != Effect::Change {
            return Ok(());
        }
        if let Some(observer) = &self.observer {
            observer.may_change()?;
        }
        crate::failpoint::hit("host.before-change");
        Ok(())
    }

    /// Whether a call with `effect` is recorded as planned instead of performed.
    fn simulate(&self, effect: Effect) -> bool {
        effect == Effect::Change && self.mode == Mode::DryRun
    }
}

/// Milliseconds since the Unix epoch.
pub(crate) fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

fn now() -> (u64, Instant) {
    (unix_ms(), Instant::now())
}

/// How a failed `exec` or `http` call is recorded, and what the kernel gets.
fn failure<T>(e: ExecError) -> (CallOutcome, Result<T, wit::HostError>) {
    let reason = e.to_string();
    match e {
        ExecError::Timeout(_) => (
            CallOutcome::Timeout {
                reason: reason.clone(),
            },
            Err(wit::HostError::Timeout(reason)),
        ),
        _ => (
            CallOutcome::Failed {
                reason: reason.clone(),
            },
            Err(wit::HostError::Failed(reason)),
        ),
    }
}

fn excerpt(bytes: &[u8]) -> String {
    String::from_utf8_lossy(&bytes[..bytes.len().min(RECORD_EXCERPT_BYTES)]).into_owned()
}

impl WasiView for Sandbox {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl wasmtime::ResourceLimiter for Sandbox {
    fn memory_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired as u64 > self.limits.memory_bytes {
            return Err(wasmtime::Error::new(self.limits.exceeded(Limit::Memory)));
        }
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        // Tables hold function references; 1M entries is far beyond any real
        // kernel and keeps a table bomb from eating host memory.
        Ok(desired <= 1_000_000)
    }
}

impl wit::Host for Sandbox {}

impl host::Host for Sandbox {
    async fn log(&mut self, level: wit::LogLevel, message: String) -> wasmtime::Result<()> {
        self.enter("log")?;
        self.log_bytes += message.len() as u64;
        if self.log_bytes + self.captured_bytes() > self.limits.log_bytes {
            return Err(wasmtime::Error::new(self.limits.exceeded(Limit::Log)));
        }
        let level = match level {
            wit::LogLevel::Trace => "trace",
            wit::LogLevel::Debug => "debug",
            wit::LogLevel::Info => "info",
            wit::LogLevel::Warn => "warn",
            wit::LogLevel::Error => "error",
        };
        self.logs.push(LogLine { level, message });
        Ok(())
    }

    async fn exec(
        &mut self,
        target: String,
        command: String,
    ) -> wasmtime::Result<Result<wit::ExecResult, wit::HostError>> {
        self.enter("exec")?;
        let started = now();
        if let Err(refusal) = check_target(&self.granted, &target) {
            let call = CallKind::Exec { target, command };
            return Ok(Err(self.deny(call, refusal, started).await));
        }
        let matched = match self.capabilities.match_exec(&command) {
            Ok(m) => m,
            Err(refusal) => {
                let call = CallKind::Exec { target, command };
                return Ok(Err(self.deny(call, refusal, started).await));
            }
        };
        let effect = matched.effect();
        let call = CallKind::Exec {
            target: target.clone(),
            command: matched.command.clone(),
        };
        if self.simulate(effect) {
            let outcome = CallOutcome::done();
            self.record(
                call,
                Some(effect),
                true,
                outcome,
                started,
                Faults::default(),
            );
            self.emit().await;
            return Ok(Ok(wit::ExecResult {
                exit_code: 0,
                stdout: String::new(),
                stderr: String::new(),
                truncated: false,
                simulated: true,
            }));
        }
        if let Err(why) = self.before_change(effect) {
            return Ok(Err(self.deny(call, why, started).await));
        }
        let mut faults = Faults::default();
        let result = self
            .targets
            .exec(&target, &matched.command, self.call_limits(), &mut faults)
            .await;
        if effect == Effect::Change {
            crate::failpoint::hit("host.after-change");
        }
        let (outcome, answer) = match result {
            Ok(out) => (
                CallOutcome::Ok {
                    exit_code: Some(out.exit_code),
                    status: None,
                    stdout: excerpt(&out.stdout),
                    stderr: excerpt(&out.stderr),
                    truncated: out.truncated,
                },
                Ok(wit::ExecResult {
                    exit_code: out.exit_code,
                    stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
                    stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
                    truncated: out.truncated,
                    simulated: false,
                }),
            ),
            Err(e) => failure(e),
        };
        self.record(call, Some(effect), false, outcome, started, faults);
        self.emit().await;
        Ok(answer)
    }

    async fn http(
        &mut self,
        request: wit::HttpRequest,
    ) -> wasmtime::Result<Result<wit::HttpResponse, wit::HostError>> {
        self.enter("http")?;
        let started = now();
        let mut request = request;
        request.url = self.targets.resolve_url(&request.target, &request.url);
        let call = CallKind::Http {
            target: request.target.clone(),
            method: request.method.clone(),
            url: request.url.clone(),
        };
        if let Err(refusal) = check_target(&self.granted, &request.target) {
            return Ok(Err(self.deny(call, refusal, started).await));
        }
        let cap = match self.capabilities.match_http(&request.method, &request.url) {
            Ok(c) => c,
            Err(refusal) => return Ok(Err(self.deny(call, refusal, started).await)),
        };
        if self.simulate(cap.effect) {
            let outcome = CallOutcome::done();
            self.record(
                call,
                Some(cap.effect),
                true,
                outcome,
                started,
                Faults::default(),
            );
            self.emit().await;
            return Ok(Ok(wit::HttpResponse {
                status: 0,
                headers: Vec::new(),
                body: Vec::new(),
                truncated: false,
                simulated: true,
            }));
        }
        if let Err(why) = self.before_change(cap.effect) {
            return Ok(Err(self.deny(call, why, started).await));
        }
        let mut faults = Faults::default();
        let result = match self.endpoint_auth(&request.target) {
            Ok(auth) => {
                let req = HttpRequest {
                    method: request.method,
                    url: request.url,
                    headers: request
                        .headers
                        .into_iter()
                        .map(|h| (h.name, h.value))
                        .collect(),
                    body: request.body,
                };
                self.targets
                    .http_request(
                        &request.target,
                        req,
                        auth.as_ref(),
                        self.call_limits(),
                        &mut faults,
                    )
                    .await
            }
            Err(e) => Err(e),
        };
        if cap.effect == Effect::Change {
            crate::failpoint::hit("host.after-change");
        }
        let (outcome, answer) = match result {
            Ok(out) => (
                CallOutcome::Ok {
                    exit_code: None,
                    status: Some(out.status),
                    stdout: excerpt(&out.body),
                    stderr: String::new(),
                    truncated: out.truncated,
                },
                Ok(wit::HttpResponse {
                    status: out.status,
                    headers: out
                        .headers
                        .into_iter()
                        .map(|(name, value)| wit::Header { name, value })
                        .collect(),
                    body: out.body,
                    truncated: out.truncated,
                    simulated: false,
                }),
            ),
            Err(e) => failure(e),
        };
        self.record(call, Some(cap.effect), false, outcome, started, faults);
        self.emit().await;
        Ok(answer)
    }

    async fn secret(&mut self, name: String) -> wasmtime::Result<Result<String, wit::HostError>> {
        self.enter("secret")?;
        let started = now();
        let call = CallKind::Secret { name: name.clone() };
        if let Err(refusal) = self.capabilities.check_secret(&name) {
            return Ok(Err(self.deny(call, refusal, started).await));
        }
        let (outcome, answer) = match self.secrets.get(&name) {
            Ok(value) => {
                self.redactor.add(value.expose());
                (CallOutcome::done(), Ok(value.expose().to_string()))
            }
            Err(e) => {
                let reason = e.to_string();
                (
                    CallOutcome::Failed {
                        reason: reason.clone(),
                    },
                    Err(wit::HostError::Failed(reason)),
                )
            }
        };
        self.record(call, None, false, outcome, started, Faults::default());
        self.emit().await;
        Ok(answer)
    }

    async fn sleep(&mut self, ms: u64) -> wasmtime::Result<()> {
        self.enter("sleep")?;
        // Bounded by the invocation's wall clock, which keeps running.
        tokio::time::sleep(Duration::from_millis(ms.min(self.limits.wall_clock_ms))).await;
        Ok(())
    }

    async fn now(&mut self) -> wasmtime::Result<u64> {
        self.enter("now")?;
        Ok(unix_ms())
    }
}
