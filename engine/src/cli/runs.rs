//! `firedrill run`, `runs ...` (list, show, cancel, resume, skip, abandon)
//! and `approve` / `deny`.

use super::*;

#[derive(Debug, Clone, Copy)]
pub(super) struct RunFlags {
    pub(super) live: bool,
    pub(super) force_untested: bool,
    pub(super) json: bool,
}

pub(super) async fn run_runbook(
    home: &Home,
    actor: Actor,
    runbook: &str,
    flags: RunFlags,
    inputs: Vec<(String, String)>,
) -> anyhow::Result<ExitCode> {
    let RunFlags { live, json, .. } = flags;
    let path = Path::new(runbook);
    let source = if path.exists() || runbook.ends_with(".yaml") || runbook.ends_with(".yml") {
        RunbookSource::File {
            path: runbook.to_string(),
            text: read_text(path, "runbook")?,
        }
    } else {
        let (name, version) = split_reference(runbook)?;
        RunbookSource::Published { name, version }
    };
    let service = home.service().await?;
    if live && !untested_allowed(&service, &source, &actor, flags.force_untested).await? {
        return Ok(ExitCode::from(EXIT_INVALID));
    }
    let request = RunRequest {
        source,
        mode: if live { Mode::Live } else { Mode::DryRun },
        actor,
        inputs,
    };
    let actor_name = request.actor.to_string();
    let refused = |e: crate::executor::RunError| -> anyhow::Result<ExitCode> {
        if exit::run_refused(&e) {
            eprintln!("error: {e}\nnothing was run.");
            Ok(ExitCode::from(EXIT_INVALID))
        } else {
            Err(e.into())
        }
    };
    let prepared = match service.prepare(request).await {
        Ok(p) => p,
        Err(e) => return refused(e),
    };
    let id = prepared.id.clone();
    if !json {
        eprintln!("run {id} started ({})", prepared_mode(live));
    }
    // Follow the run while it executes: each step as it starts and ends,
    // and an approval it waits for.
    let (stop, mut stopped) = tokio::sync::oneshot::channel::<()>();
    let follower = {
        let store = service.store().clone();
        let id = id.clone();
        tokio::spawn(async move {
            let mut progress = progress::Progress::default();
            loop {
                progress::print_new(store.as_ref(), &mut progress, &id, &actor_name, json).await;
                tokio::select! {
                    _ = &mut stopped => break,
                    () = tokio::time::sleep(progress::POLL) => {}
                }
            }
            // What happened since the last read.
            progress::print_new(store.as_ref(), &mut progress, &id, &actor_name, json).await;
        })
    };
    let result = service.execute_prepared(prepared).await;
    let _ = stop.send(());
    let _ = follower.await;
    if let Err(e) = result {
        return refused(e);
    }
    print_run(&service, &id, json, false, true).await
}

fn prepared_mode(live: bool) -> &'static str {
    if live { "live" } else { "dry-run" }
}

/// A live run of a runbook that is not `ready` needs `--force-untested`:
/// say so prominently; when forced, it is recorded. Returns whether to go on.
pub(super) async fn untested_allowed(
    service: &Service,
    source: &RunbookSource,
    actor: &Actor,
    force: bool,
) -> anyhow::Result<bool> {
    let Some((what, state)) =
        crate::drill::untested(service, source, std::time::SystemTime::now()).await?
    else {
        return Ok(true);
    };
    eprintln!(
        "!! {what} is {}: it has not passed a live drill within its max_age.",
        state.as_str().to_uppercase()
    );
    if !force {
        eprintln!(
            "   nothing was run. Drill it (`firedrill drill run NAME`), or run it anyway with --live --force-untested (audited)."
        );
        return Ok(false);
    }
    eprintln!("   running it live anyway (--force-untested); this is recorded in the audit log.");
    crate::drill::record_forced(service, actor, &what, state).await?;
    Ok(true)
}

/// `firedrill approve|deny RUN --comment ...` (a person at the CLI: the
/// two-person rule applies; token roles do not).
pub(super) async fn approve(
    home: &Home,
    actor: &Actor,
    run: &str,
    yes: bool,
    comment: &str,
    json: bool,
) -> anyhow::Result<ExitCode> {
    let service = home.service().await?;
    let result = service
        .decide_approval(
            run,
            actor,
            None,
            if yes {
                crate::executor::Decision::Approve
            } else {
                crate::executor::Decision::Deny
            },
            comment,
        )
        .await;
    control(
        result,
        |step| {
            (
                crate::view::decided(run, &step, yes),
                format!(
                    "{} recorded for run {run} (step {step})",
                    if yes { "approval" } else { "denial" }
                ),
            )
        },
        json,
    )
}

/// Print run `id`'s report; `stream`: as the last of `run --json`'s JSON lines.
pub(super) async fn show_run(
    service: &Service,
    id: &str,
    json: bool,
    with_audit: bool,
) -> anyhow::Result<ExitCode> {
    print_run(service, id, json, with_audit, false).await
}

async fn print_run(
    service: &Service,
    id: &str,
    json: bool,
    with_audit: bool,
    stream: bool,
) -> anyhow::Result<ExitCode> {
    let store = service.store();
    let run = store
        .run(id)
        .await?
        .with_context(|| format!("no run {id}; list runs with `firedrill runs list`"))?;
    let steps = store.steps(id).await?;
    let targets = store.step_targets(id).await?;
    let calls = store.host_calls(id).await?;
    let trail = if with_audit {
        store
            .audit(&AuditFilter {
                run_id: Some(id.to_string()),
                limit: 10_000,
                ..AuditFilter::default()
            })
            .await?
    } else {
        Vec::new()
    };
    if json {
        let mut report = crate::executor::RunReport::new(&run, &steps, &targets, &calls);
        report.audit = with_audit.then_some(trail.clone());
        if stream {
            // The last JSON line of `run --json`: the report, as `runs show`.
            let mut v = report.to_json();
            v["event"] = serde_json::json!("finished");
            println!("{v}");
        } else {
            println!("{}", serde_json::to_string_pretty(&report)?);
        }
    } else {
        // Escaped first, then coloured (on a terminal, without NO_COLOR):
        // the colours are the CLI's own, never from input.
        let text = term::output(&render::run_text(&run, &steps, &targets, &calls)).into_owned();
        if term::colour_stdout() {
            ::std::print!("{}", render::coloured(&text));
        } else {
            ::std::print!("{text}");
        }
        if with_audit {
            print!("{}", render::audit_text(&trail));
        }
    }
    Ok(if run.status == RunStatus::Succeeded {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

pub(super) async fn runs(home: &Home, actor: &Actor, cmd: RunsCommand) -> anyhow::Result<ExitCode> {
    let cmd_kind = if matches!(cmd, RunsCommand::Skip { .. }) {
        "skip"
    } else {
        "other"
    };
    match cmd {
        RunsCommand::List {
            runbook,
            status,
            limit,
            json,
        } => {
            let status = status
                .map(|s| {
                    RunStatus::parse(&s).with_context(|| {
                        format!("--status {s:?}: use queued, running, awaiting-approval, needs-attention, succeeded, failed, interrupted, halted, cancelled or abandoned")
                    })
                })
                .transpose()?;
            let rows = home
                .store()
                .await?
                .runs(&RunFilter {
                    runbook,
                    status,
                    before: None,
                    runbooks: None,
                    limit,
                })
                .await?;
            if json {
                let rows: Vec<_> = rows.iter().map(crate::executor::RunSummary::new).collect();
                println!("{}", serde_json::to_string_pretty(&rows)?);
            } else {
                print!("{}", render::runs_text(&rows));
            }
            Ok(ExitCode::SUCCESS)
        }
        RunsCommand::Show { id, json } => {
            let service = home.service().await?;
            show_run(&service, &id, json, true).await
        }
        RunsCommand::Cancel { id, reason, json } => {
            let service = home.service().await?;
            control(
                service.cancel(&id, actor, &reason).await,
                |()| {
                    (
                        crate::view::cancel_requested(&id),
                        format!("cancel requested: run {id} stops before its next step"),
                    )
                },
                json,
            )
        }
        RunsCommand::Abandon { id, reason, json } => {
            let service = home.service().await?;
            control(
                service.abandon(&id, actor, &reason).await,
                |()| (crate::view::abandoned(&id), format!("run {id} abandoned")),
                json,
            )
        }
        RunsCommand::Resume { id, reason, json } | RunsCommand::Skip { id, reason, json } => {
            let service = home.service().await?;
            let prepared = if matches!(cmd_kind, "skip") {
                service.prepare_skip(&id, actor, &reason).await
            } else {
                service.prepare_resume(&id, actor, &reason).await
            };
            let prepared = match prepared {
                Ok(p) => p,
                Err(e) => return control_refused(e),
            };
            service.execute_prepared(prepared).await?;
            show_run(&service, &id, json, false).await
        }
    }
}

/// Report a run control's result: its JSON answer or message, or the
/// error and exit 2.
pub(super) fn control<T>(
    result: Result<T, crate::executor::ControlError>,
    done: impl FnOnce(T) -> (serde_json::Value, String),
    json: bool,
) -> anyhow::Result<ExitCode> {
    match result {
        Ok(value) => {
            let (value, text) = done(value);
            answer(json, &value, || text);
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => control_refused(e),
    }
}

/// A run control that failed: a refusal exits 2 with its reason; a store
/// failure is an error.
fn control_refused(e: crate::executor::ControlError) -> anyhow::Result<ExitCode> {
    if !exit::control_refused(&e) {
        return Err(e.into());
    }
    eprintln!("error: {e}");
    Ok(ExitCode::from(EXIT_INVALID))
}
