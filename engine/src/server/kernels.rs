//! `/api/v1/kernels`: list (with the runbooks that use them), manifest, upload.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde_json::{Value, json};

use super::error::ApiError;
use super::principal::{Principal, unscoped};
use super::runbooks::current_runbooks;
use super::state::AppState;
use crate::auth::Action;
use crate::kernel::{Published, RegistryError};

pub(super) async fn list_kernels(
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

pub(super) async fn get_kernel(
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
pub(super) async fn upload_kernel(
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
        Json(crate::view::published(
            &row.name,
            row.version.clone(),
            &row.digest,
            new,
        )),
    ))
}
