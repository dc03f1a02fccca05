//! Runbook validation: every rule gives its documented error with file, line
//! and field, every problem is listed, and an invalid runbook creates no run.

use firedrill::Mode;
use firedrill::executor::RunError;
use firedrill::store::RunFilter;
use firedrill_tests::TestEnv;

/// A valid runbook; cases replace parts of it.
const VALID: &str = r#"apiVersion: firedrill/v1
name: check-web
version: 1
inputs:
  type: object
  required: [unit]
  properties:
    unit: { type: string }
steps:
  - id: probe
    kernel: service-status@1.0.0
    targets: [demo-host]
    with: { unit: "{{ inputs.unit }}" }
  - id: restart
    kernel: restart-service@1.0.0
    when: "{{ not steps.probe.output.active }}"
    targets: [demo-host]
    with: { unit: "{{ inputs.unit }}" }
"#;

/// Validate `text` and check that each expected `(line, path, words)` problem
/// is reported (and nothing else); then check that running it creates no run.
async fn check(env: &TestEnv, text: &str, expected: &[(usize, &str, &str)]) {
    let problems = env
        .service
        .validate("rb.yaml", text)
        .await
        .expect_err("must be invalid")
        .problems;
    if std::env::var_os("DUMP_PROBLEMS").is_some() {
        for p in &problems {
            println!("  -> {:?} {:?} {}", p.line, p.path, p.message);
        }
        return;
    }
    for (line, path, words) in expected {
        assert!(
            problems
                .iter()
                .any(|p| p.line == Some(*line) && p.path == *path && p.message.contains(words)),
            "expected line {line} {path}: {words:?} in {problems:#?}"
        );
    }
    assert_eq!(problems.len(), expected.len(), "{problems:#?}");
    let before = env
        .store
        .runs(&RunFilter::default())
        .await
        .expect("runs")
        .len();
    let err = env
        .run_text(text, Mode::Live, &[("unit", "web")])
        .await
        .expect_err("an invalid runbook must not run");
    assert!(matches!(err, RunError::Invalid(_)), "{err}");
    let after = env
        .store
        .runs(&RunFilter::default())
        .await
        .expect("runs")
        .len();
    assert_eq!(before, after, "an invalid runbook created a run");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_valid_base_validates() {
    let env = TestEnv::new().await;
    let valid = env.service.validate("rb.yaml", VALID).await.expect("valid");
    assert_eq!(valid.runbook.steps.len(), 2);
    assert!(valid.digest.starts_with("sha256:"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_validation_rule() {
    let env = TestEnv::new().await;
    /// (what, runbook text, expected (line, path, words) problems)
    type Case = (
        &'static str,
        String,
        Vec<(usize, &'static str, &'static str)>,
    );
    let cases: Vec<Case> = vec![
        (
            "yaml syntax error with line and column",
            VALID.replace("    targets: [demo-host]\n    with: { unit: \"{{ inputs.unit }}\" }\n  - id: restart", "    targets: [demo-host\n  - id: restart"),
            vec![(13, "", "not valid YAML: did not find expected ',' or ']' at line 13 column 7")],
        ),
        (
            "unknown field names the field and the accepted names",
            VALID.replace("    kernel: restart-service@1.0.0", "    kernal: restart-service@1.0.0"),
            vec![
                (15, "steps[1].kernal", "unknown field `kernal`; accepted fields here: approval, id, kernel, max_concurrency, max_errors, max_targets, retries, targets, timeout, when, with"),
                (14, "steps[1]", "\"kernel\" is a required property"),
            ],
        ),
        (
            "duplicate step ids",
            VALID.replace("  - id: restart", "  - id: probe"),
            vec![(14, "steps[1].id", "duplicate step id `probe`")],
        ),
        (
            "reference to an unknown step",
            VALID.replace("steps.probe.output.active", "steps.prob.output.active"),
            vec![(16, "steps[1].when", "refers to unknown step `prob`")],
        ),
        (
            "reference to a step that runs later",
            VALID.replace("with: { unit: \"{{ inputs.unit }}\" }\n  - id: restart", "with: { unit: \"{{ steps.restart.output.unit }}\" }\n  - id: restart"),
            vec![(13, "steps[0].with.unit", "refers to step `restart`, which does not run before this step")],
        ),
        (
            "kernel version not published",
            VALID.replace("restart-service@1.0.0", "restart-service@9.9.9"),
            vec![(15, "steps[1].kernel", "kernel restart-service@9.9.9 is not published")],
        ),
        (
            "kernel version not exact",
            VALID.replace("restart-service@1.0.0", "restart-service@latest"),
            vec![(15, "steps[1].kernel", "\"latest\" is not an exact semantic version")],
        ),
        (
            "static input that fails the kernel's schema",
            VALID.replace("with: { unit: \"{{ inputs.unit }}\" }\n  - id: restart", "with: { unit: 42 }\n  - id: restart"),
            vec![(13, "steps[0].with", "input for service-status@1.0.0 is not valid")],
        ),
        (
            "empty target set",
            VALID.replace("    targets: [demo-host]\n    with: { unit: \"{{ inputs.unit }}\" }\n  - id: restart", "    targets: []\n    with: { unit: \"{{ inputs.unit }}\" }\n  - id: restart"),
            vec![(12, "steps[0].targets", "an empty target set is refused")],
        ),
        (
            "input the inputs schema does not declare",
            VALID.replace("when: \"{{ not steps.probe.output.active }}\"", "when: \"{{ inputs.force }}\""),
            vec![(16, "steps[1].when", "refers to input `force`, which the runbook's inputs schema does not declare")],
        ),
        (
            "unknown template variable",
            VALID.replace("when: \"{{ not steps.probe.output.active }}\"", "when: \"{{ env.HOME }}\""),
            vec![(16, "steps[1].when", "unknown variable `env`")],
        ),
        (
            "template that does not compile",
            VALID.replace("with: { unit: \"{{ inputs.unit }}\" }\n  - id: restart", "with: { unit: \"{{ inputs.unit \" }\n  - id: restart"),
            vec![(13, "steps[0].with.unit", "template does not compile")],
        ),
        (
            "wrong apiVersion",
            VALID.replace("firedrill/v1", "firedrill/v2"),
            vec![(1, "apiVersion", "this firedrill reads \"firedrill/v1\"")],
        ),
        (
            "bad duration",
            VALID.replace("    when:", "    timeout: 5 parsecs\n    when:"),
            vec![(16, "steps[1].timeout", "\"5 parsecs\" is not a duration like 30s or 5m")],
        ),
        (
            "several problems at once, in file order",
            VALID
                .replace("  - id: restart", "  - id: probe")
                .replace("restart-service@1.0.0", "restart-service@9.9.9")
                .replace("firedrill/v1", "firedrill/v0"),
            vec![
                (1, "apiVersion", "firedrill/v1"),
                (14, "steps[1].id", "duplicate step id"),
                (15, "steps[1].kernel", "not published"),
            ],
        ),
    ];
    for (what, text, expected) in cases {
        println!("case: {what}");
        check(&env, &text, &expected).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_inputs_are_checked_against_the_inputs_schema_before_anything_runs() {
    let env = TestEnv::new().await;
    let err = env
        .run_text(VALID, Mode::Live, &[])
        .await
        .expect_err("missing required input");
    assert!(
        matches!(&err, RunError::Inputs { problems, .. } if problems.iter().any(|p| p.contains("\"unit\" is a required property"))),
        "{err}"
    );
    assert!(
        env.store
            .runs(&RunFilter::default())
            .await
            .expect("runs")
            .is_empty()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_published_schema_file_matches_the_format() {
    let path = firedrill_tests::workspace_root().join("runbooks/runbook.schema.json");
    let text = std::fs::read_to_string(&path).expect("runbooks/runbook.schema.json exists");
    let on_disk: serde_json::Value = serde_json::from_str(&text).expect("json");
    assert_eq!(
        on_disk,
        firedrill::runbook::Runbook::json_schema(),
        "runbooks/runbook.schema.json is stale: regenerate it with `firedrill runbook schema > runbooks/runbook.schema.json`"
    );
    // Every example runbook validates against it.
    let validator = jsonschema::validator_for(&on_disk).expect("schema compiles");
    for entry in
        std::fs::read_dir(firedrill_tests::workspace_root().join("runbooks/demo")).expect("dir")
    {
        let path = entry.expect("entry").path();
        if path.extension().is_some_and(|e| e == "yaml") {
            let yaml: serde_json::Value =
                serde_yaml::from_str(&std::fs::read_to_string(&path).expect("read")).expect("yaml");
            assert!(
                validator.is_valid(&yaml),
                "{} does not match the schema",
                path.display()
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runbook_size_limits_hold_at_their_edges() {
    let env = TestEnv::new().await;
    let step = |i: usize| {
        format!("  - id: s{i}\n    kernel: disk-usage@1.0.0\n    targets: [demo-host]\n")
    };
    let with_steps = |n: usize| {
        let steps: String = (0..n).map(step).collect();
        format!("apiVersion: firedrill/v1\nname: many\nversion: 1\nsteps:\n{steps}")
    };
    // 100 steps is the limit: accepted; 101 is refused.
    env.service
        .validate("rb.yaml", &with_steps(firedrill::runbook::MAX_STEPS))
        .await
        .expect("100 steps are allowed");
    let problems = env
        .service
        .validate("rb.yaml", &with_steps(firedrill::runbook::MAX_STEPS + 1))
        .await
        .expect_err("101 steps are refused")
        .problems;
    assert!(problems.iter().any(|p| p.path == "steps"), "{problems:#?}");

    // The file size limit (1 MiB): a comment pads the file just past it.
    let mut big = VALID.to_string();
    big.push('#');
    big.push_str(&"x".repeat((1 << 20) - VALID.len()));
    let problems = env
        .service
        .validate("rb.yaml", &big)
        .await
        .expect_err("over 1 MiB")
        .problems;
    assert!(
        problems[0].message.contains("limited to 1048576 bytes"),
        "{problems:#?}"
    );
    big.truncate((1 << 20) - 1);
    env.service
        .validate("rb.yaml", &big)
        .await
        .expect("just under 1 MiB is fine");
}
