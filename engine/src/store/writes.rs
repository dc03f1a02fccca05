//! Every [`super::Write`] as SQL, as a macro instantiated per database (see
//! `sql.rs`): conditional writes answer [`super::Applied::Stale`],
//! inserts of an existing row [`super::Applied::Exists`], status writes are
//! checked against [`super::RunStatus::may_move`].

macro_rules! writes {
    ($conn:ty, $row:ty, $store:ty) => {
async fn apply_write(tx: &mut $conn, write: &Write) -> Result<Applied, StoreError> {
    match write {
        Write::PublishKernel(k) => {
            let existing: Option<String> =
                db::query_scalar(q("SELECT digest FROM kernels WHERE name = ? AND version = ?"))
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
            db::query(q("INSERT INTO kernels (name, version, digest, size_bytes, manifest, published_at, published_by) VALUES (?, ?, ?, ?, ?, ?, ?)"))
                .bind(&k.name).bind(&k.version).bind(&k.digest).bind(k.size_bytes)
                .bind(json_text(&k.manifest)).bind(&k.published_at).bind(&k.published_by)
                .execute(&mut *tx).await.map_err(sql("insert kernel"))?;
        }
        Write::PublishRunbook(r) => {
            let existing: Option<String> = db::query_scalar(
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
            db::query(q("INSERT INTO runbook_versions (name, version, digest, source, published_at, published_by) VALUES (?, ?, ?, ?, ?, ?)"))
                .bind(&r.name).bind(r.version).bind(&r.digest).bind(&r.source)
                .bind(&r.published_at).bind(&r.published_by)
                .execute(&mut *tx).await.map_err(sql("insert runbook"))?;
            // A new version ends a rollback: the newest is current again.
            db::query(q("DELETE FROM runbook_current WHERE name = ?"))
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
            let done = db::query(q("UPDATE runs SET status = ?, error = ?, finished_at = ? WHERE id = ? AND status = 'running'"))
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
            db::query(q("INSERT INTO steps (run_id, step_id, position, phase, kernel, kernel_digest, status, attempts, targets, input, output, error, logs, started_at, finished_at, duration_ms)
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
            db::query(
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
            db::query(q("INSERT INTO host_calls (run_id, step_id, target, attempt, idx, record) VALUES (?, ?, ?, ?, ?, ?)
                         ON CONFLICT (run_id, step_id, target, attempt, idx) DO UPDATE SET record = excluded.record"))
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
                db::query_scalar(q("SELECT id FROM tokens WHERE name = ? AND revoked_at IS NULL"))
                    .bind(&t.name)
                    .fetch_optional(&mut *tx)
                    .await
                    .map_err(sql("read token"))?;
            if taken.is_some() {
                return Ok(Applied::Exists);
            }
            db::query(q("INSERT INTO tokens (id, name, role, runbooks, hash, created_at, created_by, revoked_at, owner) VALUES (?, ?, ?, ?, ?, ?, ?, NULL, ?)"))
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
            db::query(q("UPDATE tokens SET revoked_at = ? WHERE id = ? AND revoked_at IS NULL"))
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
            db::query(q("INSERT INTO sessions (hash, token_id, created_at, expires_at) VALUES (?, ?, ?, ?)"))
                .bind(hash)
                .bind(token_id)
                .bind(created_at)
                .bind(expires_at)
                .execute(&mut *tx)
                .await
                .map_err(sql("insert session"))?;
        }
        Write::EndSession { hash, now } => {
            db::query(q("DELETE FROM sessions WHERE hash = ? OR expires_at <= ?"))
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
            cooldown_since,
            window_since,
            max_in_window,
        } => {
            // One statement: the cooldown check and the claim are one step
            // for the store's single writer. A claim an older version wrote
            // for a suppressed decision gives way to the started one.
            let done = db::query(
                q("INSERT INTO alert_claims (source, fingerprint, starts_at, runbook, key, outcome, run_id, received_at)
                 SELECT ?, ?, ?, ?, ?, ?, ?, ?
                 WHERE NOT EXISTS (SELECT 1 FROM alert_claims
                     WHERE runbook = ? AND key = ? AND outcome = 'started' AND received_at >= ?)
                   AND (SELECT COUNT(*) FROM alert_claims
                     WHERE runbook = ? AND key = ? AND outcome = 'started' AND received_at >= ?) < ?
                 ON CONFLICT (source, fingerprint, starts_at, runbook) DO UPDATE
                     SET key = excluded.key, outcome = excluded.outcome, run_id = excluded.run_id,
                         received_at = excluded.received_at
                     WHERE alert_claims.outcome <> 'started'"),
            )
            .bind(source)
            .bind(fingerprint)
            .bind(starts_at)
            .bind(runbook)
            .bind(key)
            .bind(outcome)
            .bind(run_id)
            .bind(received_at)
            .bind(runbook)
            .bind(key)
            .bind(cooldown_since)
            .bind(runbook)
            .bind(key)
            .bind(window_since)
            .bind(max_in_window)
            .execute(&mut *tx)
            .await
            .map_err(sql("claim alert"))?;
            if done.rows_affected() == 0 {
                return Ok(Applied::Exists);
            }
        }
        Write::ResetBreaker {
            runbook,
            reset_at,
            actor,
            reason,
        } => {
            db::query(
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
        Write::InsertCheckpoint(c) => {
            let done = db::query(
                q("INSERT INTO audit_checkpoints (size, root, note, signer, created_at) VALUES (?, ?, ?, ?, ?)
                 ON CONFLICT (size) DO NOTHING"),
            )
            .bind(c.size)
            .bind(&c.root)
            .bind(&c.note)
            .bind(&c.signer)
            .bind(&c.created_at)
            .execute(&mut *tx)
            .await
            .map_err(sql("insert checkpoint"))?;
            if done.rows_affected() == 0 {
                return Ok(Applied::Exists);
            }
        }
        Write::SetSwitch(w) => {
            db::query(
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
            let done = db::query(
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
                db::query_scalar(q("SELECT status FROM runs WHERE id = ?"))
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
            db::query(q("UPDATE runs SET status = ?, error = ?, finished_at = ?,
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
                db::query_scalar(q("SELECT next_due_at FROM drill_schedule WHERE runbook = ?"))
                    .bind(runbook)
                    .fetch_optional(&mut *tx)
                    .await
                    .map_err(sql("read drill schedule"))?;
            if expect_due.is_some() && current != *expect_due {
                return Ok(Applied::Stale);
            }
            db::query(
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
            let done = db::query(
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
            db::query(
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
            let (active, of_runbook): (i64, i64) = db::query_as(
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
            let claimed: Option<(String, i64)> = db::query_as(
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
            let expired: Option<(String, Option<String>)> = db::query_as(
                q(FIND_EXPIRED),
            )
            .bind(now)
            .fetch_optional(&mut *tx)
            .await
            .map_err(sql("find expired leases"))?;
            let Some((run_id, previous)) = expired else {
                return Ok(Applied::Stale);
            };
            let epoch: i64 = db::query_scalar(
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
            db::query(q("UPDATE runs SET lease_until = ? WHERE id = ?"))
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
            let held = db::query(
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
        Write::RaiseNotified(n) => {
            let done = db::query(q("INSERT INTO notified (sink, key, raised_at, condition) VALUES (?, ?, ?, ?) ON CONFLICT (sink, key) DO NOTHING"))
                .bind(&n.sink).bind(&n.key).bind(&n.raised_at).bind(json_text(&n.condition))
                .execute(&mut *tx).await.map_err(sql("raise notified"))?;
            if done.rows_affected() == 0 {
                return Ok(Applied::Exists);
            }
        }
        Write::ResolveNotified { sink, key } => {
            let done = db::query(q("DELETE FROM notified WHERE sink = ? AND key = ?"))
                .bind(sink).bind(key)
                .execute(&mut *tx).await.map_err(sql("resolve notified"))?;
            if done.rows_affected() == 0 {
                return Ok(Applied::Stale);
            }
        }
        Write::PushOutbox(o) => {
            let done = db::query(q("INSERT INTO notification_outbox (sink, idempotency_key, notified_key, transition, event, subject, run_id, payload, created_at, next_at_ms, attempts, last_error) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (idempotency_key) DO NOTHING"))
                .bind(&o.sink).bind(&o.idempotency_key).bind(&o.notified_key).bind(&o.transition).bind(&o.event)
                .bind(&o.subject).bind(&o.run_id).bind(json_text(&o.payload)).bind(&o.created_at)
                .bind(o.next_at_ms).bind(o.attempts).bind(&o.last_error)
                .execute(&mut *tx).await.map_err(sql("push outbox"))?;
            if done.rows_affected() == 0 {
                return Ok(Applied::Exists);
            }
        }
        Write::RetryOutbox { id, attempts, next_at_ms, error } => {
            db::query(q("UPDATE notification_outbox SET attempts = ?, next_at_ms = ?, last_error = ? WHERE id = ?"))
                .bind(attempts).bind(next_at_ms).bind(error).bind(id)
                .execute(&mut *tx).await.map_err(sql("retry outbox"))?;
        }
        Write::RemoveOutbox { id } => {
            db::query(q("DELETE FROM notification_outbox WHERE id = ?"))
                .bind(id)
                .execute(&mut *tx).await.map_err(sql("remove outbox"))?;
        }
        Write::ForgetNotified { sink, key } => {
            db::query(q("DELETE FROM notified WHERE sink = ? AND key = ?"))
                .bind(sink).bind(key)
                .execute(&mut *tx).await.map_err(sql("forget notified"))?;
        }
        Write::DecideStep {
            run_id,
            step_id,
            from,
            to,
            error,
        } => {
            let done = db::query(
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
    db::query(q("INSERT INTO runs (id, runbook, runbook_version, runbook_digest, draft, mode, actor, status, inputs, kernels, error, started_at, finished_at, drill, owner, epoch, gate, source) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"))
        .bind(&r.id).bind(&r.runbook).bind(r.runbook_version).bind(&r.runbook_digest)
        .bind(r.draft).bind(&r.mode).bind(&r.actor).bind(r.status.as_str())
        .bind(json_text(&r.inputs)).bind(json_text(&r.kernels)).bind(&r.error)
        .bind(&r.started_at).bind(&r.finished_at).bind(r.drill)
        .bind(&r.owner).bind(r.epoch).bind(r.gate.as_ref().map(json_text)).bind(&r.source)
        .execute(&mut *tx).await.map_err(sql("insert run"))?;
    Ok(())
}

    };
}

pub(super) use writes;
