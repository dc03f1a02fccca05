//! The API's one error shape, `{"error": {"code": "...", "message": "what
//! failed and what to do"}}`, and the one mapping of each domain error to
//! its status: a given error answers the same everywhere.

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use crate::executor::{ControlError, RunError};

/// An API error: status, a stable code, and an actionable message.
#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            code,
            message: message.into(),
        }
    }
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "bad-request", message)
    }
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not-found", message)
    }
    pub fn too_many(message: impl Into<String>) -> Self {
        Self::new(StatusCode::TOO_MANY_REQUESTS, "queue-full", message)
    }
    pub fn unavailable(message: impl Into<String>) -> Self {
        Self::new(StatusCode::SERVICE_UNAVAILABLE, "overloaded", message)
    }
    /// A failure on the server's side: the client gets a generic message
    /// and an error id; the detail is logged with that id (it may name
    /// files, databases or internal state).
    pub fn internal(e: impl std::fmt::Display) -> Self {
        let id = uuid::Uuid::now_v7();
        tracing::error!(error_id = %id, error = %e, "request failed");
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            format!(
                "the server could not complete this request (error id {id}); the server log has the details under that id"
            ),
        )
    }
}

/// What an error answer was, kept on the response for the admission layer
/// (which audits refusals of authenticated callers).
#[derive(Debug, Clone)]
pub struct Refusal {
    pub code: &'static str,
    pub message: String,
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut response = (
            self.status,
            Json(json!({"error": {"code": self.code, "message": self.message}})),
        )
            .into_response();
        response.extensions_mut().insert(Refusal {
            code: self.code,
            message: self.message,
        });
        if self.status == StatusCode::UNAUTHORIZED {
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        if self.status == StatusCode::TOO_MANY_REQUESTS
            || self.status == StatusCode::SERVICE_UNAVAILABLE
        {
            response.headers_mut().insert(
                header::RETRY_AFTER,
                HeaderValue::from_static(super::RETRY_AFTER_S),
            );
        }
        response
    }
}

impl From<crate::store::StoreError> for ApiError {
    fn from(e: crate::store::StoreError) -> Self {
        ApiError::internal(e)
    }
}

impl From<RunError> for ApiError {
    fn from(e: RunError) -> Self {
        let status = match &e {
            RunError::NotFound(_) => return ApiError::not_found(e.to_string()),
            RunError::Invalid(_) | RunError::Inputs { .. } | RunError::Stored(..) => {
                (StatusCode::UNPROCESSABLE_ENTITY, "invalid")
            }
            RunError::Halted { .. } => (StatusCode::CONFLICT, "halted"),
            RunError::Busy(_) => return ApiError::too_many(e.to_string()),
            RunError::LostRace { .. } => (StatusCode::CONFLICT, "conflict"),
            RunError::Store(_) => return ApiError::internal(e),
        };
        ApiError::new(status.0, status.1, e.to_string())
    }
}

impl From<ControlError> for ApiError {
    fn from(e: ControlError) -> Self {
        match e {
            ControlError::NotFound(_) => ApiError::not_found(e.to_string()),
            ControlError::WrongState { .. } | ControlError::Refused(_) => {
                ApiError::new(StatusCode::CONFLICT, "conflict", e.to_string())
            }
            ControlError::NoReason => ApiError::bad_request(e.to_string()),
            ControlError::Run(run) => (*run).into(),
            ControlError::Store(e) => ApiError::internal(e),
        }
    }
}
