//! `[server]` settings: every limit of `firedrill serve`, named, with its
//! default, and the check that refuses settings that cannot work.

use serde::{Deserialize, Serialize};

/// `[server]` in `firedrill.toml`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "kebab-case", default)]
pub struct ServerConfig {
    /// Address to listen on. Default `127.0.0.1:8080` (loopback). On any
    /// other address, set `tls-cert` and `tls-key` (or put a TLS proxy in
    /// front): without them the server warns at start.
    pub listen: String,
    /// PEM file with the server's certificate chain (leaf first); with
    /// `tls-key`, the server speaks HTTPS only. Reloaded on SIGHUP.
    pub tls_cert: Option<std::path::PathBuf>,
    /// PEM file with the private key of `tls-cert`.
    pub tls_key: Option<std::path::PathBuf>,
    /// Connections open at once; more are closed as soon as they are
    /// accepted (and counted as shed `max-connections`). Keep it below the
    /// process's file-descriptor limit. Default 1,024.
    pub max_connections: usize,
    /// Connections one client address may hold open at once (so that one
    /// client cannot take every connection); more are closed as soon as
    /// they are accepted. Behind a proxy every client has the proxy's
    /// address: raise it or set 0 (no per-address limit). Default 128.
    pub max_connections_per_ip: usize,
    /// How long a client may take to send a request's headers (and, with
    /// TLS, to finish the handshake) before the connection is closed, in
    /// milliseconds. Default 10,000.
    pub header_read_timeout_ms: u64,
    /// A connection on which no byte moved either way for this long is
    /// closed (a request in progress still gets its answer), in
    /// milliseconds. Default 60,000.
    pub idle_timeout_ms: u64,
    /// Requests without a valid token (PagerDuty's signed webhook, console
    /// sign-in, the console's pages, and anything presenting no or a bad
    /// token) handled at once; more are shed with 503. They never count
    /// against `max-in-flight`. Default 32.
    pub max_in_flight_unauthenticated: usize,
    /// Deadline of a request without a valid token, body included, in
    /// milliseconds. Default 5,000.
    pub unauthenticated_timeout_ms: u64,
    /// Largest JSON request body, in bytes. Default 256 KiB.
    pub body_bytes: usize,
    /// Largest alert webhook body, in bytes. Default 1 MiB.
    pub webhook_body_bytes: usize,
    /// Deadline of one request, in milliseconds. Default 30,000.
    pub request_timeout_ms: u64,
    /// Requests with a valid token being handled at once; more are shed
    /// with 503. The switch (`/api/v1/switch`) and health checks are never
    /// shed. Default 256.
    pub max_in_flight: usize,
    /// Runs started through the API executing at once. Default 16.
    pub max_concurrent_runs: usize,
    /// Runs accepted and waiting for a slot; more are refused with 429. Default 64.
    pub max_queued_runs: usize,
    /// On shutdown, how long runs in progress may take to finish before
    /// they are recorded as interrupted, in milliseconds. Default 30,000.
    pub shutdown_grace_ms: u64,
    /// Largest kernel upload (`POST /api/v1/kernels`), in bytes. Default 16 MiB.
    pub kernel_upload_bytes: usize,
    /// Runs of one runbook admitted at once (executing + queued); more are
    /// refused with 429. Default 4.
    pub max_runs_per_runbook: usize,
    /// Runs that alerts may start per minute, over every source and
    /// runbook (a token bucket with this burst); beyond it alerts are shed
    /// with 503 so the sender retries. At least 1. Default 30.
    pub trigger_runs_per_minute: u32,
    /// Run the drill scheduler (see `drill:` in runbooks). Default true.
    pub drills: bool,
    /// How often the drill scheduler looks for due drills, in
    /// milliseconds. Default 1,000.
    pub drill_tick_ms: u64,
    /// Names of the secrets (from `[secrets]`) that PagerDuty webhook
    /// signatures are checked against; two during a rotation. Empty (the
    /// default) refuses every PagerDuty request.
    pub pagerduty_secrets: Vec<String>,
    /// PagerDuty event ids each node remembers, to recognise a replayed
    /// delivery (answered 200, counted in
    /// `firedrill_pagerduty_replays_total`, nothing recorded). Per node, not
    /// kept across restarts (a replayed `incident.triggered` is still
    /// deduplicated by its alert claim). 0 remembers none. Default 10,000.
    pub pagerduty_replay_window: usize,
    /// Alerts that matched no trigger kept in memory for
    /// `GET /api/v1/alerts/unmatched` (the newest; each with its first 32
    /// labels, values cut at 256 bytes, and the 5 nearest triggers). Per
    /// node. 0 keeps none (they are still counted and audited); at most
    /// 10,000. Default 100.
    pub unmatched_alerts_kept: usize,
    /// Refusals (403, 409) of one token recorded in the audit log per
    /// minute; more are only counted (`firedrill_refusals_unaudited_total`),
    /// so that a token hammering what it may not do cannot fill the log.
    /// Default 30.
    pub refusals_audited_per_minute: u32,
    /// Mark the console's session cookie `Secure` (sent over HTTPS only).
    /// Set it when a TLS proxy is in front. Default false.
    pub secure_cookie: bool,
    /// How long a console sign-in lasts (the cookie's Max-Age), in
    /// seconds; revoking the token ends it at once. Default 43,200 (12 h).
    pub session_ttl_s: u64,
    /// Live run streams (`GET /api/v1/runs/{id}/events`) open at once;
    /// more are refused with 503. Default 64.
    pub max_event_streams: usize,
    /// Live run streams one token (or console session's token) may hold
    /// open at once; more are refused with 429. Default 8.
    pub max_event_streams_per_token: usize,
    /// How often a live run stream looks for changes, in milliseconds.
    /// Default 250.
    pub event_poll_ms: u64,
    /// The longest a live run stream stays open, in seconds (the console
    /// reconnects). Default 3,600.
    pub event_stream_max_s: u64,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            listen: "127.0.0.1:8080".into(),
            tls_cert: None,
            tls_key: None,
            max_connections: 1024,
            max_connections_per_ip: 128,
            header_read_timeout_ms: 10_000,
            idle_timeout_ms: 60_000,
            max_in_flight_unauthenticated: 32,
            unauthenticated_timeout_ms: 5_000,
            body_bytes: 256 << 10,
            webhook_body_bytes: 1 << 20,
            request_timeout_ms: 30_000,
            max_in_flight: 256,
            max_concurrent_runs: 16,
            max_queued_runs: 64,
            shutdown_grace_ms: 30_000,
            kernel_upload_bytes: 16 << 20,
            max_runs_per_runbook: 4,
            trigger_runs_per_minute: 30,
            pagerduty_secrets: Vec::new(),
            pagerduty_replay_window: 10_000,
            unmatched_alerts_kept: crate::alerts::DEFAULT_UNMATCHED_KEPT,
            refusals_audited_per_minute: 30,
            drills: true,
            drill_tick_ms: 1000,
            secure_cookie: false,
            session_ttl_s: 43_200,
            max_event_streams: 64,
            max_event_streams_per_token: 8,
            event_poll_ms: 250,
            event_stream_max_s: 3600,
        }
    }
}

impl ServerConfig {
    /// Every setting that cannot work, said at start rather than found
    /// under load.
    pub fn check(&self) -> Result<(), String> {
        let mut problems = Vec::new();
        match (&self.tls_cert, &self.tls_key) {
            (Some(_), None) | (None, Some(_)) => problems.push(
                "[server] tls-cert and tls-key go together: set both (HTTPS) or neither (HTTP)"
                    .to_string(),
            ),
            _ => {}
        }
        for name in &self.pagerduty_secrets {
            if !crate::secret::valid_secret_name(name) {
                problems.push(format!(
                    "[server] pagerduty-secrets: {name:?} is not a secret name (1 to 64 letters, digits, '-' or '_'; never a path)"
                ));
            }
        }
        for (key, value) in [
            ("max-connections", self.max_connections as u64),
            ("max-in-flight", self.max_in_flight as u64),
            (
                "max-in-flight-unauthenticated",
                self.max_in_flight_unauthenticated as u64,
            ),
            ("header-read-timeout-ms", self.header_read_timeout_ms),
            ("idle-timeout-ms", self.idle_timeout_ms),
            ("request-timeout-ms", self.request_timeout_ms),
            (
                "unauthenticated-timeout-ms",
                self.unauthenticated_timeout_ms,
            ),
            (
                "max-event-streams-per-token",
                self.max_event_streams_per_token as u64,
            ),
        ] {
            if value == 0 {
                problems.push(format!("[server] {key} is 0; it must be at least 1"));
            }
        }
        if self.unmatched_alerts_kept > crate::alerts::MAX_UNMATCHED_KEPT {
            problems.push(format!(
                "[server] unmatched-alerts-kept is {}; at most {} are kept",
                self.unmatched_alerts_kept,
                crate::alerts::MAX_UNMATCHED_KEPT
            ));
        }
        if self.max_connections > u32::MAX as usize >> 3 {
            problems.push("[server] max-connections is larger than this server can track".into());
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(problems.join("; "))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unmatched_alerts_kept_is_bounded() {
        let at = |n: usize| ServerConfig {
            unmatched_alerts_kept: n,
            ..ServerConfig::default()
        };
        assert!(at(0).check().is_ok());
        assert!(at(crate::alerts::MAX_UNMATCHED_KEPT).check().is_ok());
        let err = at(crate::alerts::MAX_UNMATCHED_KEPT + 1)
            .check()
            .unwrap_err();
        assert!(
            err.contains("unmatched-alerts-kept is 10001; at most 10000"),
            "{err}"
        );
    }
}
