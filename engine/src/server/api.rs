//! API v1 handlers, the bearer-token check, and the one error shape:
//! `{"error": {"code": "...", "message": "what failed and what to do"}}`.

use std::collections::BTreeMap;

use axum::extract::{FromRequestParts, Path, Query, State};
use axum::http::request::Parts;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{Value, json};

use super::AppState;
use crate::Mode;
use crate::auth::{Action, TokenRow};
use crate::executor::{RunReport, RunRequest, RunbookSource};
use crate::store::{AuditFilter, RunFilter, RunStatus};

pub use super::error::{ApiError, Refusal};

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
    if let Some(session) = super::console::session_token(headers) {
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
                    super::console::check_csrf(&parts.headers, &session)?;
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

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route("/api/v1/runbooks", get(list_runbooks).post(publish_runbook))
        .route("/api/v1/runbooks/validate", post(validate_runbook))
        .route("/api/v1/runbooks/{name}", get(get_runbook))
        .route("/api/v1/runs", post(start_run).get(list_runs))
        .route("/api/v1/runs/{id}", get(get_run))
        .route("/api/v1/runs/{id}/events", get(super::events::run_events))
        .route("/api/v1/audit", get(audit))
        .route("/api/v1/audit/verify", get(audit_verify))
        .route("/api/v1/switch", get(get_switch).put(set_switch))
        .route("/api/v1/openapi.json", get(openapi))
        .merge(super::manage::routes())
        .merge(super::console::routes())
        .fallback(|| async { ApiError::not_found("no such endpoint; see docs/api.md") })
}

/// The OpenAPI 3.1 description of this API (`openapi.json` beside this file).
pub const OPENAPI: &str = include_str!("openapi.json");

/// `GET /api/v1/openapi.json`: served without a token, like the docs it is.
async fn openapi() -> Response {
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )],
        OPENAPI,
    )
        .into_response()
}

async fn healthz() -> &'static str {
    "ok"
}

async fn readyz(State(state): State<AppState>) -> Result<Json<Value>, ApiError> {
    if let Err(e) = state.service.store().switches().await {
        // Unauthenticated: the store's own error stays in the log.
        let id = uuid::Uuid::now_v7();
        tracing::error!(error_id = %id, error = %e, "readiness check: the store is not reachable");
        return Err(ApiError::unavailable(format!(
            "the store is not reachable (error id {id}; the server log has the details)"
        )));
    }
    if state.shedding() {
        return Err(ApiError::unavailable(
            "shedding load (server.max-in-flight reached)",
        ));
    }
    Ok(Json(json!({"ready": true})))
}

async fn metrics(State(state): State<AppState>, who: Principal) -> Result<String, ApiError> {
    who.require(Action::Read)?;
    // The exposition names every runbook; a scoped token would learn of
    // runbooks that, for it, do not exist.
    unscoped_for(&who, "/metrics names every runbook")?;
    let store = state.service.store();
    let mut gauges = Vec::new();
    for s in store.switches().await? {
        gauges.push((
            "firedrill_switch_engaged",
            "1 when the big red switch of this scope is engaged.",
            format!("scope=\"{}\"", s.scope.replace('"', "")),
            if s.engaged { 1.0 } else { 0.0 },
        ));
    }
    let head = store
        .audit(&AuditFilter {
            limit: 1,
            ..AuditFilter::default()
        })
        .await?
        .last()
        .map_or(0, |r| r.seq);
    gauges.push((
        "firedrill_audit_head_seq",
        "Sequence number of the newest audit record.",
        String::new(),
        head as f64,
    ));
    let queued = state.service.store().queued_runs().await?;
    gauges.push((
        "firedrill_runs_executing",
        "Runs this node is executing (server.max-concurrent-runs bounds it).",
        String::new(),
        state.executing_runs() as f64,
    ));
    for r in crate::drill::readiness(&state.service, state.clock.now()).await? {
        let rb = format!("runbook=\"{}\"", r.runbook.replace(['"', '\\', '\n'], ""));
        gauges.push((
            "firedrill_runbook_ready",
            "1 when the runbook's current version passed a live drill within its max_age.",
            rb.clone(),
            if r.state == crate::drill::Readiness::Ready {
                1.0
            } else {
                0.0
            },
        ));
        gauges.push((
            "firedrill_runbook_readiness",
            "1 for the runbook's readiness state (ready, dry-run-only, stale, failing, never-drilled).",
            format!("{rb},state=\"{}\"", r.state.as_str()),
            1.0,
        ));
        if let Some(age) = r.age_s {
            gauges.push((
                "firedrill_drill_age_seconds",
                "Seconds since the runbook's current version last passed a drill.",
                rb.clone(),
                age as f64,
            ));
        }
        if let Some(max) = r.max_age_s {
            gauges.push((
                "firedrill_drill_max_age_seconds",
                "The runbook's drill max_age.",
                rb,
                max as f64,
            ));
        }
    }
    gauges.push((
        "firedrill_run_queue_depth",
        "Runs queued in the store, waiting for any node to claim them (server.max-queued-runs bounds it).",
        String::new(),
        queued as f64,
    ));
    Ok(state.metrics.render(&gauges))
}

async fn list_runbooks(
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
struct RunbookSourceBody {
    /// The runbook YAML.
    source: String,
}

const RUNBOOK_BODY: &str = r#"{"source": "<runbook YAML>"}"#;

fn invalid(p: &crate::runbook::Problems) -> ApiError {
    ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid", p.to_string())
}

/// `POST /api/v1/runbooks/validate`: every problem, or what would be published.
async fn validate_runbook(
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
async fn publish_runbook(
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
        Json(
            json!({"name": row.name, "version": row.version, "digest": row.digest, "published": new}),
        ),
    ))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct VersionQuery {
    version: Option<i64>,
}

/// `GET /api/v1/runbooks/{name}[?version=N]`: the newest or one version.
async fn get_runbook(
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
    // The parsed definition (steps, kernels, targets, triggers, drill), for
    // readers that should not parse YAML themselves.
    let definition = crate::runbook::parse_runbook(&row.name, &row.source).ok();
    Ok(Json(json!({
        "name": row.name, "version": row.version, "digest": row.digest,
        "source": row.source, "published_at": row.published_at, "published_by": row.published_by,
        "definition": definition,
    })))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct StartRun {
    runbook: String,
    #[serde(default)]
    version: Option<i64>,
    /// `dry-run` (default) or `live`.
    #[serde(default)]
    mode: Option<String>,
    #[serde(default)]
    inputs: BTreeMap<String, Value>,
    /// Run live although the runbook is not `ready` (audited).
    #[serde(default)]
    force_untested: bool,
}

async fn start_run(
    State(state): State<AppState>,
    who: Principal,
    body: Result<Json<StartRun>, axum::extract::rejection::JsonRejection>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    who.require(Action::StartRun)?;
    let Json(body) = body.map_err(|e| {
        rejected(
            &e,
            r#"{"runbook": NAME, "version"?: N, "mode"?: "dry-run"|"live", "inputs"?: {...}, "force_untested"?: BOOL}"#,
        )
    })?;
    who.see(&body.runbook)?;
    let mode = match body.mode.as_deref() {
        None | Some("dry-run") => Mode::DryRun,
        Some("live") => Mode::Live,
        Some(other) => {
            return Err(ApiError::bad_request(format!(
                "mode {other:?} is not `dry-run` or `live`"
            )));
        }
    };
    let source = RunbookSource::Published {
        name: body.runbook.clone(),
        version: body.version,
    };
    if mode == Mode::Live
        && let Some((what, readiness)) =
            crate::drill::untested(&state.service, &source, state.clock.now()).await?
    {
        if !body.force_untested {
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                "not-ready",
                format!(
                    "{what} is {}: it has not passed a live drill within its max_age; drill it (POST /api/v1/drills/{}/run) or send \"force_untested\": true (audited)",
                    readiness.as_str(),
                    body.runbook
                ),
            ));
        }
        crate::drill::record_forced(&state.service, &who.0.actor(), &what, readiness).await?;
    }
    let inputs = body
        .inputs
        .into_iter()
        .map(|(k, v)| {
            let text = match v {
                Value::String(s) => s,
                other => other.to_string(),
            };
            (k, text)
        })
        .collect();
    let prepared = state
        .service
        .prepare(RunRequest {
            source,
            mode,
            actor: who.0.actor(),
            inputs,
        })
        .await?;
    let id = state.admit(prepared).await?;
    Ok((
        StatusCode::ACCEPTED,
        Json(json!({"run_id": id, "mode": mode.as_str(), "href": format!("/api/v1/runs/{id}")})),
    ))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RunQuery {
    runbook: Option<String>,
    status: Option<String>,
    /// The previous page's `next` cursor.
    before: Option<String>,
    limit: Option<i64>,
}

/// Largest page of runs or audit records one request returns.
const MAX_PAGE: i64 = 1000;

async fn list_runs(
    State(state): State<AppState>,
    who: Principal,
    ApiQuery(q): ApiQuery<RunQuery>,
) -> Result<Json<Value>, ApiError> {
    who.require(Action::Read)?;
    let status = match q.status.as_deref() {
        None => None,
        Some(s) => Some(RunStatus::parse(s).ok_or_else(|| {
            ApiError::bad_request(format!(
                "status {s:?} is not one of queued, running, awaiting-approval, needs-attention, succeeded, failed, interrupted, halted, cancelled, abandoned"
            ))
        })?),
    };
    let limit = q.limit.unwrap_or(50).clamp(1, MAX_PAGE);
    let runs = state
        .service
        .store()
        .runs(&RunFilter {
            runbook: q.runbook,
            status,
            before: q.before,
            // A token limited to some runbooks pages through those only.
            runbooks: (!who.0.runbooks.is_empty()).then(|| who.0.runbooks.clone()),
            limit,
        })
        .await?;
    // A full page may have more after it: its last id is the cursor.
    let next = if runs.len() as i64 == limit {
        runs.last().map(|r| r.id.clone())
    } else {
        None
    };
    let visible: Vec<_> = runs
        .into_iter()
        .filter(|r| who.0.covers(&r.runbook))
        .collect();
    Ok(Json(json!({"runs": visible, "next": next})))
}

async fn get_run(
    State(state): State<AppState>,
    who: Principal,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    who.require(Action::Read)?;
    Ok(Json(run_view(&state, &who, &id).await?.1))
}

/// A run as the API shows it (steps, targets, host calls), and its status;
/// a run of a runbook the caller cannot see does not exist.
pub(super) async fn run_view(
    state: &AppState,
    who: &Principal,
    id: &str,
) -> Result<(RunStatus, Value), ApiError> {
    let missing = || ApiError::not_found(format!("no run {id:?}"));
    let Some(report) = RunReport::load(state.service.store().as_ref(), id).await? else {
        return Err(missing());
    };
    if !who.0.covers(&report.runbook) {
        return Err(missing());
    }
    Ok((report.status, report.to_json()))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct AuditQuery {
    run: Option<String>,
    actor: Option<String>,
    action: Option<String>,
    since: Option<String>,
    limit: Option<i64>,
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

async fn audit(
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

async fn audit_verify(
    State(state): State<AppState>,
    who: Principal,
) -> Result<Json<Value>, ApiError> {
    who.require(Action::Read)?;
    unscoped_for(&who, "the audit log spans every runbook")?;
    let v = crate::store::verify_store(state.service.store().as_ref()).await?;
    Ok(Json(serde_json::to_value(&v).unwrap_or_default()))
}

type BodyResult = Result<axum::body::Bytes, axum::extract::rejection::BytesRejection>;

/// A webhook body within `server.webhook-body-bytes`.
fn webhook_body(body: BodyResult) -> Result<axum::body::Bytes, ApiError> {
    body.map_err(|e| {
        if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "too-large",
                "the webhook body is larger than server.webhook-body-bytes",
            )
        } else {
            ApiError::bad_request(e.body_text())
        }
    })
}

/// Decide on `alerts` from `actor` and answer: 200 with one decision per
/// (alert, matching runbook), or 503 when a run was shed (its claim is
/// released, so the sender's retry can start it).
async fn dispatch(
    state: &AppState,
    actor: &crate::audit::Actor,
    scope: &[String],
    alerts: &[crate::alerts::Alert],
) -> Result<Response, ApiError> {
    let admit_state = state.clone();
    let admit = move |run: crate::executor::PreparedRun| -> futures::future::BoxFuture<'static, Result<String, String>> {
        let state = admit_state.clone();
        Box::pin(async move { state.admit_triggered(run).await.map_err(|e| e.message) })
    };
    let decisions = crate::alerts::handle(&state.service, actor, scope, alerts, &admit).await?;
    for d in &decisions {
        state.metrics.alert_decision(d.runbook(), &d.outcome());
    }
    let shed = decisions
        .iter()
        .any(|d| matches!(d, crate::alerts::Decision::Shed { .. }));
    let status = if shed {
        StatusCode::SERVICE_UNAVAILABLE
    } else {
        StatusCode::OK
    };
    let mut response = (
        status,
        Json(json!({"alerts": alerts.len(), "decisions": decisions})),
    )
        .into_response();
    if shed {
        // Alertmanager and PagerDuty retry; tell other senders when.
        response.headers_mut().insert(
            header::RETRY_AFTER,
            HeaderValue::from_static(super::RETRY_AFTER_S),
        );
    }
    Ok(response)
}

/// `POST /api/v1/alerts/alertmanager`: Alertmanager's webhook (version 4);
/// 400 for anything that is not a valid payload.
pub async fn alertmanager(
    State(state): State<AppState>,
    who: Principal,
    body: BodyResult,
) -> Result<Response, ApiError> {
    token_alerts(
        &state,
        &who,
        body,
        crate::alerts::AlertmanagerPayload::parse,
    )
    .await
}

/// An alert endpoint authenticated by a `webhook` token: check, parse, decide.
async fn token_alerts(
    state: &AppState,
    who: &Principal,
    body: BodyResult,
    parse: fn(&[u8]) -> Result<Vec<crate::alerts::Alert>, String>,
) -> Result<Response, ApiError> {
    who.require(Action::PostAlert)?;
    let body = webhook_body(body)?;
    let alerts = parse(&body).map_err(ApiError::bad_request)?;
    dispatch(state, &who.0.actor(), &who.0.runbooks, &alerts).await
}

/// `POST /api/v1/alerts/generic`: alerts from anything that can post JSON.
pub async fn generic(
    State(state): State<AppState>,
    who: Principal,
    body: BodyResult,
) -> Result<Response, ApiError> {
    token_alerts(&state, &who, body, crate::alerts::GenericPayload::parse).await
}

/// `POST /api/v1/alerts/pagerduty`: PagerDuty v3 webhooks, authenticated
/// by their HMAC signature (PagerDuty cannot send a bearer token): 401
/// without a valid signature, 403 when no secret is configured (answered
/// before the body is read), 500 `misconfigured` when no configured secret
/// can be read. A delivery whose event id was handled before is a replay:
/// answered 200 and counted, nothing recorded.
pub async fn pagerduty(
    State(state): State<AppState>,
    headers: axum::http::HeaderMap,
    body: axum::body::Body,
) -> Result<Response, ApiError> {
    let forbidden = |m: String| ApiError::new(StatusCode::FORBIDDEN, "forbidden", m);
    let unauthorized = |m: String| ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized", m);
    if state.config.pagerduty_secrets.is_empty() {
        return Err(forbidden(
            "PagerDuty webhooks are not enabled; name the signing secret in server.pagerduty-secrets".into(),
        ));
    }
    let signature = headers
        .get("x-pagerduty-signature")
        .and_then(|v| v.to_str().ok())
        .ok_or_else(|| {
            unauthorized(
                "X-PagerDuty-Signature is missing; only PagerDuty v3 webhooks are accepted here"
                    .into(),
            )
        })?
        .to_string();
    let mut secrets = Vec::new();
    for name in &state.config.pagerduty_secrets {
        match state.service.host().secrets().get(name) {
            Ok(s) => secrets.push(s),
            Err(e) => {
                tracing::error!(secret = %name, error = %e, "PagerDuty signing secret unavailable")
            }
        }
    }
    if secrets.is_empty() {
        state.metrics.inc(
            "firedrill_config_errors_total",
            &[("what", "pagerduty-secrets")],
        );
        return Err(ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "misconfigured",
            "none of the secrets in server.pagerduty-secrets can be read, so no delivery can be verified; the server's operator must fix it (the server log says why)",
        ));
    }
    let body = axum::body::to_bytes(body, state.config.webhook_body_bytes)
        .await
        .map_err(|_| {
            ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "too-large",
                "the webhook body is larger than server.webhook-body-bytes, or was not sent in time",
            )
        })?;
    crate::alerts::verify_pagerduty_signature(&secrets, &signature, &body).map_err(unauthorized)?;
    let event_id = crate::alerts::PagerDutyEvent::event_id(&body);
    if let Some(id) = &event_id
        && state.pagerduty_seen(id)
    {
        state.metrics.inc("firedrill_pagerduty_replays_total", &[]);
        return Ok(Json(json!({"alerts": 0, "replay": true})).into_response());
    }
    let actor = crate::audit::Actor::engine(
        crate::audit::ActorKind::AlertSource,
        "pagerduty",
        crate::audit::Via::Signature,
    );
    let response =
        match crate::alerts::PagerDutyEvent::parse(&body).map_err(ApiError::bad_request)? {
            crate::alerts::PagerDutyDelivery::Alert(alert) => {
                dispatch(&state, &actor, &[], &[alert]).await?
            }
            crate::alerts::PagerDutyDelivery::Ignored(event_type) => {
                state
                    .service
                    .store()
                    .apply(
                        crate::store::Batch::new().event(
                            crate::audit::NewEvent::new(
                                &actor,
                                crate::audit::Action::AlertIgnored,
                                "pagerduty",
                            )
                            .details(json!({"event_type": event_type})),
                        ),
                    )
                    .await?;
                Json(json!({"alerts": 0, "ignored": event_type})).into_response()
            }
        };
    // Only a delivery that was handled is remembered: PagerDuty's retry
    // of one that failed or was shed must be handled again.
    if let Some(id) = event_id
        && response.status().is_success()
    {
        state.remember_pagerduty(id);
    }
    Ok(response)
}

async fn get_switch(
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
struct SetSwitch {
    engaged: bool,
    reason: String,
    /// One runbook; absent = global.
    #[serde(default)]
    runbook: Option<String>,
}

async fn set_switch(
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
