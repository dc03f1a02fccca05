//! `/healthz`, `/readyz`, `/metrics` and the OpenAPI document.

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use super::error::ApiError;
use super::principal::{Principal, unscoped_for};
use super::state::AppState;
use crate::auth::Action;
use crate::store::AuditFilter;

/// The OpenAPI 3.1 description of this API (`openapi.json` beside this file).
pub const OPENAPI: &str = include_str!("openapi.json");

/// `GET /api/v1/openapi.json`: served without a token, like the docs it is.
pub(super) async fn openapi() -> Response {
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )],
        OPENAPI,
    )
        .into_response()
}

pub(super) async fn healthz() -> &'static str {
    "ok"
}

pub(super) async fn readyz(State(state): State<AppState>) -> Result<Json<Value>, ApiError> {
    if let Err(e) = state.service.store().switches().await {
        // Unauthenticated: the store's own error stays in the log.
        let id = uuid::Uuid::now_v7();
        tracing::error!(error_id = %id, error = %e, "readiness check: the store is not reachable");
        return Err(ApiError::unavailable(format!(
            "the store is not reachable (error id {id}; the server log has the details)"
        )));
    }
    if state.shedding() {
        return Err(ApiError::unavailable(
            "shedding load (server.max-in-flight reached)",
        ));
    }
    Ok(Json(json!({"ready": true})))
}

/// Most waiting runs read per scrape (the counts saturate here).
const WAITING_SCAN: i64 = 10_000;

pub(super) async fn metrics(
    State(state): State<AppState>,
    who: Principal,
) -> Result<String, ApiError> {
    who.require(Action::Read)?;
    // The exposition names every runbook; a scoped token would learn of
    // runbooks that, for it, do not exist.
    unscoped_for(&who, "/metrics names every runbook")?;
    let store = state.service.store();
    let mut gauges = Vec::new();
    for s in store.switches().await? {
        gauges.push((
            "firedrill_switch_engaged",
            "1 when the big red switch of this scope is engaged.",
            format!("scope=\"{}\"", s.scope.replace('"', "")),
            if s.engaged { 1.0 } else { 0.0 },
        ));
    }
    let head = store
        .audit(&AuditFilter {
            limit: 1,
            ..AuditFilter::default()
        })
        .await?
        .last()
        .map_or(0, |r| r.seq);
    gauges.push((
        "firedrill_audit_head_seq",
        "Sequence number of the newest audit record.",
        String::new(),
        head as f64,
    ));
    if let Some(cp) = store.checkpoints(1).await?.into_iter().next() {
        gauges.push((
            "firedrill_audit_checkpoint_size",
            "Records covered by the newest signed audit checkpoint.",
            String::new(),
            cp.size as f64,
        ));
        let signed_at = humantime::parse_rfc3339_weak(&cp.created_at)
            .ok()
            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
            .map_or(0.0, |d| d.as_secs_f64());
        gauges.push((
            "firedrill_audit_checkpoint_timestamp_seconds",
            "When the newest audit checkpoint was signed (Unix time; its age is time() minus this).",
            String::new(),
            signed_at,
        ));
    }
    if let Some(tlog) = &state.tlog {
        for (witness, lag, failures) in tlog.witness_lag() {
            let w = format!("witness=\"{}\"", witness.replace(['"', '\\', '\n'], ""));
            gauges.push((
                "firedrill_audit_witness_lag_records",
                "Records the newest checkpoint a witness holds lags behind the newest signed (0: up to date).",
                w.clone(),
                lag as f64,
            ));
            gauges.push((
                "firedrill_audit_witness_failures",
                "Failed deliveries of checkpoints to a witness since this process started.",
                w,
                failures as f64,
            ));
        }
    }
    let queued = state.service.store().queued_runs().await?;
    gauges.push((
        "firedrill_runs_executing",
        "Runs this node is executing (server.max-concurrent-runs bounds it).",
        String::new(),
        state.executing_runs() as f64,
    ));
    for r in crate::drill::readiness(&state.service, state.clock.now()).await? {
        let rb = format!("runbook=\"{}\"", r.runbook.replace(['"', '\\', '\n'], ""));
        gauges.push((
            "firedrill_runbook_ready",
            "1 when the runbook's current version passed a live drill within its max_age.",
            rb.clone(),
            if r.state == crate::drill::Readiness::Ready {
                1.0
            } else {
                0.0
            },
        ));
        gauges.push((
            "firedrill_runbook_readiness",
            "1 for the runbook's readiness state (ready, dry-run-only, stale, failing, never-drilled).",
            format!("{rb},state=\"{}\"", r.state.as_str()),
            1.0,
        ));
        if let Some(age) = r.age_s {
            gauges.push((
                "firedrill_drill_age_seconds",
                "Seconds since the runbook's current version last passed a drill.",
                rb.clone(),
                age as f64,
            ));
        }
        if let Some(max) = r.max_age_s {
            gauges.push((
                "firedrill_drill_max_age_seconds",
                "The runbook's drill max_age.",
                rb,
                max as f64,
            ));
        }
    }
    for (runbook, b) in state.alerts.breakers(store.as_ref()).await? {
        gauges.push((
            "firedrill_trigger_breakers_open",
            "Open circuit breakers of a trigger: keys paused (scope key), or 1 when the runbook's breaker is open (scope runbook).",
            format!(
                "runbook=\"{}\",trigger=\"{}\",scope=\"{}\"",
                runbook.replace(['"', '\\', '\n'], ""),
                b.trigger,
                b.scope
            ),
            if b.scope == "key" {
                b.open_keys_total as f64
            } else if b.open {
                1.0
            } else {
                0.0
            },
        ));
    }
    let waiting = store.waiting_runs(WAITING_SCAN).await?;
    let now = std::time::SystemTime::now();
    for (status, name, help_count, age_name, help_age) in [
        (
            crate::store::RunStatus::AwaitingApproval,
            "firedrill_runs_awaiting_approval",
            "Runs waiting for an approval.",
            "firedrill_run_awaiting_approval_oldest_seconds",
            "How long the longest-waiting run has waited for an approval (0: none waits).",
        ),
        (
            crate::store::RunStatus::NeedsAttention,
            "firedrill_runs_needing_attention",
            "Runs stopped for a person to look at (needs-attention).",
            "firedrill_run_needing_attention_oldest_seconds",
            "How long the oldest run needing attention has waited (0: none).",
        ),
    ] {
        let these: Vec<_> = waiting.iter().filter(|w| w.status == status).collect();
        gauges.push((name, help_count, String::new(), these.len() as f64));
        let oldest = these
            .first()
            .and_then(|w| humantime::parse_rfc3339_weak(&w.since).ok())
            .and_then(|t| now.duration_since(t).ok())
            .map_or(0.0, |d| d.as_secs_f64().floor());
        gauges.push((age_name, help_age, String::new(), oldest));
    }
    for d in store.outbox_depths().await? {
        let sink = format!("sink=\"{}\"", d.sink.replace(['"', '\\', '\n'], ""));
        gauges.push((
            "firedrill_notifications_queued",
            "Deliveries queued for a webhook or Slack sink, not yet made ([notify] max-queued bounds it).",
            sink.clone(),
            d.queued as f64,
        ));
        let oldest = d
            .oldest
            .and_then(|o| humantime::parse_rfc3339_weak(&o).ok())
            .and_then(|t| now.duration_since(t).ok())
            .map_or(0.0, |d| d.as_secs_f64().floor());
        gauges.push((
            "firedrill_notification_oldest_queued_seconds",
            "How long the oldest queued delivery of a sink has waited ([notify] give-up-s bounds it).",
            sink,
            oldest,
        ));
    }
    gauges.push((
        "firedrill_run_queue_depth",
        "Runs queued in the store, waiting for any node to claim them (server.max-queued-runs bounds it).",
        String::new(),
        queued as f64,
    ));
    Ok(state.metrics.render(&gauges))
}
