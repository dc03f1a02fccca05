//! The command line: parses arguments, calls the library, prints results.
//!
//! Exit code 0 only on success; errors are printed with their causes.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::{Parser, Subcommand};

use crate::home::{self, Home};
use crate::kernel::{KernelHost, LoadedKernel, Published};

/// firedrill: runbooks of sandboxed recovery kernels, dry-run by default.
#[derive(Debug, Parser)]
#[command(name = "firedrill", version, about)]
pub struct Cli {
    /// Home directory: store, kernel registry, caches, config, inventory.
    #[arg(long, global = true, env = "FIREDRILL_HOME")]
    pub home: Option<PathBuf>,
    /// Log filter for diagnostics on stderr (e.g. `info`, `firedrill=debug`).
    #[arg(long, global = true, env = "FIREDRILL_LOG", default_value = "warn")]
    pub log: String,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Inspect, publish and list recovery kernels.
    #[command(subcommand)]
    Kernel(KernelCommand),
}

#[derive(Debug, Subcommand)]
pub enum KernelCommand {
    /// Load a component and print its manifest, digest and the limits it runs under.
    Inspect {
        file: PathBuf,
        /// Print JSON instead of text.
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
}

/// Parse the process arguments and run; returns the process exit code.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    init_tracing(&cli.log);
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
            ExitCode::FAILURE
        }
    }
}

fn init_tracing(filter: &str) {
    let filter = tracing_subscriber::EnvFilter::try_new(filter)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}

/// Run one parsed command.
pub async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    let home = Home::open(&cli.home.unwrap_or_else(home::default_dir))?;
    match cli.command {
        Command::Kernel(cmd) => kernel(&home, cmd).await,
    }
}

fn read_component(file: &PathBuf) -> anyhow::Result<Vec<u8>> {
    std::fs::read(file).with_context(|| format!("cannot read kernel component {}", file.display()))
}

async fn kernel(home: &Home, cmd: KernelCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        KernelCommand::Inspect { file, json } => {
            let host = home.kernel_host()?;
            let bytes = read_component(&file)?;
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
                print!("{}", inspect_text(&host, &kernel));
            }
        }
        KernelCommand::Publish { file, json } => {
            let host = home.kernel_host()?;
            let bytes = read_component(&file)?;
            let (published, _) = home
                .registry()
                .publish(&host, &bytes)
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
        KernelCommand::List { json } => {
            let entries = home.registry().list()?;
            if json {
                println!("{}", serde_json::to_string_pretty(&entries)?);
            } else if entries.is_empty() {
                println!(
                    "no kernels published; publish one with `firedrill kernel publish FILE.wasm`"
                );
            } else {
                println!("{:<24} {:<10} DIGEST", "NAME", "VERSION");
                for e in entries {
                    println!("{:<24} {:<10} {}", e.name, e.version, e.digest);
                }
            }
        }
    }
    Ok(ExitCode::SUCCESS)
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

fn inspect_text(host: &KernelHost, kernel: &LoadedKernel) -> String {
    use std::fmt::Write as _;
    let m = &kernel.manifest;
    let l = &host.config().limits;
    let mut s = String::new();
    let _ = writeln!(s, "{}", m.reference());
    let _ = writeln!(s, "  description  {}", m.description);
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
        let _ = writeln!(s, "    exec  {:<8} {}", c.effect, c.pattern);
    }
    for c in &m.capabilities.http {
        let _ = writeln!(
            s,
            "    http  {:<8} {} {}",
            c.effect, c.method, c.url_pattern
        );
    }
    for name in &m.capabilities.secrets {
        let _ = writeln!(s, "    secret         {name}");
    }
    let pretty = |v: &serde_json::Value| {
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
