//! Who is asking: the caller identified from the headers before any body
//! is read ([`identify`] -> [`Caller`], by the admission layer), and the
//! [`Principal`] extractor every handler takes (the CSRF check for a
//! cookie, then the role and runbook-scope checks).

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{StatusCode, header};

use super::error::ApiError;
use super::session::{check_csrf, session_token};
use super::state::AppState;
use crate::auth::{Action, TokenRow};

/// The authenticated caller.
#[derive(Debug, Clone)]
pub struct Principal(pub TokenRow);

impl Principal {
    pub(super) fn require(&self, action: Action) -> Result<(), ApiError> {
        if self.0.role.allows(action) {
            Ok(())
        } else {
            Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "forbidden",
                format!(
                    "token {:?} has role {}, which may not do this; ask an admin for a token with the right role",
                    self.0.name,
                    self.0.role.as_str()
                ),
            ))
        }
    }

    /// A runbook this token cannot see does not exist, as far as it knows.
    pub(super) fn see(&self, runbook: &str) -> Result<(), ApiError> {
        if self.0.covers(runbook) {
            Ok(())
        } else {
            Err(ApiError::not_found(format!("no runbook {runbook:?}")))
        }
    }
}

/// Who the caller is, as the admission layer found out from the request's
/// headers (before any body is read); handlers get it as a [`Principal`].
#[derive(Debug, Clone)]
pub(super) enum Caller {
    /// A live token: a bearer token, or the one behind a console session.
    Token {
        token: Box<TokenRow>,
        /// The console session id, when it came through the cookie.
        session: Option<String>,
    },
    /// A bearer token that is unknown or revoked.
    BadToken,
    /// A session cookie that is unknown, expired, ended or whose token was
    /// revoked.
    BadSession,
    /// No credentials at all.
    Anonymous,
}

/// Identify the caller from the headers: a bearer token first, else the
/// console's session cookie.
pub(super) async fn identify(
    state: &AppState,
    headers: &axum::http::HeaderMap,
) -> Result<Caller, crate::store::StoreError> {
    let store = state.service.store();
    let bearer = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    if let Some(presented) = bearer {
        return Ok(
            match crate::auth::authenticate(store.as_ref(), presented.trim()).await? {
                Some(token) => Caller::Token {
                    token: Box::new(token),
                    session: None,
                },
                None => Caller::BadToken,
            },
        );
    }
    if let Some(session) = session_token(headers) {
        return Ok(match crate::auth::session(store.as_ref(), session).await? {
            Some(token) => Caller::Token {
                token: Box::new(token),
                session: Some(session.to_string()),
            },
            None => Caller::BadSession,
        });
    }
    Ok(Caller::Anonymous)
}

impl FromRequestParts<AppState> for Principal {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let unauthorized = |m: &str| ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized", m);
        let caller = match parts.extensions.get::<Caller>() {
            Some(c) => c.clone(),
            None => identify(state, &parts.headers).await?,
        };
        match caller {
            Caller::Token { token, session } => {
                // A cookie-authenticated change must carry the session's
                // CSRF token.
                if let Some(session) = session
                    && !parts.method.is_safe()
                {
                    check_csrf(&parts.headers, &session)?;
                }
                Ok(Principal(*token))
            }
            Caller::BadToken => Err(unauthorized("the token is unknown or revoked")),
            Caller::BadSession => Err(unauthorized(
                "the console session has expired, was signed out, or its token was revoked; sign in again",
            )),
            Caller::Anonymous => Err(unauthorized(
                "send `Authorization: Bearer <token>` (or sign in to the console); create a token with `firedrill token create`",
            )),
        }
    }
}

/// Things that span every runbook (the audit log, metrics, the global
/// switch, publishing): a token limited to some runbooks may not use them.
pub(super) fn unscoped(who: &Principal) -> Result<(), ApiError> {
    unscoped_for(who, "this spans every runbook")
}

/// As [`unscoped`], saying `what` is refused and why.
pub(super) fn unscoped_for(who: &Principal, what: &str) -> Result<(), ApiError> {
    if who.0.runbooks.is_empty() {
        Ok(())
    } else {
        Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            format!(
                "{what}; token {:?} is limited to some runbooks and may not use it: use a token without a runbook limit",
                who.0.name
            ),
        ))
    }
}
