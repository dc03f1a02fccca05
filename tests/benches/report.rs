//! The suite's report: merges every bench's `target/bench/<bench>.json`
//! into `target/bench/results.json` (raw: every measure with its rounds and
//! details, plus the machine) and `target/bench/summary.md` (one table: each
//! figure, its goal and where it stands). Run last by `scripts/bench`;
//! fails if a bench that `scripts/bench` runs left no results or a figure is
//! not a finite number, which is what the CI smoke run checks.
//!
//! `cargo bench -p firedrill-tests --bench report`

use std::fmt::Write as _;
use std::process::Command;

use firedrill_tests::bench::{self, out_dir};
use firedrill_tests::workspace_root;
use serde_json::{Value, json};

/// The benches `scripts/bench` runs, in order.
const SUITE: &[&str] = &[
    "invoke",
    "languages",
    "runs",
    "sidebyside",
    "audit",
    "memory",
    "alerts",
    "ssh",
];

fn first_line(cmd: &str, args: &[&str]) -> String {
    Command::new(cmd)
        .args(args)
        .current_dir(workspace_root())
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| {
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .next()
                .unwrap_or("")
                .trim()
                .to_string()
        })
        .unwrap_or_else(|| "unknown".into())
}

fn read(path: &str) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

/// What the figures were measured on.
fn machine() -> Value {
    let cpuinfo = read("/proc/cpuinfo");
    let cpu = cpuinfo
        .lines()
        .find_map(|l| {
            l.strip_prefix("model name")
                .and_then(|v| v.split_once(':'))
                .map(|(_, v)| v.trim().to_string())
        })
        .unwrap_or_else(|| "unknown".into());
    let meminfo = read("/proc/meminfo");
    let mem_gib = meminfo
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map(|kb| kb / (1024.0 * 1024.0));
    let os = read("/etc/os-release")
        .lines()
        .find_map(|l| {
            l.strip_prefix("PRETTY_NAME=")
                .map(|v| v.trim_matches('"').to_string())
        })
        .unwrap_or_else(|| "unknown".into());
    let lock = read(&workspace_root().join("Cargo.lock").to_string_lossy());
    let wasmtime = lock
        .split("[[package]]")
        .find(|p| p.contains("name = \"wasmtime\"\n"))
        .and_then(|p| p.lines().find_map(|l| l.strip_prefix("version = ")))
        .map(|v| v.trim_matches('"').to_string())
        .unwrap_or_else(|| "unknown".into());
    let dirty = !first_line("git", &["status", "--porcelain"]).is_empty()
        && first_line("git", &["status", "--porcelain"]) != "unknown";
    let exe = std::env::current_exe().unwrap_or_default();
    json!({
        "cpu": cpu,
        "vcpus": std::thread::available_parallelism().map(usize::from).unwrap_or(0),
        "memory_gib": mem_gib,
        "os": os,
        "kernel": read("/proc/sys/kernel/osrelease").trim(),
        "rustc": first_line("rustc", &["-V"]),
        "wasmtime": wasmtime,
        "sshd": first_line("sh", &["-c", "/usr/sbin/sshd -V 2>&1"]),
        "commit": format!("{}{}", first_line("git", &["rev-parse", "--short", "HEAD"]), if dirty { " (with uncommitted changes)" } else { "" }),
        "build": if exe.components().any(|c| c.as_os_str() == "release") { "release" } else { "debug" },
        "store": "SQLite (WAL, synchronous = full) unless FIREDRILL_TEST_BACKEND=postgres",
        "date": humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string(),
    })
}

/// A number for a table: thousands separated when large, 3 significant
/// digits when small.
fn num(x: f64) -> String {
    if x.abs() >= 1000.0 {
        let s = format!("{:.0}", x);
        let (sign, digits) = s.strip_prefix('-').map_or(("", s.as_str()), |d| ("-", d));
        let mut out = String::new();
        for (i, c) in digits.chars().enumerate() {
            if i > 0 && (digits.len() - i) % 3 == 0 {
                out.push(',');
            }
            out.push(c);
        }
        format!("{sign}{out}")
    } else if x.abs() >= 100.0 {
        format!("{x:.0}")
    } else if x.abs() >= 10.0 {
        format!("{x:.1}")
    } else {
        format!("{x:.3}")
    }
}

/// `(goal text, standing)` of measure `m`.
fn standing(m: &Value, smoke: bool) -> (String, String) {
    let Some(goal) = m.get("goal").filter(|g| !g.is_null()) else {
        return ("—".into(), "—".into());
    };
    let stat = goal["stat"].as_str().unwrap_or("median");
    let op = goal["op"].as_str().unwrap_or("<=");
    let value = goal["value"].as_f64().unwrap_or(f64::NAN);
    let actual = m[if stat == "p99" { "p99" } else { "median" }]
        .as_f64()
        .unwrap_or(f64::NAN);
    let text = format!(
        "{stat} {op} {} {}",
        num(value),
        m["unit"].as_str().unwrap_or("")
    );
    if smoke {
        return (text, "not judged (smoke)".into());
    }
    let met = if op == "<=" {
        actual <= value
    } else {
        actual >= value
    };
    (
        text,
        if met {
            "**met**".into()
        } else {
            "**not met**".into()
        },
    )
}

fn main() {
    let smoke = bench::smoke();
    let dir = out_dir();
    let mut benches = Vec::new();
    let mut problems = Vec::new();
    for name in SUITE {
        let path = dir.join(format!("{name}.json"));
        let Some(doc) = std::fs::read_to_string(&path)
            .ok()
            .and_then(|t| serde_json::from_str::<Value>(&t).ok())
        else {
            problems.push(format!(
                "{}: missing or unreadable (did `--bench {name}` run?)",
                path.display()
            ));
            continue;
        };
        let measures = doc["measures"].as_array().cloned().unwrap_or_default();
        if measures.is_empty() {
            problems.push(format!("{name}: no measures"));
        }
        for m in &measures {
            for stat in ["median", "p99"] {
                if !m[stat].as_f64().is_some_and(|v| v.is_finite() && v >= 0.0) {
                    problems.push(format!(
                        "{name}: {} has no valid {stat}: {}",
                        m["id"], m[stat]
                    ));
                }
            }
        }
        if doc["smoke"].as_bool() != Some(smoke) {
            problems.push(format!(
                "{name}: left by an earlier {} run",
                if smoke { "full" } else { "smoke" }
            ));
        }
        benches.push(doc);
    }
    let machine = machine();
    let results = json!({"machine": machine, "smoke": smoke, "benches": benches});
    std::fs::write(
        dir.join("results.json"),
        serde_json::to_string_pretty(&results).unwrap_or_default(),
    )
    .expect("write results.json");

    let mut md = String::new();
    let _ = writeln!(
        md,
        "# firedrill benchmark summary{}\n",
        if smoke {
            " (SMOKE: tiny sizes, debug build; the numbers mean nothing)"
        } else {
            ""
        }
    );
    let _ = writeln!(
        md,
        "Produced by `scripts/bench`; raw results in `target/bench/results.json`.\n"
    );
    let _ = writeln!(md, "Machine:\n");
    if let Some(obj) = machine.as_object() {
        for (k, v) in obj {
            let v = match v {
                Value::String(s) => s.clone(),
                Value::Number(n) => match n.as_u64() {
                    Some(i) => i.to_string(),
                    None => n.as_f64().map(|x| format!("{x:.1}")).unwrap_or_default(),
                },
                other => other.to_string(),
            };
            let _ = writeln!(md, "- {k}: {v}");
        }
    }
    let _ = writeln!(
        md,
        "\n| figure | median | p99 | unit | n | goal | standing | command |"
    );
    let _ = writeln!(md, "|---|---|---|---|---|---|---|---|");
    for doc in &benches {
        for m in doc["measures"].as_array().into_iter().flatten() {
            let (goal, stand) = standing(m, smoke);
            let _ = writeln!(
                md,
                "| {} | {} | {} | {} | {} | {goal} | {stand} | `{}` |",
                m["title"].as_str().unwrap_or(""),
                num(m["median"].as_f64().unwrap_or(f64::NAN)),
                num(m["p99"].as_f64().unwrap_or(f64::NAN)),
                m["unit"].as_str().unwrap_or(""),
                m["samples"],
                doc["command"].as_str().unwrap_or(""),
            );
        }
    }
    let _ = writeln!(
        md,
        "\nFor rates (runs/s, records/s, ×) the median is over rounds and \"p99\" is the worst round; for times it is over every sample. Details per figure (latencies, settings, raw rounds) are in results.json."
    );
    std::fs::write(dir.join("summary.md"), &md).expect("write summary.md");
    print!("{md}");
    assert!(
        problems.is_empty(),
        "the suite is incomplete:\n{}",
        problems.join("\n")
    );
}
