//! API v1: kernels (list, manifest, upload), tokens (list, create, revoke),
//! runbook versions, and run control (cancel, resume, abandon).

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{Value, json};

use super::AppState;
use super::api::{ApiError, Principal, rejected, unscoped};
use crate::auth::{Action, Role};
use crate::kernel::{Published, RegistryError};

pub fn routes() -> Router<AppState> {
    use axum::routing::{delete, get, post};
    Router::new()
        .route("/api/v1/runbooks/{name}/versions", get(runbook_versions))
        .route("/api/v1/kernels/{name}/{version}", get(get_kernel))
        .route("/api/v1/tokens", get(list_tokens).post(create_token))
        .route("/api/v1/tokens/{name}", delete(revoke_token))
        .route("/api/v1/runs/{id}/cancel", post(cancel_run))
        .route("/api/v1/runs/{id}/resume", post(resume_run))
        .route("/api/v1/runs/{id}/skip", post(skip_run))
        .route("/api/v1/runs/{id}/abandon", post(abandon_run))
        .route("/api/v1/runs/{id}/approve", post(approve_run))
        .route("/api/v1/runs/{id}/deny", post(deny_run))
        .route("/api/v1/runbooks/{name}/rollback", post(rollback_runbook))
        .route("/api/v1/drills", get(drill_status))
        .route("/api/v1/triggers", get(list_triggers))
        .route("/api/v1/drills/{runbook}/run", post(run_drill))
}

/// `GET /api/v1/drills`: readiness of every runbook the token can see.
async fn drill_status(
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
async fn run_drill(
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

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Rollback {
    version: i64,
    reason: String,
}

/// `POST /api/v1/runbooks/{name}/rollback`: make an earlier version current.
async fn rollback_runbook(
    State(state): State<AppState>,
    who: Principal,
    Path(name): Path<String>,
    body: Result<Json<Rollback>, axum::extract::rejection::JsonRejection>,
) -> Result<Json<Value>, ApiError> {
    who.require(Action::Publish)?;
    who.see(&name)?;
    let Json(body) = body.map_err(|e| rejected(&e, r#"{"version": N, "reason": TEXT}"#))?;
    let row = state
        .service
        .rollback_runbook(&name, body.version, &who.0.actor(), &body.reason)
        .await?;
    Ok(Json(
        json!({"name": row.name, "current_version": row.version, "digest": row.digest}),
    ))
}

/// `/api/v1/kernels` (list, and upload with its own body limit:
/// `server.kernel-upload-bytes`).
pub fn upload_routes() -> Router<AppState> {
    Router::new().route(
        "/api/v1/kernels",
        axum::routing::post(upload_kernel).get(list_kernels),
    )
}

async fn runbook_versions(
    State(state): State<AppState>,
    who: Principal,
    Path(name): Path<String>,
) -> Result<Json<Value>, ApiError> {
    who.require(Action::Read)?;
    who.see(&name)?;
    let versions: Vec<Value> = state
        .service
        .store()
        .runbooks()
        .await?
        .into_iter()
        .filter(|r| r.name == name)
        .map(|r| json!({"version": r.version, "digest": r.digest, "published_at": r.published_at, "published_by": r.published_by}))
        .collect();
    if versions.is_empty() {
        return Err(ApiError::not_found(format!("no runbook {name:?}")));
    }
    Ok(Json(json!({"name": name, "versions": versions})))
}

async fn list_kernels(
    State(state): State<AppState>,
    who: Principal,
) -> Result<Json<Value>, ApiError> {
    who.require(Action::Read)?;
    // Which current runbook versions use each kernel.
    let current: Vec<(String, i64, Vec<String>)> = current_runbooks(&state, &who)
        .await?
        .into_iter()
        .map(|(row, rb)| {
            let kernels = rb
                .steps
                .iter()
                .chain(&rb.on_failure)
                .map(|s| s.kernel.clone())
                .collect();
            (row.name, row.version, kernels)
        })
        .collect();
    let kernels: Vec<Value> = state
        .service
        .store()
        .kernels()
        .await?
        .into_iter()
        .map(|k| {
            let reference = format!("{}@{}", k.name, k.version);
            let used_by: Vec<Value> = current
                .iter()
                .filter(|(_, _, kernels)| kernels.contains(&reference))
                .map(|(name, version, _)| json!({"runbook": name, "version": version}))
                .collect();
            json!({"name": k.name, "version": k.version, "digest": k.digest, "size_bytes": k.size_bytes, "manifest": k.manifest, "published_at": k.published_at, "published_by": k.published_by, "used_by": used_by})
        })
        .collect();
    Ok(Json(json!({"kernels": kernels})))
}

/// The current version of every runbook `who` can see, parsed (a version
/// that no longer parses is left out).
async fn current_runbooks(
    state: &AppState,
    who: &Principal,
) -> Result<Vec<(crate::store::RunbookRow, crate::runbook::Runbook)>, ApiError> {
    Ok(state
        .service
        .store()
        .current_runbooks()
        .await?
        .into_iter()
        .filter(|row| who.0.covers(&row.name))
        .filter_map(|row| {
            let rb = crate::runbook::parse_runbook(&row.name, &row.source).ok()?;
            Some((row, rb))
        })
        .collect())
}

/// `GET /api/v1/triggers`: every alert trigger of the current runbook
/// versions, with whether its runbook's circuit breaker is open (paused
/// until `firedrill trigger reset`).
async fn list_triggers(
    State(state): State<AppState>,
    who: Principal,
) -> Result<Json<Value>, ApiError> {
    who.require(Action::Read)?;
    let store = state.service.store();
    let mut out = Vec::new();
    for (row, rb) in current_runbooks(&state, &who).await? {
        // The breaker is per runbook; its threshold comes from the triggers.
        let Some(threshold) = rb.triggers.iter().map(|t| t.breaker()).max() else {
            continue;
        };
        let open = crate::alerts::breaker_open(store.as_ref(), &row.name, threshold).await?;
        out.push(json!({
            "runbook": row.name, "version": row.version, "breaker": threshold,
            "breaker_open": open, "triggers": rb.triggers,
        }));
    }
    Ok(Json(json!({"triggers": out})))
}

async fn get_kernel(
    State(state): State<AppState>,
    who: Principal,
    Path((name, version)): Path<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    who.require(Action::Read)?;
    let k = state
        .service
        .store()
        .kernel(&name, &version)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("no kernel {name}@{version}")))?;
    Ok(Json(serde_json::to_value(&k).unwrap_or_default()))
}

/// `POST /api/v1/kernels`: the component's bytes as the body (admin).
async fn upload_kernel(
    State(state): State<AppState>,
    who: Principal,
    body: Result<axum::body::Bytes, axum::extract::rejection::BytesRejection>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    who.require(Action::Publish)?;
    unscoped(&who)?;
    let body = body.map_err(|e| {
        if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "too-large",
                "the kernel is larger than server.kernel-upload-bytes",
            )
        } else {
            ApiError::bad_request(e.body_text())
        }
    })?;
    let service = &state.service;
    let (published, _) = service
        .registry()
        .publish(service.host(), &body, &who.0.actor())
        .await
        .map_err(|e| match e {
            RegistryError::Load(e) => ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid",
                format!("not a usable kernel: {e}"),
            ),
            e @ RegistryError::VersionConflict { .. } => {
                ApiError::new(StatusCode::CONFLICT, "conflict", e.to_string())
            }
            other => ApiError::internal(other),
        })?;
    let (status, row, new) = match published {
        Published::New(row) => (StatusCode::CREATED, row, true),
        Published::AlreadyPresent(row) => (StatusCode::OK, row, false),
    };
    Ok((
        status,
        Json(
            json!({"name": row.name, "version": row.version, "digest": row.digest, "published": new}),
        ),
    ))
}

async fn list_tokens(
    State(state): State<AppState>,
    who: Principal,
) -> Result<Json<Value>, ApiError> {
    who.require(Action::ManageTokens)?;
    // A token sees the tokens it could have created, and no others.
    let tokens: Vec<_> = state
        .service
        .store()
        .tokens()
        .await?
        .into_iter()
        .filter(|t| who.0.may_manage(t))
        .collect();
    Ok(Json(json!({"tokens": tokens})))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct NewToken {
    name: String,
    role: String,
    #[serde(default)]
    runbooks: Vec<String>,
    /// The person the token belongs to: the caller's own (the default);
    /// anyone else is refused (tokens for other people are made at the CLI).
    #[serde(default)]
    owner: String,
}

/// `POST /api/v1/tokens`: the token is in this answer and nowhere else.
async fn create_token(
    State(state): State<AppState>,
    who: Principal,
    body: Result<Json<NewToken>, axum::extract::rejection::JsonRejection>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    who.require(Action::ManageTokens)?;
    let Json(body) = body.map_err(|e| {
        rejected(
            &e,
            r#"{"name": NAME, "role": "viewer"|"operator"|"approver"|"admin"|"webhook", "owner"?: PERSON, "runbooks"?: [NAME]}"#,
        )
    })?;
    let role = Role::parse(&body.role).ok_or_else(|| {
        ApiError::bad_request(format!(
            "role {:?} is not one of viewer, operator, approver, admin, webhook",
            body.role
        ))
    })?;
    let (row, token) = crate::auth::create(
        state.service.store().as_ref(),
        crate::auth::TokenSpec {
            name: body.name,
            role,
            runbooks: body.runbooks,
            owner: body.owner,
        },
        Some(&who.0),
        &who.0.actor(),
    )
    .await
    .map_err(|e| match e {
        crate::auth::TokenError::Store(e) => ApiError::internal(e),
        crate::auth::TokenError::Exists(_) => {
            ApiError::new(StatusCode::CONFLICT, "conflict", e.to_string())
        }
        crate::auth::TokenError::Wider(_) => {
            ApiError::new(StatusCode::FORBIDDEN, "forbidden", e.to_string())
        }
        other => ApiError::bad_request(other.to_string()),
    })?;
    Ok((
        StatusCode::CREATED,
        Json(
            json!({"token": token, "id": row.id, "name": row.name, "role": row.role, "runbooks": row.runbooks, "owner": row.owner,
            "note": "the token is shown once; store it now"}),
        ),
    ))
}

async fn revoke_token(
    State(state): State<AppState>,
    who: Principal,
    Path(name): Path<String>,
) -> Result<Json<Value>, ApiError> {
    who.require(Action::ManageTokens)?;
    let row = crate::auth::revoke(
        state.service.store().as_ref(),
        &name,
        Some(&who.0),
        &who.0.actor(),
    )
    .await
    .map_err(|e| match e {
        crate::auth::TokenError::Store(e) => ApiError::internal(e),
        crate::auth::TokenError::NotFound(_) => ApiError::not_found(e.to_string()),
        other => ApiError::bad_request(other.to_string()),
    })?;
    Ok(Json(
        json!({"revoked": row.name, "id": row.id, "revoked_at": row.revoked_at}),
    ))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Reason {
    reason: String,
}

const REASON_BODY: &str = r#"{"reason": TEXT}"#;

/// The run, if this token may see it; 404 otherwise.
async fn visible_run(
    state: &AppState,
    who: &Principal,
    id: &str,
) -> Result<crate::store::RunRow, ApiError> {
    let missing = || ApiError::not_found(format!("no run {id:?}"));
    let Some(run) = state.service.store().run(id).await? else {
        return Err(missing());
    };
    if !who.0.covers(&run.runbook) {
        return Err(missing());
    }
    Ok(run)
}

/// `POST /api/v1/runs/{id}/cancel`: stop at the next step boundary.
async fn cancel_run(
    State(state): State<AppState>,
    who: Principal,
    Path(id): Path<String>,
    body: Result<Json<Reason>, axum::extract::rejection::JsonRejection>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    who.require(Action::CancelRun)?;
    let Json(body) = body.map_err(|e| rejected(&e, REASON_BODY))?;
    visible_run(&state, &who, &id).await?;
    state
        .service
        .cancel(&id, &who.0.actor(), &body.reason)
        .await?;
    Ok((
        StatusCode::ACCEPTED,
        Json(
            json!({"run_id": id, "cancel_requested": true, "note": "the step in progress finishes; nothing after it starts"}),
        ),
    ))
}

/// `POST /api/v1/runs/{id}/resume`: continue a halted run where it
/// stopped, or a run that needs attention by running its unfinished step
/// again.
async fn resume_run(
    State(state): State<AppState>,
    who: Principal,
    Path(id): Path<String>,
    body: Result<Json<Reason>, axum::extract::rejection::JsonRejection>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    continue_run(state, who, id, body, false).await
}

/// `POST /api/v1/runs/{id}/skip`: continue a run that needs attention after
/// its unfinished step (marked skipped).
async fn skip_run(
    State(state): State<AppState>,
    who: Principal,
    Path(id): Path<String>,
    body: Result<Json<Reason>, axum::extract::rejection::JsonRejection>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    continue_run(state, who, id, body, true).await
}

async fn continue_run(
    state: AppState,
    who: Principal,
    id: String,
    body: Result<Json<Reason>, axum::extract::rejection::JsonRejection>,
    skip: bool,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    who.require(Action::StartRun)?;
    let Json(body) = body.map_err(|e| rejected(&e, REASON_BODY))?;
    visible_run(&state, &who, &id).await?;
    let actor = who.0.actor();
    let prepared = if skip {
        state.service.prepare_skip(&id, &actor, &body.reason).await
    } else {
        state
            .service
            .prepare_resume(&id, &actor, &body.reason)
            .await
    }?;
    let id = state.admit(prepared).await?;
    Ok((
        StatusCode::ACCEPTED,
        Json(
            json!({"run_id": id, "resumed": true, "skipped_step": skip, "href": format!("/api/v1/runs/{id}")}),
        ),
    ))
}

/// `POST /api/v1/runs/{id}/abandon`: close a halted or interrupted run.
async fn abandon_run(
    State(state): State<AppState>,
    who: Principal,
    Path(id): Path<String>,
    body: Result<Json<Reason>, axum::extract::rejection::JsonRejection>,
) -> Result<Json<Value>, ApiError> {
    who.require(Action::CancelRun)?;
    let Json(body) = body.map_err(|e| rejected(&e, REASON_BODY))?;
    visible_run(&state, &who, &id).await?;
    state
        .service
        .abandon(&id, &who.0.actor(), &body.reason)
        .await?;
    Ok(Json(json!({"run_id": id, "status": "abandoned"})))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Comment {
    comment: String,
}

async fn decide(
    state: &AppState,
    who: &Principal,
    id: &str,
    body: Result<Json<Comment>, axum::extract::rejection::JsonRejection>,
    approve: bool,
) -> Result<Json<Value>, ApiError> {
    who.require(Action::Approve)?;
    let Json(body) = body.map_err(|e| rejected(&e, r#"{"comment": TEXT}"#))?;
    visible_run(state, who, id).await?;
    let step = state
        .service
        .decide_approval(
            id,
            &who.0.actor(),
            Some(who.0.role),
            if approve {
                crate::executor::Decision::Approve
            } else {
                crate::executor::Decision::Deny
            },
            &body.comment,
        )
        .await?;
    Ok(Json(
        json!({"run_id": id, "step": step, "decision": if approve { "approve" } else { "deny" }}),
    ))
}

/// `POST /api/v1/runs/{id}/approve {comment}`.
async fn approve_run(
    State(state): State<AppState>,
    who: Principal,
    Path(id): Path<String>,
    body: Result<Json<Comment>, axum::extract::rejection::JsonRejection>,
) -> Result<Json<Value>, ApiError> {
    decide(&state, &who, &id, body, true).await
}

/// `POST /api/v1/runs/{id}/deny {comment}`.
async fn deny_run(
    State(state): State<AppState>,
    who: Principal,
    Path(id): Path<String>,
    body: Result<Json<Comment>, axum::extract::rejection::JsonRejection>,
) -> Result<Json<Value>, ApiError> {
    decide(&state, &who, &id, body, false).await
}
