//! Parse runbook YAML, reporting every structural problem with file, line,
//! column and field path, not just the first.

use std::fmt;
use std::sync::OnceLock;

use serde::Serialize;

use super::model::Runbook;
use crate::yaml::{Locator, MAX_YAML_DEPTH, check_depth};

/// Largest runbook file accepted, checked before anything parses it.
pub const MAX_RUNBOOK_BYTES: usize = 1 << 20;

/// Most problems reported for one file; the rest are counted in
/// [`Problems::omitted`].
pub const MAX_PROBLEMS: usize = 100;

/// Longest message of one problem, in bytes (a schema error can quote the
/// whole offending value); longer ones are cut and say so.
pub const MAX_PROBLEM_BYTES: usize = 512;

fn bounded(message: String) -> String {
    if message.len() <= MAX_PROBLEM_BYTES {
        return message;
    }
    format!(
        "{}... ({} bytes, cut)",
        crate::term::clip(&message, MAX_PROBLEM_BYTES),
        message.len()
    )
}

/// One problem in a runbook.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Problem {
    pub line: Option<usize>,
    pub column: Option<usize>,
    /// Field path, e.g. `steps[1].kernel`.
    pub path: String,
    pub message: String,
}

/// Every problem found in one file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, thiserror::Error)]
pub struct Problems {
    pub file: String,
    /// The first [`MAX_PROBLEMS`] problems, in file order.
    pub problems: Vec<Problem>,
    /// Problems found beyond those, not listed.
    #[serde(skip_serializing_if = "is_zero")]
    pub omitted: usize,
}

fn is_zero(n: &usize) -> bool {
    *n == 0
}

impl fmt::Display for Problems {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.problems.len() + self.omitted;
        write!(
            f,
            "{} has {n} problem{}:",
            self.file,
            if n == 1 { "" } else { "s" }
        )?;
        for p in &self.problems {
            write!(f, "\n  {}", self.file)?;
            if let (Some(l), Some(c)) = (p.line, p.column) {
                write!(f, ":{l}:{c}")?;
            }
            if p.path.is_empty() {
                write!(f, ": {}", p.message)?;
            } else {
                write!(f, ": {}: {}", p.path, p.message)?;
            }
        }
        if self.omitted > 0 {
            write!(
                f,
                "\n  ... and {} more (only the first {MAX_PROBLEMS} are listed; fix these and validate again)",
                self.omitted
            )?;
        }
        Ok(())
    }
}

/// `/steps/1/kernel` -> `steps[1].kernel`.
pub fn display_path(pointer: &str) -> String {
    let mut out = String::new();
    for seg in pointer.split('/').skip(1) {
        let seg = seg.replace("~1", "/").replace("~0", "~");
        if seg.chars().all(|c| c.is_ascii_digit()) && !seg.is_empty() {
            out.push_str(&format!("[{seg}]"));
        } else {
            if !out.is_empty() {
                out.push('.');
            }
            out.push_str(&seg);
        }
    }
    out
}

/// Collects problems for one file, locating each by its JSON pointer.
#[derive(Debug)]
pub struct Report<'a> {
    file: &'a str,
    locator: Locator,
    problems: Vec<Problem>,
}

impl<'a> Report<'a> {
    pub fn new(file: &'a str, text: &str) -> Self {
        Report {
            file,
            locator: Locator::new(text),
            problems: Vec::new(),
        }
    }

    /// A report that locates nothing (for text refused before indexing).
    fn unindexed(file: &'a str) -> Self {
        Report {
            file,
            locator: Locator::empty(),
            problems: Vec::new(),
        }
    }

    pub fn add(&mut self, pointer: &str, message: impl Into<String>) {
        let pos = self.locator.find(pointer);
        self.problems.push(Problem {
            line: pos.map(|p| p.0),
            column: pos.map(|p| p.1),
            path: display_path(pointer),
            message: bounded(message.into()),
        });
    }

    pub fn add_at(
        &mut self,
        line: Option<usize>,
        column: Option<usize>,
        message: impl Into<String>,
    ) {
        self.problems.push(Problem {
            line,
            column,
            path: String::new(),
            message: bounded(message.into()),
        });
    }

    pub fn is_empty(&self) -> bool {
        self.problems.is_empty()
    }

    /// `Ok` when nothing was reported.
    pub fn finish(self) -> Result<(), Problems> {
        if self.problems.is_empty() {
            Ok(())
        } else {
            Err(self.into_problems())
        }
    }

    /// The problems, in file order.
    pub fn into_problems(mut self) -> Problems {
        self.problems
            .sort_by_key(|p| (p.line.unwrap_or(usize::MAX), p.column.unwrap_or(0)));
        let omitted = self.problems.len().saturating_sub(MAX_PROBLEMS);
        self.problems.truncate(MAX_PROBLEMS);
        Problems {
            file: self.file.to_string(),
            problems: self.problems,
            omitted,
        }
    }
}

fn runbook_schema() -> &'static (serde_json::Value, Option<jsonschema::Validator>) {
    static SCHEMA: OnceLock<(serde_json::Value, Option<jsonschema::Validator>)> = OnceLock::new();
    SCHEMA.get_or_init(|| {
        let schema = Runbook::json_schema();
        let validator = jsonschema::validator_for(&schema).ok();
        (schema, validator)
    })
}

/// The field names accepted at `pointer`, for "unknown field" messages.
fn accepted_fields(schema: &serde_json::Value, pointer: &str) -> Vec<String> {
    let segs: Vec<&str> = pointer.split('/').skip(1).collect();
    let def = match segs.as_slice() {
        [] => Some(schema),
        ["steps" | "on_failure", _] => schema.pointer("/$defs/Step"),
        ["steps" | "on_failure", _, "retries"] => schema.pointer("/$defs/Retries"),
        _ => None,
    };
    def.and_then(|d| d.get("properties"))
        .and_then(|p| p.as_object())
        .map(|o| o.keys().cloned().collect())
        .unwrap_or_default()
}

/// A readable message for a value that fails a format pattern.
fn pattern_message(pointer: &str, value: &serde_json::Value) -> String {
    let text = value.as_str().unwrap_or_default();
    if pointer.ends_with("/kernel") {
        return super::model::KernelRef::parse(text)
            .err()
            .unwrap_or_else(|| format!("{text:?} is not name@version"));
    }
    if pointer.ends_with("/id") {
        return format!(
            "step id {text:?} is not valid: use lower-case letters, digits, '-' and '_', starting with a letter (at most 63)"
        );
    }
    format!("{text:?} does not have the required format")
}

/// Report every `timeout` and `retries.backoff` that is not a duration, at its own line.
fn check_durations(json: &serde_json::Value, report: &mut Report<'_>) {
    for phase in ["steps", "on_failure"] {
        let Some(steps) = json.get(phase).and_then(|s| s.as_array()) else {
            continue;
        };
        for (i, step) in steps.iter().enumerate() {
            for (pointer, value) in [
                (format!("/{phase}/{i}/timeout"), step.get("timeout")),
                (
                    format!("/{phase}/{i}/retries/backoff"),
                    step.get("retries").and_then(|r| r.get("backoff")),
                ),
            ] {
                if let Some(text) = value.and_then(|v| v.as_str())
                    && let Err(e) = humantime::parse_duration(text)
                {
                    report.add(
                        &pointer,
                        format!("{text:?} is not a duration like 30s or 5m: {e}"),
                    );
                }
            }
        }
    }
}

/// The checks every runbook text passes before it is parsed: its size and
/// its nesting depth.
pub fn check_runbook_text(text: &str) -> Result<(), Problem> {
    if text.len() > MAX_RUNBOOK_BYTES {
        return Err(Problem {
            line: None,
            column: None,
            path: String::new(),
            message: format!(
                "the file is {} bytes; runbooks are limited to {MAX_RUNBOOK_BYTES} bytes",
                text.len()
            ),
        });
    }
    check_depth(text, MAX_YAML_DEPTH).map_err(|at| Problem {
        line: Some(at.line),
        column: Some(at.column),
        path: String::new(),
        message: format!(
            "nested more than {MAX_YAML_DEPTH} levels deep; runbooks are limited to {MAX_YAML_DEPTH} levels of mappings and sequences"
        ),
    })
}

/// Parse `text` (from `file`) into a runbook, or every problem found.
///
/// Before anything parses it, the text is checked for size
/// ([`MAX_RUNBOOK_BYTES`]) and nesting ([`MAX_YAML_DEPTH`], without
/// recursion), so no input can exhaust memory or the stack.
pub fn parse_runbook(file: &str, text: &str) -> Result<Runbook, Problems> {
    if let Err(problem) = check_runbook_text(text) {
        let mut report = Report::unindexed(file);
        report.problems.push(problem);
        return Err(report.into_problems());
    }
    let mut report = Report::new(file, text);
    let yaml: serde_yaml::Value = match serde_yaml::from_str(text) {
        Ok(v) => v,
        Err(e) => {
            let loc = e.location();
            // Nesting the depth check could not see (the text stops being
            // YAML for yaml-rust2 before the limit) still gets its message.
            let message = if e.to_string().contains("recursion limit exceeded") {
                format!(
                    "nested more than {MAX_YAML_DEPTH} levels deep; runbooks are limited to {MAX_YAML_DEPTH} levels of mappings and sequences"
                )
            } else {
                format!("not valid YAML: {e}")
            };
            report.add_at(
                loc.as_ref().map(|l| l.line()),
                loc.as_ref().map(|l| l.column()),
                message,
            );
            return Err(report.into_problems());
        }
    };
    let json = match serde_json::to_value(&yaml) {
        Ok(j) => j,
        Err(e) => {
            report.add_at(
                None,
                None,
                format!("cannot be read as JSON-compatible data: {e}"),
            );
            return Err(report.into_problems());
        }
    };
    let (schema, validator) = runbook_schema();
    if let Some(validator) = validator {
        for error in validator.iter_errors(&json) {
            let pointer = error.instance_path().as_str().to_string();
            match error.kind() {
                jsonschema::error::ValidationErrorKind::AdditionalProperties { unexpected } => {
                    let accepted = accepted_fields(schema, &pointer).join(", ");
                    for field in unexpected {
                        report.add(
                            &format!("{pointer}/{field}"),
                            format!("unknown field `{field}`; accepted fields here: {accepted}"),
                        );
                    }
                }
                jsonschema::error::ValidationErrorKind::Pattern { .. } => {
                    report.add(&pointer, pattern_message(&pointer, error.instance()))
                }
                // An optional block (`anyOf: [the block, null]`) that is
                // present but wrong: say what is wrong with it, not "anyOf".
                jsonschema::error::ValidationErrorKind::AnyOf { context } => {
                    let specific = context.iter().find(|branch| {
                        !branch.is_empty()
                            && !branch.iter().all(|e| {
                                matches!(
                                    e.kind(),
                                    jsonschema::error::ValidationErrorKind::Type { .. }
                                )
                            })
                    });
                    match specific {
                        Some(branch) => {
                            for e in branch {
                                report.add(e.instance_path().as_str(), e.to_string());
                            }
                        }
                        None => report.add(&pointer, error.to_string()),
                    }
                }
                _ => report.add(&pointer, error.to_string()),
            }
        }
        check_durations(&json, &mut report);
    }
    if !report.is_empty() {
        return Err(report.into_problems());
    }
    match serde_yaml::from_str::<Runbook>(text) {
        Ok(rb) => Ok(rb),
        Err(e) => {
            let loc = e.location();
            report.add_at(
                loc.as_ref().map(|l| l.line()),
                loc.as_ref().map(|l| l.column()),
                e.to_string(),
            );
            Err(report.into_problems())
        }
    }
}
