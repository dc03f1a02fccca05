//! What `serve` runs for the audit log: the checkpointer (a checkpoint
//! every `checkpoint-every-records` records or `checkpoint-interval-s`
//! seconds), one task per witness, and the syslog export. None of them is
//! on the path of a run: a failure is logged, counted and retried.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::audit::AuditConfig;
use crate::audit::checkpoint::SignedCheckpoint;
use crate::secret::SecretProvider;
use crate::store::Store;

use super::{Keys, TlogError};

/// How often the checkpointer looks at the head.
const TICK: Duration = Duration::from_millis(500);

/// One witness's delivery state.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WitnessState {
    /// The size of the newest checkpoint it holds (from this process).
    pub delivered: u64,
    /// Failed deliveries since start.
    pub failures: u64,
    pub last_error: Option<String>,
}

/// What `/metrics` reads: the newest checkpoint signed here and each
/// witness's delivery.
#[derive(Debug, Default)]
pub struct Status {
    latest: Mutex<u64>,
    witnesses: Mutex<BTreeMap<String, WitnessState>>,
}

impl Status {
    pub(super) fn delivered(&self, name: &str, size: u64, error: Option<String>) {
        let mut w = self.witnesses.lock().unwrap_or_else(|e| e.into_inner());
        let state = w.entry(name.to_string()).or_default();
        state.delivered = size;
        if error.is_some() {
            state.failures += 1;
        }
        state.last_error = error;
    }

    fn signed(&self, size: u64) {
        *self.latest.lock().unwrap_or_else(|e| e.into_inner()) = size;
    }

    /// (witness, records it lags behind the newest checkpoint, failures).
    pub fn witness_lag(&self) -> Vec<(String, u64, u64)> {
        let latest = *self.latest.lock().unwrap_or_else(|e| e.into_inner());
        self.witnesses
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .map(|(name, s)| (name.clone(), latest.saturating_sub(s.delivered), s.failures))
            .collect()
    }

    pub fn witness(&self, name: &str) -> Option<WitnessState> {
        self.witnesses
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(name)
            .cloned()
    }
}

/// Signs checkpoints of the log as it grows.
#[derive(Debug)]
pub struct Checkpointer {
    keys: Keys,
    every_records: u64,
    interval: Duration,
    tree: super::Tree,
    /// Why this home refuses to sign (logged once), if it does.
    refused: Option<String>,
    /// Size of the newest checkpoint signed or found.
    last: u64,
    last_at: Instant,
}

impl Checkpointer {
    /// Build the tree of the log as it is (one pass over the record hashes).
    pub async fn start(
        store: &dyn Store,
        keys: Keys,
        config: &AuditConfig,
    ) -> Result<Self, TlogError> {
        let last = store
            .checkpoints(1)
            .await?
            .first()
            .map_or(0, |c| c.size.max(0) as u64);
        let anchor = keys.anchor()?;
        let mut checkpointer = Checkpointer {
            keys,
            every_records: config.checkpoint_every_records.max(1),
            interval: Duration::from_secs(config.checkpoint_interval_s.max(1)),
            tree: super::Tree::new(anchor),
            refused: None,
            last,
            // An existing log not yet checkpointed is checkpointed at once.
            last_at: Instant::now() - Duration::from_secs(config.checkpoint_interval_s.max(1)),
        };
        checkpointer.read(store).await?;
        if let Some(why) = &checkpointer.refused {
            tracing::error!(error = %why, "audit checkpoints stopped: this home will not sign this log");
        }
        Ok(checkpointer)
    }

    /// Extend the tree; a log that shrank or changed under it stops the
    /// signing for good (runs go on; the store's own failures are retried).
    async fn read(&mut self, store: &dyn Store) -> Result<(), TlogError> {
        match self.tree.extend(store).await {
            Err(TlogError::Invalid(why)) => {
                self.refused = Some(why);
                Ok(())
            }
            other => other,
        }
    }

    /// Extend the tree with new records; sign a checkpoint if one is due
    /// (`force`: whenever the log grew).
    pub async fn tick(
        &mut self,
        store: &dyn Store,
        force: bool,
    ) -> Result<Option<SignedCheckpoint>, TlogError> {
        if self.refused.is_some() {
            return Ok(None);
        }
        self.read(store).await?;
        if let Some(why) = &self.refused {
            return Err(TlogError::Invalid(why.clone()));
        }
        let size = self.tree.size();
        let grew = size > self.last;
        let due = grew
            && (force
                || size - self.last >= self.every_records
                || self.last_at.elapsed() >= self.interval);
        if !due {
            return Ok(None);
        }
        let cp = match self.tree.checkpoint(&self.keys.origin) {
            Ok(cp) => cp,
            Err(e) => {
                // Not again: every later checkpoint would extend this log.
                self.refused = Some(e.to_string());
                return Err(e);
            }
        };
        let signed = super::keep(store, &self.keys, &cp).await?;
        self.last = size;
        self.last_at = Instant::now();
        Ok(Some(signed))
    }
}

/// The running audit-log tasks of `serve`.
#[derive(Debug)]
pub struct Handle {
    pub status: Arc<Status>,
    stop: tokio::sync::watch::Sender<bool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Handle {
    /// Sign a last checkpoint, give witnesses up to `grace` to take it,
    /// then stop.
    pub async fn stop(self, grace: Duration) {
        let _ = self.stop.send(true);
        let mut tasks = self.tasks.into_iter();
        if let Some(checkpointer) = tasks.next() {
            let _ = checkpointer.await;
        }
        let rest: Vec<_> = tasks.collect();
        let abort: Vec<_> = rest.iter().map(|t| t.abort_handle()).collect();
        if tokio::time::timeout(grace, futures::future::join_all(rest))
            .await
            .is_err()
        {
            abort.iter().for_each(|a| a.abort());
        }
    }
}

/// Start the checkpointer, the witnesses and the syslog export.
pub async fn spawn(
    store: Arc<dyn Store>,
    home: &Path,
    config: &AuditConfig,
    secrets: &dyn SecretProvider,
) -> Result<Handle, TlogError> {
    let (keys, created) = Keys::load(home, config)?;
    if created {
        let v = keys.verifier();
        super::record_key_change(
            store.as_ref(),
            &crate::audit::Actor::engine(
                crate::audit::ActorKind::Scheduler,
                "audit",
                crate::audit::Via::Engine,
            ),
            crate::audit::Action::AuditKeyCreated,
            None,
            &v,
        )
        .await?;
        tracing::info!(key = %v, "generated the audit checkpoint signing key; give this verifier key to whoever verifies the log");
    }
    let witnesses = config
        .witnesses
        .iter()
        .map(|w| Ok((w.name(), super::witness::Witness::new(w, secrets)?)))
        .collect::<Result<Vec<_>, TlogError>>()?;
    let export = config
        .syslog_export
        .as_deref()
        .map(super::syslog::Address::parse)
        .transpose()?;
    let mut checkpointer = Checkpointer::start(store.as_ref(), keys, config).await?;
    let status = Arc::new(Status::default());
    let (latest_tx, latest_rx) = tokio::sync::watch::channel::<Option<SignedCheckpoint>>(None);
    let (stop, mut stopped) = tokio::sync::watch::channel(false);
    let mut tasks = Vec::new();
    {
        let store = store.clone();
        let status = status.clone();
        tasks.push(tokio::spawn(async move {
            let mut tick = tokio::time::interval(TICK);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                let stopping = tokio::select! {
                    _ = tick.tick() => false,
                    _ = stopped.changed() => true,
                };
                match checkpointer.tick(store.as_ref(), stopping).await {
                    Ok(Some(cp)) => {
                        tracing::debug!(size = cp.checkpoint.size, "signed an audit checkpoint");
                        status.signed(cp.checkpoint.size);
                        let _ = latest_tx.send(Some(cp));
                    }
                    Ok(None) => {}
                    Err(e) => {
                        tracing::error!(error = %e, "could not sign an audit checkpoint (a store failure is retried at the next tick; a log that does not extend the last checkpoint stops the signing until restart)")
                    }
                }
                if stopping {
                    break;
                }
            }
            // Dropping the sender ends the witnesses once they delivered.
        }));
    }
    let retry = Duration::from_secs(config.witness_retry_s.max(1));
    for (name, witness) in witnesses {
        status.delivered(&name, 0, None);
        tasks.push(tokio::spawn(super::witness::run(
            witness,
            name,
            latest_rx.clone(),
            status.clone(),
            retry,
        )));
    }
    if let Some(address) = export {
        let cursor = home.join("audit").join("syslog-export.cursor");
        let origin = config.origin();
        let mut stopped = stop.subscribe();
        tasks.push(tokio::spawn(async move {
            let follow = super::export::syslog(store, origin, address, cursor);
            tokio::select! {
                _ = follow => {}
                _ = stopped.changed() => {}
            }
        }));
    }
    drop(latest_rx);
    Ok(Handle {
        status,
        stop,
        tasks,
    })
}
