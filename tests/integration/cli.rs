//! The `firedrill` binary as a process: kernel inspect, publish and list,
//! validate and run, exit codes, kill -9, two processes on one home, the
//! inventory check, the switch and tokens.

use std::process::{Command, Output};

use firedrill_tests::guest;

fn firedrill(home: &std::path::Path, args: &[&str]) -> Output {
    Command::new(firedrill_tests::firedrill_bin())
        .arg("--home")
        .arg(home)
        .args(args)
        .output()
        .expect("run firedrill")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn inspect_prints_each_example_manifest() {
    let home = tempfile::tempdir().expect("tempdir");
    for (package, pattern) in [
        ("service-status", "observe  systemctl is-active -- *"),
        ("restart-service", "change   systemctl restart -- *"),
        ("disk-usage", "observe  df -P -k -- *"),
    ] {
        let file = guest(package);
        let out = firedrill(
            home.path(),
            &["kernel", "inspect", file.to_str().expect("utf8")],
        );
        assert!(out.status.success(), "{}", stderr(&out));
        let text = stdout(&out);
        assert!(text.starts_with(&format!("{package}@1.0.0\n")), "{text}");
        assert!(text.contains("digest       sha256:"), "{text}");
        assert!(text.contains(pattern), "{text}");
        assert!(text.contains("memory 67108864 B"), "{text}");

        let out = firedrill(
            home.path(),
            &["kernel", "inspect", "--json", file.to_str().expect("utf8")],
        );
        assert!(out.status.success(), "{}", stderr(&out));
        let json: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
        assert_eq!(json["name"], package);
        assert_eq!(json["manifest"]["input-schema"]["type"], "object");
        assert_eq!(json["limits"]["host-calls"], 1000);
    }
}

#[test]
fn publish_then_list_and_refuse_garbage() {
    let home = tempfile::tempdir().expect("tempdir");
    let file = guest("restart-service");
    let file = file.to_str().expect("utf8");
    let out = firedrill(home.path(), &["kernel", "publish", file]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stdout(&out).starts_with("published restart-service@1.0.0 (sha256:"));
    let out = firedrill(home.path(), &["kernel", "publish", file]);
    assert!(out.status.success());
    assert!(
        stdout(&out).contains("already published"),
        "{}",
        stdout(&out)
    );

    let out = firedrill(home.path(), &["kernel", "list", "--json"]);
    let list: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(list.as_array().expect("array").len(), 1);
    assert_eq!(list[0]["name"], "restart-service");

    let junk = home.path().join("junk.wasm");
    std::fs::write(&junk, b"not wasm").expect("write");
    let out = firedrill(
        home.path(),
        &["kernel", "inspect", junk.to_str().expect("utf8")],
    );
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("is not a usable kernel"),
        "{}",
        stderr(&out)
    );
    let out = firedrill(home.path(), &["kernel", "inspect", "/no/such/file.wasm"]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("cannot read kernel component"),
        "{}",
        stderr(&out)
    );
}

/// A home with an inventory (local target `box`) and the hostile and example
/// kernels published through the CLI.
fn home_with_kernels() -> tempfile::TempDir {
    let home = tempfile::tempdir().expect("tempdir");
    std::fs::write(
        home.path().join("inventory.yaml"),
        "targets:\n  box:\n    transport: local\n",
    )
    .expect("inventory");
    for package in ["test-kernel-hostile", "disk-usage"] {
        let out = firedrill(
            home.path(),
            &["kernel", "publish", guest(package).to_str().expect("utf8")],
        );
        assert!(out.status.success(), "{}", stderr(&out));
    }
    home
}

fn write_runbook(dir: &std::path::Path, steps: &str) -> String {
    let path = dir.join("rb.yaml");
    std::fs::write(
        &path,
        format!("apiVersion: firedrill/v1\nname: cli-test\nversion: 1\nsteps:\n{steps}"),
    )
    .expect("write runbook");
    path.display().to_string()
}

#[test]
fn validate_lists_every_problem_and_exits_2_and_run_refuses() {
    let home = home_with_kernels();
    let rb = write_runbook(
        home.path(),
        "  - id: a\n    kernel: nope@1.0.0\n    targets: [box]\n  - id: a\n    kernel: disk-usage@1.0.0\n    targets: []\n",
    );
    let out = firedrill(home.path(), &["runbook", "validate", &rb]);
    assert_eq!(out.status.code(), Some(2));
    let err = stderr(&out);
    assert!(err.contains("has 3 problems"), "{err}");
    assert!(
        err.contains("rb.yaml:6:5: steps[0].kernel: kernel nope@1.0.0 is not published"),
        "{err}"
    );
    assert!(
        err.contains("rb.yaml:8:5: steps[1].id: duplicate step id `a`"),
        "{err}"
    );
    assert!(
        err.contains("rb.yaml:10:5: steps[1].targets: no targets"),
        "{err}"
    );

    let out = firedrill(home.path(), &["run", &rb, "--live"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("nothing was run"), "{}", stderr(&out));
    let out = firedrill(home.path(), &["runs", "list", "--json"]);
    assert_eq!(
        serde_json::from_slice::<serde_json::Value>(&out.stdout).expect("json"),
        serde_json::json!([])
    );
}

#[test]
fn run_json_is_stable_and_the_exit_code_follows_the_run() {
    let home = home_with_kernels();
    let marker = home.path().join("touched");
    let rb = write_runbook(
        home.path(),
        &format!(
            "  - id: change\n    kernel: hostile@0.1.0\n    targets: [box]\n    with: {{ behaviour: change, path: {} }}\n",
            marker.display()
        ),
    );
    let out = firedrill(home.path(), &["--actor", "alice", "run", &rb, "--json"]);
    assert!(out.status.success(), "{}", stderr(&out));
    // JSON lines: each step's start and end as it happens, then the report.
    let lines: Vec<serde_json::Value> = stdout(&out)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    let events: Vec<&str> = lines
        .iter()
        .map(|l| l["event"].as_str().expect("event"))
        .collect();
    assert_eq!(events, ["step-started", "step-finished", "finished"]);
    assert_eq!(lines[1]["step"], "change");
    assert_eq!(lines[1]["status"], "succeeded");
    let run = lines.last().expect("report").clone();
    assert_eq!(lines[0]["run_id"], run["run_id"]);
    for key in [
        "run_id",
        "runbook",
        "runbook_version",
        "runbook_digest",
        "draft",
        "mode",
        "actor",
        "status",
        "steps",
        "planned_changes",
        "kernels",
    ] {
        assert!(run.get(key).is_some(), "missing {key} in {run}");
    }
    assert_eq!(run["mode"], "dry-run");
    assert_eq!(run["actor"], "user:alice");
    assert_eq!(run["status"], "succeeded");
    assert_eq!(
        run["planned_changes"][0]["command"],
        format!("touch {}", marker.display())
    );
    assert_eq!(run["steps"][0]["host_calls"][0]["simulated"], true);
    assert!(!marker.exists());

    let out = firedrill(home.path(), &["run", &rb]);
    let text = stdout(&out);
    assert!(text.contains(">> PLANNED CHANGE"), "{text}");
    // Progress on standard error: the run id, then each step.
    let progress = stderr(&out);
    assert!(
        progress.contains("run ") && progress.contains("started (dry-run)"),
        "{progress}"
    );
    assert!(
        progress.contains("-> step change started (hostile@0.1.0)"),
        "{progress}"
    );
    assert!(
        progress.contains("<- step change succeeded in"),
        "{progress}"
    );
    assert!(
        text.contains("plan: 1 change would be made; nothing was changed"),
        "{text}"
    );

    let out = firedrill(home.path(), &["run", &rb, "--live", "--force-untested"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stdout(&out).contains(">> CHANGED"), "{}", stdout(&out));
    assert!(marker.exists());

    let failing = write_runbook(
        home.path(),
        "  - id: f\n    kernel: hostile@0.1.0\n    targets: [box]\n    with: { behaviour: fail }\n",
    );
    let out = firedrill(
        home.path(),
        &["run", &failing, "--live", "--force-untested"],
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(stdout(&out).contains("FAILED"), "{}", stdout(&out));

    let out = firedrill(
        home.path(),
        &["audit", "list", "--actor", "alice", "--json"],
    );
    let records: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert!(
        records
            .as_array()
            .expect("array")
            .iter()
            .all(|r| r["actor_id"] == "alice")
    );
    assert!(
        records
            .as_array()
            .expect("array")
            .iter()
            .any(|r| r["action"] == "run.started")
    );
    let out = firedrill(
        home.path(),
        &["runs", "show", run["run_id"].as_str().expect("id")],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stdout(&out).contains("audit trail:"), "{}", stdout(&out));
}

#[test]
fn kill_9_during_a_live_run_leaves_a_store_that_opens_and_a_chain_that_verifies() {
    let home = home_with_kernels();
    let marker = home.path().join("first-step-done");
    let rb = write_runbook(
        home.path(),
        &format!(
            "  - id: first\n    kernel: hostile@0.1.0\n    targets: [box]\n    with: {{ behaviour: change, path: {} }}\n  - id: slow\n    kernel: hostile@0.1.0\n    targets: [box]\n    with: {{ behaviour: slow-exec }}\n",
            marker.display()
        ),
    );
    let mut child = Command::new(firedrill_tests::firedrill_bin())
        .arg("--home")
        .arg(home.path())
        .args(["run", &rb, "--live", "--force-untested"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("start run");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while !marker.exists() {
        assert!(std::time::Instant::now() < deadline, "first step never ran");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    // Let the second step start its 30 s command, then kill without warning.
    std::thread::sleep(std::time::Duration::from_millis(500));
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(i32::try_from(child.id()).expect("pid")),
        nix::sys::signal::Signal::SIGKILL,
    )
    .expect("kill -9");
    let _ = child.wait();

    let out = firedrill(home.path(), &["audit", "verify"]);
    assert!(out.status.success(), "{}{}", stdout(&out), stderr(&out));
    assert!(
        stdout(&out).starts_with("audit chain OK"),
        "{}",
        stdout(&out)
    );
    let out = firedrill(home.path(), &["runs", "list", "--json"]);
    let runs: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(runs.as_array().expect("array").len(), 1);
    assert_ne!(runs[0]["status"], "succeeded");
    // What was acknowledged before the kill is there: the first step's change.
    let out = firedrill(
        home.path(),
        &[
            "runs",
            "show",
            runs[0]["run_id"].as_str().expect("id"),
            "--json",
        ],
    );
    let run: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(run["steps"][0]["status"], "succeeded");
    assert_eq!(run["steps"][0]["host_calls"][0]["simulated"], false);
    // The store keeps working.
    let ok = write_runbook(
        home.path(),
        "  - id: d\n    kernel: disk-usage@1.0.0\n    targets: [box]\n",
    );
    let out = firedrill(home.path(), &["run", &ok]);
    assert!(out.status.success(), "{}", stderr(&out));
}

#[test]
fn two_processes_writing_one_home_keep_one_intact_chain() {
    let home = home_with_kernels();
    let rb = write_runbook(
        home.path(),
        "  - id: d\n    kernel: disk-usage@1.0.0\n    targets: [box]\n",
    );
    let children: Vec<_> = (0..6)
        .map(|_| {
            Command::new(firedrill_tests::firedrill_bin())
                .arg("--home")
                .arg(home.path())
                .args(["run", &rb])
                .stdout(std::process::Stdio::null())
                .spawn()
                .expect("start")
        })
        .collect();
    for mut c in children {
        assert!(c.wait().expect("wait").success());
    }
    let out = firedrill(home.path(), &["audit", "verify", "--json"]);
    assert!(out.status.success(), "{}", stdout(&out));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(v["first_bad"], serde_json::Value::Null);
    let out = firedrill(
        home.path(),
        &["runs", "list", "--status", "succeeded", "--json"],
    );
    let runs: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(runs.as_array().expect("array").len(), 6);
}

#[test]
fn inventory_check_validates_and_probes() {
    let home = tempfile::tempdir().expect("tempdir");
    std::fs::write(
        home.path().join("inventory.yaml"),
        "targets:\n  box: { transport: local }\n  jail: { transport: local, workdir: /definitely/not/here }\ngroups:\n  all: [box, jail]\n",
    )
    .expect("inventory");
    let out = firedrill(home.path(), &["inventory", "check"]);
    assert!(out.status.success(), "{}", stdout(&out));
    assert!(
        stdout(&out).contains("2 targets, 1 groups"),
        "{}",
        stdout(&out)
    );

    let out = firedrill(home.path(), &["inventory", "check", "--probe", "--json"]);
    assert_eq!(
        out.status.code(),
        Some(1),
        "an unreachable target fails the check"
    );
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(
        report["probes"][0],
        serde_json::json!({"target": "box", "reachable": true, "detail": "reachable"})
    );
    assert_eq!(report["probes"][1]["reachable"], false);

    std::fs::write(
        home.path().join("inventory.yaml"),
        "targets:\n  box: { transport: local }\ngroups:\n  webs: [box, ghost]\n",
    )
    .expect("inventory");
    let out = firedrill(home.path(), &["inventory", "check"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stdout(&out).contains("group \"webs\" names \"ghost\", which is not a target"),
        "{}",
        stdout(&out)
    );

    std::fs::write(
        home.path().join("inventory.yaml"),
        "targets:\n  box: { transport: telnet }\n",
    )
    .expect("inventory");
    let out = firedrill(home.path(), &["inventory", "check"]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("telnet"), "{}", stderr(&out));
}

#[test]
fn inventory_check_probes_ssh_targets_and_shows_the_key_to_pin() {
    use firedrill::transport::{Inventory, TargetSpec};
    let sshd = firedrill_tests::sshd::Sshd::start();
    let home = tempfile::tempdir().expect("tempdir");
    let mut inventory = Inventory::default();
    inventory.targets.insert("pinned".into(), sshd.spec());
    let mut unpinned = sshd.target();
    unpinned.host_key = None;
    inventory
        .targets
        .insert("unpinned".into(), TargetSpec::Ssh(unpinned));
    std::fs::write(
        home.path().join("inventory.yaml"),
        serde_json::to_string(&inventory).expect("json"),
    )
    .expect("inventory");

    let out = firedrill(home.path(), &["inventory", "check"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stdout(&out).contains("target \"unpinned\" (ssh): no host-key is pinned"),
        "{}",
        stdout(&out)
    );

    let out = firedrill(home.path(), &["inventory", "check", "--probe", "--json"]);
    assert_eq!(out.status.code(), Some(1));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    let probes = report["probes"].as_array().expect("probes");
    assert_eq!(probes[0]["target"], "pinned");
    assert_eq!(probes[0]["reachable"], true, "{}", probes[0]);
    assert_eq!(probes[1]["reachable"], false);
    // The refusal shows the presented key, ready to verify and pin.
    let blob = sshd.host_key_line();
    let blob = blob.split_whitespace().nth(1).expect("blob");
    assert!(
        probes[1]["detail"]
            .as_str()
            .is_some_and(|d| d.contains(blob)),
        "{}",
        probes[1]
    );
    assert_eq!(sshd.logins(), 1, "only the pinned target authenticated");
}

#[test]
fn ssh_agent_auth_is_used_when_the_inventory_says_agent() {
    use firedrill::transport::{Inventory, SshAuth, TargetSpec};
    let sshd = firedrill_tests::sshd::Sshd::start();
    let agent = firedrill_tests::sshd::Agent::start(&[&sshd.client_key()]);
    let home = tempfile::tempdir().expect("tempdir");
    let mut target = sshd.target();
    target.auth = SshAuth::Agent;
    let mut inventory = Inventory::default();
    inventory
        .targets
        .insert("web".into(), TargetSpec::Ssh(target));
    std::fs::write(
        home.path().join("inventory.yaml"),
        serde_json::to_string(&inventory).expect("json"),
    )
    .expect("inventory");
    let probe = |sock: &std::path::Path| {
        Command::new(firedrill_tests::firedrill_bin())
            .arg("--home")
            .arg(home.path())
            .args(["inventory", "check", "--probe"])
            .env("SSH_AUTH_SOCK", sock)
            .output()
            .expect("run firedrill")
    };
    let out = probe(&agent.socket());
    assert!(out.status.success(), "{}{}", stdout(&out), stderr(&out));
    assert!(
        stdout(&out).contains("authenticated as"),
        "{}",
        stdout(&out)
    );
    assert_eq!(sshd.logins(), 1);
    // Without an agent holding the key, authentication fails and says how.
    let out = probe(std::path::Path::new("/nonexistent/agent.sock"));
    assert_eq!(out.status.code(), Some(1));
    assert!(stdout(&out).contains("ssh-agent"), "{}", stdout(&out));
}

#[test]
fn switch_on_refuses_live_runs_until_off_and_needs_a_reason() {
    let home = home_with_kernels();
    let rb = write_runbook(
        home.path(),
        "  - id: a\n    kernel: disk-usage@1.0.0\n    targets: [box]\n    with: { path: / }\n",
    );
    let out = firedrill(home.path(), &["switch", "on", "--reason", ""]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    let out = firedrill(
        home.path(),
        &[
            "--actor",
            "alice",
            "switch",
            "on",
            "--reason",
            "db failover in progress",
        ],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let out = firedrill(home.path(), &["switch", "status"]);
    assert!(
        stdout(&out).contains("ENGAGED  the big red switch (global) was engaged by user:alice"),
        "{}",
        stdout(&out)
    );
    let out = firedrill(home.path(), &["run", &rb, "--live", "--force-untested"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("db failover in progress")
            && stderr(&out).contains("nothing was run"),
        "{}",
        stderr(&out)
    );
    let out = firedrill(home.path(), &["run", &rb]);
    assert!(
        out.status.success(),
        "dry-run still allowed: {}",
        stderr(&out)
    );
    let out = firedrill(home.path(), &["switch", "off", "--reason", "failover done"]);
    assert!(out.status.success());
    let out = firedrill(home.path(), &["run", &rb, "--live", "--force-untested"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let out = firedrill(
        home.path(),
        &["audit", "list", "--action", "switch.engaged", "--json"],
    );
    let records: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(records.as_array().expect("array").len(), 1);
}

#[test]
fn tokens_are_shown_once_and_stored_only_as_hashes() {
    let home = tempfile::tempdir().expect("tempdir");
    let out = firedrill(
        home.path(),
        &[
            "token",
            "create",
            "--name",
            "alertmanager",
            "--role",
            "webhook",
            "--owner",
            "alice",
        ],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let token = stdout(&out).trim().to_string();
    assert!(token.starts_with("fdt_") && token.len() == 47, "{token}");
    let out = firedrill(
        home.path(),
        &[
            "token",
            "create",
            "--name",
            "alertmanager",
            "--role",
            "viewer",
            "--owner",
            "alice",
        ],
    );
    assert_eq!(out.status.code(), Some(2), "a live name is unique");
    let out = firedrill(home.path(), &["token", "list", "--json"]);
    let listed = stdout(&out);
    assert!(listed.contains("\"role\": \"webhook\"") && !listed.contains(&token));
    assert!(!listed.contains("hash"), "{listed}");
    // Nowhere in the store's files.
    let mut bytes = Vec::new();
    for e in std::fs::read_dir(home.path()).expect("home").flatten() {
        if e.file_name().to_string_lossy().starts_with("firedrill.db") {
            bytes.extend(std::fs::read(e.path()).expect("read"));
        }
    }
    assert!(!String::from_utf8_lossy(&bytes).contains(&token));
    let out = firedrill(home.path(), &["token", "revoke", "alertmanager"]);
    assert!(out.status.success());
    let out = firedrill(home.path(), &["token", "list"]);
    assert!(stdout(&out).contains("revoked"), "{}", stdout(&out));
    let out = firedrill(
        home.path(),
        &["audit", "list", "--action", "token.created", "--json"],
    );
    assert!(!stdout(&out).contains(&token));
    assert!(stdout(&out).contains("alertmanager"));
}

/// A live run that waits for approval says so at once: the run id, who may
/// approve, the exact command; a second person approves (through the API:
/// at the CLI, one OS user is one person), and the first sees the run go
/// on and finish.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_waiting_for_approval_prints_its_id_and_the_command_to_approve() {
    use std::io::{BufRead, BufReader};
    firedrill_tests::firedrill_bin();
    let env = firedrill_tests::TestEnv::new().await;
    env.publish(&["apiVersion: firedrill/v1\nname: gated\nversion: 1\nsteps:\n  - id: gate\n    approval: { required: 1, timeout: 10m, reason: \"restart the primary\" }\n  - id: act\n    kernel: trivial@0.1.0\n    targets: [demo-host]\n"]).await;
    let carol = env
        .token_of("carol", firedrill::auth::Role::Approver, &[], "carol")
        .await;
    let (url, _) = env.serve(firedrill::server::ServerConfig::default()).await;
    let mut child = Command::new(firedrill_tests::firedrill_bin())
        .arg("--home")
        .arg(env.home.path())
        .args([
            "--actor",
            "alice",
            "run",
            "gated",
            "--live",
            "--force-untested",
        ])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("start the run");
    let mut err = BufReader::new(child.stderr.take().expect("stderr"));
    let (err, seen, command) = tokio::task::spawn_blocking(move || {
        let mut seen = String::new();
        loop {
            let mut line = String::new();
            let n = err.read_line(&mut line).expect("read");
            assert!(n > 0, "the run ended before it asked for approval:\n{seen}");
            seen.push_str(&line);
            if let Some(cmd) = line.trim().strip_prefix("approve: ") {
                return (err, seen, cmd.to_string());
            }
        }
    })
    .await
    .expect("reader");
    assert!(
        seen.contains("is waiting for approval at step gate"),
        "{seen}"
    );
    assert!(seen.contains("(not user:alice)"), "{seen}");
    assert!(seen.contains("reason: restart the primary"), "{seen}");
    let args: Vec<&str> = command.split_whitespace().collect();
    assert_eq!(&args[..2], ["firedrill", "approve"], "{command}");
    let run_id = args[2].to_string();
    assert!(
        seen.contains(&format!("run {run_id} started (live)")),
        "{seen}"
    );
    let approved = reqwest::Client::new()
        .post(format!("{url}/api/v1/runs/{run_id}/approve"))
        .bearer_auth(&carol)
        .json(&serde_json::json!({"comment": "go"}))
        .send()
        .await
        .expect("approve");
    assert!(
        approved.status().is_success(),
        "{:?}",
        approved.text().await
    );
    let (rest, out) = tokio::task::spawn_blocking(move || {
        let rest: String = err
            .lines()
            .map_while(Result::ok)
            .collect::<Vec<_>>()
            .join("\n");
        (rest, child.wait_with_output().expect("wait"))
    })
    .await
    .expect("wait");
    assert!(out.status.success(), "{seen}{rest}");
    assert!(rest.contains("<- step act succeeded"), "{rest}");
    assert!(stdout(&out).contains(&run_id), "{}", stdout(&out));
}
