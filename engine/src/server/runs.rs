//! `/api/v1/runs`: start (through admission), list, show ([`run_view`]:
//! the [`crate::executor::RunReport`] a token may see), and run control:
//! cancel, resume, skip, abandon, approve, deny.

use std::collections::BTreeMap;

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde::Deserialize;
use serde_json::{Value, json};

use super::error::{ApiError, ApiQuery, rejected};
use super::principal::Principal;
use super::state::AppState;
use crate::Mode;
use crate::auth::Action;
use crate::executor::{RunReport, RunRequest, RunSummary, RunbookSource};
use crate::store::{RunFilter, RunStatus};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct StartRun {
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
    /// Answer when the run stops moving on its own (finished, or waiting
    /// for a decision) or after this many milliseconds, whichever is
    /// first; at most [`max_wait_ms`] of `server.request-timeout-ms`.
    /// Absent: answer at once.
    #[serde(default)]
    wait_ms: Option<u64>,
}

pub(super) async fn start_run(
    State(state): State<AppState>,
    who: Principal,
    arrived: Option<axum::Extension<super::admission::Arrived>>,
    body: Result<Json<StartRun>, axum::extract::rejection::JsonRejection>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    who.require(Action::StartRun)?;
    let Json(body) = body.map_err(|e| {
        rejected(
            &e,
            r#"{"runbook": NAME, "version"?: N, "mode"?: "dry-run"|"live", "inputs"?: {...}, "force_untested"?: BOOL, "wait_ms"?: N}"#,
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
    // The wait ends a margin before the request's own deadline, counted
    // from when the request arrived, so the answer always carries the run.
    let arrived = arrived.map_or_else(tokio::time::Instant::now, |a| a.0.0);
    let wait = match body.wait_ms {
        Some(ms) if ms > max_wait_ms(state.config.request_timeout_ms) => {
            return Err(ApiError::bad_request(format!(
                "wait_ms is {ms}; it must be at most {} (server.request-timeout-ms, {}, less {WAIT_MARGIN_MS} ms or a tenth, whichever is more), or the request could time out with the run started: wait less, or follow the run (GET /api/v1/runs/{{id}}/events)",
                max_wait_ms(state.config.request_timeout_ms),
                state.config.request_timeout_ms
            )));
        }
        ms => ms.map(|ms| arrived + std::time::Duration::from_millis(ms)),
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
    // Watched before it is admitted, so its end cannot be missed.
    let watch = wait.map(|wait| (wait, state.worker.watch(&prepared.id)));
    let id = state.admit(prepared).await?;
    let mut answer =
        json!({"run_id": id, "mode": mode.as_str(), "href": format!("/api/v1/runs/{id}")});
    let Some((until, watch)) = watch else {
        return Ok((StatusCode::ACCEPTED, Json(answer)));
    };
    // The run has started: from here on, every answer carries its id (a
    // failed read is not a failed start, and a retry would start another).
    // The reads at the end are bounded too: half the margin is left for
    // the answer itself.
    let timeout = state.config.request_timeout_ms;
    let cut =
        arrived + std::time::Duration::from_millis(timeout - (timeout - max_wait_ms(timeout)) / 2);
    let waited = tokio::time::timeout_at(cut, wait_for(&state, &who, &id, until, watch))
        .await
        .unwrap_or_else(|_| {
            Err(ApiError::unavailable(
                "the run could not be read before the request's deadline",
            ))
        });
    match waited {
        Ok((stopped, run)) => {
            answer["run"] = run;
            let status = if stopped {
                StatusCode::OK
            } else {
                StatusCode::ACCEPTED
            };
            Ok((status, Json(answer)))
        }
        Err(e) => {
            tracing::warn!(run_id = %id, error = %e.message, "cannot follow a run it started; answered with its id");
            Ok((StatusCode::ACCEPTED, Json(answer)))
        }
    }
}

/// What a wait leaves of the request's deadline at least.
const WAIT_MARGIN_MS: u64 = 1_000;

/// The longest `wait_ms` under `request_timeout_ms`: less
/// [`WAIT_MARGIN_MS`] or a tenth of it, whichever is more.
fn max_wait_ms(request_timeout_ms: u64) -> u64 {
    request_timeout_ms.saturating_sub(WAIT_MARGIN_MS.max(request_timeout_ms / 10))
}

/// Whether a run in `status` still moves on its own (queued or executing),
/// as opposed to finished or waiting for a person.
fn moving(status: RunStatus) -> bool {
    matches!(status, RunStatus::Queued | RunStatus::Running)
}

/// Wait until `until` for run `id` to stop moving on its own (or this
/// node to stop its worker): woken at once when this node's slot for it
/// frees (`watch`; then the full view is read straight away), and reading
/// its status every `event-poll-ms` (a run another node executes, or one
/// waiting at an approval). The full view is read once the run has
/// stopped or the wait is over. Returns whether it stopped, and its view.
async fn wait_for(
    state: &AppState,
    who: &Principal,
    id: &str,
    until: tokio::time::Instant,
    mut watch: crate::executor::RunWatch,
) -> Result<(bool, Value), ApiError> {
    let poll = std::time::Duration::from_millis(state.config.event_poll_ms.max(50));
    let mut stopping = state.worker.stopping();
    loop {
        let left = until.saturating_duration_since(tokio::time::Instant::now());
        let (freed, ending) = tokio::select! {
            () = watch.stopped() => (true, false),
            () = tokio::time::sleep(poll.min(left)) => (false, false),
            _ = stopping.wait_for(|s| *s) => (false, true),
        };
        let over = ending || tokio::time::Instant::now() >= until;
        // A freed slot almost always means the run has stopped: read its
        // view at once (it may also have gone to another node: then wait on).
        if !freed && !over {
            let status = state
                .service
                .store()
                .run(id)
                .await?
                .map_or(RunStatus::Queued, |r| r.status);
            if moving(status) {
                continue;
            }
        }
        let (status, view) = run_view(state, who, id).await?;
        if !moving(status) || over {
            return Ok((!moving(status), view));
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RunQuery {
    runbook: Option<String>,
    status: Option<String>,
    /// The previous page's `next` cursor.
    before: Option<String>,
    limit: Option<i64>,
}

/// Largest page of runs or audit records one request returns.
pub(super) const MAX_PAGE: i64 = 1000;

pub(super) async fn list_runs(
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
        .iter()
        .filter(|r| who.0.covers(&r.runbook))
        .map(RunSummary::new)
        .collect();
    Ok(Json(json!({"runs": visible, "next": next})))
}

pub(super) async fn get_run(
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
    if !who.0.covers(&report.run.runbook) {
        return Err(missing());
    }
    Ok((report.run.status, report.to_json()))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct Reason {
    reason: String,
}

pub(super) const REASON_BODY: &str = r#"{"reason": TEXT}"#;

/// The run, if this token may see it; 404 otherwise.
pub(super) async fn visible_run(
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
pub(super) async fn cancel_run(
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
        Json(crate::view::cancel_requested(&id)),
    ))
}

/// `POST /api/v1/runs/{id}/resume`: continue a halted run where it
/// stopped, or a run that needs attention by running its unfinished step
/// again.
pub(super) async fn resume_run(
    State(state): State<AppState>,
    who: Principal,
    Path(id): Path<String>,
    body: Result<Json<Reason>, axum::extract::rejection::JsonRejection>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    continue_run(state, who, id, body, false).await
}

/// `POST /api/v1/runs/{id}/skip`: continue a run that needs attention after
/// its unfinished step (marked skipped).
pub(super) async fn skip_run(
    State(state): State<AppState>,
    who: Principal,
    Path(id): Path<String>,
    body: Result<Json<Reason>, axum::extract::rejection::JsonRejection>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    continue_run(state, who, id, body, true).await
}

pub(super) async fn continue_run(
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
pub(super) async fn abandon_run(
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
    Ok(Json(crate::view::abandoned(&id)))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct Comment {
    comment: String,
}

pub(super) async fn decide(
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
    Ok(Json(crate::view::decided(id, &step, approve)))
}

/// `POST /api/v1/runs/{id}/approve {comment}`.
pub(super) async fn approve_run(
    State(state): State<AppState>,
    who: Principal,
    Path(id): Path<String>,
    body: Result<Json<Comment>, axum::extract::rejection::JsonRejection>,
) -> Result<Json<Value>, ApiError> {
    decide(&state, &who, &id, body, true).await
}

/// `POST /api/v1/runs/{id}/deny {comment}`.
pub(super) async fn deny_run(
    State(state): State<AppState>,
    who: Principal,
    Path(id): Path<String>,
    body: Result<Json<Comment>, axum::extract::rejection::JsonRejection>,
) -> Result<Json<Value>, ApiError> {
    decide(&state, &who, &id, body, false).await
}
