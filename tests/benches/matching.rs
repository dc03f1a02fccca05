//! Matching alerts to triggers: 1,000 alerts against 100 published
//! runbooks (each with a trigger on `alertname` and `team`), through the
//! trigger index that `serve` keeps (compiled once per published version;
//! each call checks the store's current versions first). Measured:
//!
//! - `matching.indexed`: which runbooks 1,000 alerts match (a tenth of
//!   them match one), per call of 1,000;
//! - `matching.unmatched`: a whole notification of 1,000 alerts that
//!   match nothing through `Alerts::handle` (match, count, keep the last
//!   100 with their nearest triggers, one `alert.unmatched` audit event);
//! - `matching.scan`: the old path for comparison, which parsed every
//!   current runbook for each alert (run on 20 alerts, reported per 1,000).
//!
//! `cargo bench -p firedrill-tests --bench matching` (env MATCH_ROUNDS,
//! default 30). Part of `scripts/bench`.

use std::collections::BTreeMap;
use std::time::Instant;

use firedrill::alerts::{Alert, AlertStatus, Alerts};
use firedrill::audit::Actor;
use firedrill_tests::TestEnv;
use firedrill_tests::bench::{self, Goal, Measure, Stat};

type Refused = std::pin::Pin<Box<dyn Future<Output = Result<String, String>> + Send>>;

const RUNBOOKS: usize = 100;
const ALERTS: usize = 1000;

fn runbook(i: usize) -> String {
    format!(
        "apiVersion: firedrill/v1\nname: rb-{i:03}\nversion: 1\nsteps:\n  - id: one\n    kernel: trivial@0.1.0\n    targets: [demo-host]\ntriggers:\n  - source: alertmanager\n    match: {{ alertname: Down{i:03}, team: t{} }}\n    cooldown: 1h\n",
        i % 7
    )
}

fn alert(i: usize, matching: bool) -> Alert {
    let rb = i % RUNBOOKS;
    let name = if matching {
        format!("Down{rb:03}")
    } else {
        format!("Other{rb:03}")
    };
    Alert {
        source: "alertmanager",
        status: AlertStatus::Firing,
        fingerprint: format!("{i:016x}"),
        starts_at: "2026-12-02T00:00:00Z".into(),
        labels: BTreeMap::from([
            ("alertname".to_string(), name),
            ("team".to_string(), format!("t{}", rb % 7)),
            ("instance".to_string(), format!("host-{i}")),
            ("severity".to_string(), "page".to_string()),
        ]),
        annotations: BTreeMap::new(),
    }
}

fn main() {
    let rounds = bench::size("MATCH_ROUNDS", 30, 3);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let env = TestEnv::new().await;
        let texts: Vec<String> = (0..RUNBOOKS).map(runbook).collect();
        env.publish(&texts.iter().map(String::as_str).collect::<Vec<_>>())
            .await;
        let store = env.store.as_ref();
        let alerts = Alerts::default();
        let mixed: Vec<Alert> = (0..ALERTS).map(|i| alert(i, i % 10 == 0)).collect();
        let none: Vec<Alert> = (0..ALERTS).map(|i| alert(i, false)).collect();

        // Check before measuring: a tenth match exactly their runbook.
        let found = alerts.matching(store, &mixed).await.expect("match");
        for (i, m) in found.iter().enumerate() {
            let want: Vec<(String, usize)> = if i % 10 == 0 {
                vec![(format!("rb-{:03}", i % RUNBOOKS), 0)]
            } else {
                Vec::new()
            };
            assert_eq!(m, &want, "alert {i}");
        }

        let mut indexed = Vec::new();
        for _ in 0..rounds {
            let t = Instant::now();
            let m = alerts.matching(store, &mixed).await.expect("match");
            indexed.push(bench::ms(t.elapsed()));
            assert_eq!(m.len(), ALERTS);
        }

        let admit = |_run: firedrill::executor::PreparedRun| -> Refused {
            Box::pin(async { Err("the bench starts no run".to_string()) })
        };
        let actor = Actor::user("bench");
        let mut unmatched = Vec::new();
        for _ in 0..rounds {
            let t = Instant::now();
            let handled = alerts
                .handle(&env.service, &actor, &[], &none, &admit)
                .await
                .expect("handle");
            unmatched.push(bench::ms(t.elapsed()));
            assert_eq!(handled.unmatched, ALERTS);
            assert!(handled.decisions.is_empty());
        }

        // The old path: every current runbook parsed for each alert.
        let sample = 20;
        let mut scan = Vec::new();
        for _ in 0..rounds.min(5) {
            let t = Instant::now();
            let mut hits = 0;
            for a in mixed.iter().take(sample) {
                for row in store.current_runbooks().await.expect("runbooks") {
                    let rb =
                        firedrill::runbook::parse_runbook(&row.name, &row.source).expect("parses");
                    hits += rb
                        .triggers
                        .iter()
                        .filter(|t| t.source.as_str() == a.source && t.matches(&a.labels))
                        .count();
                }
            }
            assert_eq!(hits, sample.div_ceil(10));
            scan.push(bench::ms(t.elapsed()) * (ALERTS / sample) as f64);
        }
        let (scan_p50, _) = bench::p50_p99(&scan);
        let (idx_p50, _) = bench::p50_p99(&indexed);
        bench::write(
            "matching",
            "cargo bench -p firedrill-tests --bench matching",
            &[
                Measure::from_samples(
                    "matching.indexed",
                    "match 1,000 alerts / 100 runbooks (index)",
                    "ms",
                    &[indexed],
                )
                .goal(Goal::at_most(Stat::Median, 5.0))
                .detail(serde_json::json!({"scan_over_index": scan_p50 / idx_p50})),
                Measure::from_samples(
                    "matching.unmatched",
                    "notification of 1,000 unmatched alerts",
                    "ms",
                    &[unmatched],
                ),
                Measure::from_samples(
                    "matching.scan",
                    "match 1,000 alerts / 100 runbooks (old scan)",
                    "ms",
                    &[scan],
                ),
            ],
        );
    });
}
