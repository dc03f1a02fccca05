//! Secrets: a value type that never prints itself, and where values come from.

use std::collections::BTreeMap;

/// A secret value. `Debug`, `Display` and `Serialize` print `[redacted]`;
/// only [`Secret::expose`] gives the value, for handing it to a kernel.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }

    /// The value. Call only where it must leave the engine (a kernel asked).
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret([redacted])")
    }
}

impl std::fmt::Display for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("[redacted]")
    }
}

impl serde::Serialize for Secret {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str("[redacted]")
    }
}

/// Where secret values come from.
pub trait SecretProvider: Send + Sync {
    fn get(&self, name: &str) -> Option<Secret>;
}

/// Secrets from environment variables: `db_password` is read from
/// `FIREDRILL_SECRET_DB_PASSWORD` (upper-cased, `-` becomes `_`).
#[derive(Debug, Default, Clone, Copy)]
pub struct EnvSecrets;

impl EnvSecrets {
    /// The variable that holds secret `name`.
    pub fn variable(name: &str) -> String {
        format!(
            "FIREDRILL_SECRET_{}",
            name.to_ascii_uppercase().replace('-', "_")
        )
    }
}

impl SecretProvider for EnvSecrets {
    fn get(&self, name: &str) -> Option<Secret> {
        std::env::var(Self::variable(name)).ok().map(Secret::new)
    }
}

/// Fixed secrets (tests).
#[derive(Debug, Default, Clone)]
pub struct StaticSecrets(pub BTreeMap<String, Secret>);

impl SecretProvider for StaticSecrets {
    fn get(&self, name: &str) -> Option<Secret> {
        self.0.get(name).cloned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_never_prints_itself() {
        let s = Secret::new("hunter2");
        assert_eq!(format!("{s} {s:?}"), "[redacted] Secret([redacted])");
        assert_eq!(serde_json::to_string(&s).expect("json"), "\"[redacted]\"");
        assert_eq!(s.expose(), "hunter2");
    }

    #[test]
    fn env_variable_name() {
        assert_eq!(
            EnvSecrets::variable("db-password"),
            "FIREDRILL_SECRET_DB_PASSWORD"
        );
    }
}
