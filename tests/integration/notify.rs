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

const GATED: &str = "apiVersion: firedrill/v1\nname: gated\nversion: 1\nsteps:\n  - id: gate\n    approval: { required: 1, roles: [approver], timeout: 10m, reason: \"fail over the primary\" }\n  - id: act\n    kernel: trivial@0.1.0\n    targets: [demo-host]\n";

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
        name: Some(name.into()),
        url,
        signing_secret: "hook-key".into(),
        token_secret: None,
        timeout_ms: 2000,
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

fn details(r: &firedrill::audit::AuditRecord) -> serde_json::Value {
    serde_json::from_str(&r.details).unwrap_or_default()
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
    env.publish(&[GATED]).await;
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
    assert_eq!(body["event"], "awaiting-approval");
    assert_eq!(body["runbook"], "gated");
    assert_eq!(body["labels"]["alertname"], "FiredrillRunAwaitingApproval");
    let notes = &body["annotations"];
    assert!(
        notes["approvers"]
            .as_str()
            .is_some_and(|a| a.contains("approver")),
        "{body}"
    );
    assert_eq!(
        notes["approve"],
        format!("firedrill approve {id} --comment \"...\"")
    );
    assert_eq!(
        notes["url"],
        format!("https://firedrill.example.com/console/runs/{id}")
    );

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
    wait_until("both deliveries audited", async || {
        env.audited("notification.delivered").await.len() == 2
    })
    .await;
    let delivered = env.audited("notification.delivered").await;
    assert_eq!(delivered[0].outcome, "raised");
    assert_eq!(details(&delivered[0])["attempts"], 3);
    assert_eq!(delivered[0].actor_id, "notifier");
    assert_eq!(delivered[1].outcome, "resolved");
    assert_eq!(details(&delivered[1])["attempts"], 1);
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
    env.publish(&[GATED]).await;
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
            timeout_ms: 2000,
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
    let text = all[1].json()["text"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(
        text.starts_with(":white_check_mark: Resolved: *The big red switch (global)"),
        "{text}"
    );
    // The webhook filtered on another runbook heard nothing (a global
    // switch has no runbook; the run is gated's).
    assert!(other.seen().is_empty(), "{:?}", other.seen());

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
        .filter(|r| r.action == "notification.delivered")
        .collect();
    assert_eq!(delivered.len(), 2);
    assert_eq!(details(delivered[0])["sink"], "slack:oncall");
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
        Some(2.0),
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
    assert_eq!(dropped[0].subject, "runbook:alpha", "the oldest goes first");
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
        subjects.contains(&"beta".to_string()) && subjects.contains(&"gamma".to_string()),
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
    let _notifier = spawn(&env, &state, &config, &keys);
    firedrill::switch::flip(env.store.as_ref(), Some("beta"), false, "done", &alice)
        .await
        .expect("release");
    wait_until("given up", async || {
        env.audited("notification.dropped")
            .await
            .iter()
            .any(|d| d.outcome == "gave-up")
    })
    .await;
    let gave_up: Vec<_> = env
        .audited("notification.dropped")
        .await
        .into_iter()
        .filter(|d| d.outcome == "gave-up")
        .collect();
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
}
