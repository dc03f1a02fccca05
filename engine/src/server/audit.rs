//! `/api/v1/audit`: the log, filtered, its verification, and its newest
//! signed checkpoint.

use axum::Json;
use axum::extract::State;
use serde::Deserialize;
use serde_json::{Value, json};

use super::error::{ApiError, ApiQuery};
use super::principal::{Principal, unscoped_for};
use super::runs::MAX_PAGE;
use super::state::AppState;
use crate::auth::Action;
use crate::store::AuditFilter;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct AuditQuery {
    run: Option<String>,
    actor: Option<String>,
    action: Option<String>,
    since: Option<String>,
    limit: Option<i64>,
}

pub(super) async fn audit(
    State(state): State<AppState>,
    who: Principal,
    ApiQuery(q): ApiQuery<AuditQuery>,
) -> Result<Json<Value>, ApiError> {
    who.require(Action::Read)?;
    unscoped_for(&who, "the audit log spans every runbook")?;
    // A filter that cannot match anything is a mistake, not an empty page.
    // Normalised, so that it compares with the stored times as text.
    let since = match &q.since {
        None => None,
        Some(since) => Some(
            humantime::parse_rfc3339_weak(since)
                .map(|t| humantime::format_rfc3339_millis(t).to_string())
                .map_err(|_| {
                    ApiError::bad_request(format!(
                        "query parameter `since` is {since:?}, not a UTC RFC 3339 time such as 2026-12-01T09:00:00Z"
                    ))
                })?,
        ),
    };
    let records = state
        .service
        .store()
        .audit(&AuditFilter {
            run_id: q.run,
            actor: q.actor,
            action: q.action,
            since,
            limit: q.limit.unwrap_or(100).clamp(1, MAX_PAGE),
        })
        .await?;
    Ok(Json(json!({"records": records})))
}

pub(super) async fn audit_verify(
    State(state): State<AppState>,
    who: Principal,
) -> Result<Json<Value>, ApiError> {
    who.require(Action::Read)?;
    unscoped_for(&who, "the audit log spans every runbook")?;
    let v = crate::store::verify_store(state.service.store().as_ref()).await?;
    Ok(Json(serde_json::to_value(&v).unwrap_or_default()))
}

/// The newest signed checkpoint (`text/plain`, the C2SP signed note), or
/// 404 when none was signed yet.
pub(super) async fn audit_checkpoint(
    State(state): State<AppState>,
    who: Principal,
) -> Result<axum::response::Response, ApiError> {
    use axum::response::IntoResponse as _;
    who.require(Action::Read)?;
    unscoped_for(&who, "the audit log spans every runbook")?;
    let latest = state
        .service
        .store()
        .checkpoints(1)
        .await?
        .into_iter()
        .next();
    let Some(row) = latest else {
        return Err(ApiError::new(
            axum::http::StatusCode::NOT_FOUND,
            "not-found",
            "no audit checkpoint was signed yet: `firedrill serve` signs one within [audit] checkpoint-interval-s of the first records, or run `firedrill audit checkpoint`",
        ));
    };
    Ok((
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; charset=utf-8",
        )],
        row.note,
    )
        .into_response())
}
