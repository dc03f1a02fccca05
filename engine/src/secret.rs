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

/// A secret could not be provided. Never contains the value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SecretError {
    #[error("secret {name:?} is not set; {hint}")]
    NotSet { name: String, hint: String },
    #[error(
        "secret file {path} is readable by other users (mode {mode:o}); run `chmod 600 {path}`"
    )]
    Unsafe { path: String, mode: u32 },
    #[error("cannot read secret file {path}: {reason}")]
    Read { path: String, reason: String },
    #[error(
        "secret name {0:?} is not valid: use 1 to 64 letters, digits, '-' or '_', starting with a letter or digit (a name is never a path)"
    )]
    Name(String),
}

/// Whether `name` can name a secret: 1 to 64 ASCII letters, digits, `-`
/// or `_`, so that it can never be read as a path (`../x`) or an option.
pub fn valid_secret_name(name: &str) -> bool {
    name.len() <= 64
        && name.starts_with(|c: char| c.is_ascii_alphanumeric())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_'))
}

fn checked(name: &str) -> Result<(), SecretError> {
    if valid_secret_name(name) {
        Ok(())
    } else {
        Err(SecretError::Name(name.to_string()))
    }
}

/// Where secret values come from.
pub trait SecretProvider: Send + Sync {
    fn get(&self, name: &str) -> Result<Secret, SecretError>;
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
    fn get(&self, name: &str) -> Result<Secret, SecretError> {
        checked(name)?;
        let variable = Self::variable(name);
        std::env::var(&variable)
            .map(Secret::new)
            .map_err(|_| SecretError::NotSet {
                name: name.to_string(),
                hint: format!("set {variable} in firedrill's environment"),
            })
    }
}

/// Secrets from files: secret `name` is the file `<dir>/<name>` (one trailing
/// newline is dropped). Files readable by group or others are refused.
#[derive(Debug, Clone)]
pub struct FileSecrets {
    pub dir: std::path::PathBuf,
}

impl SecretProvider for FileSecrets {
    fn get(&self, name: &str) -> Result<Secret, SecretError> {
        use std::os::unix::fs::PermissionsExt;
        // Every name is checked here too (not only by the manifest), so no
        // caller can make it escape the directory.
        checked(name)?;
        let path = self.dir.join(name);
        let shown = path.display().to_string();
        let meta = match std::fs::metadata(&path) {
            Ok(m) => m,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(SecretError::NotSet {
                    name: name.to_string(),
                    hint: format!("create {shown} (mode 600)"),
                });
            }
            Err(e) => {
                return Err(SecretError::Read {
                    path: shown,
                    reason: e.to_string(),
                });
            }
        };
        let mode = meta.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            return Err(SecretError::Unsafe { path: shown, mode });
        }
        let mut value = std::fs::read_to_string(&path).map_err(|e| SecretError::Read {
            path: shown,
            reason: e.to_string(),
        })?;
        if value.ends_with('\n') {
            value.pop();
        }
        Ok(Secret::new(value))
    }
}

/// Where `[secrets]` in `firedrill.toml` says secrets come from.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Default,
    serde::Serialize,
    serde::Deserialize,
    schemars::JsonSchema,
)]
#[serde(rename_all = "kebab-case")]
pub enum Provider {
    /// `FIREDRILL_SECRET_<NAME>` environment variables.
    #[default]
    Env,
    /// One file per secret in `dir`.
    File,
}

/// `[secrets]` in `firedrill.toml`.
#[derive(
    Debug, Clone, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize, schemars::JsonSchema,
)]
#[serde(deny_unknown_fields, rename_all = "kebab-case", default)]
pub struct SecretsConfig {
    pub provider: Provider,
    /// Directory for the `file` provider; default `<home>/secrets`.
    pub dir: Option<std::path::PathBuf>,
}

/// Fixed secrets (tests).
#[derive(Debug, Default, Clone)]
pub struct StaticSecrets(pub BTreeMap<String, Secret>);

impl SecretProvider for StaticSecrets {
    fn get(&self, name: &str) -> Result<Secret, SecretError> {
        self.0
            .get(name)
            .cloned()
            .ok_or_else(|| SecretError::NotSet {
                name: name.to_string(),
                hint: "not in the test's secrets".into(),
            })
    }
}

/// What redacted text shows instead of a secret.
pub const REDACTED: &str = "[redacted]";

/// Replaces known secret values with `[redacted]` in text and JSON.
#[derive(Debug, Default, Clone)]
pub struct Redactor {
    values: Vec<String>,
}

impl Redactor {
    /// Remember `value` (a secret handed out); empty values are ignored.
    pub fn add(&mut self, value: &str) {
        if !value.is_empty() && !self.values.iter().any(|v| v == value) {
            self.values.push(value.to_string());
            // Longest first, so a secret containing another is replaced whole.
            self.values.sort_by_key(|v| std::cmp::Reverse(v.len()));
        }
    }

    pub fn is_empty(&self) -> bool {
        self.values.is_empty()
    }

    pub fn text(&self, text: &str) -> String {
        self.values.iter().fold(text.to_string(), |t, v| {
            // A secret that is part of the marker itself ("redacted") would
            // survive being replaced by it: such a one is starred out.
            let marker: std::borrow::Cow<'_, str> = if REDACTED.contains(v.as_str()) {
                "*".repeat(v.chars().count().max(3)).into()
            } else {
                REDACTED.into()
            };
            t.replace(v.as_str(), &marker)
        })
    }

    pub fn json(&self, value: &serde_json::Value) -> serde_json::Value {
        use serde_json::Value;
        match value {
            Value::String(s) => Value::String(self.text(s)),
            Value::Array(a) => Value::Array(a.iter().map(|v| self.json(v)).collect()),
            Value::Object(o) => Value::Object(
                o.iter()
                    .map(|(k, v)| (self.text(k), self.json(v)))
                    .collect(),
            ),
            other => other.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_names_never_reach_outside_the_secrets_directory() {
        let root = tempfile::tempdir().expect("tempdir");
        let dir = root.path().join("secrets");
        std::fs::create_dir(&dir).expect("mkdir");
        let outside = root.path().join("outside_secret");
        std::fs::write(&outside, "stolen").expect("write");
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&outside, std::fs::Permissions::from_mode(0o600)).expect("chmod");
        let files = FileSecrets { dir };
        for bad in [
            "../outside_secret",
            "../../outside_secret",
            "/etc/passwd",
            "a/b",
            "",
            ".",
            "..",
            "-rf",
        ] {
            assert!(
                matches!(files.get(bad), Err(SecretError::Name(_))),
                "{bad:?} must be refused as a name"
            );
            assert!(
                matches!(EnvSecrets.get(bad), Err(SecretError::Name(_))),
                "{bad:?}"
            );
        }
        assert!(valid_secret_name("db-password_2"));
    }

    #[test]
    fn secret_never_prints_itself() {
        let s = Secret::new("hunter2");
        assert_eq!(format!("{s} {s:?}"), "[redacted] Secret([redacted])");
        assert_eq!(serde_json::to_string(&s).expect("json"), "\"[redacted]\"");
        assert_eq!(s.expose(), "hunter2");
    }

    #[test]
    fn redactor_replaces_every_occurrence_in_text_and_json() {
        let mut r = Redactor::default();
        r.add("hunter2");
        r.add("hunter2-long");
        r.add("");
        assert_eq!(
            r.text("a hunter2 b hunter2-long"),
            "a [redacted] b [redacted]"
        );
        assert_eq!(
            r.json(&serde_json::json!({"k": ["x hunter2"], "hunter2": 1})),
            serde_json::json!({"k": ["x [redacted]"], "[redacted]": 1})
        );
    }

    #[test]
    fn file_provider_refuses_readable_files_and_trims_one_newline() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().expect("tempdir");
        let p = FileSecrets {
            dir: dir.path().to_path_buf(),
        };
        // A value no temp directory name can contain (the error names the path).
        std::fs::write(dir.path().join("db"), "pw-9c1e!\n").expect("write");
        std::fs::set_permissions(
            dir.path().join("db"),
            std::fs::Permissions::from_mode(0o644),
        )
        .expect("chmod");
        let err = p.get("db").unwrap_err();
        assert!(matches!(err, SecretError::Unsafe { .. }), "{err}");
        assert!(!err.to_string().contains("pw-9c1e!"));
        std::fs::set_permissions(
            dir.path().join("db"),
            std::fs::Permissions::from_mode(0o600),
        )
        .expect("chmod");
        assert_eq!(p.get("db").expect("ok").expose(), "pw-9c1e!");
        assert!(matches!(
            p.get("none").unwrap_err(),
            SecretError::NotSet { .. }
        ));
    }

    #[test]
    fn env_variable_name() {
        assert_eq!(
            EnvSecrets::variable("db-password"),
            "FIREDRILL_SECRET_DB_PASSWORD"
        );
    }
}
