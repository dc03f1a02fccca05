//! The trigger index: every current runbook's triggers, parsed once per
//! published version and looked up by label, so that matching an alert
//! costs a few hash lookups instead of parsing every runbook.
//!
//! Each trigger is filed under one of its matchers (source, label, value);
//! an alert is checked only against the triggers filed under one of its own
//! labels, then against their other matchers. Before each notification the
//! index compares the store's (runbook, current version) list with the one
//! it was built from, and re-parses only the runbooks whose version moved.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use serde::Serialize;

use super::Alert;
use crate::runbook::{ReadinessPolicy, Trigger, parse_runbook};
use crate::store::{Store, StoreError};

/// Most near-miss triggers kept to explain one unmatched alert.
pub const MAX_NEAREST: usize = 5;
/// Longest label value kept in an unmatched alert's record.
pub const MAX_KEPT_VALUE: usize = 256;
/// Most labels kept in an unmatched alert's record.
pub const MAX_KEPT_LABELS: usize = 32;

/// One runbook's current version, compiled.
#[derive(Debug)]
pub(super) struct Compiled {
    pub name: String,
    pub version: i64,
    pub policy: ReadinessPolicy,
    pub triggers: Vec<Trigger>,
}

/// A matching trigger of one runbook, ready to decide on.
#[derive(Debug, Clone)]
pub(super) struct Candidate {
    pub runbook: String,
    pub version: i64,
    /// Its position in the runbook's `triggers` (the trigger's name in the
    /// API and in metrics).
    pub index: usize,
    pub trigger: Trigger,
    pub policy: ReadinessPolicy,
}

/// The index as built from one list of current versions.
#[derive(Debug, Default)]
pub(super) struct Snapshot {
    versions: Vec<(String, i64)>,
    pub runbooks: Vec<Arc<Compiled>>,
    /// (source, label, value) -> (runbook, trigger) positions.
    by_label: HashMap<(String, String, String), Vec<(usize, usize)>>,
}

/// Why one trigger did not match an alert.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Nearest {
    pub runbook: String,
    pub trigger: usize,
    /// label -> (wanted, what the alert had, if anything)
    pub mismatched: BTreeMap<String, Mismatch>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Mismatch {
    pub want: String,
    pub got: Option<String>,
}

impl Snapshot {
    fn build(versions: Vec<(String, i64)>, runbooks: Vec<Arc<Compiled>>) -> Snapshot {
        let mut by_label: HashMap<_, Vec<_>> = HashMap::new();
        for (r, rb) in runbooks.iter().enumerate() {
            for (t, trigger) in rb.triggers.iter().enumerate() {
                // `matches` needs at least one matcher; one without any
                // matches nothing and is filed nowhere.
                if let Some((k, v)) = trigger.matchers.iter().next() {
                    by_label
                        .entry((trigger.source.as_str().to_string(), k.clone(), v.clone()))
                        .or_default()
                        .push((r, t));
                }
            }
        }
        Snapshot {
            versions,
            runbooks,
            by_label,
        }
    }

    /// For each runbook, its first trigger (in file order) that matches
    /// `alert`, by runbook name.
    pub fn candidates(&self, alert: &Alert) -> Vec<Candidate> {
        let mut first: BTreeMap<usize, usize> = BTreeMap::new();
        let mut key = (alert.source.to_string(), String::new(), String::new());
        for (k, v) in &alert.labels {
            k.clone_into(&mut key.1);
            v.clone_into(&mut key.2);
            for &(r, t) in self.by_label.get(&key).into_iter().flatten() {
                if first.get(&r).is_some_and(|&seen| seen <= t) {
                    continue;
                }
                if self.runbooks[r].triggers[t].matches(&alert.labels) {
                    first.insert(r, t);
                }
            }
        }
        first
            .into_iter()
            .map(|(r, t)| {
                let rb = &self.runbooks[r];
                Candidate {
                    runbook: rb.name.clone(),
                    version: rb.version,
                    index: t,
                    trigger: rb.triggers[t].clone(),
                    policy: rb.policy,
                }
            })
            .collect()
    }

    /// The triggers of `alert`'s source that came closest to matching it
    /// (fewest failed matchers), at most [`MAX_NEAREST`].
    pub fn nearest(&self, alert: &Alert) -> Vec<Nearest> {
        let mut all: Vec<Nearest> = Vec::new();
        for rb in &self.runbooks {
            for (t, trigger) in rb.triggers.iter().enumerate() {
                if trigger.source.as_str() != alert.source {
                    continue;
                }
                let mismatched: BTreeMap<String, Mismatch> = trigger
                    .matchers
                    .iter()
                    .filter(|(k, v)| alert.labels.get(*k) != Some(v))
                    .map(|(k, v)| {
                        (
                            k.clone(),
                            Mismatch {
                                want: v.clone(),
                                got: alert.labels.get(k).map(|g| clip(g).to_string()),
                            },
                        )
                    })
                    .collect();
                all.push(Nearest {
                    runbook: rb.name.clone(),
                    trigger: t,
                    mismatched,
                });
            }
        }
        all.sort_by_key(|n| n.mismatched.len());
        all.truncate(MAX_NEAREST);
        all
    }
}

/// `text`, cut at [`MAX_KEPT_VALUE`] bytes on a character boundary.
pub(super) fn clip(text: &str) -> &str {
    crate::term::clip(text, MAX_KEPT_VALUE)
}

/// The compiled triggers of the store's current runbooks.
#[derive(Debug, Default)]
pub struct TriggerIndex {
    current: Mutex<Arc<Snapshot>>,
}

impl TriggerIndex {
    /// The index for the store's current versions, recompiling the
    /// runbooks whose version changed since the last call.
    pub(super) async fn snapshot(&self, store: &dyn Store) -> Result<Arc<Snapshot>, StoreError> {
        let versions = store.current_runbook_versions().await?;
        let old = self.lock().clone();
        if old.versions == versions {
            return Ok(old);
        }
        let kept: HashMap<(&str, i64), &Arc<Compiled>> = old
            .runbooks
            .iter()
            .map(|c| ((c.name.as_str(), c.version), c))
            .collect();
        let mut runbooks = Vec::with_capacity(versions.len());
        let mut missing = false;
        for (name, version) in &versions {
            match kept.get(&(name.as_str(), *version)) {
                Some(c) => runbooks.push(Arc::clone(c)),
                None => missing = true,
            }
        }
        if missing {
            // Read the sources once, and compile what is new.
            runbooks.clear();
            let rows = store.current_runbooks().await?;
            for row in rows {
                if let Some(c) = kept.get(&(row.name.as_str(), row.version)) {
                    runbooks.push(Arc::clone(c));
                    continue;
                }
                // Published runbooks were validated; one that no longer
                // parses (an older format) has no triggers to match.
                let Ok(rb) = parse_runbook(&row.name, &row.source) else {
                    tracing::warn!(runbook = %row.name, version = row.version, "a published runbook no longer parses; its triggers are ignored");
                    continue;
                };
                runbooks.push(Arc::new(Compiled {
                    name: row.name,
                    version: row.version,
                    policy: rb.readiness_policy.unwrap_or(ReadinessPolicy::Block),
                    triggers: rb.triggers,
                }));
            }
        }
        let fresh = Arc::new(Snapshot::build(versions, runbooks));
        *self.lock() = Arc::clone(&fresh);
        Ok(fresh)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Arc<Snapshot>> {
        self.current.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::alerts::AlertStatus;

    fn trigger(source: &str, matchers: &[(&str, &str)]) -> Trigger {
        serde_json::from_value(serde_json::json!({
            "source": source,
            "match": matchers.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect::<BTreeMap<_, _>>(),
        }))
        .expect("trigger")
    }

    fn alert(labels: &[(&str, &str)]) -> Alert {
        Alert {
            source: "alertmanager",
            status: AlertStatus::Firing,
            fingerprint: "f".into(),
            starts_at: "2026-12-02T00:00:00Z".into(),
            labels: labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            annotations: BTreeMap::new(),
        }
    }

    fn snapshot(runbooks: Vec<(&str, Vec<Trigger>)>) -> Snapshot {
        Snapshot::build(
            Vec::new(),
            runbooks
                .into_iter()
                .map(|(name, triggers)| {
                    Arc::new(Compiled {
                        name: name.into(),
                        version: 1,
                        policy: ReadinessPolicy::Block,
                        triggers,
                    })
                })
                .collect(),
        )
    }

    #[test]
    fn the_index_finds_what_a_scan_finds() {
        let s = snapshot(vec![
            (
                "a",
                vec![
                    trigger("alertmanager", &[("alertname", "X"), ("team", "db")]),
                    trigger("alertmanager", &[("alertname", "X")]),
                ],
            ),
            ("b", vec![trigger("pagerduty", &[("alertname", "X")])]),
            ("c", vec![trigger("alertmanager", &[("severity", "page")])]),
        ]);
        let names = |a: &Alert| {
            s.candidates(a)
                .into_iter()
                .map(|c| (c.runbook, c.index))
                .collect::<Vec<_>>()
        };
        // The first matching trigger of each runbook, in file order.
        assert_eq!(
            names(&alert(&[("alertname", "X"), ("team", "db")])),
            vec![("a".to_string(), 0)]
        );
        assert_eq!(
            names(&alert(&[("alertname", "X"), ("severity", "page")])),
            vec![("a".to_string(), 1), ("c".to_string(), 0)]
        );
        // Another source's trigger never matches; no label, no match.
        assert!(names(&alert(&[("alertname", "Y")])).is_empty());
        assert!(names(&alert(&[])).is_empty());
        // Every case agrees with matching each trigger in turn.
        for labels in [
            vec![("alertname", "X")],
            vec![("team", "db")],
            vec![("alertname", "X"), ("team", "db"), ("severity", "page")],
        ] {
            let a = alert(&labels);
            let scanned: Vec<(String, usize)> = s
                .runbooks
                .iter()
                .filter_map(|rb| {
                    rb.triggers
                        .iter()
                        .position(|t| t.source.as_str() == a.source && t.matches(&a.labels))
                        .map(|t| (rb.name.clone(), t))
                })
                .collect();
            assert_eq!(names(&a), scanned, "{labels:?}");
        }
    }

    #[test]
    fn an_unmatched_alert_is_explained_by_its_nearest_triggers() {
        let s = snapshot(vec![
            (
                "web",
                vec![trigger(
                    "alertmanager",
                    &[("alertname", "WebDown"), ("env", "prod")],
                )],
            ),
            (
                "db",
                vec![trigger("alertmanager", &[("alertname", "DbDown")])],
            ),
            ("pd", vec![trigger("pagerduty", &[("service", "web")])]),
        ]);
        let a = alert(&[("alertname", "WebDown"), ("env", "staging")]);
        assert!(s.candidates(&a).is_empty());
        let near = s.nearest(&a);
        // Other sources' triggers are not candidates; closest first.
        assert_eq!(near.len(), 2, "{near:?}");
        assert_eq!(near[0].runbook, "web");
        assert_eq!(
            near[0].mismatched["env"],
            Mismatch {
                want: "prod".into(),
                got: Some("staging".into())
            }
        );
        assert_eq!(near[1].runbook, "db");
        assert_eq!(
            near[1].mismatched["alertname"].got.as_deref(),
            Some("WebDown")
        );
        // A long value is kept only in part.
        let long = "é".repeat(400);
        let b = alert(&[("alertname", &long)]);
        let got = s.nearest(&b)[0].mismatched["alertname"]
            .got
            .clone()
            .expect("got");
        assert!(got.len() <= MAX_KEPT_VALUE && long.starts_with(&got));
    }
}
