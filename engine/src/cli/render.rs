//! Human and JSON views of kernels, runs and audit records.

use std::fmt::Write as _;

use serde_json::Value;

use super::term::{self, Table, field, sanitize_json, sanitized};
use crate::audit::AuditRecord;
use crate::executor::planned_changes;
use crate::kernel::{KernelHost, LoadedKernel};
use crate::store::{HostCallRow, RunRow, RunStatus, StepRow, StepTargetRow};

fn str_of<'a>(v: &'a Value, key: &str) -> &'a str {
    v.get(key).and_then(Value::as_str).unwrap_or("")
}

/// Seconds between two RFC 3339 times, if both parse.
fn elapsed(start: &str, end: Option<&str>) -> Option<f64> {
    let s = humantime::parse_rfc3339(start).ok()?;
    let e = humantime::parse_rfc3339(end?).ok()?;
    e.duration_since(s).ok().map(|d| d.as_secs_f64())
}

/// One host call as a line: effect, target, what, result.
pub(crate) fn call_line(call: &Value, live: bool) -> String {
    // Commands, URLs, output and reasons come from kernels and targets.
    let mut call = call.clone();
    sanitize_json(&mut call);
    let call = &call;
    let effect = str_of(call, "effect");
    let what = match str_of(call, "kind") {
        "exec" => str_of(call, "command").to_string(),
        "http" => format!("{} {}", str_of(call, "method"), str_of(call, "url")),
        "secret" => format!("secret {}", str_of(call, "name")),
        other => other.to_string(),
    };
    let target = call.get("target").and_then(Value::as_str).unwrap_or("-");
    let simulated = call.get("simulated") == Some(&Value::Bool(true));
    let result = match str_of(call, "outcome") {
        "ok" if simulated => "not performed (dry-run)".to_string(),
        "ok" => match call.get("exit_code").and_then(Value::as_i64) {
            Some(code) => {
                let out = str_of(call, "stdout").trim();
                let first = out.lines().next().unwrap_or("");
                if first.is_empty() {
                    format!("exit {code}")
                } else {
                    format!("exit {code}: {first}")
                }
            }
            None => "ok".into(),
        },
        other => format!("{}: {}", other.to_uppercase(), str_of(call, "reason")),
    };
    let marker = match (effect, simulated, live) {
        ("change", true, _) => ">> PLANNED CHANGE",
        ("change", false, true) => ">> CHANGED",
        ("", _, _) => "   denied",
        _ => "   observe",
    };
    format!("      {marker:<17} {target:<12} {what}  -> {result}\n")
}

/// The run view: step by step, changes highlighted, elapsed time.
pub fn run_text(
    run: &RunRow,
    steps: &[StepRow],
    per_target: &[StepTargetRow],
    calls: &[HostCallRow],
) -> String {
    // Errors, outputs and actors may carry text from input.
    let run = &sanitized(run);
    let steps: &[StepRow] = &steps.iter().map(sanitized).collect::<Vec<_>>();
    let per_target: &[StepTargetRow] = &per_target.iter().map(sanitized).collect::<Vec<_>>();
    let live = run.mode == "live";
    let mut s = String::new();
    let _ = writeln!(
        s,
        "{} {}@{}{}  run {}  by {}",
        if live { "LIVE RUN" } else { "DRY-RUN" },
        run.runbook,
        run.runbook_version,
        if run.draft {
            " (draft: not published)"
        } else {
            ""
        },
        run.id,
        run.actor
    );
    for step in steps {
        let marker = match step.status.as_str() {
            "succeeded" => "ok     ",
            "failed" => "FAILED ",
            "skipped" => "skipped",
            _ => "running",
        };
        let targets = step
            .targets
            .as_array()
            .map(|t| {
                t.iter()
                    .filter_map(Value::as_str)
                    .collect::<Vec<_>>()
                    .join(",")
            })
            .unwrap_or_default();
        let _ = write!(s, "  {marker} {:<16} {}", step.step_id, step.kernel);
        if !targets.is_empty() {
            let _ = write!(s, " on {targets}");
        }
        if let Some(ms) = step.duration_ms {
            let _ = write!(s, "  {ms} ms");
        }
        if step.attempts > 1 {
            let _ = write!(s, "  ({} attempts)", step.attempts);
        }
        if step.phase == crate::store::Phase::OnFailure {
            let _ = write!(s, "  [on_failure]");
        }
        s.push('\n');
        if step.status == crate::store::StepStatus::Skipped {
            let _ = writeln!(s, "      skipped: its `when` condition was false");
        }
        for c in calls.iter().filter(|c| c.step_id == step.step_id) {
            s.push_str(&call_line(&c.call, live));
        }
        let fanned: Vec<&StepTargetRow> = per_target
            .iter()
            .filter(|t| t.step_id == step.step_id)
            .collect();
        if fanned.len() > 1 {
            for t in fanned {
                let _ = write!(s, "      target {:<14} {}", t.target, t.status);
                if let Some(e) = &t.error {
                    let _ = write!(s, ": {e}");
                }
                s.push('\n');
            }
        }
        if let Some(error) = &step.error {
            let _ = writeln!(s, "      error: {error}");
        }
    }
    let planned = planned_changes(calls).len();
    let elapsed = elapsed(&run.started_at, run.finished_at.as_deref())
        .map(|e| format!(" in {e:.2} s"))
        .unwrap_or_default();
    match run.status {
        RunStatus::Succeeded => {
            let _ = writeln!(
                s,
                "{} succeeded{elapsed}",
                if live { "run" } else { "dry-run" }
            );
        }
        RunStatus::Failed => {
            let _ = writeln!(
                s,
                "{} FAILED{elapsed}: {}",
                if live { "run" } else { "dry-run" },
                run.error.as_deref().unwrap_or("")
            );
        }
        RunStatus::Queued => {
            let _ = writeln!(s, "queued: waiting for a node to start it");
        }
        RunStatus::Running => {
            let _ = writeln!(
                s,
                "still running (if its node stopped, another takes it over when the lease expires)"
            );
        }
        RunStatus::NeedsAttention => {
            let _ = writeln!(s, "NEEDS ATTENTION: {}", run.error.as_deref().unwrap_or(""));
            let _ = writeln!(
                s,
                "decide: `firedrill runs resume {id} --reason ...` (run that step again), `firedrill runs skip {id} --reason ...` (go on after it) or `firedrill runs abandon {id} --reason ...`",
                id = run.id
            );
        }
        RunStatus::Interrupted => {
            let _ = writeln!(s, "INTERRUPTED: {}", run.error.as_deref().unwrap_or(""));
        }
        RunStatus::Halted => {
            let _ = writeln!(s, "HALTED: {}", run.error.as_deref().unwrap_or(""));
            let _ = writeln!(
                s,
                "when the switch is off: `firedrill runs resume {} --reason ...` or `firedrill runs abandon {} --reason ...`",
                run.id, run.id
            );
        }
        RunStatus::AwaitingApproval => {
            let _ = writeln!(
                s,
                "AWAITING APPROVAL: `firedrill approve {} --comment ...` (or deny); the run's initiator cannot approve it",
                run.id
            );
        }
        RunStatus::Cancelled => {
            let _ = writeln!(s, "CANCELLED: {}", run.error.as_deref().unwrap_or(""));
        }
        RunStatus::Abandoned => {
            let _ = writeln!(s, "ABANDONED: {}", run.error.as_deref().unwrap_or(""));
        }
    }
    if !live {
        let _ = writeln!(
            s,
            "plan: {planned} change{} would be made; nothing was changed. Review it, then run again with --live.",
            if planned == 1 { "" } else { "s" }
        );
    }
    s
}

/// The run view of [`run_text`], already escaped, with its markers in
/// colour: planned and made changes yellow, failures and stops red,
/// successes green. Only the CLI's own markers at the start of a line
/// (after their indent) are coloured.
pub fn coloured(text: &str) -> String {
    const MARKS: &[(&str, &str)] = &[
        ("      >> PLANNED CHANGE", "33"),
        ("      >> CHANGED", "33"),
        ("  ok     ", "32"),
        ("  FAILED ", "31"),
        ("LIVE RUN ", "1;33"),
        ("dry-run FAILED", "31"),
        ("run FAILED", "31"),
        ("dry-run succeeded", "32"),
        ("run succeeded", "32"),
        ("NEEDS ATTENTION", "31"),
        ("INTERRUPTED", "31"),
        ("HALTED", "31"),
        ("AWAITING APPROVAL", "33"),
    ];
    let mut out = String::with_capacity(text.len() + 64);
    for line in text.split_inclusive('\n') {
        match MARKS.iter().find(|(mark, _)| line.starts_with(mark)) {
            Some((mark, sgr)) => {
                let indent = mark.len() - mark.trim_start().len();
                out.push_str(&mark[..indent]);
                out.push_str(&term::paint(sgr, mark.trim()));
                // Keep the trailing space of a padded marker.
                out.push_str(&mark[indent + mark.trim().len()..]);
                out.push_str(&line[mark.len()..]);
            }
            None => out.push_str(line),
        }
    }
    out
}

pub fn runs_text(rows: &[RunRow]) -> String {
    if rows.is_empty() {
        return "no runs\n".into();
    }
    let mut table = Table::new(&[
        ("RUN", usize::MAX),
        ("RUNBOOK", usize::MAX),
        ("MODE", usize::MAX),
        ("STATUS", usize::MAX),
        ("ACTOR", 32),
        ("STARTED", usize::MAX),
    ]);
    for r in rows {
        table.row([
            r.id.clone(),
            format!(
                "{}@{}{}",
                r.runbook,
                r.runbook_version,
                if r.draft { "*" } else { "" }
            ),
            r.mode.clone(),
            r.status.as_str().to_string(),
            r.actor.clone(),
            r.started_at.clone(),
        ]);
    }
    table.render()
}

pub fn audit_text(records: &[AuditRecord]) -> String {
    let mut s = String::new();
    if records.is_empty() {
        return "no audit records\n".into();
    }
    let _ = writeln!(s, "audit trail:");
    let mut table = Table::new(&[
        ("SEQ", usize::MAX),
        ("TIME", usize::MAX),
        ("ACTOR", 32),
        ("ACTION", usize::MAX),
        ("SUBJECT", 40),
        ("OUTCOME", 16),
        ("WHAT", 80),
    ]);
    for r in records {
        let mut details: Value = serde_json::from_str(&r.details).unwrap_or(Value::Null);
        sanitize_json(&mut details);
        let what = match r.action.as_str() {
            "host.call" | "capability.denied" => format!(
                "{} {}{}",
                str_of(&details, "effect"),
                str_of(&details, "command"),
                str_of(&details, "url")
            ),
            "step.started" => str_of(&details, "kernel").to_string(),
            _ => String::new(),
        };
        table.row([
            format!("#{}", r.seq),
            r.time.clone(),
            format!("{}:{}", r.actor_kind, r.actor_id),
            r.action.clone(),
            r.subject.clone(),
            r.outcome.clone(),
            what.trim().to_string(),
        ]);
    }
    for line in table.render().lines() {
        let _ = writeln!(s, "  {line}");
    }
    s
}

pub fn inspect_text(host: &KernelHost, kernel: &LoadedKernel) -> String {
    let m = &kernel.manifest;
    let l = &host.config().limits;
    let mut s = String::new();
    // The manifest is the kernel author's text.
    let _ = writeln!(s, "{}", field(&m.reference()));
    let _ = writeln!(s, "  description  {}", field(&m.description));
    let _ = writeln!(s, "  digest       {}", kernel.digest);
    let _ = writeln!(s, "  size         {} bytes", kernel.size_bytes);
    let _ = writeln!(
        s,
        "  idempotent   {}",
        if m.idempotent { "yes" } else { "no" }
    );
    let _ = writeln!(s, "  capabilities");
    if m.capabilities.exec.is_empty()
        && m.capabilities.http.is_empty()
        && m.capabilities.secrets.is_empty()
    {
        let _ = writeln!(s, "    (none: this kernel cannot touch anything)");
    }
    for c in &m.capabilities.exec {
        let _ = writeln!(s, "    exec  {:<8} {}", c.effect, field(&c.pattern));
    }
    for c in &m.capabilities.http {
        let _ = writeln!(
            s,
            "    http  {:<8} {} {}",
            c.effect,
            field(&c.method),
            field(&c.url_pattern)
        );
    }
    for name in &m.capabilities.secrets {
        let _ = writeln!(s, "    secret         {}", field(name));
    }
    let pretty = |v: &Value| {
        serde_json::to_string_pretty(v)
            .unwrap_or_default()
            .replace('\n', "\n    ")
    };
    let _ = writeln!(s, "  input schema\n    {}", pretty(&m.input_schema));
    let _ = writeln!(s, "  output schema\n    {}", pretty(&m.output_schema));
    let _ = writeln!(
        s,
        "  limits       memory {} B, cpu {} ms, wall clock {} ms, output {} B, log {} B, host calls {}",
        l.memory_bytes, l.cpu_ms, l.wall_clock_ms, l.output_bytes, l.log_bytes, l.host_calls
    );
    s
}

/// `firedrill drill status`.
pub fn readiness_text(rows: &[crate::drill::ReadinessRow]) -> String {
    let mut table = Table::new(&[
        ("RUNBOOK", usize::MAX),
        ("VER", usize::MAX),
        ("STATE", usize::MAX),
        ("LAST DRILL", usize::MAX),
        ("AGE", usize::MAX),
        ("LAST FAILURE", 60),
    ]);
    for r in rows {
        let age = r
            .age_s
            .map(|a| humantime::format_duration(std::time::Duration::from_secs(a)).to_string())
            .map(|a| a.split(' ').take(2).collect::<Vec<_>>().join(" "))
            .unwrap_or_else(|| "-".into());
        let last = match (&r.last_drill_at, &r.last_drill_status, &r.last_drill_mode) {
            (Some(at), Some(st), Some(mode)) => {
                format!("{} {st} {mode}", at.get(..16).unwrap_or(at))
            }
            _ if !r.drilled => "no drill declared".into(),
            _ => "-".into(),
        };
        table.row([
            r.runbook.clone(),
            r.version.to_string(),
            r.state.as_str().to_string(),
            last,
            age,
            r.last_failure.clone().unwrap_or_else(|| "-".into()),
        ]);
    }
    table.render()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_clis_own_markers_at_line_start_are_coloured() {
        let text = "DRY-RUN web@1  run 01A  by alice\n  ok      check     service-status\n      >> PLANNED CHANGE  web-1  systemctl restart -- nginx  -> not performed (dry-run)\n      error: step FAILED ok\ndry-run succeeded in 0.10 s\n";
        let out = coloured(text);
        assert!(
            out.contains("  \u{1b}[32mok\u{1b}[0m      check"),
            "{out:?}"
        );
        assert!(
            out.contains("      \u{1b}[33m>> PLANNED CHANGE\u{1b}[0m  web-1"),
            "{out:?}"
        );
        assert!(
            out.contains("      error: step FAILED ok\n"),
            "text inside a line is left alone: {out:?}"
        );
        assert!(
            out.contains("\u{1b}[32mdry-run succeeded\u{1b}[0m in 0.10 s"),
            "{out:?}"
        );
        let plain: String = out
            .replace("\u{1b}[32m", "")
            .replace("\u{1b}[33m", "")
            .replace("\u{1b}[0m", "");
        assert_eq!(plain, text, "colour adds codes and nothing else");
    }
}
