//! `/api/v1/alerts/*`: Alertmanager, PagerDuty (signed) and generic JSON
//! alerts, each dispatched to `alerts::handle`; `/api/v1/triggers`.

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use super::error::ApiError;
use super::principal::Principal;
use super::runbooks::current_runbooks;
use super::state::AppState;
use crate::auth::Action;

pub(super) type BodyResult = Result<axum::body::Bytes, axum::extract::rejection::BytesRejection>;

/// A webhook body within `server.webhook-body-bytes`.
pub(super) fn webhook_body(body: BodyResult) -> Result<axum::body::Bytes, ApiError> {
    body.map_err(|e| {
        if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "too-large",
                "the webhook body is larger than server.webhook-body-bytes",
            )
        } else {
            ApiError::bad_request(e.body_text())
        }
    })
}

/// Decide on `alerts` from `actor` and answer: 200 with one decision per
/// (alert, matching runbook), or 503 when a run was shed (its claim was
/// never written: it goes in the run's own admission, so the sender's
/// retry can start it).
pub(super) async fn dispatch(
    state: &AppState,
    actor: &crate::audit::Actor,
    scope: &[String],
    alerts: &[crate::alerts::Alert],
) -> Result<Response, ApiError> {
    let admit_state = state.clone();
    let admit = move |run: crate::executor::PreparedRun| -> futures::future::BoxFuture<'static, Result<String, String>> {
        let state = admit_state.clone();
        Box::pin(async move { state.admit_triggered(run).await.map_err(|e| e.message) })
    };
    let handled = state
        .alerts
        .handle(&state.service, actor, scope, alerts, &admit)
        .await?;
    let decisions = handled.decisions;
    for d in &decisions {
        state.metrics.alert_decision(d.runbook(), &d.outcome());
    }
    if handled.unmatched > 0 {
        let source = alerts.first().map_or("unknown", |a| a.source);
        state.metrics.add(
            "firedrill_alerts_unmatched_total",
            &[("source", source)],
            handled.unmatched as u64,
        );
    }
    let shed = decisions
        .iter()
        .any(|d| matches!(d, crate::alerts::Decision::Shed { .. }));
    let status = if shed {
        StatusCode::SERVICE_UNAVAILABLE
    } else {
        StatusCode::OK
    };
    let mut response = (
        status,
        Json(json!({
            "alerts": alerts.len(),
            "decisions": decisions.iter().map(|d| d.answer()).collect::<Vec<_>>(),
            "unmatched": handled.unmatched,
        })),
    )
        .into_response();
    if shed {
        // Alertmanager and PagerDuty retry; tell other senders when.
        response.headers_mut().insert(
            header::RETRY_AFTER,
            HeaderValue::from_static(super::error::RETRY_AFTER_S),
        );
    }
    Ok(response)
}

/// `POST /api/v1/alerts/alertmanager`: Alertmanager's webhook (version 4);
/// 400 for anything that is not a valid payload.
pub async fn alertmanager(
    State(state): State<AppState>,
    who: Principal,
    body: BodyResult,
) -> Result<Response, ApiError> {
    token_alerts(
        &state,
        &who,
        body,
        crate::alerts::AlertmanagerPayload::parse,
    )
    .await
}

/// An alert endpoint authenticated by a `webhook` token: check, parse, decide.
pub(super) async fn token_alerts(
    state: &AppState,
    who: &Principal,
    body: BodyResult,
    parse: fn(&[u8]) -> Result<Vec<crate::alerts::Alert>, String>,
) -> Result<Response, ApiError> {
    who.require(Action::PostAlert)?;
    let body = webhook_body(body)?;
    let alerts = parse(&body).map_err(ApiError::bad_request)?;
    dispatch(state, &who.0.actor(), &who.0.runbooks, &alerts).await
}

/// `POST /api/v1/alerts/generic`: alerts from anything that can post JSON.
pub async fn generic(
    State(state): State<AppState>,
    who: Principal,
    body: BodyResult,
) -> Result<Response, ApiError> {
    token_alerts(&state, &who, body, crate::alerts::GenericPayload::parse).await
}

/// `POST /api/v1/alerts/pagerduty`: PagerDuty v3 webhooks, authenticated
/// by their HMAC signature (PagerDuty cannot send a bearer token): 401
/// without a valid signature, 403 when no secret is configured (answered
/// before the body is read), 500 `misconfigured` when no configured secret
/// can be read. A delivery whose event id was handled before is a replay:
/// answered 200 and counted, nothing recorded.
pub async fn pagerduty(
    State(state): State<AppState>,
    headers: axum::http::HeaderMap,
    body: axum::body::Body,
) -> Result<Response, ApiError> {
    let forbidden = |m: String| ApiError::new(StatusCode::FORBIDDEN, "forbidden", m);
    let unauthorized = |m: String| ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized", m);
    if state.config.pagerduty_secrets.is_empty() {
        return Err(forbidden(
            "PagerDuty webhooks are not enabled; name the signing secret in server.pagerduty-secrets".into(),
        ));
    }
    let signature = headers
        .get("x-pagerduty-signature")
        .and_then(|v| v.to_str().ok())
        .ok_or_else(|| {
            unauthorized(
                "X-PagerDuty-Signature is missing; only PagerDuty v3 webhooks are accepted here"
                    .into(),
            )
        })?
        .to_string();
    let mut secrets = Vec::new();
    for name in &state.config.pagerduty_secrets {
        match state.service.host().secrets().get(name) {
            Ok(s) => secrets.push(s),
            Err(e) => {
                tracing::error!(secret = %name, error = %e, "PagerDuty signing secret unavailable")
            }
        }
    }
    if secrets.is_empty() {
        state.metrics.inc(
            "firedrill_config_errors_total",
            &[("what", "pagerduty-secrets")],
        );
        return Err(ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "misconfigured",
            "none of the secrets in server.pagerduty-secrets can be read, so no delivery can be verified; the server's operator must fix it (the server log says why)",
        ));
    }
    let body = axum::body::to_bytes(body, state.config.webhook_body_bytes)
        .await
        .map_err(|_| {
            ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "too-large",
                "the webhook body is larger than server.webhook-body-bytes, or was not sent in time",
            )
        })?;
    crate::alerts::verify_pagerduty_signature(&secrets, &signature, &body).map_err(unauthorized)?;
    let event_id = crate::alerts::PagerDutyEvent::event_id(&body);
    if let Some(id) = &event_id
        && state.pagerduty_seen(id)
    {
        state.metrics.inc("firedrill_pagerduty_replays_total", &[]);
        return Ok(Json(json!({"alerts": 0, "replay": true})).into_response());
    }
    let actor = crate::audit::Actor::engine(
        crate::audit::ActorKind::AlertSource,
        "pagerduty",
        crate::audit::Via::Signature,
    );
    let response =
        match crate::alerts::PagerDutyEvent::parse(&body).map_err(ApiError::bad_request)? {
            crate::alerts::PagerDutyDelivery::Alert(alert) => {
                dispatch(&state, &actor, &[], &[alert]).await?
            }
            crate::alerts::PagerDutyDelivery::Ignored(event_type) => {
                state
                    .service
                    .store()
                    .apply(
                        crate::store::Batch::new().event(
                            crate::audit::NewEvent::new(
                                &actor,
                                crate::audit::Action::AlertIgnored,
                                "pagerduty",
                            )
                            .details(json!({"event_type": event_type})),
                        ),
                    )
                    .await?;
                Json(json!({"alerts": 0, "ignored": event_type})).into_response()
            }
        };
    // Only a delivery that was handled is remembered: PagerDuty's retry
    // of one that failed or was shed must be handled again.
    if let Some(id) = event_id
        && response.status().is_success()
    {
        state.remember_pagerduty(id);
    }
    Ok(response)
}

/// `GET /api/v1/triggers`: every alert trigger of the current runbook
/// versions, with whether its runbook's circuit breaker is open (paused
/// until `firedrill trigger reset`).
pub(super) async fn list_triggers(
    State(state): State<AppState>,
    who: Principal,
) -> Result<Json<Value>, ApiError> {
    who.require(Action::Read)?;
    let store = state.service.store();
    let mut out = Vec::new();
    for (row, rb) in current_runbooks(&state, &who).await? {
        if rb.triggers.is_empty() {
            continue;
        }
        let states = crate::alerts::breaker_states(store.as_ref(), &row.name, &rb.triggers).await?;
        let triggers: Vec<Value> = rb
            .triggers
            .iter()
            .zip(&states)
            .map(|(t, b)| {
                let mut v = serde_json::to_value(t).unwrap_or(Value::Null);
                v["index"] = json!(b.trigger);
                v["breaker"] = json!(b.threshold);
                v["breaker_scope"] = json!(b.scope);
                v["breaker_open"] = json!(b.open);
                v["open_keys"] = json!(b.open_keys);
                v["open_keys_total"] = json!(b.open_keys_total);
                v
            })
            .collect();
        out.push(json!({
            "runbook": row.name, "version": row.version,
            "breaker_open": states.iter().any(|b| b.open),
            "triggers": triggers,
        }));
    }
    Ok(Json(json!({"triggers": out})))
}

/// `GET /api/v1/alerts/unmatched`: the last alerts that matched no
/// trigger, newest first, with the triggers that came closest.
pub(super) async fn list_unmatched(
    State(state): State<AppState>,
    who: Principal,
) -> Result<Json<Value>, ApiError> {
    who.require(Action::Read)?;
    // Unmatched alerts belong to no runbook, and their nearest triggers
    // name any runbook: not for a token limited to some.
    super::principal::unscoped_for(&who, "unmatched alerts belong to no runbook")?;
    Ok(Json(json!({
        "kept": state.config.unmatched_alerts_kept,
        "alerts": state.alerts.unmatched(),
    })))
}
