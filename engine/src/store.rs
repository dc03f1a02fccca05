//! Durable state: kernels, runbook versions, runs, steps, host calls and the
//! audit log, behind the [`Store`] trait (SQLite today; PostgreSQL can follow
//! without touching the executor).
//!
//! Writes are [`Batch`]es: state changes plus the audit events that describe
//! them, applied in one transaction. A batch is acknowledged only after it is
//! durable.

pub mod backup;
mod direct;
mod postgres;
mod reads;
mod sql;
mod sqlite;
mod status;
mod writer;
mod writes;

use serde::{Deserialize, Serialize};

use crate::audit::{AuditRecord, NewEvent};

pub use postgres::{PgStore, redacted_url};
pub use sqlite::{SqliteStore, StoreConfig, Synchronous, known_schema};
pub use status::{Phase, QueueRefusal, RunStatus, StepStatus, TargetStatus};

/// A published kernel version.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct KernelRow {
    pub name: String,
    pub version: String,
    pub digest: String,
    pub size_bytes: i64,
    pub manifest: serde_json::Value,
    pub published_at: String,
    pub published_by: String,
}

/// A published runbook version.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunbookRow {
    pub name: String,
    pub version: i64,
    pub digest: String,
    pub source: String,
    pub published_at: String,
    pub published_by: String,
}

/// A stored token (never the token itself).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenRow {
    pub id: String,
    pub name: String,
    pub role: crate::role::Role,
    /// Runbooks this token is limited to; empty = all.
    pub runbooks: Vec<String>,
    /// SHA-256 of the token, hex.
    #[serde(skip_serializing)]
    pub hash: String,
    pub created_at: String,
    pub created_by: String,
    /// The person this token belongs to; counted once in an approval.
    /// Empty for tokens created before owners were recorded.
    pub owner: String,
    pub revoked_at: Option<String>,
}

/// One switch's state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SwitchRow {
    /// `global` or `runbook:<name>`.
    pub scope: String,
    pub engaged: bool,
    pub reason: String,
    /// Who flipped it last, as `kind:id`.
    pub actor: String,
    pub changed_at: String,
}

/// A signed checkpoint of the audit log, as kept in the store.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckpointRow {
    /// Records covered (the tree size).
    pub size: i64,
    /// The tree's root hash, base64.
    pub root: String,
    /// The signed note.
    pub note: String,
    /// The key that signed it, `name+id`.
    pub signer: String,
    pub created_at: String,
}

/// One run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunRow {
    pub id: String,
    pub runbook: String,
    pub runbook_version: i64,
    pub runbook_digest: String,
    /// Run from a file without publishing.
    pub draft: bool,
    pub mode: String,
    pub actor: String,
    pub status: RunStatus,
    pub inputs: serde_json::Value,
    /// `name@version` -> digest of every kernel the run uses.
    pub kernels: serde_json::Value,
    pub error: Option<String>,
    pub started_at: String,
    pub finished_at: Option<String>,
    /// Who asked to cancel this run and why (honoured at the next step boundary).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cancel_requested: Option<String>,
    /// Started by the drill scheduler (or `firedrill drill run`).
    #[serde(default)]
    pub drill: bool,
    /// The node holding the run's lease (while queued: none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner: Option<String>,
    /// Fencing epoch: incremented by every claim and takeover; a write
    /// carrying an older epoch is refused.
    #[serde(default)]
    pub epoch: i64,
    /// The approval a `require-approval` readiness policy puts before the
    /// first step (JSON), kept for whichever node runs it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gate: Option<serde_json::Value>,
    /// A draft's runbook text (not published), so any node can run it.
    #[serde(default, skip_serializing)]
    pub source: Option<String>,
}

/// The holder of a run's lease, carried by every write of that run: the
/// store refuses the batch ([`Applied::Fenced`]) unless the run's owner and
/// epoch are still these.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fence {
    pub run_id: String,
    pub owner: String,
    pub epoch: i64,
}

/// One person's decision on an approval step.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApprovalRow {
    pub run_id: String,
    pub step_id: String,
    /// The actor, `kind:id`.
    pub approver: String,
    /// `approve` or `deny`.
    pub decision: String,
    pub comment: String,
    pub at: String,
}

/// When a runbook's next drill is due.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DrillScheduleRow {
    pub runbook: String,
    /// RFC 3339.
    pub next_due_at: String,
    pub last_run_id: Option<String>,
}

/// One step of a run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StepRow {
    pub run_id: String,
    pub step_id: String,
    pub position: i64,
    pub phase: Phase,
    pub kernel: String,
    pub kernel_digest: Option<String>,
    pub status: StepStatus,
    pub attempts: i64,
    pub targets: serde_json::Value,
    pub input: Option<serde_json::Value>,
    pub output: Option<serde_json::Value>,
    pub error: Option<String>,
    pub logs: serde_json::Value,
    pub started_at: Option<String>,
    pub finished_at: Option<String>,
    pub duration_ms: Option<i64>,
}

/// The result of one target of a step.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StepTargetRow {
    pub run_id: String,
    pub step_id: String,
    pub target: String,
    pub status: TargetStatus,
    pub attempts: i64,
    pub output: Option<serde_json::Value>,
    pub error: Option<String>,
    pub duration_ms: Option<i64>,
}

/// A host call of a step attempt.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct HostCallRow {
    pub run_id: String,
    pub step_id: String,
    /// The target this invocation was granted (one per fanned-out invocation).
    pub target: String,
    pub attempt: i64,
    pub index: i64,
    /// The [`HostCall`] record as JSON.
    pub call: serde_json::Value,
}

/// One state change.
#[derive(Debug, Clone)]
pub enum Write {
    /// Refused (as [`Applied::Conflict`]) when the version exists with another
    /// digest; [`Applied::AlreadyPresent`] when it exists with the same one.
    PublishKernel(KernelRow),
    PublishRunbook(RunbookRow),
    InsertRun(RunRow),
    /// End a running run ([`Applied::Stale`] when it is not running).
    FinishRun {
        id: String,
        status: RunStatus,
        error: Option<String>,
        finished_at: String,
    },
    UpsertStep(StepRow),
    UpsertStepTarget(StepTargetRow),
    InsertHostCall(HostCallRow),
    /// A new API token; [`Applied::Exists`] when a live token has its name.
    InsertToken(TokenRow),
    RevokeToken {
        id: String,
        revoked_at: String,
    },
    /// A console session for token `token_id` (the session id's hash),
    /// valid until `expires_at`.
    InsertSession {
        hash: String,
        token_id: String,
        created_at: String,
        expires_at: String,
    },
    /// End a console session (sign-out), and drop every expired one.
    EndSession {
        hash: String,
        now: String,
    },
    /// Claim an alert for a runbook, for the run it starts;
    /// [`Applied::Exists`] when a run was started for it before, when a
    /// run for the same key was started at or after `cooldown_since`, or
    /// when `max_in_window` runs of the key were started at or after
    /// `window_since` (alerts of one key racing past the cooldown or the
    /// rate limit: only as many win as the limits allow).
    ClaimAlert {
        source: String,
        fingerprint: String,
        starts_at: String,
        runbook: String,
        key: String,
        outcome: String,
        run_id: Option<String>,
        received_at: String,
        cooldown_since: String,
        window_since: String,
        max_in_window: i64,
    },
    /// Close a runbook's trigger circuit breaker.
    ResetBreaker {
        runbook: String,
        reset_at: String,
        actor: String,
        reason: String,
    },
    /// Engage or release a big red switch (one row per scope).
    SetSwitch(SwitchRow),
    /// Ask a running run to stop at its next step boundary;
    /// [`Applied::Stale`] when it is not running.
    RequestCancel {
        id: String,
        request: String,
    },
    /// Move a run from one of `from` to `to` (resume: halted -> running;
    /// abandon: halted/interrupted -> abandoned); [`Applied::Stale`] when
    /// its status is not in `from`.
    TransitionRun {
        id: String,
        from: Vec<RunStatus>,
        to: RunStatus,
        error: Option<String>,
        finished_at: Option<String>,
    },
    /// Keep a signed checkpoint; [`Applied::Exists`] when one of that size
    /// is kept.
    InsertCheckpoint(CheckpointRow),
    /// Set when `runbook`'s next drill is due; when `expect_due` is given,
    /// only if the stored due time is still that ([`Applied::Stale`]
    /// otherwise: another tick or node took this drill).
    ScheduleDrill {
        runbook: String,
        expect_due: Option<String>,
        next_due_at: String,
        last_run_id: Option<String>,
    },
    /// Record a decision; [`Applied::Exists`] when this person already
    /// decided on this step.
    InsertApproval(ApprovalRow),
    /// Make `version` the current version of runbook `name` (a rollback).
    SetCurrentRunbook {
        name: String,
        version: i64,
        at: String,
        by: String,
    },
    /// Admit a run as `queued` unless the queue is full:
    /// [`Applied::Refused`] when `max_active` runs (queued, running or
    /// awaiting approval) exist, or `max_per_runbook` of its runbook.
    EnqueueRun {
        run: RunRow,
        max_active: u64,
        max_per_runbook: u64,
    },
    /// Claim the oldest queued run (only `only`, when given) for `owner`:
    /// status running, epoch + 1, lease for `lease_ms`. [`Applied::Claimed`],
    /// or [`Applied::Stale`] when there is none.
    ClaimQueued {
        owner: String,
        lease_ms: i64,
        only: Option<String>,
    },
    /// Take over one active run whose lease expired (its node crashed,
    /// stopped or lost the database): [`Applied::Claimed`] with the previous
    /// owner, or [`Applied::Stale`].
    TakeOver {
        owner: String,
        lease_ms: i64,
    },
    /// Extend a run's lease (fenced: only its holder can).
    RenewLease {
        run_id: String,
        lease_ms: i64,
    },
    /// Take or keep the named singleton lease (`drill-scheduler`):
    /// [`Applied::Stale`] while another owner holds it unexpired.
    HoldLease {
        name: String,
        owner: String,
        lease_ms: i64,
    },
    /// Record that a sink was told a condition is raised;
    /// [`Applied::Exists`] when it was.
    RaiseNotified(NotifiedRow),
    /// Forget that (it was resolved); [`Applied::Stale`] when not raised.
    ResolveNotified {
        sink: String,
        key: String,
    },
    /// Queue a delivery; [`Applied::Exists`] when its idempotency key is queued.
    PushOutbox(OutboxRow),
    /// A failed attempt: count it and try again at `next_at_ms`.
    RetryOutbox {
        id: i64,
        attempts: i64,
        next_at_ms: i64,
        error: String,
    },
    /// Remove a delivery (made, dropped or given up); nothing when it is
    /// gone already.
    RemoveOutbox {
        id: i64,
    },
    /// Forget that a sink was told of a condition; nothing when it was not.
    ForgetNotified {
        sink: String,
        key: String,
    },
    /// A person's decision on a step a crashed node left without a result:
    /// set its status (`retry` to run it again, `skipped`) if it is still
    /// `from`; [`Applied::Stale`] otherwise.
    DecideStep {
        run_id: String,
        step_id: String,
        from: StepStatus,
        to: StepStatus,
        error: Option<String>,
    },
}

impl Write {
    /// A stable name for the kind of transition (failpoint names, logs).
    pub fn kind(&self) -> &'static str {
        match self {
            Write::PublishKernel(_) => "publish-kernel",
            Write::PublishRunbook(_) => "publish-runbook",
            Write::InsertRun(_) => "insert-run",
            Write::FinishRun { .. } => "finish-run",
            Write::UpsertStep(s) if s.status == StepStatus::Running => "step-intent",
            Write::UpsertStep(_) => "step-result",
            Write::UpsertStepTarget(_) => "step-target",
            Write::InsertHostCall(_) => "host-call",
            Write::InsertToken(_) => "insert-token",
            Write::RevokeToken { .. } => "revoke-token",
            Write::InsertSession { .. } => "insert-session",
            Write::EndSession { .. } => "end-session",
            Write::ClaimAlert { .. } => "claim-alert",
            Write::ResetBreaker { .. } => "reset-breaker",
            Write::SetSwitch(_) => "set-switch",
            Write::RequestCancel { .. } => "request-cancel",
            Write::TransitionRun { .. } => "transition-run",
            Write::ScheduleDrill { .. } => "schedule-drill",
            Write::InsertApproval(_) => "insert-approval",
            Write::SetCurrentRunbook { .. } => "set-current-runbook",
            Write::EnqueueRun { .. } => "enqueue-run",
            Write::ClaimQueued { .. } => "claim-run",
            Write::TakeOver { .. } => "take-over",
            Write::RenewLease { .. } => "renew-lease",
            Write::HoldLease { .. } => "hold-lease",
            Write::DecideStep { .. } => "decide-step",
            Write::RaiseNotified(_) => "raise-notified",
            Write::ResolveNotified { .. } => "resolve-notified",
            Write::PushOutbox(_) => "push-outbox",
            Write::RetryOutbox { .. } => "retry-outbox",
            Write::RemoveOutbox { .. } => "remove-outbox",
            Write::ForgetNotified { .. } => "forget-notified",
            Write::InsertCheckpoint(_) => "insert-checkpoint",
        }
    }
}

/// Every durable transition a crash test can stop the process after
/// (`store.after.KIND`), in the order a run passes them.
pub const TRANSITIONS: &[&str] = &[
    "enqueue-run",
    "claim-run",
    "step-intent",
    "host-call",
    "step-target",
    "step-result",
    "transition-run",
    "renew-lease",
    "finish-run",
    "take-over",
];

/// Milliseconds since the Unix epoch (lease times).
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// Why [`Write::EnqueueRun`] refuses `run`, given the active runs counted
/// in the same transaction.
fn queue_refusal(
    run: &RunRow,
    active: i64,
    of_runbook: i64,
    max_active: u64,
    max_per_runbook: u64,
) -> Option<Applied> {
    let over = |n: i64, max: u64| u64::try_from(n).unwrap_or(0) >= max;
    let refusal = if over(active, max_active) {
        QueueRefusal::Full {
            active,
            max: max_active,
        }
    } else if over(of_runbook, max_per_runbook) {
        QueueRefusal::RunbookBusy {
            runbook: run.runbook.clone(),
            active: of_runbook,
            max: max_per_runbook,
        }
    } else {
        return None;
    };
    Some(Applied::Refused(refusal))
}

/// The audit record of a claim or takeover by `write`, if it claimed.
fn claim_event_of(write: &Write, applied: &Applied) -> Option<NewEvent> {
    match write {
        Write::ClaimQueued { owner, .. } | Write::TakeOver { owner, .. } => {
            claim_event(owner, applied)
        }
        _ => None,
    }
}

/// The audit record of a claim or takeover, written in the same transaction.
pub fn claim_event(owner: &str, claimed: &Applied) -> Option<NewEvent> {
    let Applied::Claimed {
        run_id,
        epoch,
        previous,
    } = claimed
    else {
        return None;
    };
    let actor = crate::audit::Actor::engine(
        crate::audit::ActorKind::Scheduler,
        format!("node:{owner}"),
        crate::audit::Via::Engine,
    );
    Some(
        match previous {
            None => NewEvent::new(
                &actor,
                crate::audit::Action::RunClaimed,
                format!("run:{run_id}"),
            )
            .details(serde_json::json!({"node": owner, "epoch": epoch})),
            Some(previous) => NewEvent::new(
                &actor,
                crate::audit::Action::RunTakenOver,
                format!("run:{run_id}"),
            )
            .details(serde_json::json!({
                "node": owner,
                "epoch": epoch,
                "previous_owner": previous,
                "why": "the previous owner's lease expired without renewal",
            })),
        }
        .run(run_id),
    )
}

/// What applying a batch did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Applied {
    Done,
    /// A publish of identical content: nothing written, no events.
    AlreadyPresent,
    /// A publish of different content under an existing version: nothing written.
    Conflict {
        existing_digest: String,
    },
    /// A conditional write found the row in another state: nothing written.
    Stale,
    /// The batch's [`Fence`] no longer holds the run: nothing written.
    Fenced,
    /// A run was claimed (`previous`: the owner whose lease expired).
    Claimed {
        run_id: String,
        epoch: i64,
        previous: Option<String>,
    },
    /// An insert whose row exists (a token name in use, an alert claimed
    /// before, a person's second decision): nothing written.
    Exists,
    /// The queue refused a run.
    Refused(QueueRefusal),
}

impl Applied {
    /// Whether the batch's writes and events were kept.
    pub fn wrote(&self) -> bool {
        matches!(self, Applied::Done | Applied::Claimed { .. })
    }
}

/// State changes and the audit events that record them, applied atomically.
#[derive(Debug, Clone, Default)]
pub struct Batch {
    pub writes: Vec<Write>,
    pub events: Vec<NewEvent>,
    /// Apply only while this lease holds.
    pub fence: Option<Fence>,
}

impl Batch {
    pub fn new() -> Self {
        Batch::default()
    }

    pub fn write(mut self, w: Write) -> Self {
        self.writes.push(w);
        self
    }

    pub fn event(mut self, e: NewEvent) -> Self {
        self.events.push(e);
        self
    }

    pub fn fenced(mut self, fence: &Fence) -> Self {
        self.fence = Some(fence.clone());
        self
    }

    /// This batch's writes and events, then `next`'s (under `next`'s fence,
    /// if any), applied as one.
    pub fn then(mut self, next: Batch) -> Self {
        self.writes.extend(next.writes);
        self.events.extend(next.events);
        if next.fence.is_some() {
            self.fence = next.fence;
        }
        self
    }
}

/// Filters for listing runs.
#[derive(Debug, Clone, Default)]
pub struct RunFilter {
    pub runbook: Option<String>,
    pub status: Option<RunStatus>,
    /// Only runs older than this run id (the previous page's last id).
    pub before: Option<String>,
    /// Only runs of these runbooks (a token's scope); `None` = all.
    pub runbooks: Option<Vec<String>>,
    pub limit: i64,
}

/// A condition a notification sink was told is raised ([`Write::RaiseNotified`]).
#[derive(Debug, Clone, PartialEq)]
pub struct NotifiedRow {
    pub sink: String,
    /// The condition's identity (its label set as JSON).
    pub key: String,
    pub raised_at: String,
    /// Its labels and annotations, for the resolution's message.
    pub condition: serde_json::Value,
}

/// One delivery in the notification outbox, oldest first by `id`.
#[derive(Debug, Clone, PartialEq)]
pub struct OutboxRow {
    /// Assigned by the store (ignored in [`Write::PushOutbox`]).
    pub id: i64,
    pub sink: String,
    /// Unique; sent with every attempt, so a receiver can drop repeats.
    pub idempotency_key: String,
    /// The condition's key in [`NotifiedRow`].
    pub notified_key: String,
    /// `raised` or `resolved`.
    pub transition: String,
    pub event: String,
    /// What the audit records of its delivery name (`run:ID`, `runbook:NAME`).
    pub subject: String,
    pub run_id: Option<String>,
    /// The notification as the webhook sink sends it.
    pub payload: serde_json::Value,
    pub created_at: String,
    /// When the next attempt is due (ms since the epoch).
    pub next_at_ms: i64,
    pub attempts: i64,
    pub last_error: Option<String>,
}

/// How many deliveries a sink has queued, and since when.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutboxDepth {
    pub sink: String,
    pub queued: i64,
    pub oldest: Option<String>,
}

/// A run waiting for a person ([`Store::waiting_runs`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WaitingRun {
    pub id: String,
    pub runbook: String,
    pub status: RunStatus,
    pub since: String,
}

/// Filters for listing audit records.
#[derive(Debug, Clone, Default)]
pub struct AuditFilter {
    pub run_id: Option<String>,
    /// `kind:id`
    pub actor: Option<String>,
    pub action: Option<String>,
    /// RFC 3339; records at or after.
    pub since: Option<String>,
    pub limit: i64,
}

/// A store operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("cannot open the store at {path}: {source}; check that the firedrill home is writable")]
    Open {
        path: String,
        #[source]
        source: sqlx::Error,
    },
    #[error("cannot migrate the store schema: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error(
        "the store at {path} is being restored (`firedrill restore` holds its lock); try again when the restore has finished"
    )]
    Restoring { path: String },
    /// The store's schema is newer than this binary's: refused before
    /// anything is changed, so the newer binary can still use it.
    #[error(
        "the store at {path} was written by a newer firedrill (schema version {found}; this binary knows up to {known}); nothing was changed: run the newer firedrill, or restore a copy of the store taken before the upgrade"
    )]
    NewerSchema {
        path: String,
        found: i64,
        known: i64,
    },
    #[error("store {operation} failed: {source}")]
    Sql {
        operation: &'static str,
        #[source]
        source: sqlx::Error,
    },
    #[error("stored {what} is not valid: {reason}")]
    Corrupt { what: &'static str, reason: String },
    #[error("the store's writer has stopped; restart firedrill")]
    WriterGone,
    #[error(
        "this node no longer holds the lease of run {run_id} (it expired and another node took the run over, or the run was closed); it stopped without recording more"
    )]
    Fenced { run_id: String },
    /// A status write the transition table ([`RunStatus::may_move`]) does
    /// not have: a bug in the engine, refused so it cannot corrupt a run.
    #[error(
        "run {run_id} cannot move from {from} to {to}; this is a bug in firedrill, please report it"
    )]
    BadTransition {
        run_id: String,
        from: RunStatus,
        to: RunStatus,
    },
}

impl StoreError {
    /// The store was refused before anything was done (a newer schema, a
    /// restore in progress), as opposed to failing.
    pub fn is_refusal(&self) -> bool {
        matches!(
            self,
            StoreError::NewerSchema { .. } | StoreError::Restoring { .. }
        )
    }
}

/// Refuse a store whose newest applied migration (`applied`, from
/// `_sqlx_migrations`) is one `migrator` does not know: a newer binary
/// wrote it. Checked before migrating, so nothing is changed.
fn refuse_newer_schema(
    path: &str,
    applied: Option<i64>,
    migrator: &sqlx::migrate::Migrator,
) -> Result<(), StoreError> {
    let known = migrator.iter().map(|m| m.version).max().unwrap_or(0);
    match applied {
        Some(found) if found > known => Err(StoreError::NewerSchema {
            path: path.to_string(),
            found,
            known,
        }),
        _ => Ok(()),
    }
}

/// Durable state. One implementation per database.
#[async_trait::async_trait]
pub trait Store: Send + Sync + std::fmt::Debug {
    /// Apply `batch` atomically and durably, appending its audit events.
    async fn apply(&self, batch: Batch) -> Result<Applied, StoreError>;

    async fn kernel(&self, name: &str, version: &str) -> Result<Option<KernelRow>, StoreError>;
    async fn kernels(&self) -> Result<Vec<KernelRow>, StoreError>;
    /// `version: None` is the current version: the one a rollback pinned,
    /// else the highest.
    async fn runbook(
        &self,
        name: &str,
        version: Option<i64>,
    ) -> Result<Option<RunbookRow>, StoreError>;
    async fn runbooks(&self) -> Result<Vec<RunbookRow>, StoreError>;
    /// The current version of every runbook.
    async fn current_runbooks(&self) -> Result<Vec<RunbookRow>, StoreError>;
    /// Finished drills (succeeded or failed) of `runbook` at `digest`,
    /// newest first.
    async fn drill_runs(
        &self,
        runbook: &str,
        digest: &str,
        limit: i64,
    ) -> Result<Vec<RunRow>, StoreError>;
    /// Whether a drill of `runbook` is queued or running.
    async fn drill_running(&self, runbook: &str) -> Result<bool, StoreError>;
    async fn drill_schedules(&self) -> Result<Vec<DrillScheduleRow>, StoreError>;
    /// Decisions on `step_id` of `run_id`, oldest first.
    async fn approvals(&self, run_id: &str, step_id: &str) -> Result<Vec<ApprovalRow>, StoreError>;
    async fn run(&self, id: &str) -> Result<Option<RunRow>, StoreError>;
    /// Who asked run `id` to stop (`runs.cancel_requested`), if anyone: the
    /// one column a step boundary needs.
    async fn cancel_requested(&self, id: &str) -> Result<Option<String>, StoreError>;
    async fn runs(&self, filter: &RunFilter) -> Result<Vec<RunRow>, StoreError>;
    async fn steps(&self, run_id: &str) -> Result<Vec<StepRow>, StoreError>;
    /// Per-target results, by step position then target.
    async fn step_targets(&self, run_id: &str) -> Result<Vec<StepTargetRow>, StoreError>;
    async fn host_calls(&self, run_id: &str) -> Result<Vec<HostCallRow>, StoreError>;
    async fn audit(&self, filter: &AuditFilter) -> Result<Vec<AuditRecord>, StoreError>;
    /// Every token, revoked ones included (hashes only).
    async fn tokens(&self) -> Result<Vec<TokenRow>, StoreError>;
    async fn token_by_hash(&self, hash: &str) -> Result<Option<TokenRow>, StoreError>;
    /// The token of the console session whose id hashes to `hash`, if the
    /// session has not expired by `now` (RFC 3339).
    async fn session_token(&self, hash: &str, now: &str) -> Result<Option<TokenRow>, StoreError>;
    /// Whether a run was started for this alert (source + fingerprint +
    /// startsAt) and runbook: only a started run deduplicates.
    async fn alert_claim_exists(
        &self,
        source: &str,
        fingerprint: &str,
        starts_at: &str,
        runbook: &str,
    ) -> Result<bool, StoreError>;
    /// When runs were started for (`runbook`, `key`) at or after `since`
    /// (RFC 3339, as `received_at` is written), oldest first, at most `limit`.
    async fn alert_starts_since(
        &self,
        runbook: &str,
        key: &str,
        since: &str,
        limit: u32,
    ) -> Result<Vec<String>, StoreError>;
    /// Statuses of the newest `limit` finished triggered runs of `runbook`
    /// (of its `key` only, when given) started after its latest breaker
    /// reset, newest first.
    async fn triggered_outcomes(
        &self,
        runbook: &str,
        key: Option<&str>,
        limit: u32,
    ) -> Result<Vec<RunStatus>, StoreError>;
    /// (key, status) of the newest `limit` finished triggered runs of
    /// `runbook` since its latest breaker reset, newest first: what the
    /// triggers API and `/metrics` tell open breakers from.
    async fn recent_triggered(
        &self,
        runbook: &str,
        limit: u32,
    ) -> Result<Vec<(String, RunStatus)>, StoreError>;
    /// (name, version) of the current version of every runbook, by name:
    /// what the trigger index checks before it recompiles anything.
    async fn current_runbook_versions(&self) -> Result<Vec<(String, i64)>, StoreError>;
    /// Every switch ever flipped, with its current state.
    async fn switches(&self) -> Result<Vec<SwitchRow>, StoreError>;
    /// Runs waiting to be claimed.
    async fn queued_runs(&self) -> Result<u64, StoreError>;
    /// Runs waiting for a person (`awaiting-approval`, `needs-attention`):
    /// (id, runbook, status, since when: the newest step's start, else the
    /// run's), oldest first, at most `limit`.
    async fn waiting_runs(&self, limit: i64) -> Result<Vec<WaitingRun>, StoreError>;
    /// What `sink` was told is raised, at most `limit`.
    async fn notified(&self, sink: &str, limit: i64) -> Result<Vec<NotifiedRow>, StoreError>;
    /// `sink`'s queued deliveries, oldest first, at most `limit`.
    async fn outbox(&self, sink: &str, limit: i64) -> Result<Vec<OutboxRow>, StoreError>;
    /// Queued deliveries per sink.
    async fn outbox_depths(&self) -> Result<Vec<OutboxDepth>, StoreError>;
    /// Every sink with a notified condition or a queued delivery.
    async fn notification_sinks(&self) -> Result<Vec<String>, StoreError>;
    /// The chain hashes of records with `seq > after`, in order, at most
    /// `limit` (what the Merkle tree is built from).
    async fn audit_hashes(&self, after: i64, limit: i64) -> Result<Vec<(i64, String)>, StoreError>;
    /// The newest `limit` checkpoints kept, largest first.
    async fn checkpoints(&self, limit: i64) -> Result<Vec<CheckpointRow>, StoreError>;
    /// The SQLite database file, which `verify_store` reads directly;
    /// `None` for PostgreSQL.
    fn database_file(&self) -> Option<&std::path::Path>;
    /// [`Store::audit_page`] as the database hands it over: one JSON
    /// array of rows (`audit::page`).
    async fn audit_page_text(&self, after: i64, limit: i64) -> Result<String, StoreError>;
    /// Records with `seq > after`, in order, at most `limit`.
    async fn audit_page(&self, after: i64, limit: i64) -> Result<Vec<AuditRecord>, StoreError>;
}

/// Verify the whole chain in `store`, page by page. The next page is read
/// while the current one is hashed (on a blocking thread), so reading and
/// hashing overlap.
pub async fn verify_store(store: &dyn Store) -> Result<crate::audit::Verification, StoreError> {
    Ok(verify_store_with_roots(store, &Default::default()).await?.0)
}

/// [`verify_store`], also computing the Merkle tree's root at each of
/// `sizes` that the chain is intact up to.
pub async fn verify_store_with_roots(
    store: &dyn Store,
    sizes: &std::collections::BTreeSet<u64>,
) -> Result<
    (
        crate::audit::Verification,
        std::collections::BTreeMap<u64, crate::audit::tree::Hash>,
    ),
    StoreError,
> {
    use crate::audit::page;
    let corrupt = |e: serde_json::Error| StoreError::Corrupt {
        what: "audit page",
        reason: e.to_string(),
    };
    let mut verifier = crate::audit::Verifier::with_roots_at(sizes.clone());
    if let Some(file) = store.database_file() {
        let file = file.to_path_buf();
        let verifier = tokio::task::spawn_blocking(move || sqlite::scan_audit(&file, verifier))
            .await
            .unwrap_or_else(|e| std::panic::resume_unwind(e.into_panic()))?;
        let roots = verifier.roots().clone();
        return Ok((verifier.finish(), roots));
    }
    let mut text = store.audit_page_text(0, crate::audit::VERIFY_PAGE).await?;
    loop {
        // The page is split and hashed on blocking threads; its last seq
        // comes back first, so the next page is read meanwhile.
        let (last_tx, last_rx) = tokio::sync::oneshot::channel();
        let check = tokio::task::spawn_blocking(move || {
            let rows = page::rows(&text).map_err(corrupt)?;
            let _ = last_tx.send(rows.iter().filter_map(|r| page::seq_of(r)).max());
            let mut records = rows
                .into_iter()
                .map(page::parse_row)
                .collect::<Result<Vec<_>, _>>()
                .map_err(corrupt)?;
            // Aggregates promise no order; already sorted, this is one pass.
            records.sort_by_key(|r| r.seq);
            for r in &records {
                if !verifier.push(r) {
                    break;
                }
            }
            Ok::<_, StoreError>(verifier)
        });
        let next = match last_rx.await.ok().flatten() {
            Some(after) => Some(
                store
                    .audit_page_text(after, crate::audit::VERIFY_PAGE)
                    .await,
            ),
            None => None,
        };
        verifier = match check.await {
            Ok(v) => v?,
            Err(e) => std::panic::resume_unwind(e.into_panic()),
        };
        match next {
            Some(next) if !verifier.found_bad() => text = next?,
            _ => break,
        }
    }
    let roots = verifier.roots().clone();
    Ok((verifier.finish(), roots))
}
