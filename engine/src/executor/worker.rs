//! A node's worker: while it has a free run slot, it claims a run (one
//! whose node stopped renewing its lease first, then the oldest queued one)
//! and executes it; on shutdown it waits for its runs up to a grace period
//! and records the rest as interrupted.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore, watch};

use super::journal::{Journal, RunEvent};
use super::{Service, Started};
use crate::store::Fence;

/// This node's worker (cheap to clone: every clone is the same worker).
#[derive(Debug, Clone)]
pub struct Worker {
    service: Service,
    /// `max-concurrent-runs` slots.
    slots: Arc<Semaphore>,
    /// The runs this node executes: id -> fencing epoch.
    active: Arc<Mutex<HashMap<String, i64>>>,
    /// Woken when a run is queued here.
    wake: Arc<Notify>,
    started: Arc<AtomicBool>,
    stop: Arc<watch::Sender<bool>>,
    /// Callers waiting for a run to stop executing here, by run id (at
    /// most one entry per waiting caller: bounded by the server's
    /// `max-in-flight`).
    watched: Watched,
}

type Watched = Arc<Mutex<HashMap<String, watch::Sender<()>>>>;

/// A caller's wait for a run to stop executing on this node
/// ([`Worker::watch`]). Dropping it forgets the wait.
#[derive(Debug)]
pub struct RunWatch {
    id: String,
    rx: Option<watch::Receiver<()>>,
    watched: Watched,
}

impl RunWatch {
    /// Resolves when this node's slot for the run frees (the run finished,
    /// was interrupted, or was lost to another node), once; after that it
    /// never resolves. A run waiting at an approval keeps its slot, and a
    /// run another node executes never had one here: the caller also reads
    /// the store.
    pub async fn stopped(&mut self) {
        match &mut self.rx {
            Some(rx) => {
                let _ = rx.changed().await;
                self.rx = None;
            }
            None => std::future::pending().await,
        }
    }
}

impl Drop for RunWatch {
    fn drop(&mut self) {
        let mut watched = lock(&self.watched);
        // The last waiter for this run forgets the entry (its own receiver
        // is still counted here).
        if watched
            .get(&self.id)
            .is_some_and(|tx| tx.receiver_count() <= usize::from(self.rx.is_some()))
        {
            watched.remove(&self.id);
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Worker {
    /// A worker for `service` executing at most `slots` runs at once.
    pub fn new(service: Service, slots: usize) -> Self {
        Worker {
            service,
            slots: Arc::new(Semaphore::new(slots.max(1))),
            active: Arc::new(Mutex::new(HashMap::new())),
            wake: Arc::new(Notify::new()),
            started: Arc::new(AtomicBool::new(false)),
            stop: Arc::new(watch::channel(false).0),
            watched: Arc::default(),
        }
    }

    /// Wait for run `id` to stop executing on this node: call before
    /// reading its status, so a run that stops in between is not missed.
    pub fn watch(&self, id: &str) -> RunWatch {
        let rx = lock(&self.watched)
            .entry(id.to_string())
            .or_insert_with(|| watch::channel(()).0)
            .subscribe();
        RunWatch {
            id: id.to_string(),
            rx: Some(rx),
            watched: self.watched.clone(),
        }
    }

    /// Runs this node is executing.
    pub fn executing(&self) -> usize {
        lock(&self.active).len()
    }

    /// Start the worker unless it runs already, and tell it a run was
    /// queued.
    pub fn wake(&self) {
        if !self.started.swap(true, Ordering::SeqCst) {
            let worker = self.clone();
            let stopped = self.stop.subscribe();
            tokio::spawn(async move { worker.work(stopped).await });
        }
        self.wake.notify_one();
    }

    /// The worker's loop. Idle, it looks again every `node.poll-ms`, or at
    /// once when woken.
    async fn work(&self, mut stopped: watch::Receiver<bool>) {
        let service = &self.service;
        let poll = Duration::from_millis(service.node().poll_ms);
        let mut last_takeover: Option<Instant> = None;
        loop {
            let permit = tokio::select! {
                p = self.slots.clone().acquire_owned() => match p { Ok(p) => p, Err(_) => return },
                _ = stopped.changed() => return,
            };
            let mut claim = None;
            if last_takeover.is_none_or(|t| t.elapsed() >= poll) {
                last_takeover = Some(Instant::now());
                claim = service.take_over().await.unwrap_or_else(|e| {
                    tracing::error!(error = %e, "cannot look for runs to take over; retrying");
                    None
                });
            }
            if claim.is_none() {
                claim = service.claim_queued(None).await.unwrap_or_else(|e| {
                    tracing::error!(error = %e, "cannot claim a queued run; retrying");
                    None
                });
            }
            let Some(claim) = claim else {
                drop(permit);
                tokio::select! {
                    () = self.wake.notified() => {}
                    () = tokio::time::sleep(poll) => {}
                    _ = stopped.changed() => return,
                }
                continue;
            };
            if let Some(previous) = &claim.previous {
                service
                    .metrics()
                    .inc("firedrill_runs_taken_over_total", &[]);
                tracing::warn!(run_id = %claim.run_id, previous = %previous, "taking over a run whose node stopped renewing its lease");
            }
            let (id, epoch) = (claim.run_id.clone(), claim.epoch);
            let service = self.service.clone();
            self.spawn_run(permit, id, epoch, async move {
                service.execute_claimed(claim).await
            });
        }
    }

    /// Runs someone waits for ([`Worker::watch`]).
    pub fn watched(&self) -> usize {
        lock(&self.watched).len()
    }

    /// Whether the worker is stopping (`drain` was called): true from then on.
    pub fn stopping(&self) -> watch::Receiver<bool> {
        self.stop.subscribe()
    }

    /// A free run slot, unless the worker is stopping: the caller may start
    /// a run here at once ([`Worker::execute_started`]).
    pub fn try_slot(&self) -> Option<OwnedSemaphorePermit> {
        if *self.stop.borrow() {
            return None;
        }
        self.slots.clone().try_acquire_owned().ok()
    }

    /// Execute `started` (admitted and claimed by this node) in `slot`, as
    /// a run this worker claimed: counted, drained on shutdown, watched.
    pub fn execute_started(&self, slot: OwnedSemaphorePermit, started: Started) {
        let (id, epoch) = (started.run_id().to_string(), started.epoch());
        let service = self.service.clone();
        self.spawn_run(slot, id, epoch, async move {
            service.execute_started(started).await
        });
    }

    /// Execute run `id` (held at `epoch`) in `slot` on its own task; when
    /// it ends, free the slot and wake whoever watches it.
    fn spawn_run(
        &self,
        slot: OwnedSemaphorePermit,
        id: String,
        epoch: i64,
        run: impl std::future::Future<Output = Result<String, super::error::RunError>> + Send + 'static,
    ) {
        lock(&self.active).insert(id.clone(), epoch);
        let worker = self.clone();
        tokio::spawn(async move {
            if let Err(e) = run.await {
                tracing::error!(run_id = %id, error = %e, "run could not be executed");
            }
            lock(&worker.active).remove(&id);
            drop(slot);
            if let Some(tx) = lock(&worker.watched).remove(&id) {
                tx.send_replace(());
            }
        });
    }

    /// Stop claiming; wait for the runs this node is executing up to
    /// `grace`; record the rest as interrupted. Returns how many were
    /// interrupted.
    pub async fn drain(&self, grace: Duration) -> usize {
        let _ = self.stop.send(true);
        let deadline = Instant::now() + grace;
        while Instant::now() < deadline && !lock(&self.active).is_empty() {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let left: Vec<(String, i64)> = lock(&self.active)
            .iter()
            .map(|(id, epoch)| (id.clone(), *epoch))
            .collect();
        let node = self.service.node().id.clone();
        for (id, epoch) in &left {
            let journal = Journal::closing(
                self.service.store().clone(),
                self.service.metrics().clone(),
                Fence {
                    run_id: id.clone(),
                    owner: node.clone(),
                    epoch: *epoch,
                },
            );
            let error = "firedrill serve shut down while this run was in progress; the step in flight may or may not have completed: check the targets before running it again".to_string();
            if let Err(e) = journal.record(RunEvent::Interrupted { error }).await {
                tracing::error!(run_id = %id, error = %e, "cannot record the run as interrupted");
            }
        }
        left.len()
    }
}
