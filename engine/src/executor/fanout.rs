//! A kernel step across its targets: at most `max_concurrency` at a time,
//! no new target once `max_errors` is exceeded, each target's attempts
//! with retries for retryable errors and the step's timeout, and every
//! host call recorded as it happens.

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::stream::{FuturesUnordered, StreamExt};
use serde_json::{Value, json};

use super::drive::{RunCtx, remember_result};
use super::journal::{Journal, RunEvent, ms};
use super::{MAX_BACKOFF, Service};
use crate::kernel::{
    CallObserver, HostCall, InvokeError, InvokeReport, InvokeRequest, LoadedKernel,
};
use crate::runbook::Step;
use crate::store::{StepRow, StepTargetRow, StoreError, TargetStatus};

/// How one target of a step ended.
struct TargetEnd {
    target: String,
    /// 0 when it never started.
    attempts: i64,
    result: Result<Value, String>,
    logs: Vec<Value>,
    duration_ms: i64,
}

/// Persists each host call with its audit record as it happens, through
/// the run's journal (fenced, and nothing once the run was given up).
struct CallRecorder {
    journal: Arc<Journal>,
    step_id: String,
    target: String,
    attempt: i64,
}

#[async_trait::async_trait]
impl CallObserver for CallRecorder {
    fn may_change(&self) -> Result<(), String> {
        self.journal.may_change()
    }

    async fn host_call(&self, call: &HostCall) {
        self.journal
            .host_call(&self.step_id, &self.target, self.attempt, call)
            .await;
    }
}

impl Service {
    /// Run `step` on each of `targets`; its attempts, logs and per-target
    /// results go into `row`, and the step's result is returned.
    pub(super) async fn fan_out(
        &self,
        ctx: &mut RunCtx<'_>,
        step: &Step,
        kernel: &Arc<LoadedKernel>,
        targets: &[String],
        input: &Value,
        row: &mut StepRow,
    ) -> Result<Result<Value, String>, StoreError> {
        let n = targets.len();
        let concurrency = step.max_concurrency.map_or(1, |a| a.of(n)).max(1);
        let max_errors = step.max_errors.map_or(0, |a| a.of(n));
        let mut ends: Vec<TargetEnd> = Vec::with_capacity(n);
        let mut failures = 0;
        let mut not_started: Vec<String> = Vec::new();
        {
            let shared: &RunCtx<'_> = ctx;
            let mut pending = FuturesUnordered::new();
            let mut queue = targets.iter();
            let mut stopped = false;
            loop {
                while !stopped && pending.len() < concurrency {
                    match queue.next() {
                        Some(t) => pending.push(self.run_target(shared, step, kernel, t, input)),
                        None => break,
                    }
                }
                let Some(end) = pending.next().await else {
                    break;
                };
                let end = end?;
                if end.result.is_err() {
                    failures += 1;
                    // One failure too many: no new target starts; in-flight ones finish.
                    stopped = failures > max_errors;
                }
                record_target(shared, step, &end).await?;
                ends.push(end);
            }
            for t in queue {
                not_started.push(t.clone());
                let end = TargetEnd {
                    target: t.clone(),
                    attempts: 0,
                    result: Err("not started: the step's max_errors was exceeded first".into()),
                    logs: Vec::new(),
                    duration_ms: 0,
                };
                record_target(shared, step, &end).await?;
            }
        }
        ends.sort_by(|a, b| a.target.cmp(&b.target));
        row.attempts = ends.iter().map(|e| e.attempts).max().unwrap_or(0);
        row.logs = json!(
            ends.iter()
                .flat_map(|e| e.logs.iter().map(move |l| {
                    if n == 1 {
                        l.clone()
                    } else {
                        json!({"target": e.target, "line": l})
                    }
                }))
                .collect::<Vec<_>>()
        );
        let per_target: serde_json::Map<String, Value> = ends
            .iter()
            .map(|e| {
                let (status, output, error) = match &e.result {
                    Ok(o) => (TargetStatus::Succeeded, o.clone(), Value::Null),
                    Err(err) => (TargetStatus::Failed, Value::Null, json!(err)),
                };
                (
                    e.target.clone(),
                    json!({"status": status.as_str(), "output": output, "error": error}),
                )
            })
            .collect();
        let result = if failures > max_errors {
            let first: Vec<String> = ends
                .iter()
                .filter_map(|e| {
                    e.result
                        .as_ref()
                        .err()
                        .map(|err| format!("{}: {err}", e.target))
                })
                .take(3)
                .collect();
            Err(if n == 1 {
                ends[0].result.clone().err().unwrap_or_default()
            } else {
                format!(
                    "{failures} of {n} targets failed (max_errors {max_errors}){}: {}",
                    if not_started.is_empty() {
                        String::new()
                    } else {
                        format!("; {} not started", not_started.len())
                    },
                    first.join("; ")
                )
            })
        } else if n == 1 {
            Ok(ends[0].result.clone().unwrap_or(Value::Null))
        } else {
            Ok(Value::Object(
                per_target
                    .iter()
                    .map(|(t, r)| (t.clone(), r["output"].clone()))
                    .collect(),
            ))
        };
        remember_result(ctx, &step.id, &result, Some(Value::Object(per_target)));
        Ok(result)
    }

    /// One target of a step: its attempts, with retries for retryable errors.
    async fn run_target(
        &self,
        ctx: &RunCtx<'_>,
        step: &Step,
        kernel: &Arc<LoadedKernel>,
        target: &str,
        input: &Value,
    ) -> Result<TargetEnd, StoreError> {
        let started = Instant::now();
        let max_retries = step.retries.as_ref().map_or(0, |r| r.max);
        let backoff = step
            .retries
            .as_ref()
            .and_then(|r| r.backoff)
            .map_or(Duration::from_secs(1), |b| b.0);
        let mut attempt: u32 = 0;
        let report = loop {
            attempt += 1;
            let report = self
                .attempt(ctx, step, kernel, target, input, i64::from(attempt))
                .await;
            let retryable = report.result.as_ref().is_err_and(InvokeError::is_retryable);
            if retryable && attempt <= max_retries {
                let wait = crate::retry::backoff(backoff, attempt, MAX_BACKOFF);
                ctx.journal
                    .record(RunEvent::StepRetried {
                        step: &step.id,
                        target,
                        attempt,
                        error: report.result.as_ref().err().map(ToString::to_string),
                        backoff: wait,
                    })
                    .await?;
                tokio::time::sleep(wait).await;
                continue;
            }
            break report;
        };
        if let Err(InvokeError::Limit(limit)) = &report.result {
            ctx.journal
                .record(RunEvent::LimitExceeded {
                    step: &step.id,
                    target,
                    limit,
                })
                .await?;
        }
        Ok(TargetEnd {
            target: target.to_string(),
            attempts: i64::from(attempt),
            result: report.result.map_err(|e| e.to_string()),
            logs: report
                .logs
                .iter()
                .map(|l| serde_json::to_value(l).unwrap_or_default())
                .collect(),
            duration_ms: ms(started.elapsed()),
        })
    }

    /// One invocation of the step's kernel, bounded by the step's timeout.
    async fn attempt(
        &self,
        ctx: &RunCtx<'_>,
        step: &Step,
        kernel: &Arc<LoadedKernel>,
        target: &str,
        input: &Value,
        attempt: i64,
    ) -> InvokeReport {
        let observer = Arc::new(CallRecorder {
            journal: ctx.journal.clone(),
            step_id: step.id.clone(),
            target: target.to_string(),
            attempt,
        });
        let request = InvokeRequest {
            run_id: ctx.id.clone(),
            step_id: step.id.clone(),
            mode: ctx.mode,
            actor: ctx.actor.to_string(),
            targets: vec![target.to_string()],
            input: input.clone(),
            observer: Some(observer),
        };
        let invoke = self.host.invoke(kernel, request);
        match step.timeout {
            None => invoke.await,
            Some(t) => match tokio::time::timeout(t.0, invoke).await {
                Ok(report) => report,
                Err(_) => InvokeReport {
                    kernel: kernel.reference(),
                    digest: kernel.digest.clone(),
                    mode: ctx.mode,
                    result: Err(InvokeError::Retryable(format!(
                        "the step's timeout of {t} elapsed; raise `timeout` on the step if the action legitimately takes longer"
                    ))),
                    host_calls: Vec::new(),
                    logs: Vec::new(),
                    stdout: String::new(),
                    stderr: String::new(),
                    duration_ms: u64::try_from(t.0.as_millis()).unwrap_or(u64::MAX),
                },
            },
        }
    }
}

/// Persist one target's result with its audit record.
async fn record_target(ctx: &RunCtx<'_>, step: &Step, end: &TargetEnd) -> Result<(), StoreError> {
    let (status, output, error) = match &end.result {
        Ok(o) => (TargetStatus::Succeeded, Some(o.clone()), None),
        Err(_) if end.attempts == 0 => (TargetStatus::NotStarted, None, end.result.clone().err()),
        Err(e) => (TargetStatus::Failed, None, Some(e.clone())),
    };
    ctx.journal
        .record(RunEvent::TargetFinished(StepTargetRow {
            run_id: ctx.id.clone(),
            step_id: step.id.clone(),
            target: end.target.clone(),
            status,
            attempts: end.attempts,
            output,
            error,
            duration_ms: Some(end.duration_ms),
        }))
        .await?;
    Ok(())
}
