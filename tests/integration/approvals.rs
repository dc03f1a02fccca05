//! Approval steps: a live run waits in `awaiting-approval` until enough
//! distinct people with an allowed role approve (the initiator cannot, a
//! person counts once), a denial or the timeout fails the step, a cancel
//! ends the wait, dry-runs do not wait; the `require-approval` readiness
//! policy puts an approval before the first step of an untested runbook;
//! the CLI approves as a person. `POST /api/v1/runs` with `wait_ms`
//! answers when the run finishes or waits for a decision.

use std::process::ExitCode;
use std::time::Duration;

use clap::Parser as _;
use firedrill::auth::Role;
use firedrill::server::ServerConfig;
use firedrill::store::{AuditFilter, RunStatus, StepStatus};
use firedrill_tests::{TestEnv, alertmanager_payload};
use reqwest::StatusCode;
use serde_json::{Value, json};

fn gated(name: &str, required: u32, roles: &str, timeout: &str) -> String {
    format!(
        r#"apiVersion: firedrill/v1
name: {name}
version: 1
steps:
  - id: approve
    approval: {{ required: {required}, roles: [{roles}], timeout: {timeout}, reason: "fail over the primary" }}
  - id: act
    kernel: trivial@0.1.0
    targets: [demo-host]
"#
    )
}

struct Api {
    url: String,
    env: TestEnv,
    client: reqwest::Client,
}

impl Api {
    async fn new(runbooks: &[&str]) -> Self {
        let env = TestEnv::new().await;
        env.publish(runbooks).await;
        let (url, _) = env
            .serve(ServerConfig {
                drills: false,
                ..ServerConfig::default()
            })
            .await;
        Api {
            url,
            env,
            client: reqwest::Client::new(),
        }
    }

    async fn post(&self, path: &str, token: &str, body: Value) -> (StatusCode, Value) {
        let resp = self
            .client
            .post(format!("{}{path}", self.url))
            .bearer_auth(token)
            .json(&body)
            .send()
            .await
            .expect("send");
        let status = resp.status();
        (status, resp.json().await.unwrap_or(Value::Null))
    }

    async fn start(&self, token: &str, runbook: &str, mode: &str) -> String {
        let (status, answer) = self
            .post(
                "/api/v1/runs",
                token,
                json!({"runbook": runbook, "mode": mode, "force_untested": true}),
            )
            .await;
        assert_eq!(status, StatusCode::ACCEPTED, "{answer}");
        answer["run_id"].as_str().expect("id").to_string()
    }

    async fn wait_for(&self, id: &str, want: RunStatus) -> firedrill::store::RunRow {
        for _ in 0..600 {
            if let Some(r) = self.env.store.run(id).await.expect("read")
                && r.status == want
            {
                return r;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("run {id} never became {want:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_live_run_waits_for_two_distinct_approvers_who_did_not_start_it() {
    let api = Api::new(&[&gated("failover", 2, "approver, admin", "5m")]).await;
    let boss = api.env.token("boss", Role::Admin, &[]).await;
    let alice = api.env.token("alice", Role::Approver, &[]).await;
    let bob = api.env.token("bob", Role::Approver, &[]).await;
    let ops = api.env.token("ops", Role::Operator, &[]).await;
    let viewer = api.env.token("viewer", Role::Viewer, &[]).await;
    let id = api.start(&boss, "failover", "live").await;
    api.wait_for(&id, RunStatus::AwaitingApproval).await;
    let approve = format!("/api/v1/runs/{id}/approve");
    let ok = json!({"comment": "checked replication lag"});
    // The initiator cannot approve its own run (even as admin).
    let (status, answer) = api.post(&approve, &boss, ok.clone()).await;
    assert_eq!(status, StatusCode::CONFLICT, "{answer}");
    assert!(
        answer["error"]["message"]
            .as_str()
            .expect("msg")
            .contains("two-person")
    );
    // Roles that may not approve.
    for t in [&ops, &viewer] {
        let (status, _) = api.post(&approve, t, ok.clone()).await;
        assert_eq!(status, StatusCode::FORBIDDEN);
    }
    let (status, answer) = api.post(&approve, &alice, json!({"comment": " "})).await;
    assert_eq!(
        status,
        StatusCode::BAD_REQUEST,
        "a comment is required: {answer}"
    );
    let (status, answer) = api.post(&approve, &alice, ok.clone()).await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    // One person counts once.
    let (status, answer) = api.post(&approve, &alice, ok.clone()).await;
    assert_eq!(status, StatusCode::CONFLICT, "{answer}");
    tokio::time::sleep(Duration::from_millis(600)).await;
    let run = api.env.store.run(&id).await.expect("read").expect("run");
    assert_eq!(
        run.status,
        RunStatus::AwaitingApproval,
        "1 of 2 is not enough"
    );
    let (status, _) = api.post(&approve, &bob, ok.clone()).await;
    assert_eq!(status, StatusCode::OK);
    api.wait_for(&id, RunStatus::Succeeded).await;
    let steps = api.env.store.steps(&id).await.expect("steps");
    let gate = steps.iter().find(|s| s.step_id == "approve").expect("gate");
    let approvers = gate.output.as_ref().expect("output")["approvers"].clone();
    // People are counted: each token's owner.
    assert_eq!(approvers, json!(["person:alice", "person:bob"]));
    assert!(
        steps
            .iter()
            .any(|s| s.step_id == "act" && s.status == StepStatus::Succeeded)
    );
    let approved = api
        .env
        .store
        .audit(&AuditFilter {
            action: Some("approval.approved".into()),
            ..AuditFilter::default()
        })
        .await
        .expect("audit");
    let who: Vec<&str> = approved.iter().map(|r| r.actor_id.as_str()).collect();
    assert_eq!(who, ["alice", "bob"]);
    // Not waiting any more: nothing to approve.
    let (status, _) = api.post(&approve, &alice, ok).await;
    assert_eq!(status, StatusCode::CONFLICT);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn denial_timeout_roles_cancel_and_dry_run() {
    let api = Api::new(&[
        &gated("one", 1, "approver", "5m"),
        &gated("admins-only", 1, "admin", "5m"),
        &gated("short", 1, "approver", "1s"),
    ])
    .await;
    let ops = api.env.token("ops", Role::Operator, &[]).await;
    let alice = api.env.token("alice", Role::Approver, &[]).await;
    // A denial fails the step with who and why; the next step never runs.
    let id = api.start(&ops, "one", "live").await;
    api.wait_for(&id, RunStatus::AwaitingApproval).await;
    let (status, _) = api
        .post(
            &format!("/api/v1/runs/{id}/deny"),
            &alice,
            json!({"comment": "wrong region"}),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let run = api.wait_for(&id, RunStatus::Failed).await;
    assert!(
        run.error
            .expect("error")
            .contains("denied by person:alice: wrong region")
    );
    assert!(
        !api.env
            .store
            .steps(&id)
            .await
            .expect("steps")
            .iter()
            .any(|s| s.step_id == "act")
    );
    let requested = api.env.audited("approval.requested").await;
    assert!(
        requested
            .iter()
            .any(|r| r.run_id.as_deref() == Some(id.as_str()) && r.subject == "step:approve"),
        "{requested:?}"
    );
    let denied = api.env.audited("approval.denied").await;
    assert!(
        denied
            .iter()
            .any(|r| r.run_id.as_deref() == Some(id.as_str()) && r.actor_id == "alice"),
        "{denied:?}"
    );
    // Only the listed roles count.
    let id = api.start(&ops, "admins-only", "live").await;
    api.wait_for(&id, RunStatus::AwaitingApproval).await;
    let (status, answer) = api
        .post(
            &format!("/api/v1/runs/{id}/approve"),
            &alice,
            json!({"comment": "ok"}),
        )
        .await;
    assert_eq!(status, StatusCode::CONFLICT, "{answer}");
    assert!(
        answer["error"]["message"]
            .as_str()
            .expect("msg")
            .contains("admin")
    );
    // A cancel ends the wait.
    let (status, _) = api
        .post(
            &format!("/api/v1/runs/{id}/cancel"),
            &ops,
            json!({"reason": "not needed"}),
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED);
    let run = api.wait_for(&id, RunStatus::Cancelled).await;
    assert!(
        run.error
            .expect("error")
            .contains("cancelled while waiting for approval")
    );
    // Nobody answers: the timeout fails the run.
    let id = api.start(&ops, "short", "live").await;
    let run = api.wait_for(&id, RunStatus::Failed).await;
    assert!(
        run.error
            .expect("error")
            .contains("approval timed out after 1s: 0 of 1")
    );
    // A dry-run shows where approval would be needed and does not wait.
    let id = api.start(&ops, "one", "dry-run").await;
    api.wait_for(&id, RunStatus::Succeeded).await;
    let steps = api.env.store.steps(&id).await.expect("steps");
    let gate = steps.iter().find(|s| s.step_id == "approve").expect("gate");
    assert_eq!(
        gate.output.as_ref().expect("output")["would_require"]["required"],
        1
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn require_approval_gates_live_triggers_of_untested_runbooks_and_the_cli_approves() {
    let runbook = r#"apiVersion: firedrill/v1
name: untested
version: 1
steps:
  - id: act
    kernel: trivial@0.1.0
    targets: [demo-host]
triggers:
  - source: alertmanager
    match: { alertname: Untested }
    mode: live
readiness_policy: require-approval
"#;
    let api = Api::new(&[runbook]).await;
    let am = api.env.token("am", Role::Webhook, &[]).await;
    let (status, answer) = api
        .post(
            "/api/v1/alerts/alertmanager",
            &am,
            alertmanager_payload(&[("ab01", json!({"alertname": "Untested"}))]),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert_eq!(answer["decisions"][0]["outcome"], "started");
    let id = answer["decisions"][0]["run_id"]
        .as_str()
        .expect("id")
        .to_string();
    api.wait_for(&id, RunStatus::AwaitingApproval).await;
    assert!(
        !api.env
            .store
            .steps(&id)
            .await
            .expect("steps")
            .iter()
            .any(|s| s.step_id == "act"),
        "nothing ran before the approval"
    );
    // A person approves at the CLI.
    let home = api.env.home.path().display().to_string();
    let cli = firedrill::cli::Cli::try_parse_from([
        "firedrill",
        "--home",
        &home,
        "--actor",
        "carol",
        "approve",
        &id,
        "--comment",
        "checked the graphs",
    ])
    .expect("args");
    assert_eq!(
        firedrill::cli::run(cli).await.expect("cli"),
        ExitCode::SUCCESS
    );
    api.wait_for(&id, RunStatus::Succeeded).await;
    let steps = api.env.store.steps(&id).await.expect("steps");
    assert_eq!(
        steps.iter().map(|s| s.step_id.as_str()).collect::<Vec<_>>(),
        ["_readiness-approval", "act"]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn approval_steps_are_validated() {
    let env = TestEnv::new().await;
    let base = "apiVersion: firedrill/v1\nname: v\nversion: 1\nsteps:\n";
    for (step, needle) in [
        (
            "  - id: a\n    kernel: trivial@0.1.0\n    approval: { timeout: 5m }\n",
            "either `kernel` or `approval`",
        ),
        (
            "  - id: a\n    approval: { timeout: 5m }\n    targets: [demo-host]\n",
            "either `kernel` or `approval`",
        ),
        (
            "  - id: a\n    approval: { required: 0, timeout: 5m }\n",
            "1 to 10",
        ),
        ("  - id: a\n    approval: { timeout: 30d }\n", "7 days"),
        (
            "  - id: a\n    approval: { timeout: 5m, roles: [webhook] }\n",
            "cannot approve",
        ),
        (
            "  - id: a\n    approval: { timeout: 5m, roles: [root] }\n",
            "roles",
        ),
        ("  - id: a\n    approval: { required: 1 }\n", "timeout"),
    ] {
        let err = env
            .service
            .validate("v.yaml", &format!("{base}{step}"))
            .await
            .expect_err(step)
            .to_string();
        assert!(err.contains(needle), "{step}: {err}");
    }
    env.service
        .validate(
            "v.yaml",
            &format!("{base}  - id: a\n    approval: {{ timeout: 5m }}\n"),
        )
        .await
        .expect("valid");
}

const WAITER: &str = "apiVersion: firedrill/v1\nname: waiter\nversion: 1\ninputs: { type: object, properties: { dir: { type: string } } }\nsteps:\n  - id: wait\n    kernel: hostile@0.1.0\n    targets: [demo-host]\n    with: { behaviour: wait-for, path: \"{{ inputs.dir }}\" }\n  - id: after\n    kernel: trivial@0.1.0\n    targets: [demo-host]\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_start_with_wait_ms_answers_when_the_run_finishes_or_waits_for_a_decision() {
    let api = Api::new(&[&gated("failover", 1, "approver", "5m"), WAITER]).await;
    let ops = api.env.token("ops", Role::Operator, &[]).await;
    // A dry-run does not wait at approvals: it finishes, and the answer
    // carries the finished run as GET /api/v1/runs/{id} shows it.
    let (status, answer) = api
        .post(
            "/api/v1/runs",
            &ops,
            json!({"runbook": "failover", "wait_ms": 20_000}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert_eq!(answer["run"]["status"], "succeeded", "{answer}");
    let id = answer["run_id"].as_str().expect("id");
    assert_eq!(answer["run"]["run_id"], id, "{answer}");
    let row = api.env.store.run(id).await.expect("read").expect("run");
    assert_eq!(row.status, RunStatus::Succeeded);
    // Started in a free slot, it is audited as any run: started by the
    // token's person, claimed by this node, finished.
    for (action, actor) in [
        ("run.started", "ops"),
        ("run.claimed", "node:"),
        ("run.finished", "ops"),
    ] {
        let records = api.env.audited(action).await;
        assert!(
            records
                .iter()
                .any(|r| r.run_id.as_deref() == Some(id) && r.actor_id.contains(actor)),
            "{action} by {actor} missing: {records:?}"
        );
    }
    // A live run stops at its approval: the wait ends there.
    let (status, answer) = api
        .post(
            "/api/v1/runs",
            &ops,
            json!({"runbook": "failover", "mode": "live", "force_untested": true, "wait_ms": 20_000}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert_eq!(answer["run"]["status"], "awaiting-approval", "{answer}");
    // A run still going when the wait ends: 202 with the run so far, and
    // the run goes on.
    let gate = tempfile::tempdir().expect("gate");
    let dir = gate.path().display().to_string();
    let (status, answer) = api
        .post(
            "/api/v1/runs",
            &ops,
            json!({"runbook": "waiter", "inputs": {"dir": dir}, "wait_ms": 300}),
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{answer}");
    assert!(
        matches!(answer["run"]["status"].as_str(), Some("queued" | "running")),
        "{answer}"
    );
    std::fs::write(gate.path().join("go"), "").expect("go");
    let id = answer["run_id"].as_str().expect("id");
    api.wait_for(id, RunStatus::Succeeded).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wait_at_or_past_the_request_timeout_is_refused_before_any_run_starts() {
    let api = Api::new(&[&gated("failover", 1, "approver", "5m")]).await;
    let ops = api.env.token("ops", Role::Operator, &[]).await;
    // The limit: request-timeout-ms (30 s) less a tenth (or 1 s), so the
    // answer always comes before the request's own deadline.
    let timeout = ServerConfig::default().request_timeout_ms;
    let limit = timeout - timeout / 10;
    for wait in [limit + 1, timeout, u64::MAX] {
        let (status, answer) = api
            .post(
                "/api/v1/runs",
                &ops,
                json!({"runbook": "failover", "wait_ms": wait}),
            )
            .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{answer}");
        let message = answer["error"]["message"].as_str().expect("message");
        assert!(
            message.contains("server.request-timeout-ms") && message.contains(&wait.to_string()),
            "{message}"
        );
    }
    for bad in [json!(-1), json!("soon"), json!(1.5)] {
        let (status, answer) = api
            .post(
                "/api/v1/runs",
                &ops,
                json!({"runbook": "failover", "wait_ms": bad}),
            )
            .await;
        assert!(status.is_client_error(), "{status} {answer}");
    }
    let runs = api
        .env
        .store
        .runs(&firedrill::store::RunFilter {
            limit: 100,
            ..Default::default()
        })
        .await
        .expect("runs");
    assert!(runs.is_empty(), "a refused request started {runs:?}");
    // At the limit is a wait like any other.
    let (status, answer) = api
        .post(
            "/api/v1/runs",
            &ops,
            json!({"runbook": "failover", "wait_ms": limit}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    // A viewer may not start a run, waiting or not.
    let viewer = api.env.token("viewer", Role::Viewer, &[]).await;
    let (status, _) = api
        .post(
            "/api/v1/runs",
            &viewer,
            json!({"runbook": "failover", "wait_ms": 1000}),
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
}
