//! [`AppState`]: what every handler shares (the service, the settings, the
//! in-flight budgets, the node's worker), and admission of runs.

use std::collections::HashMap;
use std::num::NonZeroU32;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::Semaphore;

use super::config::ServerConfig;
use super::error::ApiError;
use crate::executor::{PreparedRun, Service};
use crate::metrics::Metrics;
use crate::store::{Batch, Write};

/// What handlers share.
#[derive(Debug, Clone)]
pub struct AppState {
    pub service: Service,
    pub config: Arc<ServerConfig>,
    pub metrics: Arc<Metrics>,
    pub(super) in_flight: Arc<Semaphore>,
    /// Requests without a live token in progress (`max-in-flight-unauthenticated`).
    pub(super) unauthenticated: Arc<Semaphore>,
    /// PagerDuty event ids handled recently (`pagerduty-replay-window`).
    pub(super) pagerduty_seen: Arc<Mutex<RecentIds>>,
    /// Refusals audited per token in the current minute
    /// (`refusals-audited-per-minute`): token id -> (minute, count).
    pub(super) refusals: Arc<Mutex<HashMap<String, (u64, u32)>>>,
    /// Live run streams open per token (`max-event-streams-per-token`).
    pub(super) streams_per_token: Arc<Mutex<HashMap<String, usize>>>,
    /// Live run streams open (`max-event-streams`).
    pub(super) event_streams: Arc<Semaphore>,
    /// This node's worker (`max-concurrent-runs` run slots).
    pub(super) worker: crate::executor::Worker,
    /// Runs alerts may start (`trigger-runs-per-minute`, per node).
    pub(super) trigger_rate: Arc<governor::DefaultDirectRateLimiter>,
    /// "Now" for drills and readiness.
    pub clock: Arc<dyn crate::drill::Clock>,
    /// The audit log's checkpointer and witnesses, when `serve` runs them.
    pub tlog: Option<Arc<crate::tlog::serve::Status>>,
    /// Compiled triggers and the last unmatched alerts.
    pub alerts: Arc<crate::alerts::Alerts>,
}

/// The most recent ids, up to a fixed number (oldest forgotten first).
#[derive(Debug)]
pub(super) struct RecentIds {
    capacity: usize,
    order: std::collections::VecDeque<String>,
    set: std::collections::HashSet<String>,
}

impl RecentIds {
    pub(super) fn new(capacity: usize) -> Self {
        RecentIds {
            capacity,
            order: std::collections::VecDeque::new(),
            set: std::collections::HashSet::new(),
        }
    }

    pub(super) fn contains(&self, id: &str) -> bool {
        self.set.contains(id)
    }

    pub(super) fn insert(&mut self, id: String) {
        if self.capacity == 0 || !self.set.insert(id.clone()) {
            return;
        }
        self.order.push_back(id);
        while self.order.len() > self.capacity {
            if let Some(old) = self.order.pop_front() {
                self.set.remove(&old);
            }
        }
    }
}

/// One open live run stream of a token; given back when dropped.
#[derive(Debug)]
pub(crate) struct StreamSlot {
    token: String,
    open: Arc<Mutex<HashMap<String, usize>>>,
}

impl Drop for StreamSlot {
    fn drop(&mut self) {
        let mut open = lock(&self.open);
        if let Some(n) = open.get_mut(&self.token) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                open.remove(&self.token);
            }
        }
    }
}

/// The drill scheduler's singleton lease: one node ticks at a time.
pub const SCHEDULER_LEASE: &str = "drill-scheduler";

impl AppState {
    pub fn new(service: Service, config: ServerConfig) -> Self {
        Self::with_clock(service, config, Arc::new(crate::drill::SystemClock))
    }

    /// As [`AppState::new`], with drills and readiness timed by `clock`.
    pub fn with_clock(
        service: Service,
        config: ServerConfig,
        clock: Arc<dyn crate::drill::Clock>,
    ) -> Self {
        AppState {
            clock,
            tlog: None,
            alerts: Arc::new(crate::alerts::Alerts::new(config.unmatched_alerts_kept)),
            in_flight: Arc::new(Semaphore::new(config.max_in_flight.max(1))),
            unauthenticated: Arc::new(Semaphore::new(config.max_in_flight_unauthenticated.max(1))),
            streams_per_token: Arc::new(Mutex::new(HashMap::new())),
            refusals: Arc::new(Mutex::new(HashMap::new())),
            pagerduty_seen: Arc::new(Mutex::new(RecentIds::new(config.pagerduty_replay_window))),
            event_streams: Arc::new(Semaphore::new(config.max_event_streams)),
            worker: crate::executor::Worker::new(service.clone(), config.max_concurrent_runs),
            trigger_rate: Arc::new(governor::RateLimiter::direct(governor::Quota::per_minute(
                NonZeroU32::new(config.trigger_runs_per_minute).unwrap_or(NonZeroU32::MIN),
            ))),
            metrics: service.metrics().clone(),
            config: Arc::new(config),
            service,
        }
    }

    /// Whether another refusal of token `id` may be audited this minute
    /// (`refusals-audited-per-minute`); takes it if so.
    pub(super) fn refusal_budget(&self, id: &str) -> bool {
        let minute = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs() / 60);
        let mut seen = lock(&self.refusals);
        seen.retain(|_, (m, _)| *m == minute);
        let (m, n) = seen.entry(id.to_string()).or_insert((minute, 0));
        *m = minute;
        if *n >= self.config.refusals_audited_per_minute {
            return false;
        }
        *n += 1;
        true
    }

    /// Whether PagerDuty event `id` was handled recently on this node.
    pub(crate) fn pagerduty_seen(&self, id: &str) -> bool {
        lock(&self.pagerduty_seen).contains(id)
    }

    /// Remember that PagerDuty event `id` was handled.
    pub(crate) fn remember_pagerduty(&self, id: String) {
        lock(&self.pagerduty_seen).insert(id);
    }

    /// Take one of `token`'s live run streams (`max-event-streams-per-token`);
    /// `None` when it holds them all. The stream is given back on drop.
    pub(crate) fn stream_slot(&self, token: &str) -> Option<StreamSlot> {
        let mut open = lock(&self.streams_per_token);
        let n = open.entry(token.to_string()).or_insert(0);
        if *n >= self.config.max_event_streams_per_token.max(1) {
            return None;
        }
        *n += 1;
        Some(StreamSlot {
            token: token.to_string(),
            open: self.streams_per_token.clone(),
        })
    }

    /// Runs this node is executing.
    pub fn executing_runs(&self) -> usize {
        self.worker.executing()
    }

    /// Whether requests are being shed right now.
    pub fn shedding(&self) -> bool {
        self.in_flight.available_permits() == 0
    }

    /// Admit a prepared run, or refuse with 429 when the queue is full:
    /// with a free run slot here, claim it in the same write and execute it
    /// at once; otherwise queue it in the store (the first node with a free
    /// slot claims it). Either way it survives a crash of this node (a
    /// claimed run is taken over once its lease expires).
    pub async fn admit(&self, run: PreparedRun) -> Result<String, ApiError> {
        let max_active =
            (self.config.max_concurrent_runs.max(1) + self.config.max_queued_runs) as u64;
        let max_per_runbook = self.config.max_runs_per_runbook.max(1) as u64;
        let limits = Some((max_active, max_per_runbook));
        // A free slot here: admitted and claimed in one write, and executed
        // at once (no queue round trip, nothing read back). Otherwise
        // queued, for the first node with a free slot.
        let admitted = match self.worker.try_slot() {
            // On a task of its own: a caller that goes away (a timeout, a
            // disconnect) after the write was sent cannot leave the run
            // claimed here and not executed.
            Some(slot) => {
                let (service, worker) = (self.service.clone(), self.worker.clone());
                let task = tokio::spawn(async move {
                    let started = service.admit_claimed(run, limits).await?;
                    let id = started.run_id().to_string();
                    worker.execute_started(slot, started);
                    Ok(id)
                });
                match task.await {
                    Ok(admitted) => admitted,
                    Err(e) => {
                        return Err(ApiError::internal(format!(
                            "the admission task failed: {e}"
                        )));
                    }
                }
            }
            None => self.service.enqueue(run, limits).await.inspect(|_| {
                self.worker.wake();
            }),
        };
        admitted.map_err(|e| {
            if let crate::executor::RunError::Busy(why) = &e {
                self.metrics.shed(why.shed_reason());
            }
            e.into()
        })
    }

    /// Admit a run an alert started: within `trigger-runs-per-minute`,
    /// then as [`AppState::admit`].
    pub async fn admit_triggered(&self, run: PreparedRun) -> Result<String, ApiError> {
        if self.trigger_rate.check().is_err() {
            self.metrics.shed("trigger-rate");
            return Err(ApiError::unavailable(format!(
                "alerts started {} runs in the last minute (server.trigger-runs-per-minute); the alert was not acted on and the sender should retry",
                self.config.trigger_runs_per_minute
            )));
        }
        self.admit(run).await
    }

    /// The drill scheduler, starting drills through this server's admission.
    pub fn scheduler(&self) -> crate::drill::Scheduler {
        crate::drill::Scheduler::new(self.service.clone(), self.clock.clone())
    }

    /// One scheduler tick: start the drills that are due, if this node
    /// holds the scheduler lease (one node ticks at a time).
    pub async fn drill_tick(
        &self,
    ) -> Result<Vec<crate::drill::DrillEvent>, crate::store::StoreError> {
        let node = self.service.node();
        let held = self
            .service
            .store()
            .apply(Batch::new().write(Write::HoldLease {
                name: SCHEDULER_LEASE.into(),
                owner: node.id.clone(),
                lease_ms: node.lease_ms_i64(),
            }))
            .await?;
        if held != crate::store::Applied::Done {
            return Ok(Vec::new());
        }
        let admit_state = self.clone();
        let admit =
            move |run: PreparedRun| -> futures::future::BoxFuture<'static, Result<String, String>> {
                let state = admit_state.clone();
                Box::pin(async move { state.admit(run).await.map_err(|e| e.message) })
            };
        let events = self.scheduler().tick(&admit).await?;
        for e in &events {
            if let crate::drill::DrillEvent::Skipped { .. } = e {
                self.metrics.inc("firedrill_drills_skipped_total", &[]);
            }
        }
        Ok(events)
    }

    /// Start this node's worker unless it runs already (`serve` starts it;
    /// a run queued here does too, for states used without `serve`).
    pub fn ensure_worker(&self) {
        self.worker.wake();
    }

    /// Stop claiming runs, wait for the runs this server is executing up
    /// to the grace period, and record the rest as interrupted. Returns
    /// how many were interrupted.
    pub async fn drain_runs(&self) -> usize {
        self.worker
            .drain(Duration::from_millis(self.config.shutdown_grace_ms))
            .await
    }
}

pub(super) fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}
