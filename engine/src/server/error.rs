//! The API's one error shape, `{"error": {"code": "...", "message": "what
//! failed and what to do"}}`, and the one mapping of each domain error to
//! its status: a given error answers the same everywhere.

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use axum::extract::{FromRequestParts, Query};
use axum::http::request::Parts;

use crate::executor::{ControlError, RunError};

/// Seconds a client is told to wait when shed.
pub(super) const RETRY_AFTER_S: &str = "1";

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
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static(RETRY_AFTER_S));
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
            RunError::LostRace { .. } | RunError::Preempted { .. } => {
                (StatusCode::CONFLICT, "conflict")
            }
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

/// A JSON body that could not be used: too large (413, naming the limit),
/// not JSON, or not the expected shape (400, with the expected shape).
pub(super) fn rejected(e: &axum::extract::rejection::JsonRejection, expected: &str) -> ApiError {
    if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
        return ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "too-large",
            "the request body is larger than server.body-bytes",
        );
    }
    ApiError::bad_request(format!("{}; expected {expected}", e.body_text()))
}

/// A query string; a bad one is a 400 in the API's error shape, naming
/// the parameter that is wrong.
#[derive(Debug)]
pub(super) struct ApiQuery<T>(pub T);

impl<T: serde::de::DeserializeOwned, S: Send + Sync> FromRequestParts<S> for ApiQuery<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        let e = match Query::<T>::from_request_parts(parts, state).await {
            Ok(Query(v)) => return Ok(ApiQuery(v)),
            Err(e) => e,
        };
        // Name the parameter: the first one that fails on its own (every
        // query of this API is optional parameters only).
        let query = parts.uri.query().unwrap_or_default();
        let culprit = url::form_urlencoded::parse(query.as_bytes()).find_map(|(k, v)| {
            let one: String = url::form_urlencoded::Serializer::new(String::new())
                .append_pair(&k, &v)
                .finish();
            let uri: axum::http::Uri = format!("/?{one}").parse().ok()?;
            Query::<T>::try_from_uri(&uri)
                .err()
                .map(|e| (k.into_owned(), e.body_text()))
        });
        Err(ApiError::bad_request(match culprit {
            Some((name, why)) => format!(
                "query parameter `{}` is not valid: {why}; see docs/api.md for the parameters this endpoint takes",
                crate::term::field(&name)
            ),
            None => format!(
                "bad query string: {}; see docs/api.md for the parameters this endpoint takes",
                e.body_text()
            ),
        }))
    }
}
