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
mod error;
mod events;
pub mod listen;
mod manage;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::num::NonZeroU32;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use tokio::sync::Semaphore;

use crate::executor::{PreparedRun, Service};
use crate::store::{Batch, Write};

pub use crate::metrics::Metrics;
pub use api::{ApiError, OPENAPI};

/// `[server]` in `firedrill.toml`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case", default)]
pub struct ServerConfig {
    /// Address to listen on. Default `127.0.0.1:8080` (loopback). On any
    /// other address, set `tls-cert` and `tls-key` (or put a TLS proxy in
    /// front): without them the server warns at start.
    pub listen: String,
    /// PEM file with the server's certificate chain (leaf first); with
    /// `tls-key`, the server speaks HTTPS only. Reloaded on SIGHUP.
    pub tls_cert: Option<std::path::PathBuf>,
    /// PEM file with the private key of `tls-cert`.
    pub tls_key: Option<std::path::PathBuf>,
    /// Connections open at once; more are closed as soon as they are
    /// accepted (and counted as shed `max-connections`). Keep it below the
    /// process's file-descriptor limit. Default 1,024.
    pub max_connections: usize,
    /// Connections one client address may hold open at once (so that one
    /// client cannot take every connection); more are closed as soon as
    /// they are accepted. Behind a proxy every client has the proxy's
    /// address: raise it or set 0 (no per-address limit). Default 128.
    pub max_connections_per_ip: usize,
    /// How long a client may take to send a request's headers (and, with
    /// TLS, to finish the handshake) before the connection is closed, in
    /// milliseconds. Default 10,000.
    pub header_read_timeout_ms: u64,
    /// A connection on which no byte moved either way for this long is
    /// closed (a request in progress still gets its answer), in
    /// milliseconds. Default 60,000.
    pub idle_timeout_ms: u64,
    /// Requests without a valid token (PagerDuty's signed webhook, console
    /// sign-in, the console's pages, and anything presenting no or a bad
    /// token) handled at once; more are shed with 503. They never count
    /// against `max-in-flight`. Default 32.
    pub max_in_flight_unauthenticated: usize,
    /// Deadline of a request without a valid token, body included, in
    /// milliseconds. Default 5,000.
    pub unauthenticated_timeout_ms: u64,
    /// Largest JSON request body, in bytes. Default 256 KiB.
    pub body_bytes: usize,
    /// Largest alert webhook body, in bytes. Default 1 MiB.
    pub webhook_body_bytes: usize,
    /// Deadline of one request, in milliseconds. Default 30,000.
    pub request_timeout_ms: u64,
    /// Requests with a valid token being handled at once; more are shed
    /// with 503. The switch (`/api/v1/switch`) and health checks are never
    /// shed. Default 256.
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
    /// PagerDuty event ids each node remembers, to recognise a replayed
    /// delivery (answered 200, counted in
    /// `firedrill_pagerduty_replays_total`, nothing recorded). Per node, not
    /// kept across restarts (a replayed `incident.triggered` is still
    /// deduplicated by its alert claim). 0 remembers none. Default 10,000.
    pub pagerduty_replay_window: usize,
    /// Refusals (403, 409) of one token recorded in the audit log per
    /// minute; more are only counted (`firedrill_refusals_unaudited_total`),
    /// so that a token hammering what it may not do cannot fill the log.
    /// Default 30.
    pub refusals_audited_per_minute: u32,
    /// Mark the console's session cookie `Secure` (sent over HTTPS only).
    /// Set it when a TLS proxy is in front. Default false.
    pub secure_cookie: bool,
    /// How long a console sign-in lasts (the cookie's Max-Age), in
    /// seconds; revoking the token ends it at once. Default 43,200 (12 h).
    pub session_ttl_s: u64,
    /// Live run streams (`GET /api/v1/runs/{id}/events`) open at once;
    /// more are refused with 503. Default 64.
    pub max_event_streams: usize,
    /// Live run streams one token (or console session's token) may hold
    /// open at once; more are refused with 429. Default 8.
    pub max_event_streams_per_token: usize,
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
            tls_cert: None,
            tls_key: None,
            max_connections: 1024,
            max_connections_per_ip: 128,
            header_read_timeout_ms: 10_000,
            idle_timeout_ms: 60_000,
            max_in_flight_unauthenticated: 32,
            unauthenticated_timeout_ms: 5_000,
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
            pagerduty_replay_window: 10_000,
            refusals_audited_per_minute: 30,
            drills: true,
            drill_tick_ms: 1000,
            secure_cookie: false,
            session_ttl_s: 43_200,
            max_event_streams: 64,
            max_event_streams_per_token: 8,
            event_poll_ms: 250,
            event_stream_max_s: 3600,
        }
    }
}

impl ServerConfig {
    /// Every setting that cannot work, said at start rather than found
    /// under load.
    pub fn check(&self) -> Result<(), String> {
        let mut problems = Vec::new();
        match (&self.tls_cert, &self.tls_key) {
            (Some(_), None) | (None, Some(_)) => problems.push(
                "[server] tls-cert and tls-key go together: set both (HTTPS) or neither (HTTP)"
                    .to_string(),
            ),
            _ => {}
        }
        for name in &self.pagerduty_secrets {
            if !crate::secret::valid_secret_name(name) {
                problems.push(format!(
                    "[server] pagerduty-secrets: {name:?} is not a secret name (1 to 64 letters, digits, '-' or '_'; never a path)"
                ));
            }
        }
        for (key, value) in [
            ("max-connections", self.max_connections as u64),
            ("max-in-flight", self.max_in_flight as u64),
            (
                "max-in-flight-unauthenticated",
                self.max_in_flight_unauthenticated as u64,
            ),
            ("header-read-timeout-ms", self.header_read_timeout_ms),
            ("idle-timeout-ms", self.idle_timeout_ms),
            ("request-timeout-ms", self.request_timeout_ms),
            (
                "unauthenticated-timeout-ms",
                self.unauthenticated_timeout_ms,
            ),
            (
                "max-event-streams-per-token",
                self.max_event_streams_per_token as u64,
            ),
        ] {
            if value == 0 {
                problems.push(format!("[server] {key} is 0; it must be at least 1"));
            }
        }
        if self.max_connections > u32::MAX as usize >> 3 {
            problems.push("[server] max-connections is larger than this server can track".into());
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(problems.join("; "))
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
    /// Requests without a live token in progress (`max-in-flight-unauthenticated`).
    unauthenticated: Arc<Semaphore>,
    /// PagerDuty event ids handled recently (`pagerduty-replay-window`).
    pagerduty_seen: Arc<Mutex<RecentIds>>,
    /// Refusals audited per token in the current minute
    /// (`refusals-audited-per-minute`): token id -> (minute, count).
    refusals: Arc<Mutex<HashMap<String, (u64, u32)>>>,
    /// Live run streams open per token (`max-event-streams-per-token`).
    streams_per_token: Arc<Mutex<HashMap<String, usize>>>,
    /// Live run streams open (`max-event-streams`).
    event_streams: Arc<Semaphore>,
    /// This node's worker (`max-concurrent-runs` run slots).
    worker: crate::executor::Worker,
    /// Runs alerts may start (`trigger-runs-per-minute`, per node).
    trigger_rate: Arc<governor::DefaultDirectRateLimiter>,
    /// "Now" for drills and readiness.
    pub clock: Arc<dyn crate::drill::Clock>,
}

/// The most recent ids, up to a fixed number (oldest forgotten first).
#[derive(Debug)]
struct RecentIds {
    capacity: usize,
    order: std::collections::VecDeque<String>,
    set: std::collections::HashSet<String>,
}

impl RecentIds {
    fn new(capacity: usize) -> Self {
        RecentIds {
            capacity,
            order: std::collections::VecDeque::new(),
            set: std::collections::HashSet::new(),
        }
    }

    fn contains(&self, id: &str) -> bool {
        self.set.contains(id)
    }

    fn insert(&mut self, id: String) {
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
    fn refusal_budget(&self, id: &str) -> bool {
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
                self.worker.wake();
                Ok(id)
            }
            Err(e) => {
                if let crate::executor::RunError::Busy(why) = &e {
                    self.metrics.shed(why.shed_reason());
                }
                Err(e.into())
            }
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

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Paths that are never shed for load: health checks, and the big red
/// switch (an operator must be able to stop automation during an overload).
fn never_shed(path: &str) -> bool {
    matches!(path, "/healthz" | "/readyz" | "/api/v1/switch")
}

/// Admission, before any body is read: identify the caller from the
/// headers; a request with a live token counts against `max-in-flight`
/// (the switch excepted) under `request-timeout-ms`; any other request
/// (PagerDuty's signed webhook, console sign-in and pages, a missing or
/// bad token) counts against the small `max-in-flight-unauthenticated`
/// under `unauthenticated-timeout-ms`, so it can never take the budget of
/// authenticated work. Refusals of authenticated callers are audited.
async fn admission(State(state): State<AppState>, mut request: Request, next: Next) -> Response {
    let path = request.uri().path().to_string();
    if path == "/healthz" || path == "/readyz" {
        return next.run(request).await;
    }
    let caller = match api::identify(&state, request.headers()).await {
        Ok(c) => c,
        Err(e) => return ApiError::internal(e).into_response(),
    };
    let principal = match &caller {
        api::Caller::Token { token, .. } => Some(token.as_ref().clone()),
        _ => None,
    };
    let method = request.method().clone();
    request.extensions_mut().insert(caller);
    let (budget, timeout, limit_key) = if principal.is_some() {
        (
            &state.in_flight,
            Duration::from_millis(state.config.request_timeout_ms),
            "max-in-flight",
        )
    } else {
        (
            &state.unauthenticated,
            Duration::from_millis(state.config.unauthenticated_timeout_ms),
            "max-in-flight-unauthenticated",
        )
    };
    let permit = budget.clone().try_acquire_owned();
    if permit.is_err() && !(principal.is_some() && never_shed(&path)) {
        state.metrics.shed(limit_key);
        let limit = if principal.is_some() {
            state.config.max_in_flight
        } else {
            state.config.max_in_flight_unauthenticated
        };
        return ApiError::unavailable(format!(
            "the server is handling {limit} such requests already (server.{limit_key}); retry shortly"
        ))
        .into_response();
    }
    let response = match tokio::time::timeout(timeout, next.run(request)).await {
        Ok(r) => r,
        Err(_) => ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "timeout",
            format!(
                "the request did not finish within {timeout:?} (server.{})",
                if principal.is_some() {
                    "request-timeout-ms"
                } else {
                    "unauthenticated-timeout-ms"
                }
            ),
        )
        .into_response(),
    };
    drop(permit);
    state.metrics.response(response.status().as_u16());
    match response.status() {
        StatusCode::UNAUTHORIZED => state.metrics.denied("unauthenticated"),
        StatusCode::FORBIDDEN => state.metrics.denied("forbidden"),
        _ => {}
    }
    if let Some(token) = &principal {
        let refusal = response.extensions().get::<api::Refusal>().cloned();
        audit_refusal(&state, token, &method, &path, response.status(), refusal).await;
    }
    response
}

/// Record a refusal of an authenticated caller (403: its role or scope
/// does not allow it; 409: the request conflicts with the state, such as
/// approving one's own run) as `request.refused`, with what was asked and
/// why. Refusals the service records itself (a live run refused by the
/// switch: `run.refused`) are not recorded twice.
async fn audit_refusal(
    state: &AppState,
    token: &crate::auth::TokenRow,
    method: &axum::http::Method,
    path: &str,
    status: StatusCode,
    refusal: Option<api::Refusal>,
) {
    if status != StatusCode::FORBIDDEN && status != StatusCode::CONFLICT {
        return;
    }
    let Some(refusal) = refusal else {
        return;
    };
    if refusal.code == "halted" {
        return;
    }
    if !state.refusal_budget(&token.id) {
        state.metrics.inc("firedrill_refusals_unaudited_total", &[]);
        return;
    }
    let event = crate::audit::NewEvent::new(
        &token.actor(),
        crate::audit::Action::RequestRefused,
        format!("{method} {path}"),
    )
    .outcome(refusal.code)
    .details(serde_json::json!({"status": status.as_u16(), "reason": refusal.message}));
    if let Err(e) = state.service.store().apply(Batch::new().event(event)).await {
        tracing::error!(error = %e, "cannot record a refused request in the audit log");
    }
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
        .method_not_allowed_fallback(|method: axum::http::Method| async move {
            ApiError::new(
                StatusCode::METHOD_NOT_ALLOWED,
                "method-not-allowed",
                format!("{method} is not allowed on this endpoint; see docs/api.md"),
            )
        })
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
    state.config.check().map_err(std::io::Error::other)?;
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
    let tls = match (&state.config.tls_cert, &state.config.tls_key) {
        (Some(cert), Some(key)) => Some(Arc::new(
            listen::Tls::load(cert, key).map_err(std::io::Error::other)?,
        )),
        _ => None,
    };
    if tls.is_none() && addr.is_some_and(|a| !listen::is_loopback(&a)) {
        tracing::warn!(
            ?addr,
            "listening on a non-loopback address without TLS: tokens and sessions cross the network in clear text; set [server] tls-cert and tls-key, or put a TLS proxy in front"
        );
    }
    listen::accept(&state, listener, router(state.clone()), tls, shutdown).await;
    // Let a tick in progress finish (its writes are not cut in half).
    let _ = stop.send(true);
    if let Some(task) = drills {
        let _ = task.await;
    }
    let interrupted = state.drain_runs().await;
    tracing::info!(interrupted, "firedrill serve stopped");
    Ok(())
}
