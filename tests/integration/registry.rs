//! The kernel registry: content-addressed, immutable versions, tamper checks.

use std::path::Path;
use std::sync::Arc;

use firedrill::audit::Actor;
use firedrill::kernel::{Published, Registry, RegistryError};
use firedrill::store::{AuditFilter, SqliteStore, Store, StoreConfig};
use firedrill_tests::{guest_bytes, test_host};

async fn registry(dir: &Path) -> (Registry, Arc<dyn Store>) {
    let store: Arc<dyn Store> = Arc::new(
        SqliteStore::open(&dir.join("firedrill.db"), &StoreConfig::default())
            .await
            .expect("store"),
    );
    (Registry::new(dir.join("kernels"), store.clone()), store)
}

fn actor() -> Actor {
    Actor::user("alice")
}

/// The same component with a custom section appended: valid, same manifest,
/// different bytes (and so a different digest).
fn with_custom_section(mut bytes: Vec<u8>) -> Vec<u8> {
    let name = b"firedrill-test";
    let payload = b"different bytes, same manifest";
    let size = 1 + name.len() + payload.len();
    bytes.push(0); // custom section id
    bytes.push(u8::try_from(size).expect("small"));
    bytes.push(u8::try_from(name.len()).expect("small"));
    bytes.extend_from_slice(name);
    bytes.extend_from_slice(payload);
    bytes
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publish_is_idempotent_and_versions_are_immutable() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (registry, store) = registry(dir.path()).await;
    let host = test_host();
    let bytes = guest_bytes("service-status");

    let (first, kernel) = registry
        .publish(&host, &bytes, &actor())
        .await
        .expect("publishes");
    let Published::New(entry) = first else {
        panic!("first publish must be new: {first:?}")
    };
    assert_eq!(
        (entry.name.as_str(), entry.version.as_str()),
        ("service-status", "1.0.0")
    );
    assert_eq!(entry.digest, kernel.digest);
    assert!(entry.digest.starts_with("sha256:"));

    let (again, _) = registry
        .publish(&host, &bytes, &actor())
        .await
        .expect("same bytes again");
    assert!(matches!(again, Published::AlreadyPresent(_)), "{again:?}");

    let altered = with_custom_section(bytes.clone());
    let err = registry
        .publish(&host, &altered, &actor())
        .await
        .expect_err("different bytes under the same version must be refused");
    assert!(
        matches!(err, RegistryError::VersionConflict { .. }),
        "{err}"
    );
    assert!(
        err.to_string().contains("bump the kernel's version"),
        "{err}"
    );

    let listed = registry.list().await.expect("lists");
    assert_eq!(listed, vec![entry.clone()]);
    // Exactly one publish was audited, with its actor; the no-op and the
    // refused publish left no record.
    let audit = store
        .audit(&AuditFilter {
            action: Some("kernel.published".into()),
            ..AuditFilter::default()
        })
        .await
        .expect("audit");
    assert_eq!(audit.len(), 1);
    assert_eq!(
        (audit[0].actor_id.as_str(), audit[0].subject.as_str()),
        ("alice", "kernel:service-status@1.0.0")
    );
    let resolved = registry
        .resolve(&host, "service-status", "1.0.0")
        .await
        .expect("resolves");
    assert_eq!(resolved.digest, entry.digest);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tampered_blob_is_detected_on_resolve() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (registry, _) = registry(dir.path()).await;
    let host = test_host();
    let bytes = guest_bytes("disk-usage");
    let (Published::New(entry), _) = registry
        .publish(&host, &bytes, &actor())
        .await
        .expect("publishes")
    else {
        panic!("new")
    };
    let blob = dir.path().join("kernels/blobs").join(format!(
        "{}.wasm",
        entry.digest.trim_start_matches("sha256:")
    ));
    std::fs::write(&blob, with_custom_section(bytes)).expect("tamper");
    let err = registry
        .resolve(&host, "disk-usage", "1.0.0")
        .await
        .expect_err("tampered blob");
    assert!(matches!(err, RegistryError::Corrupt { .. }), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn index_pointing_at_another_kernel_is_detected() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (registry, _) = registry(dir.path()).await;
    let host = test_host();
    registry
        .publish(&host, &guest_bytes("disk-usage"), &actor())
        .await
        .expect("publishes");
    let (Published::New(status), _) = registry
        .publish(&host, &guest_bytes("service-status"), &actor())
        .await
        .expect("publishes")
    else {
        panic!("new")
    };
    // Point disk-usage@1.0.0 at service-status's blob, behind firedrill's back.
    let mut db = <sqlx::SqliteConnection as sqlx::Connection>::connect(&format!(
        "sqlite://{}",
        dir.path().join("firedrill.db").display()
    ))
    .await
    .expect("raw connection");
    sqlx::query("UPDATE kernels SET digest = ? WHERE name = 'disk-usage'")
        .bind(&status.digest)
        .execute(&mut db)
        .await
        .expect("tamper");
    let err = registry
        .resolve(&host, "disk-usage", "1.0.0")
        .await
        .expect_err("mismatch");
    assert!(matches!(err, RegistryError::Mismatch { .. }), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_kernel_says_how_to_publish() {
    let dir = tempfile::tempdir().expect("tempdir");
    let err = registry(dir.path())
        .await
        .0
        .resolve(&test_host(), "nope", "1.0.0")
        .await
        .expect_err("not published");
    assert!(
        err.to_string().contains("firedrill kernel publish"),
        "{err}"
    );
}
