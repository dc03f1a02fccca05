//! On-disk cache of compiled components, keyed by component digest and engine.
//!
//! Compiling a component is the slow part of loading it (seconds for a Python
//! kernel); the cache makes every load after the first a file read. Only files
//! this cache wrote are ever deserialized.

use std::hash::{Hash, Hasher};
use std::io::Write;
use std::path::{Path, PathBuf};

use wasmtime::Engine;
use wasmtime::component::Component;

/// The wasmtime release the engine is built against; part of the cache key.
pub const WASMTIME_VERSION: &str = "48.0.8";

/// Whether a load came from the cache.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CacheOutcome {
    Hit,
    Miss,
    /// No cache directory configured.
    Disabled,
}

#[derive(Debug, Clone)]
pub(crate) struct ComponentCache {
    dir: Option<PathBuf>,
}

impl ComponentCache {
    pub(crate) fn new(dir: Option<PathBuf>) -> Self {
        ComponentCache { dir }
    }

    fn path(dir: &Path, engine: &Engine, digest: &str) -> PathBuf {
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        engine.precompile_compatibility_hash().hash(&mut hasher);
        dir.join(format!(
            "{digest}-wasmtime-{WASMTIME_VERSION}-{:016x}.cwasm",
            hasher.finish()
        ))
    }

    /// The compiled component for `bytes` (whose sha256 is `digest`).
    pub(crate) fn load_or_compile(
        &self,
        engine: &Engine,
        digest: &str,
        bytes: &[u8],
    ) -> wasmtime::Result<(Component, CacheOutcome)> {
        let Some(dir) = &self.dir else {
            return Ok((
                Component::from_binary(engine, bytes)?,
                CacheOutcome::Disabled,
            ));
        };
        let path = Self::path(dir, engine, digest);
        // Read into memory rather than mmap the file: a file changed in place
        // under a live mapping would crash the process (SIGBUS).
        if let Ok(compiled) = std::fs::read(&path) {
            // SAFETY: `deserialize` trusts its input to be a compiled artifact.
            // The file at this path was written by `store` below from
            // `Component::serialize` with an engine whose compatibility hash
            // is part of the file name, into the engine's private cache
            // directory; wasmtime additionally checks the header and refuses
            // artifacts from another version or configuration.
            #[allow(unsafe_code)]
            match unsafe { Component::deserialize(engine, &compiled) } {
                Ok(component) => return Ok((component, CacheOutcome::Hit)),
                Err(e) => {
                    tracing::warn!(path = %path.display(), error = %e, "discarding unusable compiled-component cache entry");
                    let _ = std::fs::remove_file(&path);
                }
            }
        }
        let component = Component::from_binary(engine, bytes)?;
        if let Err(e) = store(dir, &path, &component) {
            // A cache that cannot be written costs time, not correctness.
            tracing::warn!(path = %path.display(), error = %e, "cannot write compiled-component cache entry");
        }
        Ok((component, CacheOutcome::Miss))
    }
}

/// Write atomically: a temp file in the same directory, fsync, rename.
fn store(dir: &Path, path: &Path, component: &Component) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir)?;
    let bytes = component.serialize().map_err(anyhow::Error::from)?;
    let mut tmp = tempfile::NamedTempFile::new_in(dir)?;
    tmp.write_all(&bytes)?;
    tmp.as_file().sync_all()?;
    tmp.persist(path)?;
    Ok(())
}
