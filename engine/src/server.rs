//! `firedrill serve`: the HTTP API (axum) in front of the same [`Service`]
//! the CLI uses.
//!
//! Admission control, every limit a `[server]` key: request bodies are
//! capped (`body-bytes`), each request has a deadline (`request-timeout-ms`),
//! requests in flight are capped (`max-in-flight`: beyond it, 503 with
//! Retry-After, health checks excepted), and runs admitted through the API
//! are bounded (`max-concurrent-runs` executing, `max-queued-runs` waiting:
//! beyond that, 429). Nothing queues without bound.
//!
//! Access: every `/api` and `/metrics` request needs a bearer token
//! (`firedrill token create`); its role decides what it may do (see
//! [`crate::auth`]), and its name is the actor in the audit log. 401 when
//! the token is missing or unknown, 403 when the role does not allow the
//! action, 404 for runbooks and runs a runbook-limited token cannot see.

mod admission;
mod audit;
mod config;
mod console;
mod drills;
mod error;
mod events;
mod health;
mod kernels;
pub mod listen;
mod principal;
mod routes;
mod runbooks;
mod runs;
mod session;
mod state;
mod switch;
mod tokens;
mod webhooks;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

pub use crate::metrics::Metrics;
pub use config::ServerConfig;
pub use error::ApiError;
pub use health::OPENAPI;
pub use routes::router;
pub use state::{AppState, SCHEDULER_LEASE};

/// Serve until `shutdown` resolves, then stop accepting, let requests and
/// runs in progress finish (up to the grace period), and return.
pub async fn serve(
    state: AppState,
    listener: tokio::net::TcpListener,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let addr: Option<SocketAddr> = listener.local_addr().ok();
    state.config.check().map_err(std::io::Error::other)?;
    tracing::info!(?addr, "firedrill serve listening");
    let (stop, mut stopped) = tokio::sync::watch::channel(false);
    state.ensure_worker();
    let drills = state.config.drills.then(|| {
        let state = state.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(
                state.config.drill_tick_ms.max(10),
            ));
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = tick.tick() => {}
                    _ = stopped.changed() => break,
                }
                if let Err(e) = state.drill_tick().await {
                    tracing::error!(error = %e, "drill scheduler tick failed; retrying at the next tick");
                }
            }
        })
    });
    let tls = match (&state.config.tls_cert, &state.config.tls_key) {
        (Some(cert), Some(key)) => Some(Arc::new(
            listen::Tls::load(cert, key).map_err(std::io::Error::other)?,
        )),
        _ => None,
    };
    if tls.is_none() && addr.is_some_and(|a| !listen::is_loopback(&a)) {
        tracing::warn!(
            ?addr,
            "listening on a non-loopback address without TLS: tokens and sessions cross the network in clear text; set [server] tls-cert and tls-key, or put a TLS proxy in front"
        );
    }
    listen::accept(&state, listener, router(state.clone()), tls, shutdown).await;
    // Let a tick in progress finish (its writes are not cut in half).
    let _ = stop.send(true);
    if let Some(task) = drills {
        let _ = task.await;
    }
    let interrupted = state.drain_runs().await;
    tracing::info!(interrupted, "firedrill serve stopped");
    Ok(())
}
