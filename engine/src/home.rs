//! The firedrill home directory (`--home`, env `FIREDRILL_HOME`): config,
//! inventory, kernel registry and caches, and the typed config file.

use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::{Deserialize, Serialize};

mod backup;
mod reference;

pub use backup::{RestoreError, Restored};
pub use reference::config_reference;

use crate::executor::Service;
use crate::kernel::{HostConfig, HostStartError, KernelHost, Registry};
use crate::secret::{EnvSecrets, FileSecrets, Provider, SecretProvider, SecretsConfig};
use crate::store::{SqliteStore, Store, StoreConfig, StoreError};
use crate::transport::{Inventory, InventoryError, Targets, TargetsConfig};

/// `firedrill.toml`. Unknown keys are refused.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "kebab-case", default)]
pub struct Config {
    /// The kernel host and the limits of every invocation.
    pub kernel: HostConfig,
    /// The embedded store.
    pub store: StoreConfig,
    /// Where secrets come from.
    pub secrets: SecretsConfig,
    /// How SSH and HTTP targets are reached: timeouts, pools, retries.
    pub targets: TargetsConfig,
    /// `firedrill serve`: listen address and admission limits.
    pub server: crate::server::ServerConfig,
    /// This process as a node: its id and run leases.
    pub node: crate::executor::NodeConfig,
    /// The audit log's checkpoints, signing key, witnesses and export.
    pub audit: crate::audit::AuditConfig,
    /// Notifications of what automation could not do.
    pub notify: crate::notify::NotifyConfig,
}

/// The home directory could not be used.
#[derive(Debug, thiserror::Error)]
pub enum HomeError {
    #[error(
        "cannot create or read the firedrill home {path}: {source}; pass --home DIR or set FIREDRILL_HOME to a writable directory"
    )]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("config file {path} is not valid: {message}")]
    Config { path: String, message: String },
    #[error(transparent)]
    Inventory(#[from] InventoryError),
    #[error(transparent)]
    Engine(#[from] HostStartError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// An opened home directory.
#[derive(Debug, Clone)]
pub struct Home {
    dir: PathBuf,
    config: Config,
}

/// Warn when `path` is readable or writable by group or others: the home
/// holds the store, kernels and secrets. A warning, not a refusal: the
/// files inside are created owner-only regardless.
pub fn warn_if_shared(path: &Path, what: &str) {
    use std::os::unix::fs::PermissionsExt;
    if let Ok(meta) = std::fs::metadata(path) {
        let mode = meta.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            tracing::warn!(
                path = %path.display(),
                mode = format!("{mode:o}"),
                "{what} is accessible to other users; run `chmod 700 {}`",
                path.display()
            );
        }
    }
}

/// Warn when the home belongs to another user (root working on the
/// service's `/var/lib/firedrill`, say): files this process creates there
/// are its own, owner-only, and the owner's `firedrill serve` cannot read
/// them.
fn warn_if_not_mine(dir: &Path) {
    use std::os::unix::fs::MetadataExt as _;
    let Ok(meta) = std::fs::metadata(dir) else {
        return;
    };
    let me = nix::unistd::geteuid().as_raw();
    if meta.uid() != me {
        let owner = nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(meta.uid()))
            .ok()
            .flatten()
            .map(|u| u.name)
            .unwrap_or_else(|| meta.uid().to_string());
        tracing::warn!(
            path = %dir.display(),
            owner = %owner,
            "the firedrill home belongs to {owner}, not to this user: files written now will be this user's alone and {owner}'s firedrill may not read them; run as {owner} (`sudo -u {owner} FIREDRILL_HOME={} firedrill ...`)",
            dir.display()
        );
    }
}

/// The default home: `$HOME/.firedrill`, or `./.firedrill` without `$HOME`.
pub fn default_dir() -> PathBuf {
    std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("."))
        .join(".firedrill")
}

impl Home {
    /// Open (creating if needed) the home at `dir` and read its config.
    pub fn open(dir: &Path) -> Result<Self, HomeError> {
        let io = |source| HomeError::Io {
            path: dir.display().to_string(),
            source,
        };
        // Private: the home holds compiled code that the engine executes.
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(io)?;
        warn_if_shared(dir, "the firedrill home");
        warn_if_not_mine(dir);
        let config_path = dir.join("firedrill.toml");
        let config = match std::fs::read_to_string(&config_path) {
            Ok(text) => toml::from_str(&text).map_err(|e| HomeError::Config {
                path: config_path.display().to_string(),
                // The error quotes the offending line: keep it readable.
                message: e.to_string().chars().take(2_000).collect(),
            })?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Config::default(),
            Err(e) => return Err(io(e)),
        };
        let problems = config.store.problems();
        if !problems.is_empty() {
            return Err(HomeError::Config {
                path: config_path.display().to_string(),
                message: problems.join("; "),
            });
        }
        Ok(Home {
            dir: dir.to_path_buf(),
            config,
        })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The store file.
    pub fn database_path(&self) -> PathBuf {
        self.dir.join("firedrill.db")
    }

    /// Open the embedded store.
    pub async fn store(&self) -> Result<Arc<dyn Store>, HomeError> {
        Ok(match &self.config.store.url {
            Some(url) => Arc::new(crate::store::PgStore::open(url, &self.config.store).await?),
            None => Arc::new(SqliteStore::open(&self.database_path(), &self.config.store).await?),
        })
    }

    /// Use the PostgreSQL database at `url` instead of `[store] url` or the
    /// home's SQLite file (`--database`, `FIREDRILL_DATABASE`).
    pub fn set_database(&mut self, url: String) {
        self.config.store.url = Some(url);
    }

    /// Name this process as a node (`serve --node-id`, `FIREDRILL_NODE_ID`)
    /// instead of `[node] id`; validated with the rest of `[node]`.
    pub fn set_node_id(&mut self, id: String) {
        self.config.node.id = id;
    }

    /// Everything the engine needs: store, kernel host, registry.
    pub async fn service(&self) -> Result<Service, HomeError> {
        let store = self.store().await?;
        let registry = Registry::new(self.dir.join("kernels"), store.clone());
        let node = self
            .config
            .node
            .clone()
            .resolved()
            .map_err(|message| HomeError::Config {
                path: self.dir.join("firedrill.toml").display().to_string(),
                message,
            })?;
        Ok(Service::new(store, Arc::new(self.kernel_host()?), registry).with_node(node))
    }

    pub fn inventory_path(&self) -> PathBuf {
        self.dir.join("inventory.yaml")
    }

    pub fn inventory(&self) -> Result<Inventory, HomeError> {
        Ok(Inventory::load(&self.inventory_path())?)
    }

    /// Start a kernel host configured from this home.
    pub fn kernel_host(&self) -> Result<KernelHost, HomeError> {
        let mut config = self.config.kernel.clone();
        if config.cache_dir.is_none() {
            config.cache_dir = Some(self.dir.join("cache").join("kernels"));
        }
        let targets = Targets::with_config(self.inventory()?, &self.config.targets);
        Ok(KernelHost::new(config, targets, self.secrets())?)
    }

    /// The configured secret provider.
    pub fn secrets(&self) -> Arc<dyn SecretProvider> {
        match self.config.secrets.provider {
            Provider::Env => Arc::new(EnvSecrets),
            Provider::File => {
                let dir = self
                    .config
                    .secrets
                    .dir
                    .clone()
                    .unwrap_or_else(|| self.dir.join("secrets"));
                warn_if_shared(&dir, "the secrets directory");
                Arc::new(FileSecrets { dir })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_rejects_unknown_keys_with_their_name() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(
            dir.path().join("firedrill.toml"),
            "[kernel.limits]\nmemory = 5\n",
        )
        .expect("write");
        let err = Home::open(dir.path()).unwrap_err().to_string();
        assert!(
            err.contains("unknown field `memory`") && err.contains("memory-bytes"),
            "{err}"
        );
    }

    #[test]
    fn config_sets_limits() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(
            dir.path().join("firedrill.toml"),
            "[kernel]\nmax-concurrent-invocations = 8\nkeep-resident-bytes = 0\n[kernel.limits]\nmemory-bytes = 1048576\n",
        )
        .expect("write");
        let home = Home::open(dir.path()).expect("opens");
        assert_eq!(home.config().kernel.limits.memory_bytes, 1 << 20);
        assert_eq!(home.config().kernel.max_concurrent_invocations, 8);
        assert_eq!(home.config().kernel.keep_resident_bytes, 0);
    }

    /// `[store]` limits at their edges: the bounds open, one past them is
    /// refused naming the key and its range, every problem at once.
    #[test]
    fn store_limits_are_checked_at_their_edges() {
        let dir = tempfile::tempdir().expect("tempdir");
        let config = dir.path().join("firedrill.toml");
        for ok in [
            "read-connections = 1\nbusy-timeout-ms = 1",
            "read-connections = 64\nbusy-timeout-ms = 3600000",
        ] {
            std::fs::write(&config, format!("[store]\n{ok}\n")).expect("write");
            Home::open(dir.path()).unwrap_or_else(|e| panic!("{ok}: {e}"));
        }
        std::fs::write(
            &config,
            "[store]\nread-connections = 0\nbusy-timeout-ms = 3600001\nwrite-queue = 0\n",
        )
        .expect("write");
        let err = Home::open(dir.path()).unwrap_err().to_string();
        for needle in [
            "[store] read-connections is 0; it must be between 1 and 64",
            "[store] busy-timeout-ms is 3600001; it must be between 1 and 3600000",
            "[store] write-queue is 0",
        ] {
            assert!(err.contains(needle), "{needle}: {err}");
        }
        std::fs::write(&config, "[store]\nread-connections = 65\n").expect("write");
        let err = Home::open(dir.path()).unwrap_err().to_string();
        assert!(err.contains("read-connections is 65"), "{err}");
    }
}
