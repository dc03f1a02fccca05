//! Kernel authors' tools: `firedrill kernel test` (run a component against a
//! scripted host) and `firedrill kernel new` (scaffold a project).
//!
//! `kernel test` uses the real kernel host: the same loader checks as
//! `kernel publish`, the same capability checks, dry-run interception and
//! limits as a run. Only the command or request on a target is answered
//! from `--mock-exec` / `--mock-http` instead of performed, so the same
//! checks apply to a kernel whatever language it was written in.

mod scaffold;

use std::fmt::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Instant;

use anyhow::Context as _;
use serde_json::{Value, json};

use crate::Mode;
use crate::home::Home;
use crate::kernel::{CacheOutcome, InvokeReport, InvokeRequest, KernelHost, LoadedKernel};
use crate::secret::{Secret, StaticSecrets};
use crate::transport::{MockTargets, Targets};

pub use scaffold::{Lang, scaffold};

/// Largest `--input` file, in bytes (the engine's own step inputs are
/// bounded by the runbook size; this keeps a test from reading a huge file).
pub const MAX_TEST_INPUT_BYTES: u64 = 1 << 20;

/// Arguments of `firedrill kernel test`.
#[derive(Debug, clap::Args)]
pub struct TestArgs {
    /// The component to test.
    pub file: PathBuf,
    /// The step input, a JSON file (`-` for standard input). Default `{}`.
    #[arg(long, conflicts_with = "input_json")]
    pub input: Option<PathBuf>,
    /// The step input as JSON text on the command line.
    #[arg(long = "input-json", value_name = "JSON")]
    pub input_json: Option<String>,
    /// Fail unless the output contains this JSON (every field given, with
    /// the value given; other fields are ignored).
    #[arg(long, value_name = "JSON")]
    pub expect: Option<String>,
    /// `dry-run` (default) or `live`. In live mode `change` calls are
    /// answered by the mocks too: nothing is ever performed.
    #[arg(long, default_value = "dry-run", value_parser = parse_mode)]
    pub mode: Mode,
    /// Scripted answer to a command: `'PATTERN=>EXIT,STDOUT'`, with PATTERN
    /// in the capability syntax (`systemctl is-active -- *`). STDOUT may use
    /// `\n` and `\t`, or be `@FILE`. Repeatable; the first match wins.
    #[arg(long = "mock-exec", value_name = "PATTERN=>EXIT,STDOUT")]
    pub mock_exec: Vec<String>,
    /// Scripted answer to a request: `'METHOD URL-PATTERN=>STATUS,BODY'`
    /// (METHOD may be `*`). Repeatable; the first match wins.
    #[arg(long = "mock-http", value_name = "METHOD URL=>STATUS,BODY")]
    pub mock_http: Vec<String>,
    /// A secret the kernel may read: `NAME=VALUE` (redacted from the report).
    #[arg(long = "secret", value_name = "NAME=VALUE")]
    pub secrets: Vec<String>,
    /// Targets the step grants. Default: one target named `test-target`.
    #[arg(long = "target", value_name = "NAME")]
    pub targets: Vec<String>,
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
}

fn parse_mode(s: &str) -> Result<Mode, String> {
    match s {
        "dry-run" => Ok(Mode::DryRun),
        "live" => Ok(Mode::Live),
        other => Err(format!("{other:?} is not a mode; use dry-run or live")),
    }
}

/// One check `kernel test` made, passed or not.
#[derive(Debug, Clone, serde::Serialize)]
struct Check {
    name: &'static str,
    ok: bool,
    detail: String,
}

/// `firedrill kernel test`: exit 0 when every check passed, 1 when the
/// kernel failed one, 2 when the test itself is wrongly set up.
pub async fn test(home: &Home, args: TestArgs) -> anyhow::Result<ExitCode> {
    let (mock, secrets, targets, input, expect) = match setup(&args) {
        Ok(setup) => setup,
        Err(e) => {
            eprintln!("error: {e:#}");
            return Ok(ExitCode::from(super::EXIT_INVALID));
        }
    };
    let mut config = home.config().kernel.clone();
    if config.cache_dir.is_none() {
        config.cache_dir = Some(home.dir().join("cache").join("kernels"));
    }
    let host = KernelHost::new(config, Targets::mocked(&targets, mock), Arc::new(secrets))?;
    let bytes = std::fs::read(&args.file)
        .with_context(|| format!("cannot read kernel component {}", args.file.display()))?;

    let mut checks = Vec::new();
    let started = Instant::now();
    let loaded = host.load(&bytes).await;
    let load_ms = started.elapsed().as_millis();
    let kernel = match loaded {
        Ok(k) => k,
        Err(e) => {
            checks.push(Check {
                name: "loads as a firedrill kernel",
                ok: false,
                detail: e.to_string(),
            });
            return finish(&args, None, &checks, None, load_ms);
        }
    };
    manifest_checks(&kernel, &mut checks);
    if let Err(problems) = kernel.validate_input(&input) {
        checks.push(Check {
            name: "input satisfies the input schema",
            ok: false,
            detail: problems.join("; "),
        });
        return finish(&args, Some(&kernel), &checks, None, load_ms);
    }
    checks.push(Check {
        name: "input satisfies the input schema",
        ok: true,
        detail: String::new(),
    });
    let report = host
        .invoke(
            &kernel,
            InvokeRequest {
                run_id: "kernel-test".into(),
                step_id: "test".into(),
                mode: args.mode,
                actor: "user:kernel-test".into(),
                targets,
                input,
                observer: None,
            },
        )
        .await;
    report_checks(&report, &mut checks);
    if let (Some(expected), Ok(output)) = (&expect, &report.result) {
        checks.push(Check {
            name: "output contains --expect",
            ok: contains(output, expected),
            detail: if contains(output, expected) {
                String::new()
            } else {
                format!("expected {expected} within {output}")
            },
        });
    }
    finish(&args, Some(&kernel), &checks, Some(&report), load_ms)
}

/// Whether `actual` has every field of `expected` with the same value
/// (objects recursively; anything else compared whole).
fn contains(actual: &Value, expected: &Value) -> bool {
    match (actual, expected) {
        (Value::Object(a), Value::Object(e)) => e
            .iter()
            .all(|(k, v)| a.get(k).is_some_and(|av| contains(av, v))),
        _ => actual == expected,
    }
}

/// The scripted host and input from the arguments; an error here means
/// the test is wrongly set up (exit 2), not that the kernel failed.
#[allow(clippy::type_complexity)]
fn setup(
    args: &TestArgs,
) -> anyhow::Result<(
    MockTargets,
    StaticSecrets,
    Vec<String>,
    Value,
    Option<Value>,
)> {
    let mut mock = MockTargets::default();
    for spec in &args.mock_exec {
        mock.add_exec(spec)?;
    }
    for spec in &args.mock_http {
        mock.add_http(spec)?;
    }
    let mut secrets = StaticSecrets::default();
    for pair in &args.secrets {
        let (name, value) = pair
            .split_once('=')
            .with_context(|| format!("--secret {name:?}: the form is NAME=VALUE", name = pair))?;
        secrets.0.insert(name.to_string(), Secret::new(value));
    }
    let targets = if args.targets.is_empty() {
        vec!["test-target".to_string()]
    } else {
        args.targets.clone()
    };
    let input = match &args.input_json {
        Some(text) => serde_json::from_str(text).context("--input-json is not JSON")?,
        None => read_input(args.input.as_deref())?,
    };
    let expect: Option<Value> = args
        .expect
        .as_deref()
        .map(serde_json::from_str)
        .transpose()
        .context("--expect is not JSON")?;

    Ok((mock, secrets, targets, input, expect))
}

fn read_input(path: Option<&std::path::Path>) -> anyhow::Result<Value> {
    let Some(path) = path else {
        return Ok(json!({}));
    };
    let mut text = String::new();
    if path.as_os_str() == "-" {
        use std::io::Read as _;
        std::io::stdin()
            .take(MAX_TEST_INPUT_BYTES + 1)
            .read_to_string(&mut text)
            .context("cannot read the input from standard input")?;
    } else {
        let meta = std::fs::metadata(path)
            .with_context(|| format!("cannot read input {}", path.display()))?;
        anyhow::ensure!(
            meta.len() <= MAX_TEST_INPUT_BYTES,
            "input {} is {} bytes; at most {MAX_TEST_INPUT_BYTES}",
            path.display(),
            meta.len()
        );
        text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read input {}", path.display()))?;
    }
    anyhow::ensure!(
        text.len() as u64 <= MAX_TEST_INPUT_BYTES,
        "the input is over {MAX_TEST_INPUT_BYTES} bytes"
    );
    serde_json::from_str(&text).with_context(|| {
        format!(
            "input {} is not JSON; the input is one JSON document, as a step's `input:`",
            path.display()
        )
    })
}

/// What loading established, as checks: the loader refuses a kernel that
/// fails any of these, so they are listed to show what was verified.
fn manifest_checks(kernel: &LoadedKernel, checks: &mut Vec<Check>) {
    let m = &kernel.manifest;
    let c = &m.capabilities;
    let changes = c
        .exec
        .iter()
        .map(|e| e.effect)
        .chain(c.http.iter().map(|h| h.effect))
        .filter(|e| *e == crate::Effect::Change)
        .count();
    for (name, detail) in [
        (
            "loads as a firedrill kernel",
            format!(
                "{} bytes, {}",
                kernel.size_bytes,
                match kernel.cache {
                    CacheOutcome::Hit => "compiled earlier (cache)",
                    CacheOutcome::Miss => "compiled now, cached for next time",
                    CacheOutcome::Disabled => "compiled now (no cache)",
                }
            ),
        ),
        (
            "manifest: name, semantic version, description",
            m.reference(),
        ),
        (
            "describe() is pure and answers the same twice",
            String::new(),
        ),
        (
            "input and output schemas are valid JSON Schemas",
            String::new(),
        ),
        (
            "capabilities parse",
            format!(
                "{} exec, {} http ({changes} change), {} secrets; idempotent: {}",
                c.exec.len(),
                c.http.len(),
                c.secrets.len(),
                if m.idempotent { "yes" } else { "no" }
            ),
        ),
    ] {
        checks.push(Check {
            name,
            ok: true,
            detail,
        });
    }
}

fn report_checks(report: &InvokeReport, checks: &mut Vec<Check>) {
    checks.push(match &report.result {
        Ok(_) => Check {
            name: "run returns output that satisfies the output schema",
            ok: true,
            detail: format!("{} ms", report.duration_ms),
        },
        Err(e) => Check {
            name: "run returns output that satisfies the output schema",
            ok: false,
            detail: e.to_string(),
        },
    });
    let denied: Vec<String> = report
        .denials()
        .map(|c| match &c.outcome {
            crate::kernel::CallOutcome::Denied { reason } => reason.clone(),
            _ => String::new(),
        })
        .collect();
    checks.push(Check {
        name: "every host call is within the declared capabilities",
        ok: denied.is_empty(),
        detail: denied.join("; "),
    });
    let unscripted: Vec<String> = report
        .host_calls
        .iter()
        .filter_map(|c| match &c.outcome {
            crate::kernel::CallOutcome::Failed { reason }
                if reason.contains("no scripted answer") =>
            {
                Some(reason.clone())
            }
            _ => None,
        })
        .collect();
    checks.push(Check {
        name: "every command and request has a scripted answer",
        ok: unscripted.is_empty(),
        detail: unscripted.join("; "),
    });
    if report.mode == Mode::DryRun {
        let performed = report
            .host_calls
            .iter()
            .filter(|c| c.effect == Some(crate::Effect::Change) && !c.simulated)
            .count();
        checks.push(Check {
            name: "dry-run: no change was performed",
            ok: performed == 0,
            detail: format!("{} planned", report.planned_changes().count()),
        });
    }
}

fn finish(
    args: &TestArgs,
    kernel: Option<&LoadedKernel>,
    checks: &[Check],
    report: Option<&InvokeReport>,
    load_ms: u128,
) -> anyhow::Result<ExitCode> {
    let ok = checks.iter().all(|c| c.ok);
    if args.json {
        let doc = json!({
            "kernel": kernel.map(|k| k.reference()),
            "digest": kernel.map(|k| k.digest.clone()),
            "load_ms": load_ms,
            "ok": ok,
            "checks": checks,
            "report": report,
        });
        println!("{}", serde_json::to_string_pretty(&doc)?);
    } else {
        print!("{}", text(args, kernel, checks, report, load_ms));
    }
    Ok(if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

fn text(
    args: &TestArgs,
    kernel: Option<&LoadedKernel>,
    checks: &[Check],
    report: Option<&InvokeReport>,
    load_ms: u128,
) -> String {
    let mut s = String::new();
    let live = args.mode == Mode::Live;
    let _ = writeln!(
        s,
        "kernel test  {}  {}  ({} mode, scripted host: nothing is performed; loaded in {load_ms} ms)",
        kernel.map_or_else(|| args.file.display().to_string(), |k| k.reference()),
        kernel.map_or("", |k| k.digest.as_str()),
        if live { "LIVE" } else { "dry-run" },
    );
    if let Some(report) = report {
        let _ = writeln!(s, "host calls ({})", report.host_calls.len());
        if report.host_calls.is_empty() {
            let _ = writeln!(s, "      (none)");
        }
        for call in &report.host_calls {
            let value = serde_json::to_value(call).unwrap_or(Value::Null);
            s.push_str(&super::render::call_line(&value, live));
        }
        let _ = writeln!(s, "log");
        if report.logs.is_empty() && report.stdout.is_empty() && report.stderr.is_empty() {
            let _ = writeln!(s, "      (none)");
        }
        for line in &report.logs {
            let _ = writeln!(s, "      {:<5} {}", line.level, line.message);
        }
        for (stream, text) in [("stdout", &report.stdout), ("stderr", &report.stderr)] {
            for line in text.lines() {
                let _ = writeln!(s, "      {stream} {line}");
            }
        }
        if let Ok(output) = &report.result {
            let pretty = serde_json::to_string_pretty(output).unwrap_or_default();
            let _ = writeln!(s, "output\n      {}", pretty.replace('\n', "\n      "));
        }
    }
    let _ = writeln!(s, "checks");
    for c in checks {
        let mark = if c.ok { "ok  " } else { "FAIL" };
        if c.detail.is_empty() {
            let _ = writeln!(s, "  {mark} {}", c.name);
        } else {
            let _ = writeln!(s, "  {mark} {}: {}", c.name, c.detail);
        }
    }
    let failed = checks.iter().filter(|c| !c.ok).count();
    let _ = writeln!(
        s,
        "{}",
        if failed == 0 {
            "PASSED".to_string()
        } else {
            format!("FAILED ({failed} of {} checks)", checks.len())
        }
    );
    s
}
