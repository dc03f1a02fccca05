//! docs/guide.md, run as written: every `sh` block, in order, in one
//! shell (`set -euo pipefail`), in an empty directory, with the binary of
//! this build on `PATH` and `FIREDRILL_SRC` naming this checkout. The guide
//! cannot go stale: a command that stops working fails this test.

use std::process::Command;

use firedrill_tests::{firedrill_bin, output_text, reuse_language_tools, workspace_root};

/// The `sh` blocks of a Markdown text, in order.
fn sh_blocks(markdown: &str) -> Vec<String> {
    let mut blocks = Vec::new();
    let mut current: Option<String> = None;
    for line in markdown.lines() {
        match (&mut current, line.trim_end()) {
            (None, "```sh") => current = Some(String::new()),
            (Some(block), "```") => {
                blocks.push(std::mem::take(block));
                current = None;
            }
            (Some(block), _) => {
                block.push_str(line);
                block.push('\n');
            }
            (None, _) => {}
        }
    }
    assert!(current.is_none(), "an sh block is not closed");
    blocks
}

#[test]
fn the_guide_runs_as_written_from_an_empty_home_to_a_live_run() {
    let root = workspace_root();
    let guide = std::fs::read_to_string(root.join("docs/guide.md")).expect("docs/guide.md");
    let blocks = sh_blocks(&guide);
    let script = blocks.join("\n");
    // The path the issue asks for, step by step: if one is edited out of
    // the guide, this says which.
    for step in [
        "inventory check",
        "kernel new",
        "test.sh",
        "kernel publish",
        "runbook validate",
        "runbook publish",
        "drill run",
        "firedrill run restart-web --input",
        "firedrill run restart-web --live",
        "audit verify",
    ] {
        assert!(script.contains(step), "the guide no longer runs `{step}`");
    }

    let dir = tempfile::tempdir().expect("tempdir");
    let bin_dir = firedrill_bin().parent().expect("bin dir").to_path_buf();
    let path = format!(
        "{}:{}",
        bin_dir.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let mut cmd = Command::new("bash");
    cmd.arg("-c")
        .arg(format!("set -euo pipefail\nset -x\n{script}"))
        .current_dir(dir.path())
        .env("PATH", path)
        .env("FIREDRILL_SRC", &root)
        .env_remove("FIREDRILL_HOME")
        .env_remove("FIREDRILL_ACTOR")
        .env_remove("FIREDRILL_DATABASE")
        .env_remove("FIREDRILL_DEMO_DIR");
    // The kernel's build reuses the other scaffold tests' target directory.
    reuse_language_tools(dir.path(), &mut cmd);
    let out = cmd.output().expect("bash");
    // Whatever happened, the guide's service must not outlive the test.
    let _ = Command::new(root.join("runbooks/demo/bin/systemctl"))
        .args(["stop", "--", "web"])
        .env("FIREDRILL_DEMO_DIR", dir.path().join("demo-state"))
        .output();
    let log = output_text(&out);
    assert!(out.status.success(), "the guide failed:\n{log}");
    // Followed as written, nothing in it draws a warning.
    assert!(!log.contains(" WARN "), "the guide draws a warning:\n{log}");
    // What the guide says the reader will see.
    assert!(log.contains("all kernel tests passed"), "{log}");
    assert!(log.contains("published restart-unit@0.1.0"), "{log}");
    assert!(log.contains(">> PLANNED CHANGE"), "{log}");
    assert!(log.contains("LIVE RUN restart-web@1"), "{log}");
    assert!(log.contains(">> CHANGED"), "{log}");
    assert!(log.contains("audit chain OK"), "{log}");
}
