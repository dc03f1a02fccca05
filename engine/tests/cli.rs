//! The `firedrill` binary: kernel inspect, publish and list, and their exit codes.

use std::process::{Command, Output};

use firedrill_tests::guest;

fn firedrill(home: &std::path::Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_firedrill"))
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
