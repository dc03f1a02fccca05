//! PagerDuty v3 webhooks (HMAC signatures, rotation, incident events) and
//! the generic alert endpoint through `firedrill serve`, plus the limits on
//! automatic runs: the global trigger rate and per-runbook concurrency.

use firedrill::auth::Role;
use firedrill::server::ServerConfig;
use firedrill::store::{AuditFilter, RunFilter, RunStatus};
use firedrill_tests::{CANARY, CANARY_NEXT, TestEnv};
use hmac::{Hmac, Mac};
use serde_json::{Value, json};
use sha2::Sha256;

const PAGED: &str = r#"apiVersion: firedrill/v1
name: paged
version: 1
inputs: { type: object, properties: { service: { type: string }, incident: { type: string } } }
steps:
  - id: one
    kernel: trivial@0.1.0
    targets: [demo-host]
triggers:
  - source: pagerduty
    match: { service: checkout-api, urgency: high }
    inputs: { service: "{{ alert.labels.service }}", incident: "{{ alert.fingerprint }}" }
    key: "{{ alert.fingerprint }}"
"#;

const GENERIC: &str = r#"apiVersion: firedrill/v1
name: disk-full
version: 1
inputs: { type: object, properties: { host: { type: string } } }
steps:
  - id: one
    kernel: trivial@0.1.0
    targets: [demo-host]
triggers:
  - source: generic
    match: { alertname: DiskFull }
    inputs: { host: "{{ alert.labels.instance }}" }
    cooldown: 1s
"#;

fn sign(secret: &str, body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("key");
    mac.update(body);
    format!("v1={}", hex::encode(mac.finalize().into_bytes()))
}

fn incident(event_type: &str, id: &str, service: &str) -> Vec<u8> {
    serde_json::to_vec(&json!({"event": {
        // One delivery, one event id (a replay repeats it).
        "id": format!("01DEN9CZ-{event_type}-{id}-{service}"),
        "event_type": event_type,
        "resource_type": "incident",
        "occurred_at": "2026-11-23T02:00:05.000Z",
        "agent": {"html_url": "https://acme.pagerduty.com/users/P1", "id": "P1", "type": "user_reference"},
        "client": null,
        "data": {
            "id": id,
            "type": "incident",
            "self": format!("https://api.pagerduty.com/incidents/{id}"),
            "html_url": format!("https://acme.pagerduty.com/incidents/{id}"),
            "number": 2,
            "status": "triggered",
            "incident_key": "d3640fbd41094207a1c11e58e46b1662",
            "created_at": "2026-11-23T02:00:00Z",
            "title": "Checkout API 5xx",
            "service": {"html_url": "https://acme.pagerduty.com/services/PF9KMXH", "id": "PF9KMXH", "self": "https://api.pagerduty.com/services/PF9KMXH", "summary": service, "type": "service_reference"},
            "assignees": [],
            "escalation_policy": {"id": "PE1", "summary": "ops", "type": "escalation_policy_reference"},
            "teams": [],
            "priority": {"id": "PSO4", "summary": "P1", "type": "priority_reference"},
            "urgency": "high",
            "conference_bridge": null,
            "resolve_reason": null,
            "a_field_pagerduty_added_later": {"ignored": true}
        }
    }}))
    .expect("json")
}

async fn post(url: &str, path: &str, headers: &[(&str, String)], body: Vec<u8>) -> (u16, Value) {
    let mut req = reqwest::Client::new()
        .post(format!("{url}{path}"))
        .header("content-type", "application/json")
        .body(body);
    for (k, v) in headers {
        req = req.header(*k, v);
    }
    let resp = req.send().await.expect("send");
    let status = resp.status().as_u16();
    let text = resp.text().await.expect("text");
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

fn outcomes(answer: &Value) -> Vec<String> {
    answer["decisions"]
        .as_array()
        .map(|d| {
            d.iter()
                .map(|d| d["outcome"].as_str().expect("outcome").to_string())
                .collect()
        })
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pagerduty_webhooks_are_verified_by_signature_and_start_one_run_per_incident() {
    let env = TestEnv::new().await;
    env.publish(&[PAGED]).await;
    // Not configured: refused, whatever the signature.
    let (off, _) = env.serve(ServerConfig::default()).await;
    let body = incident("incident.triggered", "Q0RIJJZL24RC6W", "checkout-api");
    let (status, answer) = post(
        &off,
        "/api/v1/alerts/pagerduty",
        &[("x-pagerduty-signature", sign(CANARY, &body))],
        body.clone(),
    )
    .await;
    assert_eq!(status, 403, "{answer}");
    assert!(
        answer["error"]["message"]
            .as_str()
            .expect("message")
            .contains("server.pagerduty-secrets")
    );

    // Two secrets during a rotation; a missing one is skipped.
    let (url, _) = env
        .serve(ServerConfig {
            pagerduty_secrets: vec!["not-set".into(), "canary".into(), "canary-next".into()],
            ..ServerConfig::default()
        })
        .await;
    let pd = "/api/v1/alerts/pagerduty";
    // No signature, a wrong one, a tampered body: 401, nothing started.
    for headers in [
        vec![],
        vec![("x-pagerduty-signature", "v1=00ff".to_string())],
        vec![("x-pagerduty-signature", sign("guess", &body))],
        vec![("x-pagerduty-signature", "sha256=abc".to_string())],
    ] {
        let (status, answer) = post(&url, pd, &headers, body.clone()).await;
        assert_eq!(status, 401, "{headers:?}: {answer}");
    }
    let mut tampered = body.clone();
    let at = tampered.iter().position(|b| *b == b'Q').expect("id");
    tampered[at] = b'R';
    let (status, _) = post(
        &url,
        pd,
        &[("x-pagerduty-signature", sign(CANARY, &body))],
        tampered,
    )
    .await;
    assert_eq!(status, 401);
    assert!(
        env.store
            .runs(&RunFilter::default())
            .await
            .expect("runs")
            .is_empty()
    );

    // Signed with the old secret, with the new one, with both (PagerDuty
    // sends several while rotating): one run for the incident.
    let both = format!("{},{}", sign("retired", &body), sign(CANARY_NEXT, &body));
    let mut seen = Vec::new();
    let mut replays = Vec::new();
    for signature in [sign(CANARY, &body), sign(CANARY_NEXT, &body), both] {
        let (status, answer) = post(
            &url,
            pd,
            &[("x-pagerduty-signature", signature)],
            body.clone(),
        )
        .await;
        assert_eq!(status, 200, "{answer}");
        seen.extend(outcomes(&answer));
        replays.push(answer["replay"] == json!(true));
    }
    // The same delivery again is a replay: recognised by its event id,
    // answered, counted, nothing recorded.
    assert_eq!(seen, ["started"]);
    assert_eq!(replays, [false, true, true]);
    let runs = env.store.runs(&RunFilter::default()).await.expect("runs");
    assert_eq!(runs.len(), 1);
    assert_eq!(runs[0].actor, "alert-source:pagerduty");
    assert_eq!(runs[0].inputs["service"], "checkout-api");
    assert_eq!(runs[0].inputs["incident"], "Q0RIJJZL24RC6W");

    // Another service matches nothing; acknowledged is recorded and ignored;
    // resolved is recorded, not run.
    let other = incident("incident.triggered", "Q1OTHER", "billing");
    let (_, answer) = post(
        &url,
        pd,
        &[("x-pagerduty-signature", sign(CANARY, &other))],
        other,
    )
    .await;
    assert!(outcomes(&answer).is_empty(), "{answer}");
    let ack = incident("incident.acknowledged", "Q0RIJJZL24RC6W", "checkout-api");
    let (status, answer) = post(
        &url,
        pd,
        &[("x-pagerduty-signature", sign(CANARY, &ack))],
        ack,
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(answer["ignored"], "incident.acknowledged");
    let resolved = incident("incident.resolved", "Q0RIJJZL24RC6W", "checkout-api");
    let (_, answer) = post(
        &url,
        pd,
        &[("x-pagerduty-signature", sign(CANARY, &resolved))],
        resolved,
    )
    .await;
    assert_eq!(outcomes(&answer), ["resolved"]);
    // At most MAX_SIGNATURES signatures are read: a valid one in 16th place
    // counts, in 17th place it does not.
    let ack2 = incident("incident.acknowledged", "Q0RIJJZL24RC6W", "checkout-api");
    let padded = |bogus: usize| {
        let mut sigs = vec!["v1=00".to_string(); bogus];
        sigs.push(sign(CANARY, &ack2));
        sigs.join(",")
    };
    let max = firedrill::alerts::MAX_SIGNATURES;
    let (status, _) = post(
        &url,
        pd,
        &[("x-pagerduty-signature", padded(max - 1))],
        ack2.clone(),
    )
    .await;
    assert_eq!(status, 200);
    let (status, _) = post(
        &url,
        pd,
        &[("x-pagerduty-signature", padded(max))],
        ack2.clone(),
    )
    .await;
    assert_eq!(status, 401);
    // A signed body that is not a PagerDuty payload: 400 saying so.
    let junk = br#"{"event": {"id": "x"}}"#.to_vec();
    let (status, answer) = post(
        &url,
        pd,
        &[("x-pagerduty-signature", sign(CANARY, &junk))],
        junk,
    )
    .await;
    assert_eq!(status, 400);
    assert!(
        answer["error"]["message"]
            .as_str()
            .expect("msg")
            .contains("PagerDuty")
    );
    assert_eq!(
        env.store
            .runs(&RunFilter::default())
            .await
            .expect("runs")
            .len(),
        1
    );

    let ignored = env
        .store
        .audit(&AuditFilter {
            action: Some("alert.ignored".into()),
            ..AuditFilter::default()
        })
        .await
        .expect("audit");
    // The second acknowledgement is the same delivery again: a replay.
    assert_eq!(ignored.len(), 1);
    // The signing secrets appear nowhere.
    let bytes = env.store_bytes().await;
    for secret in [CANARY, CANARY_NEXT] {
        assert!(!bytes.windows(secret.len()).any(|w| w == secret.as_bytes()));
    }
}

fn generic(id: &str, instance: &str) -> Vec<u8> {
    serde_json::to_vec(&json!({"alerts": [{
        "id": id, "status": "firing", "starts_at": "2026-11-23T02:00:00Z",
        "labels": {"alertname": "DiskFull", "instance": instance},
        "annotations": {"summary": "disk is full"}
    }]}))
    .expect("json")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_generic_endpoint_needs_a_webhook_token_and_a_strict_body() {
    let env = TestEnv::new().await;
    env.publish(&[GENERIC]).await;
    let token = env.token("monitor", Role::Webhook, &[]).await;
    let viewer = env.token("viewer", Role::Viewer, &[]).await;
    let (url, _) = env.serve(ServerConfig::default()).await;
    let path = "/api/v1/alerts/generic";
    let bearer = |t: &str| vec![("authorization", format!("Bearer {t}"))];
    let (status, _) = post(&url, path, &[], generic("a-1", "web-1")).await;
    assert_eq!(status, 401);
    let (status, _) = post(&url, path, &bearer(&viewer), generic("a-1", "web-1")).await;
    assert_eq!(status, 403);
    let (status, answer) = post(&url, path, &bearer(&token), generic("a-1", "web-1")).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(outcomes(&answer), ["started"]);
    let (_, answer) = post(&url, path, &bearer(&token), generic("a-1", "web-1")).await;
    assert_eq!(outcomes(&answer), ["duplicate"]);
    // Unknown fields, a bad id, a bad time: 400 naming the problem.
    for (body, needle) in [
        (
            json!({"alerts": [{"id": "x", "starts_at": "2026-11-23T02:00:00Z", "severity": 1}]}),
            "unknown field",
        ),
        (
            json!({"alerts": [{"id": "a b", "starts_at": "2026-11-23T02:00:00Z"}]}),
            "identity",
        ),
        (
            json!({"alerts": [{"id": "x", "starts_at": "yesterday"}]}),
            "RFC 3339",
        ),
        (json!({"alerts": []}), "1 to"),
        (
            json!({"alerts": [{"id": "x", "starts_at": "2026-11-23T02:00:00Z",
                "labels": {"alertname": "x".repeat(firedrill::alerts::MAX_LABEL_BYTES + 1)}}]}),
            "longer than",
        ),
    ] {
        let (status, answer) = post(
            &url,
            path,
            &bearer(&token),
            serde_json::to_vec(&body).expect("json"),
        )
        .await;
        assert_eq!(status, 400, "{body}");
        let msg = answer["error"]["message"].as_str().expect("msg");
        assert!(msg.contains(needle), "{needle}: {msg}");
    }
    // A label value of exactly alerts::MAX_LABEL_BYTES is accepted (and
    // matches nothing here: a different alertname).
    let at_edge = serde_json::to_vec(
        &json!({"alerts": [{"id": "edge", "starts_at": "2026-11-23T02:00:00Z",
        "labels": {"alertname": "x".repeat(firedrill::alerts::MAX_LABEL_BYTES)}}]}),
    )
    .expect("json");
    let (status, answer) = post(&url, path, &bearer(&token), at_edge).await;
    assert_eq!(status, 200, "{answer}");
    let runs = env.store.runs(&RunFilter::default()).await.expect("runs");
    assert_eq!(runs.len(), 1);
    assert_eq!(runs[0].inputs["host"], "web-1");
    assert_eq!(runs[0].actor, "alert-source:monitor");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn automatic_runs_are_bounded_by_a_global_rate_and_per_runbook_concurrency() {
    let env = TestEnv::new().await;
    env.publish(&[GENERIC]).await;
    let token = env.token("monitor", Role::Webhook, &[]).await;
    let (url, state) = env
        .serve(ServerConfig {
            trigger_runs_per_minute: 2,
            ..ServerConfig::default()
        })
        .await;
    let path = "/api/v1/alerts/generic";
    let auth = vec![("authorization", format!("Bearer {token}"))];
    let mut seen = Vec::new();
    let mut statuses = Vec::new();
    for i in 0..4 {
        let (status, answer) = post(
            &url,
            path,
            &auth,
            generic(&format!("a-{i}"), &format!("web-{i}")),
        )
        .await;
        statuses.push(status);
        seen.extend(outcomes(&answer));
    }
    // The bucket holds two: the rest are shed with 503 so the sender retries.
    assert_eq!(seen, ["started", "started", "shed", "shed"]);
    assert_eq!(statuses, [200, 200, 503, 503]);
    // A shed alert claimed nothing: redelivered, it is decided again
    // (shed again while the rate holds), never a duplicate.
    let (_, again) = post(&url, path, &auth, generic("a-2", "web-2")).await;
    assert_eq!(outcomes(&again), ["shed"]);
    assert_eq!(
        env.store
            .runs(&RunFilter::default())
            .await
            .expect("runs")
            .len(),
        2
    );
    let metrics = state.metrics.render(&[]);
    assert!(
        metrics.contains("firedrill_shed_total{reason=\"trigger-rate\"} 3"),
        "{metrics}"
    );
    assert!(
        metrics
            .contains("firedrill_alert_decisions_total{runbook=\"disk-full\",decision=\"shed\"} 3")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_runbook_cannot_take_every_run_slot() {
    const WAIT: &str = "apiVersion: firedrill/v1\nname: waiter\nversion: 1\ninputs: { type: object, properties: { dir: { type: string } } }\nsteps:\n  - id: wait\n    kernel: hostile@0.1.0\n    targets: [demo-host]\n    with: { behaviour: wait-for, path: \"{{ inputs.dir }}\" }\n";
    const QUICK: &str = "apiVersion: firedrill/v1\nname: quick\nversion: 1\nsteps:\n  - id: one\n    kernel: trivial@0.1.0\n    targets: [demo-host]\n";
    let env = TestEnv::new().await;
    env.publish(&[WAIT, QUICK]).await;
    let ops = env.token("ops", Role::Operator, &[]).await;
    let (url, state) = env
        .serve(ServerConfig {
            max_runs_per_runbook: 1,
            ..ServerConfig::default()
        })
        .await;
    let dir = env.home.path().join("gate");
    std::fs::create_dir_all(&dir).expect("dir");
    let auth = vec![("authorization", format!("Bearer {ops}"))];
    let waiter = serde_json::to_vec(
        &json!({"runbook": "waiter", "inputs": {"dir": dir.display().to_string()}}),
    )
    .expect("json");
    let (status, first) = post(&url, "/api/v1/runs", &auth, waiter.clone()).await;
    assert_eq!(status, 202, "{first}");
    let (status, busy) = post(&url, "/api/v1/runs", &auth, waiter.clone()).await;
    assert_eq!(status, 429, "{busy}");
    assert!(
        busy["error"]["message"]
            .as_str()
            .expect("msg")
            .contains("server.max-runs-per-runbook")
    );
    // The refused run was never started, and is not counted as one.
    let metrics = state.metrics.render(&[]);
    let started: Vec<&str> = metrics
        .lines()
        .filter(|l| l.starts_with("firedrill_runs_started_total{runbook=\"waiter\""))
        .collect();
    assert_eq!(started.len(), 1, "{metrics}");
    assert!(started[0].ends_with(" 1"), "{metrics}");
    // Another runbook still runs.
    let (status, quick) = post(
        &url,
        "/api/v1/runs",
        &auth,
        br#"{"runbook": "quick"}"#.to_vec(),
    )
    .await;
    assert_eq!(status, 202, "{quick}");
    std::fs::write(dir.join("go"), "").expect("go");
    let id = first["run_id"].as_str().expect("id").to_string();
    for _ in 0..600 {
        let run = env.store.run(&id).await.expect("run").expect("exists");
        if !run.status.is_pending() {
            assert_eq!(run.status, RunStatus::Succeeded);
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    // Its slot is free again.
    let mut admitted = false;
    for _ in 0..100 {
        let (status, _) = post(&url, "/api/v1/runs", &auth, waiter.clone()).await;
        if status == 202 {
            admitted = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert!(admitted);
    std::fs::write(dir.join("go"), "").expect("go");
}
