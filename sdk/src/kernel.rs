//! The kernel author's API: the `Kernel` trait, the `Context` a kernel acts
//! through, and the host interface it calls (real in WebAssembly, mocked in tests).

use serde::{Serialize, de::DeserializeOwned};

use crate::capability::{PatternError, join_words};
use crate::manifest::{Capabilities, Effect, ExecCapability, HttpCapability, Manifest, Mode};

/// A recovery kernel: one remediation action over typed input and output.
///
/// The SDK derives the manifest's JSON Schemas from `Input` and `Output`
/// (with `schemars`), parses the input for you, and serializes the output.
pub trait Kernel {
    /// What the step passes in (`with:` in a runbook).
    type Input: DeserializeOwned + schemars::JsonSchema;
    /// What the kernel reports back (available to later steps).
    type Output: Serialize + schemars::JsonSchema;

    /// Name, version, description, idempotency and capabilities.
    fn declare() -> Declaration;

    /// Do the work. Every effect goes through `ctx`.
    fn run(ctx: &Context<'_>, input: Self::Input) -> Result<Self::Output, KernelError>;
}

/// The hand-written part of a manifest; the SDK adds the schemas.
#[derive(Debug, Clone)]
pub struct Declaration {
    name: String,
    version: String,
    description: String,
    idempotent: bool,
    capabilities: Capabilities,
}

impl Declaration {
    /// Start a declaration. Use `env!("CARGO_PKG_VERSION")` for `version`.
    pub fn new(name: &str, version: &str, description: &str) -> Self {
        Declaration {
            name: name.to_string(),
            version: version.to_string(),
            description: description.to_string(),
            idempotent: false,
            capabilities: Capabilities::default(),
        }
    }

    /// Declare that running twice with the same input equals running once.
    pub fn idempotent(mut self, idempotent: bool) -> Self {
        self.idempotent = idempotent;
        self
    }

    /// Allow commands matching `pattern` that only read state.
    pub fn observe_exec(self, pattern: &str) -> Self {
        self.exec(pattern, Effect::Observe)
    }

    /// Allow commands matching `pattern` that change state (simulated in dry-run).
    pub fn change_exec(self, pattern: &str) -> Self {
        self.exec(pattern, Effect::Change)
    }

    fn exec(mut self, pattern: &str, effect: Effect) -> Self {
        self.capabilities.exec.push(ExecCapability {
            pattern: pattern.to_string(),
            effect,
        });
        self
    }

    /// Allow HTTP requests with `method` to URLs matching `url_pattern`.
    pub fn http(mut self, method: &str, url_pattern: &str, effect: Effect) -> Self {
        self.capabilities.http.push(HttpCapability {
            method: method.to_string(),
            url_pattern: url_pattern.to_string(),
            effect,
        });
        self
    }

    /// Allow reading the secret `name`.
    pub fn secret(mut self, name: &str) -> Self {
        self.capabilities.secrets.push(name.to_string());
        self
    }
}

/// The full manifest of kernel `K`, schemas included.
pub fn manifest<K: Kernel>() -> Manifest {
    let d = K::declare();
    Manifest {
        name: d.name,
        version: d.version,
        description: d.description,
        input_schema: schemars::schema_for!(K::Input).to_value(),
        output_schema: schemars::schema_for!(K::Output).to_value(),
        idempotent: d.idempotent,
        capabilities: d.capabilities,
    }
}

/// Why a kernel run failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KernelError {
    /// The input is wrong; retrying will not help.
    #[error("invalid input: {0}")]
    InvalidInput(String),
    /// The action failed; retrying will not help.
    #[error("failed: {0}")]
    Failed(String),
    /// A transient failure; the engine may retry.
    #[error("retryable: {0}")]
    Retryable(String),
}

impl From<HostError> for KernelError {
    fn from(e: HostError) -> Self {
        match e {
            HostError::Timeout(m) => KernelError::Retryable(format!("host call timed out: {m}")),
            HostError::Denied(m) => KernelError::Failed(format!("host call denied: {m}")),
            HostError::Failed(m) => KernelError::Failed(format!("host call failed: {m}")),
        }
    }
}

impl From<PatternError> for KernelError {
    fn from(e: PatternError) -> Self {
        KernelError::InvalidInput(format!("cannot build command: {e}"))
    }
}

/// Why the host refused or could not complete a call.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HostError {
    #[error("denied: {0}")]
    Denied(String),
    #[error("failed: {0}")]
    Failed(String),
    #[error("timeout: {0}")]
    Timeout(String),
}

/// Severity of a log line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogLevel {
    Trace,
    Debug,
    Info,
    Warn,
    Error,
}

/// The result of a command.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ExecResult {
    pub exit_code: i32,
    pub stdout: String,
    pub stderr: String,
    pub truncated: bool,
    /// The command was not run (a `change` in dry-run).
    pub simulated: bool,
}

impl ExecResult {
    /// A successful result with `stdout`.
    pub fn ok(stdout: &str) -> Self {
        ExecResult {
            stdout: stdout.to_string(),
            ..ExecResult::default()
        }
    }

    /// A failed result with exit code `code` and `stderr`.
    pub fn fail(code: i32, stderr: &str) -> Self {
        ExecResult {
            exit_code: code,
            stderr: stderr.to_string(),
            ..ExecResult::default()
        }
    }

    /// Exit code zero.
    pub fn success(&self) -> bool {
        self.exit_code == 0
    }
}

/// An HTTP request.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct HttpRequest {
    pub target: String,
    pub method: String,
    pub url: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

/// An HTTP response.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct HttpResponse {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    pub truncated: bool,
    pub simulated: bool,
}

/// What the host offers. In WebAssembly this is firedrill; in tests, [`crate::testing::MockHost`].
pub trait Host {
    fn log(&self, level: LogLevel, message: &str);
    fn exec(&self, target: &str, command: &str) -> Result<ExecResult, HostError>;
    fn http(&self, request: &HttpRequest) -> Result<HttpResponse, HostError>;
    fn secret(&self, name: &str) -> Result<String, HostError>;
    fn sleep(&self, ms: u64);
    fn now(&self) -> u64;
}

/// Metadata of one call of `run`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Invocation {
    pub run_id: String,
    pub step_id: String,
    pub mode: Mode,
    pub actor: String,
    pub targets: Vec<String>,
    pub input: String,
}

/// Everything a kernel may touch during `run`.
pub struct Context<'a> {
    invocation: &'a Invocation,
    host: &'a dyn Host,
}

impl std::fmt::Debug for Context<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Context")
            .field("invocation", &self.invocation)
            .finish_non_exhaustive()
    }
}

impl<'a> Context<'a> {
    /// A context over `host` for `invocation`.
    pub fn new(invocation: &'a Invocation, host: &'a dyn Host) -> Self {
        Context { invocation, host }
    }

    /// Dry-run or live.
    pub fn mode(&self) -> Mode {
        self.invocation.mode
    }

    /// The targets this step granted.
    pub fn targets(&self) -> &[String] {
        &self.invocation.targets
    }

    /// The run, step and actor this invocation belongs to.
    pub fn invocation(&self) -> &Invocation {
        self.invocation
    }

    /// The single granted target, or an error that says how many there were.
    pub fn single_target(&self) -> Result<&str, KernelError> {
        match self.targets() {
            [one] => Ok(one),
            other => Err(KernelError::InvalidInput(format!(
                "this kernel acts on exactly one target per step, but the step granted {}: give the step one target (fan-out runs one invocation per target)",
                other.len()
            ))),
        }
    }

    pub fn log(&self, level: LogLevel, message: &str) {
        self.host.log(level, message);
    }

    pub fn info(&self, message: &str) {
        self.log(LogLevel::Info, message);
    }

    pub fn warn(&self, message: &str) {
        self.log(LogLevel::Warn, message);
    }

    /// Run a raw command line on `target`.
    pub fn exec(&self, target: &str, command: &str) -> Result<ExecResult, HostError> {
        self.host.exec(target, command)
    }

    /// Run a command given as words; each word is quoted, so values taken from
    /// input can never inject shell syntax.
    pub fn exec_words(&self, target: &str, words: &[&str]) -> Result<ExecResult, KernelError> {
        let command = join_words(words)?;
        Ok(self.host.exec(target, &command)?)
    }

    pub fn http(&self, request: &HttpRequest) -> Result<HttpResponse, HostError> {
        self.host.http(request)
    }

    pub fn secret(&self, name: &str) -> Result<String, HostError> {
        self.host.secret(name)
    }

    pub fn sleep(&self, ms: u64) {
        self.host.sleep(ms);
    }

    /// Milliseconds since the Unix epoch.
    pub fn now(&self) -> u64 {
        self.host.now()
    }
}

/// Run kernel `K` for `invocation` over `host`: parse the input, call
/// `K::run`, serialize the output. This is exactly what the WebAssembly export
/// does, so tests through [`crate::testing`] exercise the real path.
pub fn run_with_host<K: Kernel>(
    invocation: &Invocation,
    host: &dyn Host,
) -> Result<String, KernelError> {
    let input: K::Input = serde_json::from_str(&invocation.input).map_err(|e| {
        KernelError::InvalidInput(format!("input does not match the kernel's schema: {e}"))
    })?;
    let ctx = Context::new(invocation, host);
    let output = K::run(&ctx, input)?;
    serde_json::to_string(&output)
        .map_err(|e| KernelError::Failed(format!("output cannot be serialized as JSON: {e}")))
}
