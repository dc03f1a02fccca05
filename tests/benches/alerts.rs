//! Alert to first host call: Alertmanager notifications posted to a real
//! `firedrill serve` (loopback HTTP, bearer token, durable store) at a fixed
//! open-loop rate; each starts a live run of a one-step runbook whose
//! kernel (`http-health`) makes a real HTTP request to a loopback endpoint.
//! Reports the latency from sending the notification to the run's first
//! host call (from the audit log's timestamps, millisecond resolution) and
//! to the webhook's answer, and how many alerts were shed (503) because the
//! server was at its run limits; then an overload phase (the process-starting
//! `service-status` probe): a burst far above the server's limits, with the
//! share shed and how fast /healthz answered meanwhile.
//!
//! `cargo bench -p firedrill-tests --bench alerts` (env ALERT_RATE, alerts
//! per second, default 200; ALERT_TOTAL per round, default 1,000;
//! ALERT_ROUNDS, default 3). Part of `scripts/bench`.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use firedrill::auth::Role;
use firedrill::server::ServerConfig;
use firedrill::store::{AuditFilter, RunStatus};
use firedrill::transport::TargetsConfig;
use firedrill_tests::bench::{self, Goal, Measure, Stat};
use firedrill_tests::web::WebServer;
use firedrill_tests::{TestEnv, alertmanager_payload, probe_on_alert};
use serde_json::{Value, json};

fn report(what: &str, v: &[Duration]) -> Vec<f64> {
    let mut v: Vec<f64> = v.iter().map(|d| bench::ms(*d)).collect();
    v.sort_by(f64::total_cmp);
    println!(
        "{what}: n={} p50={:.1} ms p90={:.1} ms p99={:.1} ms max={:.1} ms",
        v.len(),
        bench::percentile(&v, 0.5),
        bench::percentile(&v, 0.9),
        bench::percentile(&v, 0.99),
        v.last().copied().unwrap_or_default(),
    );
    v
}

async fn post(client: &reqwest::Client, url: &str, token: &str, fp: &str) -> (u16, Value) {
    let body = alertmanager_payload(&[(fp, json!({"alertname": "WebDown"}))]);
    let resp = client
        .post(format!("{url}/api/v1/alerts/alertmanager"))
        .bearer_auth(token)
        .json(&body)
        .send()
        .await
        .expect("answered");
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or(Value::Null))
}

async fn wait_finished(env: &TestEnv, id: &str) {
    for _ in 0..6000 {
        if let Some(r) = env.store.run(id).await.expect("read")
            && !r.status.is_pending()
        {
            assert_eq!(r.status, RunStatus::Succeeded, "{:?}", r.error);
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("run {id} did not finish");
}

/// One steady round; (alert → first host call, alert → answered) in ms of
/// the alerts that started a run, and how many were shed (503: the server
/// at its run limits).
async fn steady(
    env: &TestEnv,
    url: &str,
    token: &str,
    phase: u8,
    rate: usize,
    total: usize,
) -> (Vec<f64>, Vec<f64>, usize) {
    let client = reqwest::Client::new();
    let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / rate as f64));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let mut tasks = Vec::new();
    let wall = Instant::now();
    for i in 0..total {
        tick.tick().await;
        let (client, url, token) = (client.clone(), url.to_string(), token.to_string());
        tasks.push(tokio::spawn(async move {
            let sent = SystemTime::now();
            let started = Instant::now();
            let (status, answer) = post(&client, &url, &token, &format!("{phase:x}{i:07x}")).await;
            if status == 503 {
                return None;
            }
            assert_eq!(status, 200, "{answer}");
            let run_id = answer["decisions"][0]["run_id"]
                .as_str()
                .unwrap_or_else(|| panic!("no run started: {answer}"))
                .to_string();
            Some((sent, started.elapsed(), run_id))
        }));
    }
    let mut acks = Vec::new();
    let mut first_call = Vec::new();
    let mut runs = Vec::new();
    for t in tasks {
        runs.extend(t.await.expect("sender"));
    }
    let shed = total - runs.len();
    let offered = wall.elapsed();
    for (sent, ack, run_id) in &runs {
        wait_finished(env, run_id).await;
        let calls = env
            .store
            .audit(&AuditFilter {
                run_id: Some(run_id.clone()),
                action: Some("host.call".into()),
                limit: 1,
                ..AuditFilter::default()
            })
            .await
            .expect("audit");
        let at = humantime::parse_rfc3339(&calls[0].time).expect("time");
        first_call.push(at.duration_since(*sent).unwrap_or_default());
        acks.push(*ack);
    }
    println!(
        "steady: {total} alerts offered at {rate}/s over {:.1} s: {} started a live run, {shed} shed",
        offered.as_secs_f64(),
        runs.len()
    );
    (
        report("  alert -> first host call", &first_call),
        report("  alert -> webhook answered", &acks),
        shed,
    )
}

/// The overload phase: /healthz latencies (ms) and what happened.
async fn overload(
    env: &TestEnv,
    url: &str,
    token: &str,
    senders: usize,
    per_sender: usize,
) -> (Vec<f64>, Value) {
    let client = reqwest::Client::new();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let health = {
        let (client, url, stop) = (client.clone(), url.to_string(), stop.clone());
        tokio::spawn(async move {
            let mut lat = Vec::new();
            while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                let t = Instant::now();
                let resp = client
                    .get(format!("{url}/healthz"))
                    .send()
                    .await
                    .expect("healthz");
                assert_eq!(resp.status(), 200);
                lat.push(t.elapsed());
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            lat
        })
    };
    let wall = Instant::now();
    let mut tasks = Vec::new();
    for s in 0..senders {
        let (client, url, token) = (client.clone(), url.to_string(), token.to_string());
        tasks.push(tokio::spawn(async move {
            let mut out = Vec::new();
            for a in 0..per_sender {
                out.push(post(&client, &url, &token, &format!("9{s:03x}{a:04x}")).await);
            }
            out
        }));
    }
    let mut answers = Vec::new();
    for t in tasks {
        answers.extend(t.await.expect("sender"));
    }
    let took = wall.elapsed();
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    let health = health.await.expect("health");
    let total = answers.len();
    let ok = answers.iter().filter(|(s, _)| *s == 200).count();
    let shed = answers.iter().filter(|(s, _)| *s == 503).count();
    let started: Vec<String> = answers
        .iter()
        .filter_map(|(_, a)| a["decisions"].as_array())
        .flatten()
        .filter(|d| d["outcome"] == "started")
        .filter_map(|d| d["run_id"].as_str().map(String::from))
        .collect();
    for id in &started {
        wait_finished(env, id).await;
    }
    let verified = firedrill::store::verify_store(env.store.as_ref())
        .await
        .expect("verify");
    assert!(verified.first_bad.is_none());
    println!(
        "overload: {total} alerts from {senders} senders in {:.1} s ({:.0}/s): {ok} answered 200 ({} runs started), {shed} shed with 503, {} other; audit chain intact ({} records)",
        took.as_secs_f64(),
        total as f64 / took.as_secs_f64(),
        started.len(),
        total - ok - shed,
        verified.records
    );
    let detail = json!({
        "offered": total, "senders": senders, "seconds": took.as_secs_f64(),
        "answered_200": ok, "runs_started": started.len(), "shed_503": shed,
        "other": total - ok - shed, "audit_records_verified": verified.records,
    });
    (report("  /healthz during overload", &health), detail)
}

fn main() {
    let rate = bench::size("ALERT_RATE", 200, 20);
    let total = bench::size("ALERT_TOTAL", 1_000, 10);
    let rounds = bench::size("ALERT_ROUNDS", 3, 1);
    let senders = bench::size("OVERLOAD_SENDERS", 64, 4);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let measures = rt.block_on(async {
        // The steady phase's runbook probes an HTTP endpoint: the first host
        // call is a request, not a process start (which costs ~3 ms of CPU
        // per start on this VM and would cap the rate, not firedrill).
        let web = WebServer::start().await;
        let env = TestEnv::with_targets(web.inventory("api"), TargetsConfig::default()).await;
        env.publish(&[&probe_on_alert("probe-web", "WebDown")
            .replace("service-status@1.0.0", "http-health@1.0.0")
            .replace("[demo-host]", "[api]")
            .replace("{ unit: \"{{ inputs.unit }}\" }", "{ path: /healthz }")])
            .await;
        let token = env.token("alertmanager", Role::Webhook, &[]).await;
        let (url, _) = env
            .serve(ServerConfig {
                trigger_runs_per_minute: 1_000_000,
                max_runs_per_runbook: 1_000,
                // One load generator on one address: the per-address
                // connection cap is not what is measured.
                max_connections_per_ip: 0,
                ..ServerConfig::default()
            })
            .await;
        // Warm up: compile caches, connections, SQLite pages.
        steady(&env, &url, &token, 1, 10, 20.min(total)).await;
        println!("--- measured ---");
        let (mut first, mut answered, mut shed) = (Vec::new(), Vec::new(), 0);
        for round in 0..rounds {
            let phase = u8::try_from(round + 2).expect("rounds < 254");
            let (f, a, s) = steady(&env, &url, &token, phase, rate, total).await;
            first.push(f);
            answered.push(a);
            shed += s;
        }
        let settings = json!({
            "rate_per_s": rate,
            "alerts_per_round": total,
            "rounds": rounds,
            "shed_503": shed,
            "probe": "http-health GET on a loopback HTTP endpoint",
        });

        let env = TestEnv::new().await;
        env.publish(&[&probe_on_alert("probe-web", "WebDown")]).await;
        let token = env.token("alertmanager", Role::Webhook, &[]).await;
        let limits = ServerConfig {
            max_in_flight: 32,
            max_concurrent_runs: 4,
            max_queued_runs: 16,
            trigger_runs_per_minute: 600,
            max_connections_per_ip: 0,
            ..ServerConfig::default()
        };
        println!(
            "overload limits: max-in-flight {}, max-concurrent-runs {}, max-queued-runs {}, trigger-runs-per-minute {}",
            limits.max_in_flight, limits.max_concurrent_runs, limits.max_queued_runs, limits.trigger_runs_per_minute
        );
        let (url, _) = env.serve(limits).await;
        let (health, what) = overload(&env, &url, &token, senders, 30).await;
        vec![
            Measure::from_samples(
                "alerts.first-host-call",
                &format!("alert → first host call at {rate} alerts/s"),
                "ms",
                &first,
            )
            .goal(Goal::at_most(Stat::P99, 10.0))
            .detail(settings.clone()),
            Measure::from_samples(
                "alerts.answered",
                &format!("alert → webhook answered at {rate} alerts/s"),
                "ms",
                &answered,
            )
            .detail(settings),
            Measure::from_samples(
                "alerts.overload.healthz",
                "/healthz while overloaded (shed with 503)",
                "ms",
                &[health],
            )
            .detail(what),
        ]
    });
    bench::write(
        "alerts",
        "cargo bench -p firedrill-tests --bench alerts",
        &measures,
    );
}
