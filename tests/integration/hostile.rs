//! Kernels built to misbehave. Each must fail with the right error, naming the
//! limit or the refusal, while a well-behaved kernel invoked concurrently succeeds.

use std::sync::Arc;

use firedrill::Mode;
use firedrill::kernel::{
    CallOutcome, InvokeError, InvokeReport, InvokeRequest, KernelHost, Limit, LoadError,
    LoadedKernel,
};
use firedrill_tests::{guest_bytes, test_host};
use serde_json::json;

fn request(behaviour: &str, mode: Mode, extra: serde_json::Value) -> InvokeRequest {
    let mut input = json!({"behaviour": behaviour});
    if let (Some(i), Some(e)) = (input.as_object_mut(), extra.as_object()) {
        i.extend(e.clone());
    }
    InvokeRequest {
        run_id: "run-1".into(),
        step_id: "step-1".into(),
        mode,
        actor: "user:test".into(),
        targets: vec!["local".into()],
        input,
        observer: None,
    }
}

async fn load(host: &KernelHost, package: &str) -> Arc<LoadedKernel> {
    host.load(&guest_bytes(package))
        .await
        .expect("kernel loads")
}

/// Run `behaviour` while well-behaved invocations run alongside it; every
/// well-behaved one must succeed. Returns the hostile invocation's report.
async fn hostile_with_bystander(
    behaviour: &str,
    mode: Mode,
    extra: serde_json::Value,
) -> InvokeReport {
    let host = test_host();
    let kernel = load(&host, "test-kernel-hostile").await;
    let bad = {
        let (host, kernel) = (host.clone(), kernel.clone());
        let req = request(behaviour, mode, extra);
        tokio::spawn(async move { host.invoke(&kernel, req).await })
    };
    let mut good_runs = 0;
    while !bad.is_finished() || good_runs == 0 {
        let report = host
            .invoke(&kernel, request("ok", Mode::DryRun, json!({})))
            .await;
        let output = report.result.expect("the well-behaved invocation succeeds");
        assert_eq!(output["echo"], json!("hello\n"));
        good_runs += 1;
    }
    bad.await.expect("hostile invocation task")
}

fn limit_of(report: &InvokeReport) -> Limit {
    match &report.result {
        Err(InvokeError::Limit(l)) => l.limit,
        other => panic!("expected a limit error, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn infinite_loop_hits_the_cpu_limit() {
    let report = hostile_with_bystander("loop", Mode::DryRun, json!({})).await;
    assert_eq!(limit_of(&report), Limit::Cpu);
    let message = report.result.unwrap_err().to_string();
    assert!(message.contains("kernel.limits.cpu-ms"), "{message}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_bomb_hits_the_memory_limit() {
    let report = hostile_with_bystander("memory-bomb", Mode::DryRun, json!({})).await;
    assert_eq!(limit_of(&report), Limit::Memory);
    let message = report.result.unwrap_err().to_string();
    assert!(message.contains("kernel.limits.memory-bytes"), "{message}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn output_flood_hits_the_output_limit() {
    let report = hostile_with_bystander("output-flood", Mode::DryRun, json!({})).await;
    assert_eq!(limit_of(&report), Limit::Output);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn log_flood_hits_the_log_limit() {
    let report = hostile_with_bystander("log-flood", Mode::DryRun, json!({})).await;
    assert_eq!(limit_of(&report), Limit::Log);
    let kept: usize = report.logs.iter().map(|l| l.message.len()).sum();
    assert!(kept <= 16 << 10, "kept {kept} bytes of log");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stdout_flood_hits_the_log_limit() {
    let report = hostile_with_bystander("stdout-flood", Mode::DryRun, json!({})).await;
    assert_eq!(limit_of(&report), Limit::Log);
    assert!(
        report.stdout.len() <= (16 << 10) + 1,
        "{}",
        report.stdout.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn host_call_flood_hits_the_host_call_limit() {
    let report = hostile_with_bystander("host-call-flood", Mode::DryRun, json!({})).await;
    assert_eq!(limit_of(&report), Limit::HostCalls);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sleeping_on_the_host_still_hits_the_wall_clock() {
    let report = hostile_with_bystander("sleep-forever", Mode::DryRun, json!({})).await;
    assert_eq!(limit_of(&report), Limit::WallClock);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn waiting_on_a_slow_command_hits_the_wall_clock() {
    let started = std::time::Instant::now();
    let report = hostile_with_bystander("slow-exec", Mode::DryRun, json!({})).await;
    assert_eq!(limit_of(&report), Limit::WallClock);
    // The 30 s command was abandoned at the 2 s wall clock, not awaited.
    assert!(started.elapsed() < std::time::Duration::from_secs(20));
}

fn single_denial(report: &InvokeReport) -> String {
    let denials: Vec<_> = report.denials().collect();
    assert_eq!(denials.len(), 1, "{:?}", report.host_calls);
    match &denials[0].outcome {
        CallOutcome::Denied { reason } => reason.clone(),
        other => panic!("{other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn undeclared_command_is_denied_and_reported() {
    let report = hostile_with_bystander("undeclared-command", Mode::Live, json!({})).await;
    let reason = single_denial(&report);
    assert!(
        reason.contains("\"rm -rf /\"") && reason.contains("matches no exec capability"),
        "{reason}"
    );
    // The kernel saw the denial as an error it could report.
    assert!(matches!(&report.result, Err(InvokeError::Failed(m)) if m.contains("denied")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shell_metacharacters_stay_data_so_injection_runs_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let marker = dir.path().join("injected");
    let path = marker.display().to_string();
    // `echo hi; touch PATH` is four words that `echo ...` allows; the host
    // re-quotes them, so the shell sees one echo with three arguments.
    let report = hostile_with_bystander("injection", Mode::Live, json!({"path": path})).await;
    let output = report.result.as_ref().expect("runs");
    assert_eq!(output["stdout"], json!(format!("hi; touch {path}\n")));
    assert!(!marker.exists(), "the injected command ran");
    let recorded = serde_json::to_value(&report.host_calls[0]).expect("json");
    assert_eq!(
        recorded["command"],
        json!(format!("echo 'hi;' touch {path}"))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ungranted_target_is_denied() {
    let report = hostile_with_bystander("ungranted-target", Mode::Live, json!({})).await;
    let reason = single_denial(&report);
    assert!(
        reason.contains("someone-elses-host") && reason.contains("granted: local"),
        "{reason}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn change_in_dry_run_is_simulated_and_performs_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let marker = dir.path().join("changed");
    let path = json!({"path": marker.display().to_string()});
    let report = hostile_with_bystander("change", Mode::DryRun, path.clone()).await;
    assert_eq!(
        report.result.as_ref().expect("succeeds")["simulated"],
        json!(true)
    );
    assert!(!marker.exists(), "dry-run performed the change");
    let planned: Vec<_> = report.planned_changes().collect();
    assert_eq!(planned.len(), 1);

    // The same call in live mode is performed.
    let report = hostile_with_bystander("change", Mode::Live, path).await;
    assert_eq!(
        report.result.as_ref().expect("succeeds")["simulated"],
        json!(false)
    );
    assert!(marker.exists(), "live did not perform the change");
    assert_eq!(report.planned_changes().count(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_json_output_is_refused() {
    let report = hostile_with_bystander("malformed-output", Mode::DryRun, json!({})).await;
    assert!(
        matches!(&report.result, Err(InvokeError::BadOutput(m)) if m.contains("not JSON")),
        "{:?}",
        report.result
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn output_violating_the_declared_schema_is_refused() {
    let report = hostile_with_bystander("schema-violating-output", Mode::DryRun, json!({})).await;
    assert!(
        matches!(&report.result, Err(InvokeError::BadOutput(m)) if m.contains("output schema")),
        "{:?}",
        report.result
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn panic_is_a_trap_of_that_invocation_only() {
    let report = hostile_with_bystander("panic", Mode::DryRun, json!({})).await;
    assert!(
        matches!(&report.result, Err(InvokeError::Trap(_))),
        "{:?}",
        report.result
    );
    assert!(
        report.stderr.contains("panicked on purpose"),
        "{}",
        report.stderr
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn input_failing_the_schema_never_instantiates_the_kernel() {
    let host = test_host();
    let kernel = load(&host, "test-kernel-hostile").await;
    let mut req = request("ok", Mode::DryRun, json!({}));
    req.input = json!({"behavior": "typo"});
    let report = host.invoke(&kernel, req).await;
    assert!(
        matches!(&report.result, Err(InvokeError::InvalidInput(m)) if m.contains("behaviour")),
        "{:?}",
        report.result
    );
    assert!(report.host_calls.is_empty() && report.logs.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retryable_errors_are_marked_retryable() {
    let host = test_host();
    let kernel = load(&host, "test-kernel-hostile").await;
    let report = host
        .invoke(&kernel, request("retryable", Mode::DryRun, json!({})))
        .await;
    assert!(report.result.as_ref().is_err_and(InvokeError::is_retryable));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_describe_that_lies_about_its_version_is_refused() {
    let host = test_host();
    let err = host
        .load(&guest_bytes("test-kernel-liar"))
        .await
        .expect_err("a kernel whose version changes between calls must not load");
    assert!(matches!(err, LoadError::Unstable { .. }), "{err}");
    assert!(err.to_string().contains("liar@1.0."), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bytes_that_are_not_a_component_are_refused() {
    let host = test_host();
    let err = host
        .load(b"\0asm\x01\0\0\0")
        .await
        .expect_err("a core module is not a kernel");
    assert!(matches!(err, LoadError::NotAComponent(_)), "{err}");
    let err = host.load(b"hello").await.expect_err("not wasm");
    assert!(matches!(err, LoadError::NotAComponent(_)), "{err}");
}

/// Pooled sandboxes are reused, with the pages a kernel dirtied reset in
/// place (PAGEMAP_SCAN) and kept resident: a value one invocation leaves in
/// its linear memory is never seen by the next, one after another or many
/// at once. At each edge of `[kernel] keep-resident-bytes` too: 0 (release
/// everything), the default, and more than a sandbox's memory (clamped).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nothing_survives_in_a_reused_sandbox() {
    for keep in [
        0,
        firedrill::kernel::HostConfig::default().keep_resident_bytes,
        usize::MAX,
    ] {
        let host = Arc::new(
            KernelHost::new(
                firedrill::kernel::HostConfig {
                    limits: firedrill_tests::test_limits(),
                    max_concurrent_invocations: 16,
                    keep_resident_bytes: keep,
                    cache_dir: Some(firedrill_tests::kernel_cache_dir()),
                    ..firedrill::kernel::HostConfig::default()
                },
                firedrill::transport::Targets::new(
                    firedrill::transport::Inventory::default().with_local("local"),
                ),
                Arc::new(firedrill::secret::StaticSecrets::default()),
            )
            .unwrap_or_else(|e| panic!("host with keep-resident-bytes {keep}: {e}")),
        );
        let kernel = load(&host, "test-kernel-hostile").await;
        let seen = |report: InvokeReport| {
            let output = report.result.expect("remember succeeds");
            output["seen"].as_u64().expect("seen")
        };
        for _ in 0..20 {
            let report = host
                .invoke(&kernel, request("remember", Mode::DryRun, json!({})))
                .await;
            assert_eq!(
                seen(report),
                0,
                "keep-resident-bytes {keep}: an earlier invocation's memory survived"
            );
        }
        let mut tasks = Vec::new();
        for _ in 0..32 {
            let (host, kernel) = (host.clone(), kernel.clone());
            tasks.push(tokio::spawn(async move {
                host.invoke(&kernel, request("remember", Mode::DryRun, json!({})))
                    .await
            }));
        }
        for t in tasks {
            assert_eq!(
                seen(t.await.expect("task")),
                0,
                "keep-resident-bytes {keep}"
            );
        }
    }
}
