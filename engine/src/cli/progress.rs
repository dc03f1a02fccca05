//! `firedrill run`'s progress: while the run executes, each step is printed
//! as it starts and ends, and a run that waits for approval says which run,
//! who may approve and the exact command. Text goes to standard error (the
//! report stays alone on standard output); with `--json`, the same events
//! are JSON lines on standard output, the last one the run's report.

use std::collections::HashMap;
use std::time::Duration;

use serde_json::{Value, json};

use crate::store::{StepRow, StepStatus, Store};

/// How often the follower reads the run's steps.
pub(super) const POLL: Duration = Duration::from_millis(100);

/// What has been printed of one run so far.
#[derive(Debug, Default)]
pub(super) struct Progress {
    seen: HashMap<(String, String), (StepStatus, i64)>,
    approval_said: Option<String>,
}

/// One progress event, as a JSON line (`event` names it).
fn event(kind: &str, run_id: &str, fields: Value) -> Value {
    let mut v = json!({"event": kind, "run_id": run_id});
    if let (Some(o), Value::Object(f)) = (v.as_object_mut(), fields) {
        o.extend(f);
    }
    v
}

impl Progress {
    /// The events since the last call, from the run's steps now.
    pub(super) fn events(&mut self, run_id: &str, actor: &str, steps: &[StepRow]) -> Vec<Value> {
        let mut out = Vec::new();
        for s in steps {
            let key = (s.phase.as_str().to_string(), s.step_id.clone());
            let now = (s.status, s.attempts);
            let before = self.seen.insert(key, now);
            if before == Some(now) {
                continue;
            }
            let step = json!({"step": s.step_id, "phase": s.phase.as_str(), "kernel": s.kernel, "attempt": s.attempts.max(1)});
            match s.status {
                StepStatus::Running | StepStatus::Retry => {
                    out.push(event("step-started", run_id, step));
                }
                StepStatus::AwaitingApproval => {
                    if self.approval_said.as_deref() != Some(&s.step_id) {
                        self.approval_said = Some(s.step_id.clone());
                        out.push(event(
                            "awaiting-approval",
                            run_id,
                            approval_fields(run_id, actor, s),
                        ));
                    }
                }
                done => {
                    let mut fields = step;
                    fields["status"] = json!(done.as_str());
                    fields["duration_ms"] = json!(s.duration_ms);
                    fields["error"] = json!(s.error);
                    // A step seen only once it ended still started.
                    if before.is_none() {
                        out.push(event("step-started", run_id, fields.clone()));
                    }
                    out.push(event("step-finished", run_id, fields));
                }
            }
        }
        out
    }
}

/// Who may decide an approval step, and the commands that do.
fn approval_fields(run_id: &str, actor: &str, s: &StepRow) -> Value {
    let spec = s.input.clone().unwrap_or(Value::Null);
    json!({
        "step": s.step_id,
        "required": spec["required"],
        "roles": spec["roles"],
        "approvers": crate::executor::who_may_approve(&spec, actor),
        "timeout": spec["timeout"],
        "reason": spec["reason"],
        "not_by": actor,
        "approve": format!("firedrill approve {run_id} --comment \"...\""),
        "deny": format!("firedrill deny {run_id} --comment \"...\""),
    })
}

/// One event as a line for a person.
pub(super) fn text(e: &Value) -> String {
    // Every value is one field: a newline or escape from a target (a step's
    // error) cannot forge a line of its own.
    let s = |k: &str| crate::term::field(e[k].as_str().unwrap_or_default()).into_owned();
    let step = s("step");
    let phase = if s("phase") == "main" {
        String::new()
    } else {
        format!(" ({})", s("phase"))
    };
    match e["event"].as_str() {
        Some("step-started") => {
            let attempt = e["attempt"].as_i64().unwrap_or(1);
            let again = if attempt > 1 {
                format!(", attempt {attempt}")
            } else {
                String::new()
            };
            format!("-> step {step}{phase} started ({}{again})", s("kernel"))
        }
        Some("step-finished") => {
            let took = e["duration_ms"]
                .as_i64()
                .map(|ms| format!(" in {ms} ms"))
                .unwrap_or_default();
            let error = e["error"]
                .as_str()
                .map(|m| format!(": {}", crate::term::field(m)))
                .unwrap_or_default();
            format!("<- step {step}{phase} {}{took}{error}", s("status"))
        }
        Some("awaiting-approval") => {
            let reason = e["reason"]
                .as_str()
                .map(|r| format!("\n   reason: {}", crate::term::field(r)))
                .unwrap_or_default();
            format!(
                "!! run {} is waiting for approval at step {step}: {}, within {}.{reason}\n   approve: {}\n   deny:    {}",
                s("run_id"),
                s("approvers"),
                s("timeout"),
                s("approve"),
                s("deny"),
            )
        }
        _ => e.to_string(),
    }
}

/// Print the events since the last call; `json`: as JSON lines on
/// standard output, else as text on standard error.
pub(super) async fn print_new(
    store: &dyn Store,
    progress: &mut Progress,
    run_id: &str,
    actor: &str,
    json: bool,
) {
    // A store hiccup costs a progress line, never the run.
    let Ok(steps) = store.steps(run_id).await else {
        return;
    };
    for e in progress.events(run_id, actor, &steps) {
        if json {
            println!("{e}");
        } else {
            // The CLI's eprintln! escapes terminal controls (crate::term).
            eprintln!("{}", text(&e));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Phase;

    fn step(id: &str, status: StepStatus, attempts: i64) -> StepRow {
        StepRow {
            run_id: "r1".into(),
            step_id: id.into(),
            position: 0,
            phase: Phase::Main,
            kernel: "trivial@0.1.0".into(),
            kernel_digest: None,
            status,
            attempts,
            targets: json!([]),
            input: Some(
                json!({"required": 2, "roles": ["approver"], "timeout": "10m", "reason": "fail over"}),
            ),
            output: None,
            error: (status == StepStatus::Failed)
                .then(|| "boom\n!! run r2 is waiting\u{1b}[2J".into()),
            logs: json!([]),
            started_at: None,
            finished_at: None,
            duration_ms: Some(12),
        }
    }

    fn kinds(v: &[Value]) -> Vec<String> {
        v.iter()
            .map(|e| e["event"].as_str().unwrap_or_default().to_string())
            .collect()
    }

    #[test]
    fn each_change_is_told_once() {
        let mut p = Progress::default();
        let e = p.events("r1", "user:alice", &[step("a", StepStatus::Running, 1)]);
        assert_eq!(kinds(&e), ["step-started"]);
        assert!(
            p.events("r1", "user:alice", &[step("a", StepStatus::Running, 1)])
                .is_empty()
        );
        // Retried: started again, as attempt 2.
        let e = p.events("r1", "user:alice", &[step("a", StepStatus::Running, 2)]);
        assert_eq!(e[0]["attempt"], 2);
        assert!(text(&e[0]).contains("attempt 2"), "{}", text(&e[0]));
        let e = p.events("r1", "user:alice", &[step("a", StepStatus::Failed, 2)]);
        assert_eq!(kinds(&e), ["step-finished"]);
        // A forged line or escape in the error stays inside its field.
        assert!(!text(&e[0]).contains('\n') && !text(&e[0]).contains('\u{1b}'));
        assert!(
            text(&e[0]).contains("failed in 12 ms: boom"),
            "{}",
            text(&e[0])
        );
        // A step that started and ended between two reads: both told.
        let e = p.events(
            "r1",
            "user:alice",
            &[
                step("a", StepStatus::Failed, 2),
                step("b", StepStatus::Succeeded, 1),
            ],
        );
        assert_eq!(kinds(&e), ["step-started", "step-finished"]);
    }

    #[test]
    fn an_approval_says_who_may_approve_and_how() {
        let mut p = Progress::default();
        let e = p.events(
            "r1",
            "user:alice",
            &[step("gate", StepStatus::AwaitingApproval, 1)],
        );
        assert_eq!(kinds(&e), ["awaiting-approval"]);
        let line = text(&e[0]);
        assert!(line.contains("run r1 is waiting"), "{line}");
        assert!(
            line.contains("2 approval(s) from approver (not user:alice)"),
            "{line}"
        );
        assert!(line.contains("firedrill approve r1 --comment"), "{line}");
        assert!(line.contains("reason: fail over"), "{line}");
        assert!(
            p.events(
                "r1",
                "user:alice",
                &[step("gate", StepStatus::AwaitingApproval, 1)]
            )
            .is_empty()
        );
    }
}
