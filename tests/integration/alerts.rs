//! Alertmanager webhooks through `firedrill serve`: strict payloads, trigger
//! matching, at most one run per alert however often it is delivered (HA
//! pairs included), resolved notifications recorded not run, cooldown per
//! trigger key, the switch, and trigger validation.

use std::time::Duration;

use firedrill::audit::Actor;
use firedrill::auth::{self, Role};
use firedrill::server::ServerConfig;
use firedrill::store::{AuditFilter, RunFilter};
use firedrill_tests::TestEnv;
use serde_json::{Value, json};

const TRIGGERED: &str = r#"apiVersion: firedrill/v1
name: web-down
version: 1
inputs: { type: object, properties: { instance: { type: string } } }
steps:
  - id: one
    kernel: trivial@0.1.0
    targets: [demo-host]
triggers:
  - source: alertmanager
    match: { alertname: WebDown, severity: critical }
    inputs: { instance: "{{ alert.labels.instance }}" }
    cooldown: 1h
"#;

const LIVE_TRIGGERED: &str = r#"apiVersion: firedrill/v1
name: db-down
version: 1
steps:
  - id: one
    kernel: trivial@0.1.0
    targets: [demo-host]
triggers:
  - source: alertmanager
    match: { alertname: DbDown }
    mode: live
readiness_policy: warn
"#;

struct Env {
    url: String,
    env: TestEnv,
    webhook: String,
    client: reqwest::Client,
}

async fn setup() -> Env {
    let env = TestEnv::new().await;
    env.publish(&[TRIGGERED, LIVE_TRIGGERED]).await;
    let webhook = env.token("alertmanager", Role::Webhook, &[]).await;
    let (url, _) = env.serve(ServerConfig::default()).await;
    Env {
        url,
        env,
        webhook,
        client: reqwest::Client::new(),
    }
}

fn payload(status: &str, alerts: &[(&str, &str, &str)]) -> Value {
    json!({
        "version": "4",
        "groupKey": "{}:{alertname=\"WebDown\"}",
        "truncatedAlerts": 0,
        "status": status,
        "receiver": "firedrill",
        "groupLabels": {"alertname": "WebDown"},
        "commonLabels": {"alertname": "WebDown"},
        "commonAnnotations": {},
        "externalURL": "http://alertmanager.example:9093",
        "alerts": alerts.iter().map(|(fp, alertname, instance)| json!({
            "status": status,
            "labels": {"alertname": alertname, "severity": "critical", "instance": instance},
            "annotations": {"summary": "web is down"},
            "startsAt": "2026-11-23T10:00:00.000Z",
            "endsAt": "0001-01-01T00:00:00Z",
            "generatorURL": "http://prometheus.example/graph",
            "fingerprint": fp,
        })).collect::<Vec<_>>(),
    })
}

impl Env {
    async fn post(&self, token: &str, body: &Value) -> (u16, Value) {
        let resp = self
            .client
            .post(format!("{}/api/v1/alerts/alertmanager", self.url))
            .bearer_auth(token)
            .json(body)
            .send()
            .await
            .expect("send");
        let status = resp.status().as_u16();
        (status, resp.json().await.unwrap_or(Value::Null))
    }

    async fn runs(&self) -> Vec<firedrill::store::RunRow> {
        self.env
            .store
            .runs(&RunFilter::default())
            .await
            .expect("runs")
    }
}

fn outcomes(answer: &Value) -> Vec<String> {
    answer["decisions"]
        .as_array()
        .expect("decisions")
        .iter()
        .map(|d| d["outcome"].as_str().expect("outcome").to_string())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_alert_starts_one_run_however_often_it_is_delivered() {
    let e = setup().await;
    let firing = payload("firing", &[("a1b2c3", "WebDown", "web-1")]);
    let (status, answer) = e.post(&e.webhook, &firing).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(outcomes(&answer), ["started"]);
    // Re-delivered (Alertmanager retries, repeat_interval): a duplicate.
    let (_, again) = e.post(&e.webhook, &firing).await;
    assert_eq!(outcomes(&again), ["duplicate"]);
    // An HA pair delivering a new alert twice at the same moment: one run.
    let pair = payload("firing", &[("d4e5f6", "WebDown", "web-2")]);
    let (a, b) = tokio::join!(e.post(&e.webhook, &pair), e.post(&e.webhook, &pair));
    let mut both = [outcomes(&a.1), outcomes(&b.1)].concat();
    both.sort();
    assert_eq!(both, ["duplicate", "started"]);
    // The same instance again under a new fingerprint: cooldown (1h) holds.
    let (_, cool) = e
        .post(
            &e.webhook,
            &payload("firing", &[("0abc01", "WebDown", "web-1")]),
        )
        .await;
    assert_eq!(outcomes(&cool), ["cooldown"]);
    // A suppression claims nothing: the next delivery is decided again
    // (still inside the cooldown: cooldown, never `duplicate`), and the
    // answer says until when and what a redelivery does.
    let (_, cool_again) = e
        .post(
            &e.webhook,
            &payload("firing", &[("0abc01", "WebDown", "web-1")]),
        )
        .await;
    assert_eq!(outcomes(&cool_again), ["cooldown"]);
    let d = &cool_again["decisions"][0];
    assert!(
        d["until"].as_str().is_some_and(|u| u > "2026"),
        "{cool_again}"
    );
    assert!(
        d["redelivery"]
            .as_str()
            .is_some_and(|r| r.starts_with("decided again")),
        "{cool_again}"
    );
    // Resolved: recorded, not run.
    let (_, resolved) = e
        .post(
            &e.webhook,
            &payload("resolved", &[("ffff01", "WebDown", "web-3")]),
        )
        .await;
    assert_eq!(outcomes(&resolved), ["resolved"]);
    // Labels no trigger matches: nothing.
    let (status, none) = e
        .post(
            &e.webhook,
            &payload("firing", &[("eeee01", "DiskFull", "web-1")]),
        )
        .await;
    assert_eq!(status, 200);
    assert!(outcomes(&none).is_empty());
    assert_eq!(none["unmatched"], 1, "{none}");

    let runs = e.runs().await;
    assert_eq!(runs.len(), 2, "one run per distinct alert, cooldown held");
    assert!(
        runs.iter()
            .all(|r| r.mode == "dry-run" && r.actor == "alert-source:alertmanager")
    );
    let mut instances: Vec<&str> = runs
        .iter()
        .map(|r| r.inputs["instance"].as_str().expect("instance"))
        .collect();
    instances.sort_unstable();
    assert_eq!(instances, ["web-1", "web-2"]);
    // Every decision is in the audit log.
    let received = e
        .env
        .store
        .audit(&AuditFilter {
            action: Some("alert.received".into()),
            limit: 100,
            ..AuditFilter::default()
        })
        .await
        .expect("audit");
    let mut audited: Vec<&str> = received.iter().map(|r| r.outcome.as_str()).collect();
    audited.sort_unstable();
    assert_eq!(
        audited,
        [
            "cooldown",
            "cooldown",
            "duplicate",
            "duplicate",
            "resolved",
            "started",
            "started"
        ]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_payloads_are_refused_with_the_reason() {
    let e = setup().await;
    let good = payload("firing", &[("a1", "WebDown", "web-1")]);
    let mut v3 = good.clone();
    v3["version"] = json!("3");
    let mut extra = good.clone();
    extra["surprise"] = json!(true);
    let mut no_fp = good.clone();
    no_fp["alerts"][0]["fingerprint"] = json!("");
    let mut bad_time = good.clone();
    bad_time["alerts"][0]["startsAt"] = json!("yesterday");
    let mut empty = good.clone();
    empty["alerts"] = json!([]);
    for (body, expect) in [
        (v3, "version \"3\""),
        (extra, "unknown field `surprise`"),
        (no_fp, "fingerprint"),
        (bad_time, "startsAt"),
        (empty, "1 to 1000 alerts"),
        (
            json!("not an object"),
            "not an Alertmanager webhook payload",
        ),
    ] {
        let (status, answer) = e.post(&e.webhook, &body).await;
        assert_eq!(status, 400, "{answer}");
        let message = answer["error"]["message"].as_str().unwrap_or_default();
        assert!(message.contains(expect), "{expect}: {message}");
    }
    // The webhook body limit (server.webhook-body-bytes, default 1 MiB) at
    // its edge: just under is parsed, just over is 413.
    let sized = |bytes: usize| {
        let mut p = good.clone();
        let base = serde_json::to_vec(&p).expect("json").len();
        // Padding in a field with no limit of its own (annotation values
        // have one: alerts::MAX_LABEL_BYTES).
        let url = p["externalURL"].as_str().expect("url").to_string();
        p["externalURL"] = json!(format!("{url}{}", "x".repeat(bytes - base)));
        assert_eq!(serde_json::to_vec(&p).expect("json").len(), bytes);
        p
    };
    let (status, _) = e.post(&e.webhook, &sized(1 << 20)).await;
    assert_eq!(status, 200);
    let (status, answer) = e.post(&e.webhook, &sized((1 << 20) + 1)).await;
    assert_eq!(status, 413, "{answer}");
    assert!(
        answer["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("webhook-body-bytes"))
    );
    assert_eq!(
        e.runs().await.len(),
        1,
        "only the in-limit delivery started a run"
    );
    // Only webhook tokens may post alerts.
    let (_, viewer) = auth::create(
        e.env.store.as_ref(),
        auth::TokenSpec {
            name: "viewer".into(),
            role: Role::Admin,
            runbooks: Vec::new(),
            owner: "vic".into(),
        },
        None,
        &Actor::user("admin"),
    )
    .await
    .expect("token");
    let (status, _) = e.post(&viewer, &good).await;
    assert_eq!(status, 403);
    let (status, _) = e.post("fdt_bogus", &good).await;
    assert_eq!(status, 401);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_triggers_respect_the_big_red_switch() {
    let e = setup().await;
    firedrill::switch::flip(
        e.env.store.as_ref(),
        None,
        true,
        "maintenance",
        &Actor::user("alice"),
    )
    .await
    .expect("engaged");
    let mut db = payload("firing", &[("db0001", "DbDown", "db-1")]);
    db["alerts"][0]["labels"] = json!({"alertname": "DbDown"});
    let (status, answer) = e.post(&e.webhook, &db).await;
    assert_eq!(status, 200);
    assert_eq!(outcomes(&answer), ["halted"]);
    assert!(e.runs().await.is_empty());
    // A dry-run trigger still runs while the switch is engaged.
    let (_, dry) = e
        .post(
            &e.webhook,
            &payload("firing", &[("a9", "WebDown", "web-9")]),
        )
        .await;
    assert_eq!(outcomes(&dry), ["started"]);
    // Redelivered while engaged: halted again, decided again.
    let (_, still) = e.post(&e.webhook, &db).await;
    assert_eq!(outcomes(&still), ["halted"]);
    // Released: the same alert, redelivered, starts its run.
    firedrill::switch::flip(
        e.env.store.as_ref(),
        None,
        false,
        "maintenance over",
        &Actor::user("alice"),
    )
    .await
    .expect("released");
    let (_, after) = e.post(&e.webhook, &db).await;
    assert_eq!(outcomes(&after), ["started"], "{after}");
    e.finish(&after).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn triggers_are_validated_before_publish() {
    let env = TestEnv::new().await;
    let bad = TRIGGERED
        .replace(
            "match: { alertname: WebDown, severity: critical }",
            "match: {}",
        )
        .replace("{{ alert.labels.instance }}", "{{ inputs.instance }}")
        .replace("cooldown: 1h", "cooldown: 30d");
    let err = env
        .service
        .validate("bad.yaml", &bad)
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("at least one label matcher"), "{err}");
    assert!(err.contains("trigger templates can use `alert`"), "{err}");
    assert!(err.contains("longer than 7 days"), "{err}");
    let undeclared = TRIGGERED.replace(
        "inputs: { instance: \"{{ alert.labels.instance }}\" }",
        "inputs: { host: \"{{ alert.labels.instance }}\" }",
    );
    let err = env
        .service
        .validate("bad.yaml", &undeclared)
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("input `host` is not declared"), "{err}");
}

const FLAKY: &str = r#"apiVersion: firedrill/v1
name: flaky
version: 1
steps:
  - id: one
    kernel: hostile@0.1.0
    targets: [demo-host]
    with: { behaviour: fail }
triggers:
  - source: alertmanager
    match: { alertname: Flaky }
    key: "{{ alert.fingerprint }}"
    cooldown: 1ms
    breaker: 2
    breaker_scope: runbook
"#;

const LIMITED: &str = r#"apiVersion: firedrill/v1
name: limited
version: 1
steps:
  - id: one
    kernel: trivial@0.1.0
    targets: [demo-host]
triggers:
  - source: alertmanager
    match: { alertname: Limited }
    key: "{{ alert.labels.instance }}"
    cooldown: 1ms
    max_runs: { count: 2, per: 1h }
"#;

impl Env {
    async fn fire(&self, alertname: &str, fingerprint: &str) -> Value {
        let mut p = payload("firing", &[(fingerprint, alertname, "web-1")]);
        p["alerts"][0]["labels"]["alertname"] = json!(alertname);
        let (status, answer) = self.post(&self.webhook, &p).await;
        assert_eq!(status, 200, "{answer}");
        answer
    }

    async fn finish(&self, answer: &Value) {
        let id = answer["decisions"][0]["run_id"].as_str().expect("run id");
        for _ in 0..600 {
            // The row appears when the queued run starts executing.
            let run = self.env.store.run(id).await.expect("read");
            if run.is_some_and(|r| !r.status.is_pending()) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!("run {id} did not finish");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consecutive_failures_open_the_breaker_until_reset_and_max_runs_holds() {
    let e = setup().await;
    for text in [FLAKY, LIMITED] {
        e.env
            .service
            .publish_runbook("rb.yaml", text, &Actor::user("admin"))
            .await
            .expect("publish");
    }
    for fp in ["f1", "f2"] {
        let answer = e.fire("Flaky", fp).await;
        assert_eq!(outcomes(&answer), ["started"]);
        e.finish(&answer).await;
    }
    // Two failed runs in a row: the breaker (2) is open.
    let open = e.fire("Flaky", "f3").await;
    assert_eq!(outcomes(&open), ["breaker-open"]);
    assert_eq!(open["decisions"][0]["scope"], "runbook", "{open}");
    // Still open on redelivery: decided again, not a duplicate.
    assert_eq!(outcomes(&e.fire("Flaky", "f3").await), ["breaker-open"]);
    let err = firedrill::alerts::reset_breaker(&e.env.service, "flaky", " ", &Actor::user("alice"))
        .await
        .unwrap_err();
    assert!(err.contains("reason"), "{err}");
    firedrill::alerts::reset_breaker(
        &e.env.service,
        "flaky",
        "fixed the DNS",
        &Actor::user("alice"),
    )
    .await
    .expect("reset");
    let resets = e
        .env
        .store
        .audit(&AuditFilter {
            action: Some("trigger.breaker.reset".into()),
            ..AuditFilter::default()
        })
        .await
        .expect("audit");
    assert_eq!(resets.len(), 1);
    assert_eq!(resets[0].actor_id, "alice");
    // The same alert that met the open breaker starts once it is reset.
    let again = e.fire("Flaky", "f3").await;
    assert_eq!(outcomes(&again), ["started"]);
    e.finish(&again).await;

    // max_runs: 2 per hour per instance, whatever the fingerprints.
    let mut seen = Vec::new();
    for fp in ["b1", "b2", "b3"] {
        let answer = e.fire("Limited", fp).await;
        seen.extend(outcomes(&answer));
    }
    assert_eq!(seen, ["started", "started", "rate-limited"]);
    // Redelivered: rate-limited again (until the window has room), with when.
    let later = e.fire("Limited", "b3").await;
    assert_eq!(outcomes(&later), ["rate-limited"]);
    assert!(later["decisions"][0]["until"].is_string(), "{later}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_breaker_on_one_key_does_not_pause_another() {
    let e = setup().await;
    e.env
        .service
        .publish_runbook(
            "units.yaml",
            firedrill_tests::UNIT_FIX,
            &Actor::user("admin"),
        )
        .await
        .expect("publish");
    let unit = |fp: &str, unit: &str, behaviour: &str| {
        let mut p = payload("firing", &[(fp, "UnitDown", "host-1")]);
        p["alerts"][0]["labels"] =
            json!({"alertname": "UnitDown", "unit": unit, "behaviour": behaviour});
        p
    };
    for fp in ["c001", "c002"] {
        let (_, answer) = e.post(&e.webhook, &unit(fp, "bad", "fail")).await;
        assert_eq!(outcomes(&answer), ["started"]);
        e.finish(&answer).await;
    }
    // `bad` failed twice: its breaker is open, and only its own.
    let (_, open) = e.post(&e.webhook, &unit("c003", "bad", "fail")).await;
    assert_eq!(outcomes(&open), ["breaker-open"]);
    assert_eq!(open["decisions"][0]["key"], "bad", "{open}");
    assert_eq!(open["decisions"][0]["scope"], "key", "{open}");
    let (_, good) = e.post(&e.webhook, &unit("c004", "good", "ok")).await;
    assert_eq!(outcomes(&good), ["started"], "{good}");
    e.finish(&good).await;

    // The triggers API says which trigger and which key are paused.
    let list: Value = e
        .client
        .get(format!("{}/api/v1/triggers", e.url))
        .bearer_auth(e.env.token("viewer", Role::Viewer, &[]).await)
        .send()
        .await
        .expect("triggers")
        .json()
        .await
        .expect("json");
    let rb = list["triggers"]
        .as_array()
        .expect("list")
        .iter()
        .find(|t| t["runbook"] == "unit-fix")
        .expect("unit-fix")
        .clone();
    assert_eq!(rb["breaker_open"], true, "{rb}");
    assert_eq!(rb["triggers"][0]["breaker_scope"], "key");
    assert_eq!(rb["triggers"][0]["open_keys"], json!(["bad"]), "{rb}");
    // web-down (threshold 3, nothing failed) is closed.
    let web = list["triggers"]
        .as_array()
        .expect("list")
        .iter()
        .find(|t| t["runbook"] == "web-down")
        .expect("web-down")
        .clone();
    assert_eq!(web["triggers"][0]["breaker_open"], false, "{web}");
    assert_eq!(web["triggers"][0]["breaker"], 3);
    // And /metrics, per trigger: one key paused.
    let metrics = e
        .client
        .get(format!("{}/metrics", e.url))
        .bearer_auth(e.env.token("scraper", Role::Viewer, &[]).await)
        .send()
        .await
        .expect("metrics")
        .text()
        .await
        .expect("text");
    assert!(
        metrics.contains(
            "firedrill_trigger_breakers_open{runbook=\"unit-fix\",trigger=\"0\",scope=\"key\"} 1"
        ),
        "{metrics}"
    );
    assert!(
        metrics.contains(
            "firedrill_trigger_breakers_open{runbook=\"web-down\",trigger=\"0\",scope=\"key\"} 0"
        ),
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unmatched_alert_is_counted_kept_and_explained() {
    let env = TestEnv::new().await;
    env.publish(&[TRIGGERED]).await;
    let webhook = env.token("alertmanager", Role::Webhook, &[]).await;
    let viewer = env.token("viewer", Role::Viewer, &[]).await;
    let scoped = env.token("team", Role::Viewer, &["web-down"]).await;
    let (url, _) = env
        .serve(ServerConfig {
            unmatched_alerts_kept: 2,
            ..ServerConfig::default()
        })
        .await;
    let e = Env {
        url,
        env,
        webhook,
        client: reqwest::Client::new(),
    };
    // A label mismatch (severity), a hostile label (terminal escapes, 64 KiB).
    let mut near = payload("firing", &[("aa01", "WebDown", "web-1")]);
    near["alerts"][0]["labels"]["severity"] = json!("warning");
    let (status, answer) = e.post(&e.webhook, &near).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["unmatched"], 1);
    let mut hostile = payload("firing", &[("aa02", "Disk\u{1b}[2JFull", "web-1")]);
    hostile["alerts"][0]["labels"]["blob"] = json!("x".repeat(64 << 10));
    e.post(&e.webhook, &hostile).await;
    e.post(
        &e.webhook,
        &payload("firing", &[("aa03", "Other", "web-1")]),
    )
    .await;

    let get = async |token: &str, path: &str| {
        let r = e
            .client
            .get(format!("{}{path}", e.url))
            .bearer_auth(token)
            .send()
            .await
            .expect("get");
        (r.status().as_u16(), r.text().await.expect("body"))
    };
    let (status, body) = get(&viewer, "/api/v1/alerts/unmatched").await;
    assert_eq!(status, 200, "{body}");
    let list: Value = serde_json::from_str(&body).expect("json");
    let alerts = list["alerts"].as_array().expect("alerts");
    // Bounded (kept: 2), newest first.
    assert_eq!(alerts.len(), 2, "{list}");
    assert_eq!(alerts[0]["fingerprint"], "aa03");
    assert_eq!(alerts[1]["fingerprint"], "aa02");
    let blob = alerts[1]["labels"]["blob"].as_str().expect("blob");
    assert!(blob.len() <= firedrill::alerts::MAX_KEPT_VALUE, "clipped");
    assert_eq!(
        alerts[1]["nearest"][0]["mismatched"]["alertname"]["want"],
        "WebDown"
    );
    // A scoped token is refused: unmatched alerts belong to no runbook.
    let (status, _) = get(&scoped, "/api/v1/alerts/unmatched").await;
    assert_eq!(status, 403);
    // The first (evicted from memory) is still counted and audited.
    let (_, metrics) = get(&viewer, "/metrics").await;
    assert!(
        metrics.contains("firedrill_alerts_unmatched_total{source=\"alertmanager\"} 3"),
        "{metrics}"
    );
    let audited = e
        .env
        .store
        .audit(&AuditFilter {
            action: Some("alert.unmatched".into()),
            limit: 10,
            ..AuditFilter::default()
        })
        .await
        .expect("audit");
    assert_eq!(audited.len(), 3);
    let details: Vec<Value> = audited
        .iter()
        .map(|r| serde_json::from_str(&r.details).expect("details"))
        .collect();
    let first = details
        .iter()
        .find(|d| d["alerts"][0]["fingerprint"] == "aa01")
        .expect("aa01 audited");
    assert_eq!(first["count"], 1);
    assert_eq!(first["source"], "alertmanager");
    assert!(audited.iter().all(|r| r.actor_id == "alertmanager"));
    // What a near miss looked like before it was evicted: answered at once.
    assert_eq!(
        answer["decisions"].as_array().map(Vec::len),
        Some(0),
        "{answer}"
    );
}

/// Two different alerts of one key (one instance) delivered at the same
/// moment: one run, the other is told the cooldown, never two runs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_alerts_of_one_key_racing_start_one_run() {
    let e = setup().await;
    for round in 0..5 {
        let instance = format!("race-{round}");
        let a = payload("firing", &[(&format!("a{round:03}"), "WebDown", &instance)]);
        let b = payload("firing", &[(&format!("b{round:03}"), "WebDown", &instance)]);
        let (x, y) = tokio::join!(e.post(&e.webhook, &a), e.post(&e.webhook, &b));
        let mut both = [outcomes(&x.1), outcomes(&y.1)].concat();
        both.sort();
        assert_eq!(both, ["cooldown", "started"], "round {round}");
    }
    assert_eq!(e.runs().await.len(), 5);
}

/// Three alerts of one key at the same moment against `max_runs: 2 per
/// 1h` (cooldown 1 ms): never three runs (the window is counted in the
/// claim statement itself); the others are told the rate limit (or the
/// cooldown, when two claims fall in one millisecond).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alerts_racing_past_max_runs_start_no_more_than_it_allows() {
    let e = setup().await;
    e.env.publish(&[LIMITED]).await;
    let mut total = 0;
    // Two rounds: at most 4 runs, within server.max-runs-per-runbook.
    for round in 0..2 {
        let instance = format!("limit-{round}");
        let one = |fp: &str| {
            let mut p = payload("firing", &[(fp, "Limited", &instance)]);
            p["groupLabels"]["alertname"] = json!("Limited");
            p
        };
        let (a, b, c) = (
            one(&format!("a{round}a")),
            one(&format!("b{round}b")),
            one(&format!("c{round}c")),
        );
        let (x, y, z) = tokio::join!(
            e.post(&e.webhook, &a),
            e.post(&e.webhook, &b),
            e.post(&e.webhook, &c)
        );
        assert_eq!((x.0, y.0, z.0), (200, 200, 200), "{} {} {}", x.1, y.1, z.1);
        let all = [outcomes(&x.1), outcomes(&y.1), outcomes(&z.1)].concat();
        let started = all.iter().filter(|o| *o == "started").count();
        // Two claims inside the same millisecond also meet the 1 ms
        // cooldown: then one of them is told `cooldown`.
        assert!((1..=2).contains(&started), "round {round}: {all:?}");
        assert!(
            all.iter()
                .all(|o| ["started", "rate-limited", "cooldown"].contains(&o.as_str())),
            "round {round}: {all:?}"
        );
        total += started;
    }
    let limited = e
        .runs()
        .await
        .into_iter()
        .filter(|r| r.runbook == "limited")
        .count();
    assert_eq!(limited, total);
}
