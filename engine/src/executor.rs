//! The run service: the one path through which every run starts (CLI, API,
//! alerts, drills), and the step state machine that executes it.
//!
//! A run is validated completely before anything is written. Then every
//! transition (run started, step started/skipped/retried/finished, each host
//! call, run finished) is persisted with its audit record, in a live run in
//! one batch as it happens, so a crash leaves a truthful record of what was
//! done; a dry-run's step records are written together, at most
//! `node.dry-run-flush-ms` late and with the run's end (`journal::Deferral`).
//! Every one of those writes goes through the run journal (`journal.rs`).
//!
//! The files, by the phase of a run they serve:
//!
//! | file | what it holds |
//! |---|---|
//! | `executor.rs` | [`Service`], the facade every front end holds |
//! | `admission.rs` | sources and requests, [`Service::prepare`], resume/skip, enqueue |
//! | `claim.rs` | claims, takeovers, the lease renewal loop, picking a run up |
//! | `lease.rs` | [`NodeConfig`], [`RunLease`], the crash rules ([`lease::pick_up`]) |
//! | `drive.rs` | the step loop: the switch and cancel checks, `when`, rendering, step results |
//! | `fanout.rs` | a step across its targets: concurrency, `max_errors`, attempts, retries, timeouts |
//! | `approval.rs` | approval steps and people's decisions on them |
//! | `control.rs` | cancel and abandon |
//! | `resolve.rs` | runbooks and kernels: validation, publish, rollback, stored runbooks |
//! | `journal.rs` | the one writer of a run's records |
//! | `report.rs` | [`RunReport`], the one view of a run (CLI, API, events, console) |
//! | `worker.rs` | a node's worker: claims runs while it has slots; shutdown |
//! | `error.rs` | [`RunError`], [`PublishError`], [`ControlError`] |

use std::sync::Arc;

use serde_json::Value;

use crate::Effect;
use crate::kernel::{KernelHost, Registry};
use crate::metrics::Metrics;
use crate::runbook::Templates;
use crate::store::{HostCallRow, Store};

mod admission;
mod approval;
mod claim;
mod control;
mod drive;
mod error;
mod fanout;
mod journal;
mod lease;
mod report;
mod resolve;
mod worker;

pub use admission::{PreparedRun, RunRequest, RunbookSource, Started, typed_inputs};
pub use approval::{Decision, who_may_approve};
pub use claim::Claim;
pub use error::{ControlError, PublishError, RunError};
pub use lease::{NodeConfig, PickUp, RunLease};
pub use report::{PendingApproval, RunReport, RunSummary, StepReport, TargetReport};
pub use worker::{RunWatch, Worker};

/// The id of the approval a `require-approval` readiness policy puts before
/// the first step (not a valid step id, so it cannot clash).
pub const GATE_STEP: &str = "_readiness-approval";

/// Longest backoff between retries, whatever the policy asks.
pub const MAX_BACKOFF: std::time::Duration = std::time::Duration::from_secs(300);

/// The engine's services, shared by every front end.
#[derive(Debug, Clone)]
pub struct Service {
    store: Arc<dyn Store>,
    host: Arc<KernelHost>,
    registry: Registry,
    templates: Arc<Templates>,
    metrics: Arc<Metrics>,
    node: Arc<NodeConfig>,
    /// Runbooks already validated, by digest (no YAML parsed per run).
    validated: Arc<resolve::Validated>,
}

impl Service {
    pub fn new(store: Arc<dyn Store>, host: Arc<KernelHost>, registry: Registry) -> Self {
        Service {
            store,
            host,
            registry,
            templates: Arc::new(Templates::default()),
            metrics: Arc::new(Metrics::default()),
            node: Arc::new(NodeConfig::default().resolved().unwrap_or_default()),
            validated: Arc::default(),
        }
    }

    /// This service as node `node` (checked with [`NodeConfig::resolved`]).
    pub fn with_node(mut self, node: NodeConfig) -> Self {
        self.node = Arc::new(node);
        self
    }

    pub fn node(&self) -> &NodeConfig {
        &self.node
    }

    /// Counters and histograms of everything this service ran.
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    pub fn host(&self) -> &Arc<KernelHost> {
        &self.host
    }

    pub fn registry(&self) -> &Registry {
        &self.registry
    }
}

/// The planned changes (simulated `change` calls) in a run's host-call records.
pub fn planned_changes(calls: &[HostCallRow]) -> Vec<&HostCallRow> {
    calls
        .iter()
        .filter(|c| {
            c.call.get("simulated") == Some(&Value::Bool(true))
                && c.call.get("effect").and_then(Value::as_str) == Some(Effect::Change.as_str())
        })
        .collect()
}

/// The run's mode as stored.
fn mode_of(run: &crate::store::RunRow) -> crate::Mode {
    if run.mode == crate::Mode::Live.as_str() {
        crate::Mode::Live
    } else {
        crate::Mode::DryRun
    }
}
