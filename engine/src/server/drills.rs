//! `/api/v1/drills`: readiness, and a drill now.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde_json::{Value, json};

use super::error::ApiError;
use super::principal::Principal;
use super::state::AppState;
use crate::auth::Action;

/// `GET /api/v1/drills`: readiness of every runbook the token can see.
pub(super) async fn drill_status(
    State(state): State<AppState>,
    who: Principal,
) -> Result<Json<Value>, ApiError> {
    who.require(Action::Read)?;
    let rows: Vec<_> = crate::drill::readiness(&state.service, state.clock.now())
        .await?
        .into_iter()
        .filter(|r| who.0.covers(&r.runbook))
        .collect();
    Ok(Json(json!({"runbooks": rows})))
}

/// `POST /api/v1/drills/{runbook}/run`: drill now, through admission.
pub(super) async fn run_drill(
    State(state): State<AppState>,
    who: Principal,
    Path(runbook): Path<String>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    who.require(Action::StartRun)?;
    who.see(&runbook)?;
    let prepared = crate::drill::prepare_drill(&state.service, &runbook).await?;
    state
        .service
        .store()
        .apply(
            crate::store::Batch::new().event(
                crate::audit::NewEvent::new(
                    &who.0.actor(),
                    crate::audit::Action::DrillRequested,
                    format!("runbook:{runbook}"),
                )
                .details(json!({"run_id": prepared.id})),
            ),
        )
        .await?;
    let id = state.admit(prepared).await?;
    Ok((
        StatusCode::ACCEPTED,
        Json(json!({"run_id": id, "drill": true, "href": format!("/api/v1/runs/{id}")})),
    ))
}
