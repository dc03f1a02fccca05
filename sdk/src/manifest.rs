//! The kernel manifest: what a kernel is and what it may do (the review surface).
//!
//! These types mirror the `manifest` record of the WIT contract in a form that
//! serializes to stable JSON, so that the engine, the CLI and kernel authors all
//! speak about the same thing.

use serde::{Deserialize, Serialize};

use crate::pattern::{CommandPattern, PatternError, UrlPattern};

/// How a run executes. Dry-run is the default everywhere.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum Mode {
    /// `observe` calls run for real; `change` calls are recorded as planned.
    #[default]
    DryRun,
    /// Every permitted call runs for real.
    Live,
}

impl Mode {
    /// The name used in the CLI, JSON and audit records.
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::DryRun => "dry-run",
            Mode::Live => "live",
        }
    }
}

impl std::fmt::Display for Mode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.pad(self.as_str())
    }
}

/// What a declared call does to the world.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Effect {
    /// Reads state only; runs in dry-run too.
    Observe,
    /// Changes state; never performed in dry-run.
    Change,
}

impl Effect {
    /// The name used in JSON and audit records.
    pub fn as_str(self) -> &'static str {
        match self {
            Effect::Observe => "observe",
            Effect::Change => "change",
        }
    }
}

impl std::fmt::Display for Effect {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.pad(self.as_str())
    }
}

/// A command the kernel may run (see [`CommandPattern`] for the syntax).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExecCapability {
    pub pattern: String,
    pub effect: Effect,
}

/// An HTTP request the kernel may make (see [`UrlPattern`] for the syntax).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct HttpCapability {
    pub method: String,
    pub url_pattern: String,
    pub effect: Effect,
}

/// Everything the kernel may ask the host to do. Nothing else is allowed.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Capabilities {
    #[serde(default)]
    pub exec: Vec<ExecCapability>,
    #[serde(default)]
    pub http: Vec<HttpCapability>,
    #[serde(default)]
    pub secrets: Vec<String>,
}

/// What a kernel is, as returned by its `describe` export.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Manifest {
    pub name: String,
    pub version: String,
    pub description: String,
    pub input_schema: serde_json::Value,
    pub output_schema: serde_json::Value,
    pub idempotent: bool,
    pub capabilities: Capabilities,
}

/// Longest kernel name accepted.
pub const MAX_NAME_LEN: usize = 64;

/// A manifest that breaks the contract's rules.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ManifestError {
    #[error(
        "kernel name {0:?} is not valid: use 1 to {MAX_NAME_LEN} lower-case letters, digits and '-', starting with a letter"
    )]
    Name(String),
    #[error("kernel version {version:?} is not a semantic version (e.g. 1.2.0): {reason}")]
    Version { version: String, reason: String },
    #[error("{which} schema is not a JSON object: a JSON Schema document is required")]
    Schema { which: &'static str },
    #[error("capability pattern {pattern:?} is not valid: {source}")]
    Pattern {
        pattern: String,
        #[source]
        source: PatternError,
    },
    #[error("http capability method {0:?} is not valid: use an upper-case HTTP method or '*'")]
    Method(String),
    #[error("secret name {0:?} is not valid: use letters, digits, '-' and '_'")]
    Secret(String),
}

impl Manifest {
    /// `name@version`, the kernel's reference in runbooks and the registry.
    pub fn reference(&self) -> String {
        format!("{}@{}", self.name, self.version)
    }

    /// Check the rules the WIT contract states for a manifest.
    pub fn validate(&self) -> Result<semver::Version, ManifestError> {
        if !valid_name(&self.name) {
            return Err(ManifestError::Name(self.name.clone()));
        }
        let version =
            semver::Version::parse(&self.version).map_err(|e| ManifestError::Version {
                version: self.version.clone(),
                reason: e.to_string(),
            })?;
        for (which, schema) in [
            ("input", &self.input_schema),
            ("output", &self.output_schema),
        ] {
            if !schema.is_object() {
                return Err(ManifestError::Schema { which });
            }
        }
        for cap in &self.capabilities.exec {
            CommandPattern::parse(&cap.pattern).map_err(|source| ManifestError::Pattern {
                pattern: cap.pattern.clone(),
                source,
            })?;
        }
        for cap in &self.capabilities.http {
            if cap.method != "*"
                && (cap.method.is_empty() || !cap.method.chars().all(|c| c.is_ascii_uppercase()))
            {
                return Err(ManifestError::Method(cap.method.clone()));
            }
            UrlPattern::parse(&cap.url_pattern).map_err(|source| ManifestError::Pattern {
                pattern: cap.url_pattern.clone(),
                source,
            })?;
        }
        for name in &self.capabilities.secrets {
            if name.is_empty()
                || !name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
            {
                return Err(ManifestError::Secret(name.clone()));
            }
        }
        Ok(version)
    }
}

/// Whether `name` is a valid kernel (or runbook) name.
pub fn valid_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_lowercase())
        && name.len() <= MAX_NAME_LEN
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn manifest() -> Manifest {
        Manifest {
            name: "restart-service".into(),
            version: "1.0.0".into(),
            description: "d".into(),
            input_schema: serde_json::json!({"type": "object"}),
            output_schema: serde_json::json!({"type": "object"}),
            idempotent: true,
            capabilities: Capabilities {
                exec: vec![ExecCapability {
                    pattern: "systemctl restart -- *".into(),
                    effect: Effect::Change,
                }],
                http: vec![HttpCapability {
                    method: "GET".into(),
                    url_pattern: "https://*/healthz".into(),
                    effect: Effect::Observe,
                }],
                secrets: vec!["db_password".into()],
            },
        }
    }

    #[test]
    fn valid_manifest_passes() {
        assert_eq!(
            manifest().validate().expect("valid"),
            semver::Version::new(1, 0, 0)
        );
    }

    #[test]
    fn each_rule_is_enforced() {
        type Case = (fn(&mut Manifest), &'static str);
        let cases: Vec<Case> = vec![
            (|m| m.name = "Restart".into(), "kernel name"),
            (|m| m.name = String::new(), "kernel name"),
            (|m| m.name = "a".repeat(65), "kernel name"),
            (|m| m.version = "latest".into(), "not a semantic version"),
            (|m| m.input_schema = serde_json::json!(true), "input schema"),
            (
                |m| m.capabilities.exec[0].pattern = "unterminated 'quote".into(),
                "pattern",
            ),
            (|m| m.capabilities.http[0].method = "get".into(), "method"),
            (|m| m.capabilities.secrets[0] = "a b".into(), "secret name"),
        ];
        for (mutate, expected) in cases {
            let mut m = manifest();
            mutate(&mut m);
            let err = m.validate().expect_err("must be refused").to_string();
            assert!(
                err.contains(expected),
                "{err:?} should mention {expected:?}"
            );
        }
    }
}
