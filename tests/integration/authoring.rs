//! The author's path, as a new user follows it in the guide: `firedrill
//! kernel new` in each language, `./test.sh` (build, then `firedrill kernel
//! test` scenarios), `firedrill kernel publish`; and `kernel test`'s verdicts.

use std::path::Path;
use std::process::{Command, Output};

use firedrill_tests::{firedrill_bin, foreign_kernel, reuse_language_tools, workspace_root};

fn firedrill(home: &Path, args: &[&str]) -> Output {
    firedrill_tests::run_firedrill(home, args)
}

fn text(out: &Output) -> String {
    firedrill_tests::output_text(out)
}

#[test]
fn scaffolded_kernels_build_test_and_publish_in_every_language() {
    // The language tools the example kernels installed (the same pinned
    // versions) are reused, so that this test downloads nothing more.
    foreign_kernel("log-rotate-py");
    let root = workspace_root();
    let tmp = tempfile::tempdir().expect("tmp");
    let home = tmp.path().join("home");
    for lang in ["rust", "python", "js"] {
        let name = format!("restart-{lang}");
        let dir = tmp.path().join(&name);
        let out = firedrill(
            &home,
            &[
                "kernel",
                "new",
                &name,
                "--lang",
                lang,
                "--dir",
                dir.to_str().expect("utf8"),
            ],
        );
        assert!(out.status.success(), "{lang}: {}", text(&out));
        let mut test = Command::new(dir.join("test.sh"));
        test.env("FIREDRILL", firedrill_bin())
            .env("FIREDRILL_HOME", &home);
        reuse_language_tools(&dir, &mut test);
        let out = test.output().expect("run test.sh");
        let log = text(&out);
        assert!(out.status.success(), "{lang}: test.sh failed:\n{log}");
        assert!(log.contains("all kernel tests passed"), "{lang}: {log}");
        // Three scenarios passed, and the live one really changed nothing.
        assert_eq!(log.matches("\nPASSED").count(), 3, "{lang}: {log}");
        assert!(log.contains(">> PLANNED CHANGE"), "{lang}: {log}");

        let wasm = dir.join(format!("{name}.wasm"));
        let out = firedrill(&home, &["kernel", "publish", wasm.to_str().expect("utf8")]);
        assert!(out.status.success(), "{lang}: {}", text(&out));
        assert!(
            text(&out).contains(&format!("published {name}@0.1.0")),
            "{}",
            text(&out)
        );
    }
    let out = firedrill(&home, &["kernel", "list"]);
    for lang in ["rust", "python", "js"] {
        assert!(
            text(&out).contains(&format!("restart-{lang}")),
            "{}",
            text(&out)
        );
    }
    // The Rust scaffold's own unit tests (the SDK's mock host) pass too.
    let out = firedrill_tests::cargo()
        .arg("test")
        .current_dir(tmp.path().join("restart-rust"))
        .env("CARGO_TARGET_DIR", root.join("target/scaffold"))
        .output()
        .expect("cargo test");
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("2 passed"), "{}", text(&out));
}

#[test]
fn kernel_test_reports_calls_and_fails_on_unscripted_calls_and_wrong_output() {
    let wasm = foreign_kernel("log-rotate-py");
    let wasm = wasm.to_str().expect("utf8");
    let tmp = tempfile::tempdir().expect("tmp");
    let home = tmp.path();
    let df = "df -P *=>0,Filesystem 1024-blocks Used Available Capacity Mounted on\\n/dev/vda 100 95 5 95% /var/log";
    let du =
        "du -a -k *=>0,900\\t/var/log/big.log\\n10\\t/var/log/small.log\\n5000\\t/var/log/data.bin";
    let input = r#"{"path": "/var/log", "max_use_percent": 90}"#;

    // Dry-run: df and du observed, the truncate of the largest .log planned.
    let out = firedrill(
        home,
        &[
            "kernel",
            "test",
            wasm,
            "--input-json",
            input,
            "--mock-exec",
            df,
            "--mock-exec",
            du,
            "--expect",
            r#"{"action": "truncated", "freed_kb": 0}"#,
        ],
    );
    let log = text(&out);
    assert!(out.status.success(), "{log}");
    assert!(
        log.contains("observe        test-target  df -P /var/log"),
        "{log}"
    );
    assert!(
        log.contains(">> PLANNED CHANGE test-target  truncate -s 0 /var/log/big.log"),
        "{log}"
    );
    assert!(
        !log.contains("data.bin  ->"),
        "only .log files are truncated: {log}"
    );

    // Live without an answer for truncate: the call fails, and so does the test.
    let out = firedrill(
        home,
        &[
            "kernel",
            "test",
            wasm,
            "--mode",
            "live",
            "--input-json",
            input,
            "--mock-exec",
            df,
            "--mock-exec",
            du,
        ],
    );
    let log = text(&out);
    assert_eq!(out.status.code(), Some(1), "{log}");
    assert!(
        log.contains("FAIL every command and request has a scripted answer"),
        "{log}"
    );
    assert!(
        log.contains("--mock-exec 'truncate -s 0 /var/log/big.log=>0,OUTPUT'"),
        "{log}"
    );

    // An output that differs from --expect fails; so does a bad input.
    let out = firedrill(
        home,
        &[
            "kernel",
            "test",
            wasm,
            "--input-json",
            input,
            "--mock-exec",
            df,
            "--mock-exec",
            du,
            "--expect",
            r#"{"action": "none"}"#,
            "--json",
        ],
    );
    assert_eq!(out.status.code(), Some(1));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(report["ok"], serde_json::json!(false));
    // df, du, and a planned truncate for each of the two .log files.
    assert_eq!(
        report["report"]["host_calls"].as_array().map(Vec::len),
        Some(4)
    );
    let out = firedrill(
        home,
        &["kernel", "test", wasm, "--input-json", r#"{"path": 7}"#],
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out).contains("FAIL input satisfies the input schema"),
        "{}",
        text(&out)
    );

    // A malformed mock is refused before anything runs.
    let out = firedrill(home, &["kernel", "test", wasm, "--mock-exec", "df -P *"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(
        text(&out).contains("PATTERN=>EXIT,STDOUT"),
        "{}",
        text(&out)
    );
}
