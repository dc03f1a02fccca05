//! Admission, before any body is read: who is asking, which budget the
//! request counts against, and the audit record of refusals.

use std::time::Duration;

use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::error::{ApiError, Refusal};
use super::principal;
use super::state::AppState;
use crate::store::Batch;

/// When admission let a request in: its deadline (`request-timeout-ms`)
/// counts from here, body reading included.
#[derive(Debug, Clone, Copy)]
pub(super) struct Arrived(pub(super) tokio::time::Instant);

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
pub(super) async fn admission(
    State(state): State<AppState>,
    mut request: Request,
    next: Next,
) -> Response {
    let path = request.uri().path().to_string();
    if path == "/healthz" || path == "/readyz" {
        return next.run(request).await;
    }
    let caller = match principal::identify(&state, request.headers()).await {
        Ok(c) => c,
        Err(e) => return ApiError::internal(e).into_response(),
    };
    let principal = match &caller {
        principal::Caller::Token { token, .. } => Some(token.as_ref().clone()),
        _ => None,
    };
    let method = request.method().clone();
    request.extensions_mut().insert(caller);
    request
        .extensions_mut()
        .insert(Arrived(tokio::time::Instant::now()));
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
        let refusal = response.extensions().get::<Refusal>().cloned();
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
    refusal: Option<Refusal>,
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
