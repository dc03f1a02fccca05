//! The command line: parses arguments, calls the library, prints results.
//!
//! Exit codes: 0 success; 1 the action ran and failed (a failed run, a broken
//! audit chain); 2 the request was refused before anything ran (invalid
//! runbook or inputs, bad arguments).

// Everything the CLI prints passes through `term::output`: these shadow
// the standard macros in this module and its children, so no line of
// output can carry a control character that came from input.
macro_rules! println {
    () => { ::std::println!() };
    ($($arg:tt)*) => { ::std::println!("{}", $crate::term::output(&::std::format!($($arg)*))) };
}
macro_rules! print {
    ($($arg:tt)*) => { ::std::print!("{}", $crate::term::output(&::std::format!($($arg)*))) };
}
macro_rules! eprintln {
    () => { ::std::eprintln!() };
    ($($arg:tt)*) => { ::std::eprintln!("{}", $crate::term::output(&::std::format!($($arg)*))) };
}
#[allow(unused_macros)]
macro_rules! eprint {
    ($($arg:tt)*) => { ::std::eprint!("{}", $crate::term::output(&::std::format!($($arg)*))) };
}

mod admin;
mod args;
mod audit;
pub mod author;
mod drills;
mod exit;
mod inventory;
mod kernels;
mod manual;
mod progress;
pub(crate) mod render;
mod runbooks;
mod runs;

use crate::term;
use admin::{backup, restore, serve, switch, token};
pub use args::*;
use audit::audit;
use drills::drill;
use inventory::inventory_check;
use kernels::kernel;
use runbooks::runbook;
use runs::{RunFlags, approve, run_runbook, runs, show_run};

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context as _;
use clap::{Parser, Subcommand};

use crate::Mode;
use crate::audit::Actor;
use crate::executor::{PublishError, RunRequest, RunbookSource, Service};
use crate::home::{self, Home};
use crate::kernel::{KernelHost, LoadedKernel, Published};
use crate::runbook::Runbook;
use crate::store::{AuditFilter, RunFilter, RunStatus};

/// Parse the process arguments and run; returns the process exit code.
pub fn main() -> ExitCode {
    // Everything this process creates (database, WAL, kernel blobs, caches,
    // keys) is owner-only, whatever umask it was started with.
    nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(0o077));
    let cli = Cli::parse();
    init_tracing(&cli.log, cli.log_json);
    crate::failpoint::setup();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            exit::code_of(&e)
        }
    }
}

fn init_tracing(filter: &str, json: bool) {
    let filter = tracing_subscriber::EnvFilter::try_new(filter)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    // Log lines carry input too (actors, names, errors): they pass the
    // same filter as everything else printed, so no colours either.
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(|| term::Escaping(std::io::stderr()))
        .with_ansi(false);
    let _ = if json {
        builder.json().try_init()
    } else {
        builder.try_init()
    };
}

pub(crate) use exit::EXIT_INVALID;

/// Run one parsed command.
pub async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    // No home is opened or created for these: generated from the
    // definitions alone, or written into a directory of the user's.
    match &cli.command {
        Command::Completion { shell } => return manual::completion(*shell),
        Command::Man { out } => return manual::man(out),
        Command::Kernel(KernelCommand::New {
            name,
            lang,
            dir,
            sdk,
            json,
        }) => return kernels::new_project(name, *lang, dir.clone(), sdk.as_deref(), *json),
        _ => {}
    }
    let mut home = Home::open(&cli.home.unwrap_or_else(home::default_dir))?;
    if let Some(url) = cli.database.clone() {
        home.set_database(url);
    }
    let actor = match Actor::cli(cli.actor.as_deref()) {
        Ok(actor) => actor,
        Err(e) => {
            eprintln!("error: --actor: {e}");
            return Ok(ExitCode::from(EXIT_INVALID));
        }
    };
    match cli.command {
        Command::Run {
            runbook,
            live,
            inputs,
            force_untested,
            json,
        } => {
            run_runbook(
                &home,
                actor,
                &runbook,
                RunFlags {
                    live,
                    force_untested,
                    json,
                },
                inputs,
            )
            .await
        }
        Command::Drill(cmd) => drill(&home, cmd).await,
        Command::Approve { run, comment, json } => {
            approve(&home, &actor, &run, true, &comment, json).await
        }
        Command::Deny { run, comment, json } => {
            approve(&home, &actor, &run, false, &comment, json).await
        }
        Command::Runbook(cmd) => runbook(&home, &actor, cmd).await,
        Command::Kernel(cmd) => kernel(&home, &actor, cmd).await,
        Command::Runs(cmd) => runs(&home, &actor, cmd).await,
        Command::Audit(cmd) => audit(&home, &actor, cmd).await,
        Command::Inventory(InventoryCommand::Check { probe, json }) => {
            inventory_check(&home, probe, json).await
        }
        Command::Switch(cmd) => switch(&home, &actor, cmd).await,
        Command::Token(cmd) => token(&home, &actor, cmd).await,
        Command::Backup { file, json } => backup(&home, &actor, &file, json).await,
        Command::Restore {
            file,
            accept_loss,
            json,
        } => restore(&home, &actor, &file, accept_loss, json).await,
        // Answered above without a home; the same answer here.
        Command::Completion { shell } => manual::completion(shell),
        Command::Man { out } => manual::man(&out),
        Command::Serve { listen, node_id } => {
            if let Some(id) = node_id {
                home.set_node_id(id);
            }
            serve(&home, listen).await
        }
        Command::Trigger(TriggerCommand::Reset {
            runbook,
            reason,
            json,
        }) => {
            let service = home.service().await?;
            match crate::alerts::reset_breaker(&service, &runbook, &reason, &actor).await {
                Ok(()) => {
                    answer(
                        json,
                        &serde_json::json!({"runbook": runbook, "breaker_open": false}),
                        || format!("circuit breaker of {runbook} reset: alerts may start it again"),
                    );
                    Ok(ExitCode::SUCCESS)
                }
                Err(e) => {
                    eprintln!("error: {e}");
                    Ok(ExitCode::from(EXIT_INVALID))
                }
            }
        }
    }
}

/// Print what an action did: its JSON answer (the same as the API's), or
/// the line for people.
fn answer(json: bool, value: &serde_json::Value, text: impl FnOnce() -> String) {
    if json {
        println!("{value}");
    } else {
        println!("{}", text());
    }
}

/// The line for a [`crate::view::published`] answer: `published
/// {what}NAME@VERSION (DIGEST)`, or that the same `content` was there.
fn published_line(what: &str, value: &serde_json::Value, content: &str) -> String {
    let field = |k: &str| match &value[k] {
        serde_json::Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    let (name, version, digest) = (field("name"), field("version"), field("digest"));
    if value["published"] == true {
        format!("published {what}{name}@{version} ({digest})")
    } else {
        format!("{what}{name}@{version} is already published with {content} ({digest})")
    }
}

/// Read a runbook file, refusing one larger than the runbook limit without
/// reading it all.
fn read_text(path: &Path, what: &str) -> anyhow::Result<String> {
    use std::io::Read as _;
    let limit = crate::runbook::MAX_RUNBOOK_BYTES;
    let file = std::fs::File::open(path)
        .with_context(|| format!("cannot read {what} {}", path.display()))?;
    let mut bytes = Vec::new();
    file.take(limit as u64 + 1)
        .read_to_end(&mut bytes)
        .with_context(|| format!("cannot read {what} {}", path.display()))?;
    if bytes.len() > limit {
        anyhow::bail!(
            "{what} {} is larger than {limit} bytes, the limit for runbooks; split it or remove what it does not need",
            path.display()
        );
    }
    String::from_utf8(bytes).map_err(|e| {
        anyhow::anyhow!(
            "{what} {} is not UTF-8 text (invalid byte at offset {}); save it as UTF-8",
            path.display(),
            e.utf8_error().valid_up_to()
        )
    })
}

/// `name@version` or `name`.
fn split_reference(text: &str) -> anyhow::Result<(String, Option<i64>)> {
    match text.split_once('@') {
        Some((name, v)) => Ok((
            name.to_string(),
            Some(
                v.parse()
                    .with_context(|| format!("runbook version {v:?} is not an integer"))?,
            ),
        )),
        None => Ok((text.to_string(), None)),
    }
}
