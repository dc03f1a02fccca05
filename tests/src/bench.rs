//! Shared by the benchmark suite (`scripts/bench`): sizes, sample
//! statistics, and the results file each bench writes to `target/bench/`,
//! which the `report` bench merges into `results.json` and `summary.md`.
//!
//! Every bench reads its sizes through [`size`]: the full value, the
//! smoke value when `BENCH_SMOKE=1` (CI: checks the suite still works, not
//! its numbers), or an explicit environment override.

use std::path::PathBuf;
use std::time::Duration;

use serde::Serialize;

use crate::workspace_root;

/// The same three-step shape (a probe, a conditional step, a final step)
/// with a kernel that spawns no process: firedrill's own cost per run.
pub const ENGINE_ONLY: &str = r#"apiVersion: firedrill/v1
name: engine-only
version: 1
inputs: { type: object, properties: { unit: { type: string } } }
steps:
  - id: probe
    kernel: trivial@0.1.0
    targets: [demo-host]
  - id: act
    kernel: trivial@0.1.0
    when: "{{ steps.probe.output.now_ms > 0 }}"
    targets: [demo-host]
  - id: verify
    kernel: trivial@0.1.0
    when: "{{ run.mode == 'live' }}"
    targets: [demo-host]
"#;

/// True when the suite runs as a smoke test (`BENCH_SMOKE=1`).
pub fn smoke() -> bool {
    std::env::var("BENCH_SMOKE").is_ok_and(|v| v == "1")
}

/// A size: `$name` if set, else `smoke` under [`smoke`], else `full`.
pub fn size(name: &str, full: usize, smoke_size: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(if smoke() { smoke_size } else { full })
}

/// Nearest-rank percentile of sorted `sorted` (`p` in 0..=1).
///
/// # Panics
/// If `sorted` is empty.
pub fn percentile<T: Copy>(sorted: &[T], p: f64) -> T {
    let idx = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[idx.min(sorted.len() - 1)]
}

/// Median of `xs` (any order).
///
/// # Panics
/// If `xs` is empty.
pub fn median(xs: &[f64]) -> f64 {
    let mut v = xs.to_vec();
    v.sort_by(f64::total_cmp);
    percentile(&v, 0.5)
}

/// Milliseconds.
pub fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// Microseconds.
pub fn us(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

/// p50 and p99 of `samples` (any order), in the samples' unit.
pub fn p50_p99(samples: &[f64]) -> (f64, f64) {
    let mut v = samples.to_vec();
    v.sort_by(f64::total_cmp);
    (percentile(&v, 0.5), percentile(&v, 0.99))
}

/// Which statistic a goal is about.
#[derive(Debug, Clone, Copy, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Stat {
    Median,
    P99,
}

/// A goal from the issue: `stat` of the measure at most / at least `value`.
#[derive(Debug, Clone, Serialize)]
pub struct Goal {
    pub stat: Stat,
    /// `"<="` or `">="`.
    pub op: &'static str,
    pub value: f64,
}

impl Goal {
    pub fn at_most(stat: Stat, value: f64) -> Goal {
        Goal {
            stat,
            op: "<=",
            value,
        }
    }

    pub fn at_least(stat: Stat, value: f64) -> Goal {
        Goal {
            stat,
            op: ">=",
            value,
        }
    }
}

/// One figure of the suite.
#[derive(Debug, Clone, Serialize)]
pub struct Measure {
    /// Stable key, e.g. `invoke.rust`.
    pub id: String,
    pub title: String,
    pub unit: &'static str,
    /// Median over all samples (latencies) or over rounds (rates).
    pub median: f64,
    /// p99 over all samples; for a rate over rounds, the worst round.
    pub p99: f64,
    /// How many samples the statistics are over.
    pub samples: usize,
    /// The headline value of each repeated round, in order.
    pub rounds: Vec<f64>,
    pub goal: Option<Goal>,
    /// Anything else worth keeping (raw figures, settings).
    pub detail: serde_json::Value,
}

impl Measure {
    /// A latency-like measure: statistics over every sample of every round;
    /// `rounds` holds each round's median.
    pub fn from_samples(id: &str, title: &str, unit: &'static str, rounds: &[Vec<f64>]) -> Measure {
        let all: Vec<f64> = rounds.iter().flatten().copied().collect();
        let (p50, p99) = p50_p99(&all);
        Measure {
            id: id.into(),
            title: title.into(),
            unit,
            median: p50,
            p99,
            samples: all.len(),
            rounds: rounds.iter().map(|r| median(r)).collect(),
            goal: None,
            detail: serde_json::Value::Null,
        }
    }

    /// A rate (higher is better), one value per round: the median round and
    /// the worst.
    pub fn from_rates(id: &str, title: &str, unit: &'static str, rounds: &[f64]) -> Measure {
        Measure {
            id: id.into(),
            title: title.into(),
            unit,
            median: median(rounds),
            p99: rounds.iter().copied().fold(f64::INFINITY, f64::min),
            samples: rounds.len(),
            rounds: rounds.to_vec(),
            goal: None,
            detail: serde_json::Value::Null,
        }
    }

    pub fn goal(mut self, goal: Goal) -> Measure {
        self.goal = Some(goal);
        self
    }

    pub fn detail(mut self, detail: serde_json::Value) -> Measure {
        self.detail = detail;
        self
    }
}

/// Where the suite's files go.
pub fn out_dir() -> PathBuf {
    workspace_root().join("target/bench")
}

/// Write `bench`'s measures to `target/bench/<bench>.json` (for the
/// `report` bench) and print them.
///
/// # Panics
/// If the file cannot be written.
pub fn write(bench: &str, command: &str, measures: &[Measure]) {
    for m in measures {
        println!(
            "{:<44} median {:>12.3} {:<9} p99 {:>12.3}  (n={}, rounds {:?})",
            m.title, m.median, m.unit, m.p99, m.samples, m.rounds
        );
    }
    let dir = out_dir();
    std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
    let doc = serde_json::json!({
        "bench": bench,
        "command": command,
        "smoke": smoke(),
        "finished_at": humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string(),
        "measures": measures,
    });
    let path = dir.join(format!("{bench}.json"));
    std::fs::write(
        &path,
        serde_json::to_string_pretty(&doc).unwrap_or_default(),
    )
    .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statistics_over_samples_and_rounds() {
        let samples: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(p50_p99(&samples), (51.0, 99.0));
        let m = Measure::from_samples("x", "x", "ms", &[vec![1.0, 2.0, 3.0], vec![10.0]]);
        assert_eq!((m.median, m.p99, m.samples), (3.0, 10.0, 4));
        assert_eq!(m.rounds, vec![2.0, 10.0]);
        let r = Measure::from_rates("y", "y", "runs/s", &[900.0, 1200.0, 1000.0]);
        assert_eq!((r.median, r.p99), (1000.0, 900.0));
    }
}
