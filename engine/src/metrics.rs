//! Prometheus text exposition of what the engine does (runs, steps, host
//! calls, retries) and what the server does (responses, shedding, alerts).
//!
//! Counters and histograms live here; gauges that describe stored state
//! (switches, the audit head) are read from the store at scrape time.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Mutex;
use std::time::Duration;

/// Upper bounds (seconds) of every duration histogram.
const BUCKETS: [f64; 14] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0,
];

/// Every metric family: name, type, help. Only these may be recorded.
const FAMILIES: &[(&str, &str, &str)] = &[
    (
        "firedrill_runs_taken_over_total",
        "counter",
        "Runs this node took over after their node's lease expired.",
    ),
    (
        "firedrill_http_responses_total",
        "counter",
        "HTTP responses by status code.",
    ),
    (
        "firedrill_shed_total",
        "counter",
        "Requests, runs and alerts refused to protect the service, by reason.",
    ),
    (
        "firedrill_denied_total",
        "counter",
        "Requests and host calls refused by authentication, authorization or policy, by reason.",
    ),
    (
        "firedrill_runs_started_total",
        "counter",
        "Runs started, by runbook, mode and trigger (api, alert, cli, drill).",
    ),
    (
        "firedrill_runs_finished_total",
        "counter",
        "Runs finished, by runbook, mode and status.",
    ),
    (
        "firedrill_alert_decisions_total",
        "counter",
        "Alerts matched to runbooks, by decision (started, duplicate, resolved, cooldown, rate-limited, breaker-open, not-ready, halted, refused, shed, out-of-scope).",
    ),
    (
        "firedrill_notifications_total",
        "counter",
        "Posts to notification sinks (one per Alertmanager sync, one per webhook or Slack delivery attempt), by sink and outcome (sent, failed).",
    ),
    (
        "firedrill_notifications_dropped_total",
        "counter",
        "Notifications not sent, by sink and reason: max-alerts (beyond [notify] max-alerts in one Alertmanager sync; sent at a later one), queue-full (the oldest deliveries beyond max-queued), gave-up (not delivered within give-up-s), rejected (a 4xx about the request itself: not 401, 403, 404, 408, 409, 410 or 429), sink-removed. Each but max-alerts is audited as notification.dropped.",
    ),
    (
        "firedrill_alerts_unmatched_total",
        "counter",
        "Alerts that matched no trigger, by source (GET /api/v1/alerts/unmatched lists the last ones and why).",
    ),
    (
        "firedrill_host_calls_total",
        "counter",
        "Host calls made by kernels, by kind, effect and outcome (done, planned, denied, error, timeout, lost...).",
    ),
    (
        "firedrill_retries_total",
        "counter",
        "Retries: step attempts after a failure (kind=step) and connection retries/reconnects inside host calls (kind=connect, reconnect).",
    ),
    (
        "firedrill_config_errors_total",
        "counter",
        "Requests that failed on a misconfiguration of this server (what: the setting), not on load or the request.",
    ),
    (
        "firedrill_refusals_unaudited_total",
        "counter",
        "Refusals of authenticated callers beyond server.refusals-audited-per-minute (per token): counted, not audited.",
    ),
    (
        "firedrill_pagerduty_replays_total",
        "counter",
        "Signed PagerDuty deliveries whose event id was handled before: answered, nothing recorded.",
    ),
    (
        "firedrill_tls_handshake_failures_total",
        "counter",
        "Connections closed because their TLS handshake failed or took longer than server.header-read-timeout-ms.",
    ),
    (
        "firedrill_drills_skipped_total",
        "counter",
        "Due drills the scheduler could not start (switch, invalid drill inputs, server busy).",
    ),
    (
        "firedrill_run_duration_seconds",
        "histogram",
        "Wall time of runs, by runbook.",
    ),
    (
        "firedrill_step_duration_seconds",
        "histogram",
        "Wall time of steps (all attempts), by runbook and status.",
    ),
];

#[derive(Debug, Default)]
struct Histogram {
    buckets: [u64; BUCKETS.len()],
    count: u64,
    sum: f64,
}

#[derive(Debug, Default)]
struct Inner {
    counters: BTreeMap<&'static str, BTreeMap<String, u64>>,
    histograms: BTreeMap<&'static str, BTreeMap<String, Histogram>>,
}

/// The engine's metrics, shared by the server and the run service.
#[derive(Debug, Default)]
pub struct Metrics {
    inner: Mutex<Inner>,
}

/// Escape a label value for the text format.
fn label(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// `k="v",...` with values escaped.
fn labels(pairs: &[(&str, &str)]) -> String {
    pairs
        .iter()
        .map(|(k, v)| format!("{k}=\"{}\"", label(v)))
        .collect::<Vec<_>>()
        .join(",")
}

/// `{labels}`, or nothing when there are none.
fn braces(labels: &str) -> String {
    if labels.is_empty() {
        String::new()
    } else {
        format!("{{{labels}}}")
    }
}

impl Metrics {
    fn with<R>(&self, f: impl FnOnce(&mut Inner) -> R) -> R {
        f(&mut self.inner.lock().unwrap_or_else(|e| e.into_inner()))
    }

    /// Add one to counter `name` with `pairs` as labels.
    pub fn inc(&self, name: &'static str, pairs: &[(&str, &str)]) {
        self.add(name, pairs, 1);
    }

    /// Add `n` to counter `name`.
    pub fn add(&self, name: &'static str, pairs: &[(&str, &str)], n: u64) {
        debug_assert!(
            FAMILIES.iter().any(|f| f.0 == name),
            "unknown metric {name}"
        );
        let key = labels(pairs);
        self.with(|m| *m.counters.entry(name).or_default().entry(key).or_default() += n);
    }

    /// Record a duration in histogram `name`.
    pub fn observe(&self, name: &'static str, pairs: &[(&str, &str)], took: Duration) {
        debug_assert!(
            FAMILIES.iter().any(|f| f.0 == name),
            "unknown metric {name}"
        );
        let key = labels(pairs);
        let s = took.as_secs_f64();
        self.with(|m| {
            let h = m
                .histograms
                .entry(name)
                .or_default()
                .entry(key)
                .or_default();
            for (i, bound) in BUCKETS.iter().enumerate() {
                if s <= *bound {
                    h.buckets[i] += 1;
                }
            }
            h.count += 1;
            h.sum += s;
        });
    }

    pub fn response(&self, status: u16) {
        self.inc(
            "firedrill_http_responses_total",
            &[("code", &status.to_string())],
        );
    }

    pub fn shed(&self, reason: &'static str) {
        self.inc("firedrill_shed_total", &[("reason", reason)]);
    }

    pub fn denied(&self, reason: &'static str) {
        self.inc("firedrill_denied_total", &[("reason", reason)]);
    }

    pub fn run_started(&self, runbook: &str, mode: &str, trigger: &str) {
        self.inc(
            "firedrill_runs_started_total",
            &[("runbook", runbook), ("mode", mode), ("trigger", trigger)],
        );
    }

    pub fn run_finished(&self, runbook: &str, mode: &str, status: &str, took: Duration) {
        self.inc(
            "firedrill_runs_finished_total",
            &[("runbook", runbook), ("mode", mode), ("status", status)],
        );
        self.observe(
            "firedrill_run_duration_seconds",
            &[("runbook", runbook)],
            took,
        );
    }

    /// One alert's decision (`outcome`) for `runbook`.
    pub fn alert_decision(&self, runbook: &str, outcome: &str) {
        self.inc(
            "firedrill_alert_decisions_total",
            &[("runbook", runbook), ("decision", outcome)],
        );
    }

    /// Shed requests so far, all reasons.
    pub fn shed_total(&self) -> u64 {
        self.with(|m| {
            m.counters
                .get("firedrill_shed_total")
                .map_or(0, |c| c.values().sum())
        })
    }

    /// The text exposition; `gauges` are (name, help, labels, value) read
    /// from elsewhere at scrape time.
    pub fn render(&self, gauges: &[(&str, &str, String, f64)]) -> String {
        let mut out = String::new();
        self.with(|m| {
            for (name, kind, help) in FAMILIES {
                let _ = writeln!(out, "# HELP {name} {help}");
                let _ = writeln!(out, "# TYPE {name} {kind}");
                for (key, n) in m.counters.get(name).into_iter().flatten() {
                    let _ = writeln!(out, "{name}{} {n}", braces(key));
                }
                for (key, h) in m.histograms.get(name).into_iter().flatten() {
                    let sep = if key.is_empty() { "" } else { "," };
                    for (i, bound) in BUCKETS.iter().enumerate() {
                        let _ = writeln!(
                            out,
                            "{name}_bucket{{{key}{sep}le=\"{bound}\"}} {}",
                            h.buckets[i]
                        );
                    }
                    let _ = writeln!(out, "{name}_bucket{{{key}{sep}le=\"+Inf\"}} {}", h.count);
                    let _ = writeln!(out, "{name}_sum{} {}", braces(key), h.sum);
                    let _ = writeln!(out, "{name}_count{} {}", braces(key), h.count);
                }
            }
        });
        // One family's lines must be together: group by name, keeping order.
        let mut order: Vec<&str> = Vec::new();
        for (name, ..) in gauges {
            if !order.contains(name) {
                order.push(name);
            }
        }
        let mut grouped: Vec<&(&str, &str, String, f64)> = gauges.iter().collect();
        grouped.sort_by_key(|g| order.iter().position(|n| *n == g.0));
        let mut seen = std::collections::BTreeSet::new();
        for (name, help, labels, value) in grouped {
            if seen.insert(*name) {
                let _ = writeln!(out, "# HELP {name} {help}");
                let _ = writeln!(out, "# TYPE {name} gauge");
            }
            let _ = writeln!(out, "{name}{} {value}", braces(labels));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_counters_histograms_and_gauges() {
        let m = Metrics::default();
        m.response(200);
        m.response(200);
        m.shed("in-flight");
        m.run_started("re\"start", "live", "api");
        m.run_finished("re\"start", "live", "succeeded", Duration::from_millis(300));
        let text = m.render(&[(
            "firedrill_switch_engaged",
            "1 when engaged.",
            "scope=\"global\"".into(),
            1.0,
        )]);
        assert!(
            text.contains("firedrill_http_responses_total{code=\"200\"} 2"),
            "{text}"
        );
        assert!(text.contains("firedrill_shed_total{reason=\"in-flight\"} 1"));
        assert!(text.contains(
            "firedrill_runs_started_total{runbook=\"re\\\"start\",mode=\"live\",trigger=\"api\"} 1"
        ));
        assert!(text.contains("le=\"0.25\"} 0"));
        assert!(text.contains("le=\"0.5\"} 1"));
        assert!(text.contains("le=\"+Inf\"} 1"));
        assert!(text.contains("firedrill_switch_engaged{scope=\"global\"} 1"));
        assert_eq!(m.shed_total(), 1);
    }
}
