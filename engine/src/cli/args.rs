//! The command line as clap parses it: every command, subcommand and flag.

use super::*;

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
        /// Print JSON instead of text (field names are stable: docs/cli.md).
        #[arg(long)]
        json: bool,
    },
    /// Drills and readiness.
    #[command(subcommand)]
    Drill(DrillCommand),
    /// Approve the approval step a run is waiting at (not your own run).
    Approve {
        /// The run's id.
        run: String,
        /// Why you approve (required; recorded in the audit log).
        #[arg(long)]
        comment: String,
        /// Print JSON instead of text (field names are stable: docs/cli.md).
        #[arg(long)]
        json: bool,
    },
    /// Deny the approval step a run is waiting at: the step fails.
    Deny {
        /// The run's id.
        run: String,
        /// Why you deny (required; recorded in the audit log).
        #[arg(long)]
        comment: String,
        /// Print JSON instead of text (field names are stable: docs/cli.md).
        #[arg(long)]
        json: bool,
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
        /// default: a random `node-...`), e.g. the host or pod name.
        #[arg(long, env = "FIREDRILL_NODE_ID")]
        node_id: Option<String>,
    },
    /// API tokens for `firedrill serve`.
    #[command(subcommand)]
    Token(TokenCommand),
    /// Alert triggers.
    #[command(subcommand)]
    Trigger(TriggerCommand),
    /// Write a consistent copy of the SQLite store to a new file while it is
    /// in use (`serve` may run); recorded in the audit log. PostgreSQL: use
    /// pg_dump.
    Backup {
        /// The new file; an existing file is never replaced.
        file: PathBuf,
        /// Print JSON instead of text (field names are stable: docs/cli.md).
        #[arg(long)]
        json: bool,
    },
    /// Replace the store with a backup, after checking it (integrity, schema,
    /// audit chain and the checkpoints this home holds). Stop `serve` and
    /// every other command first; the current store is moved aside, never
    /// deleted.
    Restore {
        /// A file written by `firedrill backup`.
        file: PathBuf,
        /// Restore although the store it replaces, or a checkpoint this
        /// home holds, has audit records the backup lacks (or the store
        /// cannot be read): they are lost, and the loss is recorded in the
        /// restored log.
        #[arg(long)]
        accept_loss: bool,
        /// Print JSON instead of text (field names are stable: docs/cli.md).
        #[arg(long)]
        json: bool,
    },
    /// Print a shell completion script to standard output, e.g.
    /// `firedrill completion bash > /etc/bash_completion.d/firedrill`.
    Completion {
        /// The shell to complete for.
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Write the man pages (firedrill.1 and one page per subcommand) into a
    /// directory, e.g. `firedrill man --out /usr/local/share/man/man1`.
    Man {
        /// The directory to write into (created if missing; pages of the
        /// same name are replaced).
        #[arg(long, value_name = "DIR")]
        out: PathBuf,
    },
}

#[derive(Debug, Subcommand)]
pub enum TriggerCommand {
    /// Close a runbook's circuit breakers (opened by consecutive failed
    /// triggered runs; every key's), so alerts may start it again.
    Reset {
        /// The runbook's name.
        runbook: String,
        /// Why (required; recorded in the audit log).
        #[arg(long)]
        reason: String,
        /// Print JSON instead of text (field names are stable: docs/cli.md).
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum TokenCommand {
    /// Create a token; it is printed once and only its hash is kept.
    Create {
        /// A name for the token, unique among live tokens (`ci-deploy`).
        #[arg(long)]
        name: String,
        /// What the token may do.
        #[arg(long, value_enum)]
        role: crate::auth::Role,
        /// Limit the token to these runbooks (repeatable; default all).
        #[arg(long = "runbook")]
        runbooks: Vec<String>,
        /// The person the token belongs to (counted once in approvals,
        /// named in the audit log).
        #[arg(long)]
        owner: String,
        /// Print JSON (with the token) instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Every token: name, id, role, owner, runbooks, created, revoked (never
    /// the token itself).
    List {
        /// Print JSON instead of text (field names are stable: docs/cli.md).
        #[arg(long)]
        json: bool,
    },
    /// Revoke a live token by name or id.
    Revoke {
        /// The token's name or id.
        token: String,
        /// Print JSON instead of text (field names are stable: docs/cli.md).
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum SwitchCommand {
    /// Every switch and whether it is engaged.
    Status {
        /// Print JSON instead of text (field names are stable: docs/cli.md).
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
        /// Print JSON instead of text (field names are stable: docs/cli.md).
        #[arg(long)]
        json: bool,
    },
    /// Release: live runs may start again.
    Off {
        /// Only this runbook's switch (default: the global one).
        #[arg(long)]
        runbook: Option<String>,
        /// Why (required; recorded in the audit log).
        #[arg(long)]
        reason: String,
        /// Print JSON instead of text (field names are stable: docs/cli.md).
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum InventoryCommand {
    /// Validate inventory.yaml; with --probe, run `true` on every target
    /// (observe only) and report which are reachable. Exit 1 on any problem.
    Check {
        /// Also connect to every target and run `true` (observe only).
        #[arg(long)]
        probe: bool,
        /// Print JSON instead of text (field names are stable: docs/cli.md).
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum RunbookCommand {
    /// Check a runbook file; lists every problem with file:line:column.
    Validate {
        /// The runbook file (YAML).
        file: PathBuf,
        /// Print JSON instead of text (field names are stable: docs/cli.md).
        #[arg(long)]
        json: bool,
    },
    /// Validate and store a runbook version (immutable).
    Publish {
        /// The runbook file (YAML).
        file: PathBuf,
        /// Print JSON instead of text (field names are stable: docs/cli.md).
        #[arg(long)]
        json: bool,
    },
    /// List published runbook versions.
    List {
        /// Print JSON instead of text (field names are stable: docs/cli.md).
        #[arg(long)]
        json: bool,
    },
    /// Print a published runbook's source (`name` or `name@version`).
    Show {
        /// `name` (the current version) or `name@version`.
        runbook: String,
        /// Print JSON (name, version, digest, source, ...) instead of the source.
        #[arg(long)]
        json: bool,
    },
    /// Print the JSON Schema of the runbook format (for editors).
    Schema,
    /// Make an earlier version current again (until a new one is published).
    Rollback {
        /// The runbook's name.
        name: String,
        /// The published version to make current.
        #[arg(long)]
        to: i64,
        /// Why (required; recorded in the audit log).
        #[arg(long)]
        reason: String,
        /// Print JSON instead of text (field names are stable: docs/cli.md).
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum DrillCommand {
    /// Readiness of every runbook: state, last drill, age, last failure.
    Status {
        /// Print JSON instead of text (field names are stable: docs/cli.md).
        #[arg(long)]
        json: bool,
    },
    /// Drill a runbook now, here (as `scheduler:drill`, with its drill inputs and mode).
    Run {
        /// A published runbook's name (its current version is drilled).
        runbook: String,
        /// Print JSON instead of text (field names are stable: docs/cli.md).
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum KernelCommand {
    /// Load a component and print its manifest, digest and the limits it runs under.
    Inspect {
        /// The component file (`.wasm`).
        file: PathBuf,
        /// Print JSON instead of text (field names are stable: docs/cli.md).
        #[arg(long)]
        json: bool,
    },
    /// Validate a component and store it under the name@version its manifest declares.
    Publish {
        /// The component file (`.wasm`).
        file: PathBuf,
        /// Print JSON instead of text (field names are stable: docs/cli.md).
        #[arg(long)]
        json: bool,
    },
    /// List published kernels.
    List {
        /// Print JSON instead of text (field names are stable: docs/cli.md).
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
        /// The language to write it in.
        #[arg(long, value_enum)]
        lang: author::Lang,
        /// Where to create the project (must not exist or be empty).
        #[arg(long)]
        dir: Option<PathBuf>,
        /// Rust: build against the SDK in this directory (a firedrill
        /// checkout's sdk/). Default: a copy of the SDK this binary was
        /// built with, written into the project as firedrill-sdk/.
        #[arg(long)]
        sdk: Option<PathBuf>,
        /// Print JSON instead of text (field names are stable: docs/cli.md).
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum RunsCommand {
    /// Runs, newest first.
    List {
        /// Only runs of this runbook.
        #[arg(long)]
        runbook: Option<String>,
        /// queued, running, awaiting-approval, needs-attention, succeeded,
        /// failed, interrupted, halted, cancelled, abandoned
        #[arg(long)]
        status: Option<String>,
        /// At most this many runs.
        #[arg(long, default_value_t = 20)]
        limit: i64,
        /// Print JSON instead of text (field names are stable: docs/cli.md).
        #[arg(long)]
        json: bool,
    },
    /// One run: steps, host calls, outputs, and its audit trail.
    Show {
        /// The run's id.
        id: String,
        /// Print JSON instead of text (field names are stable: docs/cli.md).
        #[arg(long)]
        json: bool,
    },
    /// Ask a running run (in this process or `firedrill serve`) to stop at
    /// its next step boundary.
    Cancel {
        /// The run's id.
        id: String,
        /// Why (required; recorded in the audit log).
        #[arg(long)]
        reason: String,
        /// Print JSON instead of text (field names are stable: docs/cli.md).
        #[arg(long)]
        json: bool,
    },
    /// Continue a halted run from the step where it stopped, or a run that
    /// needs attention by running its unfinished step again, here and now.
    Resume {
        /// The run's id.
        id: String,
        /// Why (required; recorded in the audit log).
        #[arg(long)]
        reason: String,
        /// Print JSON instead of text (field names are stable: docs/cli.md).
        #[arg(long)]
        json: bool,
    },
    /// Continue a run that needs attention after its unfinished step,
    /// marking that step skipped (you checked it made its change), here
    /// and now.
    Skip {
        /// The run's id.
        id: String,
        /// Why (required; recorded in the audit log).
        #[arg(long)]
        reason: String,
        /// Print JSON instead of text (field names are stable: docs/cli.md).
        #[arg(long)]
        json: bool,
    },
    /// Close a halted, interrupted or needs-attention run for good.
    Abandon {
        /// The run's id.
        id: String,
        /// Why (required; recorded in the audit log).
        #[arg(long)]
        reason: String,
        /// Print JSON instead of text (field names are stable: docs/cli.md).
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum AuditCommand {
    /// Audit records, oldest first (the newest `--limit`).
    List {
        /// Only records of this run.
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
        /// At most this many records (the newest).
        #[arg(long, default_value_t = 100)]
        limit: i64,
        /// Print JSON instead of text (field names are stable: docs/cli.md).
        #[arg(long)]
        json: bool,
    },
    /// Re-walk the hash chain (names the first bad record), and check the
    /// log against signed checkpoints held elsewhere: tail truncation (exit
    /// 3), a rewrite (4), a fork (5), a checkpoint that cannot be trusted
    /// (6); a broken chain exits 1. Always checks the checkpoints kept in
    /// the store and in the configured directory witnesses.
    Verify {
        /// A checkpoint file (a signed note) to check the log against;
        /// repeatable.
        #[arg(long = "checkpoint", value_name = "FILE")]
        checkpoints: Vec<std::path::PathBuf>,
        /// A witness directory whose `*.checkpoint` files to check against;
        /// repeatable.
        #[arg(long = "witness-dir", value_name = "DIR")]
        witness_dirs: Vec<std::path::PathBuf>,
        /// Print the report as JSON (field names are stable: docs/cli.md).
        #[arg(long)]
        json: bool,
    },
    /// Sign a checkpoint of the log as it is now, keep it, deliver it to the
    /// configured witnesses, and print it (a C2SP signed note).
    Checkpoint {
        /// Print it as JSON (size, root, note).
        #[arg(long)]
        json: bool,
    },
    /// An inclusion proof (JSON) that record SEQ is in a checkpoint.
    Prove {
        /// The record's sequence number.
        seq: i64,
        /// The checkpoint to prove against (a file, as the auditor holds
        /// it); default: the newest checkpoint kept.
        #[arg(long, value_name = "FILE")]
        checkpoint: Option<std::path::PathBuf>,
    },
    /// A consistency proof (JSON) that checkpoint NEW extends checkpoint OLD.
    Consistency {
        /// The older checkpoint: a file, or the size of a kept checkpoint.
        old: String,
        /// The newer checkpoint: a file, or a size; default: the newest kept.
        new: Option<String>,
    },
    /// The checkpoint signing key: print its verifier key (generating the
    /// key on first use), or rotate it.
    Key {
        #[command(subcommand)]
        command: Option<AuditKeyCommand>,
        /// Print JSON instead of text (field names are stable: docs/cli.md).
        #[arg(long, global = true)]
        json: bool,
    },
    /// Every record as a JSON line (schema `firedrill-audit/1`, see
    /// docs/audit.md), for security tooling.
    Export {
        /// Start after this sequence number (0: from the first record).
        #[arg(long, default_value_t = 0)]
        after: i64,
        /// Keep running and print new records as they are written.
        #[arg(long)]
        follow: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum AuditKeyCommand {
    /// Print the verifier key (`name+id+base64`) to give to verifiers.
    Show,
    /// Replace the signing key; the old key stays trusted for old
    /// checkpoints. Audited.
    Rotate,
}

pub(super) fn parse_input(text: &str) -> Result<(String, String), String> {
    text.split_once('=')
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .filter(|(k, _)| !k.is_empty())
        .ok_or_else(|| format!("{text:?} is not key=value"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory as _;

    /// Commands that print something and have no `--json`, with why.
    const NO_JSON: &[(&str, &str)] = &[
        (
            "firedrill serve",
            "runs until stopped; its one line is the address",
        ),
        ("firedrill completion", "prints a shell script"),
        ("firedrill man", "writes files"),
        ("firedrill runbook schema", "prints JSON already"),
        ("firedrill audit prove", "prints JSON already"),
        ("firedrill audit consistency", "prints JSON already"),
        ("firedrill audit export", "prints JSON lines already"),
    ];

    /// Every command with its full name, depth first.
    fn walk(cmd: &clap::Command, path: &str, out: &mut Vec<(String, clap::Command)>) {
        let path = if path.is_empty() {
            cmd.get_name().to_string()
        } else {
            format!("{path} {}", cmd.get_name())
        };
        out.push((path.clone(), cmd.clone()));
        // clap's own `help` subcommand tree.
        for sub in cmd.get_subcommands().filter(|s| s.get_name() != "help") {
            walk(sub, &path, out);
        }
    }

    fn commands() -> Vec<(String, clap::Command)> {
        let mut cmd = Cli::command();
        cmd.build();
        let mut out = Vec::new();
        walk(&cmd, "", &mut out);
        out
    }

    /// Man pages are roff: a non-ASCII character is a warning there.
    fn ascii(
        short: Option<&clap::builder::StyledStr>,
        long: Option<&clap::builder::StyledStr>,
    ) -> bool {
        [short, long]
            .into_iter()
            .flatten()
            .all(|h| h.to_string().is_ascii())
    }

    #[test]
    fn every_command_and_argument_has_help_text() {
        let mut missing = Vec::new();
        for (path, cmd) in commands() {
            if cmd.get_about().is_none() {
                missing.push(format!("{path}: no about"));
            }
            if !ascii(cmd.get_about(), cmd.get_long_about()) {
                missing.push(format!("{path}: its about is not ASCII"));
            }
            for arg in cmd.get_arguments() {
                let id = arg.get_id().as_str();
                if matches!(id, "help" | "version") {
                    continue;
                }
                if arg
                    .get_help()
                    .is_none_or(|h| h.to_string().trim().is_empty())
                {
                    missing.push(format!("{path}: argument {id} has no help"));
                }
                if !ascii(arg.get_help(), arg.get_long_help()) {
                    missing.push(format!("{path}: argument {id}'s help is not ASCII"));
                }
            }
        }
        assert!(
            missing.is_empty(),
            "write help text for:\n  {}",
            missing.join("\n  ")
        );
    }

    #[test]
    fn every_command_that_prints_has_json_unless_listed_with_a_reason() {
        let all = commands();
        let mut missing = Vec::new();
        for (path, cmd) in &all {
            let leaf = !cmd.has_subcommands() || !cmd.is_subcommand_required_set();
            if !leaf || path == "firedrill" {
                continue;
            }
            let listed = NO_JSON.iter().any(|(p, _)| p == path);
            let has = cmd.get_arguments().any(|a| a.get_id() == "json");
            if has == listed {
                missing.push(format!(
                    "{path}: {}",
                    if has {
                        "has --json but is listed in NO_JSON"
                    } else {
                        "no --json"
                    }
                ));
            }
        }
        for (p, _) in NO_JSON {
            assert!(
                all.iter().any(|(path, _)| path == p),
                "NO_JSON names {p}, which is no command"
            );
        }
        assert!(missing.is_empty(), "{}", missing.join("\n"));
    }
}
