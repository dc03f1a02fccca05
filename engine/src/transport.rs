//! Transports: the inventory of what kernels may act on (`inventory.rs`), and
//! the executors that reach each target by its `transport:`.
//!
//! The kernel host never runs a command itself; it asks [`Targets`] to resolve a
//! granted target name to its inventory entry and executor: `local`
//! (`/bin/sh -c` on the engine's host), `ssh` (libssh2, pinned host keys,
//! pooled sessions) or `http` (an endpoint for `host.http`).

mod http;
mod inventory;
mod local;
mod mock;
mod ssh;

use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};

pub use http::{BaseUrl, HttpConfig, HttpExecutor, HttpOutput, HttpRequest};
pub use inventory::{
    HttpTarget, Inventory, InventoryError, LocalTarget, SelectError, SshAuth, SshTarget,
    TargetSpec, Transport,
};
pub use local::LocalExecutor;
pub use mock::{MAX_MOCK_ANSWER_BYTES, MockSpecError, MockTargets};
pub use ssh::{PinnedKey, SshConfig, SshExecutor, SshProbe, fingerprint};

/// `[targets]` in `firedrill.toml`: how executors reach targets.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "kebab-case", default)]
pub struct TargetsConfig {
    pub ssh: SshConfig,
    pub http: HttpConfig,
    /// Retries of connection failures (before a command or request was sent).
    pub retry: RetryConfig,
}

/// `[targets.retry]`: connection failures are retried with exponential
/// backoff and jitter; each retry is counted in the host call's record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "kebab-case", default)]
pub struct RetryConfig {
    /// Connection attempts per call, the first included. Default 3.
    pub attempts: u32,
    /// Delay before the first retry, in milliseconds; doubles each retry.
    /// Default 200.
    pub base_delay_ms: u64,
    /// Longest delay between attempts, in milliseconds. Default 5,000.
    pub max_delay_ms: u64,
}

impl Default for RetryConfig {
    fn default() -> Self {
        RetryConfig {
            attempts: 3,
            base_delay_ms: 200,
            max_delay_ms: 5_000,
        }
    }
}

impl RetryConfig {
    /// The wait before retry number `retry` (from 1).
    pub fn delay(&self, retry: u32) -> Duration {
        crate::retry::backoff(
            Duration::from_millis(self.base_delay_ms),
            retry,
            Duration::from_millis(self.max_delay_ms),
        )
    }
}

/// Faults a call survived or met: recorded with the host call, so that a
/// retry or reconnect never goes unseen.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Faults {
    /// Connection attempts after the first.
    pub retries: u32,
    /// Pooled sessions found dead and replaced.
    pub reconnects: u32,
}

impl Faults {
    pub fn is_empty(&self) -> bool {
        self.retries == 0 && self.reconnects == 0
    }
}

/// Caps applied to one command or request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExecLimits {
    pub timeout: Duration,
    /// Bytes kept of stdout and, separately, of stderr (of the body, for HTTP).
    pub output_bytes: usize,
}

/// What a command produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecOutput {
    /// Exit status; -1 when killed by a signal.
    pub exit_code: i32,
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
    /// True when stdout or stderr was cut at `ExecLimits::output_bytes`.
    pub truncated: bool,
}

/// Why a command or request could not run to completion.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ExecError {
    #[error("did not finish within {0:?} and was abandoned")]
    Timeout(Duration),
    #[error("cannot run the command on {target}: {reason}")]
    Failed { target: String, reason: String },
    #[error(
        "target {target:?} is not in the inventory; add it to inventory.yaml under the firedrill home"
    )]
    UnknownTarget { target: String },
    #[error("target {target:?} is a {transport} target, which cannot serve {call}; {hint}")]
    WrongTransport {
        target: String,
        transport: Transport,
        call: &'static str,
        hint: &'static str,
    },
}

/// The inventory plus one executor per transport.
#[derive(Debug, Clone)]
pub struct Targets {
    inventory: Arc<Inventory>,
    local: Arc<LocalExecutor>,
    ssh: Arc<SshExecutor>,
    http: Arc<HttpExecutor>,
    /// Scripted answers instead of real calls (`firedrill kernel test`).
    mock: Option<Arc<MockTargets>>,
}

impl Targets {
    /// Targets with default transport settings.
    pub fn new(inventory: Inventory) -> Self {
        Targets::with_config(inventory, &TargetsConfig::default())
    }

    pub fn with_config(inventory: Inventory, config: &TargetsConfig) -> Self {
        Targets {
            inventory: Arc::new(inventory),
            local: Arc::new(LocalExecutor),
            ssh: Arc::new(SshExecutor::new(config.ssh.clone(), config.retry.clone())),
            http: Arc::new(HttpExecutor::new(config.http.clone(), config.retry.clone())),
            mock: None,
        }
    }

    /// Targets named `names` whose every command and request is answered by
    /// `mock` instead of performed: nothing on any machine is touched.
    pub fn mocked(names: &[String], mock: MockTargets) -> Self {
        let mut inventory = Inventory::default();
        for name in names {
            inventory
                .targets
                .insert(name.clone(), TargetSpec::Local(LocalTarget::default()));
        }
        Targets {
            mock: Some(Arc::new(mock)),
            ..Targets::new(inventory)
        }
    }

    pub fn inventory(&self) -> &Inventory {
        &self.inventory
    }

    pub fn ssh(&self) -> &SshExecutor {
        &self.ssh
    }

    pub fn http(&self) -> &HttpExecutor {
        &self.http
    }

    fn spec(&self, name: &str) -> Result<&TargetSpec, ExecError> {
        self.inventory
            .get(name)
            .ok_or_else(|| ExecError::UnknownTarget {
                target: name.to_string(),
            })
    }

    /// Run `command` on the target named `name`. Faults met on the way
    /// (connection retries, reconnects) are added to `faults`, whatever the
    /// outcome.
    pub async fn exec(
        &self,
        name: &str,
        command: &str,
        limits: ExecLimits,
        faults: &mut Faults,
    ) -> Result<ExecOutput, ExecError> {
        let spec = self.spec(name)?;
        if let Some(mock) = &self.mock {
            return mock.exec(name, command, limits.output_bytes);
        }
        match spec {
            TargetSpec::Local(spec) => self.local.exec(name, spec, command, limits).await,
            TargetSpec::Ssh(spec) => self.ssh.exec(name, spec, command, limits, faults).await,
            TargetSpec::Http(_) => Err(ExecError::WrongTransport {
                target: name.to_string(),
                transport: Transport::Http,
                call: "exec",
                hint: "grant the step an ssh or local target for commands",
            }),
        }
    }

    /// The absolute URL of a kernel's request to `name`: a URL that starts
    /// with `/` is a path under an HTTP endpoint's base-url (kernels know
    /// target names, not addresses); anything else is taken as it is.
    pub fn resolve_url(&self, name: &str, url: &str) -> String {
        match self.inventory.get(name) {
            Some(_) if self.mock.is_some() && url.starts_with('/') => format!("http://{name}{url}"),
            Some(TargetSpec::Http(spec)) if url.starts_with('/') => {
                format!("{}{url}", spec.base_url.trim_end_matches('/'))
            }
            _ => url.to_string(),
        }
    }

    /// Check that target `name` is reachable, doing nothing that changes it:
    /// `true` on local and SSH targets (which proves the pinned host key and
    /// the credentials), a GET of the base URL on HTTP endpoints (any status
    /// counts: it answered).
    pub async fn probe(&self, name: &str, timeout: Duration) -> Result<String, ExecError> {
        let limits = ExecLimits {
            timeout,
            output_bytes: 1024,
        };
        let mut faults = Faults::default();
        let spec = self.spec(name)?;
        let detail = match spec {
            TargetSpec::Http(http) => {
                let request = HttpRequest {
                    method: "GET".into(),
                    url: http.base_url.clone(),
                    headers: Vec::new(),
                    body: Vec::new(),
                };
                let out = self
                    .http_request(name, request, None, limits, &mut faults)
                    .await?;
                format!("answered HTTP {}", out.status)
            }
            TargetSpec::Local(_) | TargetSpec::Ssh(_) => {
                let out = self.exec(name, "true", limits, &mut faults).await?;
                if out.exit_code != 0 {
                    return Err(ExecError::Failed {
                        target: name.to_string(),
                        reason: format!("`true` exited {}", out.exit_code),
                    });
                }
                match spec {
                    TargetSpec::Ssh(s) => format!(
                        "reachable; host key verified, authenticated as {:?}",
                        s.user
                    ),
                    _ => "reachable".to_string(),
                }
            }
        };
        Ok(if faults.retries > 0 {
            format!("{detail} (after {} connection retries)", faults.retries)
        } else {
            detail
        })
    }

    /// Send `request` to the HTTP endpoint named `name`, with `auth` (the
    /// endpoint's resolved `auth-secret`) as bearer token.
    pub async fn http_request(
        &self,
        name: &str,
        request: HttpRequest,
        auth: Option<&crate::secret::Secret>,
        limits: ExecLimits,
        faults: &mut Faults,
    ) -> Result<HttpOutput, ExecError> {
        let spec = self.spec(name)?;
        if let Some(mock) = &self.mock {
            return mock.http(name, &request, limits.output_bytes);
        }
        match spec {
            TargetSpec::Http(spec) => {
                self.http
                    .request(name, spec, request, auth, limits, faults)
                    .await
            }
            other => Err(ExecError::WrongTransport {
                target: name.to_string(),
                transport: other.transport(),
                call: "http",
                hint: "add the endpoint to inventory.yaml as a `transport: http` target and grant it to the step",
            }),
        }
    }
}
