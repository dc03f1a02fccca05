//! The CLI's conventions, through the binary: `--json` answers carry the
//! API's field names for the same resource, completions and man pages come
//! from the command tree, colour only on a terminal and never with
//! `NO_COLOR`, tables keep their columns with long actors.

use std::path::Path;
use std::process::{Command, Output};

use firedrill::auth::Role;
use firedrill_tests::{TestEnv, api_call, output_text, run_firedrill};
use serde_json::{Value, json};

const RUNBOOK: &str = "apiVersion: firedrill/v1\nname: conv\nversion: 1\ninputs: { type: object, properties: { unit: { type: string } } }\nsteps:\n  - id: restart\n    kernel: restart-service@1.0.0\n    targets: [demo-host]\n    with: { unit: \"{{ inputs.unit }}\" }\n";

/// RUNBOOK written into `home`; its path.
fn runbook_file(home: &Path) -> String {
    let file = home.join("conv.yaml");
    std::fs::write(&file, RUNBOOK).expect("runbook");
    file.to_str().expect("utf8").to_string()
}

fn ok(out: &Output) -> String {
    assert!(out.status.success(), "{}", output_text(out));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn json_of(out: &Output) -> Value {
    let text = ok(out);
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
}

fn keys(v: &Value) -> Vec<String> {
    let mut k: Vec<String> = v
        .as_object()
        .unwrap_or_else(|| panic!("not an object: {v}"))
        .keys()
        .cloned()
        .collect();
    k.sort();
    k
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_answers_carry_the_apis_field_names_and_a_run_is_named_alike_in_lists_and_views() {
    let env = TestEnv::new().await;
    let home = env.home.path();
    let admin = env.token("conv-admin", Role::Admin, &[]).await;
    let (base, _state) = env.serve(firedrill::server::ServerConfig::default()).await;
    let http = reqwest::Client::new();
    let api = |method: &'static str, path: String, body: Option<Value>| {
        let (http, base, admin) = (http.clone(), base.clone(), admin.clone());
        async move { api_call(&http, &base, method, &path, Some(&admin), body).await }
    };
    let file = runbook_file(home);
    let file = file.as_str();

    // Publish: the CLI's answer and the API's, for the same content.
    let cli = json_of(&run_firedrill(
        home,
        &["runbook", "publish", file, "--json"],
    ));
    assert_eq!(cli["published"], true, "{cli}");
    let (status, served) = api(
        "POST",
        "/api/v1/runbooks".into(),
        Some(json!({"source": RUNBOOK})),
    )
    .await;
    assert_eq!(status, 200, "{served}");
    assert_eq!(served["published"], false, "{served}");
    assert_eq!(keys(&cli), keys(&served));
    assert_eq!(
        (&cli["name"], &cli["digest"]),
        (&served["name"], &served["digest"])
    );

    // A published runbook: the same view, value for value.
    let cli = json_of(&run_firedrill(home, &["runbook", "show", "conv", "--json"]));
    let (_, served) = api("GET", "/api/v1/runbooks/conv".into(), None).await;
    assert_eq!(cli, served);

    // A run: the list entry and the run view name every field alike, in
    // the CLI and in the API.
    let out = run_firedrill(home, &["run", "conv", "-i", "unit=web", "--json"]);
    assert!(out.status.success(), "{}", output_text(&out));
    let cli_list = json_of(&run_firedrill(home, &["runs", "list", "--json"]));
    let (_, served_list) = api("GET", "/api/v1/runs".into(), None).await;
    let entry = &cli_list[0];
    assert_eq!(
        entry, &served_list["runs"][0],
        "the CLI's list entry is the API's"
    );
    let id = entry["run_id"].as_str().expect("a run_id in the list");
    assert!(
        entry.get("id").is_none(),
        "one name for the run's id: {entry}"
    );
    let mut view = json_of(&run_firedrill(home, &["runs", "show", id, "--json"]));
    let (_, served_view) = api("GET", format!("/api/v1/runs/{id}"), None).await;
    assert!(
        view["audit"].as_array().is_some_and(|a| !a.is_empty()),
        "runs show adds the audit trail"
    );
    view.as_object_mut().expect("object").remove("audit");
    assert_eq!(view, served_view, "the CLI's run view is the API's");
    for (key, value) in entry.as_object().expect("object") {
        assert_eq!(&view[key], value, "{key}: the list and the view disagree");
    }

    // Switch, token create and revoke: the API's field names.
    let cli = json_of(&run_firedrill(
        home,
        &[
            "switch",
            "on",
            "--runbook",
            "conv",
            "--reason",
            "drill",
            "--json",
        ],
    ));
    assert_eq!(cli["engaged"], true, "{cli}");
    let (status, served) = api(
        "PUT",
        "/api/v1/switch".into(),
        Some(json!({"engaged": false, "runbook": "conv", "reason": "done"})),
    )
    .await;
    assert_eq!(status, 200, "{served}");
    assert_eq!(keys(&cli), keys(&served));

    let cli = json_of(&run_firedrill(
        home,
        &[
            "token", "create", "--name", "by-cli", "--role", "viewer", "--owner", "admin", "--json",
        ],
    ));
    assert!(cli["token"].as_str().is_some_and(|t| t.len() > 20), "{cli}");
    let (status, served) = api(
        "POST",
        "/api/v1/tokens".into(),
        Some(json!({"name": "by-api", "role": "viewer"})),
    )
    .await;
    assert_eq!(status, 201, "{served}");
    assert_eq!(keys(&cli), keys(&served));
    let cli = json_of(&run_firedrill(
        home,
        &["token", "revoke", "by-cli", "--json"],
    ));
    let (_, served) = api("DELETE", "/api/v1/tokens/by-api".into(), None).await;
    assert_eq!(keys(&cli), keys(&served));
    assert_eq!(cli["revoked"], "by-cli");

    // An action's --json is one JSON value on stdout, nothing else.
    let out = run_firedrill(
        home,
        &["trigger", "reset", "conv", "--reason", "r", "--json"],
    );
    assert_eq!(json_of(&out)["breaker_open"], false);
    let out = run_firedrill(home, &["audit", "key", "show", "--json"]);
    assert!(
        json_of(&out)["verifier_key"]
            .as_str()
            .is_some_and(|k| k.contains('+'))
    );
}

/// The binary with no home at all: the generated files need none.
fn bare(args: &[&str], nowhere: &Path) -> Output {
    Command::new(firedrill_tests::firedrill_bin())
        .args(args)
        .env("FIREDRILL_HOME", nowhere)
        .output()
        .expect("run firedrill")
}

#[test]
fn completions_and_man_pages_come_from_the_command_tree_and_need_no_home() {
    let dir = tempfile::tempdir().expect("tempdir");
    let nowhere = dir.path().join("no-home");
    let bash = ok(&bare(&["completion", "bash"], &nowhere));
    assert!(
        bash.contains("firedrill__subcmd__runs__subcmd__list") && bash.contains("--accept-loss"),
        "{bash}"
    );
    let script = dir.path().join("firedrill.bash");
    std::fs::write(&script, &bash).expect("write");
    let checked = Command::new("bash")
        .arg("-n")
        .arg(&script)
        .output()
        .expect("bash");
    assert!(
        checked.status.success(),
        "bash -n: {}",
        output_text(&checked)
    );
    for shell in ["zsh", "fish", "elvish", "powershell"] {
        assert!(
            ok(&bare(&["completion", shell], &nowhere)).contains("restore"),
            "{shell}"
        );
    }
    let out = bare(&["completion", "tcsh"], &nowhere);
    assert_eq!(
        out.status.code(),
        Some(2),
        "an unknown shell: {}",
        output_text(&out)
    );

    let man = dir.path().join("man1");
    let said = ok(&bare(
        &["man", "--out", man.to_str().expect("utf8")],
        &nowhere,
    ));
    for page in [
        "firedrill.1",
        "firedrill-runs-list.1",
        "firedrill-restore.1",
        "firedrill-audit-key-rotate.1",
    ] {
        assert!(man.join(page).exists(), "{page} missing; {said}");
    }
    use std::os::unix::fs::PermissionsExt as _;
    for entry in std::fs::read_dir(&man).expect("man dir") {
        let path = entry.expect("entry").path();
        let mode = std::fs::metadata(&path).expect("stat").permissions().mode() & 0o777;
        assert_eq!(mode, 0o644, "{} is for everyone to read", path.display());
        // groff checks every page: every warning class on, none may fire.
        let out = Command::new("groff")
            .args(["-man", "-Tutf8", "-ww", "-z"])
            .arg(&path)
            .output()
            .expect("groff");
        assert!(
            out.status.success() && out.stderr.is_empty(),
            "{}: {}",
            path.display(),
            output_text(&out)
        );
    }
    let mode = std::fs::metadata(&man).expect("stat").permissions().mode() & 0o777;
    assert_eq!(
        mode, 0o755,
        "a man directory created by `man` is for everyone"
    );
    // A symlink planted under a page's name is replaced, not written through.
    let victim = dir.path().join("victim");
    std::fs::write(&victim, "keep me").expect("victim");
    std::fs::remove_file(man.join("firedrill-serve.1")).expect("rm");
    std::os::unix::fs::symlink(&victim, man.join("firedrill-serve.1")).expect("symlink");
    ok(&bare(
        &["man", "--out", man.to_str().expect("utf8")],
        &nowhere,
    ));
    assert_eq!(std::fs::read_to_string(&victim).expect("victim"), "keep me");
    assert!(!man.join("firedrill-serve.1").is_symlink());
    let out = Command::new("man")
        .arg("-l")
        .arg(man.join("firedrill-restore.1"))
        .env("MANPAGER", "cat")
        .env("MANWIDTH", "100")
        .output()
        .expect("man");
    let text = ok(&out);
    assert!(
        text.contains("--accept-loss") && text.contains("audit chain"),
        "{text}"
    );
    let pages = std::fs::read_dir(&man).expect("man dir").count();
    assert!(said.contains(&format!("wrote {pages} man pages")), "{said}");
    assert!(pages > 50, "a page per command: {pages}");
    assert!(!nowhere.exists(), "no home is created for generated files");
}

/// `firedrill ARGS` under a pseudo-terminal (`script`), with `env`.
fn on_a_terminal(home: &Path, args: &[&str], env: &[(&str, &str)]) -> String {
    let bin = firedrill_tests::firedrill_bin();
    let line = std::iter::once(bin.to_str().expect("utf8"))
        .chain(["--home", home.to_str().expect("utf8")])
        .chain(args.iter().copied())
        .map(|a| format!("'{a}'"))
        .collect::<Vec<_>>()
        .join(" ");
    let mut cmd = Command::new("script");
    cmd.args(["-q", "-e", "-c", &line, "/dev/null"])
        .env("TERM", "xterm")
        .env_remove("NO_COLOR")
        .env_remove("FIREDRILL_ACTOR");
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().expect("script");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn colour_only_on_a_terminal_and_never_with_no_color() {
    let env = TestEnv::new().await;
    let home = env.home.path();
    let file = runbook_file(home);
    let run = ["run", file.as_str(), "-i", "unit=web"];

    let tty = on_a_terminal(home, &run, &[]);
    assert!(
        tty.contains("\u{1b}[33m>> PLANNED CHANGE\u{1b}[0m"),
        "{tty:?}"
    );
    assert!(
        tty.contains("\u{1b}[32mdry-run succeeded\u{1b}[0m"),
        "{tty:?}"
    );
    let help = on_a_terminal(home, &["--help"], &[]);
    assert!(
        help.contains('\u{1b}'),
        "clap colours help on a terminal: {help:?}"
    );

    for (what, text) in [
        (
            "NO_COLOR on a terminal",
            on_a_terminal(home, &run, &[("NO_COLOR", "1")]),
        ),
        ("TERM=dumb", on_a_terminal(home, &run, &[("TERM", "dumb")])),
        (
            "help with NO_COLOR",
            on_a_terminal(home, &["--help"], &[("NO_COLOR", "1")]),
        ),
        ("a pipe", ok(&run_firedrill(home, &run))),
    ] {
        assert!(
            text.contains("PLANNED CHANGE") || text.contains("Usage"),
            "{what}: {text:?}"
        );
        assert!(!text.contains('\u{1b}'), "{what}: {text:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tables_keep_their_columns_with_long_actors() {
    let env = TestEnv::new().await;
    let home = env.home.path();
    let file = runbook_file(home);
    let file = file.as_str();
    let long = format!("a-{}", "very-long-name-".repeat(8));
    for actor in ["al", long.as_str()] {
        ok(&run_firedrill(
            home,
            &["--actor", actor, "run", file, "-i", "unit=web"],
        ));
    }
    // Where each line's column `at` (by index, counted in characters) starts.
    let column = |text: &str, header: &str, pick: &dyn Fn(&str) -> usize| -> Vec<usize> {
        let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
        let head = lines
            .iter()
            .position(|l| l.contains(header))
            .expect("header");
        lines[head..].iter().map(|l| pick(l)).collect()
    };
    let chars_to = |l: &str, needle: &str| l[..l.find(needle).expect(needle)].chars().count();

    let runs = ok(&run_firedrill(home, &["runs", "list"]));
    // STARTED is the last column: it starts after the last gap.
    let at = column(&runs, "STARTED", &|l| {
        l[..l.rfind("  ").expect("columns") + 2].chars().count()
    });
    assert_eq!(at.len(), 3, "{runs}");
    assert!(
        at.iter().all(|&a| a == at[0]),
        "the STARTED column moved:\n{runs}"
    );
    assert!(
        runs.contains('…') && !runs.contains(&long),
        "a long actor is cut:\n{runs}"
    );
    let list = json_of(&run_firedrill(home, &["runs", "list", "--json"]));
    assert!(
        list[0]["actor"].as_str().is_some_and(|a| a.contains(&long)),
        "--json keeps it whole"
    );

    let audit = ok(&run_firedrill(
        home,
        &["audit", "list", "--action", "run.started"],
    ));
    let at = column(&audit, "ACTION", &|l| {
        chars_to(
            l,
            if l.contains("ACTION") {
                "ACTION"
            } else {
                "run.started"
            },
        )
    });
    assert_eq!(at.len(), 3, "{audit}");
    assert!(
        at.iter().all(|&a| a == at[0]),
        "the ACTION column moved:\n{audit}"
    );
}

/// Root working on a home that belongs to another user (the service's
/// `/var/lib/firedrill`) is warned: files it writes there would be root's
/// alone. The owner working on its own home is not.
#[test]
fn working_on_another_users_home_draws_a_warning() {
    let dir = tempfile::tempdir().expect("tempdir");
    let home = dir.path().join("home");
    std::fs::create_dir(&home).expect("home");
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::set_permissions(&home, std::fs::Permissions::from_mode(0o700)).expect("chmod");
    let out = run_firedrill(&home, &["runbook", "list"]);
    assert!(out.status.success(), "{}", output_text(&out));
    assert!(
        !output_text(&out).contains("belongs to"),
        "{}",
        output_text(&out)
    );
    if !nix::unistd::geteuid().is_root() {
        // Only root can give the home to another user; CI runs as root.
        return;
    }
    nix::unistd::chown(&home, Some(nix::unistd::Uid::from_raw(65534)), None).expect("chown");
    let out = run_firedrill(&home, &["runbook", "list"]);
    let text = output_text(&out);
    assert!(
        text.contains("the firedrill home belongs to") && text.contains("sudo -u"),
        "{text}"
    );
}
