//! `/api/v1/switch`: the big red switch (never shed for load).

use axum::Json;
use axum::extract::State;
use serde::Deserialize;
use serde_json::{Value, json};

use super::error::{ApiError, rejected};
use super::principal::{Principal, unscoped};
use super::state::AppState;
use crate::auth::Action;

pub(super) async fn get_switch(
    State(state): State<AppState>,
    who: Principal,
) -> Result<Json<Value>, ApiError> {
    who.require(Action::Read)?;
    let switches: Vec<_> = state
        .service
        .store()
        .switches()
        .await?
        .into_iter()
        .filter(|s| {
            s.scope == crate::switch::GLOBAL
                || s.scope
                    .strip_prefix("runbook:")
                    .is_some_and(|rb| who.0.covers(rb))
        })
        .collect();
    Ok(Json(json!({"switches": switches})))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct SetSwitch {
    engaged: bool,
    reason: String,
    /// One runbook; absent = global.
    #[serde(default)]
    runbook: Option<String>,
}

pub(super) async fn set_switch(
    State(state): State<AppState>,
    who: Principal,
    body: Result<Json<SetSwitch>, axum::extract::rejection::JsonRejection>,
) -> Result<Json<Value>, ApiError> {
    let Json(body) =
        body.map_err(|e| rejected(&e, r#"{"engaged": BOOL, "reason": TEXT, "runbook"?: NAME}"#))?;
    who.require(if body.engaged {
        Action::EngageSwitch
    } else {
        Action::ReleaseSwitch
    })?;
    match &body.runbook {
        Some(rb) => who.see(rb)?,
        None => unscoped(&who)?,
    }
    let row = crate::switch::flip(
        state.service.store().as_ref(),
        body.runbook.as_deref(),
        body.engaged,
        &body.reason,
        &who.0.actor(),
    )
    .await
    .map_err(|e| match e {
        crate::switch::SwitchError::Store(e) => ApiError::internal(e),
        other => ApiError::bad_request(other.to_string()),
    })?;
    Ok(Json(serde_json::to_value(&row).unwrap_or_default()))
}
