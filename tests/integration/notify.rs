//! Notifications to webhook and Slack sinks through the durable outbox,
//! against local receivers on loopback: a signed webhook told of a run
//! awaiting approval (retried while the receiver is down, with the same
//! idempotency key on every attempt) and of its end; a Slack-compatible
//! channel given one escaped message per change, with event and runbook
//! filters; a sink that is down keeps at most `max-queued` deliveries
//! (the oldest dropped, counted and audited), loses nothing over a restart
//! of the notifier, and gives a delivery up after `give-up-s`.

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use firedrill::auth::Role;
use firedrill::notify::{Event, NotifyConfig, SlackSink, WebhookSink};
use firedrill::secret::{Secret, StaticSecrets};
use firedrill::server::{AppState, ServerConfig};
use firedrill_tests::TestEnv;
use firedrill_tests::api_call;
use firedrill_tests::web::Receiver;
use hmac::Mac;
use serde_json::json;

const SIGNING_KEY: &str = "a-signing-key-of-32-bytes-000000";

async fn wait_until<F: AsyncFn() -> bool>(what: &str, f: F) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !f().await {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn secrets(pairs: &[(&str, String)]) -> StaticSecrets {
    StaticSecrets(
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), Secret::new(v.clone())))
            .collect::<BTreeMap<_, _>>(),
    )
}

fn spawn(
    env: &TestEnv,
    state: &AppState,
    config: &NotifyConfig,
    secrets: &StaticSecrets,
) -> firedrill::notify::Notifier {
    firedrill::notify::spawn(env.service.clone(), state.alerts.clone(), config, secrets)
        .expect("notify config")
        .expect("a notifier")
}

fn webhook(name: &str, url: String) -> WebhookSink {
    WebhookSink {
        name: name.into(),
        url,
        signing_secret: "hook-key".into(),
        token_secret: None,
        // Long enough that a loaded machine does not time out a post the
        // receiver answered.
        timeout_ms: 10_000,
        events: Vec::new(),
        runbooks: Vec::new(),
    }
}

/// What a receiver does: HMAC-SHA256 over `TIMESTAMP.BODY`, compared in
/// constant time, the timestamp recent.
fn verified(r: &firedrill_tests::web::Received, key: &str) -> bool {
    let ts = r.header("x-firedrill-timestamp");
    let Some(hex_sig) = r
        .header("x-firedrill-signature")
        .strip_prefix("sha256=")
        .map(String::from)
    else {
        return false;
    };
    let Ok(sig) = hex::decode(hex_sig) else {
        return false;
    };
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs();
    let fresh = ts.parse::<u64>().is_ok_and(|t| now.abs_diff(t) <= 300);
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(key.as_bytes()).expect("key");
    mac.update(ts.as_bytes());
    mac.update(b".");
    mac.update(&r.body);
    fresh && mac.verify_slice(&sig).is_ok()
}

/// The `notification.dropped` audit records with `reason` as outcome.
async fn dropped_for(env: &TestEnv, reason: &str) -> Vec<firedrill::audit::AuditRecord> {
    env.audited("notification.dropped")
        .await
        .into_iter()
        .filter(|d| d.outcome == reason)
        .collect()
}

fn details(r: &firedrill::audit::AuditRecord) -> serde_json::Value {
    serde_json::from_str(&r.details).unwrap_or_default()
}

/// The Python `verified` function of docs/alerts.md, run on `r`.
fn docs_verify(r: &firedrill_tests::web::Received, key: &str) -> bool {
    let docs = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/alerts.md"))
        .expect("docs/alerts.md");
    let code = docs
        .split("```python\n")
        .skip(1)
        .filter_map(|b| b.split("```").next())
        .find(|b| b.contains("def verified("))
        .expect("the verification snippet in docs/alerts.md");
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("body"), &r.body).expect("body");
    let script = format!(
        "{code}\nimport sys\nbody = open(sys.argv[1], 'rb').read()\nheaders = {{'X-Firedrill-Timestamp': sys.argv[2], 'X-Firedrill-Signature': sys.argv[3]}}\nsys.exit(0 if verified(sys.argv[4].encode(), headers, body) else 1)\n"
    );
    let out = std::process::Command::new("python3")
        .arg("-c")
        .arg(script)
        .arg(dir.path().join("body"))
        .arg(r.header("x-firedrill-timestamp"))
        .arg(r.header("x-firedrill-signature"))
        .arg(key)
        .output()
        .expect("python3");
    assert!(
        out.status.code().is_some_and(|c| c <= 1),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.status.success()
}

async fn start_gated(url: &str, token: &str) -> String {
    let body = json!({"runbook": "gated", "mode": "live", "force_untested": true});
    let (status, started) = api_call(
        &reqwest::Client::new(),
        url,
        "POST",
        "/api/v1/runs",
        Some(token),
        Some(body),
    )
    .await;
    assert!(status.is_success(), "{started}");
    started["run_id"].as_str().expect("run id").to_string()
}

async fn metrics(url: &str, token: &str) -> String {
    let (_, text) = api_call(
        &reqwest::Client::new(),
        url,
        "GET",
        "/metrics",
        Some(token),
        None,
    )
    .await;
    text.as_str().expect("text").to_string()
}

/// The value of the metric line naming `name` with every one of `labels`.
fn metric(text: &str, name: &str, labels: &[&str]) -> Option<f64> {
    text.lines()
        .filter(|l| l.starts_with(&format!("{name}{{")))
        .find(|l| labels.iter().all(|p| l.contains(p)))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_signed_webhook_is_told_once_of_a_run_awaiting_approval_and_of_its_end() {
    let env = TestEnv::new().await;
    env.publish(&[firedrill_tests::GATED]).await;
    let boss = env.token_of("boss", Role::Admin, &[], "alice").await;
    let carol = env.token_of("carol", Role::Approver, &[], "carol").await;
    let (url, state) = env.serve(ServerConfig::default()).await;
    let hook = Receiver::start().await;
    // Down for the first two attempts: the delivery is retried.
    hook.fail_next.store(2, Ordering::SeqCst);
    let config = NotifyConfig {
        console_url: Some("https://firedrill.example.com".into()),
        resend_s: 1,
        retry_first_ms: 100,
        webhook: vec![webhook("bus", hook.url("/hooks/firedrill"))],
        ..NotifyConfig::default()
    };
    let keys = secrets(&[("hook-key", SIGNING_KEY.into())]);
    let _notifier = spawn(&env, &state, &config, &keys);
    let id = start_gated(&url, &boss).await;
    let of_run = |transition: &str| -> Vec<firedrill_tests::web::Received> {
        hook.seen()
            .into_iter()
            .filter(|r| r.json()["run"] == id.as_str() && r.json()["transition"] == transition)
            .collect()
    };
    wait_until("the raise delivered", async || {
        of_run("raised").iter().any(|r| r.status == 200)
    })
    .await;
    let attempts = of_run("raised");
    assert_eq!(
        attempts.iter().map(|r| r.status).collect::<Vec<_>>(),
        [503, 503, 200],
        "retried until delivered, then not again"
    );
    let key = attempts[0].header("idempotency-key");
    assert_eq!(key.len(), 32, "{key}");
    for a in &attempts {
        assert_eq!(
            a.header("idempotency-key"),
            key,
            "one key for every attempt"
        );
        assert_eq!(a.json()["id"], key.as_str());
        assert_eq!(a.path, "/hooks/firedrill");
        assert_eq!(a.header("content-type"), "application/json");
        assert!(verified(a, SIGNING_KEY), "signature of {a:?}");
        assert!(!verified(a, "another-key-of-32-bytes-00000000"));
    }
    // The verification docs/alerts.md gives, run as written.
    assert!(
        docs_verify(&attempts[2], SIGNING_KEY),
        "the documented check refuses a real delivery"
    );
    assert!(!docs_verify(
        &attempts[2],
        "another-key-of-32-bytes-00000000"
    ));
    // A body changed on the way no longer verifies.
    let mut forged = attempts[2].clone();
    forged.body = forged
        .body
        .iter()
        .map(|b| if *b == b'1' { b'2' } else { *b })
        .collect();
    assert!(!verified(&forged, SIGNING_KEY));
    let body = attempts[2].json();
    assert_eq!(body["version"], 1);
    assert_eq!(body["sink"], "webhook:bus");
    assert_eq!(body["event"], "awaiting-approval");
    assert_eq!(body["runbook"], "gated");
    firedrill_tests::assert_awaiting_approval(&body, &id);

    // Still waiting after several scans: told once.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!(of_run("raised").len(), 3);

    let path = format!("/api/v1/runs/{id}/approve");
    let (status, _) = api_call(
        &reqwest::Client::new(),
        &url,
        "POST",
        &path,
        Some(&carol),
        Some(json!({"comment": "go"})),
    )
    .await;
    assert!(status.is_success());
    wait_until("the end delivered", async || {
        of_run("resolved").iter().any(|r| r.status == 200)
    })
    .await;
    let resolved = of_run("resolved");
    assert_eq!(resolved.len(), 1);
    assert_ne!(resolved[0].header("idempotency-key"), key);
    assert!(verified(&resolved[0], SIGNING_KEY));

    // Audited: queued (with its key), delivered (with its attempts).
    let raised = env.audited("notification.raised").await;
    let raised: Vec<_> = raised
        .iter()
        .filter(|r| r.run_id.as_deref() == Some(id.as_str()))
        .collect();
    assert_eq!(raised.len(), 1, "{raised:?}");
    assert_eq!(details(raised[0])["idempotency_key"], key.as_str());
    assert_eq!(details(raised[0])["sink"], "webhook:bus");
    let of_this_run = async || -> Vec<firedrill::audit::AuditRecord> {
        env.audited("notification.delivered")
            .await
            .into_iter()
            .filter(|r| r.run_id.as_deref() == Some(id.as_str()))
            .collect()
    };
    wait_until("both deliveries audited", async || {
        of_this_run().await.iter().any(|r| r.outcome == "resolved")
    })
    .await;
    let delivered = of_this_run().await;
    let raised_one: Vec<_> = delivered.iter().filter(|r| r.outcome == "raised").collect();
    assert_eq!(raised_one.len(), 1, "{delivered:?}");
    assert_eq!(details(raised_one[0])["attempts"], 3);
    assert_eq!(details(raised_one[0])["idempotency_key"], key.as_str());
    assert_eq!(raised_one[0].actor_id, "notifier");
    let resolved_one: Vec<_> = delivered
        .iter()
        .filter(|r| r.outcome == "resolved")
        .collect();
    assert_eq!(resolved_one.len(), 1, "{delivered:?}");
    assert_eq!(details(resolved_one[0])["attempts"], 1);
    let m = metrics(&url, &boss).await;
    let sink = "sink=\"webhook:bus\"";
    assert_eq!(
        metric(
            &m,
            "firedrill_notifications_total",
            &[sink, "outcome=\"failed\""]
        ),
        Some(2.0),
        "{m}"
    );
    assert_eq!(
        metric(
            &m,
            "firedrill_notifications_total",
            &[sink, "outcome=\"sent\""]
        ),
        Some(2.0)
    );
    assert_eq!(
        metric(&m, "firedrill_notifications_queued", &[sink]),
        None,
        "nothing queued"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slack_channel_gets_one_escaped_message_per_change_and_filters_hold() {
    let env = TestEnv::new().await;
    env.publish(&[firedrill_tests::GATED]).await;
    let boss = env.token_of("boss", Role::Admin, &[], "alice").await;
    let (url, state) = env.serve(ServerConfig::default()).await;
    let chat = Receiver::start().await;
    let other = Receiver::start().await;
    let slack_url = chat.url("/services/T0/B0/SEKRIT");
    let mut only_other = webhook("other", other.url("/"));
    only_other.runbooks = vec!["another-runbook".into()];
    let config = NotifyConfig {
        console_url: Some("https://firedrill.example.com".into()),
        resend_s: 1,
        retry_first_ms: 100,
        slack: vec![SlackSink {
            name: "oncall".into(),
            url_secret: "slack-url".into(),
            timeout_ms: 10_000,
            events: vec![Event::SwitchEngaged],
            runbooks: Vec::new(),
        }],
        webhook: vec![only_other],
        ..NotifyConfig::default()
    };
    let keys = secrets(&[
        ("slack-url", slack_url.clone()),
        ("hook-key", SIGNING_KEY.into()),
    ]);
    let _notifier = spawn(&env, &state, &config, &keys);
    // A run awaiting approval is another event: not for this channel.
    let _run = start_gated(&url, &boss).await;
    let alice = firedrill::audit::Actor::user("alice");
    firedrill::switch::flip(
        env.store.as_ref(),
        None,
        true,
        "db maintenance <!channel> & <http://evil.example|click>",
        &alice,
    )
    .await
    .expect("engage");
    wait_until("the message", async || !chat.accepted().is_empty()).await;
    let msg = chat.accepted()[0].json();
    let text = msg["text"].as_str().expect("text");
    assert_eq!(msg.as_object().map(|o| o.len()), Some(1), "{msg}");
    assert!(
        text.starts_with(":warning: *The big red switch (global) is engaged"),
        "{text}"
    );
    assert!(
        text.contains("db maintenance &lt;!channel&gt; &amp; &lt;http://evil.example|click&gt;"),
        "{text}"
    );
    assert!(
        !text.contains("<!channel>") && !text.contains("<http://evil"),
        "{text}"
    );
    assert_eq!(chat.accepted()[0].path, "/services/T0/B0/SEKRIT");

    firedrill::switch::flip(env.store.as_ref(), None, false, "done", &alice)
        .await
        .expect("release");
    wait_until("the resolution", async || chat.accepted().len() >= 2).await;
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let all = chat.accepted();
    assert_eq!(all.len(), 2, "one message per change: {all:?}");
    assert_eq!(
        env.store
            .outbox("slack:oncall", 10)
            .await
            .expect("outbox")
            .len(),
        0
    );
    let text = all[1].json()["text"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(
        text.starts_with(":white_check_mark: Resolved: *The big red switch (global)"),
        "{text}"
    );
    // The webhook filtered on another runbook heard nothing of the global
    // switch (it has no runbook) nor of gated's run, only of its runbook.
    assert!(other.seen().is_empty(), "{:?}", other.seen());
    firedrill::switch::flip(
        env.store.as_ref(),
        Some("another-runbook"),
        true,
        "maintenance",
        &alice,
    )
    .await
    .expect("engage");
    wait_until("the other runbook's switch", async || {
        !other.accepted().is_empty()
    })
    .await;
    let heard = other.accepted()[0].json();
    assert_eq!(heard["runbook"], "another-runbook", "{heard}");
    assert_eq!(heard["event"], "switch-engaged");
    wait_until("the channel told too", async || chat.accepted().len() >= 3).await;

    // The channel refuses the request itself (400): given up at once, not
    // retried for a day, and the URL is not in what is recorded.
    chat.fail_status.store(400, Ordering::SeqCst);
    chat.failing.store(true, Ordering::SeqCst);
    firedrill::switch::flip(
        env.store.as_ref(),
        Some("gated"),
        true,
        "maintenance",
        &alice,
    )
    .await
    .expect("engage");
    wait_until("the rejected delivery dropped", async || {
        !dropped_for(&env, "rejected").await.is_empty()
    })
    .await;
    let rejected = env.audited("notification.dropped").await;
    assert_eq!(rejected.len(), 1, "{rejected:?}");
    assert!(
        details(&rejected[0])["last_error"]
            .as_str()
            .is_some_and(|e| e.contains("slack:oncall answered 400")),
        "{:?}",
        rejected[0]
    );
    assert_eq!(
        chat.seen().iter().filter(|r| r.status == 400).count(),
        1,
        "not retried"
    );

    // The Slack URL is a credential: not in the audit log nor the metrics.
    let everything = env
        .store
        .audit(&firedrill::store::AuditFilter {
            limit: 1000,
            ..Default::default()
        })
        .await
        .expect("audit");
    let delivered: Vec<_> = everything
        .iter()
        .filter(|r| r.action == "notification.delivered" && details(r)["sink"] == "slack:oncall")
        .collect();
    // The global switch raised and resolved, another-runbook's raised.
    assert_eq!(delivered.len(), 3, "{delivered:?}");
    for r in &everything {
        assert!(!r.details.contains("SEKRIT"), "{r:?}");
    }
    let m = metrics(&url, &boss).await;
    assert!(!m.contains("SEKRIT"));
    assert_eq!(
        metric(
            &m,
            "firedrill_notifications_total",
            &["sink=\"slack:oncall\"", "outcome=\"sent\""]
        ),
        Some(3.0),
        "{m}"
    );
    assert_eq!(
        metric(
            &m,
            "firedrill_notifications_dropped_total",
            &["sink=\"slack:oncall\"", "reason=\"rejected\""]
        ),
        Some(1.0),
        "{m}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sink_that_is_down_keeps_at_most_max_queued_loses_nothing_over_a_restart_and_gives_up_late()
 {
    let env = TestEnv::new().await;
    let boss = env.token_of("boss", Role::Admin, &[], "alice").await;
    let (url, state) = env.serve(ServerConfig::default()).await;
    let hook = Receiver::start().await;
    hook.failing.store(true, Ordering::SeqCst);
    let mut config = NotifyConfig {
        resend_s: 1,
        retry_first_ms: 100,
        retry_max_ms: 200,
        max_queued: 2,
        webhook: vec![webhook("bus", hook.url("/"))],
        ..NotifyConfig::default()
    };
    let keys = secrets(&[("hook-key", SIGNING_KEY.into())]);
    let alice = firedrill::audit::Actor::user("alice");
    for scope in ["alpha", "beta", "gamma"] {
        firedrill::switch::flip(env.store.as_ref(), Some(scope), true, "maintenance", &alice)
            .await
            .expect("engage");
    }
    let notifier = spawn(&env, &state, &config, &keys);
    let sink = "webhook:bus";
    let queued = async || {
        env.store
            .outbox_depths()
            .await
            .expect("depths")
            .into_iter()
            .find(|d| d.sink == sink)
            .map_or(0, |d| d.queued)
    };
    wait_until("the oldest dropped", async || {
        !env.audited("notification.dropped").await.is_empty()
    })
    .await;
    let dropped = env.audited("notification.dropped").await;
    assert_eq!(dropped.len(), 1, "{dropped:?}");
    assert_eq!(dropped[0].outcome, "queue-full");
    assert_eq!(
        dropped[0].subject, "runbook:beta",
        "the oldest after the head (which is being tried) goes first"
    );
    assert!(
        details(&dropped[0])["why"]
            .as_str()
            .is_some_and(|w| w.contains("max-queued = 2"))
    );
    assert_eq!(queued().await, 2);
    wait_until("attempts made and failed", async || hook.seen().len() >= 3).await;
    let m = metrics(&url, &boss).await;
    assert_eq!(
        metric(
            &m,
            "firedrill_notifications_dropped_total",
            &["sink=\"webhook:bus\"", "reason=\"queue-full\""]
        ),
        Some(1.0),
        "{m}"
    );
    assert_eq!(
        metric(
            &m,
            "firedrill_notifications_queued",
            &["sink=\"webhook:bus\""]
        ),
        Some(2.0),
        "{m}"
    );
    assert!(
        metric(
            &m,
            "firedrill_notifications_total",
            &["sink=\"webhook:bus\"", "outcome=\"failed\""]
        )
        .is_some_and(|n| n >= 2.0)
    );

    // The notifier stops (as a crash would stop it); what is queued is in
    // the store, and the next notifier delivers it, raising nothing again.
    drop(notifier);
    assert_eq!(queued().await, 2);
    hook.failing.store(false, Ordering::SeqCst);
    let notifier = spawn(&env, &state, &config, &keys);
    wait_until("both delivered", async || queued().await == 0).await;
    let keys_seen: std::collections::BTreeSet<String> = hook
        .accepted()
        .iter()
        .map(|r| r.header("idempotency-key"))
        .collect();
    assert_eq!(keys_seen.len(), 2, "{:?}", hook.accepted());
    let subjects: Vec<String> = hook
        .accepted()
        .iter()
        .map(|r| r.json()["runbook"].as_str().unwrap_or_default().to_string())
        .collect();
    assert!(
        subjects.contains(&"alpha".to_string()) && subjects.contains(&"gamma".to_string()),
        "{subjects:?}"
    );
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(
        env.audited("notification.raised").await.len(),
        3,
        "raised once each, over the restart"
    );
    drop(notifier);

    // Down again, and a delivery older than give-up-s is given up.
    hook.failing.store(true, Ordering::SeqCst);
    config.give_up_s = 1;
    let notifier = spawn(&env, &state, &config, &keys);
    firedrill::switch::flip(env.store.as_ref(), Some("beta"), false, "done", &alice)
        .await
        .expect("release");
    wait_until("given up", async || {
        !dropped_for(&env, "gave-up").await.is_empty()
    })
    .await;
    let gave_up = dropped_for(&env, "gave-up").await;
    assert_eq!(gave_up.len(), 1);
    assert_eq!(gave_up[0].subject, "runbook:beta");
    assert_eq!(details(&gave_up[0])["transition"], "resolved");
    assert!(
        details(&gave_up[0])["attempts"]
            .as_i64()
            .is_some_and(|n| n >= 1),
        "{:?}",
        gave_up[0]
    );
    assert!(
        details(&gave_up[0])["last_error"]
            .as_str()
            .is_some_and(|e| e.contains("503")),
        "{:?}",
        gave_up[0]
    );
    assert_eq!(queued().await, 0);
    drop(notifier);

    // The sink removed from [notify]: what it had queued is dropped (one
    // audit record), what it was told is forgotten, its gauges are gone.
    config.give_up_s = 3600;
    let notifier = spawn(&env, &state, &config, &keys);
    firedrill::switch::flip(
        env.store.as_ref(),
        Some("epsilon"),
        true,
        "maintenance",
        &alice,
    )
    .await
    .expect("engage");
    wait_until("epsilon queued", async || queued().await == 1).await;
    drop(notifier);
    let _cleanup = spawn(&env, &state, &NotifyConfig::default(), &keys);
    wait_until("the removed sink cleared", async || {
        !dropped_for(&env, "sink-removed").await.is_empty()
    })
    .await;
    let removed = dropped_for(&env, "sink-removed").await;
    assert_eq!(removed.len(), 1);
    assert_eq!(details(&removed[0])["count"], 1);
    assert_eq!(queued().await, 0);
    assert!(
        env.store
            .notified(sink, 100)
            .await
            .expect("notified")
            .is_empty()
    );
    let m = metrics(&url, &boss).await;
    assert_eq!(
        metric(
            &m,
            "firedrill_notifications_queued",
            &["sink=\"webhook:bus\""]
        ),
        None,
        "{m}"
    );
}

/// While the head of a sink's queue fails, nothing after it is tried (one
/// attempt per backoff, not one per queued delivery); when the sink is
/// back, the queue is delivered in the order it was written: a raise
/// before its resolution.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_down_sink_is_tried_at_its_head_only_and_delivered_in_order_when_back() {
    let env = TestEnv::new().await;
    let (_url, state) = env.serve(ServerConfig::default()).await;
    let hook = Receiver::start().await;
    hook.failing.store(true, Ordering::SeqCst);
    let config = NotifyConfig {
        resend_s: 1,
        retry_first_ms: 3000,
        retry_max_ms: 3000,
        webhook: vec![webhook("bus", hook.url("/"))],
        ..NotifyConfig::default()
    };
    let keys = secrets(&[("hook-key", SIGNING_KEY.into())]);
    let alice = firedrill::audit::Actor::user("alice");
    let _notifier = spawn(&env, &state, &config, &keys);
    firedrill::switch::flip(
        env.store.as_ref(),
        Some("alpha"),
        true,
        "maintenance",
        &alice,
    )
    .await
    .expect("engage");
    wait_until("the first attempt", async || !hook.seen().is_empty()).await;
    firedrill::switch::flip(env.store.as_ref(), Some("alpha"), false, "done", &alice)
        .await
        .expect("release");
    firedrill::switch::flip(
        env.store.as_ref(),
        Some("beta"),
        true,
        "maintenance",
        &alice,
    )
    .await
    .expect("engage");
    wait_until("three queued", async || {
        env.store
            .outbox("webhook:bus", 10)
            .await
            .expect("outbox")
            .len()
            == 3
    })
    .await;
    tokio::time::sleep(Duration::from_secs(4)).await;
    let tried: std::collections::BTreeSet<String> = hook
        .seen()
        .iter()
        .map(|r| r.header("idempotency-key"))
        .collect();
    assert_eq!(tried.len(), 1, "only the head is tried: {:?}", hook.seen());
    assert!(
        hook.seen().len() <= 4,
        "one attempt per backoff (1.5-3 s): {}",
        hook.seen().len()
    );

    hook.failing.store(false, Ordering::SeqCst);
    wait_until("all delivered", async || hook.accepted().len() == 3).await;
    let order: Vec<(String, String)> = hook
        .accepted()
        .iter()
        .map(|r| {
            let j = r.json();
            (
                j["runbook"].as_str().unwrap_or_default().to_string(),
                j["transition"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect();
    let want: Vec<(String, String)> = [
        ("alpha", "raised"),
        ("alpha", "resolved"),
        ("beta", "raised"),
    ]
    .iter()
    .map(|(a, b)| (a.to_string(), b.to_string()))
    .collect();
    assert_eq!(order, want);
}

/// A sink that hangs holds up no other: the other's delivery is made
/// while the hung posts (a webhook's, an Alertmanager's) still wait for
/// their answers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hung_sink_holds_up_no_other() {
    let env = TestEnv::new().await;
    let (_url, state) = env.serve(ServerConfig::default()).await;
    let hung = Receiver::start().await;
    hung.hanging.store(true, Ordering::SeqCst);
    let fine = Receiver::start().await;
    let hung_am = Receiver::start().await;
    hung_am.hanging.store(true, Ordering::SeqCst);
    let mut slow = webhook("hung", hung.url("/"));
    slow.timeout_ms = 30_000;
    let config = NotifyConfig {
        resend_s: 1,
        webhook: vec![slow, webhook("fine", fine.url("/"))],
        // An Alertmanager that hangs too, synced before the webhooks' queues.
        alertmanager: vec![firedrill::notify::AlertmanagerSink {
            url: hung_am.url(""),
            token_secret: None,
            timeout_ms: 30_000,
            events: Vec::new(),
            runbooks: Vec::new(),
        }],
        ..NotifyConfig::default()
    };
    let keys = secrets(&[("hook-key", SIGNING_KEY.into())]);
    let _notifier = spawn(&env, &state, &config, &keys);
    firedrill::switch::flip(
        env.store.as_ref(),
        None,
        true,
        "maintenance",
        &firedrill::audit::Actor::user("alice"),
    )
    .await
    .expect("engage");
    wait_until("the hung sinks asked", async || {
        !hung.seen().is_empty() && !hung_am.seen().is_empty()
    })
    .await;
    wait_until("the other sink told", async || !fine.accepted().is_empty()).await;
    // The hung post has not ended: its delivery is still queued, untried.
    let pending = env.store.outbox("webhook:hung", 10).await.expect("outbox");
    assert_eq!(pending.len(), 1);
    assert_eq!(pending[0].attempts, 0, "{pending:?}");
    assert_eq!(hung.seen().len(), 1);
}
