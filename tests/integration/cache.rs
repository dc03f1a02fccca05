//! The compiled-component cache: a second engine loads from disk, and a
//! damaged cache entry is discarded and rebuilt instead of failing the load,
//! and concurrent loads of one kernel compile it once.

use std::sync::Arc;

use firedrill::kernel::{CacheOutcome, HostConfig, KernelHost};
use firedrill::secret::StaticSecrets;
use firedrill::transport::{Inventory, Targets};
use firedrill_tests::guest_bytes;

fn host(cache: &std::path::Path) -> KernelHost {
    let config = HostConfig {
        cache_dir: Some(cache.to_path_buf()),
        max_concurrent_invocations: 4,
        ..HostConfig::default()
    };
    KernelHost::new(
        config,
        Targets::new(Inventory::default()),
        Arc::new(StaticSecrets::default()),
    )
    .expect("host")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn second_engine_loads_from_cache_and_damaged_entries_are_rebuilt() {
    let dir = tempfile::tempdir().expect("tempdir");
    let bytes = guest_bytes("disk-usage");

    let first = host(dir.path()).load(&bytes).await.expect("loads");
    assert_eq!(first.cache, CacheOutcome::Miss);
    let entries: Vec<_> = std::fs::read_dir(dir.path())
        .expect("cache dir")
        .map(|e| e.expect("entry").path())
        .collect();
    assert_eq!(entries.len(), 1, "{entries:?}");
    let name = entries[0]
        .file_name()
        .expect("name")
        .to_string_lossy()
        .into_owned();
    assert!(
        name.starts_with(first.digest.as_str()) && name.contains("wasmtime-48.0.8"),
        "{name}"
    );

    let second = host(dir.path()).load(&bytes).await.expect("loads");
    assert_eq!(second.cache, CacheOutcome::Hit);
    assert_eq!(second.manifest, first.manifest);

    std::fs::write(&entries[0], b"garbage").expect("damage");
    let third = host(dir.path()).load(&bytes).await.expect("rebuilds");
    assert_eq!(third.cache, CacheOutcome::Miss);
    assert_ne!(std::fs::read(&entries[0]).expect("rewritten"), b"garbage");
}

/// A burst of runs on a fresh node loads the same kernel many times at
/// once: the first load compiles it, every other waits for it and gets the
/// same loaded kernel (the memory benchmark's 1,000 runs used to compile it
/// 1,000 times, minutes of CPU before any run reached its target).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_loads_of_one_kernel_compile_it_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    let bytes = Arc::new(guest_bytes("disk-usage"));
    let host = Arc::new(host(dir.path()));
    let loads: Vec<_> = (0..16)
        .map(|_| {
            let (host, bytes) = (host.clone(), bytes.clone());
            tokio::spawn(async move { host.load(&bytes).await.expect("loads") })
        })
        .collect();
    let mut kernels = Vec::new();
    for l in loads {
        kernels.push(l.await.expect("task"));
    }
    assert!(
        kernels.iter().all(|k| Arc::ptr_eq(k, &kernels[0])),
        "every load returned the one loaded kernel"
    );
    assert_eq!(kernels[0].cache, CacheOutcome::Miss, "compiled once, here");
}
