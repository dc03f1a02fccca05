//! The route table: every endpoint of `firedrill serve`, in one place,
//! with the body limit each group gets and the admission layer around all.

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::http::StatusCode;
use axum::routing::{delete, get, post};

use super::error::ApiError;
use super::{AppState, audit, console, drills, events, health, kernels, runbooks, runs, switch};
use super::{tokens, webhooks};

/// The whole application.
pub fn router(state: AppState) -> Router {
    let api = Router::new()
        .route("/healthz", get(health::healthz))
        .route("/readyz", get(health::readyz))
        .route("/metrics", get(health::metrics))
        .route("/api/v1/openapi.json", get(health::openapi))
        .route(
            "/api/v1/runbooks",
            get(runbooks::list_runbooks).post(runbooks::publish_runbook),
        )
        .route(
            "/api/v1/runbooks/validate",
            post(runbooks::validate_runbook),
        )
        .route("/api/v1/runbooks/{name}", get(runbooks::get_runbook))
        .route(
            "/api/v1/runbooks/{name}/versions",
            get(runbooks::runbook_versions),
        )
        .route(
            "/api/v1/runbooks/{name}/rollback",
            post(runbooks::rollback_runbook),
        )
        .route("/api/v1/runs", post(runs::start_run).get(runs::list_runs))
        .route("/api/v1/runs/{id}", get(runs::get_run))
        .route("/api/v1/runs/{id}/events", get(events::run_events))
        .route("/api/v1/runs/{id}/cancel", post(runs::cancel_run))
        .route("/api/v1/runs/{id}/resume", post(runs::resume_run))
        .route("/api/v1/runs/{id}/skip", post(runs::skip_run))
        .route("/api/v1/runs/{id}/abandon", post(runs::abandon_run))
        .route("/api/v1/runs/{id}/approve", post(runs::approve_run))
        .route("/api/v1/runs/{id}/deny", post(runs::deny_run))
        .route("/api/v1/kernels/{name}/{version}", get(kernels::get_kernel))
        .route(
            "/api/v1/tokens",
            get(tokens::list_tokens).post(tokens::create_token),
        )
        .route("/api/v1/tokens/{name}", delete(tokens::revoke_token))
        .route("/api/v1/drills", get(drills::drill_status))
        .route("/api/v1/drills/{runbook}/run", post(drills::run_drill))
        .route("/api/v1/triggers", get(webhooks::list_triggers))
        .route("/api/v1/alerts/unmatched", get(webhooks::list_unmatched))
        .route("/api/v1/audit", get(audit::audit))
        .route("/api/v1/audit/verify", get(audit::audit_verify))
        .route("/api/v1/audit/checkpoint", get(audit::audit_checkpoint))
        .route(
            "/api/v1/switch",
            get(switch::get_switch).put(switch::set_switch),
        )
        .merge(console::routes())
        .fallback(|| async { ApiError::not_found("no such endpoint; see docs/api.md") })
        .layer(DefaultBodyLimit::max(state.config.body_bytes));
    let alerts = Router::new()
        .route("/api/v1/alerts/alertmanager", post(webhooks::alertmanager))
        .route("/api/v1/alerts/generic", post(webhooks::generic))
        .route("/api/v1/alerts/pagerduty", post(webhooks::pagerduty))
        .layer(DefaultBodyLimit::max(state.config.webhook_body_bytes));
    let uploads = Router::new()
        .route(
            "/api/v1/kernels",
            post(kernels::upload_kernel).get(kernels::list_kernels),
        )
        .layer(DefaultBodyLimit::max(state.config.kernel_upload_bytes));
    api.merge(alerts)
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
            super::admission::admission,
        ))
        .with_state(state)
}
