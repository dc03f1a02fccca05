//! The kernel registry: components stored content-addressed under `name@version`.
//!
//! The bytes live under `<home>/kernels/blobs/<sha256 hex>.wasm`; which digest
//! a `name@version` is lives in the store (`kernels` table), written in the
//! same transaction as its `kernel.published` audit record. A version is
//! immutable: publishing different bytes under an existing version is refused.

use std::io::Write as _;
use std::path::{Path, PathBuf};

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use super::host::{KernelHost, LoadError, LoadedKernel, digest_of};
use crate::audit::{Actor, NewEvent, now_rfc3339};
use crate::store::{Applied, Batch, KernelRow, Store, StoreError, Write};

/// What publishing did.
#[derive(Debug, Clone, PartialEq)]
pub enum Published {
    New(KernelRow),
    /// The same bytes were already published under this version.
    AlreadyPresent(KernelRow),
}

/// A registry operation failed.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error(
        "{reference} is already published with digest {existing}; this file has digest {new}. Versions are immutable: bump the kernel's version (in its manifest) and publish again"
    )]
    VersionConflict {
        reference: String,
        existing: String,
        new: String,
    },
    #[error(
        "kernel {reference} is not published; publish it with `firedrill kernel publish FILE.wasm` (see `firedrill kernel list`)"
    )]
    NotFound { reference: String },
    #[error(
        "stored kernel {reference} does not match its recorded digest {expected} (found {found}); the registry under {dir} was modified outside firedrill: republish the kernel"
    )]
    Corrupt {
        reference: String,
        expected: String,
        found: String,
        dir: String,
    },
    #[error(
        "stored kernel {reference} describes itself as {described}; the registry was modified outside firedrill"
    )]
    Mismatch {
        reference: String,
        described: String,
    },
    #[error("cannot load kernel: {0}")]
    Load(#[from] LoadError),
    #[error("registry I/O on {path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Store(#[from] StoreError),
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> RegistryError + '_ {
    move |source| RegistryError::Io {
        path: path.display().to_string(),
        source,
    }
}

/// Kernels kept verified and loaded by [`Registry::resolve`].
pub const RESOLVED_CACHE: usize = 256;

type Resolved = Mutex<HashMap<String, Arc<LoadedKernel>>>;

/// The kernel registry: blobs on disk, index in the store.
#[derive(Debug, Clone)]
pub struct Registry {
    dir: PathBuf,
    store: Arc<dyn Store>,
    /// Digest -> kernel whose blob was read and verified by this process.
    resolved: Arc<Resolved>,
}

impl Registry {
    pub fn new(dir: impl Into<PathBuf>, store: Arc<dyn Store>) -> Self {
        Registry {
            dir: dir.into(),
            store,
            resolved: Arc::new(Mutex::new(HashMap::new())),
        }
    }

    fn cached(&self, digest: &str) -> Option<Arc<LoadedKernel>> {
        self.resolved
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(digest)
            .cloned()
    }

    fn remember(&self, kernel: &Arc<LoadedKernel>) {
        let mut resolved = self
            .resolved
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if resolved.len() >= RESOLVED_CACHE {
            resolved.clear();
        }
        resolved.insert(kernel.digest.clone(), kernel.clone());
    }

    fn blob_path(&self, digest: &str) -> PathBuf {
        let hex = digest.trim_start_matches("sha256:");
        self.dir.join("blobs").join(format!("{hex}.wasm"))
    }

    /// Validate `bytes` as a kernel and store it under the name@version its
    /// manifest declares, audited as `actor`.
    pub async fn publish(
        &self,
        host: &KernelHost,
        bytes: &[u8],
        actor: &Actor,
    ) -> Result<(Published, Arc<LoadedKernel>), RegistryError> {
        let kernel = host.load(bytes).await?;
        let blob = self.blob_path(&kernel.digest);
        // Content-addressed: writing the same bytes twice is harmless, and a
        // blob without an index row is never used.
        if !blob.exists() {
            write_atomic(&blob, bytes)?;
        }
        let row = KernelRow {
            name: kernel.manifest.name.clone(),
            version: kernel.manifest.version.clone(),
            digest: kernel.digest.clone(),
            size_bytes: i64::try_from(bytes.len()).unwrap_or(i64::MAX),
            manifest: serde_json::to_value(&kernel.manifest).unwrap_or_default(),
            published_at: now_rfc3339(),
            published_by: actor.to_string(),
        };
        let event = NewEvent::new(
            actor,
            crate::audit::Action::KernelPublished,
            format!("kernel:{}", kernel.reference()),
        )
        .details(serde_json::json!({
            "digest": kernel.digest,
            "size_bytes": bytes.len(),
            "idempotent": kernel.manifest.idempotent,
            "capabilities": kernel.manifest.capabilities,
        }));
        let applied = self
            .store
            .apply(
                Batch::new()
                    .write(Write::PublishKernel(row.clone()))
                    .event(event),
            )
            .await?;
        match applied {
            Applied::Done => Ok((Published::New(row), kernel)),
            Applied::AlreadyPresent => {
                let existing = self
                    .store
                    .kernel(&row.name, &row.version)
                    .await?
                    .unwrap_or(row);
                Ok((Published::AlreadyPresent(existing), kernel))
            }
            Applied::Conflict { existing_digest } => Err(RegistryError::VersionConflict {
                reference: kernel.reference(),
                existing: existing_digest,
                new: kernel.digest.clone(),
            }),
            _ => Err(StoreError::Corrupt {
                what: "kernel publish",
                reason: "the store answered a publish as a conditional write".into(),
            }
            .into()),
        }
    }

    /// Load a published kernel, checking that the stored bytes have their
    /// recorded digest and describe themselves as `name@version`. The check is
    /// done once per process and digest: what runs is the verified copy.
    pub async fn resolve(
        &self,
        host: &KernelHost,
        name: &str,
        version: &str,
    ) -> Result<Arc<LoadedKernel>, RegistryError> {
        let reference = format!("{name}@{version}");
        let entry =
            self.store
                .kernel(name, version)
                .await?
                .ok_or_else(|| RegistryError::NotFound {
                    reference: reference.clone(),
                })?;
        if let Some(kernel) = self.cached(&entry.digest)
            && kernel.reference() == reference
        {
            return Ok(kernel);
        }
        let blob = self.blob_path(&entry.digest);
        let bytes = std::fs::read(&blob).map_err(io(&blob))?;
        let found = digest_of(&bytes);
        if found != entry.digest {
            return Err(RegistryError::Corrupt {
                reference,
                expected: entry.digest,
                found,
                dir: self.dir.display().to_string(),
            });
        }
        let kernel = host.load(&bytes).await?;
        if kernel.reference() != reference {
            return Err(RegistryError::Mismatch {
                reference,
                described: kernel.reference(),
            });
        }
        self.remember(&kernel);
        Ok(kernel)
    }

    /// Every published version.
    pub async fn list(&self) -> Result<Vec<KernelRow>, RegistryError> {
        Ok(self.store.kernels().await?)
    }
}

fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), RegistryError> {
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).map_err(io(dir))?;
    let mut tmp = tempfile::NamedTempFile::new_in(dir).map_err(io(dir))?;
    tmp.write_all(bytes).map_err(io(path))?;
    tmp.as_file().sync_all().map_err(io(path))?;
    tmp.persist(path).map_err(|e| io(path)(e.error))?;
    Ok(())
}
