//! Server-sent events: a run, sent again each time it changes, so the
//! console's timeline updates while the run executes without reloading.
//! Bounded: `max-event-streams` open at once (`max-event-streams-per-token`
//! of them per token), each open at most
//! `event-stream-max-s` (the browser's EventSource reconnects), polling the
//! store every `event-poll-ms`.

use std::convert::Infallible;
use std::time::Duration;

use axum::extract::{Path, State};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use tokio::time::Instant;

use super::error::ApiError;
use super::principal::{Caller, Principal};
use super::runs::run_view;
use super::state::AppState;
use crate::auth::Action;
use crate::store::RunStatus;

/// Whether the credentials a stream was opened with still hold: the
/// token is live, and the console session (if it came through one) has
/// not ended or expired.
async fn still_valid(
    state: &AppState,
    who: &Principal,
    session: Option<&str>,
) -> Result<bool, crate::store::StoreError> {
    let store = state.service.store();
    Ok(match session {
        Some(s) => crate::auth::session(store.as_ref(), s)
            .await?
            .is_some_and(|t| t.id == who.0.id),
        None => store
            .token_by_hash(&who.0.hash)
            .await?
            .is_some_and(|t| t.revoked_at.is_none()),
    })
}

/// Whether a run in `status` can still change on its own or by a decision.
fn settled(status: RunStatus) -> bool {
    !status.is_pending() && status != RunStatus::NeedsAttention
}

/// `GET /api/v1/runs/{id}/events`: `event: run` with the run's JSON (as
/// `GET /api/v1/runs/{id}`) now and after every change; the stream ends
/// after the run settles. A store error ends it with `event: error`.
pub async fn run_events(
    State(state): State<AppState>,
    who: Principal,
    caller: Option<axum::Extension<Caller>>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let session = caller.and_then(|axum::Extension(c)| match c {
        Caller::Token { session, .. } => session,
        _ => None,
    });
    who.require(Action::Read)?;
    let Some(slot) = state.stream_slot(&who.0.id) else {
        return Err(ApiError::new(
            axum::http::StatusCode::TOO_MANY_REQUESTS,
            "too-many-streams",
            format!(
                "token {:?} has {} live run streams open already (server.max-event-streams-per-token); close one",
                who.0.name, state.config.max_event_streams_per_token
            ),
        ));
    };
    let Ok(permit) = state.event_streams.clone().try_acquire_owned() else {
        return Err(ApiError::unavailable(format!(
            "{} live run streams are open already (server.max-event-streams); retry shortly",
            state.config.max_event_streams
        )));
    };
    // A run the caller may not see is refused before the stream opens.
    let first = run_view(&state, &who, &id).await?;
    let poll = Duration::from_millis(state.config.event_poll_ms.max(50));
    let until = Instant::now() + Duration::from_secs(state.config.event_stream_max_s);
    struct Cursor {
        next: Option<Result<(RunStatus, serde_json::Value), ApiError>>,
        last: String,
        done: bool,
    }
    let cursor = Cursor {
        next: Some(Ok(first)),
        last: String::new(),
        done: false,
    };
    let stream = futures::stream::unfold(cursor, move |mut c| {
        let (state, who, id, session) = (state.clone(), who.clone(), id.clone(), session.clone());
        async move {
            if c.done {
                return None;
            }
            loop {
                let view = match c.next.take() {
                    Some(v) => v,
                    None => {
                        if Instant::now() >= until {
                            return None;
                        }
                        tokio::time::sleep(poll).await;
                        // A revoked token or an ended session ends its
                        // streams too, not only its next request.
                        match still_valid(&state, &who, session.as_deref()).await {
                            Ok(true) => run_view(&state, &who, &id).await,
                            Ok(false) => Err(ApiError::new(
                                axum::http::StatusCode::UNAUTHORIZED,
                                "unauthorized",
                                "the token was revoked or the console session ended; sign in again",
                            )),
                            Err(e) => Err(ApiError::internal(e)),
                        }
                    }
                };
                let (status, value) = match view {
                    Ok(v) => v,
                    Err(e) => {
                        c.done = true;
                        let event = Event::default().event("error").data(e.message);
                        return Some((Ok::<_, Infallible>(event), c));
                    }
                };
                let text = value.to_string();
                if text != c.last {
                    c.done = settled(status);
                    c.last = text;
                    let event = Event::default().event("run").data(c.last.clone());
                    return Some((Ok(event), c));
                }
                if settled(status) {
                    return None;
                }
            }
        }
    });
    // The permit and the token's slot live as long as the stream.
    let stream = futures::StreamExt::map(stream, move |e| {
        let _held = (&permit, &slot);
        e
    });
    Ok(Sse::new(stream)
        .keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
        .into_response())
}
