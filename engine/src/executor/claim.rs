//! Claims and leases: a node claims a queued run (or takes over one whose
//! node stopped renewing its lease), keeps the lease while it runs, and
//! picks the run up where its stored steps say ([`super::lease::pick_up`]).

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;
use tracing::Instrument as _;

use super::drive::RunCtx;
use super::error::RunError;
use super::journal::{self, Journal, RunEvent};
use super::lease::{self, PickUp, RunLease};
use super::{Service, mode_of};
use crate::Mode;
use crate::audit::Actor;
use crate::runbook::ValidRunbook;
use crate::store::{Applied, Fence, RunRow, RunStatus, StoreError, Write};

/// A run this node claimed: its fencing epoch, and whose lease expired
/// (a takeover) if any.
#[derive(Debug, Clone)]
pub struct Claim {
    pub run_id: String,
    pub epoch: i64,
    pub previous: Option<String>,
    sent_at: Instant,
}

impl Claim {
    /// A claim sent at `sent_at` (the lease is measured from then).
    pub(super) fn new(
        run_id: String,
        epoch: i64,
        previous: Option<String>,
        sent_at: Instant,
    ) -> Self {
        Claim {
            run_id,
            epoch,
            previous,
            sent_at,
        }
    }
}

impl Service {
    /// Claim the oldest queued run for this node (`only` that one, when
    /// given). `None` when there is nothing to claim.
    pub async fn claim_queued(&self, only: Option<&str>) -> Result<Option<Claim>, StoreError> {
        self.claim(Write::ClaimQueued {
            owner: self.node.id.clone(),
            lease_ms: self.node.lease_ms_i64(),
            only: only.map(String::from),
        })
        .await
    }

    /// Take over one active run whose node stopped renewing its lease.
    pub async fn take_over(&self) -> Result<Option<Claim>, StoreError> {
        self.claim(Write::TakeOver {
            owner: self.node.id.clone(),
            lease_ms: self.node.lease_ms_i64(),
        })
        .await
    }

    async fn claim(&self, write: Write) -> Result<Option<Claim>, StoreError> {
        let sent_at = Instant::now();
        Ok(match journal::claim(self.store.as_ref(), write).await? {
            Applied::Claimed {
                run_id,
                epoch,
                previous,
            } => Some(Claim::new(run_id, epoch, previous, sent_at)),
            _ => None,
        })
    }

    /// Execute a run this node claimed, from where its stored steps say
    /// (see [`lease::pick_up`]), renewing its lease until it ends.
    pub async fn execute_claimed(&self, claim: Claim) -> Result<String, RunError> {
        self.execute_known(claim, None).await
    }

    /// [`Service::execute_claimed`], given the run's row and validated
    /// runbook when this node has just admitted and claimed it (nothing is
    /// stored of it yet but its row, so nothing is read back).
    pub(super) async fn execute_known(
        &self,
        claim: Claim,
        known: Option<(RunRow, Arc<ValidRunbook>)>,
    ) -> Result<String, RunError> {
        let id = claim.run_id.clone();
        let lease = Arc::new(RunLease::new(
            Fence {
                run_id: id.clone(),
                owner: self.node.id.clone(),
                epoch: claim.epoch,
            },
            self.node.lease(),
            claim.sent_at,
        ));
        let span = tracing::info_span!("run", run_id = %id);
        let work = self
            .pick_up_and_drive(&lease, &claim, known)
            .instrument(span);
        tokio::select! {
            result = work => result,
            () = self.keep_lease(&lease) => Err(StoreError::Fenced { run_id: id }.into()),
        }
    }

    /// Renew `lease` every heartbeat; returns when the lease is lost.
    async fn keep_lease(&self, lease: &Arc<RunLease>) {
        let journal = Journal::new(
            self.store.clone(),
            self.metrics.clone(),
            lease.clone(),
            journal::node_actor(&self.node.id),
        );
        let every = Duration::from_millis(self.node.heartbeat_ms);
        loop {
            tokio::time::sleep(every).await;
            if lease.surrendered() {
                tracing::warn!(run_id = %lease.fence.run_id, "giving the run up: its lease ran low before a change (the node was paused or starved); another node takes it over");
                std::future::pending::<()>().await;
            }
            let sent_at = Instant::now();
            match journal.renew(self.node.lease_ms_i64()).await {
                Ok(Applied::Done) => lease.renewed(sent_at),
                Ok(_) => {
                    tracing::warn!(run_id = %lease.fence.run_id, "lease lost: another node took the run over; stopping it here");
                    // Let the run's own next write see the fence and stop;
                    // give it a moment to do so cleanly.
                    tokio::time::sleep(every).await;
                    return;
                }
                Err(e) => {
                    tracing::warn!(run_id = %lease.fence.run_id, error = %e, "cannot renew the run's lease; live changes stop when it runs low");
                }
            }
        }
    }

    async fn pick_up_and_drive(
        &self,
        lease: &Arc<RunLease>,
        claim: &Claim,
        known: Option<(RunRow, Arc<ValidRunbook>)>,
    ) -> Result<String, RunError> {
        let id = claim.run_id.clone();
        let (run, known) = match known {
            Some((run, valid)) => (run, Some(valid)),
            None => {
                let run = self.store.run(&id).await?.ok_or_else(|| {
                    RunError::Stored(id.clone(), "the claimed run is gone".into())
                })?;
                (run, None)
            }
        };
        let mut actor = Actor::parse(&run.actor).unwrap_or_else(|_| Actor::user(run.actor.clone()));
        actor.auth = Some(crate::audit::ActorAuth {
            via: crate::audit::Via::Run,
            person: None,
        });
        let mode = mode_of(&run);
        let mut journal = Journal::new(
            self.store.clone(),
            self.metrics.clone(),
            lease.clone(),
            actor.clone(),
        );
        if mode == Mode::DryRun {
            journal = journal.deferring(self.node.deferral());
        }
        let end = |status: RunStatus, why: String| RunEvent::PickUpEnded {
            status,
            why,
            epoch: claim.epoch,
            previous: claim.previous.as_deref(),
            runbook: &run.runbook,
            mode: mode.as_str(),
        };
        let (valid, rows, targets) = match known {
            Some(valid) => (valid, Vec::new(), Vec::new()),
            None => match self.stored_runbook(&run).await {
                Ok(v) => (
                    v,
                    self.store.steps(&id).await?,
                    self.store.step_targets(&id).await?,
                ),
                Err(why) => {
                    let why = format!("cannot continue run {id}: {why}; it was not started again");
                    journal.record(end(RunStatus::Failed, why)).await?;
                    return Ok(id);
                }
            },
        };
        let rb = &valid.runbook;
        let main: Vec<&str> = rb.steps.iter().map(|s| s.id.as_str()).collect();
        let idempotent = |i: usize| {
            let step = &rb.steps[i];
            mode == Mode::DryRun
                || step.approval.is_some()
                || valid.kernel(step).is_some_and(|k| k.manifest.idempotent)
        };
        let (from, steps, gate_done, rerun) =
            match lease::pick_up(&main, &rows, &targets, &idempotent) {
                PickUp::Failed(why) => {
                    journal.record(end(RunStatus::Failed, why)).await?;
                    return Ok(id);
                }
                PickUp::NeedsAttention { step: _, why } => {
                    journal.record(end(RunStatus::NeedsAttention, why)).await?;
                    return Ok(id);
                }
                PickUp::Continue {
                    from,
                    steps,
                    gate_done,
                    rerun,
                } => (from, steps, gate_done, rerun),
            };
        if run.status == RunStatus::AwaitingApproval {
            journal.record(RunEvent::PickedUpAwaiting).await?;
        }
        if let Some(step) = &rerun {
            let why = if mode == Mode::DryRun {
                "dry-run: nothing was changed"
            } else {
                "its kernel declares idempotent"
            };
            journal
                .record(RunEvent::StepRerun {
                    step,
                    why,
                    previous: claim.previous.as_deref(),
                })
                .await?;
        }
        if claim.previous.is_some() || from > 0 {
            tracing::info!(run_id = %id, from, ?rerun, "run picked up");
        }
        let gate = if gate_done {
            None
        } else {
            run.gate
                .clone()
                .and_then(|g| serde_json::from_value(g).ok())
        };
        let ctx = RunCtx {
            id: id.clone(),
            valid: &valid,
            mode,
            vars: json!({
                "inputs": run.inputs,
                "steps": steps,
                "run": {"id": id, "mode": mode.as_str(), "actor": actor.to_string()},
            }),
            gate,
            actor,
            journal: Arc::new(journal),
        };
        self.drive(ctx, from).await
    }
}
