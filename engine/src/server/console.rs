//! The web console: the page shell and its assets (compiled in from `web/`,
//! so nothing is fetched from outside), sign-in with an API token into a
//! server-side session (the HttpOnly `SameSite=Strict` cookie carries a
//! random session id, never the token; the server ends the session at
//! `session-ttl-s`, at sign-out, or when the token is revoked), and the
//! CSRF check that every cookie-authenticated request that changes state
//! must pass. The pages read and act through the same JSON API as every
//! other client, and render every value as text (no `innerHTML`).

use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{Value, json};

use super::error::{ApiError, rejected};
use super::principal::Principal;
use super::session::{SESSION_COOKIE, csrf_for, session_token};
use super::state::AppState;
use crate::auth::Action;

/// The console's files, compiled into the binary.
const ASSETS: &[(&str, &str, &str)] = &[
    (
        "console.js",
        "text/javascript; charset=utf-8",
        include_str!("../../../web/console.js"),
    ),
    (
        "console.css",
        "text/css; charset=utf-8",
        include_str!("../../../web/console.css"),
    ),
];
const SHELL: &str = include_str!("../../../web/console.html");

/// No script, style, font or image from anywhere but this server; no
/// framing; forms and fetches go here only.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/", get(|| async { Redirect::to("/console/") }))
        .route("/console", get(|| async { Redirect::to("/console/") }))
        .route("/console/", get(shell))
        .route("/console/assets/{name}", get(asset))
        .route(
            "/console/session",
            axum::routing::post(sign_in)
                .delete(sign_out)
                .layer(axum::extract::DefaultBodyLimit::max(SIGN_IN_BODY_BYTES)),
        )
        .route("/console/{*page}", get(shell))
        .route("/api/v1/me", get(me))
}

fn hardened(mut response: Response) -> Response {
    let h = response.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    response
}

/// Every console page is the same shell; the script renders the page the
/// path names.
async fn shell() -> Response {
    hardened(
        (
            [
                (header::CONTENT_TYPE, "text/html; charset=utf-8"),
                (header::CACHE_CONTROL, "no-cache"),
            ],
            SHELL,
        )
            .into_response(),
    )
}

async fn asset(Path(name): Path<String>) -> Response {
    match ASSETS.iter().find(|(n, _, _)| *n == name) {
        Some((_, kind, body)) => hardened(
            (
                [
                    (header::CONTENT_TYPE, *kind),
                    (header::CACHE_CONTROL, "no-cache"),
                ],
                *body,
            )
                .into_response(),
        ),
        None => ApiError::not_found(format!("no console asset {name:?}")).into_response(),
    }
}

fn session_cookie(state: &AppState, value: &str, max_age_s: u64) -> HeaderValue {
    let secure = if state.config.secure_cookie {
        "; Secure"
    } else {
        ""
    };
    let cookie = format!(
        "{SESSION_COOKIE}={value}; Path=/; HttpOnly; SameSite=Strict; Max-Age={max_age_s}{secure}"
    );
    // A token is printable ASCII (it was authenticated), so this cannot fail.
    HeaderValue::from_str(&cookie).unwrap_or_else(|_| HeaderValue::from_static("invalid=1"))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SignIn {
    token: String,
}

/// Largest console sign-in body: a token and some JSON around it.
pub const SIGN_IN_BODY_BYTES: usize = 4096;

/// `POST /console/session {"token": "..."}`: check the token and start a
/// server-side session; the cookie carries the session id. Audited as
/// `console.signed-in` by the token.
async fn sign_in(
    State(state): State<AppState>,
    body: Result<Json<SignIn>, axum::extract::rejection::JsonRejection>,
) -> Result<Response, ApiError> {
    let Json(body) = body.map_err(|e| rejected(&e, r#"{"token": TOKEN}"#))?;
    let presented = body.token.trim();
    let Some(token) = crate::auth::authenticate(state.service.store().as_ref(), presented).await?
    else {
        state.metrics.denied("sign-in");
        return Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "the token is unknown or revoked; create one with `firedrill token create`",
        ));
    };
    let session = crate::auth::start_session(
        state.service.store().as_ref(),
        &token,
        state.config.session_ttl_s,
    )
    .await?;
    let mut response = Json(whoami(&token, Some(&session))).into_response();
    response.headers_mut().insert(
        header::SET_COOKIE,
        session_cookie(&state, &session, state.config.session_ttl_s),
    );
    Ok(response)
}

/// `DELETE /console/session`: end the session on the server and forget
/// the cookie (CSRF-checked like any other change).
async fn sign_out(
    State(state): State<AppState>,
    who: Principal,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    if let Some(session) = session_token(&headers) {
        crate::auth::end_session(state.service.store().as_ref(), session, &who.0).await?;
    }
    let mut response = StatusCode::NO_CONTENT.into_response();
    response
        .headers_mut()
        .insert(header::SET_COOKIE, session_cookie(&state, "", 0));
    Ok(response)
}

fn whoami(token: &crate::auth::TokenRow, session: Option<&str>) -> Value {
    let may = |a: Action| token.role.allows(a);
    json!({
        "name": token.name,
        "owner": token.owner,
        "actor": token.actor().to_string(),
        "role": token.role.as_str(),
        "runbooks": token.runbooks,
        "may": {
            "start_run": may(Action::StartRun),
            "cancel_run": may(Action::CancelRun),
            "approve": may(Action::Approve),
            "publish": may(Action::Publish),
            "engage_switch": may(Action::EngageSwitch),
            "release_switch": may(Action::ReleaseSwitch),
            "read_audit": token.runbooks.is_empty(),
        },
        "csrf": session.map(csrf_for),
    })
}

/// `GET /api/v1/me`: who the caller is and what its role allows; with the
/// session cookie, also the CSRF token the console sends back.
async fn me(who: Principal, headers: HeaderMap) -> Json<Value> {
    Json(whoami(&who.0, session_token(&headers)))
}
