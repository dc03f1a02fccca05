//! The group-commit writer: many concurrent batches, one of them a conflict,
//! at both edges of `write-batch-max`. The conflicting batch rolls back alone,
//! every other batch is durable, and the audit chain stays gap-free.

use std::sync::Arc;

use firedrill::audit::{Actor, NewEvent};
use firedrill::store::verify_store;
use firedrill::store::{
    Applied, AuditFilter, Batch, KernelRow, SqliteStore, Store, StoreConfig, Write,
};

fn kernel(name: &str, digest: &str) -> KernelRow {
    KernelRow {
        name: name.into(),
        version: "1.0.0".into(),
        digest: digest.into(),
        size_bytes: 1,
        manifest: serde_json::json!({}),
        published_at: "2026-11-23T00:00:00Z".into(),
        published_by: "user:test".into(),
    }
}

fn publish(name: &str, digest: &str) -> Batch {
    Batch::new()
        .write(Write::PublishKernel(kernel(name, digest)))
        .event(NewEvent::new(
            &Actor::user("test"),
            firedrill::audit::Action::KernelPublished,
            format!("kernel:{name}@1.0.0"),
        ))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_batches_with_a_conflict_commit_together_and_keep_the_chain() {
    for batch_max in [1, 256] {
        let dir = tempfile::tempdir().expect("tempdir");
        let config = StoreConfig {
            write_batch_max: batch_max,
            write_queue: 8,
            ..StoreConfig::default()
        };
        let store: Arc<dyn Store> = Arc::new(
            SqliteStore::open(&dir.path().join("firedrill.db"), &config)
                .await
                .expect("store"),
        );
        assert_eq!(
            store.apply(publish("k0", "sha256:a")).await.expect("apply"),
            Applied::Done
        );
        // 100 concurrent batches (more than the queue holds, so writers wait):
        // 98 new kernels, one identical republish, one conflicting republish.
        let mut tasks = Vec::new();
        for i in 1..=100 {
            let store = store.clone();
            tasks.push(tokio::spawn(async move {
                let batch = match i {
                    50 => publish("k0", "sha256:a"),
                    51 => publish("k0", "sha256:DIFFERENT"),
                    _ => publish(&format!("k{i}"), "sha256:b"),
                };
                (i, store.apply(batch).await.expect("apply"))
            }));
        }
        for t in tasks {
            let (i, applied) = t.await.expect("task");
            let expected = match i {
                50 => Applied::AlreadyPresent,
                51 => Applied::Conflict {
                    existing_digest: "sha256:a".into(),
                },
                _ => Applied::Done,
            };
            assert_eq!(
                applied, expected,
                "batch {i} with write-batch-max {batch_max}"
            );
        }
        assert_eq!(store.kernels().await.expect("kernels").len(), 99);
        let v = verify_store(store.as_ref()).await.expect("verify");
        assert_eq!(v.first_bad, None);
        // One record per applied publish: the no-op and the conflict wrote none.
        assert_eq!(v.records, 99);
        let audit = store
            .audit(&AuditFilter {
                limit: 1000,
                ..AuditFilter::default()
            })
            .await
            .expect("audit");
        let seqs: Vec<i64> = audit.iter().map(|r| r.seq).collect();
        assert_eq!(seqs, (1..=99).collect::<Vec<_>>(), "gap-free");
    }
}
