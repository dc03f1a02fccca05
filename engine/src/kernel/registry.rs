//! The kernel registry: components stored content-addressed under `name@version`.
//!
//! Layout under `<home>/kernels`: `blobs/<sha256 hex>.wasm` holds the bytes;
//! `index/<name>/<version>.json` says which digest that version is. A version
//! is immutable: publishing different bytes under an existing version is refused.

use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::host::{KernelHost, LoadError, LoadedKernel, digest_of};
use std::sync::Arc;

/// One published version.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct RegistryEntry {
    pub name: String,
    pub version: String,
    pub digest: String,
    pub size_bytes: u64,
    pub published_at_ms: u64,
}

/// What publishing did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Published {
    New(RegistryEntry),
    /// The same bytes were already published under this version.
    AlreadyPresent(RegistryEntry),
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
    #[error("registry index entry {path} is not valid JSON: {reason}")]
    Index { path: String, reason: String },
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> RegistryError + '_ {
    move |source| RegistryError::Io {
        path: path.display().to_string(),
        source,
    }
}

/// A registry rooted at a directory.
#[derive(Debug, Clone)]
pub struct Registry {
    dir: PathBuf,
}

impl Registry {
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Registry { dir: dir.into() }
    }

    fn blob_path(&self, digest: &str) -> PathBuf {
        let hex = digest.trim_start_matches("sha256:");
        self.dir.join("blobs").join(format!("{hex}.wasm"))
    }

    fn index_path(&self, name: &str, version: &str) -> PathBuf {
        self.dir
            .join("index")
            .join(name)
            .join(format!("{version}.json"))
    }

    /// Validate `bytes` as a kernel and store it under the name@version its
    /// manifest declares.
    pub async fn publish(
        &self,
        host: &KernelHost,
        bytes: &[u8],
    ) -> Result<(Published, Arc<LoadedKernel>), RegistryError> {
        let kernel = host.load(bytes).await?;
        let (name, version) = (&kernel.manifest.name, &kernel.manifest.version);
        if let Some(existing) = self.entry(name, version)? {
            if existing.digest == kernel.digest {
                return Ok((Published::AlreadyPresent(existing), kernel));
            }
            return Err(RegistryError::VersionConflict {
                reference: kernel.reference(),
                existing: existing.digest,
                new: kernel.digest.clone(),
            });
        }
        let blob = self.blob_path(&kernel.digest);
        if !blob.exists() {
            write_atomic(&blob, bytes, false)?;
        }
        let entry = RegistryEntry {
            name: name.clone(),
            version: version.clone(),
            digest: kernel.digest.clone(),
            size_bytes: bytes.len() as u64,
            published_at_ms: super::sandbox::unix_ms(),
        };
        let index = self.index_path(name, version);
        let json = serde_json::to_vec_pretty(&entry).map_err(|e| RegistryError::Index {
            path: index.display().to_string(),
            reason: e.to_string(),
        })?;
        // No clobber: of two concurrent publishers of one version, one wins
        // and the other sees the conflict (or the same digest) on retry.
        match write_atomic(&index, &json, true) {
            Ok(()) => Ok((Published::New(entry), kernel)),
            Err(RegistryError::Io { source, .. })
                if source.kind() == std::io::ErrorKind::AlreadyExists =>
            {
                Box::pin(self.publish(host, bytes)).await
            }
            Err(e) => Err(e),
        }
    }

    /// The index entry of `name@version`, if published.
    pub fn entry(&self, name: &str, version: &str) -> Result<Option<RegistryEntry>, RegistryError> {
        let path = self.index_path(name, version);
        let text = match std::fs::read(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(io(&path)(e)),
        };
        serde_json::from_slice(&text)
            .map(Some)
            .map_err(|e| RegistryError::Index {
                path: path.display().to_string(),
                reason: e.to_string(),
            })
    }

    /// Load a published kernel, checking that the stored bytes still have
    /// their recorded digest and still describe themselves as `name@version`.
    pub async fn resolve(
        &self,
        host: &KernelHost,
        name: &str,
        version: &str,
    ) -> Result<Arc<LoadedKernel>, RegistryError> {
        let reference = format!("{name}@{version}");
        let entry = self
            .entry(name, version)?
            .ok_or_else(|| RegistryError::NotFound {
                reference: reference.clone(),
            })?;
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
        Ok(kernel)
    }

    /// Every published version, sorted by name then semantic version.
    pub fn list(&self) -> Result<Vec<RegistryEntry>, RegistryError> {
        let index = self.dir.join("index");
        let mut out = Vec::new();
        let names = match std::fs::read_dir(&index) {
            Ok(d) => d,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
            Err(e) => return Err(io(&index)(e)),
        };
        for name in names {
            let name = name.map_err(io(&index))?;
            for file in std::fs::read_dir(name.path()).map_err(io(&name.path()))? {
                let path = file.map_err(io(&index))?.path();
                if path.extension().is_some_and(|e| e == "json") {
                    let text = std::fs::read(&path).map_err(io(&path))?;
                    out.push(serde_json::from_slice::<RegistryEntry>(&text).map_err(|e| {
                        RegistryError::Index {
                            path: path.display().to_string(),
                            reason: e.to_string(),
                        }
                    })?);
                }
            }
        }
        out.sort_by(|a, b| {
            a.name.cmp(&b.name).then_with(|| {
                match (
                    semver::Version::parse(&a.version),
                    semver::Version::parse(&b.version),
                ) {
                    (Ok(x), Ok(y)) => x.cmp(&y),
                    _ => a.version.cmp(&b.version),
                }
            })
        });
        Ok(out)
    }
}

fn write_atomic(path: &Path, bytes: &[u8], no_clobber: bool) -> Result<(), RegistryError> {
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).map_err(io(dir))?;
    let mut tmp = tempfile::NamedTempFile::new_in(dir).map_err(io(dir))?;
    tmp.write_all(bytes).map_err(io(path))?;
    tmp.as_file().sync_all().map_err(io(path))?;
    if no_clobber {
        tmp.persist_noclobber(path).map_err(|e| io(path)(e.error))?;
    } else {
        tmp.persist(path).map_err(|e| io(path)(e.error))?;
    }
    Ok(())
}
