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

pub mod author;
mod exit;
pub(crate) mod render;
use crate::term;

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
use crate::store::verify_store;
use crate::store::{AuditFilter, RunFilter, RunStatus};

/// firedrill: runbooks of sandboxed recovery kernels, dry-run by default.
#[derive(Debug, Parser)]
#[command(name = "firedrill", version, about)]
pub struct Cli {
    /// Home directory: store, kernel registry, caches, config, inventory.
    #[arg(long, global = true, env = "FIREDRILL_HOME")]
    pub home: Option<PathBuf>,
    /// The store: `postgres://user:password@host:port/db` for several nodes
    /// on one PostgreSQL (default: SQLite in the home; overrides `[store] url`).
    #[arg(
        long,
        global = true,
        env = "FIREDRILL_DATABASE",
        hide_env_values = true
    )]
    pub database: Option<String>,
    /// Name the person acting, for the audit log (`alice`), when the OS user
    /// is shared; default: the OS user. Recorded as named by the OS user,
    /// who stays the person counted in approvals; other kinds are refused.
    #[arg(long, global = true, env = "FIREDRILL_ACTOR")]
    pub actor: Option<String>,
    /// Log filter for diagnostics on stderr (e.g. `info`, `firedrill=debug`).
    #[arg(long, global = true, env = "FIREDRILL_LOG", default_value = "warn")]
    pub log: String,
    /// Log lines as JSON objects (with run_id/step_id fields) instead of text.
    #[arg(long, global = true, env = "FIREDRILL_LOG_JSON")]
    pub log_json: bool,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run a runbook: a dry-run (the plan) unless --live.
    Run {
        /// A runbook file, or a published `name[@version]`.
        runbook: String,
        /// Perform changes for real. Without it, changes are only planned.
        #[arg(long)]
        live: bool,
        /// Runbook input `key=value` (repeatable).
        #[arg(long = "input", short = 'i', value_parser = parse_input)]
        inputs: Vec<(String, String)>,
        /// Run live although the runbook has not passed a live drill within
        /// its max_age (audited).
        #[arg(long)]
        force_untested: bool,
        #[arg(long)]
        json: bool,
    },
    /// Drills and readiness.
    #[command(subcommand)]
    Drill(DrillCommand),
    /// Approve the approval step a run is waiting at (not your own run).
    Approve {
        run: String,
        #[arg(long)]
        comment: String,
    },
    /// Deny the approval step a run is waiting at: the step fails.
    Deny {
        run: String,
        #[arg(long)]
        comment: String,
    },
    /// Validate, publish, list and show runbooks.
    #[command(subcommand)]
    Runbook(RunbookCommand),
    /// Inspect, publish and list recovery kernels.
    #[command(subcommand)]
    Kernel(KernelCommand),
    /// List and show runs.
    #[command(subcommand)]
    Runs(RunsCommand),
    /// Query and verify the audit log.
    #[command(subcommand)]
    Audit(AuditCommand),
    /// Check the inventory.
    #[command(subcommand)]
    Inventory(InventoryCommand),
    /// The big red switch: halt live automation (globally or per runbook).
    #[command(subcommand)]
    Switch(SwitchCommand),
    /// Serve the HTTP API until SIGTERM or Ctrl-C.
    Serve {
        /// Overrides `[server] listen`.
        #[arg(long)]
        listen: Option<String>,
        /// This node's id in leases and the audit log (overrides `[node] id`;
        /// default: a random `node-…`), e.g. the host or pod name.
        #[arg(long, env = "FIREDRILL_NODE_ID")]
        node_id: Option<String>,
    },
    /// API tokens for `firedrill serve`.
    #[command(subcommand)]
    Token(TokenCommand),
    /// Alert triggers.
    #[command(subcommand)]
    Trigger(TriggerCommand),
}

#[derive(Debug, Subcommand)]
pub enum TriggerCommand {
    /// Close a runbook's circuit breaker (opened by consecutive failed
    /// triggered runs), so alerts may start it again.
    Reset {
        runbook: String,
        #[arg(long)]
        reason: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum TokenCommand {
    /// Create a token; it is printed once and only its hash is kept.
    Create {
        #[arg(long)]
        name: String,
        #[arg(long, value_enum)]
        role: crate::auth::Role,
        /// Limit the token to these runbooks (repeatable; default all).
        #[arg(long = "runbook")]
        runbooks: Vec<String>,
        /// The person the token belongs to (counted once in approvals,
        /// named in the audit log).
        #[arg(long)]
        owner: String,
    },
    List {
        #[arg(long)]
        json: bool,
    },
    /// Revoke a live token by name or id.
    Revoke { token: String },
}

#[derive(Debug, Subcommand)]
pub enum SwitchCommand {
    /// Every switch and whether it is engaged.
    Status {
        #[arg(long)]
        json: bool,
    },
    /// Engage: new live runs are refused, live runs in progress stop at the
    /// next step boundary (`halted`). Dry-runs still run.
    On {
        /// Only this runbook (default: everything).
        #[arg(long)]
        runbook: Option<String>,
        /// Why (required; recorded in the audit log).
        #[arg(long)]
        reason: String,
    },
    /// Release: live runs may start again.
    Off {
        #[arg(long)]
        runbook: Option<String>,
        #[arg(long)]
        reason: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum InventoryCommand {
    /// Validate inventory.yaml; with --probe, run `true` on every target
    /// (observe only) and report which are reachable. Exit 1 on any problem.
    Check {
        #[arg(long)]
        probe: bool,
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum RunbookCommand {
    /// Check a runbook file; lists every problem with file:line:column.
    Validate {
        file: PathBuf,
        #[arg(long)]
        json: bool,
    },
    /// Validate and store a runbook version (immutable).
    Publish { file: PathBuf },
    /// List published runbook versions.
    List {
        #[arg(long)]
        json: bool,
    },
    /// Print a published runbook's source (`name` or `name@version`).
    Show { runbook: String },
    /// Print the JSON Schema of the runbook format (for editors).
    Schema,
    /// Make an earlier version current again (until a new one is published).
    Rollback {
        name: String,
        #[arg(long)]
        to: i64,
        #[arg(long)]
        reason: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum DrillCommand {
    /// Readiness of every runbook: state, last drill, age, last failure.
    Status {
        #[arg(long)]
        json: bool,
    },
    /// Drill a runbook now, here (as `scheduler:drill`, with its drill inputs and mode).
    Run {
        runbook: String,
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum KernelCommand {
    /// Load a component and print its manifest, digest and the limits it runs under.
    Inspect {
        file: PathBuf,
        #[arg(long)]
        json: bool,
    },
    /// Validate a component and store it under the name@version its manifest declares.
    Publish {
        file: PathBuf,
        #[arg(long)]
        json: bool,
    },
    /// List published kernels.
    List {
        #[arg(long)]
        json: bool,
    },
    /// Run a component against a scripted host: loader checks, every host
    /// call (observe/change, simulated or not), log and output. Exit 1 when
    /// a check fails. Nothing is ever performed, even with `--mode live`.
    Test(author::TestArgs),
    /// Scaffold a kernel project (kernel, build.sh, test.sh) in DIR (default NAME).
    New {
        /// Kernel name: lower-case letters, digits and '-'.
        name: String,
        #[arg(long, value_enum)]
        lang: author::Lang,
        /// Where to create the project (must not exist or be empty).
        #[arg(long)]
        dir: Option<PathBuf>,
        /// The SDK's directory, for Rust (default: the sdk/ this binary was built from).
        #[arg(long)]
        sdk: Option<PathBuf>,
    },
}

#[derive(Debug, Subcommand)]
pub enum RunsCommand {
    /// Runs, newest first.
    List {
        #[arg(long)]
        runbook: Option<String>,
        /// queued, running, awaiting-approval, needs-attention, succeeded,
        /// failed, interrupted, halted, cancelled, abandoned
        #[arg(long)]
        status: Option<String>,
        #[arg(long, default_value_t = 20)]
        limit: i64,
        #[arg(long)]
        json: bool,
    },
    /// One run: steps, host calls, outputs, and its audit trail.
    Show {
        id: String,
        #[arg(long)]
        json: bool,
    },
    /// Ask a running run (in this process or `firedrill serve`) to stop at
    /// its next step boundary.
    Cancel {
        id: String,
        #[arg(long)]
        reason: String,
    },
    /// Continue a halted run from the step where it stopped, or a run that
    /// needs attention by running its unfinished step again, here and now.
    Resume {
        id: String,
        #[arg(long)]
        reason: String,
        #[arg(long)]
        json: bool,
    },
    /// Continue a run that needs attention after its unfinished step,
    /// marking that step skipped (you checked it made its change), here
    /// and now.
    Skip {
        id: String,
        #[arg(long)]
        reason: String,
        #[arg(long)]
        json: bool,
    },
    /// Close a halted, interrupted or needs-attention run for good.
    Abandon {
        id: String,
        #[arg(long)]
        reason: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum AuditCommand {
    /// Audit records, oldest first (the newest `--limit`).
    List {
        #[arg(long)]
        run: Option<String>,
        /// `alice` or `kind:id`
        #[arg(long)]
        actor: Option<String>,
        /// e.g. run.started, host.call, capability.denied
        #[arg(long)]
        action: Option<String>,
        /// RFC 3339 time, e.g. 2026-11-23T00:00:00Z
        #[arg(long)]
        since: Option<String>,
        #[arg(long, default_value_t = 100)]
        limit: i64,
        #[arg(long)]
        json: bool,
    },
    /// Re-walk the hash chain; names the first bad record (exit 1).
    Verify {
        #[arg(long)]
        json: bool,
    },
}

fn parse_input(text: &str) -> Result<(String, String), String> {
    text.split_once('=')
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .filter(|(k, _)| !k.is_empty())
        .ok_or_else(|| format!("{text:?} is not key=value"))
}

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
        Command::Approve { run, comment } => approve(&home, &actor, &run, true, &comment).await,
        Command::Deny { run, comment } => approve(&home, &actor, &run, false, &comment).await,
        Command::Runbook(cmd) => runbook(&home, &actor, cmd).await,
        Command::Kernel(cmd) => kernel(&home, &actor, cmd).await,
        Command::Runs(cmd) => runs(&home, &actor, cmd).await,
        Command::Audit(cmd) => audit(&home, cmd).await,
        Command::Inventory(InventoryCommand::Check { probe, json }) => {
            inventory_check(&home, probe, json).await
        }
        Command::Switch(cmd) => switch(&home, &actor, cmd).await,
        Command::Token(cmd) => token(&home, &actor, cmd).await,
        Command::Serve { listen, node_id } => {
            if let Some(id) = node_id {
                home.set_node_id(id);
            }
            serve(&home, listen).await
        }
        Command::Trigger(TriggerCommand::Reset { runbook, reason }) => {
            let service = home.service().await?;
            match crate::alerts::reset_breaker(&service, &runbook, &reason, &actor).await {
                Ok(()) => {
                    println!("circuit breaker of {runbook} reset: alerts may start it again");
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

async fn serve(home: &Home, listen: Option<String>) -> anyhow::Result<ExitCode> {
    let mut config = home.config().server.clone();
    if let Some(l) = listen {
        config.listen = l;
    }
    if let Err(e) = config.check() {
        eprintln!("error: firedrill.toml: {e}");
        return Ok(ExitCode::from(EXIT_INVALID));
    }
    if let (Some(cert), Some(key)) = (&config.tls_cert, &config.tls_key)
        && let Err(e) = crate::server::listen::Tls::load(cert, key)
    {
        eprintln!("error: {e}");
        return Ok(ExitCode::from(EXIT_INVALID));
    }
    let scheme = if config.tls_cert.is_some() {
        "https"
    } else {
        "http"
    };
    let listener = tokio::net::TcpListener::bind(&config.listen)
        .await
        .with_context(|| {
            format!(
                "cannot listen on {}; pick a free address with --listen or [server] listen",
                config.listen
            )
        })?;
    let addr = listener.local_addr()?;
    let state = crate::server::AppState::new(home.service().await?, config);
    // The address on stdout, for scripts and tests (`--listen 127.0.0.1:0`).
    println!("listening on {scheme}://{addr}");
    let shutdown = async {
        let mut term =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = async { match term.as_mut() { Some(t) => { t.recv().await; } None => std::future::pending().await } } => {}
        }
        tracing::warn!(
            "shutting down: no new requests; runs in progress get server.shutdown-grace-ms"
        );
    };
    crate::server::serve(state, listener, shutdown).await?;
    Ok(ExitCode::SUCCESS)
}

async fn token(home: &Home, actor: &Actor, cmd: TokenCommand) -> anyhow::Result<ExitCode> {
    use crate::auth::TokenError;
    let store = home.store().await?;
    let refused = |e: TokenError| -> anyhow::Result<ExitCode> {
        match e {
            TokenError::Store(e) => Err(e.into()),
            e => {
                eprintln!("error: {e}");
                Ok(ExitCode::from(EXIT_INVALID))
            }
        }
    };
    match cmd {
        TokenCommand::Create {
            name,
            role,
            runbooks,
            owner,
        } => match crate::auth::create(
            store.as_ref(),
            crate::auth::TokenSpec {
                name,
                role,
                runbooks,
                owner,
            },
            None,
            actor,
        )
        .await
        {
            Ok((row, token)) => {
                eprintln!(
                    "created token {:?} (role {}, owner {}, id {}); it is shown once and only its hash is kept:",
                    row.name,
                    row.role.as_str(),
                    row.owner,
                    row.id
                );
                println!("{token}");
                Ok(ExitCode::SUCCESS)
            }
            Err(e) => refused(e),
        },
        TokenCommand::List { json } => {
            let tokens = store.tokens().await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&tokens)?);
            } else if tokens.is_empty() {
                println!(
                    "no tokens; create one with `firedrill token create --name N --role R --owner PERSON`"
                );
            } else {
                for t in &tokens {
                    println!(
                        "{:<24} {:<9} {:<8} owner {} {} created {} by {}{}",
                        t.name,
                        t.role.as_str(),
                        if t.revoked_at.is_some() {
                            "revoked"
                        } else {
                            "live"
                        },
                        if t.owner.is_empty() {
                            "(none)"
                        } else {
                            &t.owner
                        },
                        if t.runbooks.is_empty() {
                            "all runbooks".to_string()
                        } else {
                            t.runbooks.join(",")
                        },
                        t.created_at,
                        t.created_by,
                        t.revoked_at
                            .as_ref()
                            .map(|r| format!(", revoked {r}"))
                            .unwrap_or_default()
                    );
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        TokenCommand::Revoke { token } => {
            match crate::auth::revoke(store.as_ref(), &token, None, actor).await {
                Ok(row) => {
                    println!("revoked token {:?} ({})", row.name, row.id);
                    Ok(ExitCode::SUCCESS)
                }
                Err(e) => refused(e),
            }
        }
    }
}

async fn switch(home: &Home, actor: &Actor, cmd: SwitchCommand) -> anyhow::Result<ExitCode> {
    let store = home.store().await?;
    let (runbook, engaged, reason) = match cmd {
        SwitchCommand::Status { json } => {
            let switches = store.switches().await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&switches)?);
            } else if switches.iter().all(|s| !s.engaged) {
                println!("live automation is running: no switch is engaged");
            }
            if !json {
                for s in switches.iter().filter(|s| s.engaged) {
                    println!("ENGAGED  {}", term::field(&s.describe()));
                }
            }
            return Ok(ExitCode::SUCCESS);
        }
        SwitchCommand::On { runbook, reason } => (runbook, true, reason),
        SwitchCommand::Off { runbook, reason } => (runbook, false, reason),
    };
    match crate::switch::flip(store.as_ref(), runbook.as_deref(), engaged, &reason, actor).await {
        Ok(row) => {
            if row.engaged {
                println!(
                    "ENGAGED {}: live runs are refused and running ones halt before their next step; dry-runs still run",
                    row.scope
                );
            } else {
                println!("released {}: live runs may start again", row.scope);
            }
            Ok(ExitCode::SUCCESS)
        }
        Err(e @ (crate::switch::SwitchError::Reason | crate::switch::SwitchError::Scope(_))) => {
            eprintln!("error: {e}");
            Ok(ExitCode::from(EXIT_INVALID))
        }
        Err(e) => Err(e.into()),
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

#[derive(Debug, Clone, Copy)]
struct RunFlags {
    live: bool,
    force_untested: bool,
    json: bool,
}

async fn run_runbook(
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
    let id = match service.run(request).await {
        Ok(id) => id,
        Err(e) if exit::run_refused(&e) => {
            eprintln!("error: {e}\nnothing was run.");
            return Ok(ExitCode::from(EXIT_INVALID));
        }
        Err(e) => return Err(e.into()),
    };
    show_run(&service, &id, json, false).await
}

/// A live run of a runbook that is not `ready` needs `--force-untested`:
/// say so prominently; when forced, it is recorded. Returns whether to go on.
async fn untested_allowed(
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
async fn approve(
    home: &Home,
    actor: &Actor,
    run: &str,
    yes: bool,
    comment: &str,
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
        .await
        .map(|_| ());
    control(result, || {
        format!(
            "{} recorded for run {run}",
            if yes { "approval" } else { "denial" }
        )
    })
}

async fn drill(home: &Home, cmd: DrillCommand) -> anyhow::Result<ExitCode> {
    let service = home.service().await?;
    match cmd {
        DrillCommand::Status { json } => {
            let rows = crate::drill::readiness(&service, std::time::SystemTime::now()).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&rows)?);
            } else {
                print!("{}", render::readiness_text(&rows));
            }
            Ok(ExitCode::SUCCESS)
        }
        DrillCommand::Run { runbook, json } => {
            let prepared = match crate::drill::prepare_drill(&service, &runbook).await {
                Ok(p) => p,
                Err(e) if !exit::run_refused(&e) => return Err(e.into()),
                Err(e) => {
                    eprintln!("error: {e}\nno drill was run.");
                    return Ok(ExitCode::from(EXIT_INVALID));
                }
            };
            let id = service.execute_prepared(prepared).await?;
            show_run(&service, &id, json, false).await
        }
    }
}

async fn show_run(
    service: &Service,
    id: &str,
    json: bool,
    with_audit: bool,
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
        println!(
            "{}",
            serde_json::to_string_pretty(&{
                let mut report = crate::executor::RunReport::new(&run, &steps, &targets, &calls);
                report.audit = with_audit.then_some(trail.clone());
                report
            })?
        );
    } else {
        print!("{}", render::run_text(&run, &steps, &targets, &calls));
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

async fn runbook(home: &Home, actor: &Actor, cmd: RunbookCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        RunbookCommand::Validate { file, json } => {
            let text = read_text(&file, "runbook")?;
            let service = home.service().await?;
            match service.validate(&file.display().to_string(), &text).await {
                Ok(valid) => {
                    if json {
                        println!(
                            "{}",
                            serde_json::json!({"valid": true, "name": valid.runbook.name, "version": valid.runbook.version, "digest": valid.digest})
                        );
                    } else {
                        println!(
                            "{}: valid ({}@{}, {} steps, digest {})",
                            file.display(),
                            valid.runbook.name,
                            valid.runbook.version,
                            valid.runbook.steps.len() + valid.runbook.on_failure.len(),
                            valid.digest
                        );
                    }
                    Ok(ExitCode::SUCCESS)
                }
                Err(problems) => {
                    if json {
                        println!(
                            "{}",
                            serde_json::json!({"valid": false, "problems": problems.problems, "omitted": problems.omitted})
                        );
                    } else {
                        eprintln!("{problems}");
                    }
                    Ok(ExitCode::from(EXIT_INVALID))
                }
            }
        }
        RunbookCommand::Publish { file } => {
            let text = read_text(&file, "runbook")?;
            let service = home.service().await?;
            match service
                .publish_runbook(&file.display().to_string(), &text, actor)
                .await
            {
                Ok((row, true)) => {
                    println!(
                        "published runbook {}@{} ({})",
                        row.name, row.version, row.digest
                    );
                    Ok(ExitCode::SUCCESS)
                }
                Ok((row, false)) => {
                    println!(
                        "runbook {}@{} is already published with this exact content",
                        row.name, row.version
                    );
                    Ok(ExitCode::SUCCESS)
                }
                Err(e @ (PublishError::Invalid(_) | PublishError::Conflict { .. })) => {
                    eprintln!("error: {e}");
                    Ok(ExitCode::from(EXIT_INVALID))
                }
                Err(e) => Err(e.into()),
            }
        }
        RunbookCommand::List { json } => {
            let rows = home.store().await?.runbooks().await?;
            if json {
                let list: Vec<_> = rows
                    .iter()
                    .map(|r| serde_json::json!({"name": r.name, "version": r.version, "digest": r.digest, "published_at": r.published_at, "published_by": r.published_by}))
                    .collect();
                println!("{}", serde_json::to_string_pretty(&list)?);
            } else if rows.is_empty() {
                println!(
                    "no runbooks published; publish one with `firedrill runbook publish FILE`"
                );
            } else {
                println!(
                    "{:<32} {:>7}  {:<24} DIGEST",
                    "NAME", "VERSION", "PUBLISHED BY"
                );
                for r in rows {
                    println!(
                        "{:<32} {:>7}  {:<24} {}",
                        r.name, r.version, r.published_by, r.digest
                    );
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        RunbookCommand::Show { runbook } => {
            let (name, version) = split_reference(&runbook)?;
            let row = home
                .store()
                .await?
                .runbook(&name, version)
                .await?
                .with_context(|| format!("runbook {runbook} is not published"))?;
            print!("{}", row.source);
            Ok(ExitCode::SUCCESS)
        }
        RunbookCommand::Rollback { name, to, reason } => {
            let service = home.service().await?;
            match service.rollback_runbook(&name, to, actor, &reason).await {
                Ok(row) => {
                    println!(
                        "{name}@{} is current again (digest {}); publishing a new version ends the rollback",
                        row.version, row.digest
                    );
                    Ok(ExitCode::SUCCESS)
                }
                Err(crate::executor::ControlError::Store(e)) => Err(e.into()),
                Err(e) => {
                    eprintln!("error: {e}");
                    Ok(ExitCode::from(EXIT_INVALID))
                }
            }
        }
        RunbookCommand::Schema => {
            println!("{}", serde_json::to_string_pretty(&Runbook::json_schema())?);
            Ok(ExitCode::SUCCESS)
        }
    }
}

async fn kernel(home: &Home, actor: &Actor, cmd: KernelCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        KernelCommand::Inspect { file, json } => {
            let host = home.kernel_host()?;
            let bytes = std::fs::read(&file)
                .with_context(|| format!("cannot read kernel component {}", file.display()))?;
            let kernel = host
                .load(&bytes)
                .await
                .with_context(|| format!("{} is not a usable kernel", file.display()))?;
            if json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&inspect_json(&host, &kernel))?
                );
            } else {
                print!("{}", render::inspect_text(&host, &kernel));
            }
        }
        KernelCommand::Publish { file, json } => {
            let service = home.service().await?;
            let bytes = std::fs::read(&file)
                .with_context(|| format!("cannot read kernel component {}", file.display()))?;
            let (published, _) = service
                .registry()
                .publish(service.host(), &bytes, actor)
                .await
                .with_context(|| format!("cannot publish {}", file.display()))?;
            let (entry, new) = match published {
                Published::New(e) => (e, true),
                Published::AlreadyPresent(e) => (e, false),
            };
            if json {
                println!(
                    "{}",
                    serde_json::json!({"name": entry.name, "version": entry.version, "digest": entry.digest, "new": new})
                );
            } else if new {
                println!(
                    "published {}@{} ({})",
                    entry.name, entry.version, entry.digest
                );
            } else {
                println!(
                    "{}@{} is already published with these exact bytes ({})",
                    entry.name, entry.version, entry.digest
                );
            }
        }
        KernelCommand::Test(args) => return author::test(home, args).await,
        KernelCommand::New {
            name,
            lang,
            dir,
            sdk,
        } => {
            let dir = dir.unwrap_or_else(|| PathBuf::from(&name));
            let files = author::scaffold(lang, &name, &dir, sdk.as_deref())?;
            println!(
                "created {} ({} files); next: cd {} && ./test.sh",
                dir.display(),
                files.len(),
                dir.display()
            );
        }
        KernelCommand::List { json } => {
            let entries = home.store().await?.kernels().await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&entries)?);
            } else if entries.is_empty() {
                println!(
                    "no kernels published; publish one with `firedrill kernel publish FILE.wasm`"
                );
            } else {
                println!(
                    "{:<24} {:<10} {:<24} DIGEST",
                    "NAME", "VERSION", "PUBLISHED BY"
                );
                for e in entries {
                    println!(
                        "{:<24} {:<10} {:<24} {}",
                        e.name, e.version, e.published_by, e.digest
                    );
                }
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

async fn runs(home: &Home, actor: &Actor, cmd: RunsCommand) -> anyhow::Result<ExitCode> {
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
        RunsCommand::Cancel { id, reason } => {
            let service = home.service().await?;
            control(service.cancel(&id, actor, &reason).await, || {
                format!("cancel requested: run {id} stops before its next step")
            })
        }
        RunsCommand::Abandon { id, reason } => {
            let service = home.service().await?;
            control(service.abandon(&id, actor, &reason).await, || {
                format!("run {id} abandoned")
            })
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
                Err(e) => return control(Err(e), String::new),
            };
            service.execute_prepared(prepared).await?;
            show_run(&service, &id, json, false).await
        }
    }
}

/// Report a run control's result: the message, or the error and exit 2.
fn control(
    result: Result<(), crate::executor::ControlError>,
    done: impl FnOnce() -> String,
) -> anyhow::Result<ExitCode> {
    match result {
        Ok(()) => {
            println!("{}", done());
            Ok(ExitCode::SUCCESS)
        }
        Err(e) if !exit::control_refused(&e) => Err(e.into()),
        Err(e) => {
            eprintln!("error: {e}");
            Ok(ExitCode::from(EXIT_INVALID))
        }
    }
}

async fn audit(home: &Home, cmd: AuditCommand) -> anyhow::Result<ExitCode> {
    let store = home.store().await?;
    match cmd {
        AuditCommand::List {
            run,
            actor,
            action,
            since,
            limit,
            json,
        } => {
            let records = store
                .audit(&AuditFilter {
                    run_id: run,
                    actor,
                    action,
                    since,
                    limit,
                })
                .await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&records)?);
            } else {
                print!("{}", render::audit_text(&records));
            }
            Ok(ExitCode::SUCCESS)
        }
        AuditCommand::Verify { json } => {
            let v = verify_store(store.as_ref()).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&v)?);
            } else if let Some(bad) = &v.first_bad {
                println!(
                    "audit chain BROKEN at record {}: {}\n{} records checked; the chain is intact up to record {}.",
                    bad.seq, bad.problem, v.records, v.head_seq
                );
            } else {
                println!(
                    "audit chain OK: {} records, head seq {} hash {}",
                    v.records, v.head_seq, v.head_hash
                );
            }
            Ok(if v.first_bad.is_some() {
                ExitCode::FAILURE
            } else {
                ExitCode::SUCCESS
            })
        }
    }
}

/// Time limit of one reachability probe.
const PROBE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

async fn inventory_check(home: &Home, probe: bool, json: bool) -> anyhow::Result<ExitCode> {
    let inventory = home.inventory()?;
    let problems = inventory.problems();
    let mut probes = Vec::new();
    if probe {
        let targets =
            crate::transport::Targets::with_config(inventory.clone(), &home.config().targets);
        // Concurrently, so that a fleet of unreachable hosts takes one
        // timeout, not one each; the executors' own pools bound the fan-out.
        let checks = inventory.targets.keys().map(|name| {
            let targets = &targets;
            async move {
                let result = targets.probe(name, PROBE_TIMEOUT).await;
                let (ok, detail) = match result {
                    Ok(detail) => (true, detail),
                    Err(e) => (false, e.to_string()),
                };
                (name.clone(), ok, detail)
            }
        });
        probes = futures::future::join_all(checks).await;
    }
    let failed = !problems.is_empty() || probes.iter().any(|(_, ok, _)| !ok);
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(&serde_json::json!({
                "path": home.inventory_path(),
                "targets": inventory.targets.len(),
                "groups": inventory.groups.len(),
                "problems": problems,
                "probes": probes.iter().map(|(t, ok, d)| serde_json::json!({"target": t, "reachable": ok, "detail": d})).collect::<Vec<_>>(),
                "ok": !failed,
            }))?
        );
    } else {
        println!(
            "{}: {} targets, {} groups",
            home.inventory_path().display(),
            inventory.targets.len(),
            inventory.groups.len()
        );
        for p in &problems {
            println!("  problem: {p}");
        }
        for (t, ok, d) in &probes {
            println!("  {:<24} {}  {d}", t, if *ok { "ok  " } else { "FAIL" });
        }
        println!(
            "{}",
            if failed {
                "inventory has problems"
            } else {
                "inventory OK"
            }
        );
    }
    Ok(if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

fn inspect_json(host: &KernelHost, kernel: &LoadedKernel) -> serde_json::Value {
    serde_json::json!({
        "name": kernel.manifest.name,
        "version": kernel.manifest.version,
        "digest": kernel.digest,
        "size_bytes": kernel.size_bytes,
        "manifest": kernel.manifest,
        "limits": host.config().limits,
    })
}
