//! Scripted answers in place of real targets, for `firedrill kernel test`.
//!
//! A kernel under test runs in the real kernel host (same capability checks,
//! same dry-run interception, same limits); only the last hop, the command
//! or request on a target, is answered from a script instead of performed.
//! A call no answer matches fails with a message naming the option to add.

use firedrill_sdk::capability::{CommandPattern, UrlPattern, split_words};

use super::{ExecError, ExecOutput, HttpOutput, HttpRequest};

/// Largest scripted stdout or body, in bytes (a scripted answer is read from
/// the command line or a file; either way it is bounded).
pub const MAX_MOCK_ANSWER_BYTES: usize = 1 << 20;

/// Scripted answers for `exec` and `http`. Of the answers that match a
/// call, the first one not used yet answers it; when all are used, the last
/// one repeats. One answer per pattern therefore always answers the same;
/// several script a sequence (a unit `failed`, then `active`).
#[derive(Debug, Default)]
pub struct MockTargets {
    exec: Vec<(String, CommandPattern, ExecOutput)>,
    http: Vec<(String, String, UrlPattern, HttpOutput)>,
    /// Whether each answer (exec first, then http) was used.
    used: std::sync::Mutex<Vec<bool>>,
}

/// A scripted answer that cannot be parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("bad {option} {spec:?}: {reason}; the form is {form}")]
pub struct MockSpecError {
    option: &'static str,
    spec: String,
    reason: String,
    form: &'static str,
}

const EXEC_FORM: &str = "'PATTERN=>EXIT,STDOUT' (STDOUT may use \\n and \\t, or be @FILE)";
const HTTP_FORM: &str = "'METHOD URL-PATTERN=>STATUS,BODY' (BODY may use \\n and \\t, or be @FILE)";

impl MockTargets {
    /// Add an answer from `PATTERN=>EXIT,STDOUT`. `PATTERN` uses the
    /// capability syntax (word globs, final `...`).
    pub fn add_exec(&mut self, spec: &str) -> Result<(), MockSpecError> {
        let err = |reason: String| MockSpecError {
            option: "--mock-exec",
            spec: excerpt(spec),
            reason,
            form: EXEC_FORM,
        };
        let (pattern, answer) = spec.split_once("=>").ok_or_else(|| err("no `=>`".into()))?;
        let (code, stdout) = answer.split_once(',').unwrap_or((answer, ""));
        let exit_code: i32 = code
            .trim()
            .parse()
            .map_err(|_| err(format!("exit status {code:?} is not a number")))?;
        let matcher = CommandPattern::parse(pattern.trim()).map_err(|e| err(e.to_string()))?;
        let stdout = answer_bytes(stdout).map_err(err)?;
        self.exec.push((
            pattern.trim().to_string(),
            matcher,
            ExecOutput {
                exit_code,
                stdout,
                stderr: Vec::new(),
                truncated: false,
            },
        ));
        Ok(())
    }

    /// Add an answer from `METHOD URL-PATTERN=>STATUS,BODY`.
    pub fn add_http(&mut self, spec: &str) -> Result<(), MockSpecError> {
        let err = |reason: String| MockSpecError {
            option: "--mock-http",
            spec: excerpt(spec),
            reason,
            form: HTTP_FORM,
        };
        let (request, answer) = spec.split_once("=>").ok_or_else(|| err("no `=>`".into()))?;
        let (method, url) = request
            .trim()
            .split_once(' ')
            .ok_or_else(|| err("no method before the URL pattern".into()))?;
        let (status, body) = answer.split_once(',').unwrap_or((answer, ""));
        let status: u16 = status
            .trim()
            .parse()
            .map_err(|_| err(format!("status {status:?} is not a number")))?;
        let matcher = UrlPattern::parse(url.trim()).map_err(|e| err(e.to_string()))?;
        let body = answer_bytes(body).map_err(err)?;
        self.http.push((
            method.trim().to_ascii_uppercase(),
            url.trim().to_string(),
            matcher,
            HttpOutput {
                status,
                headers: Vec::new(),
                body,
                truncated: false,
            },
        ));
        Ok(())
    }

    pub(super) fn exec(
        &self,
        target: &str,
        command: &str,
        output_bytes: usize,
    ) -> Result<ExecOutput, ExecError> {
        let argv = split_words(command).map_err(|e| ExecError::Failed {
            target: target.to_string(),
            reason: e.to_string(),
        })?;
        let matching: Vec<usize> = (0..self.exec.len())
            .filter(|&i| self.exec[i].1.matches(&argv))
            .collect();
        let (_, _, answer) = self
            .pick(&matching, 0)
            .map(|i| &self.exec[i])
            .ok_or_else(|| ExecError::Failed {
                target: target.to_string(),
                reason: format!(
                    "no scripted answer for `{command}`; add --mock-exec '{command}=>0,OUTPUT'"
                ),
            })?;
        let mut out = answer.clone();
        out.truncated = out.stdout.len() > output_bytes;
        out.stdout.truncate(output_bytes);
        Ok(out)
    }

    pub(super) fn http(
        &self,
        target: &str,
        request: &HttpRequest,
        output_bytes: usize,
    ) -> Result<HttpOutput, ExecError> {
        let method = request.method.to_ascii_uppercase();
        let matching: Vec<usize> = (0..self.http.len())
            .filter(|&i| {
                let (m, _, p, _) = &self.http[i];
                (m == "*" || *m == method) && p.matches(&request.url)
            })
            .collect();
        let (_, _, _, answer) = self
            .pick(&matching, self.exec.len())
            .map(|i| &self.http[i])
            .ok_or_else(|| ExecError::Failed {
                target: target.to_string(),
                reason: format!(
                    "no scripted answer for {method} {}; add --mock-http '{method} {}=>200,BODY'",
                    request.url, request.url
                ),
            })?;
        let mut out = answer.clone();
        out.truncated = out.body.len() > output_bytes;
        out.body.truncate(output_bytes);
        Ok(out)
    }

    /// Of the `matching` answers (indexes; `offset` into `used`), the first
    /// unused one, else the last; marked used.
    fn pick(&self, matching: &[usize], offset: usize) -> Option<usize> {
        let mut used = self
            .used
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        used.resize(self.exec.len() + self.http.len(), false);
        let i = matching
            .iter()
            .copied()
            .find(|&i| !used[offset + i])
            .or_else(|| matching.last().copied())?;
        used[offset + i] = true;
        Some(i)
    }

    /// Whether any answer is scripted.
    pub fn is_empty(&self) -> bool {
        self.exec.is_empty() && self.http.is_empty()
    }
}

/// The start of a spec, for an error message (a spec may be up to 1 MiB).
fn excerpt(spec: &str) -> String {
    const SHOWN: usize = 120;
    match spec.char_indices().nth(SHOWN) {
        Some((i, _)) => format!("{}...", &spec[..i]),
        None => spec.to_string(),
    }
}

/// `@FILE` (read, bounded) or text with `\n`, `\t` and `\\` escapes.
fn answer_bytes(text: &str) -> Result<Vec<u8>, String> {
    if let Some(path) = text.strip_prefix('@') {
        let meta = std::fs::metadata(path).map_err(|e| format!("cannot read {path}: {e}"))?;
        if meta.len() > MAX_MOCK_ANSWER_BYTES as u64 {
            return Err(format!(
                "{path} is {} bytes; a scripted answer is at most {MAX_MOCK_ANSWER_BYTES}",
                meta.len()
            ));
        }
        return std::fs::read(path).map_err(|e| format!("cannot read {path}: {e}"));
    }
    if text.len() > MAX_MOCK_ANSWER_BYTES {
        return Err(format!(
            "the answer is {} bytes; at most {MAX_MOCK_ANSWER_BYTES}",
            text.len()
        ));
    }
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('n') => out.push('\n'),
            Some('t') => out.push('\t'),
            Some('\\') => out.push('\\'),
            Some(other) => {
                out.push('\\');
                out.push(other);
            }
            None => out.push('\\'),
        }
    }
    Ok(out.into_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exec_answers_match_like_capabilities_and_unmatched_calls_name_the_fix() {
        let mut m = MockTargets::default();
        m.add_exec("df -P *=>0,Filesystem\\n/dev/vda 100 91 9 91% /")
            .expect("spec");
        m.add_exec("truncate -s 0 ...=>1").expect("spec");
        let out = m.exec("t", "df -P /var/log", 1024).expect("answer");
        assert_eq!(out.exit_code, 0);
        assert_eq!(out.stdout, b"Filesystem\n/dev/vda 100 91 9 91% /");
        assert_eq!(
            m.exec("t", "truncate -s 0 a b", 1024)
                .expect("answer")
                .exit_code,
            1
        );
        // One word more than the pattern: no match, like a capability.
        let err = m.exec("t", "df -P /a b", 1024).expect_err("unmatched");
        assert!(
            err.to_string()
                .contains("--mock-exec 'df -P /a b=>0,OUTPUT'"),
            "{err}"
        );
        let cut = m.exec("t", "df -P /", 10).expect("answer");
        assert!(cut.truncated && cut.stdout.len() == 10);
    }

    #[test]
    fn answers_to_the_same_command_are_used_in_turn_and_the_last_repeats() {
        let mut m = MockTargets::default();
        m.add_exec("systemctl is-active -- *=>3,failed")
            .expect("spec");
        m.add_exec("systemctl restart -- *=>0,").expect("spec");
        m.add_exec("systemctl is-active -- *=>0,active")
            .expect("spec");
        let state = |m: &MockTargets| {
            String::from_utf8(
                m.exec("t", "systemctl is-active -- web", 100)
                    .expect("a")
                    .stdout,
            )
            .expect("utf8")
        };
        assert_eq!(state(&m), "failed");
        assert_eq!(
            m.exec("t", "systemctl restart -- web", 100)
                .expect("a")
                .exit_code,
            0
        );
        assert_eq!(
            m.exec("t", "systemctl restart -- web", 100)
                .expect("a")
                .exit_code,
            0
        );
        assert_eq!(state(&m), "active");
        assert_eq!(state(&m), "active");
    }

    #[test]
    fn http_answers_match_method_and_url() {
        let mut m = MockTargets::default();
        m.add_http("get http://*/healthz=>503,down").expect("spec");
        let req = |method: &str, url: &str| HttpRequest {
            method: method.into(),
            url: url.into(),
            headers: Vec::new(),
            body: Vec::new(),
        };
        let out = m
            .http("api", &req("GET", "http://api/healthz"), 100)
            .expect("answer");
        assert_eq!((out.status, out.body.as_slice()), (503, &b"down"[..]));
        assert!(
            m.http("api", &req("POST", "http://api/healthz"), 100)
                .is_err()
        );
    }

    #[test]
    fn scripted_answers_are_bounded_at_max_mock_answer_bytes() {
        let mut m = MockTargets::default();
        let at = "x".repeat(MAX_MOCK_ANSWER_BYTES);
        m.add_exec(&format!("cat *=>0,{at}")).expect("at the limit");
        let over = format!("cat *=>0,{at}x");
        let err = m.add_exec(&over).expect_err("over the limit");
        assert!(err.to_string().contains("at most"), "{err}");
        assert!(
            err.to_string().len() < 1000,
            "the error quotes an excerpt only"
        );
        let dir = tempfile::tempdir().expect("tmp");
        let file = dir.path().join("big");
        std::fs::write(&file, format!("{at}x")).expect("write");
        let err = m
            .add_http(&format!("GET http://*/=>200,@{}", file.display()))
            .expect_err("file over the limit");
        assert!(err.to_string().contains("at most"), "{err}");
    }

    #[test]
    fn bad_specs_are_refused_with_the_form() {
        let mut m = MockTargets::default();
        for bad in ["df -P *", "df=>x,1", "[=>0,"] {
            let e = m.add_exec(bad).expect_err(bad);
            assert!(e.to_string().contains("PATTERN=>EXIT,STDOUT"), "{e}");
        }
        assert!(m.add_http("http://x/=>200").is_err());
        assert!(m.add_exec("x=>0,@/nonexistent/file").is_err());
        assert!(m.is_empty());
    }
}
