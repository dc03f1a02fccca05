//! Drills and readiness: runbooks exercised on a schedule so that the engine
//! knows, for the exact code that would run, whether it works.
//!
//! - A runbook's `drill:` says when (`every` or `cron`, plus `jitter`), how
//!   (`mode`, `inputs`) and how fresh a pass must be (`max_age`).
//! - [`Scheduler::tick`] (called by `firedrill serve` every
//!   `server.drill-tick-ms`, and by tests with a [`FakeClock`]) starts the
//!   drills that are due. The due time lives in the store and is moved
//!   forward by a conditional write *before* the drill starts, so a restart
//!   or a second scheduler neither misses nor doubles a due drill (a drill
//!   missed while the server was down runs once, at the next tick). Never
//!   two drills of one runbook at once; the big red switch and the server's
//!   admission limits apply as to any run.
//! - [`readiness`] is computed from finished drills of the runbook's
//!   *current* version digest (which pins exact kernel versions, whose
//!   digests are also compared), so publishing a new version starts at
//!   `never-drilled` and rolling back to a version that passed is at once
//!   whatever that version's drills say.

use std::sync::Mutex;
use std::time::{Duration, SystemTime};

use serde::Serialize;
use serde_json::json;

use crate::audit::{Actor, NewEvent};
use crate::executor::{PreparedRun, RunError, RunRequest, RunbookSource, Service};
use crate::runbook::{Runbook, parse_runbook};
use crate::store::{Applied, Batch, RunStatus, RunbookRow, StoreError, Write};

/// The actor every drill runs as.
pub fn drill_actor() -> Actor {
    Actor::drill()
}

/// Where the scheduler's "now" comes from.
pub trait Clock: Send + Sync + std::fmt::Debug {
    fn now(&self) -> SystemTime;
}

/// The system clock.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> SystemTime {
        SystemTime::now()
    }
}

/// A clock tests move by hand.
#[derive(Debug)]
pub struct FakeClock(Mutex<SystemTime>);

impl FakeClock {
    pub fn new(at: SystemTime) -> Self {
        FakeClock(Mutex::new(at))
    }

    pub fn set(&self, at: SystemTime) {
        *self.0.lock().unwrap_or_else(|e| e.into_inner()) = at;
    }

    pub fn advance(&self, by: Duration) {
        let mut t = self.0.lock().unwrap_or_else(|e| e.into_inner());
        *t += by;
    }
}

impl Clock for FakeClock {
    fn now(&self) -> SystemTime {
        *self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
}

fn rfc3339(t: SystemTime) -> String {
    humantime::format_rfc3339_millis(t).to_string()
}

fn parse_time(text: &str) -> Option<SystemTime> {
    humantime::parse_rfc3339_weak(text).ok()
}

pub use crate::runbook::schedule::{cron_interval, next_slot, with_jitter};

/// How ready a runbook is for an emergency.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Readiness {
    /// A live drill of this exact code passed within max_age.
    Ready,
    /// Passed within max_age, but only in dry-run: less proven.
    DryRunOnly,
    /// The last pass is older than max_age.
    Stale,
    /// The last drill failed.
    Failing,
    /// No drill of this exact code has finished.
    NeverDrilled,
}

impl Readiness {
    pub fn as_str(self) -> &'static str {
        match self {
            Readiness::Ready => "ready",
            Readiness::DryRunOnly => "dry-run-only",
            Readiness::Stale => "stale",
            Readiness::Failing => "failing",
            Readiness::NeverDrilled => "never-drilled",
        }
    }
}

/// Readiness of a runbook's current version.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ReadinessRow {
    pub runbook: String,
    pub version: i64,
    pub digest: String,
    pub state: Readiness,
    /// Whether the runbook declares a drill at all.
    pub drilled: bool,
    pub max_age_s: Option<u64>,
    /// The newest finished drill of this version.
    pub last_drill_run: Option<String>,
    pub last_drill_at: Option<String>,
    pub last_drill_status: Option<String>,
    pub last_drill_mode: Option<String>,
    /// The newest passing drill, and its age now.
    pub last_pass_at: Option<String>,
    pub age_s: Option<u64>,
    pub last_failure: Option<String>,
    /// When the scheduler will start the next drill.
    pub next_due_at: Option<String>,
}

/// How many finished drills per runbook readiness looks back over.
const DRILL_HISTORY: i64 = 200;

/// Readiness of `row` (a runbook version) at `now`.
pub async fn readiness_of(
    service: &Service,
    row: &RunbookRow,
    now: SystemTime,
) -> Result<ReadinessRow, StoreError> {
    // Per live alert: the version a run already validated is not parsed again.
    let cached = service.validated_of(&row.digest);
    let parsed = match &cached {
        Some(_) => None,
        None => parse_runbook(&row.name, &row.source).ok(),
    };
    let runbook = cached.as_ref().map(|v| &v.runbook).or(parsed.as_ref());
    let drill = runbook.and_then(|r| r.drill.clone());
    let max_age = drill.as_ref().map(|d| d.max_age.0);
    // The kernel digests this version resolves to now (immutable versions,
    // so this only differs from a drill's record if the store was altered).
    let kernels = match runbook {
        Some(rb) => service.kernel_digests(rb).await?,
        None => None,
    };
    let drills: Vec<_> = service
        .store()
        .drill_runs(&row.name, &row.digest, DRILL_HISTORY)
        .await?
        .into_iter()
        .filter(|r| kernels.as_ref().is_none_or(|k| *k == r.kernels))
        .collect();
    let last = drills.first();
    let finished_at = |r: &crate::store::RunRow| r.finished_at.clone().unwrap_or_default();
    let fresh = |r: &&crate::store::RunRow| {
        let at = r.finished_at.as_deref().and_then(parse_time);
        match (at, max_age) {
            (Some(at), Some(max)) => now.duration_since(at).unwrap_or_default() <= max,
            _ => false,
        }
    };
    let passes: Vec<_> = drills
        .iter()
        .filter(|r| r.status == RunStatus::Succeeded)
        .collect();
    let state = match last {
        None => Readiness::NeverDrilled,
        Some(l) if l.status == RunStatus::Failed => Readiness::Failing,
        Some(_) if passes.iter().any(|r| r.mode == "live" && fresh(r)) => Readiness::Ready,
        Some(_) if passes.iter().any(fresh) => Readiness::DryRunOnly,
        Some(_) => Readiness::Stale,
    };
    let last_pass = passes.first();
    let schedule = service
        .store()
        .drill_schedules()
        .await?
        .into_iter()
        .find(|s| s.runbook == row.name);
    Ok(ReadinessRow {
        runbook: row.name.clone(),
        version: row.version,
        digest: row.digest.clone(),
        state,
        drilled: drill.is_some(),
        max_age_s: max_age.map(|m| m.as_secs()),
        last_drill_run: last.map(|r| r.id.clone()),
        last_drill_at: last.map(finished_at),
        last_drill_status: last.map(|r| r.status.as_str().to_string()),
        last_drill_mode: last.map(|r| r.mode.clone()),
        last_pass_at: last_pass.map(|r| finished_at(r)),
        age_s: last_pass
            .and_then(|r| r.finished_at.as_deref().and_then(parse_time))
            .map(|at| now.duration_since(at).unwrap_or_default().as_secs()),
        last_failure: drills
            .iter()
            .find(|r| r.status == RunStatus::Failed)
            .and_then(|r| r.error.clone()),
        next_due_at: schedule.map(|s| s.next_due_at),
    })
}

/// Readiness of every runbook's current version.
pub async fn readiness(
    service: &Service,
    now: SystemTime,
) -> Result<Vec<ReadinessRow>, StoreError> {
    let mut out = Vec::new();
    for row in service.store().current_runbooks().await? {
        out.push(readiness_of(service, &row, now).await?);
    }
    Ok(out)
}

/// For a live run of `source`: `None` when it is `ready` (or cannot run
/// at all, which the run itself reports), else what would run and its
/// readiness (a draft file is never drilled).
pub async fn untested(
    service: &Service,
    source: &RunbookSource,
    now: SystemTime,
) -> Result<Option<(String, Readiness)>, StoreError> {
    let row = match source {
        RunbookSource::Published { name, version } => {
            service.store().runbook(name, *version).await?
        }
        RunbookSource::File { path, text } => match service.validate(path, text).await {
            Ok(valid) => service
                .store()
                .runbook(&valid.runbook.name, Some(i64::from(valid.runbook.version)))
                .await?
                .filter(|r| r.digest == valid.digest),
            Err(_) => return Ok(None),
        },
    };
    let (what, state) = match &row {
        Some(row) => (
            format!("{}@{}", row.name, row.version),
            readiness_of(service, row, now).await?.state,
        ),
        None if matches!(source, RunbookSource::Published { .. }) => return Ok(None),
        None => ("this draft".to_string(), Readiness::NeverDrilled),
    };
    Ok((state != Readiness::Ready).then_some((what, state)))
}

/// Record that `actor` ran `what` live although it is `state` (audited as
/// `run.untested`).
pub async fn record_forced(
    service: &Service,
    actor: &Actor,
    what: &str,
    state: Readiness,
) -> Result<(), StoreError> {
    service
        .store()
        .apply(
            Batch::new().event(
                NewEvent::new(
                    actor,
                    crate::audit::Action::RunUntested,
                    format!("runbook:{what}"),
                )
                .outcome(state.as_str())
                .details(json!({"forced": true, "readiness": state.as_str()})),
            ),
        )
        .await?;
    Ok(())
}

/// A drill of the current version of `runbook`, ready to execute.
pub async fn prepare_drill(service: &Service, runbook: &str) -> Result<PreparedRun, RunError> {
    let row = service
        .store()
        .runbook(runbook, None)
        .await?
        .ok_or_else(|| RunError::NotFound(runbook.to_string()))?;
    let rb: Runbook = parse_runbook(&row.name, &row.source)
        .map_err(|e| RunError::Stored(row.name.clone(), e.to_string()))?;
    let drill = rb.drill.ok_or_else(|| {
        RunError::Stored(
            row.name.clone(),
            "it declares no `drill:`; add one (schedule, mode, inputs, max_age) and publish it"
                .into(),
        )
    })?;
    let inputs = drill
        .inputs
        .iter()
        .map(|(k, v)| {
            let text = match v {
                serde_json::Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            (k.clone(), text)
        })
        .collect();
    service
        .prepare(RunRequest {
            source: RunbookSource::Published {
                name: row.name.clone(),
                version: Some(row.version),
            },
            mode: drill.mode(),
            actor: drill_actor(),
            inputs,
        })
        .await
}

/// What one tick did for one runbook.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "outcome", rename_all = "kebab-case")]
pub enum DrillEvent {
    /// First seen: the first drill is scheduled.
    Scheduled {
        runbook: String,
        due: String,
    },
    Started {
        runbook: String,
        run_id: String,
    },
    /// Due, but a drill of this runbook is still running: retried next tick.
    Busy {
        runbook: String,
    },
    /// Due, but refused (switch, invalid inputs, admission): recorded and
    /// the next slot scheduled (admission refusals retry next tick).
    Skipped {
        runbook: String,
        reason: String,
    },
}

/// Starts due drills.
#[derive(Debug, Clone)]
pub struct Scheduler {
    service: Service,
    clock: std::sync::Arc<dyn Clock>,
}

/// How drills and alerts start runs: queue one (the server's admission,
/// with its limits) and answer its id, or why not.
pub type Admit = dyn Fn(PreparedRun) -> futures::future::BoxFuture<'static, Result<String, String>>
    + Send
    + Sync;

impl Scheduler {
    pub fn new(service: Service, clock: std::sync::Arc<dyn Clock>) -> Self {
        Scheduler { service, clock }
    }

    pub fn now(&self) -> SystemTime {
        self.clock.now()
    }

    /// Start every due drill through `admit`.
    pub async fn tick(&self, admit: &Admit) -> Result<Vec<DrillEvent>, StoreError> {
        let store = self.service.store();
        let now = self.clock.now();
        let schedules = store.drill_schedules().await?;
        let mut events = Vec::new();
        for row in store.current_runbooks().await? {
            let Some(drill) = parse_runbook(&row.name, &row.source)
                .ok()
                .and_then(|r| r.drill)
            else {
                continue;
            };
            let runbook = row.name.clone();
            let Some(schedule) = schedules.iter().find(|s| s.runbook == runbook) else {
                let due = rfc3339(with_jitter(&drill, now));
                store
                    .apply(Batch::new().write(Write::ScheduleDrill {
                        runbook: runbook.clone(),
                        expect_due: None,
                        next_due_at: due.clone(),
                        last_run_id: None,
                    }))
                    .await?;
                events.push(DrillEvent::Scheduled { runbook, due });
                continue;
            };
            let due = parse_time(&schedule.next_due_at).unwrap_or(now);
            if due > now {
                continue;
            }
            if store.drill_running(&runbook).await? {
                events.push(DrillEvent::Busy { runbook });
                continue;
            }
            let next = rfc3339(with_jitter(&drill, next_slot(&drill, due, now)));
            let prepared = match prepare_drill(&self.service, &runbook).await {
                Ok(p) => Ok(p),
                Err(RunError::Store(e)) => return Err(e),
                Err(e) => Err(e.to_string()),
            };
            let run_id = prepared.as_ref().ok().map(|p| p.id.clone());
            // Claim this due time first: one tick, one node, one drill.
            let claimed = store
                .apply(Batch::new().write(Write::ScheduleDrill {
                    runbook: runbook.clone(),
                    expect_due: Some(schedule.next_due_at.clone()),
                    next_due_at: next.clone(),
                    last_run_id: run_id,
                }))
                .await?;
            if claimed == Applied::Stale {
                continue;
            }
            let outcome = match prepared {
                Ok(p) => match admit(p).await {
                    Ok(run_id) => Ok(run_id),
                    Err(reason) => {
                        // Not admitted (server busy): due again at the next tick.
                        store
                            .apply(Batch::new().write(Write::ScheduleDrill {
                                runbook: runbook.clone(),
                                expect_due: Some(next.clone()),
                                next_due_at: schedule.next_due_at.clone(),
                                last_run_id: None,
                            }))
                            .await?;
                        Err(reason)
                    }
                },
                Err(reason) => Err(reason),
            };
            let event = match outcome {
                Ok(run_id) => DrillEvent::Started { runbook, run_id },
                Err(reason) => {
                    store
                        .apply(
                            Batch::new().event(
                                NewEvent::new(
                                    &drill_actor(),
                                    crate::audit::Action::DrillSkipped,
                                    format!("runbook:{runbook}"),
                                )
                                .outcome("skipped")
                                .details(json!({"reason": reason, "due": schedule.next_due_at})),
                            ),
                        )
                        .await?;
                    tracing::warn!(runbook = %runbook, reason = %reason, "drill skipped");
                    DrillEvent::Skipped { runbook, reason }
                }
            };
            events.push(event);
        }
        Ok(events)
    }
}
