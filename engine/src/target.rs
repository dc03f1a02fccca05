//! Targets: the inventory of what kernels may act on, and the executors that reach them.
//!
//! The kernel host never runs a command itself; it asks [`Targets`] to resolve a
//! granted target name to its inventory entry and executor. This issue ships the
//! `local` transport; SSH and HTTP executors slot in behind the same trait.

mod inventory;
mod local;

use std::sync::Arc;
use std::time::Duration;

pub use inventory::{Inventory, InventoryError, SelectError, TargetSpec, Transport};
pub use local::LocalExecutor;

/// Caps applied to one command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExecLimits {
    pub timeout: Duration,
    /// Bytes kept of stdout and, separately, of stderr.
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

/// Why a command could not run to completion.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ExecError {
    #[error("command did not finish within {0:?} and was killed")]
    Timeout(Duration),
    #[error("cannot run the command on {target}: {reason}")]
    Failed { target: String, reason: String },
    #[error(
        "target {target:?} is not in the inventory; add it to inventory.yaml under the firedrill home"
    )]
    UnknownTarget { target: String },
}

/// Runs commands on one kind of target.
#[async_trait::async_trait]
pub trait Executor: Send + Sync + std::fmt::Debug {
    async fn exec(
        &self,
        target: &TargetSpec,
        command: &str,
        limits: ExecLimits,
    ) -> Result<ExecOutput, ExecError>;
}

/// The inventory plus one executor per transport.
#[derive(Debug, Clone)]
pub struct Targets {
    inventory: Arc<Inventory>,
    local: Arc<LocalExecutor>,
}

impl Targets {
    pub fn new(inventory: Inventory) -> Self {
        Targets {
            inventory: Arc::new(inventory),
            local: Arc::new(LocalExecutor),
        }
    }

    pub fn inventory(&self) -> &Inventory {
        &self.inventory
    }

    /// Run `command` on the target named `name`.
    pub async fn exec(
        &self,
        name: &str,
        command: &str,
        limits: ExecLimits,
    ) -> Result<ExecOutput, ExecError> {
        let spec = self
            .inventory
            .get(name)
            .ok_or_else(|| ExecError::UnknownTarget {
                target: name.to_string(),
            })?;
        let executor: &dyn Executor = match spec.transport {
            Transport::Local => self.local.as_ref(),
        };
        executor.exec(spec, command, limits).await
    }
}
