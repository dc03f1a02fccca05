//! `/api/v1/runbooks`: list, validate, publish, versions, rollback.

use std::collections::BTreeMap;

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde::Deserialize;
use serde_json::{Value, json};

use super::error::{ApiError, ApiQuery, rejected};
use super::principal::{Principal, unscoped};
use super::state::AppState;
use crate::auth::Action;

pub(super) async fn list_runbooks(
    State(state): State<AppState>,
    who: Principal,
) -> Result<Json<Value>, ApiError> {
    who.require(Action::Read)?;
    let mut newest: BTreeMap<String, (crate::store::RunbookRow, usize)> = BTreeMap::new();
    for r in state.service.store().runbooks().await? {
        if !who.0.covers(&r.name) {
            continue;
        }
        let entry = newest.entry(r.name.clone()).or_insert((r.clone(), 0));
        entry.1 += 1;
        if r.version > entry.0.version {
            entry.0 = r;
        }
    }
    let visible: Vec<Value> = newest
        .values()
        .map(|(r, n)| json!({"name": r.name, "version": r.version, "versions": n, "digest": r.digest, "published_at": r.published_at, "published_by": r.published_by}))
        .collect();
    Ok(Json(json!({"runbooks": visible})))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RunbookSourceBody {
    /// The runbook YAML.
    source: String,
}

pub(super) const RUNBOOK_BODY: &str = r#"{"source": "<runbook YAML>"}"#;

pub(super) fn invalid(p: &crate::runbook::Problems) -> ApiError {
    ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid", p.to_string())
}

/// `POST /api/v1/runbooks/validate`: every problem, or what would be published.
pub(super) async fn validate_runbook(
    State(state): State<AppState>,
    who: Principal,
    body: Result<Json<RunbookSourceBody>, axum::extract::rejection::JsonRejection>,
) -> Result<Json<Value>, ApiError> {
    who.require(Action::Read)?;
    let Json(body) = body.map_err(|e| rejected(&e, RUNBOOK_BODY))?;
    let valid = state
        .service
        .validate("runbook.yaml", &body.source)
        .await
        .map_err(|p| invalid(&p))?;
    Ok(Json(json!({
        "valid": true,
        "name": valid.runbook.name,
        "version": valid.runbook.version,
        "digest": valid.digest,
    })))
}

/// `POST /api/v1/runbooks`: publish an immutable name@version (admin).
pub(super) async fn publish_runbook(
    State(state): State<AppState>,
    who: Principal,
    body: Result<Json<RunbookSourceBody>, axum::extract::rejection::JsonRejection>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    who.require(Action::Publish)?;
    unscoped(&who)?;
    let Json(body) = body.map_err(|e| rejected(&e, RUNBOOK_BODY))?;
    let (row, new) = state
        .service
        .publish_runbook("runbook.yaml", &body.source, &who.0.actor())
        .await
        .map_err(|e| match e {
            crate::executor::PublishError::Invalid(p) => invalid(&p),
            e @ crate::executor::PublishError::Conflict { .. } => {
                ApiError::new(StatusCode::CONFLICT, "conflict", e.to_string())
            }
            crate::executor::PublishError::Store(e) => ApiError::internal(e),
        })?;
    Ok((
        if new {
            StatusCode::CREATED
        } else {
            StatusCode::OK
        },
        Json(crate::view::published(
            &row.name,
            row.version,
            &row.digest,
            new,
        )),
    ))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct VersionQuery {
    version: Option<i64>,
}

/// `GET /api/v1/runbooks/{name}[?version=N]`: the newest or one version.
pub(super) async fn get_runbook(
    State(state): State<AppState>,
    who: Principal,
    Path(name): Path<String>,
    ApiQuery(q): ApiQuery<VersionQuery>,
) -> Result<Json<Value>, ApiError> {
    who.require(Action::Read)?;
    who.see(&name)?;
    let row = state
        .service
        .store()
        .runbook(&name, q.version)
        .await?
        .ok_or_else(|| match q.version {
            Some(v) => ApiError::not_found(format!("no runbook {name}@{v}")),
            None => ApiError::not_found(format!("no runbook {name:?}")),
        })?;
    Ok(Json(crate::view::runbook_source(&row)))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct Rollback {
    version: i64,
    reason: String,
}

/// `POST /api/v1/runbooks/{name}/rollback`: make an earlier version current.
pub(super) async fn rollback_runbook(
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
    Ok(Json(crate::view::rolled_back(&row)))
}

pub(super) async fn runbook_versions(
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

/// The current version of every runbook `who` can see, parsed (a version
/// that no longer parses is left out).
pub(super) async fn current_runbooks(
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
