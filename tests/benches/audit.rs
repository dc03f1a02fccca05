//! Audit chain verification: how many records per second `firedrill audit
//! verify` checks (read page by page from the store, re-hash every record,
//! check seq and prev_hash links). The store is filled first with records
//! shaped like a run's (host calls with their argv, effect and result).
//!
//! `cargo bench -p firedrill-tests --bench audit` (env AUDIT_RECORDS,
//! default 200,000; AUDIT_ROUNDS, default 5). Part of `scripts/bench`.

use std::time::Instant;

use firedrill::audit::{Actor, NewEvent};
use firedrill::store::Batch;
use firedrill::store::{verify_store, verify_store_with_roots};
use firedrill_tests::TestEnv;
use firedrill_tests::bench::{self, Goal, Measure, Stat};

/// Records per durable batch while filling the store.
const FILL_BATCH: usize = 500;

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let records = bench::size("AUDIT_RECORDS", 200_000, 2_000);
    let rounds = bench::size("AUDIT_ROUNDS", 5, 2);
    let env = TestEnv::new().await;
    let actor = Actor::user("bench");
    let filled = Instant::now();
    for b in 0..records.div_ceil(FILL_BATCH) {
        let mut batch = Batch::new();
        for i in 0..FILL_BATCH.min(records - b * FILL_BATCH) {
            let run = format!("run-{:08}", (b * FILL_BATCH + i) / 12);
            batch = batch.event(
                NewEvent::custom(&actor, "host.call", format!("web-{}", i % 40))
                    .details(serde_json::json!({
                        "step": "restart",
                        "target": format!("web-{}", i % 40),
                        "call": "exec",
                        "argv": ["systemctl", "restart", "--", "web"],
                        "effect": "change",
                        "simulated": false,
                        "exit": 0,
                        "ms": 12,
                    }))
                    .run(&run),
            );
        }
        env.store.apply(batch).await.expect("append");
    }
    println!(
        "filled {records} audit records in {:.1} s",
        filled.elapsed().as_secs_f64()
    );
    // Alternating rounds: the chain alone, and the chain with the tree's
    // root at two checkpoint sizes (what `audit verify` does when it holds
    // checkpoints).
    let sizes: std::collections::BTreeSet<u64> = [records as u64 / 2, records as u64].into();
    let mut rates = Vec::with_capacity(rounds);
    let mut with_roots = Vec::with_capacity(rounds);
    for _ in 0..rounds {
        let started = Instant::now();
        let v = verify_store(env.store.as_ref()).await.expect("verify");
        let took = started.elapsed();
        assert!(v.first_bad.is_none(), "{:?}", v.first_bad);
        // The fill plus what setting up the environment recorded.
        assert!(v.records as usize >= records, "{} records", v.records);
        rates.push(v.records as f64 / took.as_secs_f64());
        let started = Instant::now();
        let (v, roots) = verify_store_with_roots(env.store.as_ref(), &sizes)
            .await
            .expect("verify");
        let took = started.elapsed();
        assert_eq!(roots.len(), 2, "a root at each size");
        with_roots.push(v.records as f64 / took.as_secs_f64());
    }
    let backend = if firedrill_tests::pg::enabled() {
        "postgres"
    } else {
        "sqlite"
    };
    let chain = Measure::from_rates("audit.verify", "audit chain verify", "records/s", &rates)
        .goal(Goal::at_least(Stat::Median, 1_000_000.0))
        .detail(serde_json::json!({ "records": records, "backend": backend }));
    let tree = Measure::from_rates(
        "audit.verify.checkpoints",
        "audit verify with the tree's root at two checkpoint sizes",
        "records/s",
        &with_roots,
    )
    .detail(serde_json::json!({ "records": records, "backend": backend }));
    bench::write(
        "audit",
        "cargo bench -p firedrill-tests --bench audit",
        &[chain, tree],
    );
}
