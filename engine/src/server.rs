//! `firedrill serve`: the HTTP API (axum) in front of the same [`Service`]
//! the CLI uses.
//!
//! Admission control, every limit a `[server]` key: request bodies are
//! capped (`body-bytes`), each request has a deadline (`request-timeout-ms`),
//! requests in flight are capped (`max-in-flight`: beyond it, 503 with
//! Retry-After, health checks excepted), and runs admitted through the API
//! are bounded (`max-concurrent-runs` executing, `max-queued-runs` waiting:
//! beyond that, 429). Nothing queues without bound.
//!
//! Access: every `/api` and `/metrics` request needs a bearer token
//! (`firedrill token create`); its role decides what it may do (see
//! [`crate::auth`]), and its name is the actor in the audit log. 401 when
//! the token is missing or unknown, 403 when the role does not allow the
//! action, 404 for runbooks and runs a runbook-limited token cannot see.

mod api;
mod console;
mod events;
mod manage;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::num::NonZeroU32;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use tokio::sync::{Notify, Semaphore};

use crate::audit::now_rfc3339;
use crate::executor::{PreparedRun, Service};
use crate::store::{Batch, RunStatus, Write};

pub use crate::metrics::Metrics;
pub use api::{ApiError, OPENAPI};

/// `[server]` in `firedrill.toml`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case", default)]
pub struct ServerConfig {
    /// Address to listen on. Default `127.0.0.1:8080` (loopback: put a TLS
    /// proxy in front to expose it).
    pub listen: String,
    /// Largest JSON request body, in bytes. Default 256 KiB.
    pub body_bytes: usize,
    /// Largest alert webhook body, in bytes. Default 1 MiB.
    pub webhook_body_bytes: usize,
    /// Deadline of one request, in milliseconds. Default 30,000.
    pub request_timeout_ms: u64,
    /// Requests being handled at once; more are shed with 503. Default 256.
    pub max_in_flight: usize,
    /// Runs started through the API executing at once. Default 16.
    pub max_concurrent_runs: usize,
    /// Runs accepted and waiting for a slot; more are refused with 429. Default 64.
    pub max_queued_runs: usize,
    /// On shutdown, how long runs in progress may take to finish before
    /// they are recorded as interrupted, in milliseconds. Default 30,000.
    pub shutdown_grace_ms: u64,
    /// Largest kernel upload (`POST /api/v1/kernels`), in bytes. Default 16 MiB.
    pub kernel_upload_bytes: usize,
    /// Runs of one runbook admitted at once (executing + queued); more are
    /// refused with 429. Default 4.
    pub max_runs_per_runbook: usize,
    /// Runs that alerts may start per minute, over every source and
    /// runbook (a token bucket with this burst); beyond it alerts are shed
    /// with 503 so the sender retries. At least 1. Default 30.
    pub trigger_runs_per_minute: u32,
    /// Run the drill scheduler (see `drill:` in runbooks). Default true.
    pub drills: bool,
    /// How often the drill scheduler looks for due drills, in
    /// milliseconds. Default 1,000.
    pub drill_tick_ms: u64,
    /// Names of the secrets (from `[secrets]`) that PagerDuty webhook
    /// signatures are checked against; two during a rotation. Empty (the
    /// default) refuses every PagerDuty request.
    pub pagerduty_secrets: Vec<String>,
    /// Mark the console's session cookie `Secure` (sent over HTTPS only).
    /// Set it when a TLS proxy is in front. Default false.
    pub secure_cookie: bool,
    /// How long a console sign-in lasts (the cookie's Max-Age), in
    /// seconds; revoking the token ends it at once. Default 43,200 (12 h).
    pub session_ttl_s: u64,
    /// Live run streams (`GET /api/v1/runs/{id}/events`) open at once;
    /// more are refused with 503. Default 64.
    pub max_event_streams: usize,
    /// How often a live run stream looks for changes, in milliseconds.
    /// Default 250.
    pub event_poll_ms: u64,
    /// The longest a live run stream stays open, in seconds (the console
    /// reconnects). Default 3,600.
    pub event_stream_max_s: u64,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            listen: "127.0.0.1:8080".into(),
            body_bytes: 256 << 10,
            webhook_body_bytes: 1 << 20,
            request_timeout_ms: 30_000,
            max_in_flight: 256,
            max_concurrent_runs: 16,
            max_queued_runs: 64,
            shutdown_grace_ms: 30_000,
            kernel_upload_bytes: 16 << 20,
            max_runs_per_runbook: 4,
            trigger_runs_per_minute: 30,
            pagerduty_secrets: Vec::new(),
            drills: true,
            drill_tick_ms: 1000,
            secure_cookie: false,
            session_ttl_s: 43_200,
            max_event_streams: 64,
            event_poll_ms: 250,
            event_stream_max_s: 3600,
        }
    }
}

/// Seconds a client is told to wait when shed.
const RETRY_AFTER_S: &str = "1";

/// What handlers share.
#[derive(Debug, Clone)]
pub struct AppState {
    pub service: Service,
    pub config: Arc<ServerConfig>,
    pub metrics: Arc<Metrics>,
    in_flight: Arc<Semaphore>,
    /// Live run streams open (`max-event-streams`).
    event_streams: Arc<Semaphore>,
    /// This node's run slots (`max-concurrent-runs`).
    run_slots: Arc<Semaphore>,
    /// Runs this node is executing: id -> fencing epoch.
    active: Arc<Mutex<HashMap<String, i64>>>,
    /// Wakes this node's worker when a run was queued here.
    work: Arc<Notify>,
    /// Whether this state's worker was started; it stops on `stop`.
    worker_started: Arc<std::sync::atomic::AtomicBool>,
    stop: Arc<tokio::sync::watch::Sender<bool>>,
    /// Runs alerts may start (`trigger-runs-per-minute`, per node).
    trigger_rate: Arc<governor::DefaultDirectRateLimiter>,
    /// "Now" for drills and readiness.
    pub clock: Arc<dyn crate::drill::Clock>,
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
            in_flight: Arc::new(Semaphore::new(config.max_in_flight.max(1))),
            event_streams: Arc::new(Semaphore::new(config.max_event_streams)),
            run_slots: Arc::new(Semaphore::new(config.max_concurrent_runs.max(1))),
            active: Arc::new(Mutex::new(HashMap::new())),
            work: Arc::new(Notify::new()),
            worker_started: Arc::new(std::sync::atomic::AtomicBool::new(false)),
            stop: Arc::new(tokio::sync::watch::channel(false).0),
            trigger_rate: Arc::new(governor::RateLimiter::direct(governor::Quota::per_minute(
                NonZeroU32::new(config.trigger_runs_per_minute).unwrap_or(NonZeroU32::MIN),
            ))),
            metrics: service.metrics().clone(),
            config: Arc::new(config),
            service,
        }
    }

    /// Runs this node is executing.
    pub fn executing_runs(&self) -> usize {
        lock(&self.active).len()
    }

    /// Whether requests are being shed right now.
    pub fn shedding(&self) -> bool {
        self.in_flight.available_permits() == 0
    }

    /// Admit a prepared run: queue it in the store (a node claims it), or
    /// refuse with 429 when the queue is full. Queued, it survives a crash
    /// of this node.
    pub async fn admit(&self, run: PreparedRun) -> Result<String, ApiError> {
        let max_active =
            (self.config.max_concurrent_runs.max(1) + self.config.max_queued_runs) as u64;
        let max_per_runbook = self.config.max_runs_per_runbook.max(1) as u64;
        match self
            .service
            .enqueue(run, Some((max_active, max_per_runbook)))
            .await
        {
            Ok(id) => {
                self.ensure_worker();
                self.work.notify_one();
                Ok(id)
            }
            Err(crate::executor::RunError::Busy(why)) => {
                self.metrics.shed(if why.contains("max-runs-per-runbook") {
                    "runbook-busy"
                } else {
                    "run-queue-full"
                });
                Err(ApiError::too_many(why))
            }
            Err(e) => Err(ApiError::internal(e)),
        }
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
    /// an admission does too, for states used without `serve`).
    pub fn ensure_worker(&self) {
        if self
            .worker_started
            .swap(true, std::sync::atomic::Ordering::SeqCst)
        {
            return;
        }
        let state = self.clone();
        let stopped = self.stop.subscribe();
        tokio::spawn(async move { state.work(stopped).await });
    }

    /// This node's worker: while it has a free run slot, claim a run (one
    /// whose node stopped renewing its lease first, then the oldest queued
    /// one) and execute it. Idle, it looks again every `node.poll-ms`, or
    /// at once when a run is queued here.
    async fn work(&self, mut stopped: tokio::sync::watch::Receiver<bool>) {
        let poll = Duration::from_millis(self.service.node().poll_ms);
        let mut last_takeover: Option<Instant> = None;
        loop {
            let permit = tokio::select! {
                p = self.run_slots.clone().acquire_owned() => match p { Ok(p) => p, Err(_) => return },
                _ = stopped.changed() => return,
            };
            let mut claim = None;
            if last_takeover.is_none_or(|t| t.elapsed() >= poll) {
                last_takeover = Some(Instant::now());
                claim = self.service.take_over().await.unwrap_or_else(|e| {
                    tracing::error!(error = %e, "cannot look for runs to take over; retrying");
                    None
                });
            }
            if claim.is_none() {
                claim = self.service.claim_queued(None).await.unwrap_or_else(|e| {
                    tracing::error!(error = %e, "cannot claim a queued run; retrying");
                    None
                });
            }
            let Some(claim) = claim else {
                drop(permit);
                tokio::select! {
                    () = self.work.notified() => {}
                    () = tokio::time::sleep(poll) => {}
                    _ = stopped.changed() => return,
                }
                continue;
            };
            if let Some(previous) = &claim.previous {
                self.metrics.inc("firedrill_runs_taken_over_total", &[]);
                tracing::warn!(run_id = %claim.run_id, previous = %previous, "taking over a run whose node stopped renewing its lease");
            }
            lock(&self.active).insert(claim.run_id.clone(), claim.epoch);
            let state = self.clone();
            tokio::spawn(async move {
                let id = claim.run_id.clone();
                if let Err(e) = state.service.execute_claimed(claim).await {
                    tracing::error!(run_id = %id, error = %e, "run could not be executed");
                }
                lock(&state.active).remove(&id);
                drop(permit);
            });
        }
    }

    /// Wait for the runs this server is executing, up to the grace period;
    /// record the rest as interrupted. Returns how many were interrupted.
    pub async fn drain_runs(&self) -> usize {
        let deadline = Instant::now() + Duration::from_millis(self.config.shutdown_grace_ms);
        while Instant::now() < deadline && !lock(&self.active).is_empty() {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let left: Vec<(String, i64)> = lock(&self.active)
            .iter()
            .map(|(id, epoch)| (id.clone(), *epoch))
            .collect();
        let node = self.service.node().id.clone();
        for (id, epoch) in &left {
            let error = "firedrill serve shut down while this run was in progress; the step in flight may or may not have completed: check the targets before running it again".to_string();
            let batch = Batch::new()
                .write(Write::FinishRun {
                    id: id.clone(),
                    status: RunStatus::Interrupted,
                    error: Some(error.clone()),
                    finished_at: now_rfc3339(),
                })
                .event(
                    crate::audit::NewEvent::new(
                        &crate::audit::Actor {
                            kind: crate::audit::ActorKind::Scheduler,
                            id: format!("node:{node}"),
                        },
                        "run.interrupted",
                        format!("run:{id}"),
                    )
                    .outcome("interrupted")
                    .details(serde_json::json!({"error": error}))
                    .run(id),
                )
                .fenced(&crate::store::Fence {
                    run_id: id.clone(),
                    owner: node.clone(),
                    epoch: *epoch,
                });
            if let Err(e) = self.service.store().apply(batch).await {
                tracing::error!(run_id = %id, error = %e, "cannot record the run as interrupted");
            }
        }
        left.len()
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Shed requests beyond `max-in-flight` (health checks are never shed) and
/// bound each request by `request-timeout-ms`.
async fn admission(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let path = request.uri().path().to_string();
    if path == "/healthz" || path == "/readyz" {
        return next.run(request).await;
    }
    let Ok(_permit) = state.in_flight.clone().try_acquire_owned() else {
        state.metrics.shed("in-flight");
        return ApiError::unavailable(format!(
            "the server is handling {} requests already (server.max-in-flight); retry shortly",
            state.config.max_in_flight
        ))
        .into_response();
    };
    let timeout = Duration::from_millis(state.config.request_timeout_ms);
    let response = match tokio::time::timeout(timeout, next.run(request)).await {
        Ok(r) => r,
        Err(_) => ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "timeout",
            format!("the request did not finish within {timeout:?} (server.request-timeout-ms)"),
        )
        .into_response(),
    };
    state.metrics.response(response.status().as_u16());
    match response.status() {
        StatusCode::UNAUTHORIZED => state.metrics.denied("unauthenticated"),
        StatusCode::FORBIDDEN => state.metrics.denied("forbidden"),
        _ => {}
    }
    response
}

/// The whole application.
pub fn router(state: AppState) -> Router {
    let body_bytes = state.config.body_bytes;
    let webhooks = Router::new()
        .route(
            "/api/v1/alerts/alertmanager",
            axum::routing::post(api::alertmanager),
        )
        .route("/api/v1/alerts/generic", axum::routing::post(api::generic))
        .route(
            "/api/v1/alerts/pagerduty",
            axum::routing::post(api::pagerduty),
        )
        .layer(DefaultBodyLimit::max(state.config.webhook_body_bytes));
    let uploads =
        manage::upload_routes().layer(DefaultBodyLimit::max(state.config.kernel_upload_bytes));
    api::routes()
        .layer(DefaultBodyLimit::max(body_bytes))
        .merge(webhooks)
        .merge(uploads)
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            admission,
        ))
        .with_state(state)
}

/// Serve until `shutdown` resolves, then stop accepting, let requests and
/// runs in progress finish (up to the grace period), and return.
pub async fn serve(
    state: AppState,
    listener: tokio::net::TcpListener,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let addr: Option<SocketAddr> = listener.local_addr().ok();
    tracing::info!(?addr, "firedrill serve listening");
    let (stop, mut stopped) = tokio::sync::watch::channel(false);
    state.ensure_worker();
    let drills = state.config.drills.then(|| {
        let state = state.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(
                state.config.drill_tick_ms.max(10),
            ));
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = tick.tick() => {}
                    _ = stopped.changed() => break,
                }
                if let Err(e) = state.drill_tick().await {
                    tracing::error!(error = %e, "drill scheduler tick failed; retrying at the next tick");
                }
            }
        })
    });
    axum::serve(listener, router(state.clone()))
        .with_graceful_shutdown(shutdown)
        .await?;
    // Let a tick in progress finish (its writes are not cut in half).
    let _ = stop.send(true);
    if let Some(task) = drills {
        let _ = task.await;
    }
    let _ = state.stop.send(true);
    let interrupted = state.drain_runs().await;
    tracing::info!(interrupted, "firedrill serve stopped");
    Ok(())
}
