//! `firedrill serve` over real HTTP on loopback: the authorization matrix
//! (every role × endpoint, missing/unknown/revoked tokens), runbook-limited
//! tokens, runs started through the API, the big red switch through the
//! API, and admission control (body limit, run queue full, in-flight
//! shedding while health checks still answer).

use std::time::Duration;

use firedrill::audit::Actor;
use firedrill::auth::{self, Role};
use firedrill::server::{AppState, ServerConfig};
use firedrill::store::{AuditFilter, RunStatus};
use firedrill_tests::TestEnv;
use reqwest::StatusCode;
use serde_json::{Value, json};

struct Server {
    url: String,
    env: TestEnv,
    state: AppState,
    client: reqwest::Client,
}

const WAIT_FOR: &str = "apiVersion: firedrill/v1\nname: waiter\nversion: 1\ninputs: { type: object, properties: { dir: { type: string } } }\nsteps:\n  - id: wait\n    kernel: hostile@0.1.0\n    targets: [demo-host]\n    with: { behaviour: wait-for, path: \"{{ inputs.dir }}\" }\n";
const QUICK: &str = "apiVersion: firedrill/v1\nname: quick\nversion: 1\nsteps:\n  - id: one\n    kernel: trivial@0.1.0\n    targets: [demo-host]\n";

async fn server(config: ServerConfig) -> Server {
    let env = TestEnv::new().await;
    env.publish(&[WAIT_FOR, QUICK]).await;
    let (url, state) = env.serve(config).await;
    Server {
        url,
        env,
        state,
        client: reqwest::Client::new(),
    }
}

impl Server {
    async fn token(&self, name: &str, role: Role, runbooks: &[&str]) -> String {
        self.env.token(name, role, runbooks).await
    }

    async fn call(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        firedrill_tests::api_call(&self.client, &self.url, method, path, token, body).await
    }

    async fn wait_finished(&self, id: &str) -> RunStatus {
        for _ in 0..600 {
            if let Some(r) = self.env.store.run(id).await.expect("read")
                && !r.status.is_pending()
            {
                return r.status;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("run {id} did not finish");
    }
}

/// (method, path, body, roles allowed, whether allowed means 2xx).
type Endpoint = (&'static str, &'static str, Option<Value>, Vec<Role>, bool);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn authorization_matrix_every_role_by_every_endpoint() {
    let s = server(ServerConfig::default()).await;
    let mut tokens = Vec::new();
    for role in [
        Role::Viewer,
        Role::Operator,
        Role::Approver,
        Role::Admin,
        Role::Webhook,
    ] {
        tokens.push((role, s.token(role.as_str(), role, &[]).await));
    }
    let revoked = s.token("gone", Role::Admin, &[]).await;
    auth::revoke(s.env.store.as_ref(), "gone", None, &Actor::user("admin"))
        .await
        .expect("revoke");
    let live_run = json!({"runbook": "quick", "mode": "live", "force_untested": true});
    let engage = json!({"engaged": true, "reason": "matrix"});
    let release = json!({"engaged": false, "reason": "matrix"});
    // Every role but webhook may read.
    const READERS: [Role; 4] = [Role::Viewer, Role::Operator, Role::Approver, Role::Admin];
    let victim = s.token("victim", Role::Viewer, &[]).await;
    drop(victim);
    let alert = json!({"alerts": [{"id": "m-1", "starts_at": "2026-11-23T02:00:00Z", "labels": {"alertname": "NothingMatches"}}]});
    let admin_only = vec![Role::Admin];
    let operators = vec![Role::Operator, Role::Admin];
    // (method, path, body, roles allowed, whether allowed means 2xx; else
    // only "not 401/403": the request is authorized and then refused for
    // what it asks, e.g. a run that does not exist)
    let endpoints: Vec<Endpoint> = vec![
        ("GET", "/api/v1/runbooks", None, READERS.to_vec(), true),
        (
            "GET",
            "/api/v1/runbooks/quick",
            None,
            READERS.to_vec(),
            true,
        ),
        (
            "GET",
            "/api/v1/runbooks/quick/versions",
            None,
            READERS.to_vec(),
            true,
        ),
        ("GET", "/api/v1/triggers", None, READERS.to_vec(), true),
        (
            "GET",
            "/api/v1/alerts/unmatched",
            None,
            READERS.to_vec(),
            true,
        ),
        // Who am I: any valid token may ask.
        (
            "GET",
            "/api/v1/me",
            None,
            vec![
                Role::Viewer,
                Role::Operator,
                Role::Approver,
                Role::Admin,
                Role::Webhook,
            ],
            true,
        ),
        (
            "POST",
            "/api/v1/runbooks/validate",
            Some(json!({"source": QUICK})),
            READERS.to_vec(),
            true,
        ),
        (
            "POST",
            "/api/v1/runbooks",
            Some(json!({"source": QUICK})),
            admin_only.clone(),
            true,
        ),
        ("GET", "/api/v1/kernels", None, READERS.to_vec(), true),
        (
            "GET",
            "/api/v1/kernels/trivial/0.1.0",
            None,
            READERS.to_vec(),
            true,
        ),
        (
            "POST",
            "/api/v1/kernels",
            Some(json!({})),
            admin_only.clone(),
            false,
        ),
        ("GET", "/api/v1/runs", None, READERS.to_vec(), true),
        (
            "POST",
            "/api/v1/runs",
            Some(live_run.clone()),
            operators.clone(),
            true,
        ),
        (
            "POST",
            "/api/v1/runs/no-such-run/cancel",
            Some(json!({"reason": "m"})),
            operators.clone(),
            false,
        ),
        (
            "POST",
            "/api/v1/runs/no-such-run/resume",
            Some(json!({"reason": "m"})),
            operators.clone(),
            false,
        ),
        (
            "POST",
            "/api/v1/runs/no-such-run/abandon",
            Some(json!({"reason": "m"})),
            operators.clone(),
            false,
        ),
        ("GET", "/api/v1/audit", None, READERS.to_vec(), true),
        ("GET", "/api/v1/audit/verify", None, READERS.to_vec(), true),
        ("GET", "/api/v1/switch", None, READERS.to_vec(), true),
        (
            "PUT",
            "/api/v1/switch",
            Some(release.clone()),
            admin_only.clone(),
            true,
        ),
        (
            "PUT",
            "/api/v1/switch",
            Some(engage.clone()),
            vec![Role::Operator, Role::Approver, Role::Admin],
            true,
        ),
        ("GET", "/api/v1/tokens", None, admin_only.clone(), true),
        (
            "POST",
            "/api/v1/tokens",
            Some(json!({"name": "made-by-matrix", "role": "viewer"})),
            admin_only.clone(),
            true,
        ),
        (
            "DELETE",
            "/api/v1/tokens/victim",
            None,
            admin_only.clone(),
            true,
        ),
        (
            "POST",
            "/api/v1/alerts/alertmanager",
            Some(json!({"version": "4"})),
            vec![Role::Webhook],
            false,
        ),
        (
            "POST",
            "/api/v1/alerts/generic",
            Some(alert),
            vec![Role::Webhook],
            true,
        ),
        (
            "POST",
            "/api/v1/runs/no-such-run/approve",
            Some(json!({"comment": "m"})),
            vec![Role::Approver, Role::Admin],
            false,
        ),
        (
            "POST",
            "/api/v1/runs/no-such-run/deny",
            Some(json!({"comment": "m"})),
            vec![Role::Approver, Role::Admin],
            false,
        ),
        ("GET", "/api/v1/drills", None, READERS.to_vec(), true),
        (
            "POST",
            "/api/v1/drills/quick/run",
            None,
            operators.clone(),
            false,
        ),
        (
            "POST",
            "/api/v1/runbooks/quick/rollback",
            Some(json!({"version": 1, "reason": "matrix"})),
            admin_only.clone(),
            true,
        ),
        ("GET", "/metrics", None, READERS.to_vec(), true),
    ];
    let documented: Value = serde_json::from_str(firedrill::server::OPENAPI).expect("openapi");
    for (method, path, body, allowed, succeeds) in &endpoints {
        let template = path
            .replace("/quick/versions", "/{name}/versions")
            .replace("/runbooks/quick", "/runbooks/{name}")
            .replace("/trivial/0.1.0", "/{name}/{version}")
            .replace("/no-such-run/", "/{id}/")
            .replace("/tokens/victim", "/tokens/{name}")
            .replace("/drills/quick/", "/drills/{runbook}/")
            .replace("/runbooks/quick/rollback", "/runbooks/{name}/rollback");
        assert!(
            documented["paths"][&template][method.to_lowercase()].is_object(),
            "{method} {template} is not in the OpenAPI document"
        );
        // No token, a made-up one, a revoked one: 401, whatever the endpoint.
        for bad in [None, Some("fdt_not-a-real-token"), Some(revoked.as_str())] {
            let (status, err) = s.call(method, path, bad, body.clone()).await;
            assert_eq!(
                status,
                StatusCode::UNAUTHORIZED,
                "{method} {path} {bad:?}: {err}"
            );
            assert_eq!(err["error"]["code"], "unauthorized");
        }
        for (role, token) in &tokens {
            let (status, answer) = s.call(method, path, Some(token), body.clone()).await;
            if allowed.contains(role) {
                if *succeeds {
                    assert!(
                        status.is_success(),
                        "{role:?} {method} {path}: {status} {answer}"
                    );
                } else {
                    assert!(
                        status != StatusCode::UNAUTHORIZED && status != StatusCode::FORBIDDEN,
                        "{role:?} {method} {path}: {status} {answer}"
                    );
                }
            } else {
                assert_eq!(
                    status,
                    StatusCode::FORBIDDEN,
                    "{role:?} {method} {path}: {answer}"
                );
                assert_eq!(answer["error"]["code"], "forbidden");
            }
            // Leave the switch released for the next row.
            if *path == "/api/v1/switch" && *method == "PUT" {
                let admin = &tokens[3].1;
                s.call("PUT", "/api/v1/switch", Some(admin), Some(release.clone()))
                    .await;
            }
        }
    }
    // The actor of every API action is the token.
    let started = s
        .env
        .store
        .audit(&AuditFilter {
            action: Some("run.started".into()),
            ..AuditFilter::default()
        })
        .await
        .expect("audit");
    let actors: std::collections::BTreeSet<String> = started
        .iter()
        .map(|r| format!("{}:{}", r.actor_kind, r.actor_id))
        .collect();
    assert_eq!(
        actors,
        ["token:admin".to_string(), "token:operator".to_string()].into()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runbook_limited_tokens_see_nothing_else() {
    let s = server(ServerConfig::default()).await;
    let token = s.token("quick-only", Role::Operator, &["quick"]).await;
    let (_, list) = s.call("GET", "/api/v1/runbooks", Some(&token), None).await;
    let names: Vec<&str> = list["runbooks"]
        .as_array()
        .expect("array")
        .iter()
        .map(|r| r["name"].as_str().expect("name"))
        .collect();
    assert_eq!(names, ["quick"]);
    // Another runbook is "not found", exactly like one that does not exist.
    let (status, other) = s
        .call("GET", "/api/v1/runbooks/waiter", Some(&token), None)
        .await;
    let (_, missing) = s
        .call("GET", "/api/v1/runbooks/nope", Some(&token), None)
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(
        other["error"]["message"]
            .as_str()
            .map(|m| m.replace("waiter", "X")),
        missing["error"]["message"]
            .as_str()
            .map(|m| m.replace("nope", "X"))
    );
    let (status, _) = s
        .call(
            "POST",
            "/api/v1/runs",
            Some(&token),
            Some(json!({"runbook": "waiter"})),
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _) = s.call("GET", "/api/v1/audit", Some(&token), None).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    // Its run list is filtered in the store, not after the page is cut: one
    // run of `quick` under three newer runs of another runbook still shows.
    let admin = s.token("admin", Role::Admin, &[]).await;
    let (_, mine) = s
        .call(
            "POST",
            "/api/v1/runs",
            Some(&token),
            Some(json!({"runbook": "quick"})),
        )
        .await;
    let mine = mine["run_id"].as_str().expect("id").to_string();
    s.wait_finished(&mine).await;
    let gate = s.env.home.path().join("open-gate");
    std::fs::create_dir_all(&gate).expect("gate");
    std::fs::write(gate.join("go"), "").expect("go");
    for _ in 0..3 {
        let (_, other) = s
            .call(
                "POST",
                "/api/v1/runs",
                Some(&admin),
                Some(json!({"runbook": "waiter", "inputs": {"dir": gate.display().to_string()}})),
            )
            .await;
        s.wait_finished(other["run_id"].as_str().expect("id")).await;
    }
    let (_, page) = s
        .call("GET", "/api/v1/runs?limit=1", Some(&token), None)
        .await;
    assert_eq!(page["runs"][0]["run_id"], mine.as_str(), "{page}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runs_through_the_api_the_switch_and_bad_input() {
    let s = server(ServerConfig::default()).await;
    let ops = s.token("ops", Role::Operator, &[]).await;
    let (status, started) = s
        .call(
            "POST",
            "/api/v1/runs",
            Some(&ops),
            Some(json!({"runbook": "quick", "mode": "live", "force_untested": true})),
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{started}");
    let id = started["run_id"].as_str().expect("id").to_string();
    assert_eq!(s.wait_finished(&id).await, RunStatus::Succeeded);
    let (status, run) = s
        .call("GET", &format!("/api/v1/runs/{id}"), Some(&ops), None)
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(run["actor"], "token:ops");
    assert_eq!(run["steps"][0]["status"], "succeeded");

    // Engaged switch: live refused with 409, dry-run accepted.
    let (status, _) = s
        .call(
            "PUT",
            "/api/v1/switch",
            Some(&ops),
            Some(json!({"engaged": true, "reason": "incident"})),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let (status, err) = s
        .call(
            "POST",
            "/api/v1/runs",
            Some(&ops),
            Some(json!({"runbook": "quick", "mode": "live", "force_untested": true})),
        )
        .await;
    assert_eq!(status, StatusCode::CONFLICT, "{err}");
    assert!(
        err["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("incident"))
    );
    let (status, _) = s
        .call(
            "POST",
            "/api/v1/runs",
            Some(&ops),
            Some(json!({"runbook": "quick"})),
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED);

    // Bad input says what to fix.
    let (status, err) = s
        .call(
            "POST",
            "/api/v1/runs",
            Some(&ops),
            Some(json!({"runbok": "quick"})),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(
        err["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("runbok")),
        "{err}"
    );
    let (status, err) = s
        .call(
            "POST",
            "/api/v1/runs",
            Some(&ops),
            Some(json!({"runbook": "quick", "mode": "yolo"})),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{err}");
    let (status, err) = s.call("GET", "/api/v1/nothing", Some(&ops), None).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admission_control_sheds_with_clear_errors_and_health_still_answers() {
    let s = server(ServerConfig {
        body_bytes: 1024,
        max_in_flight: 1,
        max_concurrent_runs: 1,
        max_queued_runs: 0,
        ..ServerConfig::default()
    })
    .await;
    let ops = s.token("ops", Role::Operator, &[]).await;

    // Over the body limit: 413 and nothing started.
    let big = json!({"runbook": "quick", "inputs": {"x": "y".repeat(2000)}});
    let (status, _) = s.call("POST", "/api/v1/runs", Some(&ops), Some(big)).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);

    // One run executing fills the run bounds (1 + 0 queued): the next is 429.
    let dir = s.env.home.path().join("gate");
    std::fs::create_dir_all(&dir).expect("dir");
    let body = json!({"runbook": "waiter", "inputs": {"dir": dir.display().to_string()}});
    let (status, first) = s
        .call("POST", "/api/v1/runs", Some(&ops), Some(body.clone()))
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{first}");
    let resp = s
        .client
        .post(format!("{}/api/v1/runs", s.url))
        .bearer_auth(&ops)
        .json(&body)
        .send()
        .await
        .expect("send");
    assert_eq!(resp.status(), StatusCode::TOO_MANY_REQUESTS);
    assert!(resp.headers().contains_key("retry-after"));
    std::fs::write(dir.join("go"), "").expect("go");
    let id = first["run_id"].as_str().expect("id");
    assert_eq!(s.wait_finished(id).await, RunStatus::Succeeded);

    // A request whose body never finishes holds the only in-flight slot:
    // the next API request is shed with 503 + Retry-After; health answers.
    use tokio::io::AsyncWriteExt;
    let addr = s.url.trim_start_matches("http://").to_string();
    // The slow request must itself get the slot: if another request holds it
    // at that moment, the slow one is shed at once (503, connection answered).
    // Wait until it has been dispatched and is still unanswered.
    let mut slow = None;
    for _ in 0..50 {
        let mut conn = tokio::net::TcpStream::connect(&addr)
            .await
            .expect("connect");
        conn.write_all(
            format!("POST /api/v1/runs HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {ops}\r\ncontent-type: application/json\r\ncontent-length: 500\r\n\r\n{{\"runbook\"").as_bytes(),
        )
        .await
        .expect("write");
        tokio::time::sleep(Duration::from_millis(200)).await;
        let mut buf = [0u8; 64];
        match conn.try_read(&mut buf) {
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                slow = Some(conn);
                break;
            }
            _ => continue, // answered (shed) or closed: try again
        }
    }
    let slow = slow.expect("a slow request holds the in-flight slot");
    let mut shed = None;
    // Up to 10 s for the slow request to be in flight on a busy machine.
    for _ in 0..500 {
        let resp = s
            .client
            .get(format!("{}/api/v1/runs", s.url))
            .bearer_auth(&ops)
            .send()
            .await
            .expect("send");
        if resp.status() == StatusCode::SERVICE_UNAVAILABLE {
            shed = Some(resp);
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let shed = shed.expect("a request was shed");
    assert!(shed.headers().contains_key("retry-after"));
    let (status, _) = s.call("GET", "/healthz", None, None).await;
    assert_eq!(status, StatusCode::OK);
    let (status, _) = s.call("GET", "/readyz", None, None).await;
    assert_eq!(
        status,
        StatusCode::SERVICE_UNAVAILABLE,
        "not ready while shedding"
    );
    drop(slow);
    assert!(s.state.metrics.shed_total() >= 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runbooks_are_validated_and_published_through_the_api() {
    let s = server(ServerConfig::default()).await;
    let admin = s.token("admin", Role::Admin, &[]).await;
    let v2 = QUICK.replace("version: 1", "version: 2");
    let (status, ok) = s
        .call(
            "POST",
            "/api/v1/runbooks/validate",
            Some(&admin),
            Some(json!({"source": v2})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{ok}");
    assert_eq!(ok["version"], 2);
    // Every problem, with line and column.
    let broken = v2
        .replace("trivial@0.1.0", "nope@1.0.0")
        .replace("id: one", "id: one\n    colour: red");
    let (status, err) = s
        .call(
            "POST",
            "/api/v1/runbooks/validate",
            Some(&admin),
            Some(json!({"source": broken})),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    let message = err["error"]["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("colour") && message.contains("runbook.yaml:6:5"),
        "{message}"
    );
    let (status, published) = s
        .call(
            "POST",
            "/api/v1/runbooks",
            Some(&admin),
            Some(json!({"source": v2})),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{published}");
    let (status, _) = s
        .call(
            "POST",
            "/api/v1/runbooks",
            Some(&admin),
            Some(json!({"source": v2})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "same content again is a no-op");
    let changed = v2.replace("id: one", "id: other");
    let (status, err) = s
        .call(
            "POST",
            "/api/v1/runbooks",
            Some(&admin),
            Some(json!({"source": changed})),
        )
        .await;
    assert_eq!(status, StatusCode::CONFLICT, "{err}");
    let (_, latest) = s
        .call("GET", "/api/v1/runbooks/quick", Some(&admin), None)
        .await;
    assert_eq!(latest["version"], 2);
    assert_eq!(latest["published_by"], "token:admin");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_past_its_deadline_is_answered_503_and_others_are_not() {
    let s = server(ServerConfig {
        request_timeout_ms: 1000,
        ..ServerConfig::default()
    })
    .await;
    let ops = s.token("ops", Role::Operator, &[]).await;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let addr = s.url.trim_start_matches("http://").to_string();
    let head = |len: usize| {
        format!(
            "POST /api/v1/runs HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {ops}\r\ncontent-type: application/json\r\ncontent-length: {len}\r\nconnection: close\r\n\r\n"
        )
    };
    // A body sent slowly but within the deadline is served.
    let body = r#"{"runbook": "quick"}"#;
    let mut ok = tokio::net::TcpStream::connect(&addr)
        .await
        .expect("connect");
    ok.write_all(head(body.len()).as_bytes())
        .await
        .expect("write");
    tokio::time::sleep(Duration::from_millis(100)).await;
    ok.write_all(body.as_bytes()).await.expect("write");
    let mut answer = String::new();
    ok.read_to_string(&mut answer).await.expect("read");
    assert!(answer.starts_with("HTTP/1.1 202"), "{answer}");
    // A body that never completes: 503 naming the limit once the deadline passes.
    let mut stuck = tokio::net::TcpStream::connect(&addr)
        .await
        .expect("connect");
    stuck.write_all(head(500).as_bytes()).await.expect("write");
    stuck.write_all(b"{\"runbook\"").await.expect("write");
    let mut answer = String::new();
    tokio::time::timeout(Duration::from_secs(30), stuck.read_to_string(&mut answer))
        .await
        .expect("answered before the test's own deadline")
        .expect("read");
    assert!(answer.starts_with("HTTP/1.1 503"), "{answer}");
    assert!(answer.contains("server.request-timeout-ms"), "{answer}");
}

/// Serve until the returned sender fires; returns the URL and the serve task.
async fn stoppable(
    env: &TestEnv,
    config: ServerConfig,
) -> (
    String,
    tokio::sync::oneshot::Sender<()>,
    tokio::task::JoinHandle<std::io::Result<()>>,
) {
    let state = AppState::new(env.service.clone(), config);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("addr"));
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(firedrill::server::serve(state, listener, async move {
        let _ = rx.await;
    }));
    (url, tx, task)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_lets_runs_finish_within_the_grace_period_and_records_the_rest() {
    let env = TestEnv::new().await;
    env.publish(&[WAIT_FOR]).await;
    let ops = env.token("ops", Role::Operator, &[]).await;
    let client = reqwest::Client::new();
    let start = |url: String, dir: std::path::PathBuf| {
        let client = client.clone();
        let ops = ops.clone();
        async move {
            std::fs::create_dir_all(&dir).expect("dir");
            let answer: Value = client
                .post(format!("{url}/api/v1/runs"))
                .bearer_auth(&ops)
                .json(&json!({"runbook": "waiter", "mode": "live", "force_untested": true, "inputs": {"dir": dir.display().to_string()}}))
                .send()
                .await
                .expect("send")
                .json()
                .await
                .expect("json");
            answer["run_id"].as_str().expect("id").to_string()
        }
    };
    let wait_started = |id: String| {
        let store = env.store.clone();
        async move {
            for _ in 0..600 {
                // Claimed by the node (not just queued).
                if store
                    .run(&id)
                    .await
                    .expect("read")
                    .is_some_and(|r| r.status != RunStatus::Queued)
                {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            panic!("run {id} never started");
        }
    };

    // Finishes within the grace period: it completes normally.
    let (url, stop, task) = stoppable(
        &env,
        ServerConfig {
            shutdown_grace_ms: 20_000,
            ..ServerConfig::default()
        },
    )
    .await;
    let gate = env.home.path().join("finishes");
    let id = start(url, gate.clone()).await;
    wait_started(id.clone()).await;
    stop.send(()).expect("stop");
    tokio::time::sleep(Duration::from_millis(200)).await;
    std::fs::write(gate.join("go"), "").expect("go");
    task.await.expect("join").expect("serve");
    let run = env.store.run(&id).await.expect("read").expect("run");
    assert_eq!(run.status, RunStatus::Succeeded, "{:?}", run.error);

    // Outlives the grace period: recorded as interrupted, with what to do.
    let (url, stop, task) = stoppable(
        &env,
        ServerConfig {
            shutdown_grace_ms: 300,
            ..ServerConfig::default()
        },
    )
    .await;
    let gate = env.home.path().join("never");
    let id = start(url, gate).await;
    wait_started(id.clone()).await;
    stop.send(()).expect("stop");
    task.await.expect("join").expect("serve");
    let run = env.store.run(&id).await.expect("read").expect("run");
    assert_eq!(run.status, RunStatus::Interrupted);
    assert!(run.error.expect("error").contains("check the targets"));
    let interrupted = env
        .store
        .audit(&AuditFilter {
            action: Some("run.interrupted".into()),
            ..AuditFilter::default()
        })
        .await
        .expect("audit");
    assert_eq!(interrupted.len(), 1);
}
