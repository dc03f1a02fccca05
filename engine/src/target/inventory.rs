//! The inventory: named targets and how to reach them (`inventory.yaml` under the home).

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

/// How a target is reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Transport {
    /// Commands run on the engine's own host through `/bin/sh -c`. Meant for
    /// demos, tests and single-host setups.
    Local,
}

/// One target.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct TargetSpec {
    pub transport: Transport,
    /// Environment for commands (local transport). The environment is empty
    /// apart from these variables; `PATH` defaults to the system path.
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// Working directory for commands (local transport). Default `/`.
    #[serde(default)]
    pub workdir: Option<String>,
    /// Free-form labels, for selectors.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
}

/// All known targets, by name, and named groups of them.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Inventory {
    #[serde(default)]
    pub targets: BTreeMap<String, TargetSpec>,
    /// Group name -> target names.
    #[serde(default)]
    pub groups: BTreeMap<String, Vec<String>>,
}

/// A step's target entry that names nothing.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SelectError {
    #[error(
        "{entry:?} is neither a target nor a group in the inventory (targets: {targets}; groups: {groups}); add it to inventory.yaml under the firedrill home"
    )]
    Unknown {
        entry: String,
        targets: String,
        groups: String,
    },
    #[error("label selector {0:?} is not `label:key=value`")]
    BadSelector(String),
    #[error("group {group:?} names {member:?}, which is not a target in the inventory")]
    BadGroup { group: String, member: String },
}

/// The inventory file cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum InventoryError {
    #[error("cannot read inventory {path}: {source}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("inventory {path} is not valid: {message}")]
    Parse { path: String, message: String },
}

impl Inventory {
    /// Load `path`; a missing file is an empty inventory (which grants nothing).
    pub fn load(path: &Path) -> Result<Self, InventoryError> {
        let text = match std::fs::read_to_string(path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Inventory::default()),
            Err(source) => {
                return Err(InventoryError::Read {
                    path: path.display().to_string(),
                    source,
                });
            }
        };
        serde_yaml::from_str(&text).map_err(|e| InventoryError::Parse {
            path: path.display().to_string(),
            message: e.to_string(),
        })
    }

    pub fn get(&self, name: &str) -> Option<&TargetSpec> {
        self.targets.get(name)
    }

    /// Expand one step entry into target names: a target name, a group name,
    /// or `label:key=value` (every target with that label; possibly none).
    pub fn select(&self, entry: &str) -> Result<Vec<String>, SelectError> {
        if let Some(selector) = entry.strip_prefix("label:") {
            let (key, value) = selector
                .split_once('=')
                .filter(|(k, _)| !k.is_empty())
                .ok_or_else(|| SelectError::BadSelector(entry.to_string()))?;
            return Ok(self
                .targets
                .iter()
                .filter(|(_, spec)| spec.labels.get(key).is_some_and(|v| v == value))
                .map(|(name, _)| name.clone())
                .collect());
        }
        if self.targets.contains_key(entry) {
            return Ok(vec![entry.to_string()]);
        }
        if let Some(members) = self.groups.get(entry) {
            for m in members {
                if !self.targets.contains_key(m) {
                    return Err(SelectError::BadGroup {
                        group: entry.to_string(),
                        member: m.clone(),
                    });
                }
            }
            return Ok(members.clone());
        }
        let names = |it: Vec<&String>| {
            if it.is_empty() {
                "(none)".to_string()
            } else {
                it.into_iter().cloned().collect::<Vec<_>>().join(", ")
            }
        };
        Err(SelectError::Unknown {
            entry: entry.to_string(),
            targets: names(self.targets.keys().collect()),
            groups: names(self.groups.keys().collect()),
        })
    }

    /// Every problem in the inventory that loading alone does not catch.
    pub fn problems(&self) -> Vec<String> {
        let mut problems = Vec::new();
        for (group, members) in &self.groups {
            if self.targets.contains_key(group) {
                problems.push(format!(
                    "group {group:?} has the same name as a target; rename one of them"
                ));
            }
            if members.is_empty() {
                problems.push(format!("group {group:?} is empty"));
            }
            for m in members {
                if !self.targets.contains_key(m) {
                    problems.push(format!(
                        "group {group:?} names {m:?}, which is not a target in the inventory"
                    ));
                }
            }
        }
        problems
    }

    /// An inventory with one local target called `name` (tests and demos).
    pub fn with_local(mut self, name: &str) -> Self {
        self.targets.insert(
            name.to_string(),
            TargetSpec {
                transport: Transport::Local,
                env: BTreeMap::new(),
                workdir: None,
                labels: BTreeMap::new(),
            },
        );
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_rejects_unknown_fields() {
        let inv: Inventory = serde_yaml::from_str(
            "targets:\n  localhost:\n    transport: local\n    env: { PATH: /opt/demo/bin }\n",
        )
        .expect("parses");
        assert_eq!(
            inv.get("localhost").expect("present").transport,
            Transport::Local
        );
        let err = serde_yaml::from_str::<Inventory>(
            "targets:\n  a:\n    transport: local\n    hots: x\n",
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("unknown field `hots`"), "{err}");
        let err = serde_yaml::from_str::<Inventory>("targets:\n  a:\n    transport: telnet\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("telnet"), "{err}");
    }

    #[test]
    fn selects_targets_groups_and_labels() {
        let inv: Inventory = serde_yaml::from_str(
            "targets:\n  a: { transport: local, labels: { role: web } }\n  b: { transport: local, labels: { role: web } }\n  c: { transport: local, labels: { role: db } }\ngroups:\n  webs: [a, b]\n  broken: [a, zz]\n",
        )
        .expect("parses");
        assert_eq!(inv.select("c").expect("ok"), vec!["c"]);
        assert_eq!(inv.select("webs").expect("ok"), vec!["a", "b"]);
        assert_eq!(inv.select("label:role=web").expect("ok"), vec!["a", "b"]);
        assert!(inv.select("label:role=cache").expect("ok").is_empty());
        assert!(matches!(
            inv.select("label:role"),
            Err(SelectError::BadSelector(_))
        ));
        assert!(matches!(
            inv.select("broken"),
            Err(SelectError::BadGroup { .. })
        ));
        let err = inv.select("zz").unwrap_err().to_string();
        assert!(
            err.contains("targets: a, b, c; groups: broken, webs"),
            "{err}"
        );
    }

    #[test]
    fn missing_file_is_empty() {
        let dir = tempfile::tempdir().expect("tempdir");
        let inv = Inventory::load(&dir.path().join("inventory.yaml")).expect("loads");
        assert!(inv.targets.is_empty());
    }
}
