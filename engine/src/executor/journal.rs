//! The run journal: the one writer of a run's records.
//!
//! Everything that happens to a run is one variant of [`RunEvent`] (what
//! the node executing it records, under the run's [`Fence`]) or of
//! [`RunControl`] (what people and front ends do to a run: admit, resume,
//! cancel, abandon, decide). Each variant yields, in this file, its store
//! writes, its audit action and details and its log line (one `match` arm
//! of [`Journal::batch`] or [`control`]), and its metric increments
//! ([`counts`], run only once the record is kept). Nothing else in the engine builds a write of a run's rows
//! (`journal/tests.rs::only_the_journal_writes_a_run` holds it).
//!
//! The executing node's writes always carry the fence, and none is sent
//! once the node gave the run up ([`RunLease::surrendered`]): "a run given
//! up records nothing more" holds for every record, host calls included.

use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};

use super::lease::RunLease;
use crate::audit::{Action, Actor, NewEvent, now_rfc3339};
use crate::kernel::{HostCall, LimitExceeded};
use crate::metrics::Metrics;
use crate::store::{
    Applied, Batch, Fence, HostCallRow, RunStatus, StepRow, StepTargetRow, Store, StoreError, Write,
};

/// Milliseconds of `d`, saturating.
pub(super) fn ms(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

/// One thing the node executing a run records about it.
pub(super) enum RunEvent<'a> {
    /// A claimed run ends before its next step: its runbook can no longer
    /// be used, it had already failed, or a step without a result needs a
    /// person ([`RunStatus::NeedsAttention`]).
    PickUpEnded {
        status: RunStatus,
        why: String,
        epoch: i64,
        previous: Option<&'a str>,
        runbook: &'a str,
        mode: &'a str,
    },
    /// A run picked up while it was waiting for approval waits again as
    /// running (its approval step re-waits).
    PickedUpAwaiting,
    /// A step that may have been in flight runs again.
    StepRerun {
        step: &'a str,
        why: &'static str,
        previous: Option<&'a str>,
    },
    /// A step's `when` was false.
    StepSkipped { row: StepRow, when: &'a str },
    /// A kernel step's intent: its targets and input, before any target runs.
    StepStarted {
        row: StepRow,
        kernel: String,
        digest: String,
    },
    /// An approval step in a dry-run or drill: where a live run would wait.
    ApprovalNoted {
        row: StepRow,
        spec: &'a Value,
        note: &'static str,
    },
    /// A live approval step starts waiting; the run is awaiting approval.
    ApprovalRequested { row: StepRow, spec: &'a Value },
    /// The approval wait ended (decided, timed out, cancelled, halted).
    ApprovalWaitEnded,
    /// One target's attempt failed with a retryable error; it runs again
    /// after `backoff`.
    StepRetried {
        step: &'a str,
        target: &'a str,
        attempt: u32,
        error: Option<String>,
        backoff: Duration,
    },
    /// A kernel hit one of its limits.
    LimitExceeded {
        step: &'a str,
        target: &'a str,
        limit: &'a LimitExceeded,
    },
    /// A kernel called the host (recorded as it happens).
    HostCall {
        step: &'a str,
        target: &'a str,
        attempt: i64,
        call: &'a HostCall,
    },
    /// One target of a step ended (or never started).
    TargetFinished(StepTargetRow),
    /// A step ended.
    StepFinished {
        row: StepRow,
        runbook: &'a str,
        took: Duration,
    },
    /// The run ended.
    RunFinished {
        status: RunStatus,
        error: Option<String>,
        runbook: &'a str,
        version: u32,
        mode: &'a str,
        took: Duration,
    },
    /// `serve` shut down with the run in progress.
    Interrupted { error: String },
}

impl RunEvent<'_> {
    /// Whether a dry-run may keep this record back ([`Deferral`]): every
    /// step record but a denial and a limit hit. Status moves, pick-up
    /// endings and interruptions are written at once (after what was kept
    /// back before them).
    fn deferrable(&self) -> bool {
        matches!(
            self,
            RunEvent::StepRerun { .. }
                | RunEvent::StepSkipped { .. }
                | RunEvent::StepStarted { .. }
                | RunEvent::ApprovalNoted { .. }
                | RunEvent::StepRetried { .. }
                | RunEvent::TargetFinished(_)
                | RunEvent::StepFinished { .. }
        ) || matches!(self, RunEvent::HostCall { call, .. } if !call.is_denied())
    }
}

/// How a dry-run's step records are kept back and written together
/// (`[node] dry-run-flush-ms`, `dry-run-flush-records`): a dry-run makes no
/// change, so it has no intent to make durable before a side effect, and
/// its records go to the store in as few batches as this allows: at the
/// latest `window` after the first record kept back, when `records` are
/// kept, and with the run's end (one batch with it). What a crash leaves
/// is the run claimed with the steps written so far; the node that takes
/// it over runs the rest again (a dry-run step is always safe to re-run).
#[derive(Debug, Clone, Copy)]
pub(super) struct Deferral {
    pub(super) window: Duration,
    pub(super) records: usize,
}

/// Records kept back, in order, with their metric increments.
#[derive(Default)]
struct Pending {
    batch: Batch,
    counts: Vec<Count>,
    records: usize,
}

impl Pending {
    fn is_empty(&self) -> bool {
        self.batch.writes.is_empty() && self.batch.events.is_empty()
    }

    /// Append `batch`. A step row written again replaces the one kept (at
    /// its place, before the rows that refer to it): one transaction holds
    /// both, so only the last state of a step is ever seen.
    fn add(&mut self, batch: Batch, counts: Vec<Count>) {
        self.records += batch.events.len().max(1);
        for write in batch.writes {
            if let Write::UpsertStep(row) = &write
                && let Some(kept) = self
                    .batch
                    .writes
                    .iter_mut()
                    .find(|w| matches!(w, Write::UpsertStep(k) if k.step_id == row.step_id))
            {
                *kept = write;
                continue;
            }
            self.batch.writes.push(write);
        }
        self.batch.events.extend(batch.events);
        self.counts.extend(counts);
    }

    fn take(&mut self) -> (Batch, Vec<Count>) {
        self.records = 0;
        (
            std::mem::take(&mut self.batch),
            std::mem::take(&mut self.counts),
        )
    }
}

/// What writes a run's records: the store, under the run's fence.
#[derive(Clone)]
struct Sink {
    store: Arc<dyn Store>,
    metrics: Arc<Metrics>,
    fence: Fence,
    /// Set once a write was fenced: the run is another node's, and every
    /// later record is refused here.
    lost: Arc<std::sync::atomic::AtomicBool>,
}

impl Sink {
    fn new(store: Arc<dyn Store>, metrics: Arc<Metrics>, fence: Fence) -> Self {
        Sink {
            store,
            metrics,
            fence,
            lost: Arc::default(),
        }
    }

    fn is_lost(&self) -> bool {
        self.lost.load(std::sync::atomic::Ordering::Acquire)
    }

    /// Apply `batch` under the fence; count `counts` once it is kept.
    async fn commit(&self, batch: Batch, counts: Vec<Count>) -> Result<Applied, StoreError> {
        match self.store.apply(batch.fenced(&self.fence)).await? {
            Applied::Fenced => {
                self.lost.store(true, std::sync::atomic::Ordering::Release);
                Err(StoreError::Fenced {
                    run_id: self.fence.run_id.clone(),
                })
            }
            Applied::Stale => {
                // A status write found the run elsewhere: nothing was
                // written. Say so; the run's record is what it was.
                tracing::warn!(run_id = %self.fence.run_id, "a status change of the run was not applied: the run had already moved on");
                Ok(Applied::Stale)
            }
            other => {
                // Counted only once the record is kept, so a node that lost
                // the run counts nothing it did not record.
                if other.wrote() {
                    for count in counts {
                        count(&self.metrics);
                    }
                }
                Ok(other)
            }
        }
    }
}

/// The journal of one run on the node executing it.
pub(super) struct Journal {
    sink: Sink,
    /// The node's lease; `None` for a node closing the run on shutdown.
    lease: Option<Arc<RunLease>>,
    /// Who the run acts for.
    actor: Actor,
    /// The node executing it (claims, pick-up, shutdown).
    node: Actor,
    /// Set for a dry-run: its step records are kept back.
    deferral: Option<Deferral>,
    /// What is kept back; locked while it is written, so batches reach
    /// the store in the order they were recorded.
    pending: Arc<tokio::sync::Mutex<Pending>>,
}

/// The actor of node `id`.
pub(super) fn node_actor(id: &str) -> Actor {
    Actor::engine(
        crate::audit::ActorKind::Scheduler,
        format!("node:{id}"),
        crate::audit::Via::Engine,
    )
}

impl Journal {
    pub(super) fn new(
        store: Arc<dyn Store>,
        metrics: Arc<Metrics>,
        lease: Arc<RunLease>,
        actor: Actor,
    ) -> Self {
        Journal {
            sink: Sink::new(store, metrics, lease.fence.clone()),
            node: node_actor(&lease.fence.owner),
            lease: Some(lease),
            actor,
            deferral: None,
            pending: Arc::default(),
        }
    }

    /// Keep step records back as [`Deferral`] says (dry-runs).
    pub(super) fn deferring(mut self, deferral: Deferral) -> Self {
        self.deferral =
            (deferral.window > Duration::ZERO && deferral.records > 1).then_some(deferral);
        self
    }

    /// The journal of a node closing a run it holds by `fence` (shutdown).
    pub(super) fn closing(store: Arc<dyn Store>, metrics: Arc<Metrics>, fence: Fence) -> Self {
        let node = node_actor(&fence.owner);
        Journal {
            sink: Sink::new(store, metrics, fence),
            lease: None,
            actor: node.clone(),
            node,
            deferral: None,
            pending: Arc::default(),
        }
    }

    /// Whether this node may make a live change now (its lease is
    /// comfortably valid): [`RunLease::may_change`].
    pub(super) fn may_change(&self) -> Result<(), String> {
        self.lease.as_ref().map_or(Ok(()), |l| l.may_change())
    }

    fn run_id(&self) -> &str {
        &self.sink.fence.run_id
    }

    fn fenced(&self) -> StoreError {
        StoreError::Fenced {
            run_id: self.sink.fence.run_id.clone(),
        }
    }

    /// Record `event`: its writes and audit record in one fenced batch,
    /// its metrics, its log line. [`StoreError::Fenced`] when the run is no
    /// longer this node's, or this node gave it up. A dry-run's step
    /// records are kept back ([`Deferral`]) and `Done` is answered for them.
    pub(super) async fn record(&self, event: RunEvent<'_>) -> Result<Applied, StoreError> {
        if self.sink.is_lost() || self.lease.as_ref().is_some_and(|l| l.surrendered()) {
            return Err(self.fenced());
        }
        let deferrable = event.deferrable();
        let finishes = matches!(event, RunEvent::RunFinished { .. });
        let counts = counts(&event);
        let batch = self.batch(event);
        let Some(deferral) = self.deferral else {
            return self.sink.commit(batch, counts).await;
        };
        let mut pending = self.pending.lock().await;
        if deferrable {
            let was_empty = pending.is_empty();
            pending.add(batch, counts);
            if pending.records < deferral.records {
                if was_empty {
                    self.flush_after(deferral.window);
                }
                return Ok(Applied::Done);
            }
            return flush(&self.sink, &mut pending).await;
        }
        if pending.is_empty() {
            return self.sink.commit(batch, counts).await;
        }
        if !finishes {
            // A status move is conditional: written on its own, after
            // what was kept back, so a refused move loses no step record.
            flush(&self.sink, &mut pending).await?;
            return self.sink.commit(batch, counts).await;
        }
        // The run's end and what was kept back: one batch. Should the end
        // be refused (the run moved on: never while this node holds it),
        // what was kept back is written on its own.
        let kept = pending.batch.clone();
        pending.add(batch, counts);
        match flush(&self.sink, &mut pending).await? {
            Applied::Stale => {
                self.sink.commit(kept, Vec::new()).await?;
                Ok(Applied::Stale)
            }
            other => Ok(other),
        }
    }

    /// Write what is kept back `window` from now, unless it was written by
    /// then; on a store error, again every `window` while the run is ours.
    fn flush_after(&self, window: Duration) {
        let (sink, pending) = (self.sink.clone(), self.pending.clone());
        let lease = self.lease.clone();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(window).await;
                let mut pending = pending.lock().await;
                if pending.is_empty()
                    || sink.is_lost()
                    || lease.as_ref().is_some_and(|l| l.surrendered())
                {
                    return;
                }
                match flush(&sink, &mut pending).await {
                    Ok(_) => return,
                    Err(StoreError::Fenced { .. }) => {
                        tracing::warn!(run_id = %sink.fence.run_id, "the run is another node's now: this node's last dry-run records were not written, and it records nothing more");
                        return;
                    }
                    Err(e) => {
                        tracing::warn!(run_id = %sink.fence.run_id, error = %e, "cannot write the dry-run's step records yet; they are kept and tried again");
                    }
                }
            }
        });
    }

    /// Record a host call as it happens. A failure is logged, not returned:
    /// the step's final record still carries every call.
    pub(super) async fn host_call(&self, step: &str, target: &str, attempt: i64, call: &HostCall) {
        let event = RunEvent::HostCall {
            step,
            target,
            attempt,
            call,
        };
        if let Err(e) = self.record(event).await {
            tracing::error!(run_id = %self.run_id(), step = %step, error = %e, "cannot persist host call");
        }
    }

    /// Extend the run's lease (fenced); [`Applied::Fenced`] once another
    /// node took it over.
    pub(super) async fn renew(&self, lease_ms: i64) -> Result<Applied, StoreError> {
        let batch = Batch::new()
            .write(Write::RenewLease {
                run_id: self.sink.fence.run_id.clone(),
                lease_ms,
            })
            .fenced(&self.sink.fence);
        self.sink.store.apply(batch).await
    }

    /// The batch of `event` (its writes and audit record), with its line
    /// logged; its metrics are [`counts`].
    fn batch(&self, event: RunEvent<'_>) -> Batch {
        let id = self.run_id().to_string();
        let by_run =
            |action: Action, subject: String| NewEvent::new(&self.actor, action, subject).run(&id);
        let by_node =
            |action: Action| NewEvent::new(&self.node, action, format!("run:{id}")).run(&id);
        match event {
            RunEvent::PickUpEnded {
                status,
                why,
                epoch,
                previous,
                ..
            } => {
                let action = if status == RunStatus::NeedsAttention {
                    tracing::warn!(run_id = %id, "run needs attention: a step that is not idempotent has no result");
                    Action::RunNeedsAttention
                } else {
                    tracing::warn!(run_id = %id, status = status.as_str(), error = %why, "run ended when it was picked up");
                    Action::RunFinished
                };
                Batch::new()
                    .write(Write::TransitionRun {
                        id: id.clone(),
                        from: vec![RunStatus::Running, RunStatus::AwaitingApproval],
                        to: status,
                        error: Some(why.clone()),
                        finished_at: (status != RunStatus::NeedsAttention).then(now_rfc3339),
                    })
                    .event(
                        by_node(action).outcome(status.as_str()).details(
                            json!({"error": why, "epoch": epoch, "previous_owner": previous}),
                        ),
                    )
            }
            RunEvent::PickedUpAwaiting => Batch::new().write(Write::TransitionRun {
                id,
                from: vec![RunStatus::AwaitingApproval],
                to: RunStatus::Running,
                error: None,
                finished_at: None,
            }),
            RunEvent::StepRerun {
                step,
                why,
                previous,
            } => {
                tracing::info!(run_id = %id, step, why, "step runs again");
                Batch::new().event(
                    NewEvent::new(&self.node, Action::StepRerun, format!("step:{step}"))
                        .details(json!({"why": why, "previous_owner": previous}))
                        .run(&id),
                )
            }
            RunEvent::StepSkipped { row, when } => {
                let subject = format!("step:{}", row.step_id);
                Batch::new().write(Write::UpsertStep(row)).event(
                    by_run(Action::StepSkipped, subject)
                        .outcome("skipped")
                        .details(json!({"when": when, "reason": "condition was false"})),
                )
            }
            RunEvent::StepStarted {
                row,
                kernel,
                digest,
            } => {
                let subject = format!("step:{}", row.step_id);
                let details = json!({
                    "kernel": kernel,
                    "digest": digest,
                    "targets": row.targets,
                    "phase": row.phase.as_str(),
                });
                Batch::new()
                    .write(Write::UpsertStep(row))
                    .event(by_run(Action::StepStarted, subject).details(details))
            }
            RunEvent::ApprovalNoted { row, spec, note } => {
                let subject = format!("step:{}", row.step_id);
                Batch::new().write(Write::UpsertStep(row)).event(
                    by_run(Action::StepStarted, subject)
                        .details(json!({"approval": spec, "note": note})),
                )
            }
            RunEvent::ApprovalRequested { row, spec } => {
                tracing::info!(run_id = %id, step = %row.step_id, "waiting for approval");
                let subject = format!("step:{}", row.step_id);
                Batch::new()
                    .write(Write::UpsertStep(row))
                    .write(Write::TransitionRun {
                        id: id.clone(),
                        from: vec![RunStatus::Running],
                        to: RunStatus::AwaitingApproval,
                        error: None,
                        finished_at: None,
                    })
                    .event(by_run(Action::ApprovalRequested, subject).details(spec.clone()))
            }
            RunEvent::ApprovalWaitEnded => Batch::new().write(Write::TransitionRun {
                id,
                from: vec![RunStatus::AwaitingApproval],
                to: RunStatus::Running,
                error: None,
                finished_at: None,
            }),
            RunEvent::StepRetried {
                step,
                target,
                attempt,
                error,
                backoff,
            } => {
                tracing::info!(run_id = %id, step, target, attempt, "retrying after a retryable error");
                Batch::new().event(
                    by_run(Action::StepRetried, format!("step:{step}"))
                        .outcome("retrying")
                        .details(json!({"target": target, "attempt": attempt, "error": error, "backoff_ms": ms(backoff)})),
                )
            }
            RunEvent::LimitExceeded {
                step,
                target,
                limit,
            } => {
                tracing::warn!(run_id = %id, step, target, limit = limit.limit.config_key(), "kernel limit exceeded");
                Batch::new().event(
                    by_run(Action::LimitExceeded, format!("step:{step}"))
                        .outcome("failed")
                        .details(json!({"target": target, "limit": limit.limit, "value": limit.value, "config_key": limit.limit.config_key()})),
                )
            }
            RunEvent::HostCall {
                step,
                target,
                attempt,
                call,
            } => self.host_call_batch(step, target, attempt, call),
            RunEvent::TargetFinished(row) => {
                let subject = format!("target:{}", row.target);
                let details =
                    json!({"step": row.step_id, "attempts": row.attempts, "error": row.error});
                let outcome = row.status.as_str();
                Batch::new().write(Write::UpsertStepTarget(row)).event(
                    by_run(Action::StepTargetFinished, subject)
                        .outcome(outcome)
                        .details(details),
                )
            }
            RunEvent::StepFinished { row, .. } => {
                let outcome = row.status.as_str();
                tracing::info!(run_id = %id, step = %row.step_id, status = outcome, duration_ms = row.duration_ms, "step finished");
                let event = by_run(Action::StepFinished, format!("step:{}", row.step_id))
                    .outcome(outcome)
                    .details(json!({
                        "kernel": row.kernel,
                        "digest": row.kernel_digest,
                        "attempts": row.attempts,
                        "duration_ms": row.duration_ms,
                        "error": row.error,
                    }));
                Batch::new().write(Write::UpsertStep(row)).event(event)
            }
            RunEvent::RunFinished {
                status,
                error,
                runbook,
                version,
                took,
                ..
            } => {
                tracing::info!(run_id = %id, status = status.as_str(), "run finished");
                Batch::new()
                    .write(Write::FinishRun {
                        id: id.clone(),
                        status,
                        error: error.clone(),
                        finished_at: now_rfc3339(),
                    })
                    .event(
                        by_run(Action::RunFinished, format!("runbook:{runbook}@{version}"))
                            .outcome(status.as_str())
                            .details(json!({"duration_ms": ms(took), "error": error})),
                    )
            }
            RunEvent::Interrupted { error } => {
                tracing::warn!(run_id = %id, "recording the run as interrupted");
                Batch::new()
                    .write(Write::TransitionRun {
                        id: id.clone(),
                        from: vec![RunStatus::Running, RunStatus::AwaitingApproval],
                        to: RunStatus::Interrupted,
                        error: Some(error.clone()),
                        finished_at: Some(now_rfc3339()),
                    })
                    .event(
                        by_node(Action::RunInterrupted)
                            .outcome("interrupted")
                            .details(json!({"error": error})),
                    )
            }
        }
    }

    fn host_call_batch(&self, step: &str, target: &str, attempt: i64, call: &HostCall) -> Batch {
        let record = serde_json::to_value(call).unwrap_or_default();
        let denied = call.is_denied();
        let mut details = json!({"step": step, "attempt": attempt});
        if let (Some(d), Some(r)) = (details.as_object_mut(), record.as_object()) {
            // stdout/stderr stay in the run's host-call records, not the audit log.
            for (k, v) in r {
                if k != "stdout" && k != "stderr" {
                    d.insert(k.clone(), v.clone());
                }
            }
        }
        let called = record.get("target").and_then(Value::as_str).unwrap_or("-");
        let outcome = record
            .get("outcome")
            .and_then(Value::as_str)
            .unwrap_or("ok");
        let action = if denied {
            Action::CapabilityDenied
        } else {
            Action::HostCall
        };
        Batch::new()
            .write(Write::InsertHostCall(HostCallRow {
                run_id: self.run_id().to_string(),
                step_id: step.to_string(),
                target: target.to_string(),
                attempt,
                index: i64::from(call.index),
                call: record.clone(),
            }))
            .event(
                NewEvent::new(&self.actor, action, format!("target:{called}"))
                    .outcome(if call.simulated { "simulated" } else { outcome })
                    .details(details)
                    .run(self.run_id()),
            )
    }
}

/// Write what `pending` holds. The write runs as a task of its own, so a
/// caller cancelled while it waits (a step timeout around a host call)
/// neither loses nor repeats it; on a store error what was held is kept,
/// to be written with the next record (a fenced batch is gone: the run is
/// not ours).
async fn flush(sink: &Sink, pending: &mut Pending) -> Result<Applied, StoreError> {
    let records = pending.records;
    let (batch, counts) = pending.take();
    let kept = batch.clone();
    let writer = sink.clone();
    let written = tokio::spawn(async move { writer.commit(batch, counts).await })
        .await
        .unwrap_or_else(|e| {
            Err(StoreError::Corrupt {
                what: "run journal",
                reason: format!("the write of the run's records stopped: {e}"),
            })
        });
    match written {
        Err(e @ StoreError::Fenced { .. }) => Err(e),
        Err(e) => {
            // The metric increments went with the failed write: a retried
            // batch counts nothing (a metric may undercount, a record never).
            pending.batch = kept;
            pending.records = records;
            Err(e)
        }
        ok => ok,
    }
}

/// A metric increment, run once its record is kept.
type Count = Box<dyn FnOnce(&Metrics) + Send>;

/// The metrics of `event`: counted by [`Journal::record`] only once the
/// event's record is kept.
fn counts(event: &RunEvent<'_>) -> Vec<Count> {
    match event {
        RunEvent::PickUpEnded {
            status,
            runbook,
            mode,
            ..
        } if *status != RunStatus::NeedsAttention => {
            let (runbook, mode, status) = (runbook.to_string(), mode.to_string(), *status);
            vec![Box::new(move |m: &Metrics| {
                m.run_finished(&runbook, &mode, status.as_str(), Duration::ZERO);
            })]
        }
        RunEvent::StepRetried { .. } => vec![Box::new(|m: &Metrics| {
            m.inc("firedrill_retries_total", &[("kind", "step")]);
        })],
        RunEvent::StepFinished { row, runbook, took } => {
            let (runbook, status, took) = (runbook.to_string(), row.status, *took);
            vec![Box::new(move |m: &Metrics| {
                m.observe(
                    "firedrill_step_duration_seconds",
                    &[("runbook", &runbook), ("status", status.as_str())],
                    took,
                );
            })]
        }
        RunEvent::RunFinished {
            status,
            runbook,
            mode,
            took,
            ..
        } => {
            let (runbook, mode, status, took) =
                (runbook.to_string(), mode.to_string(), *status, *took);
            vec![Box::new(move |m: &Metrics| {
                m.run_finished(&runbook, &mode, status.as_str(), took);
            })]
        }
        RunEvent::HostCall { call, .. } => {
            let record = serde_json::to_value(call).unwrap_or_default();
            let text = |key: &str, or: &str| {
                record
                    .get(key)
                    .and_then(Value::as_str)
                    .unwrap_or(or)
                    .to_string()
            };
            let (kind, effect) = (text("kind", "-"), text("effect", "-"));
            let outcome = if call.simulated {
                "planned".to_string()
            } else {
                text("outcome", "ok")
            };
            let (denied, faults) = (call.is_denied(), call.faults);
            vec![Box::new(move |m: &Metrics| {
                m.inc(
                    "firedrill_host_calls_total",
                    &[("kind", &kind), ("effect", &effect), ("outcome", &outcome)],
                );
                if denied {
                    m.denied("capability");
                }
                m.add(
                    "firedrill_retries_total",
                    &[("kind", "connect")],
                    u64::from(faults.retries),
                );
                m.add(
                    "firedrill_retries_total",
                    &[("kind", "reconnect")],
                    u64::from(faults.reconnects),
                );
            })]
        }
        _ => Vec::new(),
    }
}

mod control;
#[cfg(test)]
mod tests;

pub(super) use control::{RunControl, claim, control, control_with};
