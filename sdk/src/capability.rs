//! Capability patterns: how a host call is matched against what a kernel declared.
//!
//! The engine and the SDK's mock host use this one matcher, so a kernel that
//! passes its tests against the mock host is judged the same way in production.
//!
//! Commands are compared as *words*: the command is split like a POSIX shell
//! would split it (quotes honoured, nothing expanded) and each word is matched
//! against the glob in the same position of the pattern. The command that is
//! finally executed is re-quoted from those words ([`ExecMatch::command`]), so
//! shell metacharacters inside a word are data, never syntax: what was matched
//! is exactly what runs.

use crate::manifest::{Capabilities, Effect, ExecCapability, HttpCapability};

pub use crate::pattern::{CommandPattern, PatternError, UrlPattern, join_words, split_words};

/// A command that matched a declared capability.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecMatch {
    /// The words the command was split into.
    pub argv: Vec<String>,
    /// The command to hand to a shell: `argv` re-quoted.
    pub command: String,
    /// The declared capability that allowed it.
    pub capability: ExecCapability,
}

impl ExecMatch {
    /// Observe or change.
    pub fn effect(&self) -> Effect {
        self.capability.effect
    }
}

/// Why a call was refused by the capability check.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("command {command:?} cannot be parsed: {source}")]
    Unparseable {
        command: String,
        #[source]
        source: PatternError,
    },
    #[error(
        "command {command:?} matches no exec capability the kernel declares; declared: {declared}"
    )]
    UndeclaredCommand { command: String, declared: String },
    #[error("{method} {url} matches no http capability the kernel declares; declared: {declared}")]
    UndeclaredRequest {
        method: String,
        url: String,
        declared: String,
    },
    #[error("secret {name:?} is not declared by the kernel; declared: {declared}")]
    UndeclaredSecret { name: String, declared: String },
    #[error("target {target:?} was not granted to this step; granted: {granted}")]
    UngrantedTarget { target: String, granted: String },
}

fn list<T>(items: &[T], show: impl Fn(&T) -> String) -> String {
    if items.is_empty() {
        "(none)".to_string()
    } else {
        items.iter().map(show).collect::<Vec<_>>().join(", ")
    }
}

impl Capabilities {
    /// Find the declared exec capability that allows `command`. When several
    /// match, a `change` capability wins over `observe`, so that dry-run never
    /// performs a command any declaration calls a change.
    pub fn match_exec(&self, command: &str) -> Result<ExecMatch, Refusal> {
        let argv = split_words(command).map_err(|source| Refusal::Unparseable {
            command: command.to_string(),
            source,
        })?;
        let mut found: Option<&ExecCapability> = None;
        for cap in &self.exec {
            // Invalid patterns were refused when the manifest was validated.
            let Ok(pattern) = CommandPattern::parse(&cap.pattern) else {
                continue;
            };
            if pattern.matches(&argv) && found.is_none_or(|f| f.effect == Effect::Observe) {
                found = Some(cap);
            }
        }
        let capability = found.cloned().ok_or_else(|| Refusal::UndeclaredCommand {
            command: command.to_string(),
            declared: list(&self.exec, |c| format!("{:?} ({})", c.pattern, c.effect)),
        })?;
        let command = join_words(&argv).map_err(|source| Refusal::Unparseable {
            command: command.to_string(),
            source,
        })?;
        Ok(ExecMatch {
            argv,
            command,
            capability,
        })
    }

    /// Find the declared http capability that allows `method url` (change wins
    /// over observe, as for exec).
    pub fn match_http(&self, method: &str, url: &str) -> Result<HttpCapability, Refusal> {
        let mut found: Option<&HttpCapability> = None;
        for cap in &self.http {
            let Ok(pattern) = UrlPattern::parse(&cap.url_pattern) else {
                continue;
            };
            let method_ok = cap.method == "*" || cap.method == method;
            if method_ok
                && pattern.matches(url)
                && found.is_none_or(|f| f.effect == Effect::Observe)
            {
                found = Some(cap);
            }
        }
        found.cloned().ok_or_else(|| Refusal::UndeclaredRequest {
            method: method.to_string(),
            url: url.to_string(),
            declared: list(&self.http, |c| format!("{} {}", c.method, c.url_pattern)),
        })
    }

    /// Check that `name` is a declared secret.
    pub fn check_secret(&self, name: &str) -> Result<(), Refusal> {
        if self.secrets.iter().any(|s| s == name) {
            Ok(())
        } else {
            Err(Refusal::UndeclaredSecret {
                name: name.to_string(),
                declared: list(&self.secrets, String::clone),
            })
        }
    }
}

/// Check that `target` is one of the `granted` targets.
pub fn check_target(granted: &[String], target: &str) -> Result<(), Refusal> {
    if granted.iter().any(|g| g == target) {
        Ok(())
    } else {
        Err(Refusal::UngrantedTarget {
            target: target.to_string(),
            granted: list(granted, String::clone),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn caps(exec: &[(&str, Effect)]) -> Capabilities {
        Capabilities {
            exec: exec
                .iter()
                .map(|(p, e)| ExecCapability {
                    pattern: p.to_string(),
                    effect: *e,
                })
                .collect(),
            ..Capabilities::default()
        }
    }

    /// (pattern, command, matches?)
    #[test]
    fn command_patterns() {
        let cases = [
            ("systemctl restart *", "systemctl restart nginx", true),
            ("systemctl restart *", "systemctl  restart   nginx", true),
            (
                "systemctl restart *",
                "systemctl restart 'nginx; reboot'",
                true,
            ),
            (
                "systemctl restart *",
                "systemctl restart nginx; reboot",
                false,
            ),
            (
                "systemctl restart *",
                "systemctl restart nginx extra",
                false,
            ),
            ("systemctl restart *", "systemctl restart", false),
            ("systemctl restart *", "systemctl stop nginx", false),
            (
                "systemctl restart *.service",
                "systemctl restart a.service",
                true,
            ),
            (
                "systemctl restart *.service",
                "systemctl restart a.socket",
                false,
            ),
            ("df -P -k ...", "df -P -k", true),
            ("df -P -k ...", "df -P -k / /var", true),
            ("df -P -k ...", "df -P", false),
            ("echo ?", "echo a", true),
            ("echo ?", "echo ab", false),
        ];
        for (pattern, command, expected) in cases {
            let p = CommandPattern::parse(pattern).expect("pattern");
            let argv = split_words(command).expect("command");
            assert_eq!(p.matches(&argv), expected, "{pattern:?} vs {command:?}");
        }
    }

    #[test]
    fn bad_patterns_are_refused() {
        assert_eq!(CommandPattern::parse("").unwrap_err(), PatternError::Empty);
        assert_eq!(
            CommandPattern::parse("echo 'x").unwrap_err(),
            PatternError::Quoting
        );
        assert_eq!(
            CommandPattern::parse("echo ... x").unwrap_err(),
            PatternError::Ellipsis
        );
        assert!(matches!(
            CommandPattern::parse("echo [").unwrap_err(),
            PatternError::Glob { .. }
        ));
    }

    #[test]
    fn matched_command_is_requoted_so_metacharacters_stay_data() {
        let caps = caps(&[("echo *", Effect::Observe)]);
        let m = caps.match_exec("echo 'a; rm -rf /'").expect("matches");
        assert_eq!(m.argv, vec!["echo", "a; rm -rf /"]);
        assert_eq!(split_words(&m.command).expect("split"), m.argv);
        assert!(m.command.contains('\'') || m.command.contains('"'));
    }

    #[test]
    fn change_wins_over_observe_when_both_match() {
        let caps = caps(&[
            ("kubectl *", Effect::Observe),
            ("kubectl drain", Effect::Change),
        ]);
        assert_eq!(
            caps.match_exec("kubectl drain").expect("match").effect(),
            Effect::Change
        );
        assert_eq!(
            caps.match_exec("kubectl get").expect("match").effect(),
            Effect::Observe
        );
    }

    #[test]
    fn refusals_name_what_was_declared() {
        let caps = caps(&[("systemctl is-active *", Effect::Observe)]);
        let err = caps.match_exec("reboot").unwrap_err().to_string();
        assert!(
            err.contains("\"reboot\"") && err.contains("systemctl is-active *"),
            "{err}"
        );
        let err = check_target(&["web-1".into()], "db-1")
            .unwrap_err()
            .to_string();
        assert!(err.contains("db-1") && err.contains("web-1"), "{err}");
        let err = caps.check_secret("token").unwrap_err().to_string();
        assert!(err.contains("(none)"), "{err}");
    }

    #[test]
    fn http_patterns() {
        let caps = Capabilities {
            http: vec![HttpCapability {
                method: "GET".into(),
                url_pattern: "https://*/healthz".into(),
                effect: Effect::Observe,
            }],
            ..Capabilities::default()
        };
        assert!(caps.match_http("GET", "https://web-1:8443/healthz").is_ok());
        assert!(caps.match_http("POST", "https://web-1/healthz").is_err());
        assert!(caps.match_http("GET", "https://web-1/admin").is_err());
    }
}
