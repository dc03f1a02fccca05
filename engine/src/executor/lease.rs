//! Leases and crash recovery: which node runs a run, how it keeps the run,
//! and where a run picks up after its node crashed or lost the lease.
//!
//! A node claims a run (queued, or active with an expired lease) in one
//! store write that sets `owner` and increments `epoch`. Every later write of
//! the run carries that [`Fence`]; once another node has taken the run over,
//! the store refuses them. A renewal loop extends the lease every
//! `heartbeat`; before each live change the node checks that its lease is
//! still comfortably valid by its own monotonic clock, so a node that was
//! paused past its lease makes no change on resuming.

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::store::{Fence, Phase, StepRow, StepStatus, TargetStatus};

/// `[node]` in `firedrill.toml`: this process as one of several nodes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "kebab-case", default)]
pub struct NodeConfig {
    /// This node's name in leases and the audit log. Default: a new random
    /// id per process (`hostname-xxxx` style names are fine; they must be
    /// unique among the nodes sharing a database).
    pub id: String,
    /// How long a claim holds without renewal, in ms. Another node takes a
    /// run over this long after its node stopped renewing. Default 15,000.
    pub lease_ms: u64,
    /// How often a node renews the leases of its runs, in ms; at most a
    /// third of `lease-ms`. Default 5,000.
    pub heartbeat_ms: u64,
    /// How often an idle node looks for queued runs and expired leases, in
    /// ms. Default 500.
    pub poll_ms: u64,
    /// A dry-run's step records are written together, at the latest this
    /// many ms after the first one kept back, and with the run's end (a
    /// live run writes each record before it goes on). A crash loses at
    /// most this window of a dry-run's records; the node taking the run
    /// over runs those steps again (a dry-run changes nothing). 0 writes
    /// each record at once. 0 to 60,000. Default 100.
    pub dry_run_flush_ms: u64,
    /// Most audit records of a dry-run kept back before they are written.
    /// 1 to 10,000. Default 256.
    pub dry_run_flush_records: u64,
}

impl Default for NodeConfig {
    fn default() -> Self {
        NodeConfig {
            id: String::new(),
            lease_ms: 15_000,
            heartbeat_ms: 5_000,
            poll_ms: 500,
            dry_run_flush_ms: 100,
            dry_run_flush_records: 256,
        }
    }
}

/// Smallest lease accepted (a lease shorter than a slow fsync is no lease).
pub const MIN_LEASE_MS: u64 = 500;

impl NodeConfig {
    /// Check the timings; fill in a random id when none is set.
    pub fn resolved(mut self) -> Result<Self, String> {
        if self.id.is_empty() {
            // The tail of a v7 UUID is random.
            let uuid = uuid::Uuid::now_v7().simple().to_string();
            self.id = format!("node-{}", &uuid[uuid.len() - 12..]);
        }
        if self.id.len() > 128 || self.id.chars().any(char::is_control) {
            return Err(format!(
                "node id {:?} ([node] id or serve --node-id) must be 1-128 printable characters",
                self.id
            ));
        }
        if self.lease_ms < MIN_LEASE_MS {
            return Err(format!(
                "node.lease-ms is {}; it must be at least {MIN_LEASE_MS}",
                self.lease_ms
            ));
        }
        if self.heartbeat_ms == 0 || self.heartbeat_ms.saturating_mul(3) > self.lease_ms {
            return Err(format!(
                "node.heartbeat-ms is {}; it must be between 1 and a third of node.lease-ms ({})",
                self.heartbeat_ms, self.lease_ms
            ));
        }
        if self.poll_ms == 0 {
            return Err("node.poll-ms must be at least 1".into());
        }
        if self.dry_run_flush_ms > 60_000 {
            return Err(format!(
                "node.dry-run-flush-ms is {}; it must be between 0 (write each record at once) and 60000",
                self.dry_run_flush_ms
            ));
        }
        if !(1..=10_000).contains(&self.dry_run_flush_records) {
            return Err(format!(
                "node.dry-run-flush-records is {}; it must be between 1 and 10000",
                self.dry_run_flush_records
            ));
        }
        Ok(self)
    }

    /// How a dry-run's step records are kept back.
    pub(super) fn deferral(&self) -> super::journal::Deferral {
        super::journal::Deferral {
            window: Duration::from_millis(self.dry_run_flush_ms),
            records: usize::try_from(self.dry_run_flush_records).unwrap_or(usize::MAX),
        }
    }

    pub fn lease(&self) -> Duration {
        Duration::from_millis(self.lease_ms)
    }

    pub fn lease_ms_i64(&self) -> i64 {
        i64::try_from(self.lease_ms).unwrap_or(i64::MAX)
    }
}

/// A run's lease as this node holds it.
#[derive(Debug)]
pub struct RunLease {
    pub fence: Fence,
    ttl: Duration,
    /// When the lease runs out by this node's monotonic clock: measured from
    /// the instant before the claim or renewal was sent.
    valid_until: Mutex<Instant>,
    /// Set when a change was refused for a lease running low: this node
    /// gives the run up (records nothing more, stops renewing) so another
    /// node takes it over under the crash rules, instead of recording a
    /// failure it did not cause.
    surrendered: AtomicBool,
}

impl RunLease {
    pub fn new(fence: Fence, ttl: Duration, sent_at: Instant) -> Self {
        RunLease {
            fence,
            ttl,
            valid_until: Mutex::new(sent_at + ttl),
            surrendered: AtomicBool::new(false),
        }
    }

    /// Whether this node gave the run up (see [`RunLease::may_change`]).
    pub fn surrendered(&self) -> bool {
        self.surrendered.load(Ordering::SeqCst)
    }

    pub fn renewed(&self, sent_at: Instant) {
        *self.valid_until.lock().unwrap_or_else(|e| e.into_inner()) = sent_at + self.ttl;
    }

    /// Whether a live change may start now: at least a quarter of the lease
    /// must be left, so the change is over before another node could take
    /// the run over.
    pub fn may_change(&self) -> Result<(), String> {
        let until = *self.valid_until.lock().unwrap_or_else(|e| e.into_inner());
        let left = until.saturating_duration_since(Instant::now());
        if left < self.ttl / 4 {
            self.surrendered.store(true, Ordering::SeqCst);
            return Err(format!(
                "this node's lease on run {} has {} ms left (it was not renewed in time: the node was paused or cannot reach the database); the change was not made, and another node will take the run over",
                self.fence.run_id,
                left.as_millis()
            ));
        }
        Ok(())
    }
}

/// Where a claimed run picks up, from its stored steps.
#[derive(Debug, PartialEq)]
pub enum PickUp {
    /// Execute from main step `from`; `steps` are the outputs so far;
    /// `gate_done` when the readiness approval was already given;
    /// `rerun` names a step that had started and is run again (idempotent
    /// kernel or dry-run).
    Continue {
        from: usize,
        steps: Value,
        gate_done: bool,
        rerun: Option<String>,
    },
    /// A non-idempotent step had started and has no result.
    NeedsAttention { step: String, why: String },
    /// The run was already failing (a failed step, on_failure in progress):
    /// end it failed without running anything more.
    Failed(String),
}

/// Decide where a run picks up. `main` lists the runbook's main step ids
/// in order; `idempotent(i)` says whether main step `i` may be re-run
/// (its kernel declares `idempotent`, or the run is a dry-run; approval
/// steps are always re-waited).
pub fn pick_up(
    main: &[&str],
    rows: &[StepRow],
    targets: &[crate::store::StepTargetRow],
    idempotent: &dyn Fn(usize) -> bool,
) -> PickUp {
    if let Some(failed) = rows.iter().find(|r| r.status == StepStatus::Failed) {
        return PickUp::Failed(format!(
            "step `{}` had failed when the engine stopped ({}); the on_failure steps that had not finished were not run again: check the targets",
            failed.step_id,
            failed.error.as_deref().unwrap_or("no error recorded")
        ));
    }
    if let Some(r) = rows.iter().find(|r| r.phase == Phase::OnFailure) {
        return PickUp::Failed(format!(
            "the engine stopped during on_failure step `{}`; the run had already failed and is not continued: check the targets",
            r.step_id
        ));
    }
    let gate_done = rows
        .iter()
        .any(|r| r.phase == Phase::Gate && r.status == StepStatus::Succeeded);
    let mut steps = serde_json::Map::new();
    for (i, id) in main.iter().enumerate() {
        let Some(row) = rows
            .iter()
            .find(|r| r.phase == Phase::Main && r.step_id == *id)
        else {
            return PickUp::Continue {
                from: i,
                steps: Value::Object(steps),
                gate_done,
                rerun: None,
            };
        };
        match row.status {
            StepStatus::Succeeded | StepStatus::Skipped => {
                let per_target: serde_json::Map<String, Value> = targets
                    .iter()
                    .filter(|t| t.step_id == row.step_id)
                    .map(|t| {
                        (
                            t.target.clone(),
                            json!({"status": t.status, "output": t.output, "error": t.error}),
                        )
                    })
                    .collect();
                steps.insert(
                    row.step_id.clone(),
                    json!({"status": row.status, "output": row.output, "targets": per_target}),
                );
            }
            StepStatus::Running if !idempotent(i) => {
                let done: Vec<&str> = targets
                    .iter()
                    .filter(|t| t.step_id == row.step_id && t.status == TargetStatus::Succeeded)
                    .map(|t| t.target.as_str())
                    .collect();
                return PickUp::NeedsAttention {
                    step: row.step_id.clone(),
                    why: format!(
                        "step `{}` ({}) had started and has no result: the engine stopped while it ran, and its kernel is not idempotent, so it is not run again automatically; targets with a recorded success: [{}]; check the targets and its host calls, then resume (run the step again), skip it, or abandon the run",
                        row.step_id,
                        row.kernel,
                        done.join(", ")
                    ),
                };
            }
            // An intent with an idempotent kernel, a person's `retry`, or
            // an approval still being waited for: run it (again).
            status => {
                return PickUp::Continue {
                    from: i,
                    steps: Value::Object(steps),
                    gate_done,
                    rerun: (status == StepStatus::Running).then(|| row.step_id.clone()),
                };
            }
        }
    }
    PickUp::Continue {
        from: main.len(),
        steps: Value::Object(steps),
        gate_done,
        rerun: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(id: &str, phase: &str, status: &str) -> StepRow {
        StepRow {
            run_id: "r".into(),
            step_id: id.into(),
            position: 0,
            phase: Phase::parse(phase).expect("a phase"),
            kernel: "k@1".into(),
            kernel_digest: None,
            status: StepStatus::parse(status).expect("a step status"),
            attempts: 1,
            targets: json!([]),
            input: None,
            output: Some(json!({"id": id})),
            error: None,
            logs: json!([]),
            started_at: None,
            finished_at: None,
            duration_ms: None,
        }
    }

    const MAIN: &[&str] = &["a", "b", "c"];

    #[test]
    fn the_dry_run_flush_settings_hold_at_their_edges() {
        let with = |ms: u64, records: u64| {
            NodeConfig {
                dry_run_flush_ms: ms,
                dry_run_flush_records: records,
                ..NodeConfig::default()
            }
            .resolved()
        };
        for (ms, records) in [(0, 1), (60_000, 10_000), (100, 256)] {
            let node = with(ms, records).expect("in range");
            let d = node.deferral();
            assert_eq!(
                (d.window, d.records),
                (Duration::from_millis(ms), records as usize)
            );
        }
        let e = with(60_001, 256).expect_err("window too long");
        assert!(
            e.contains("node.dry-run-flush-ms is 60001") && e.contains("between 0"),
            "{e}"
        );
        for records in [0, 10_001, u64::MAX] {
            let e = with(100, records).expect_err("records out of range");
            assert!(
                e.contains(&format!("node.dry-run-flush-records is {records}"))
                    && e.contains("between 1 and 10000"),
                "{e}"
            );
        }
    }

    #[test]
    fn a_fresh_run_starts_at_the_first_step() {
        assert_eq!(
            pick_up(MAIN, &[], &[], &|_| false),
            PickUp::Continue {
                from: 0,
                steps: json!({}),
                gate_done: false,
                rerun: None
            }
        );
    }

    #[test]
    fn finished_steps_are_kept_and_the_next_one_runs() {
        let rows = [row("a", "main", "succeeded"), row("b", "main", "skipped")];
        let PickUp::Continue { from, steps, .. } = pick_up(MAIN, &rows, &[], &|_| false) else {
            panic!("continues");
        };
        assert_eq!(from, 2);
        assert_eq!(steps["a"]["output"]["id"], "a");
        assert_eq!(steps["b"]["status"], "skipped");
    }

    #[test]
    fn an_intent_reruns_only_when_idempotent() {
        let rows = [row("a", "main", "succeeded"), row("b", "main", "running")];
        assert!(matches!(
            pick_up(MAIN, &rows, &[], &|i| i == 1),
            PickUp::Continue { from: 1, rerun: Some(ref s), .. } if s == "b"
        ));
        let PickUp::NeedsAttention { step, why } = pick_up(MAIN, &rows, &[], &|i| i != 1) else {
            panic!("needs attention");
        };
        assert_eq!(step, "b");
        assert!(why.contains("not idempotent"), "{why}");
    }

    #[test]
    fn a_persons_retry_or_skip_decides() {
        let rows = [row("a", "main", "retry")];
        assert!(matches!(
            pick_up(MAIN, &rows, &[], &|_| false),
            PickUp::Continue {
                from: 0,
                rerun: None,
                ..
            }
        ));
        let rows = [row("a", "main", "skipped")];
        assert!(matches!(
            pick_up(MAIN, &rows, &[], &|_| false),
            PickUp::Continue { from: 1, .. }
        ));
    }

    #[test]
    fn a_failing_run_ends_failed_and_the_gate_is_remembered() {
        let rows = [row("a", "main", "failed")];
        assert!(matches!(
            pick_up(MAIN, &rows, &[], &|_| true),
            PickUp::Failed(_)
        ));
        let rows = [row("d", "on_failure", "running")];
        assert!(matches!(
            pick_up(MAIN, &rows, &[], &|_| true),
            PickUp::Failed(_)
        ));
        let rows = [row("_gate", "gate", "succeeded")];
        assert!(matches!(
            pick_up(MAIN, &rows, &[], &|_| true),
            PickUp::Continue {
                gate_done: true,
                ..
            }
        ));
    }

    #[test]
    fn lease_timings_are_checked() {
        let ok = NodeConfig::default().resolved().expect("default is valid");
        assert!(ok.id.starts_with("node-"));
        let short = NodeConfig {
            lease_ms: MIN_LEASE_MS - 1,
            heartbeat_ms: 1,
            ..NodeConfig::default()
        };
        assert!(short.resolved().is_err());
        let edge = NodeConfig {
            lease_ms: MIN_LEASE_MS,
            heartbeat_ms: MIN_LEASE_MS / 3,
            ..NodeConfig::default()
        };
        assert!(edge.resolved().is_ok());
        let slow = NodeConfig {
            lease_ms: 3000,
            heartbeat_ms: 1001,
            ..NodeConfig::default()
        };
        assert!(slow.resolved().is_err());
    }

    #[test]
    fn a_lease_past_its_margin_refuses_changes() {
        let fence = Fence {
            run_id: "r".into(),
            owner: "n".into(),
            epoch: 1,
        };
        let lease = RunLease::new(fence.clone(), Duration::from_secs(60), Instant::now());
        assert!(lease.may_change().is_ok());
        let old = Instant::now()
            .checked_sub(Duration::from_secs(50))
            .expect("clock");
        let stale = RunLease::new(fence, Duration::from_secs(60), old);
        assert!(!stale.surrendered());
        let why = stale.may_change().expect_err("refused");
        assert!(why.contains("the change was not made"), "{why}");
        assert!(stale.surrendered(), "the node gives the run up");
    }
}
