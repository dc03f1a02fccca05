//! The hardening issue, item by item, as an attacker and a careless
//! operator would try it: each test reproduces what was reported against
//! the old build (a crash, a token reaching past its scope, an
//! unauthenticated client locking everyone out, a person counting twice,
//! escapes printed raw, a world-readable database, ...) and asserts the
//! fixed behaviour.

use std::io::{Read as _, Write as _};
use std::net::TcpStream;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use firedrill::audit::Actor;
use firedrill::auth::Role;
use firedrill::server::{AppState, ServerConfig};
use firedrill::store::{AuditFilter, Batch, RunFilter, RunStatus, Write};
use firedrill_tests::{CANARY, TestEnv, firedrill_bin};
use reqwest::StatusCode;
use serde_json::{Value, json};

fn runbook(name: &str, alertname: &str) -> String {
    format!(
        r#"apiVersion: firedrill/v1
name: {name}
version: 1
inputs: {{ type: object, properties: {{ note: {{ type: string }} }} }}
steps:
  - id: one
    kernel: trivial@0.1.0
    targets: [demo-host]
triggers:
  - source: generic
    match: {{ alertname: {alertname} }}
    inputs: {{ note: "{{{{ alert.labels.note }}}}" }}
    cooldown: 1s
"#
    )
}

const GATED: &str = r#"apiVersion: firedrill/v1
name: gated
version: 1
steps:
  - id: approve
    approval: { required: 2, roles: [approver], timeout: 5m }
  - id: act
    kernel: trivial@0.1.0
    targets: [demo-host]
"#;

struct Api {
    url: String,
    env: TestEnv,
    state: AppState,
    client: reqwest::Client,
}

async fn api(config: ServerConfig) -> Api {
    let env = TestEnv::new().await;
    env.publish(&[
        &runbook("alpha", "AlphaDown"),
        &runbook("beta", "BetaDown"),
        GATED,
    ])
    .await;
    let (url, state) = env
        .serve(ServerConfig {
            drills: false,
            ..config
        })
        .await;
    Api {
        url,
        env,
        state,
        client: reqwest::Client::new(),
    }
}

impl Api {
    async fn call(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        firedrill_tests::api_call(&self.client, &self.url, method, path, token, body).await
    }

    /// Start a live run of `gated` (it waits for two approvals) as `token`.
    async fn start_gated(&self, token: &str) -> String {
        let (status, answer) = self
            .call(
                "POST",
                "/api/v1/runs",
                Some(token),
                Some(json!({"runbook": "gated", "mode": "live", "force_untested": true})),
            )
            .await;
        assert_eq!(status, StatusCode::ACCEPTED, "{answer}");
        answer["run_id"].as_str().expect("id").to_string()
    }

    async fn audit_len(&self) -> usize {
        self.env
            .store
            .audit(&AuditFilter {
                limit: 1000,
                ..AuditFilter::default()
            })
            .await
            .expect("audit")
            .len()
    }

    fn addr(&self) -> String {
        self.url.trim_start_matches("http://").to_string()
    }

    async fn audit(&self, action: &str) -> Vec<firedrill::audit::AuditRecord> {
        self.env
            .store
            .audit(&AuditFilter {
                action: Some(action.into()),
                limit: 1000,
                ..AuditFilter::default()
            })
            .await
            .expect("audit")
    }
}

fn nested_sequences(levels: usize) -> String {
    format!(
        "apiVersion: firedrill/v1\nname: deep\nversion: 1\nx:\n  {}a\n",
        "- ".repeat(levels)
    )
}

fn nested_mappings(levels: usize) -> String {
    let mut s = String::from("apiVersion: firedrill/v1\nname: deep\nversion: 1\n");
    for i in 0..levels {
        s.push_str(&" ".repeat(i));
        s.push_str("k:\n");
    }
    s.push_str(&" ".repeat(levels));
    s.push_str("v\n");
    s
}

fn nested_flow_mappings(levels: usize) -> String {
    format!(
        "apiVersion: firedrill/v1\nname: deep\nversion: 1\nx: {}1{}\n",
        "{k: ".repeat(levels),
        "}".repeat(levels)
    )
}

/// Run the binary on `home` with `args`.
fn firedrill(home: &Path, args: &[&str]) -> Output {
    firedrill_tests::run_firedrill(home, args)
}

fn text(out: &Output) -> String {
    firedrill_tests::output_text(out)
}

// 1. One request crashed `firedrill serve`; the CLI died the same way.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deeply_nested_yaml_is_refused_and_the_server_keeps_serving() {
    let a = api(ServerConfig::default()).await;
    let viewer = a.env.token("viewer", Role::Viewer, &[]).await;
    // 30,000 levels aborted the release build, 1,000 the debug build.
    for source in [
        nested_sequences(1_000),
        nested_sequences(30_000),
        nested_mappings(300),
        nested_flow_mappings(3_000),
        format!("x: {}", "[".repeat(100_000)),
    ] {
        let (status, answer) = a
            .call(
                "POST",
                "/api/v1/runbooks/validate",
                Some(&viewer),
                Some(json!({ "source": source })),
            )
            .await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{answer}");
        let message = answer["error"]["message"].as_str().expect("message");
        assert!(message.contains("nested more than 64 levels"), "{message}");
    }
    // At the edge: 64 levels are fine as far as nesting goes.
    let (_, answer) = a
        .call(
            "POST",
            "/api/v1/runbooks/validate",
            Some(&viewer),
            Some(json!({ "source": nested_sequences(62) })),
        )
        .await;
    assert!(!answer.to_string().contains("nested more than"), "{answer}");
    let (status, _) = a.call("GET", "/healthz", None, None).await;
    assert_eq!(status, StatusCode::OK, "the server is still up");
}

#[test]
fn the_cli_refuses_deep_huge_and_noisy_runbooks_with_a_clear_error() {
    let home = tempfile::tempdir().expect("home");
    let dir = tempfile::tempdir().expect("dir");
    let write = |name: &str, text: &str| {
        let path = dir.path().join(name);
        std::fs::write(&path, text).expect("write");
        path.display().to_string()
    };
    for (name, source) in [
        ("seq.yaml", nested_sequences(30_000)),
        ("map.yaml", nested_mappings(300)),
        ("flow.yaml", nested_flow_mappings(3_000)),
    ] {
        let file = write(name, &source);
        let out = firedrill(home.path(), &["runbook", "validate", &file]);
        assert_eq!(out.status.code(), Some(2), "{}", text(&out));
        assert!(
            text(&out).contains("nested more than 64 levels"),
            "{}",
            text(&out)
        );
    }
    // 10 MB was indexed (14 s, 369 MB) before it was refused.
    let big = write(
        "big.yaml",
        &format!("name: x\n# {}\n", "a".repeat(10 << 20)),
    );
    let out = firedrill(home.path(), &["runbook", "validate", &big]);
    assert_ne!(out.status.code(), Some(0));
    assert!(
        text(&out).contains("larger than 1048576 bytes"),
        "{}",
        text(&out)
    );
    // A 240 KB source listed 20,000 problems (3.6 MB); now the first
    // ones and how many more.
    let mut noisy = String::from("apiVersion: firedrill/v1\nname: noisy\nversion: 1\nsteps:\n");
    for i in 0..20_000 {
        noisy.push_str(&format!("  - {{ id: s{i}, bogus: 1 }}\n"));
    }
    let file = write("noisy.yaml", &noisy);
    let out = firedrill(home.path(), &["runbook", "validate", &file, "--json"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(out.stdout.len() < 200_000, "{} bytes", out.stdout.len());
    let report: Value = serde_json::from_slice(&out.stdout).expect("json");
    let listed = report["problems"].as_array().map_or(0, Vec::len);
    assert_eq!(listed, firedrill::runbook::MAX_PROBLEMS, "{report}");
    assert!(
        report["omitted"].as_u64().expect("omitted") > 19_000,
        "{report}"
    );
}

// 2. A runbook-scoped admin became a full admin.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scoped_admin_cannot_mint_see_or_revoke_wider_tokens() {
    let a = api(ServerConfig::default()).await;
    let scoped = a.env.token("alpha-admin", Role::Admin, &["alpha"]).await;
    a.env.token("root-viewer", Role::Viewer, &[]).await;
    a.env.token("beta-ops", Role::Operator, &["beta"]).await;
    a.env.token("alpha-ops", Role::Operator, &["alpha"]).await;
    let mint = |name: &str, role: &str, runbooks: Value| json!({"name": name, "role": role, "runbooks": runbooks});
    for (body, why) in [
        (mint("escalated", "admin", json!([])), "unscoped admin"),
        (mint("wide", "viewer", json!([])), "unscoped viewer"),
        (mint("other", "viewer", json!(["beta"])), "another runbook"),
        (
            mint("both", "viewer", json!(["alpha", "beta"])),
            "a wider scope",
        ),
    ] {
        let (status, answer) = a
            .call("POST", "/api/v1/tokens", Some(&scoped), Some(body))
            .await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{why}: {answer}");
    }
    let (status, answer) = a
        .call(
            "POST",
            "/api/v1/tokens",
            Some(&scoped),
            Some(mint("alpha-viewer", "viewer", json!(["alpha"]))),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{answer}");
    assert_eq!(answer["owner"], "alpha-admin", "the minter's own person");
    // It sees only tokens within its scope.
    let (_, listed) = a.call("GET", "/api/v1/tokens", Some(&scoped), None).await;
    let mut names: Vec<&str> = listed["tokens"]
        .as_array()
        .expect("tokens")
        .iter()
        .filter_map(|t| t["name"].as_str())
        .collect();
    names.sort_unstable();
    assert_eq!(names, ["alpha-admin", "alpha-ops", "alpha-viewer"]);
    // And cannot revoke the others: they do not exist for it.
    for victim in ["root-viewer", "beta-ops", "default-missing"] {
        let (status, _) = a
            .call(
                "DELETE",
                &format!("/api/v1/tokens/{victim}"),
                Some(&scoped),
                None,
            )
            .await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{victim}");
    }
    let (status, _) = a
        .call("DELETE", "/api/v1/tokens/alpha-ops", Some(&scoped), None)
        .await;
    assert_eq!(status, StatusCode::OK);
    // The refusals are in the audit log, with the token that tried.
    let refused = a.audit("request.refused").await;
    assert!(
        refused
            .iter()
            .filter(|r| r.actor_id == "alpha-admin" && r.subject == "POST /api/v1/tokens")
            .count()
            >= 4,
        "{refused:?}"
    );
    // Through the API, a token can only be minted for its minter's own
    // person: an admin inventing "bob" and "carol" could approve alone.
    let admin = a.env.token_of("root", Role::Admin, &[], "alice").await;
    for owner in ["bob", "carol"] {
        let (status, answer) = a
            .call(
                "POST",
                "/api/v1/tokens",
                Some(&admin),
                Some(json!({"name": format!("{owner}-approver"), "role": "approver", "owner": owner})),
            )
            .await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{answer}");
        assert!(
            answer
                .to_string()
                .contains("firedrill token create --owner"),
            "{answer}"
        );
    }
    let (status, answer) = a
        .call(
            "POST",
            "/api/v1/tokens",
            Some(&admin),
            Some(json!({"name": "alice-approver", "role": "approver", "owner": "alice"})),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{answer}");
    // At the CLI (the machine owner) a token without an owner is refused.
    let out = firedrill(
        a.env.home.path(),
        &[
            "token", "create", "--name", "nobody", "--role", "viewer", "--owner", "",
        ],
    );
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(text(&out).contains("token owner"), "{}", text(&out));
}

// 3. A webhook token's runbook scope was ignored.

fn generic_alert(id: &str, alertname: &str, note: &str) -> Value {
    json!({"alerts": [{"id": id, "starts_at": "2026-12-01T02:00:00Z",
        "labels": {"alertname": alertname, "note": note}}]})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scoped_webhook_token_starts_only_runbooks_in_its_scope() {
    let a = api(ServerConfig::default()).await;
    let hook = a.env.token("alpha-hook", Role::Webhook, &["alpha"]).await;
    let (status, answer) = a
        .call(
            "POST",
            "/api/v1/alerts/generic",
            Some(&hook),
            Some(generic_alert("b1", "BetaDown", "x")),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert_eq!(
        answer["decisions"][0]["outcome"], "out-of-scope",
        "{answer}"
    );
    assert!(
        !answer.to_string().contains("beta"),
        "the sender is not told which runbook: {answer}"
    );
    let runs = a.env.store.runs(&RunFilter::default()).await.expect("runs");
    assert!(runs.is_empty(), "nothing started: {runs:?}");
    let received = a.audit("alert.received").await;
    assert_eq!(received.len(), 1);
    assert_eq!(received[0].outcome, "out-of-scope");
    assert_eq!(received[0].subject, "runbook:beta");
    // Its own runbook still starts.
    let (_, answer) = a
        .call(
            "POST",
            "/api/v1/alerts/generic",
            Some(&hook),
            Some(generic_alert("a1", "AlphaDown", "x")),
        )
        .await;
    assert_eq!(answer["decisions"][0]["outcome"], "started", "{answer}");
}

// 4. Scoped tokens read other runbooks' names through /metrics.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_are_refused_to_scoped_tokens() {
    let a = api(ServerConfig::default()).await;
    let scoped = a.env.token("alpha-viewer", Role::Viewer, &["alpha"]).await;
    let (status, answer) = a.call("GET", "/metrics", Some(&scoped), None).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert!(!answer.to_string().contains("beta"), "{answer}");
    let full = a.env.token("viewer", Role::Viewer, &[]).await;
    let (status, answer) = a.call("GET", "/metrics", Some(&full), None).await;
    assert_eq!(status, StatusCode::OK);
    assert!(answer.as_str().expect("text").contains("runbook=\"beta\""));
}

// 5. Anyone, without a token, made the whole API answer 503.

/// Open a connection and send the headers of a POST whose body never
/// comes (a byte now and then keeps it from looking idle).
fn trickle(addr: &str, path: &str) -> TcpStream {
    let mut s = TcpStream::connect(addr).expect("connect");
    let head = format!(
        "POST {path} HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\nx-pagerduty-signature: v1=00\r\ncontent-length: 100000\r\n\r\n{{"
    );
    s.write_all(head.as_bytes()).expect("write");
    s
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unauthenticated_slow_bodies_never_take_the_budget_of_authenticated_work() {
    let a = api(ServerConfig {
        max_in_flight: 16,
        max_in_flight_unauthenticated: 8,
        unauthenticated_timeout_ms: 60_000,
        request_timeout_ms: 60_000,
        pagerduty_secrets: vec!["canary".into()],
        ..ServerConfig::default()
    })
    .await;
    let viewer = a.env.token("viewer", Role::Viewer, &[]).await;
    let ops = a.env.token("ops", Role::Operator, &[]).await;
    let addr = a.addr();
    // Far more slow bodies than both budgets together.
    let mut held = Vec::new();
    for i in 0..60 {
        let path = if i % 2 == 0 {
            "/api/v1/alerts/pagerduty"
        } else {
            "/console/session"
        };
        held.push(trickle(&addr, path));
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    // Authenticated work, the switch and readiness all answer.
    let (status, _) = a.call("GET", "/api/v1/runs", Some(&viewer), None).await;
    assert_eq!(status, StatusCode::OK);
    let (status, answer) = a
        .call(
            "PUT",
            "/api/v1/switch",
            Some(&ops),
            Some(json!({"engaged": true, "reason": "under attack"})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    let (status, _) = a.call("GET", "/readyz", None, None).await;
    assert_eq!(status, StatusCode::OK);
    // More unauthenticated work is shed, and says which limit.
    let (status, answer) = a
        .call(
            "POST",
            "/console/session",
            None,
            Some(json!({"token": "x"})),
        )
        .await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{answer}");
    assert!(answer.to_string().contains("max-in-flight-unauthenticated"));
    drop(held);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_unauthenticated_body_gets_a_short_deadline_and_a_disabled_source_answers_at_once() {
    let a = api(ServerConfig {
        unauthenticated_timeout_ms: 300,
        ..ServerConfig::default()
    })
    .await;
    // PagerDuty is not configured: refused without reading the body
    // (which never comes).
    let mut s = trickle(&a.addr(), "/api/v1/alerts/pagerduty");
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    let mut answer = String::new();
    let _ = s.read_to_string(&mut answer);
    assert!(answer.starts_with("HTTP/1.1 403"), "{answer}");
    // A sign-in body that never finishes is cut at the deadline.
    let mut s = trickle(&a.addr(), "/console/session");
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    let mut answer = String::new();
    let _ = s.read_to_string(&mut answer);
    assert!(answer.starts_with("HTTP/1.1 503"), "{answer}");
    assert!(answer.contains("unauthenticated-timeout-ms"), "{answer}");
}

// 6. Idle and half-open connections were never dropped.

/// Whether the server closed `s` (EOF or reset) within `within`.
fn closed_by_server(s: &mut TcpStream, within: Duration) -> bool {
    s.set_read_timeout(Some(within)).expect("timeout");
    let mut buf = [0u8; 4096];
    loop {
        match s.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => continue,
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return true,
            Err(_) => return false,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn half_open_connections_are_dropped_and_connections_are_capped() {
    let a = api(ServerConfig {
        header_read_timeout_ms: 500,
        max_connections: 100,
        // Every test client is 127.0.0.1: the per-address cap is tested below.
        max_connections_per_ip: 0,
        ..ServerConfig::default()
    })
    .await;
    let addr = a.addr();
    // 300 connections with half a request line and half the headers:
    // the first 100 are held until their header deadline, the rest are
    // closed as soon as they are accepted.
    let mut half_open: Vec<TcpStream> = (0..300)
        .map(|_| {
            let mut s = TcpStream::connect(&addr).expect("connect");
            let _ = s.write_all(b"GET /healthz HTTP/1.1\r\nhost: x\r\nx-slow: ");
            s
        })
        .collect();
    let started = Instant::now();
    let mut over_cap = 0;
    for s in half_open.iter_mut().skip(100) {
        if closed_by_server(s, Duration::from_millis(300)) {
            over_cap += 1;
        }
    }
    assert!(
        over_cap >= 150,
        "{over_cap} of 200 over the cap were closed at once"
    );
    for s in half_open.iter_mut().take(100) {
        assert!(
            closed_by_server(s, Duration::from_secs(5)),
            "a half-open connection was kept past server.header-read-timeout-ms ({:?} in)",
            started.elapsed()
        );
    }
    drop(half_open);
    // Health answers once they are gone.
    let (status, _) = a.call("GET", "/healthz", None, None).await;
    assert_eq!(status, StatusCode::OK);
    // (Connections still waiting in the listen backlog when the first
    // hundred were closed got their turn, so fewer than 200 are shed.)
    let shed = a.state.metrics.shed_total();
    assert!(
        shed >= 100,
        "connections over the cap are counted as shed: {shed}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_client_address_cannot_take_every_connection() {
    let a = api(ServerConfig {
        max_connections_per_ip: 5,
        ..ServerConfig::default()
    })
    .await;
    let mut held: Vec<TcpStream> = (0..5)
        .map(|_| TcpStream::connect(a.addr()).expect("connect"))
        .collect();
    // Let the server accept those five before the sixth arrives.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut sixth = TcpStream::connect(a.addr()).expect("connect");
    assert!(
        closed_by_server(&mut sixth, Duration::from_secs(2)),
        "the sixth is closed at once"
    );
    assert!(
        !closed_by_server(&mut held[0], Duration::from_millis(200)),
        "the five stay"
    );
    let admin = a.env.token("admin", Role::Admin, &[]).await;
    drop(held);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (_, metrics) = a.call("GET", "/metrics", Some(&admin), None).await;
    assert!(
        metrics
            .as_str()
            .expect("text")
            .contains("firedrill_shed_total{reason=\"max-connections-per-ip\"} 1"),
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_keep_alive_connection_is_closed() {
    // The header deadline is far away: only the idle timer can close it.
    let a = api(ServerConfig {
        header_read_timeout_ms: 600_000,
        idle_timeout_ms: 500,
        request_timeout_ms: 1_000,
        ..ServerConfig::default()
    })
    .await;
    let mut s = TcpStream::connect(a.addr()).expect("connect");
    s.write_all(b"GET /healthz HTTP/1.1\r\nhost: x\r\n\r\n")
        .expect("write");
    let mut first = [0u8; 15];
    s.read_exact(&mut first).expect("answer");
    assert_eq!(&first, b"HTTP/1.1 200 OK");
    assert!(
        closed_by_server(&mut s, Duration::from_secs(5)),
        "an idle keep-alive connection was kept past server.idle-timeout-ms"
    );
    // So is one that sends part of its headers and stops (after the idle
    // timeout and then the request timeout, without a byte).
    let mut s = TcpStream::connect(a.addr()).expect("connect");
    s.write_all(b"GET /healthz HTTP/1.1\r\nhost: x\r\n")
        .expect("write");
    assert!(closed_by_server(&mut s, Duration::from_secs(5)));
}

// 7. The two-person rule was met by one person; the actor was self-asserted.

/// Wait until run `id` waits for approval (a slow machine may take a while
/// to claim it); anything else it becomes is a failure, with its error.
async fn wait_awaiting(a: &Api, id: &str) {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let run = a.env.store.run(id).await.expect("run").expect("exists");
        if run.status == RunStatus::AwaitingApproval {
            return;
        }
        assert!(
            run.status.is_pending() && Instant::now() < deadline,
            "run {id} did not come to wait for approval: {:?} {:?}",
            run.status,
            run.error
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_tokens_of_one_person_count_once_in_an_approval() {
    let a = api(ServerConfig::default()).await;
    let boss = a.env.token_of("boss", Role::Admin, &[], "carol").await;
    let one = a
        .env
        .token_of("alice-laptop", Role::Approver, &[], "alice")
        .await;
    let two = a
        .env
        .token_of("alice-phone", Role::Approver, &[], "alice")
        .await;
    let bobs = a
        .env
        .token_of("bob-laptop", Role::Approver, &[], "bob")
        .await;
    let carols = a
        .env
        .token_of("carol-approver", Role::Approver, &[], "carol")
        .await;
    let id = a.start_gated(&boss).await;
    wait_awaiting(&a, &id).await;
    let approve = format!("/api/v1/runs/{id}/approve");
    let ok = json!({"comment": "lgtm"});
    // The starter's own approver token is the same person.
    let (status, answer) = a
        .call("POST", &approve, Some(&carols), Some(ok.clone()))
        .await;
    assert_eq!(status, StatusCode::CONFLICT, "{answer}");
    assert!(answer.to_string().contains("two-person"), "{answer}");
    let (status, _) = a.call("POST", &approve, Some(&one), Some(ok.clone())).await;
    assert_eq!(status, StatusCode::OK);
    let (status, answer) = a.call("POST", &approve, Some(&two), Some(ok.clone())).await;
    assert_eq!(status, StatusCode::CONFLICT, "{answer}");
    assert!(
        answer.to_string().contains("one person counts once"),
        "{answer}"
    );
    assert_eq!(
        a.env
            .store
            .run(&id)
            .await
            .expect("run")
            .expect("exists")
            .status,
        RunStatus::AwaitingApproval,
        "one person's two tokens did not meet a two-person rule"
    );
    let (status, _) = a.call("POST", &approve, Some(&bobs), Some(ok)).await;
    assert_eq!(status, StatusCode::OK);
    // Every record says how its actor was established, and who is behind it.
    let approved = a.audit("approval.approved").await;
    let auth: Vec<Value> = approved
        .iter()
        .map(|r| serde_json::from_str::<Value>(&r.details).expect("details")["actor_auth"].clone())
        .collect();
    assert_eq!(
        auth,
        [
            json!({"via": "token", "person": "alice"}),
            json!({"via": "token", "person": "bob"})
        ]
    );
    // Both refusals were audited.
    let refused = a.audit("request.refused").await;
    assert_eq!(refused.len(), 2, "{refused:?}");
    assert!(refused.iter().all(|r| r.outcome == "conflict"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn at_the_cli_one_os_user_is_one_person_whatever_actor_it_names() {
    // Built before the run starts: on a fresh clone the first build takes
    // minutes, longer than the approval step waits (CI found it).
    firedrill_bin();
    let a = api(ServerConfig::default()).await;
    let boss = a.env.token_of("boss", Role::Admin, &[], "carol").await;
    let id = a.start_gated(&boss).await;
    wait_awaiting(&a, &id).await;
    let home = a.env.home.path();
    let approve = |actor: &str| {
        firedrill(
            home,
            &["--actor", actor, "approve", &id, "--comment", "looks fine"],
        )
    };
    let out = approve("alice");
    assert!(out.status.success(), "{}", text(&out));
    let out = approve("bob");
    assert_ne!(out.status.code(), Some(0), "{}", text(&out));
    assert!(
        text(&out).contains("one person counts once"),
        "{}",
        text(&out)
    );
    // No other kind of actor can be claimed.
    for claim in ["alert-source:pagerduty", "token:boss", "scheduler:drill"] {
        let out = firedrill(home, &["--actor", claim, "switch", "on", "--reason", "x"]);
        assert_eq!(out.status.code(), Some(2), "{claim}: {}", text(&out));
        assert!(
            text(&out).contains("--actor may only name a person"),
            "{}",
            text(&out)
        );
    }
    // The record names the person as given and how the actor was known.
    let approved = a.audit("approval.approved").await;
    assert_eq!(approved.len(), 1);
    assert_eq!(approved[0].actor_id, "alice");
    let details: Value = serde_json::from_str(&approved[0].details).expect("details");
    assert_eq!(details["actor_auth"]["via"], "os-user-named");
    let os_user = nix::unistd::User::from_uid(nix::unistd::getuid())
        .ok()
        .flatten()
        .map(|u| u.name)
        .expect("passwd entry");
    assert_eq!(details["actor_auth"]["person"], os_user.as_str());
}

// 8. Terminal escape injection.

const FAKE: &str = "ok\u{1b}[2K\r\u{1b}[32mSUCCEEDED all checks passed\u{1b}[0m\nreal line";

fn assert_clean(what: &str, out: &[u8]) {
    let shown = String::from_utf8_lossy(out);
    assert!(
        !shown.contains('\u{1b}') && !shown.contains('\r') && !shown.contains("\nreal line"),
        "{what} printed a control character from input: {shown:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nothing_from_input_reaches_the_terminal_as_a_control_character() {
    let a = api(ServerConfig::default()).await;
    let ops = a.env.token("ops", Role::Operator, &[]).await;
    let hook = a.env.token("hook", Role::Webhook, &[]).await;
    // Reasons with control characters are refused at the door.
    let (status, answer) = a
        .call(
            "PUT",
            "/api/v1/switch",
            Some(&ops),
            Some(json!({"engaged": true, "reason": FAKE})),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{answer}");
    // Labels are data: the run starts, and its inputs carry them.
    let (_, answer) = a
        .call(
            "POST",
            "/api/v1/alerts/generic",
            Some(&hook),
            Some(generic_alert("a1", "AlphaDown", FAKE)),
        )
        .await;
    let id = answer["decisions"][0]["run_id"]
        .as_str()
        .expect("started")
        .to_string();
    // What a database owner could write directly: a switch reason and a
    // run error full of escapes.
    a.env
        .store
        .apply(
            Batch::new().write(Write::SetSwitch(
                serde_json::from_value(json!({
                    "scope": "global", "engaged": true, "reason": FAKE,
                    "actor": "user:mallory", "changed_at": "2026-12-01T00:00:00.000Z"
                }))
                .expect("switch row"),
            )),
        )
        .await
        .expect("write");
    for _ in 0..200 {
        if a.env
            .store
            .run(&id)
            .await
            .expect("run")
            .is_some_and(|r| !r.status.is_pending())
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let home = a.env.home.path();
    for args in [
        vec!["switch", "status"],
        vec!["runs", "show", &id],
        vec!["runs", "list"],
        vec!["audit", "list", "--limit", "1000"],
    ] {
        let out = firedrill(home, &args);
        assert!(out.status.success(), "{args:?}: {}", text(&out));
        assert_clean(&format!("{args:?}"), &out.stdout);
        assert_clean(&format!("{args:?} (stderr)"), &out.stderr);
    }
    let out = firedrill(home, &["runs", "show", &id, "--json"]);
    let shown: Value = serde_json::from_slice(&out.stdout).expect("still JSON");
    assert_eq!(
        shown["inputs"]["note"], FAKE,
        "JSON keeps the value exactly"
    );
    // A live run refused by that switch says why, escaped too.
    let rb = a.env.home.path().join("alpha.yaml");
    std::fs::write(&rb, runbook("alpha", "AlphaDown")).expect("write");
    let out = firedrill(
        home,
        &[
            "run",
            &rb.display().to_string(),
            "--live",
            "--force-untested",
        ],
    );
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert_clean("a refused run", &out.stderr);
    assert!(
        text(&out).contains("SUCCEEDED all checks passed"),
        "{}",
        text(&out)
    );
    // And the console renders every value as text, never as HTML.
    let script = std::fs::read_to_string(firedrill_tests::workspace_root().join("web/console.js"))
        .expect("console.js");
    for sink in [
        "innerHTML",
        "outerHTML",
        "insertAdjacentHTML",
        "document.write",
    ] {
        assert!(!script.contains(sink), "console.js uses {sink}");
    }
}

// 9. World-readable database.

#[test]
fn every_file_in_the_home_is_owner_only_whatever_the_umask() {
    let root = tempfile::tempdir().expect("root");
    let home = root.path().join("home");
    std::fs::create_dir(&home).expect("mkdir");
    std::fs::set_permissions(&home, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    // A running server holds the database, its WAL and SHM open.
    let mut child = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "umask 000 && exec {} --home {} serve --listen 127.0.0.1:0",
            firedrill_bin().display(),
            home.display()
        ))
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("serve");
    let mut stdout = child.stdout.take().expect("stdout");
    let mut line = [0u8; 64];
    let _ = stdout.read(&mut line);
    assert!(String::from_utf8_lossy(&line).contains("listening"));
    let mut seen = Vec::new();
    for entry in walk(&home) {
        let mode = std::fs::metadata(&entry)
            .expect("meta")
            .permissions()
            .mode()
            & 0o777;
        if entry.is_file() {
            assert_eq!(mode & 0o077, 0, "{} is mode {mode:o}", entry.display());
            seen.push(
                entry
                    .file_name()
                    .expect("name")
                    .to_string_lossy()
                    .into_owned(),
            );
        } else {
            assert_eq!(
                mode & 0o077,
                0,
                "directory {} is mode {mode:o}",
                entry.display()
            );
        }
    }
    let _ = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    );
    let out = child.wait_with_output().expect("wait");
    for file in ["firedrill.db", "firedrill.db-wal", "firedrill.db-shm"] {
        assert!(seen.iter().any(|s| s == file), "{file} in {seen:?}");
    }
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("accessible to other users"),
        "the shared home is warned about: {stderr}"
    );
}

fn walk(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).expect("read dir").flatten() {
        let path = entry.path();
        if path.is_dir() {
            out.extend(walk(&path));
        }
        out.push(path);
    }
    out
}

// 10. Smaller items.

#[test]
fn secret_names_in_the_server_config_are_checked_at_start() {
    let config = ServerConfig {
        pagerduty_secrets: vec!["../../outside_secret".into()],
        ..ServerConfig::default()
    };
    let problem = config.check().expect_err("refused");
    assert!(problem.contains("never a path"), "{problem}");
    let home = tempfile::tempdir().expect("home");
    std::fs::write(
        home.path().join("firedrill.toml"),
        "[server]\npagerduty-secrets = [\"../../outside_secret\"]\n",
    )
    .expect("config");
    let out = firedrill(home.path(), &["serve", "--listen", "127.0.0.1:0"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(text(&out).contains("pagerduty-secrets"), "{}", text(&out));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreadable_pagerduty_secret_is_a_misconfiguration_not_load() {
    let a = api(ServerConfig {
        pagerduty_secrets: vec!["not-set".into()],
        ..ServerConfig::default()
    })
    .await;
    let (status, answer) = a
        .client
        .post(format!("{}/api/v1/alerts/pagerduty", a.url))
        .header("x-pagerduty-signature", "v1=00")
        .body("{}")
        .send()
        .await
        .map(|r| (r.status(), r))
        .expect("send");
    let body: Value = answer.json().await.expect("json");
    assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR, "{body}");
    assert_eq!(body["error"]["code"], "misconfigured");
    let admin = a.env.token("admin", Role::Admin, &[]).await;
    let (_, metrics) = a.call("GET", "/metrics", Some(&admin), None).await;
    assert!(
        metrics
            .as_str()
            .expect("text")
            .contains("firedrill_config_errors_total{what=\"pagerduty-secrets\"} 1"),
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_error_is_json_and_bad_parameters_are_named() {
    let a = api(ServerConfig::default()).await;
    let admin = a.env.token("admin", Role::Admin, &[]).await;
    for (method, path, needle) in [
        ("GET", "/api/v1/runs?limit=abc", "limit"),
        ("GET", "/api/v1/runs?nonsense=1", "nonsense"),
        ("GET", "/api/v1/audit?since=zzz", "since"),
        ("DELETE", "/api/v1/runs", "DELETE"),
        ("PATCH", "/api/v1/switch", "PATCH"),
    ] {
        let resp = a
            .client
            .request(method.parse().expect("method"), format!("{}{path}", a.url))
            .bearer_auth(&admin)
            .send()
            .await
            .expect("send");
        let status = resp.status();
        assert!(status.is_client_error(), "{method} {path}: {status}");
        assert_eq!(
            resp.headers()["content-type"],
            "application/json",
            "{method} {path}"
        );
        let body: Value = resp.json().await.expect("json");
        let message = body["error"]["message"].as_str().expect("message");
        assert!(message.contains(needle), "{method} {path}: {message}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn console_sessions_live_on_the_server_and_end_when_they_should() {
    let a = api(ServerConfig {
        session_ttl_s: 2,
        ..ServerConfig::default()
    })
    .await;
    let token = a.env.token("alice", Role::Viewer, &[]).await;
    let (cookie, csrf) = sign_in(&a, &token).await;
    assert!(!cookie.contains(&token), "the cookie never holds the token");
    assert!(cookie.starts_with("firedrill_session=fds_"), "{cookie}");
    assert_eq!(me(&a, &cookie).await, StatusCode::OK);
    // Sign-out ends it on the server: the same cookie no longer works.
    let status = a
        .client
        .delete(format!("{}/console/session", a.url))
        .header("cookie", &cookie)
        .header("x-csrf-token", &csrf)
        .send()
        .await
        .expect("sign out")
        .status();
    assert_eq!(status, StatusCode::NO_CONTENT);
    assert_eq!(me(&a, &cookie).await, StatusCode::UNAUTHORIZED);
    // The server enforces the TTL, whatever the browser does with Max-Age.
    let (cookie, _) = sign_in(&a, &token).await;
    assert_eq!(me(&a, &cookie).await, StatusCode::OK);
    tokio::time::sleep(Duration::from_millis(2_200)).await;
    assert_eq!(me(&a, &cookie).await, StatusCode::UNAUTHORIZED);
    // Revoking the token ends its sessions.
    let (cookie, _) = sign_in(&a, &token).await;
    firedrill::auth::revoke(a.env.store.as_ref(), "alice", None, &Actor::user("admin"))
        .await
        .expect("revoke");
    assert_eq!(me(&a, &cookie).await, StatusCode::UNAUTHORIZED);
}

/// Sign in to the console with `token`: the session cookie and CSRF token.
async fn sign_in(a: &Api, token: &str) -> (String, String) {
    let resp = a
        .client
        .post(format!("{}/console/session", a.url))
        .json(&json!({ "token": token }))
        .send()
        .await
        .expect("sign in");
    assert_eq!(resp.status(), StatusCode::OK);
    let cookie = resp.headers()["set-cookie"]
        .to_str()
        .expect("cookie")
        .split(';')
        .next()
        .expect("pair")
        .to_string();
    let body: Value = resp.json().await.expect("json");
    (cookie, body["csrf"].as_str().expect("csrf").to_string())
}

/// `GET /api/v1/me` with the session `cookie`: its status.
async fn me(a: &Api, cookie: &str) -> StatusCode {
    a.client
        .get(format!("{}/api/v1/me", a.url))
        .header("cookie", cookie)
        .send()
        .await
        .expect("me")
        .status()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replayed_pagerduty_delivery_costs_a_counter_and_nothing_else() {
    use hmac::Mac as _;
    let a = api(ServerConfig {
        pagerduty_secrets: vec!["canary".into()],
        ..ServerConfig::default()
    })
    .await;
    let body = serde_json::to_vec(&json!({"event": {
        "id": "01REPLAYED", "event_type": "incident.acknowledged", "resource_type": "incident",
        "occurred_at": "2026-12-01T02:00:05.000Z", "data": {"id": "Q1", "type": "incident"}}}))
    .expect("json");
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(CANARY.as_bytes()).expect("key");
    mac.update(&body);
    let signature = format!("v1={}", hex::encode(mac.finalize().into_bytes()));
    for i in 0..5 {
        let resp = a
            .client
            .post(format!("{}/api/v1/alerts/pagerduty", a.url))
            .header("x-pagerduty-signature", &signature)
            .body(body.clone())
            .send()
            .await
            .expect("send");
        assert_eq!(resp.status(), StatusCode::OK);
        let answer: Value = resp.json().await.expect("json");
        assert_eq!(answer["replay"] == json!(true), i > 0, "{answer}");
    }
    assert_eq!(a.audit("alert.ignored").await.len(), 1);
    let admin = a.env.token("admin", Role::Admin, &[]).await;
    let (_, metrics) = a.call("GET", "/metrics", Some(&admin), None).await;
    assert!(
        metrics
            .as_str()
            .expect("text")
            .contains("firedrill_pagerduty_replays_total 4"),
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_token_cannot_hold_every_run_stream() {
    let a = api(ServerConfig {
        max_event_streams: 64,
        max_event_streams_per_token: 3,
        ..ServerConfig::default()
    })
    .await;
    let viewer = a.env.token("viewer", Role::Viewer, &[]).await;
    let other = a.env.token("other", Role::Viewer, &[]).await;
    let ops = a.env.token("ops", Role::Operator, &[]).await;
    let id = a.start_gated(&ops).await;
    let open = |token: &str| {
        a.client
            .get(format!("{}/api/v1/runs/{id}/events", a.url))
            .bearer_auth(token)
            .send()
    };
    let mut streams = Vec::new();
    for _ in 0..3 {
        let resp = open(&viewer).await.expect("stream");
        assert_eq!(resp.status(), StatusCode::OK);
        streams.push(resp);
    }
    let refused = open(&viewer).await.expect("stream");
    assert_eq!(refused.status(), StatusCode::TOO_MANY_REQUESTS);
    let body: Value = refused.json().await.expect("json");
    assert!(
        body.to_string().contains("max-event-streams-per-token"),
        "{body}"
    );
    // Another token is not affected, and a closed stream is given back.
    assert_eq!(open(&other).await.expect("stream").status(), StatusCode::OK);
    streams.pop();
    // (The server notices the closed stream at its next write.)
    let mut reopened = StatusCode::TOO_MANY_REQUESTS;
    for _ in 0..400 {
        reopened = open(&viewer).await.expect("stream").status();
        if reopened == StatusCode::OK {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(reopened, StatusCode::OK);
    // Revoking the token ends its open streams, not only its next request.
    let mut stream = open(&other).await.expect("stream");
    firedrill::auth::revoke(a.env.store.as_ref(), "other", None, &Actor::user("admin"))
        .await
        .expect("revoke");
    let mut seen = String::new();
    let ended = tokio::time::timeout(Duration::from_secs(20), async {
        while let Ok(Some(chunk)) = stream.chunk().await {
            seen.push_str(&String::from_utf8_lossy(&chunk));
        }
    })
    .await;
    assert!(ended.is_ok(), "the stream went on after revocation: {seen}");
    assert!(
        seen.contains("event: error") && seen.contains("revoked"),
        "{seen}"
    );
}

/// A test CA (its certificate) and a server certificate for 127.0.0.1
/// signed by it, with its key (openssl).
fn test_pki(dir: &Path) -> (std::path::PathBuf, std::path::PathBuf, std::path::PathBuf) {
    let run = |args: &[&str]| {
        let status = Command::new("openssl")
            .current_dir(dir)
            .args(args)
            .stderr(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .status()
            .expect("openssl");
        assert!(status.success(), "openssl {args:?}");
    };
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
    ];
    run(&[
        &["req", "-x509"][..],
        &ec,
        &[
            "-days",
            "2",
            "-subj",
            "/CN=firedrill test CA",
            "-keyout",
            "ca.key",
            "-out",
            "ca.pem",
        ],
    ]
    .concat());
    run(&[
        &["req"][..],
        &ec,
        &[
            "-subj",
            "/CN=127.0.0.1",
            "-keyout",
            "key.pem",
            "-out",
            "leaf.csr",
        ],
    ]
    .concat());
    std::fs::write(
        dir.join("leaf.ext"),
        "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n",
    )
    .expect("ext");
    run(&[
        "x509",
        "-req",
        "-in",
        "leaf.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-days",
        "2",
        "-extfile",
        "leaf.ext",
        "-out",
        "cert.pem",
    ]);
    (
        dir.join("ca.pem"),
        dir.join("cert.pem"),
        dir.join("key.pem"),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_speaks_tls_when_given_a_certificate() {
    let dir = tempfile::tempdir().expect("dir");
    let (ca, cert, key) = test_pki(dir.path());
    let a = api(ServerConfig {
        tls_cert: Some(cert),
        tls_key: Some(key),
        ..ServerConfig::default()
    })
    .await;
    let https = a.url.replace("http://", "https://");
    let pem = std::fs::read(&ca).expect("ca");
    let client = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(&pem).expect("pem"))
        .build()
        .expect("client");
    let mut answered = None;
    for _ in 0..50 {
        if let Ok(r) = client.get(format!("{https}/healthz")).send().await {
            answered = Some(r.status());
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(answered, Some(StatusCode::OK));
    // Plain HTTP gets no answer from a TLS listener.
    assert!(reqwest::get(format!("{}/healthz", a.url)).await.is_err());
    // A certificate that is not ours is refused by a verifying client.
    assert!(reqwest::get(format!("{https}/healthz")).await.is_err());
}

#[test]
fn serve_warns_when_a_non_loopback_listener_has_no_tls_and_refuses_half_a_tls_config() {
    let home = tempfile::tempdir().expect("home");
    std::fs::write(
        home.path().join("firedrill.toml"),
        "[server]\ntls-cert = \"/nonexistent.pem\"\n",
    )
    .expect("config");
    let out = firedrill(home.path(), &["serve", "--listen", "127.0.0.1:0"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(
        text(&out).contains("tls-cert and tls-key go together"),
        "{}",
        text(&out)
    );
    // Without TLS on every interface: warned at start (stopped right after).
    std::fs::write(
        home.path().join("firedrill.toml"),
        "[server]\ndrills = false\n",
    )
    .expect("config");
    let mut child = Command::new(firedrill_bin())
        .arg("--home")
        .arg(home.path())
        .args(["serve", "--listen", "0.0.0.0:0"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("serve");
    let stderr = child.stderr.take().expect("stderr");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        use std::io::BufRead as _;
        for line in std::io::BufReader::new(stderr)
            .lines()
            .map_while(Result::ok)
        {
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    let warned = std::iter::from_fn(|| rx.recv_timeout(Duration::from_secs(30)).ok())
        .take(100)
        .find(|l| l.contains("without TLS"));
    let _ = child.kill();
    let _ = child.wait();
    assert!(warned.is_some(), "no warning about plain HTTP on 0.0.0.0");
}

// 11. Refusals are audited; unauthenticated ones are only counted.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusals_of_authenticated_callers_are_audited_and_anonymous_ones_counted() {
    let a = api(ServerConfig {
        refusals_audited_per_minute: 3,
        ..ServerConfig::default()
    })
    .await;
    let viewer = a.env.token("viewer", Role::Viewer, &[]).await;
    let before = a.audit_len().await;
    for _ in 0..20 {
        let (status, _) = a
            .call("GET", "/api/v1/runs", Some("fdt_nonsense"), None)
            .await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
        let (status, _) = a.call("GET", "/api/v1/runs", None, None).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
    }
    let after = a.audit_len().await;
    assert_eq!(before, after, "unauthenticated requests write nothing");
    let (status, _) = a
        .call(
            "POST",
            "/api/v1/runs",
            Some(&viewer),
            Some(json!({"runbook": "alpha"})),
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let refused = a.audit("request.refused").await;
    assert_eq!(refused.len(), 1);
    assert_eq!(
        (refused[0].actor_kind.as_str(), refused[0].actor_id.as_str()),
        ("token", "viewer")
    );
    assert_eq!(refused[0].subject, "POST /api/v1/runs");
    let details: Value = serde_json::from_str(&refused[0].details).expect("details");
    assert!(
        details["reason"]
            .as_str()
            .expect("reason")
            .contains("role viewer")
    );
    // A token hammering what it may not do cannot fill the log.
    for _ in 0..10 {
        let (status, _) = a
            .call(
                "PUT",
                "/api/v1/switch",
                Some(&viewer),
                Some(json!({"engaged": false, "reason": "x"})),
            )
            .await;
        assert_eq!(status, StatusCode::FORBIDDEN);
    }
    // 3 a minute per token (6 if the minute turned during the loop).
    let audited = a.audit("request.refused").await.len();
    assert!(audited == 3 || audited == 6, "{audited} refusals audited");
    let admin = a.env.token("admin", Role::Admin, &[]).await;
    let (_, metrics) = a.call("GET", "/metrics", Some(&admin), None).await;
    assert!(
        metrics
            .as_str()
            .expect("text")
            .contains("firedrill_denied_total{reason=\"unauthenticated\"} 40"),
        "{metrics}"
    );
    assert!(
        metrics.as_str().expect("text").contains(&format!(
            "firedrill_refusals_unaudited_total {}",
            11 - audited
        )),
        "{metrics}"
    );
    // A live run refused by the switch is recorded with who tried.
    firedrill::switch::flip(
        a.env.store.as_ref(),
        None,
        true,
        "maintenance",
        &Actor::user("ops"),
    )
    .await
    .expect("engage");
    let ops = a.env.token("ops", Role::Operator, &[]).await;
    let (status, _) = a
        .call(
            "POST",
            "/api/v1/runs",
            Some(&ops),
            Some(json!({"runbook": "alpha", "mode": "live", "force_untested": true})),
        )
        .await;
    assert_eq!(status, StatusCode::CONFLICT);
    let refused = a.audit("run.refused").await;
    assert_eq!(refused.len(), 1);
    assert_eq!(refused[0].actor_id, "ops");
    assert_eq!(refused[0].outcome, "halted");
}
