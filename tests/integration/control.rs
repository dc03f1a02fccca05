//! Run control through the API: cancel (at the next step boundary), resume
//! a halted run where it stopped (with the earlier steps' outputs), abandon;
//! pagination of runs; runbook versions; kernel upload with its own limit;
//! token management; the OpenAPI document matches the routes.

use std::time::Duration;

use firedrill::auth::Role;
use firedrill::server::ServerConfig;
use firedrill::store::{AuditFilter, RunStatus, StepStatus};
use firedrill_tests::TestEnv;
use reqwest::StatusCode;
use serde_json::{Value, json};

/// Waits for `<dir>/go`, then a second step that runs only when the first
/// one's recorded status is visible to it.
const GATED: &str = r#"apiVersion: firedrill/v1
name: gated
version: 1
inputs: { type: object, properties: { dir: { type: string } } }
steps:
  - id: wait
    kernel: hostile@0.1.0
    targets: [demo-host]
    with: { behaviour: wait-for, path: "{{ inputs.dir }}" }
  - id: after
    kernel: trivial@0.1.0
    targets: [demo-host]
    when: "steps.wait.status == 'succeeded'"
"#;

struct Api {
    url: String,
    env: TestEnv,
    client: reqwest::Client,
}

impl Api {
    async fn new(config: ServerConfig) -> Self {
        let env = TestEnv::new().await;
        env.publish(&[GATED]).await;
        let (url, _) = env.serve(config).await;
        Api {
            url,
            env,
            client: reqwest::Client::new(),
        }
    }

    async fn call(
        &self,
        method: &str,
        path: &str,
        token: &str,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let mut req = self
            .client
            .request(
                method.parse().expect("method"),
                format!("{}{path}", self.url),
            )
            .bearer_auth(token);
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await.expect("send");
        let status = resp.status();
        let text = resp.text().await.expect("text");
        (
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    }

    async fn wait_status(&self, id: &str, want: impl Fn(RunStatus) -> bool) -> RunStatus {
        for _ in 0..600 {
            // Absent until the run leaves the queue and records its start.
            if let Some(run) = self.env.store.run(id).await.expect("read")
                && want(run.status)
            {
                return run.status;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("run {id} never reached the wanted status");
    }

    /// Wait until step `step` of run `id` has started.
    async fn wait_step(&self, id: &str, step: &str) {
        for _ in 0..600 {
            let steps = self.env.store.steps(id).await.expect("steps");
            if steps.iter().any(|s| s.step_id == step) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("step {step} of {id} never started");
    }

    async fn start_gated(&self, token: &str, gate: &std::path::Path, mode: &str) -> String {
        std::fs::create_dir_all(gate).expect("gate");
        let (status, answer) = self
            .call(
                "POST",
                "/api/v1/runs",
                token,
                Some(json!({"runbook": "gated", "mode": mode, "force_untested": true, "inputs": {"dir": gate.display().to_string()}})),
            )
            .await;
        assert_eq!(status, StatusCode::ACCEPTED, "{answer}");
        answer["run_id"].as_str().expect("id").to_string()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancelled_run_stops_at_the_next_step_boundary() {
    let api = Api::new(ServerConfig::default()).await;
    let ops = api.env.token("ops", Role::Operator, &[]).await;
    let viewer = api.env.token("viewer", Role::Viewer, &[]).await;
    let gate = api.env.home.path().join("gate-1");
    let id = api.start_gated(&ops, &gate, "live").await;
    api.wait_step(&id, "wait").await;
    let cancel = format!("/api/v1/runs/{id}/cancel");
    let (status, _) = api
        .call("POST", &cancel, &viewer, Some(json!({"reason": "x"})))
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, answer) = api
        .call("POST", &cancel, &ops, Some(json!({"reason": " "})))
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{answer}");
    let (status, answer) = api
        .call(
            "POST",
            &cancel,
            &ops,
            Some(json!({"reason": "wrong host picked"})),
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{answer}");
    // The step in progress finishes; the next one never starts.
    std::fs::write(gate.join("go"), "").expect("go");
    assert_eq!(
        api.wait_status(&id, |s| !s.is_pending()).await,
        RunStatus::Cancelled
    );
    let run = api.env.store.run(&id).await.expect("read").expect("run");
    let error = run.error.expect("error");
    assert!(error.contains("cancelled before step `after`"), "{error}");
    assert!(error.contains("token:ops: wrong host picked"), "{error}");
    let steps = api.env.store.steps(&id).await.expect("steps");
    assert_eq!(
        steps.iter().map(|s| s.step_id.as_str()).collect::<Vec<_>>(),
        ["wait"]
    );
    // A finished run cannot be cancelled; an unknown one is 404.
    let (status, answer) = api
        .call("POST", &cancel, &ops, Some(json!({"reason": "again"})))
        .await;
    assert_eq!(status, StatusCode::CONFLICT, "{answer}");
    let (status, _) = api
        .call(
            "POST",
            "/api/v1/runs/nope/cancel",
            &ops,
            Some(json!({"reason": "x"})),
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let requested = api
        .env
        .store
        .audit(&AuditFilter {
            action: Some("run.cancel-requested".into()),
            ..AuditFilter::default()
        })
        .await
        .expect("audit");
    assert_eq!(requested.len(), 1);
    assert_eq!(requested[0].actor_id, "ops");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_halted_run_is_resumed_where_it_stopped_or_abandoned() {
    let api = Api::new(ServerConfig::default()).await;
    let ops = api.env.token("ops", Role::Operator, &[]).await;
    let admin = api.env.token("admin", Role::Admin, &[]).await;
    let engage = json!({"engaged": true, "reason": "bad deploy in flight"});
    let release = json!({"engaged": false, "reason": "deploy rolled back"});

    // Two live runs halt before their second step.
    let mut halted = Vec::new();
    for n in 0..2 {
        let gate = api.env.home.path().join(format!("gate-h{n}"));
        let id = api.start_gated(&ops, &gate, "live").await;
        api.wait_step(&id, "wait").await;
        halted.push((id, gate));
    }
    let (status, _) = api.call("PUT", "/api/v1/switch", &ops, Some(engage)).await;
    assert_eq!(status, StatusCode::OK);
    for (id, gate) in &halted {
        std::fs::write(gate.join("go"), "").expect("go");
        assert_eq!(
            api.wait_status(id, |s| !s.is_pending()).await,
            RunStatus::Halted
        );
    }
    let (first, _) = &halted[0];
    let (second, _) = &halted[1];
    // Not while the switch is engaged.
    let resume = format!("/api/v1/runs/{first}/resume");
    let (status, answer) = api
        .call("POST", &resume, &ops, Some(json!({"reason": "switch off"})))
        .await;
    assert_eq!(status, StatusCode::CONFLICT, "{answer}");
    assert_eq!(answer["error"]["code"], "halted");

    let (status, _) = api
        .call("PUT", "/api/v1/switch", &admin, Some(release))
        .await;
    assert_eq!(status, StatusCode::OK);
    let (status, answer) = api
        .call(
            "POST",
            &resume,
            &ops,
            Some(json!({"reason": "switch released after rollback"})),
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{answer}");
    assert_eq!(
        api.wait_status(first, |s| !s.is_pending() && s != RunStatus::Halted)
            .await,
        RunStatus::Succeeded
    );
    // The first step ran once; the second ran (its `when` saw the first
    // step's recorded status) after the resume.
    let steps = api.env.store.steps(first).await.expect("steps");
    let after = steps
        .iter()
        .find(|s| s.step_id == "after")
        .expect("after ran");
    assert_eq!(after.status, StepStatus::Succeeded);
    let started = api
        .env
        .store
        .audit(&AuditFilter {
            run_id: Some(first.clone()),
            action: Some("step.started".into()),
            ..AuditFilter::default()
        })
        .await
        .expect("audit");
    let started: Vec<String> = started.iter().map(|r| r.subject.clone()).collect();
    assert_eq!(started, ["step:wait", "step:after"], "{started:?}");
    // Resuming again: it is not halted any more.
    let (status, _) = api
        .call("POST", &resume, &ops, Some(json!({"reason": "again"})))
        .await;
    assert_eq!(status, StatusCode::CONFLICT);

    // The other is abandoned: closed for good.
    let abandon = format!("/api/v1/runs/{second}/abandon");
    let (status, answer) = api
        .call(
            "POST",
            &abandon,
            &ops,
            Some(json!({"reason": "fixed by hand"})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    let run = api.env.store.run(second).await.expect("read").expect("run");
    assert_eq!(run.status, RunStatus::Abandoned);
    assert!(run.error.expect("error").contains("fixed by hand"));
    let (status, _) = api
        .call(
            "POST",
            &format!("/api/v1/runs/{second}/resume"),
            &ops,
            Some(json!({"reason": "x"})),
        )
        .await;
    assert_eq!(status, StatusCode::CONFLICT);
    let (status, _) = api
        .call("POST", &abandon, &ops, Some(json!({"reason": "x"})))
        .await;
    assert_eq!(status, StatusCode::CONFLICT);
    for action in ["run.resumed", "run.abandoned"] {
        let n = api
            .env
            .store
            .audit(&AuditFilter {
                action: Some(action.into()),
                ..AuditFilter::default()
            })
            .await
            .expect("audit")
            .len();
        assert_eq!(n, 1, "{action}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runs_are_listed_in_pages_and_runbooks_by_version() {
    let api = Api::new(ServerConfig::default()).await;
    let ops = api.env.token("ops", Role::Operator, &[]).await;
    let gated_v2 = GATED.replace("version: 1", "version: 2");
    api.env.publish(&[&gated_v2]).await;
    let (status, answer) = api
        .call("GET", "/api/v1/runbooks/gated/versions", &ops, None)
        .await;
    assert_eq!(status, StatusCode::OK);
    let versions: Vec<i64> = answer["versions"]
        .as_array()
        .expect("versions")
        .iter()
        .map(|v| v["version"].as_i64().expect("n"))
        .collect();
    assert_eq!(versions, [1, 2]);
    let (_, one) = api
        .call("GET", "/api/v1/runbooks/gated?version=1", &ops, None)
        .await;
    assert_eq!(one["version"], 1);
    let (_, newest) = api.call("GET", "/api/v1/runbooks/gated", &ops, None).await;
    assert_eq!(newest["version"], 2);
    let (status, _) = api
        .call("GET", "/api/v1/runbooks/gated?version=9", &ops, None)
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (_, list) = api.call("GET", "/api/v1/runbooks", &ops, None).await;
    assert_eq!(list["runbooks"][0]["versions"], 2);

    // Five quick dry-runs (the gate is open), listed two at a time.
    let gate = api.env.home.path().join("open");
    std::fs::create_dir_all(&gate).expect("gate");
    std::fs::write(gate.join("go"), "").expect("go");
    let mut ids = Vec::new();
    for _ in 0..5 {
        let id = api.start_gated(&ops, &gate, "dry-run").await;
        api.wait_status(&id, |s| !s.is_pending()).await;
        ids.push(id);
    }
    ids.reverse();
    let mut seen = Vec::new();
    let mut path = "/api/v1/runs?limit=2".to_string();
    loop {
        let (status, page) = api.call("GET", &path, &ops, None).await;
        assert_eq!(status, StatusCode::OK, "{page}");
        let runs = page["runs"].as_array().expect("runs");
        assert!(runs.len() <= 2);
        seen.extend(
            runs.iter()
                .map(|r| r["run_id"].as_str().expect("id").to_string()),
        );
        match page["next"].as_str() {
            Some(next) => path = format!("/api/v1/runs?limit=2&before={next}"),
            None => break,
        }
    }
    assert_eq!(seen, ids, "every run once, newest first");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kernels_and_tokens_are_managed_through_the_api() {
    // The upload limit is exactly the trivial kernel's size: at the edge.
    let trivial = firedrill_tests::guest_bytes("test-kernel-trivial");
    let api = Api::new(ServerConfig {
        kernel_upload_bytes: trivial.len(),
        ..ServerConfig::default()
    })
    .await;
    let admin = api.env.token("root", Role::Admin, &[]).await;
    let ops = api.env.token("ops", Role::Operator, &[]).await;
    let (status, list) = api.call("GET", "/api/v1/kernels", &ops, None).await;
    assert_eq!(status, StatusCode::OK);
    assert!(list["kernels"].as_array().expect("kernels").len() >= 5);
    let (status, k) = api
        .call("GET", "/api/v1/kernels/trivial/0.1.0", &ops, None)
        .await;
    assert_eq!(status, StatusCode::OK, "{k}");
    assert_eq!(k["manifest"]["name"], "trivial");

    let upload = |token: &str, bytes: Vec<u8>| {
        api.client
            .post(format!("{}/api/v1/kernels", api.url))
            .bearer_auth(token)
            .header("content-type", "application/wasm")
            .body(bytes)
            .send()
    };
    // One byte over the limit.
    let mut big = trivial.clone();
    big.push(0);
    assert_eq!(
        upload(&ops, trivial.clone()).await.expect("send").status(),
        StatusCode::FORBIDDEN
    );
    // Exactly the limit, already published with these bytes: 200, nothing new.
    let resp = upload(&admin, trivial).await.expect("send");
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(
        resp.json::<Value>().await.expect("json")["published"],
        false
    );
    // Over server.kernel-upload-bytes: 413; not a component: 422.
    let resp = upload(&admin, big).await.expect("send");
    assert_eq!(resp.status(), StatusCode::PAYLOAD_TOO_LARGE);
    let resp = upload(&admin, b"\0asm not really".to_vec())
        .await
        .expect("send");
    assert_eq!(resp.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let err: Value = resp.json().await.expect("json");
    assert!(
        err["error"]["message"]
            .as_str()
            .expect("msg")
            .contains("not a usable kernel")
    );

    // Tokens: created by an admin, shown once, usable, listed without
    // secrets, revoked.
    let (status, _) = api
        .call(
            "POST",
            "/api/v1/tokens",
            &ops,
            Some(json!({"name": "x", "role": "viewer"})),
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, created) = api
        .call(
            "POST",
            "/api/v1/tokens",
            &admin,
            Some(json!({"name": "grafana", "role": "viewer"})),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    let token = created["token"].as_str().expect("token").to_string();
    assert!(token.starts_with("fdt_"));
    let (status, _) = api.call("GET", "/api/v1/runs", &token, None).await;
    assert_eq!(status, StatusCode::OK);
    let (status, dup) = api
        .call(
            "POST",
            "/api/v1/tokens",
            &admin,
            Some(json!({"name": "grafana", "role": "viewer"})),
        )
        .await;
    assert_eq!(status, StatusCode::CONFLICT, "{dup}");
    let (status, bad) = api
        .call(
            "POST",
            "/api/v1/tokens",
            &admin,
            Some(json!({"name": "y", "role": "root"})),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{bad}");
    let (_, listed) = api.call("GET", "/api/v1/tokens", &admin, None).await;
    let text = listed.to_string();
    assert!(text.contains("grafana"));
    assert!(!text.contains(&token) && !text.contains("hash"), "{text}");
    let (status, _) = api
        .call("DELETE", "/api/v1/tokens/grafana", &admin, None)
        .await;
    assert_eq!(status, StatusCode::OK);
    let (status, _) = api.call("GET", "/api/v1/runs", &token, None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    // The token itself is nowhere in the store or the audit log.
    let bytes = api.env.store_bytes().await;
    assert!(!bytes.windows(token.len()).any(|w| w == token.as_bytes()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_openapi_document_describes_every_route_the_server_has() {
    let api = Api::new(ServerConfig::default()).await;
    let resp = api
        .client
        .get(format!("{}/api/v1/openapi.json", api.url))
        .send()
        .await
        .expect("send");
    assert_eq!(resp.status(), StatusCode::OK);
    let doc: Value = resp.json().await.expect("json");
    assert_eq!(
        doc,
        serde_json::from_str::<Value>(firedrill::server::OPENAPI).expect("doc")
    );
    let paths = doc["paths"].as_object().expect("paths");
    assert!(paths.len() >= 20);
    for (path, methods) in paths {
        let concrete = path
            .replace("{name}/{version}", "trivial/0.1.0")
            .replace("{name}", "gated")
            .replace("{runbook}", "gated")
            .replace("{id}", "no-such-run");
        for method in methods.as_object().expect("methods").keys() {
            // Without credentials every documented route answers as itself
            // (401, or its public answer), never the unknown-endpoint 404.
            let resp = api
                .client
                .request(
                    method.to_uppercase().parse().expect("method"),
                    format!("{}{concrete}", api.url),
                )
                .send()
                .await
                .expect("send");
            let status = resp.status();
            let body = resp.text().await.expect("text");
            assert!(
                !body.contains("no such endpoint") && status != StatusCode::METHOD_NOT_ALLOWED,
                "{method} {path}: {status} {body}"
            );
        }
    }
}
