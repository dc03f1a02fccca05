//! `/api/v1/tokens`: list, create, revoke (within the scope rule).

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde::Deserialize;
use serde_json::{Value, json};

use super::error::{ApiError, rejected};
use super::principal::Principal;
use super::state::AppState;
use crate::auth::{Action, Role};

pub(super) async fn list_tokens(
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
pub(super) struct NewToken {
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
pub(super) async fn create_token(
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
        Json(crate::view::token_created(&row, &token)),
    ))
}

pub(super) async fn revoke_token(
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
    Ok(Json(crate::view::token_revoked(&row)))
}
