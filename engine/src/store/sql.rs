//! What the SQL stores share: helpers, and the store itself as a macro
//! instantiated once per database (`backend!` in `sqlite.rs` and
//! `postgres.rs`), so both run the same statements and the same logic.
//!
//! Statements are written once with `?` / `?N` placeholders; each backend's
//! `q` turns them into its own (`$N` on PostgreSQL). The few statements that
//! differ (claiming with `FOR UPDATE SKIP LOCKED`, a JSON list parameter,
//! the fence check's row lock) are constants of the backend module:
//! `CLAIM_QUEUED`, `FIND_EXPIRED`, `RUNS_FILTER`, `FENCE`, `AUDIT_PAGE` (JSON
//! aggregation). Each backend also
//! provides `begin_write`, which opens a write transaction that holds the
//! store's write lock (so the audit chain stays single across processes and
//! nodes).

use tokio::sync::oneshot;

use super::{Applied, StoreError};

pub(super) type Reply = oneshot::Sender<Result<Applied, StoreError>>;

pub(super) fn sql(operation: &'static str) -> impl FnOnce(sqlx::Error) -> StoreError {
    move |source| StoreError::Sql { operation, source }
}

/// The columns of an audit record, in the order `AUDIT_PAGE` puts them.
type AuditColumns = (
    i64,
    String,
    String,
    String,
    String,
    String,
    String,
    String,
    Option<String>,
    String,
    String,
);

/// Records of a page that `AUDIT_PAGE` returned as one JSON array of
/// column arrays, in seq order.
pub(super) fn parse_audit_page(text: &str) -> Result<Vec<crate::audit::AuditRecord>, StoreError> {
    let mut rows: Vec<AuditColumns> =
        serde_json::from_str(text).map_err(|e| StoreError::Corrupt {
            what: "audit page",
            reason: e.to_string(),
        })?;
    // Aggregates promise no order; already sorted, this is one pass.
    rows.sort_by_key(|r| r.0);
    Ok(rows
        .into_iter()
        .map(
            |(
                seq,
                time,
                actor_kind,
                actor_id,
                action,
                subject,
                outcome,
                details,
                run_id,
                prev_hash,
                hash,
            )| {
                crate::audit::AuditRecord {
                    seq,
                    time,
                    actor_kind,
                    actor_id,
                    action,
                    subject,
                    outcome,
                    details,
                    run_id,
                    prev_hash,
                    hash,
                }
            },
        )
        .collect())
}

pub(super) fn json_text(v: &serde_json::Value) -> String {
    v.to_string()
}

pub(super) fn parse_json(what: &'static str, text: &str) -> Result<serde_json::Value, StoreError> {
    serde_json::from_str(text).map_err(|e| StoreError::Corrupt {
        what,
        reason: e.to_string(),
    })
}

pub(super) fn opt_json(
    what: &'static str,
    text: Option<String>,
) -> Result<Option<serde_json::Value>, StoreError> {
    text.map(|t| parse_json(what, &t)).transpose()
}

pub(super) fn limit(l: i64) -> i64 {
    if l <= 0 { 100 } else { l.min(10_000) }
}

/// `?` and `?N` placeholders as PostgreSQL's `$N`.
pub(super) fn dollar_placeholders(sql: &str) -> String {
    let mut out = String::with_capacity(sql.len() + 16);
    let mut next = 0;
    let mut chars = sql.chars().peekable();
    while let Some(c) = chars.next() {
        if c != '?' {
            out.push(c);
            continue;
        }
        let mut digits = String::new();
        while let Some(d) = chars.peek().filter(|d| d.is_ascii_digit()) {
            digits.push(*d);
            chars.next();
        }
        if digits.is_empty() {
            next += 1;
            digits = next.to_string();
        }
        out.push('$');
        out.push_str(&digits);
    }
    out
}

macro_rules! backend {
    ($conn:ty, $row:ty, $store:ty) => {
/// The single writer: group commit.
async fn writer_loop(
    mut conn: $conn,
    mut jobs: mpsc::Receiver<(Batch, Reply)>,
    batch_max: usize,
) {
    let mut pending = Vec::with_capacity(batch_max);
    while jobs.recv_many(&mut pending, batch_max).await > 0 {
        let results = commit_group(&mut conn, &pending).await;
        match results {
            Ok(results) => {
                for ((_, reply), result) in pending.drain(..).zip(results) {
                    let _ = reply.send(result);
                }
            }
            Err(e) => {
                tracing::error!(error = %e, "store commit failed; the batches were not written");
                let message = e.to_string();
                for (_, reply) in pending.drain(..) {
                    let _ = reply.send(Err(StoreError::Sql {
                        operation: "commit",
                        source: sqlx::Error::Protocol(message.clone()),
                    }));
                }
            }
        }
    }
}

/// Apply every batch in its own savepoint inside one transaction; commit once.
async fn commit_group(
    conn: &mut $conn,
    group: &[(Batch, Reply)],
) -> Result<Vec<Result<Applied, StoreError>>, StoreError> {
    let mut tx = begin_write(conn).await?;
    let head = sqlx::query(q("SELECT seq, hash FROM audit_events ORDER BY seq DESC LIMIT 1"))
        .fetch_optional(&mut *tx)
        .await
        .map_err(sql("read audit head"))?;
    let (mut seq, mut hash) = match head {
        Some(row) => (row.get::<i64, _>(0), row.get::<String, _>(1)),
        None => (0, GENESIS_HASH.to_string()),
    };
    let mut results = Vec::with_capacity(group.len());
    for (batch, _) in group {
        sqlx::query(q("SAVEPOINT batch"))
            .execute(&mut *tx)
            .await
            .map_err(sql("savepoint"))?;
        let (saved_seq, saved_hash) = (seq, hash.clone());
        let outcome = apply_batch(&mut tx, batch, &mut seq, &mut hash).await;
        let keep = outcome.as_ref().is_ok_and(Applied::wrote);
        if !keep {
            sqlx::query(q("ROLLBACK TO batch"))
                .execute(&mut *tx)
                .await
                .map_err(sql("rollback to savepoint"))?;
            (seq, hash) = (saved_seq, saved_hash);
        }
        sqlx::query(q("RELEASE batch"))
            .execute(&mut *tx)
            .await
            .map_err(sql("release savepoint"))?;
        results.push(outcome);
    }
    tx.commit().await.map_err(sql("commit"))?;
    for ((batch, _), result) in group.iter().zip(&results) {
        if result.as_ref().is_ok_and(Applied::wrote) {
            crate::failpoint::after_commit(batch.writes.iter().map(|w| w.kind()));
        }
    }
    Ok(results)
}

async fn apply_batch(
    tx: &mut $conn,
    batch: &Batch,
    seq: &mut i64,
    hash: &mut String,
) -> Result<Applied, StoreError> {
    if let Some(fence) = &batch.fence {
        let holds: Option<i64> =
            sqlx::query_scalar(q(FENCE))
                .bind(&fence.run_id)
                .bind(&fence.owner)
                .bind(fence.epoch)
                .fetch_optional(&mut *tx)
                .await
                .map_err(sql("check fence"))?;
        if holds.is_none() {
            return Ok(Applied::Fenced);
        }
    }
    let mut result = Applied::Done;
    let mut extra = Vec::new();
    for write in &batch.writes {
        let applied = apply_write(tx, write).await?;
        if !applied.wrote() {
            return Ok(applied);
        }
        if let Some(event) = super::claim_event_of(write, &applied) {
            extra.push(event);
            result = applied;
        }
    }
    for event in batch.events.iter().chain(&extra) {
        let record = AuditRecord::seal(event, *seq + 1, hash);
        sqlx::query(
            q("INSERT INTO audit_events (seq, time, actor_kind, actor_id, action, subject, outcome, details, run_id, prev_hash, hash)
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"),
        )
        .bind(record.seq)
        .bind(&record.time)
        .bind(&record.actor_kind)
        .bind(&record.actor_id)
        .bind(&record.action)
        .bind(&record.subject)
        .bind(&record.outcome)
        .bind(&record.details)
        .bind(&record.run_id)
        .bind(&record.prev_hash)
        .bind(&record.hash)
        .execute(&mut *tx)
        .await
        .map_err(sql("append audit record"))?;
        *seq = record.seq;
        *hash = record.hash;
    }
    Ok(result)
}

async fn apply_write(tx: &mut $conn, write: &Write) -> Result<Applied, StoreError> {
    match write {
        Write::PublishKernel(k) => {
            let existing: Option<String> =
                sqlx::query_scalar(q("SELECT digest FROM kernels WHERE name = ? AND version = ?"))
                    .bind(&k.name)
                    .bind(&k.version)
                    .fetch_optional(&mut *tx)
                    .await
                    .map_err(sql("read kernel"))?;
            if let Some(existing_digest) = existing {
                return Ok(if existing_digest == k.digest {
                    Applied::AlreadyPresent
                } else {
                    Applied::Conflict { existing_digest }
                });
            }
            sqlx::query(q("INSERT INTO kernels (name, version, digest, size_bytes, manifest, published_at, published_by) VALUES (?, ?, ?, ?, ?, ?, ?)"))
                .bind(&k.name).bind(&k.version).bind(&k.digest).bind(k.size_bytes)
                .bind(json_text(&k.manifest)).bind(&k.published_at).bind(&k.published_by)
                .execute(&mut *tx).await.map_err(sql("insert kernel"))?;
        }
        Write::PublishRunbook(r) => {
            let existing: Option<String> = sqlx::query_scalar(
                q("SELECT digest FROM runbook_versions WHERE name = ? AND version = ?"),
            )
            .bind(&r.name)
            .bind(r.version)
            .fetch_optional(&mut *tx)
            .await
            .map_err(sql("read runbook"))?;
            if let Some(existing_digest) = existing {
                return Ok(if existing_digest == r.digest {
                    Applied::AlreadyPresent
                } else {
                    Applied::Conflict { existing_digest }
                });
            }
            sqlx::query(q("INSERT INTO runbook_versions (name, version, digest, source, published_at, published_by) VALUES (?, ?, ?, ?, ?, ?)"))
                .bind(&r.name).bind(r.version).bind(&r.digest).bind(&r.source)
                .bind(&r.published_at).bind(&r.published_by)
                .execute(&mut *tx).await.map_err(sql("insert runbook"))?;
            // A new version ends a rollback: the newest is current again.
            sqlx::query(q("DELETE FROM runbook_current WHERE name = ?"))
                .bind(&r.name)
                .execute(&mut *tx)
                .await
                .map_err(sql("clear current runbook"))?;
        }
        Write::InsertRun(r) => insert_run(tx, r).await?,
        Write::FinishRun {
            id,
            status,
            error,
            finished_at,
        } => {
            if !RunStatus::Running.may_move(*status) {
                return Err(StoreError::BadTransition {
                    run_id: id.clone(),
                    from: RunStatus::Running,
                    to: *status,
                });
            }
            let done = sqlx::query(q("UPDATE runs SET status = ?, error = ?, finished_at = ? WHERE id = ? AND status = 'running'"))
                .bind(status.as_str())
                .bind(error)
                .bind(finished_at)
                .bind(id)
                .execute(&mut *tx)
                .await
                .map_err(sql("finish run"))?;
            if done.rows_affected() == 0 {
                return Ok(Applied::Stale);
            }
        }
        Write::UpsertStep(s) => {
            sqlx::query(q("INSERT INTO steps (run_id, step_id, position, phase, kernel, kernel_digest, status, attempts, targets, input, output, error, logs, started_at, finished_at, duration_ms)
                         VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
                         ON CONFLICT (run_id, step_id) DO UPDATE SET kernel_digest = excluded.kernel_digest, status = excluded.status,
                           attempts = excluded.attempts, targets = excluded.targets, input = excluded.input, output = excluded.output,
                           error = excluded.error, logs = excluded.logs, started_at = excluded.started_at,
                           finished_at = excluded.finished_at, duration_ms = excluded.duration_ms"))
                .bind(&s.run_id).bind(&s.step_id).bind(s.position).bind(s.phase.as_str()).bind(&s.kernel)
                .bind(&s.kernel_digest).bind(s.status.as_str()).bind(s.attempts).bind(json_text(&s.targets))
                .bind(s.input.as_ref().map(json_text)).bind(s.output.as_ref().map(json_text))
                .bind(&s.error).bind(json_text(&s.logs)).bind(&s.started_at).bind(&s.finished_at)
                .bind(s.duration_ms)
                .execute(&mut *tx).await.map_err(sql("upsert step"))?;
        }
        Write::UpsertStepTarget(t) => {
            sqlx::query(
                q("INSERT INTO step_targets (run_id, step_id, target, status, attempts, output, error, duration_ms)
                 VALUES (?, ?, ?, ?, ?, ?, ?, ?)
                 ON CONFLICT (run_id, step_id, target) DO UPDATE SET status = excluded.status,
                   attempts = excluded.attempts, output = excluded.output, error = excluded.error,
                   duration_ms = excluded.duration_ms"),
            )
            .bind(&t.run_id)
            .bind(&t.step_id)
            .bind(&t.target)
            .bind(t.status.as_str())
            .bind(t.attempts)
            .bind(t.output.as_ref().map(json_text))
            .bind(&t.error)
            .bind(t.duration_ms)
            .execute(&mut *tx)
            .await
            .map_err(sql("upsert step target"))?;
        }
        Write::InsertHostCall(h) => {
            sqlx::query(q("INSERT INTO host_calls (run_id, step_id, target, attempt, idx, record) VALUES (?, ?, ?, ?, ?, ?)"))
                .bind(&h.run_id)
                .bind(&h.step_id)
                .bind(&h.target)
                .bind(h.attempt)
                .bind(h.index)
                .bind(json_text(&h.call))
                .execute(&mut *tx)
                .await
                .map_err(sql("insert host call"))?;
        }
        Write::InsertToken(t) => {
            let taken: Option<String> =
                sqlx::query_scalar(q("SELECT id FROM tokens WHERE name = ? AND revoked_at IS NULL"))
                    .bind(&t.name)
                    .fetch_optional(&mut *tx)
                    .await
                    .map_err(sql("read token"))?;
            if taken.is_some() {
                return Ok(Applied::Exists);
            }
            sqlx::query(q("INSERT INTO tokens (id, name, role, runbooks, hash, created_at, created_by, revoked_at, owner) VALUES (?, ?, ?, ?, ?, ?, ?, NULL, ?)"))
                .bind(&t.id)
                .bind(&t.name)
                .bind(t.role.as_str())
                .bind(json_text(&serde_json::json!(t.runbooks)))
                .bind(&t.hash)
                .bind(&t.created_at)
                .bind(&t.created_by)
                .bind(&t.owner)
                .execute(&mut *tx)
                .await
                .map_err(sql("insert token"))?;
        }
        Write::RevokeToken { id, revoked_at } => {
            sqlx::query(q("UPDATE tokens SET revoked_at = ? WHERE id = ? AND revoked_at IS NULL"))
                .bind(revoked_at)
                .bind(id)
                .execute(&mut *tx)
                .await
                .map_err(sql("revoke token"))?;
        }
        Write::InsertSession {
            hash,
            token_id,
            created_at,
            expires_at,
        } => {
            sqlx::query(q("INSERT INTO sessions (hash, token_id, created_at, expires_at) VALUES (?, ?, ?, ?)"))
                .bind(hash)
                .bind(token_id)
                .bind(created_at)
                .bind(expires_at)
                .execute(&mut *tx)
                .await
                .map_err(sql("insert session"))?;
        }
        Write::EndSession { hash, now } => {
            sqlx::query(q("DELETE FROM sessions WHERE hash = ? OR expires_at <= ?"))
                .bind(hash)
                .bind(now)
                .execute(&mut *tx)
                .await
                .map_err(sql("end session"))?;
        }
        Write::ClaimAlert {
            source,
            fingerprint,
            starts_at,
            runbook,
            key,
            outcome,
            run_id,
            received_at,
        } => {
            let done = sqlx::query(
                q("INSERT INTO alert_claims (source, fingerprint, starts_at, runbook, key, outcome, run_id, received_at)
                 VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING"),
            )
            .bind(source)
            .bind(fingerprint)
            .bind(starts_at)
            .bind(runbook)
            .bind(key)
            .bind(outcome)
            .bind(run_id)
            .bind(received_at)
            .execute(&mut *tx)
            .await
            .map_err(sql("claim alert"))?;
            if done.rows_affected() == 0 {
                return Ok(Applied::Exists);
            }
        }
        Write::ReleaseAlert {
            source,
            fingerprint,
            starts_at,
            runbook,
        } => {
            sqlx::query(q("DELETE FROM alert_claims WHERE source = ? AND fingerprint = ? AND starts_at = ? AND runbook = ?"))
                .bind(source)
                .bind(fingerprint)
                .bind(starts_at)
                .bind(runbook)
                .execute(&mut *tx)
                .await
                .map_err(sql("release alert"))?;
        }
        Write::ResetBreaker {
            runbook,
            reset_at,
            actor,
            reason,
        } => {
            sqlx::query(
                q("INSERT INTO breaker_resets (runbook, reset_at, actor, reason) VALUES (?, ?, ?, ?)
                 ON CONFLICT (runbook) DO UPDATE SET reset_at = excluded.reset_at, actor = excluded.actor, reason = excluded.reason"),
            )
            .bind(runbook)
            .bind(reset_at)
            .bind(actor)
            .bind(reason)
            .execute(&mut *tx)
            .await
            .map_err(sql("reset breaker"))?;
        }
        Write::SetSwitch(w) => {
            sqlx::query(
                q("INSERT INTO switches (scope, engaged, reason, actor, changed_at) VALUES (?, ?, ?, ?, ?)
                 ON CONFLICT (scope) DO UPDATE SET engaged = excluded.engaged, reason = excluded.reason,
                   actor = excluded.actor, changed_at = excluded.changed_at"),
            )
            .bind(&w.scope)
            .bind(w.engaged)
            .bind(&w.reason)
            .bind(&w.actor)
            .bind(&w.changed_at)
            .execute(&mut *tx)
            .await
            .map_err(sql("set switch"))?;
        }
        Write::RequestCancel { id, request } => {
            let done = sqlx::query(
                q("UPDATE runs SET cancel_requested = ? WHERE id = ? AND status IN ('running', 'awaiting-approval')"),
            )
            .bind(request)
            .bind(id)
            .execute(&mut *tx)
            .await
            .map_err(sql("request cancel"))?;
            if done.rows_affected() == 0 {
                return Ok(Applied::Stale);
            }
        }
        Write::TransitionRun {
            id,
            from,
            to,
            error,
            finished_at,
        } => {
            let current: Option<String> =
                sqlx::query_scalar(q("SELECT status FROM runs WHERE id = ?"))
                    .bind(id)
                    .fetch_optional(&mut *tx)
                    .await
                    .map_err(sql("read run status"))?;
            if let Some(from) = from.iter().find(|f| !f.may_move(*to)) {
                return Err(StoreError::BadTransition {
                    run_id: id.clone(),
                    from: *from,
                    to: *to,
                });
            }
            if !current.is_some_and(|c| from.iter().any(|f| f.as_str() == c)) {
                return Ok(Applied::Stale);
            }
            // A resume (from halted) starts with no cancel pending; other
            // transitions (an approval wait ending) keep it.
            let resume = from.contains(&RunStatus::Halted);
            sqlx::query(q("UPDATE runs SET status = ?, error = ?, finished_at = ?,
                         cancel_requested = CASE WHEN ? THEN NULL ELSE cancel_requested END WHERE id = ?"))
                .bind(to.as_str())
                .bind(error)
                .bind(finished_at)
                .bind(resume)
                .bind(id)
                .execute(&mut *tx)
                .await
                .map_err(sql("update run status"))?;
        }
        Write::ScheduleDrill {
            runbook,
            expect_due,
            next_due_at,
            last_run_id,
        } => {
            let current: Option<String> =
                sqlx::query_scalar(q("SELECT next_due_at FROM drill_schedule WHERE runbook = ?"))
                    .bind(runbook)
                    .fetch_optional(&mut *tx)
                    .await
                    .map_err(sql("read drill schedule"))?;
            if expect_due.is_some() && current != *expect_due {
                return Ok(Applied::Stale);
            }
            sqlx::query(
                q("INSERT INTO drill_schedule (runbook, next_due_at, last_run_id) VALUES (?, ?, ?)
                 ON CONFLICT (runbook) DO UPDATE SET next_due_at = excluded.next_due_at,
                 last_run_id = COALESCE(excluded.last_run_id, drill_schedule.last_run_id)"),
            )
            .bind(runbook)
            .bind(next_due_at)
            .bind(last_run_id)
            .execute(&mut *tx)
            .await
            .map_err(sql("schedule drill"))?;
        }
        Write::InsertApproval(a) => {
            let done = sqlx::query(
                q("INSERT INTO approvals (run_id, step_id, approver, decision, comment, at)
                 VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING"),
            )
            .bind(&a.run_id)
            .bind(&a.step_id)
            .bind(&a.approver)
            .bind(&a.decision)
            .bind(&a.comment)
            .bind(&a.at)
            .execute(&mut *tx)
            .await
            .map_err(sql("insert approval"))?;
            if done.rows_affected() == 0 {
                return Ok(Applied::Exists);
            }
        }
        Write::SetCurrentRunbook {
            name,
            version,
            at,
            by,
        } => {
            sqlx::query(
                q("INSERT INTO runbook_current (name, version, set_at, set_by) VALUES (?, ?, ?, ?)
                 ON CONFLICT (name) DO UPDATE SET version = excluded.version,
                 set_at = excluded.set_at, set_by = excluded.set_by"),
            )
            .bind(name)
            .bind(version)
            .bind(at)
            .bind(by)
            .execute(&mut *tx)
            .await
            .map_err(sql("set current runbook"))?;
        }
        Write::EnqueueRun {
            run,
            max_active,
            max_per_runbook,
        } => {
            let (active, of_runbook): (i64, i64) = sqlx::query_as(
                q("SELECT COUNT(*), COALESCE(SUM(CASE WHEN runbook = ? THEN 1 ELSE 0 END), 0) FROM runs
                 WHERE status IN ('queued', 'running', 'awaiting-approval')"),
            )
            .bind(&run.runbook)
            .fetch_one(&mut *tx)
            .await
            .map_err(sql("count active runs"))?;
            if let Some(refusal) =
                super::queue_refusal(run, active, of_runbook, *max_active, *max_per_runbook)
            {
                return Ok(refusal);
            }
            insert_run(tx, run).await?;
        }
        Write::ClaimQueued {
            owner,
            lease_ms,
            only,
        } => {
            let claimed: Option<(String, i64)> = sqlx::query_as(
                q(CLAIM_QUEUED),
            )
            .bind(owner)
            .bind(super::now_ms() + lease_ms)
            .bind(only)
            .fetch_optional(&mut *tx)
            .await
            .map_err(sql("claim run"))?;
            return Ok(match claimed {
                Some((run_id, epoch)) => Applied::Claimed {
                    run_id,
                    epoch,
                    previous: None,
                },
                None => Applied::Stale,
            });
        }
        Write::TakeOver { owner, lease_ms } => {
            let now = super::now_ms();
            let expired: Option<(String, Option<String>)> = sqlx::query_as(
                q(FIND_EXPIRED),
            )
            .bind(now)
            .fetch_optional(&mut *tx)
            .await
            .map_err(sql("find expired leases"))?;
            let Some((run_id, previous)) = expired else {
                return Ok(Applied::Stale);
            };
            let epoch: i64 = sqlx::query_scalar(
                q("UPDATE runs SET owner = ?, epoch = epoch + 1, lease_until = ? WHERE id = ? RETURNING epoch"),
            )
            .bind(owner)
            .bind(now + lease_ms)
            .bind(&run_id)
            .fetch_one(&mut *tx)
            .await
            .map_err(sql("take over run"))?;
            return Ok(Applied::Claimed {
                run_id,
                epoch,
                previous: Some(previous.unwrap_or_else(|| "-".into())),
            });
        }
        Write::RenewLease { run_id, lease_ms } => {
            sqlx::query(q("UPDATE runs SET lease_until = ? WHERE id = ?"))
                .bind(super::now_ms() + lease_ms)
                .bind(run_id)
                .execute(&mut *tx)
                .await
                .map_err(sql("renew lease"))?;
        }
        Write::HoldLease {
            name,
            owner,
            lease_ms,
        } => {
            let now = super::now_ms();
            let held = sqlx::query(
                q("INSERT INTO leases (name, owner, lease_until) VALUES (?1, ?2, ?3)
                 ON CONFLICT (name) DO UPDATE SET owner = excluded.owner, lease_until = excluded.lease_until
                 WHERE leases.owner = excluded.owner OR leases.lease_until < ?4"),
            )
            .bind(name)
            .bind(owner)
            .bind(now + lease_ms)
            .bind(now)
            .execute(&mut *tx)
            .await
            .map_err(sql("hold lease"))?;
            if held.rows_affected() == 0 {
                return Ok(Applied::Stale);
            }
        }
        Write::DecideStep {
            run_id,
            step_id,
            from,
            to,
            error,
        } => {
            let done = sqlx::query(
                q("UPDATE steps SET status = ?, error = COALESCE(?, error) WHERE run_id = ? AND step_id = ? AND status = ?"),
            )
            .bind(to.as_str())
            .bind(error)
            .bind(run_id)
            .bind(step_id)
            .bind(from.as_str())
            .execute(&mut *tx)
            .await
            .map_err(sql("decide step"))?;
            if done.rows_affected() == 0 {
                return Ok(Applied::Stale);
            }
        }
    }
    Ok(Applied::Done)
}

async fn insert_run(tx: &mut $conn, r: &RunRow) -> Result<(), StoreError> {
    sqlx::query(q("INSERT INTO runs (id, runbook, runbook_version, runbook_digest, draft, mode, actor, status, inputs, kernels, error, started_at, finished_at, drill, owner, epoch, gate, source) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"))
        .bind(&r.id).bind(&r.runbook).bind(r.runbook_version).bind(&r.runbook_digest)
        .bind(r.draft).bind(&r.mode).bind(&r.actor).bind(r.status.as_str())
        .bind(json_text(&r.inputs)).bind(json_text(&r.kernels)).bind(&r.error)
        .bind(&r.started_at).bind(&r.finished_at).bind(r.drill)
        .bind(&r.owner).bind(r.epoch).bind(r.gate.as_ref().map(json_text)).bind(&r.source)
        .execute(&mut *tx).await.map_err(sql("insert run"))?;
    Ok(())
}

fn kernel_row(r: &$row) -> Result<KernelRow, StoreError> {
    Ok(KernelRow {
        name: r.get("name"),
        version: r.get("version"),
        digest: r.get("digest"),
        size_bytes: r.get("size_bytes"),
        manifest: parse_json("kernel manifest", &r.get::<String, _>("manifest"))?,
        published_at: r.get("published_at"),
        published_by: r.get("published_by"),
    })
}

fn runbook_row(r: &$row) -> RunbookRow {
    RunbookRow {
        name: r.get("name"),
        version: r.get("version"),
        digest: r.get("digest"),
        source: r.get("source"),
        published_at: r.get("published_at"),
        published_by: r.get("published_by"),
    }
}

/// A stored name parsed by `parse`, or [`StoreError::Corrupt`] naming `what`.
fn stored<T>(what: &'static str, parse: fn(&str) -> Option<T>, text: String) -> Result<T, StoreError> {
    parse(&text).ok_or(StoreError::Corrupt { what, reason: text })
}

fn run_row(r: &$row) -> Result<RunRow, StoreError> {
    Ok(RunRow {
        id: r.get("id"),
        runbook: r.get("runbook"),
        runbook_version: r.get("runbook_version"),
        runbook_digest: r.get("runbook_digest"),
        draft: r.get("draft"),
        mode: r.get("mode"),
        actor: r.get("actor"),
        status: stored("run status", RunStatus::parse, r.get("status"))?,
        inputs: parse_json("run inputs", &r.get::<String, _>("inputs"))?,
        kernels: parse_json("run kernels", &r.get::<String, _>("kernels"))?,
        error: r.get("error"),
        started_at: r.get("started_at"),
        finished_at: r.get("finished_at"),
        cancel_requested: r.get("cancel_requested"),
        drill: r.get("drill"),
        owner: r.get("owner"),
        epoch: r.get("epoch"),
        gate: opt_json("run gate", r.get("gate"))?,
        source: r.get("source"),
    })
}


fn step_row(r: &$row) -> Result<StepRow, StoreError> {
    Ok(StepRow {
        run_id: r.get("run_id"),
        step_id: r.get("step_id"),
        position: r.get("position"),
        phase: stored("step phase", Phase::parse, r.get("phase"))?,
        kernel: r.get("kernel"),
        kernel_digest: r.get("kernel_digest"),
        status: stored("step status", StepStatus::parse, r.get("status"))?,
        attempts: r.get("attempts"),
        targets: parse_json("step targets", &r.get::<String, _>("targets"))?,
        input: opt_json("step input", r.get("input"))?,
        output: opt_json("step output", r.get("output"))?,
        error: r.get("error"),
        logs: parse_json("step logs", &r.get::<String, _>("logs"))?,
        started_at: r.get("started_at"),
        finished_at: r.get("finished_at"),
        duration_ms: r.get("duration_ms"),
    })
}

fn audit_record(r: &$row) -> AuditRecord {
    AuditRecord {
        seq: r.get("seq"),
        time: r.get("time"),
        actor_kind: r.get("actor_kind"),
        actor_id: r.get("actor_id"),
        action: r.get("action"),
        subject: r.get("subject"),
        outcome: r.get("outcome"),
        details: r.get("details"),
        run_id: r.get("run_id"),
        prev_hash: r.get("prev_hash"),
        hash: r.get("hash"),
    }
}

fn token_row(r: &$row) -> Result<super::TokenRow, StoreError> {
    let role: String = r.get("role");
    Ok(super::TokenRow {
        id: r.get("id"),
        name: r.get("name"),
        role: crate::role::Role::parse(&role).ok_or(StoreError::Corrupt {
            what: "token role",
            reason: role.clone(),
        })?,
        runbooks: serde_json::from_str(&r.get::<String, _>("runbooks")).map_err(|e| {
            StoreError::Corrupt {
                what: "token runbooks",
                reason: e.to_string(),
            }
        })?,
        hash: r.get("hash"),
        created_at: r.get("created_at"),
        created_by: r.get("created_by"),
        owner: r.get("owner"),
        revoked_at: r.get("revoked_at"),
    })
}


#[async_trait::async_trait]
impl Store for $store {
    async fn apply(&self, batch: Batch) -> Result<Applied, StoreError> {
        let (reply, rx) = oneshot::channel();
        self.writer
            .send((batch, reply))
            .await
            .map_err(|_| StoreError::WriterGone)?;
        rx.await.map_err(|_| StoreError::WriterGone)?
    }

    async fn kernel(&self, name: &str, version: &str) -> Result<Option<KernelRow>, StoreError> {
        sqlx::query(q("SELECT * FROM kernels WHERE name = ? AND version = ?"))
            .bind(name)
            .bind(version)
            .fetch_optional(&self.reads)
            .await
            .map_err(sql("read kernel"))?
            .as_ref()
            .map(kernel_row)
            .transpose()
    }

    async fn kernels(&self) -> Result<Vec<KernelRow>, StoreError> {
        sqlx::query(q("SELECT * FROM kernels ORDER BY name, published_at"))
            .fetch_all(&self.reads)
            .await
            .map_err(sql("list kernels"))?
            .iter()
            .map(kernel_row)
            .collect()
    }

    async fn runbook(
        &self,
        name: &str,
        version: Option<i64>,
    ) -> Result<Option<RunbookRow>, StoreError> {
        let row = match version {
            Some(v) => {
                sqlx::query(q("SELECT * FROM runbook_versions WHERE name = ? AND version = ?"))
                    .bind(name)
                    .bind(v)
                    .fetch_optional(&self.reads)
                    .await
            }
            None => sqlx::query(
                q("SELECT v.* FROM runbook_versions v LEFT JOIN runbook_current c ON c.name = v.name
                     WHERE v.name = ? AND (c.version IS NULL OR v.version = c.version)
                     ORDER BY v.version DESC LIMIT 1"),
            )
            .bind(name)
            .fetch_optional(&self.reads)
            .await,
        }
        .map_err(sql("read runbook"))?;
        Ok(row.as_ref().map(runbook_row))
    }

    async fn runbooks(&self) -> Result<Vec<RunbookRow>, StoreError> {
        Ok(
            sqlx::query(q("SELECT * FROM runbook_versions ORDER BY name, version"))
                .fetch_all(&self.reads)
                .await
                .map_err(sql("list runbooks"))?
                .iter()
                .map(runbook_row)
                .collect(),
        )
    }

    async fn current_runbooks(&self) -> Result<Vec<RunbookRow>, StoreError> {
        Ok(sqlx::query(
            q("SELECT v.* FROM runbook_versions v LEFT JOIN runbook_current c ON c.name = v.name
             WHERE v.version = COALESCE(c.version,
                   (SELECT MAX(version) FROM runbook_versions m WHERE m.name = v.name))
             ORDER BY v.name"),
        )
        .fetch_all(&self.reads)
        .await
        .map_err(sql("list current runbooks"))?
        .iter()
        .map(runbook_row)
        .collect())
    }

    async fn drill_runs(
        &self,
        runbook: &str,
        digest: &str,
        limit_: i64,
    ) -> Result<Vec<RunRow>, StoreError> {
        sqlx::query(
            q("SELECT * FROM runs WHERE runbook = ? AND runbook_digest = ? AND drill = TRUE
             AND status IN ('succeeded', 'failed') ORDER BY id DESC LIMIT ?"),
        )
        .bind(runbook)
        .bind(digest)
        .bind(limit(limit_))
        .fetch_all(&self.reads)
        .await
        .map_err(sql("list drills"))?
        .iter()
        .map(run_row)
        .collect()
    }

    async fn drill_running(&self, runbook: &str) -> Result<bool, StoreError> {
        let n: i64 = sqlx::query_scalar(
            q("SELECT COUNT(*) FROM runs WHERE runbook = ? AND drill = TRUE AND status IN ('queued', 'running', 'awaiting-approval')"),
        )
        .bind(runbook)
        .fetch_one(&self.reads)
        .await
        .map_err(sql("count running drills"))?;
        Ok(n > 0)
    }

    async fn approvals(&self, run_id: &str, step_id: &str) -> Result<Vec<ApprovalRow>, StoreError> {
        Ok(sqlx::query(
            q("SELECT * FROM approvals WHERE run_id = ? AND step_id = ? ORDER BY at, approver"),
        )
        .bind(run_id)
        .bind(step_id)
        .fetch_all(&self.reads)
        .await
        .map_err(sql("list approvals"))?
        .iter()
        .map(|r| ApprovalRow {
            run_id: r.get("run_id"),
            step_id: r.get("step_id"),
            approver: r.get("approver"),
            decision: r.get("decision"),
            comment: r.get("comment"),
            at: r.get("at"),
        })
        .collect())
    }

    async fn drill_schedules(&self) -> Result<Vec<DrillScheduleRow>, StoreError> {
        Ok(sqlx::query(q("SELECT * FROM drill_schedule ORDER BY runbook"))
            .fetch_all(&self.reads)
            .await
            .map_err(sql("list drill schedules"))?
            .iter()
            .map(|r| DrillScheduleRow {
                runbook: r.get("runbook"),
                next_due_at: r.get("next_due_at"),
                last_run_id: r.get("last_run_id"),
            })
            .collect())
    }

    async fn run(&self, id: &str) -> Result<Option<RunRow>, StoreError> {
        sqlx::query(q("SELECT * FROM runs WHERE id = ?"))
            .bind(id)
            .fetch_optional(&self.reads)
            .await
            .map_err(sql("read run"))?
            .as_ref()
            .map(run_row)
            .transpose()
    }

    async fn runs(&self, filter: &RunFilter) -> Result<Vec<RunRow>, StoreError> {
        sqlx::query(
            q(RUNS_FILTER),
        )
        .bind(&filter.runbook)
        .bind(filter.status.map(RunStatus::as_str))
        .bind(limit(filter.limit))
        .bind(&filter.before)
        .bind(
            filter
                .runbooks
                .as_ref()
                .map(|r| serde_json::json!(r).to_string()),
        )
        .fetch_all(&self.reads)
        .await
        .map_err(sql("list runs"))?
        .iter()
        .map(run_row)
        .collect()
    }

    async fn steps(&self, run_id: &str) -> Result<Vec<StepRow>, StoreError> {
        sqlx::query(q("SELECT * FROM steps WHERE run_id = ? ORDER BY position"))
            .bind(run_id)
            .fetch_all(&self.reads)
            .await
            .map_err(sql("read steps"))?
            .iter()
            .map(step_row)
            .collect()
    }

    async fn step_targets(&self, run_id: &str) -> Result<Vec<StepTargetRow>, StoreError> {
        sqlx::query(
            q("SELECT t.* FROM step_targets t JOIN steps s ON s.run_id = t.run_id AND s.step_id = t.step_id
             WHERE t.run_id = ? ORDER BY s.position, t.target"),
        )
        .bind(run_id)
        .fetch_all(&self.reads)
        .await
        .map_err(sql("read step targets"))?
        .iter()
        .map(|r| {
            Ok(StepTargetRow {
                run_id: r.get("run_id"),
                step_id: r.get("step_id"),
                target: r.get("target"),
                status: stored("target status", TargetStatus::parse, r.get("status"))?,
                attempts: r.get("attempts"),
                output: opt_json("step target output", r.get("output"))?,
                error: r.get("error"),
                duration_ms: r.get("duration_ms"),
            })
        })
        .collect()
    }

    async fn host_calls(&self, run_id: &str) -> Result<Vec<HostCallRow>, StoreError> {
        sqlx::query(
            q("SELECT h.* FROM host_calls h JOIN steps s ON s.run_id = h.run_id AND s.step_id = h.step_id
             WHERE h.run_id = ? ORDER BY s.position, h.target, h.attempt, h.idx"),
        )
        .bind(run_id)
        .fetch_all(&self.reads)
        .await
        .map_err(sql("read host calls"))?
        .iter()
        .map(|r| {
            Ok(HostCallRow {
                run_id: r.get("run_id"),
                step_id: r.get("step_id"),
                target: r.get("target"),
                attempt: r.get("attempt"),
                index: r.get("idx"),
                call: parse_json("host call", &r.get::<String, _>("record"))?,
            })
        })
        .collect()
    }

    async fn audit(&self, f: &AuditFilter) -> Result<Vec<AuditRecord>, StoreError> {
        let (kind, id) = match f
            .actor
            .as_deref()
            .map(|a| a.split_once(':').unwrap_or(("user", a)))
        {
            Some((k, i)) => (Some(k.to_string()), Some(i.to_string())),
            None => (None, None),
        };
        Ok(sqlx::query(
            q("SELECT * FROM (SELECT * FROM audit_events
               WHERE (?1 IS NULL OR run_id = ?1) AND (?2 IS NULL OR actor_kind = ?2) AND (?3 IS NULL OR actor_id = ?3)
                 AND (?4 IS NULL OR action = ?4) AND (?5 IS NULL OR time >= ?5)
               ORDER BY seq DESC LIMIT ?6) AS page ORDER BY seq"),
        )
        .bind(&f.run_id)
        .bind(kind)
        .bind(id)
        .bind(&f.action)
        .bind(&f.since)
        .bind(limit(f.limit))
        .fetch_all(&self.reads)
        .await
        .map_err(sql("read audit"))?
        .iter()
        .map(audit_record)
        .collect())
    }

    async fn queued_runs(&self) -> Result<u64, StoreError> {
        let n: i64 = sqlx::query_scalar(q("SELECT COUNT(*) FROM runs WHERE status = 'queued'"))
            .fetch_one(&self.reads)
            .await
            .map_err(sql("count queued runs"))?;
        Ok(u64::try_from(n).unwrap_or(0))
    }

    async fn audit_page(&self, after: i64, limit: i64) -> Result<Vec<AuditRecord>, StoreError> {
        // One row holding the page as a JSON array (see AUDIT_PAGE).
        let row = sqlx::query(q(AUDIT_PAGE))
            .bind(after)
            .bind(limit)
            .fetch_one(&self.reads)
            .await
            .map_err(sql("read audit"))?;
        let text: String = row.try_get(0).map_err(sql("read audit"))?;
        $crate::store::sql::parse_audit_page(&text)
    }

    async fn tokens(&self) -> Result<Vec<super::TokenRow>, StoreError> {
        sqlx::query(q("SELECT * FROM tokens ORDER BY created_at"))
            .fetch_all(&self.reads)
            .await
            .map_err(sql("read tokens"))?
            .iter()
            .map(token_row)
            .collect()
    }

    async fn token_by_hash(&self, hash: &str) -> Result<Option<super::TokenRow>, StoreError> {
        sqlx::query(q("SELECT * FROM tokens WHERE hash = ?"))
            .bind(hash)
            .fetch_optional(&self.reads)
            .await
            .map_err(sql("read token"))?
            .as_ref()
            .map(token_row)
            .transpose()
    }

    async fn session_token(
        &self,
        hash: &str,
        now: &str,
    ) -> Result<Option<super::TokenRow>, StoreError> {
        sqlx::query(q("SELECT t.* FROM sessions s JOIN tokens t ON t.id = s.token_id WHERE s.hash = ? AND s.expires_at > ?"))
            .bind(hash)
            .bind(now)
            .fetch_optional(&self.reads)
            .await
            .map_err(sql("read session"))?
            .as_ref()
            .map(token_row)
            .transpose()
    }

    async fn alert_claim_exists(
        &self,
        source: &str,
        fingerprint: &str,
        starts_at: &str,
        runbook: &str,
    ) -> Result<bool, StoreError> {
        let n: i64 = sqlx::query_scalar(
            q("SELECT COUNT(*) FROM alert_claims WHERE source = ? AND fingerprint = ? AND starts_at = ? AND runbook = ?"),
        )
        .bind(source)
        .bind(fingerprint)
        .bind(starts_at)
        .bind(runbook)
        .fetch_one(&self.reads)
        .await
        .map_err(sql("read alert claims"))?;
        Ok(n > 0)
    }

    async fn alert_runs_since(
        &self,
        runbook: &str,
        key: &str,
        since: &str,
    ) -> Result<u64, StoreError> {
        let n: i64 = sqlx::query_scalar(
            q("SELECT COUNT(*) FROM alert_claims WHERE runbook = ? AND key = ? AND outcome = 'started' AND received_at >= ?"),
        )
        .bind(runbook)
        .bind(key)
        .bind(since)
        .fetch_one(&self.reads)
        .await
        .map_err(sql("read alert claims"))?;
        Ok(u64::try_from(n).unwrap_or(0))
    }

    async fn triggered_outcomes(
        &self,
        runbook: &str,
        limit: u32,
    ) -> Result<Vec<RunStatus>, StoreError> {
        let rows: Vec<String> = sqlx::query_scalar(
            q("SELECT r.status FROM alert_claims c JOIN runs r ON r.id = c.run_id
             WHERE c.runbook = ? AND c.outcome = 'started' AND r.status NOT IN ('queued', 'running', 'awaiting-approval')
               AND c.received_at > COALESCE((SELECT reset_at FROM breaker_resets WHERE runbook = ?), '')
             ORDER BY c.received_at DESC LIMIT ?"),
        )
        .bind(runbook)
        .bind(runbook)
        .bind(i64::from(limit))
        .fetch_all(&self.reads)
        .await
        .map_err(sql("read triggered runs"))?;
        rows.iter()
            .map(|s| {
                RunStatus::parse(s).ok_or(StoreError::Corrupt {
                    what: "run status",
                    reason: s.clone(),
                })
            })
            .collect()
    }

    async fn switches(&self) -> Result<Vec<super::SwitchRow>, StoreError> {
        Ok(sqlx::query(q("SELECT * FROM switches ORDER BY scope"))
            .fetch_all(&self.reads)
            .await
            .map_err(sql("read switches"))?
            .iter()
            .map(|r| super::SwitchRow {
                scope: r.get("scope"),
                engaged: r.get("engaged"),
                reason: r.get("reason"),
                actor: r.get("actor"),
                changed_at: r.get("changed_at"),
            })
            .collect())
    }
}

    };
}

pub(super) use backend;

#[cfg(test)]
mod tests {
    use super::dollar_placeholders;

    #[test]
    fn placeholders_become_numbered() {
        assert_eq!(
            dollar_placeholders("SELECT a FROM t WHERE b = ? AND c = ?"),
            "SELECT a FROM t WHERE b = $1 AND c = $2"
        );
        assert_eq!(
            dollar_placeholders("(?1 IS NULL OR x = ?1) LIMIT ?3"),
            "($1 IS NULL OR x = $1) LIMIT $3"
        );
    }
}
