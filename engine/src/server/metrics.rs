//! Prometheus text exposition of what the server does.
//!
//! Counters and histograms live here; gauges that describe stored state
//! (switches, the audit head) are read from the store at scrape time.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Mutex;
use std::time::Duration;

/// Upper bounds (seconds) of the run duration histogram.
const RUN_BUCKETS: [f64; 10] = [0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0];

#[derive(Debug, Default)]
struct Histogram {
    buckets: [u64; RUN_BUCKETS.len()],
    count: u64,
    sum: f64,
}

#[derive(Debug, Default)]
struct Inner {
    responses: BTreeMap<u16, u64>,
    shed: BTreeMap<&'static str, u64>,
    runs_started: BTreeMap<(String, String), u64>,
    runs_finished: BTreeMap<(String, String, String), u64>,
    run_seconds: BTreeMap<String, Histogram>,
    alert_decisions: BTreeMap<(String, String), u64>,
}

/// The server's metrics.
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

impl Metrics {
    fn with<R>(&self, f: impl FnOnce(&mut Inner) -> R) -> R {
        f(&mut self.inner.lock().unwrap_or_else(|e| e.into_inner()))
    }

    pub fn response(&self, status: u16) {
        self.with(|m| *m.responses.entry(status).or_default() += 1);
    }

    pub fn shed(&self, reason: &'static str) {
        self.with(|m| *m.shed.entry(reason).or_default() += 1);
    }

    pub fn run_started(&self, runbook: &str, mode: &str) {
        self.with(|m| {
            *m.runs_started
                .entry((runbook.into(), mode.into()))
                .or_default() += 1
        });
    }

    pub fn run_finished(&self, runbook: &str, mode: &str, status: &str, took: Duration) {
        self.with(|m| {
            *m.runs_finished
                .entry((runbook.into(), mode.into(), status.into()))
                .or_default() += 1;
            let h = m.run_seconds.entry(runbook.into()).or_default();
            let s = took.as_secs_f64();
            for (i, bound) in RUN_BUCKETS.iter().enumerate() {
                if s <= *bound {
                    h.buckets[i] += 1;
                }
            }
            h.count += 1;
            h.sum += s;
        });
    }

    pub fn alert_decision(&self, d: &crate::alerts::Decision) {
        let v = serde_json::to_value(d).unwrap_or_default();
        let runbook = v["runbook"].as_str().unwrap_or_default().to_string();
        let outcome = v["outcome"].as_str().unwrap_or_default().to_string();
        self.with(|m| *m.alert_decisions.entry((runbook, outcome)).or_default() += 1);
    }

    /// Shed requests so far, all reasons.
    pub fn shed_total(&self) -> u64 {
        self.with(|m| m.shed.values().sum())
    }

    /// The text exposition; `gauges` are (name, help, labels, value) read
    /// from elsewhere at scrape time.
    pub fn render(&self, gauges: &[(&str, &str, String, f64)]) -> String {
        let mut out = String::new();
        self.with(|m| {
            let _ = writeln!(out, "# HELP firedrill_http_responses_total HTTP responses by status code.");
            let _ = writeln!(out, "# TYPE firedrill_http_responses_total counter");
            for (code, n) in &m.responses {
                let _ = writeln!(out, "firedrill_http_responses_total{{code=\"{code}\"}} {n}");
            }
            let _ = writeln!(out, "# HELP firedrill_shed_total Requests and runs refused to protect the service.");
            let _ = writeln!(out, "# TYPE firedrill_shed_total counter");
            for (reason, n) in &m.shed {
                let _ = writeln!(out, "firedrill_shed_total{{reason=\"{reason}\"}} {n}");
            }
            let _ = writeln!(out, "# HELP firedrill_runs_started_total Runs admitted through the API.");
            let _ = writeln!(out, "# TYPE firedrill_runs_started_total counter");
            for ((rb, mode), n) in &m.runs_started {
                let _ = writeln!(
                    out,
                    "firedrill_runs_started_total{{runbook=\"{}\",mode=\"{mode}\"}} {n}",
                    label(rb)
                );
            }
            let _ = writeln!(out, "# HELP firedrill_runs_finished_total Runs finished, by outcome.");
            let _ = writeln!(out, "# TYPE firedrill_runs_finished_total counter");
            for ((rb, mode, status), n) in &m.runs_finished {
                let _ = writeln!(
                    out,
                    "firedrill_runs_finished_total{{runbook=\"{}\",mode=\"{mode}\",status=\"{status}\"}} {n}",
                    label(rb)
                );
            }
            let _ = writeln!(out, "# HELP firedrill_alert_decisions_total Alerts matched to runbooks, by decision (started, duplicate, resolved, cooldown, halted, refused, shed).");
            let _ = writeln!(out, "# TYPE firedrill_alert_decisions_total counter");
            for ((rb, outcome), n) in &m.alert_decisions {
                let _ = writeln!(
                    out,
                    "firedrill_alert_decisions_total{{runbook=\"{}\",decision=\"{outcome}\"}} {n}",
                    label(rb)
                );
            }
            let _ = writeln!(out, "# HELP firedrill_run_duration_seconds Wall time of runs started through the API.");
            let _ = writeln!(out, "# TYPE firedrill_run_duration_seconds histogram");
            for (rb, h) in &m.run_seconds {
                let rb = label(rb);
                for (i, bound) in RUN_BUCKETS.iter().enumerate() {
                    let _ = writeln!(
                        out,
                        "firedrill_run_duration_seconds_bucket{{runbook=\"{rb}\",le=\"{bound}\"}} {}",
                        h.buckets[i]
                    );
                }
                let _ = writeln!(
                    out,
                    "firedrill_run_duration_seconds_bucket{{runbook=\"{rb}\",le=\"+Inf\"}} {}",
                    h.count
                );
                let _ = writeln!(out, "firedrill_run_duration_seconds_sum{{runbook=\"{rb}\"}} {}", h.sum);
                let _ = writeln!(out, "firedrill_run_duration_seconds_count{{runbook=\"{rb}\"}} {}", h.count);
            }
        });
        let mut seen = std::collections::BTreeSet::new();
        for (name, help, labels, value) in gauges {
            if seen.insert(*name) {
                let _ = writeln!(out, "# HELP {name} {help}");
                let _ = writeln!(out, "# TYPE {name} gauge");
            }
            if labels.is_empty() {
                let _ = writeln!(out, "{name} {value}");
            } else {
                let _ = writeln!(out, "{name}{{{labels}}} {value}");
            }
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
        m.run_started("re\"start", "live");
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
        assert!(
            text.contains("firedrill_runs_started_total{runbook=\"re\\\"start\",mode=\"live\"} 1")
        );
        assert!(text.contains("le=\"0.25\"} 0"));
        assert!(text.contains("le=\"0.5\"} 1"));
        assert!(text.contains("le=\"+Inf\"} 1"));
        assert!(text.contains("firedrill_switch_engaged{scope=\"global\"} 1"));
        assert_eq!(m.shed_total(), 1);
    }
}
