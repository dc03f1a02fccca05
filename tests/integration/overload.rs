//! A bounded overload test (loopback only, stops by itself): many senders
//! post more alerts than the server's small limits admit. The server sheds
//! (503 + Retry-After) instead of queueing without bound, keeps answering
//! health checks, starts a run for every alert it accepted, and records
//! every decision it answered in an intact audit chain.

use std::sync::Arc;
use std::time::Duration;

use firedrill::auth::Role;
use firedrill::server::ServerConfig;
use firedrill::store::{AuditFilter, RunFilter, RunStatus};
use firedrill_tests::{TestEnv, alertmanager_payload, probe_on_alert};
use serde_json::{Value, json};

const SENDERS: usize = 24;
const ALERTS_PER_SENDER: usize = 10;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overload_is_shed_health_answers_and_no_decision_is_lost() {
    let env = TestEnv::new().await;
    env.publish(&[&probe_on_alert("probe-web", "WebDown")])
        .await;
    let token = env.token("alertmanager", Role::Webhook, &[]).await;
    let (url, state) = env
        .serve(ServerConfig {
            max_in_flight: 8,
            max_concurrent_runs: 2,
            max_queued_runs: 4,
            max_runs_per_runbook: 6,
            trigger_runs_per_minute: 100_000,
            ..ServerConfig::default()
        })
        .await;
    let client = reqwest::Client::new();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    // Health is probed throughout.
    let health = {
        let (client, url, stop) = (client.clone(), url.clone(), stop.clone());
        tokio::spawn(async move {
            let mut answered = 0;
            while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                let resp = client
                    .get(format!("{url}/healthz"))
                    .timeout(Duration::from_secs(10))
                    .send()
                    .await
                    .expect("healthz answers under overload");
                assert_eq!(resp.status(), 200);
                answered += 1;
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            answered
        })
    };
    let mut senders = Vec::new();
    for s in 0..SENDERS {
        let (client, url, token) = (client.clone(), url.clone(), token.clone());
        senders.push(tokio::spawn(async move {
            let mut answers: Vec<(u16, Value)> = Vec::new();
            for a in 0..ALERTS_PER_SENDER {
                let fp = format!("{s:04x}{a:04x}");
                let body = alertmanager_payload(&[(&fp, json!({"alertname": "WebDown"}))]);
                let resp = client
                    .post(format!("{url}/api/v1/alerts/alertmanager"))
                    .bearer_auth(&token)
                    .json(&body)
                    .send()
                    .await
                    .expect("every request is answered");
                let status = resp.status().as_u16();
                if status == 503 {
                    assert!(resp.headers().contains_key("retry-after"));
                }
                answers.push((status, resp.json().await.expect("JSON answer")));
            }
            answers
        }));
    }
    let mut answers = Vec::new();
    for s in senders {
        answers.extend(s.await.expect("sender"));
    }
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    assert!(health.await.expect("health") > 0);

    let statuses: Vec<u16> = answers.iter().map(|(s, _)| *s).collect();
    assert!(
        statuses.iter().all(|s| *s == 200 || *s == 503),
        "{statuses:?}"
    );
    let shed = statuses.iter().filter(|s| **s == 503).count();
    assert!(shed > 0, "the limits were exceeded, so something was shed");
    // Decisions the server answered with (200s, and 503s for shed runs).
    let decisions: Vec<&Value> = answers
        .iter()
        .filter_map(|(_, a)| a["decisions"].as_array())
        .flatten()
        .collect();
    let started: Vec<&str> = decisions
        .iter()
        .filter(|d| d["outcome"] == "started")
        .map(|d| d["run_id"].as_str().expect("run id"))
        .collect();
    assert!(!started.is_empty());
    // Every started run runs to the end.
    for id in &started {
        let mut done = false;
        for _ in 0..1200 {
            if let Some(r) = env.store.run(id).await.expect("read")
                && !r.status.is_pending()
            {
                assert_eq!(r.status, RunStatus::Succeeded, "{:?}", r.error);
                done = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert!(done, "run {id} finished");
    }
    let runs = env
        .store
        .runs(&RunFilter {
            limit: 10_000,
            ..RunFilter::default()
        })
        .await
        .expect("runs");
    assert_eq!(runs.len(), started.len(), "no run without a started answer");
    // Every decision answered is in the audit log, and the chain is intact.
    let received = env
        .store
        .audit(&AuditFilter {
            action: Some("alert.received".into()),
            limit: 10_000,
            ..AuditFilter::default()
        })
        .await
        .expect("audit");
    assert_eq!(received.len(), decisions.len());
    let verified = firedrill::store::verify_store(env.store.as_ref())
        .await
        .expect("verify");
    assert!(verified.first_bad.is_none(), "{verified:?}");
    assert!(state.metrics.shed_total() > 0);
}
