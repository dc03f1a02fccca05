//! The web console in a real browser: headless Chromium (Debian's, driven
//! over WebDriver) against `firedrill serve` on loopback. Sign in; dry-run
//! then live-run the demo runbook and watch the timeline reach success
//! without reloading; approve as a second person (refused as the
//! initiator); engage the big red switch and see a live run halt; find it
//! all in the audit page under the right actors. Screenshots of the main
//! pages are kept in `target/console-screenshots/`.

use std::time::Duration;

use fantoccini::Locator;
use firedrill::audit::Actor;
use firedrill::auth::Role;
use firedrill::server::ServerConfig;
use firedrill::store::RunStatus;
use firedrill_tests::browser::Browser;
use firedrill_tests::{TestEnv, workspace_root};
use serde_json::{Value, json};

const GATED: &str = "apiVersion: firedrill/v1\nname: gated\nversion: 1\nsteps:\n  - id: approve\n    approval: { required: 1, roles: [approver, admin], timeout: 10m, reason: \"fail over the primary\" }\n  - id: act\n    kernel: trivial@0.1.0\n    targets: [demo-host]\n";
const WAITER: &str = "apiVersion: firedrill/v1\nname: waiter\nversion: 1\ninputs: { type: object, properties: { dir: { type: string } } }\nsteps:\n  - id: wait\n    kernel: hostile@0.1.0\n    targets: [demo-host]\n    with: { behaviour: wait-for, path: \"{{ inputs.dir }}\" }\n  - id: after\n    kernel: trivial@0.1.0\n    targets: [demo-host]\n";

const LONG: Duration = Duration::from_secs(60);
const SHORT: Duration = Duration::from_secs(20);

/// Start a live run through the API as `token`; its id.
async fn start_live(url: &str, token: &str, runbook: &str, inputs: Value) -> String {
    let resp: Value = reqwest::Client::new()
        .post(format!("{url}/api/v1/runs"))
        .bearer_auth(token)
        .json(
            &json!({"runbook": runbook, "mode": "live", "force_untested": true, "inputs": inputs}),
        )
        .send()
        .await
        .expect("start")
        .json()
        .await
        .expect("json");
    resp["run_id"]
        .as_str()
        .unwrap_or_else(|| panic!("{resp}"))
        .to_string()
}

async fn wait_status(env: &TestEnv, id: &str, want: RunStatus) {
    for _ in 0..600 {
        if env
            .store
            .run(id)
            .await
            .expect("read")
            .is_some_and(|r| r.status == want)
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("run {id} never became {want:?}");
}

/// Start a live `waiter` run as `token` and wait until it is inside its
/// first step; it goes on when `go` is written into the returned directory.
async fn start_waiting(env: &TestEnv, url: &str, token: &str) -> (tempfile::TempDir, String) {
    let gate = tempfile::tempdir().expect("gate");
    let dir = gate.path().display().to_string();
    let id = start_live(url, token, "waiter", json!({ "dir": dir })).await;
    wait_status(env, &id, RunStatus::Running).await;
    (gate, id)
}

/// Mark the page, so [`assert_marked`] can tell it was not reloaded.
async fn mark(b: &Browser) {
    b.client
        .execute("window.firedrillMark = 42; return true", vec![])
        .await
        .expect("mark");
}

async fn assert_marked(b: &Browser) {
    let mark = b
        .client
        .execute("return window.firedrillMark || null", vec![])
        .await
        .expect("mark");
    assert_eq!(
        mark,
        json!(42),
        "the run page reloaded instead of updating live"
    );
}

async fn sign_in(b: &Browser, url: &str, token: &str, name: &str) {
    b.open(&format!("{url}/console/")).await;
    b.wait_text("main h1", "Sign in", SHORT).await;
    b.fill("main", "API token", token).await;
    b.click("main", "Sign in").await;
    b.wait_text("#who", name, SHORT).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_console_in_a_real_browser() {
    let env = TestEnv::new().await;
    let demo =
        std::fs::read_to_string(workspace_root().join("runbooks/demo/restart-demo-web.yaml"))
            .expect("demo runbook");
    env.service
        .publish_runbook("restart-demo-web.yaml", &demo, &Actor::user("publisher"))
        .await
        .expect("publish the demo runbook");
    env.publish(&[GATED, WAITER]).await;
    // The demo service is down: the dry-run plans its restart.
    env.systemctl("stop", "web");
    let (url, _state) = env
        .serve(ServerConfig {
            event_poll_ms: 100,
            drills: false,
            ..ServerConfig::default()
        })
        .await;
    let alice = env.token("alice", Role::Admin, &[]).await;
    let bob = env.token("bob", Role::Approver, &[]).await;
    let shots = workspace_root().join("target/console-screenshots");
    let b = Browser::start().await;

    // Sign in: the token goes into an HttpOnly cookie, out of the page's reach.
    sign_in(&b, &url, &alice, "alice").await;
    b.wait_text("main h1", "Overview", SHORT).await;
    b.wait_text("main", "restart-demo-web", SHORT).await;
    let cookies = b
        .client
        .execute("return document.cookie", vec![])
        .await
        .expect("script");
    assert!(
        !cookies.to_string().contains("firedrill_session"),
        "{cookies}"
    );
    b.screenshot(&shots, "overview").await;

    // Dry-run the demo runbook from its page: the plan, nothing changed.
    b.open(&format!("{url}/console/runbooks/restart-demo-web"))
        .await;
    b.wait_text("main h1", "Runbook restart-demo-web", SHORT)
        .await;
    b.wait_text("main", "restart-service@1.0.0", SHORT).await;
    b.screenshot(&shots, "runbook").await;
    b.fill("main", "unit", "web").await;
    b.click("main", "Dry-run").await;
    b.wait_text("#run-status", "succeeded", LONG).await;
    let plan = b
        .wait_text("main", "Plan: the changes a live run would make", SHORT)
        .await;
    assert!(
        plan.contains("simulated"),
        "the restart is planned, not made:\n{plan}"
    );
    assert_eq!(env.restarts("web"), 0, "a dry-run changes nothing");
    b.screenshot(&shots, "dry-run").await;

    // Run live from that plan: the confirmation names runbook and targets,
    // and an undrilled runbook needs the explicit override.
    b.click("main", "Run live from this plan").await;
    let dialog = b.wait_text("dialog", "restart-demo-web", SHORT).await;
    assert!(
        dialog.contains("demo-host") && dialog.contains("live drill"),
        "{dialog}"
    );
    let force = b
        .client
        .find(Locator::Css("dialog input[name=force_untested]"))
        .await
        .expect("override");
    force.click().await.expect("tick");
    b.click("dialog", "Run restart-demo-web live").await;
    b.wait_text("#run-status", "", SHORT).await;
    b.wait_text("main dl", "live", SHORT).await;
    // From here the page must update itself: mark it, and check the mark
    // survived (a reload would lose it).
    mark(&b).await;
    b.wait_text("#run-status", "succeeded", LONG).await;
    b.wait_text("#timeline", "verify", SHORT).await;
    assert_marked(&b).await;
    assert_eq!(
        env.restarts("web"),
        1,
        "the live run restarted the service once"
    );
    b.screenshot(&shots, "run").await;

    // Approval: alice starts a gated run; as its initiator she may not
    // approve it (the page says so, and the server refuses).
    let gated = start_live(&url, &alice, "gated", json!({})).await;
    wait_status(&env, &gated, RunStatus::AwaitingApproval).await;
    b.open(&format!("{url}/console/runs/{gated}")).await;
    b.wait_text("main", "someone else must approve", SHORT)
        .await;
    let buttons = b
        .client
        .find_all(Locator::XPath(
            "//main//button[normalize-space(.)='Approve']",
        ))
        .await
        .expect("find");
    assert!(buttons.is_empty(), "the initiator is offered Approve");
    let refused = b
        .client
        .execute_async(
            "const done = arguments[arguments.length - 1];
             fetch('/api/v1/me').then(r => r.json()).then(me =>
               fetch('/api/v1/runs/' + arguments[0] + '/approve', {method: 'POST',
                 headers: {'Content-Type': 'application/json', 'X-CSRF-Token': me.csrf},
                 body: JSON.stringify({comment: 'my own'})}))
             .then(r => r.json().then(j => done([r.status, j.error.message])))",
            vec![json!(gated)],
        )
        .await
        .expect("script");
    assert_eq!(refused[0], json!(409), "{refused}");
    assert!(
        refused[1]
            .as_str()
            .is_some_and(|m| m.contains("two-person")),
        "{refused}"
    );
    // Cancel: alice stops a live run that waits inside its step.
    let (gate_c, cancelled) = start_waiting(&env, &url, &alice).await;
    b.open(&format!("{url}/console/runs/{cancelled}")).await;
    b.wait_text("#run-status", "running", SHORT).await;
    b.fill("main", "Reason", "wrong host").await;
    b.click("main", "Cancel the run").await;
    // The step in progress finishes first; the run stops at the boundary.
    b.wait_text("main", "Cancellation requested", SHORT).await;
    std::fs::write(gate_c.path().join("go"), "").expect("open the gate");
    b.wait_text("#run-status", "cancelled", LONG).await;
    let steps = env.store.steps(&cancelled).await.expect("steps");
    assert!(
        steps.iter().all(|s| s.step_id != "after"),
        "a step ran after the cancel: {steps:?}"
    );
    // Two versions of a runbook, and the diff between them.
    let v2 = GATED
        .replace("version: 1", "version: 2")
        .replace("required: 1", "required: 2");
    env.publish(&[v2.as_str()]).await;
    b.open(&format!("{url}/console/runbooks/gated")).await;
    b.wait_text("main h1", "Runbook gated", SHORT).await;
    b.click("main", "Show the diff").await;
    let diff = b.wait_text("main .diff", "required: 2", SHORT).await;
    assert!(
        diff.contains("- version: 1") && diff.contains("+ version: 2"),
        "{diff}"
    );
    // Bob approves the gated run from its page.
    b.click("#who", "Sign out").await;
    sign_in(&b, &url, &bob, "bob").await;
    b.open(&format!("{url}/console/runs/{gated}")).await;
    b.wait_text("main", "Approval needed", SHORT).await;
    b.screenshot(&shots, "approval").await;
    b.fill("section.card", "Comment", "checked the replica lag")
        .await;
    b.click("section.card", "Approve").await;
    b.wait_text("#run-status", "succeeded", LONG).await;

    // The big red switch: bob engages it while a live run waits inside its
    // first step; the run halts before the next one.
    let (gate, waiting) = start_waiting(&env, &url, &alice).await;
    b.open(&format!("{url}/console/")).await;
    b.wait_text("main h1", "Overview", SHORT).await;
    b.fill("main", "Reason", "database failover in progress")
        .await;
    b.click("main", "Engage the big red switch").await;
    b.wait_text("#switch-banner", "BIG RED SWITCH ENGAGED", SHORT)
        .await;
    b.open(&format!("{url}/console/runs/{waiting}")).await;
    b.wait_text("#run-status", "running", SHORT).await;
    mark(&b).await;
    std::fs::write(gate.path().join("go"), "").expect("open the gate");
    b.wait_text("#run-status", "halted", LONG).await;
    assert_marked(&b).await;
    let steps = env.store.steps(&waiting).await.expect("steps");
    assert!(
        steps.iter().all(|s| s.step_id != "after"),
        "a step ran after the switch: {steps:?}"
    );
    b.screenshot(&shots, "halted").await;

    // The audit page: each action under the actor who took it.
    b.open(&format!("{url}/console/audit?actor=token:bob"))
        .await;
    b.wait_text("#chain", "ok", SHORT).await;
    let bobs = b.wait_text("main table", "approval.approved", SHORT).await;
    assert!(
        bobs.contains("switch.engaged") && bobs.contains("console.signed-in"),
        "{bobs}"
    );
    assert!(!bobs.contains("token:alice"), "{bobs}");
    b.screenshot(&shots, "audit").await;
    b.open(&format!(
        "{url}/console/audit?actor=token:alice&action=run.started"
    ))
    .await;
    let alices = b.wait_text("main table", "run.started", SHORT).await;
    assert!(
        alices.contains(&gated) && alices.contains(&waiting),
        "{alices}"
    );
    // Each record links to its run.
    let link = b
        .client
        .find(Locator::Css(&format!(
            "main table a[href='/console/runs/{gated}']"
        )))
        .await;
    assert!(link.is_ok(), "no link to the run");

    // Kernels: manifests, digests, and where each is used.
    b.open(&format!("{url}/console/kernels")).await;
    let kernels = b.wait_text("main", "service-status@1.0.0", SHORT).await;
    assert!(kernels.contains("restart-demo-web"), "{kernels}");
    b.screenshot(&shots, "kernels").await;
    b.close().await;
}

/// The overview shows what automation could not do: runs started by
/// alerts (their actor is the alert source), a trigger paused for one key
/// by its breaker, and a runbook's own switch (also on the runbook's page).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_overview_shows_alert_runs_paused_keys_and_runbook_switches() {
    let env = TestEnv::new().await;
    env.publish(&[firedrill_tests::UNIT_FIX]).await;
    let webhook = env.token("alertmanager", Role::Webhook, &[]).await;
    let (url, _state) = env
        .serve(ServerConfig {
            drills: false,
            ..ServerConfig::default()
        })
        .await;
    let client = reqwest::Client::new();
    for fp in ["c001", "c002"] {
        let body = firedrill_tests::alertmanager_payload(&[(
            fp,
            json!({"alertname": "UnitDown", "unit": "bad", "behaviour": "fail"}),
        )]);
        let answer: Value = client
            .post(format!("{url}/api/v1/alerts/alertmanager"))
            .bearer_auth(&webhook)
            .json(&body)
            .send()
            .await
            .expect("alert")
            .json()
            .await
            .expect("json");
        let id = answer["decisions"][0]["run_id"]
            .as_str()
            .unwrap_or_else(|| panic!("{answer}"))
            .to_string();
        wait_status(&env, &id, RunStatus::Failed).await;
    }
    firedrill::switch::flip(
        env.store.as_ref(),
        Some("unit-fix"),
        true,
        "flapping unit, hands off",
        &Actor::user("carol"),
    )
    .await
    .expect("engage");
    let alice = env.token("alice", Role::Admin, &[]).await;
    let b = Browser::start().await;
    sign_in(&b, &url, &alice, "alice").await;
    let text = b.wait_text("main", "flapping unit, hands off", SHORT).await;
    let section = |from: &str, to: &str| {
        let start = text
            .find(from)
            .unwrap_or_else(|| panic!("no {from:?} in\n{text}"));
        let rest = &text[start..];
        rest[..rest.find(to).unwrap_or(rest.len())].to_string()
    };
    let switches = section("Runbook switches engaged", "Runs in progress");
    assert!(
        switches.contains("unit-fix") && switches.contains("user:carol"),
        "{switches}"
    );
    let alert_runs = section("Runs started by alerts", "Paused triggers");
    assert!(
        !alert_runs.contains("no recent run started by an alert")
            && alert_runs.contains("unit-fix"),
        "{alert_runs}"
    );
    let paused = section("Paused triggers", "\u{0}");
    assert!(
        paused.contains("unit-fix")
            && paused.contains("bad")
            && !paused.contains("no trigger is paused"),
        "{paused}"
    );
    b.open(&format!("{url}/console/runbooks/unit-fix")).await;
    let page = b.wait_text("main", "flapping unit, hands off", SHORT).await;
    assert!(page.contains("keys: bad"), "{page}");
    b.close().await;
}
