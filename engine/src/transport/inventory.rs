//! The inventory: named targets and how to reach them (`inventory.yaml` under the home).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// How a target is reached (the `transport` key of a target).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Transport {
    /// Commands run on the engine's own host through `/bin/sh -c`. Meant for
    /// demos, tests and single-host setups.
    Local,
    /// Commands run on a remote host over SSH.
    Ssh,
    /// An HTTP endpoint for `host.http` calls.
    Http,
}

impl std::fmt::Display for Transport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Transport::Local => "local",
            Transport::Ssh => "ssh",
            Transport::Http => "http",
        })
    }
}

/// One target: how it is reached, and its labels.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "transport", rename_all = "kebab-case")]
pub enum TargetSpec {
    Local(LocalTarget),
    Ssh(SshTarget),
    Http(HttpTarget),
}

/// A `transport: local` target.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct LocalTarget {
    /// Environment for commands. The environment is empty apart from these
    /// variables; `PATH` defaults to the system path.
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// Working directory for commands. Default `/`.
    #[serde(default)]
    pub workdir: Option<String>,
    /// Free-form labels, for selectors.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
}

/// A `transport: ssh` target.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct SshTarget {
    /// Host name or IP address.
    pub address: String,
    /// Default 22.
    #[serde(default = "default_ssh_port")]
    pub port: u16,
    /// Remote user.
    pub user: String,
    /// How to authenticate: `agent` or `{ key-file: /path/to/private_key }`.
    pub auth: SshAuth,
    /// The pinned host key: an OpenSSH public key (`ssh-ed25519 AAAA...`, as in
    /// the host's `/etc/ssh/ssh_host_ed25519_key.pub` or a known_hosts line)
    /// or a fingerprint (`SHA256:...`, as `ssh-keygen -lf` prints it).
    /// Without it every connection is refused: firedrill never trusts a key
    /// on first use.
    #[serde(default)]
    pub host_key: Option<String>,
    /// Free-form labels, for selectors.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
}

fn default_ssh_port() -> u16 {
    22
}

/// How firedrill authenticates to an SSH target.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub enum SshAuth {
    /// Keys held by the ssh-agent at `$SSH_AUTH_SOCK`.
    Agent,
    /// An unencrypted private key file (use the agent for encrypted keys).
    KeyFile(PathBuf),
}

/// A `transport: http` target: an endpoint kernels reach with `host.http`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct HttpTarget {
    /// Scheme, host, optional port and path prefix, e.g.
    /// `https://lb.example.com:8443/api/`. Requests must stay under it.
    pub base_url: String,
    /// Name of a secret sent as `Authorization: Bearer <value>`; the kernel
    /// never sees it.
    #[serde(default)]
    pub auth_secret: Option<String>,
    /// Allow loopback, link-local and private addresses (refused by default,
    /// so that a kernel cannot reach internal services it was not meant to).
    #[serde(default)]
    pub allow_private: bool,
    /// Free-form labels, for selectors.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
}

impl TargetSpec {
    pub fn transport(&self) -> Transport {
        match self {
            TargetSpec::Local(_) => Transport::Local,
            TargetSpec::Ssh(_) => Transport::Ssh,
            TargetSpec::Http(_) => Transport::Http,
        }
    }

    pub fn labels(&self) -> &BTreeMap<String, String> {
        match self {
            TargetSpec::Local(t) => &t.labels,
            TargetSpec::Ssh(t) => &t.labels,
            TargetSpec::Http(t) => &t.labels,
        }
    }

    pub fn labels_mut(&mut self) -> &mut BTreeMap<String, String> {
        match self {
            TargetSpec::Local(t) => &mut t.labels,
            TargetSpec::Ssh(t) => &mut t.labels,
            TargetSpec::Http(t) => &mut t.labels,
        }
    }

    /// Problems loading alone does not catch, as sentences.
    fn problems(&self) -> Vec<String> {
        let mut problems = Vec::new();
        match self {
            TargetSpec::Local(_) => {}
            TargetSpec::Ssh(t) => {
                if t.address.trim().is_empty() {
                    problems.push("address is empty".to_string());
                }
                if t.user.trim().is_empty() {
                    problems.push("user is empty".to_string());
                }
                if t.port == 0 {
                    problems.push("port 0 is not a valid port".to_string());
                }
                match &t.host_key {
                    None => problems.push(
                        "no host-key is pinned, so every connection will be refused; run `firedrill inventory check --probe` to see the key the host presents, verify it out of band, and set host-key".to_string(),
                    ),
                    Some(k) => {
                        if let Err(e) = super::ssh::PinnedKey::parse(k) {
                            problems.push(e);
                        }
                    }
                }
                if let SshAuth::KeyFile(path) = &t.auth
                    && !path.is_file()
                {
                    problems.push(format!(
                        "auth key-file {} does not exist or is not a file",
                        path.display()
                    ));
                }
            }
            TargetSpec::Http(t) => {
                if let Err(e) = super::http::BaseUrl::parse(&t.base_url) {
                    problems.push(e);
                }
            }
        }
        problems
    }
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
        if let Err(at) = crate::yaml::check_depth(&text, crate::yaml::MAX_YAML_DEPTH) {
            return Err(InventoryError::Parse {
                path: path.display().to_string(),
                message: format!(
                    "line {}, column {}: nested more than {} levels deep",
                    at.line,
                    at.column,
                    crate::yaml::MAX_YAML_DEPTH
                ),
            });
        }
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
                .filter(|(_, spec)| spec.labels().get(key).is_some_and(|v| v == value))
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
        for (name, spec) in &self.targets {
            for p in spec.problems() {
                problems.push(format!("target {name:?} ({}): {p}", spec.transport()));
            }
        }
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
        self.targets
            .insert(name.to_string(), TargetSpec::Local(LocalTarget::default()));
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
            inv.get("localhost").expect("present").transport(),
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
    fn parses_ssh_and_http_targets_and_reports_their_problems() {
        let key =
            "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl";
        let text = format!(
            "targets:\n  web-1:\n    transport: ssh\n    address: 10.0.0.5\n    port: 2222\n    user: firedrill\n    auth: agent\n    host-key: \"{key}\"\n    labels: {{ role: web }}\n  web-2:\n    transport: ssh\n    address: web-2.internal\n    user: firedrill\n    auth: {{ key-file: /nonexistent/id_ed25519 }}\n  lb:\n    transport: http\n    base-url: https://lb.internal:8443/api\n    auth-secret: lb-token\n    allow-private: true\n  bad-url:\n    transport: http\n    base-url: ftp://x\n"
        );
        let inv: Inventory = serde_yaml::from_str(&text).expect("parses");
        let TargetSpec::Ssh(web1) = inv.get("web-1").expect("web-1") else {
            panic!("ssh")
        };
        assert_eq!((web1.port, web1.auth.clone()), (2222, SshAuth::Agent));
        let TargetSpec::Ssh(web2) = inv.get("web-2").expect("web-2") else {
            panic!("ssh")
        };
        assert_eq!(web2.port, 22);
        assert_eq!(
            web2.auth,
            SshAuth::KeyFile(PathBuf::from("/nonexistent/id_ed25519"))
        );
        assert_eq!(inv.get("lb").expect("lb").transport(), Transport::Http);
        assert_eq!(inv.select("label:role=web").expect("ok"), vec!["web-1"]);
        let problems = inv.problems().join("\n");
        assert!(
            problems.contains("target \"web-2\" (ssh): no host-key is pinned"),
            "{problems}"
        );
        assert!(
            problems.contains("key-file /nonexistent/id_ed25519 does not exist"),
            "{problems}"
        );
        assert!(
            problems.contains("target \"bad-url\" (http): base-url"),
            "{problems}"
        );
        assert!(!problems.contains("web-1"), "{problems}");
        assert!(!problems.contains("\"lb\""), "{problems}");
        // Each transport has its own fields.
        for (bad, field) in [
            (
                "transport: ssh\n    address: a\n    user: u\n    auth: agent\n    env: {}",
                "env",
            ),
            (
                "transport: http\n    base-url: https://x\n    user: u",
                "user",
            ),
            ("transport: local\n    address: a", "address"),
        ] {
            let err = serde_yaml::from_str::<Inventory>(&format!("targets:\n  t:\n    {bad}\n"))
                .unwrap_err()
                .to_string();
            assert!(err.contains(&format!("unknown field `{field}`")), "{err}");
        }
        let err = serde_yaml::from_str::<Inventory>(
            "targets:\n  t:\n    transport: ssh\n    address: a\n    user: u\n",
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("missing field `auth`"), "{err}");
    }

    #[test]
    fn missing_file_is_empty() {
        let dir = tempfile::tempdir().expect("tempdir");
        let inv = Inventory::load(&dir.path().join("inventory.yaml")).expect("loads");
        assert!(inv.targets.is_empty());
    }
}
