//! Witnesses: places outside the database that keep each checkpoint
//! (`[[audit.witnesses]]`). A witness that is down never blocks anything:
//! each has its own task, which retries with backoff and always delivers
//! the newest checkpoint (a newer one supersedes an undelivered older one).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use crate::audit::WitnessConfig;
use crate::audit::checkpoint::SignedCheckpoint;
use crate::secret::SecretProvider;

use super::TlogError;
use super::serve::Status;
use super::syslog;

/// The longest wait between retries.
const MAX_BACKOFF: Duration = Duration::from_secs(60);

/// A witness, ready to deliver.
pub enum Witness {
    Directory(PathBuf),
    /// POSTed as text; its name carries no credentials.
    Http(crate::outbound::Endpoint),
    Syslog(syslog::Sender),
}

impl std::fmt::Debug for Witness {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Witness::Directory(p) => write!(f, "Witness::Directory({})", p.display()),
            // The token never reaches a log.
            Witness::Http(e) => write!(f, "Witness::Http({})", e.name),
            Witness::Syslog(s) => write!(f, "Witness::Syslog({s:?})"),
        }
    }
}

impl Witness {
    /// Build a witness from its config (the HTTP token read from the
    /// secret provider now, so a missing secret fails at start).
    pub fn new(config: &WitnessConfig, secrets: &dyn SecretProvider) -> Result<Self, TlogError> {
        Ok(match config {
            WitnessConfig::Directory { path } => Witness::Directory(path.clone()),
            WitnessConfig::Http {
                url,
                token_secret,
                timeout_ms,
            } => Witness::Http(
                crate::outbound::Endpoint::new(
                    "witness",
                    url,
                    token_secret.as_deref(),
                    *timeout_ms,
                    secrets,
                )
                .map_err(TlogError::Invalid)?,
            ),
            WitnessConfig::Syslog { address } => {
                Witness::Syslog(syslog::Sender::new(syslog::Address::parse(address)?))
            }
        })
    }

    /// Deliver one checkpoint.
    pub async fn deliver(&mut self, cp: &SignedCheckpoint) -> Result<(), TlogError> {
        match self {
            Witness::Directory(dir) => write_to_dir(dir, cp),
            Witness::Http(endpoint) => endpoint
                .post(
                    &endpoint.url,
                    "text/plain; charset=utf-8",
                    &[],
                    cp.note.clone().into_bytes(),
                )
                .await
                .map_err(TlogError::Invalid),
            Witness::Syslog(sender) => {
                let msg = serde_json::json!({
                    "origin": cp.checkpoint.origin,
                    "size": cp.checkpoint.size,
                    "root": cp.checkpoint.root_b64(),
                    "checkpoint": cp.note,
                });
                sender
                    .send(&syslog::format(
                        syslog::SEVERITY_INFO,
                        "checkpoint",
                        &crate::audit::now_rfc3339(),
                        &msg.to_string(),
                    ))
                    .await
            }
        }
    }
}

/// `<size>.checkpoint` and `latest`, each written to a temp file, synced
/// and renamed. The directory must exist (a share that is not mounted is
/// a failure, not a new empty directory).
pub fn write_to_dir(dir: &Path, cp: &SignedCheckpoint) -> Result<(), TlogError> {
    let io = |what: &'static str, path: &Path| {
        let path = path.display().to_string();
        move |source| TlogError::Io { what, path, source }
    };
    if !dir.is_dir() {
        return Err(TlogError::Invalid(format!(
            "witness directory {} does not exist (is the share mounted?)",
            dir.display()
        )));
    }
    for name in [
        format!("{}.checkpoint", cp.checkpoint.size),
        "latest".into(),
    ] {
        let path = dir.join(&name);
        let tmp = dir.join(format!(".{name}.tmp"));
        let write = || -> std::io::Result<()> {
            use std::io::Write as _;
            let mut f = std::fs::File::create(&tmp)?;
            f.write_all(cp.note.as_bytes())?;
            f.sync_all()?;
            std::fs::rename(&tmp, &path)
        };
        write().map_err(io("write witness checkpoint", &path))?;
    }
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io("sync witness directory", dir))
}

/// Deliver every new checkpoint from `latest` to `witness` until the
/// channel closes; failures are retried with backoff and counted.
pub async fn run(
    mut witness: Witness,
    name: String,
    mut latest: tokio::sync::watch::Receiver<Option<SignedCheckpoint>>,
    status: Arc<Status>,
    retry: Duration,
) {
    let mut delivered = 0u64;
    let mut backoff = retry.max(Duration::from_millis(10));
    loop {
        let next = latest.borrow_and_update().clone();
        if let Some(cp) = next.filter(|cp| cp.checkpoint.size > delivered) {
            match witness.deliver(&cp).await {
                Ok(()) => {
                    delivered = cp.checkpoint.size;
                    backoff = retry.max(Duration::from_millis(10));
                    status.delivered(&name, delivered, None);
                }
                Err(e) => {
                    tracing::warn!(witness = %name, error = %e, retry_in_s = backoff.as_secs_f64(), "could not deliver an audit checkpoint to a witness; retrying (runs are not affected)");
                    status.delivered(&name, delivered, Some(e.to_string()));
                    tokio::select! {
                        _ = tokio::time::sleep(backoff) => {}
                        changed = latest.changed() => if changed.is_err() { return },
                    }
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                    continue;
                }
            }
        }
        if latest.changed().await.is_err() {
            return;
        }
    }
}
