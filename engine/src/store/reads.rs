//! The row decoders and every query of the [`super::Store`] trait, as a
//! macro instantiated per database (see `sql.rs`). A read that may be long
//! (a list whose length the data decides, a scan, a page) goes through
//! `self.long()`, so on SQLite it never holds a runtime thread; a lookup
//! by key, a count over an index, a list bounded small or one run's own
//! records (bounded by its validated runbook) goes through `&self.reads`.

macro_rules! reads {
    ($conn:ty, $row:ty, $store:ty) => {
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
        db::query(q("SELECT * FROM kernels WHERE name = ? AND version = ?"))
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
        db::query(q("SELECT * FROM kernels ORDER BY name, published_at"))
            .fetch_all(self.long())
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
                db::query(q("SELECT * FROM runbook_versions WHERE name = ? AND version = ?"))
                    .bind(name)
                    .bind(v)
                    .fetch_optional(&self.reads)
                    .await
            }
            None => db::query(
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
            db::query(q("SELECT * FROM runbook_versions ORDER BY name, version"))
                .fetch_all(self.long())
                .await
                .map_err(sql("list runbooks"))?
                .iter()
                .map(runbook_row)
                .collect(),
        )
    }

    async fn current_runbooks(&self) -> Result<Vec<RunbookRow>, StoreError> {
        Ok(db::query(
            q("SELECT v.* FROM runbook_versions v LEFT JOIN runbook_current c ON c.name = v.name
             WHERE v.version = COALESCE(c.version,
                   (SELECT MAX(version) FROM runbook_versions m WHERE m.name = v.name))
             ORDER BY v.name"),
        )
        .fetch_all(self.long())
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
        db::query(
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
        let n: i64 = db::query_scalar(
            q("SELECT COUNT(*) FROM runs WHERE runbook = ? AND drill = TRUE AND status IN ('queued', 'running', 'awaiting-approval')"),
        )
        .bind(runbook)
        .fetch_one(&self.reads)
        .await
        .map_err(sql("count running drills"))?;
        Ok(n > 0)
    }

    async fn approvals(&self, run_id: &str, step_id: &str) -> Result<Vec<ApprovalRow>, StoreError> {
        Ok(db::query(
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
        Ok(db::query(q("SELECT * FROM drill_schedule ORDER BY runbook"))
            .fetch_all(self.long())
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
        db::query(q("SELECT * FROM runs WHERE id = ?"))
            .bind(id)
            .fetch_optional(&self.reads)
            .await
            .map_err(sql("read run"))?
            .as_ref()
            .map(run_row)
            .transpose()
    }

    async fn cancel_requested(&self, id: &str) -> Result<Option<String>, StoreError> {
        let request: Option<Option<String>> =
            db::query_scalar(q("SELECT cancel_requested FROM runs WHERE id = ?"))
                .bind(id)
                .fetch_optional(&self.reads)
                .await
                .map_err(sql("read the run's cancel request"))?;
        Ok(request.flatten())
    }

    async fn runs(&self, filter: &RunFilter) -> Result<Vec<RunRow>, StoreError> {
        db::query(
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
        .fetch_all(self.long())
        .await
        .map_err(sql("list runs"))?
        .iter()
        .map(run_row)
        .collect()
    }

    async fn steps(&self, run_id: &str) -> Result<Vec<StepRow>, StoreError> {
        db::query(q("SELECT * FROM steps WHERE run_id = ? ORDER BY position"))
            .bind(run_id)
            .fetch_all(&self.reads)
            .await
            .map_err(sql("read steps"))?
            .iter()
            .map(step_row)
            .collect()
    }

    async fn step_targets(&self, run_id: &str) -> Result<Vec<StepTargetRow>, StoreError> {
        db::query(
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
        db::query(
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
        Ok(db::query(q(super::sql::audit_filter(f.run_id.is_some(), kind.is_some())))
        .bind(&f.run_id)
        .bind(kind)
        .bind(id)
        .bind(&f.action)
        .bind(&f.since)
        .bind(limit(f.limit))
        .fetch_all(self.long())
        .await
        .map_err(sql("read audit"))?
        .iter()
        .map(audit_record)
        .collect())
    }

    async fn queued_runs(&self) -> Result<u64, StoreError> {
        let n: i64 = db::query_scalar(q("SELECT COUNT(*) FROM runs WHERE status = 'queued'"))
            .fetch_one(&self.reads)
            .await
            .map_err(sql("count queued runs"))?;
        Ok(u64::try_from(n).unwrap_or(0))
    }

    async fn waiting_runs(&self, limit_: i64) -> Result<Vec<super::WaitingRun>, StoreError> {
        let rows: Vec<(String, String, String, String)> = db::query_as(
            q("SELECT r.id, r.runbook, r.status,
                    COALESCE((SELECT MAX(s.started_at) FROM steps s WHERE s.run_id = r.id), r.started_at) AS since
             FROM runs r WHERE r.status IN ('awaiting-approval', 'needs-attention')
             ORDER BY since LIMIT ?"),
        )
        .bind(limit_)
        .fetch_all(self.long())
        .await
        .map_err(sql("read waiting runs"))?;
        rows.into_iter()
            .map(|(id, runbook, status, since)| {
                Ok(super::WaitingRun {
                    id,
                    runbook,
                    status: stored("run status", RunStatus::parse, status)?,
                    since,
                })
            })
            .collect()
    }

    async fn notified(&self, sink: &str, limit_: i64) -> Result<Vec<super::NotifiedRow>, StoreError> {
        db::query(q("SELECT * FROM notified WHERE sink = ? ORDER BY raised_at, key LIMIT ?"))
            .bind(sink)
            .bind(limit_)
            .fetch_all(self.long())
            .await
            .map_err(sql("read notified"))?
            .iter()
            .map(|r| {
                Ok(super::NotifiedRow {
                    sink: r.get("sink"),
                    key: r.get("key"),
                    raised_at: r.get("raised_at"),
                    condition: parse_json("notified condition", &r.get::<String, _>("condition"))?,
                })
            })
            .collect()
    }

    async fn outbox(&self, sink: &str, limit_: i64) -> Result<Vec<super::OutboxRow>, StoreError> {
        db::query(q("SELECT * FROM notification_outbox WHERE sink = ? ORDER BY id LIMIT ?"))
            .bind(sink)
            .bind(limit_)
            .fetch_all(self.long())
            .await
            .map_err(sql("read outbox"))?
            .iter()
            .map(|r| {
                Ok(super::OutboxRow {
                    id: r.get("id"),
                    sink: r.get("sink"),
                    idempotency_key: r.get("idempotency_key"),
                    notified_key: r.get("notified_key"),
                    transition: r.get("transition"),
                    event: r.get("event"),
                    subject: r.get("subject"),
                    run_id: r.get("run_id"),
                    payload: parse_json("outbox payload", &r.get::<String, _>("payload"))?,
                    created_at: r.get("created_at"),
                    next_at_ms: r.get("next_at_ms"),
                    attempts: r.get("attempts"),
                    last_error: r.get("last_error"),
                })
            })
            .collect()
    }

    async fn outbox_depths(&self) -> Result<Vec<super::OutboxDepth>, StoreError> {
        let rows: Vec<(String, i64, Option<String>)> = db::query_as(q(
            "SELECT sink, COUNT(*), MIN(created_at) FROM notification_outbox GROUP BY sink ORDER BY sink",
        ))
        .fetch_all(&self.reads)
        .await
        .map_err(sql("read outbox depths"))?;
        Ok(rows
            .into_iter()
            .map(|(sink, queued, oldest)| super::OutboxDepth { sink, queued, oldest })
            .collect())
    }

    async fn notification_sinks(&self) -> Result<Vec<String>, StoreError> {
        db::query_scalar(q(
            "SELECT sink FROM notified UNION SELECT sink FROM notification_outbox ORDER BY sink",
        ))
        .fetch_all(&self.reads)
        .await
        .map_err(sql("read notification sinks"))
    }

    fn database_file(&self) -> Option<&std::path::Path> {
        self.file()
    }

    async fn audit_page_text(&self, after: i64, limit: i64) -> Result<String, StoreError> {
        // One row holding the page as a JSON array (see AUDIT_PAGE).
        let row = db::query(q(AUDIT_PAGE))
            .bind(after)
            .bind(limit)
            .fetch_one(self.long())
            .await
            .map_err(sql("read audit"))?;
        row.try_get(0).map_err(sql("read audit"))
    }

    async fn audit_page(&self, after: i64, limit: i64) -> Result<Vec<AuditRecord>, StoreError> {
        let text = self.audit_page_text(after, limit).await?;
        $crate::store::sql::parse_audit_page(&text)
    }

    async fn audit_hashes(&self, after: i64, limit: i64) -> Result<Vec<(i64, String)>, StoreError> {
        db::query_as(q("SELECT seq, hash FROM audit_events WHERE seq > ? ORDER BY seq LIMIT ?"))
            .bind(after)
            .bind(limit)
            .fetch_all(self.long())
            .await
            .map_err(sql("read audit hashes"))
    }

    async fn checkpoints(&self, limit: i64) -> Result<Vec<super::CheckpointRow>, StoreError> {
        Ok(db::query(q("SELECT * FROM audit_checkpoints ORDER BY size DESC LIMIT ?"))
            .bind(limit)
            .fetch_all(self.long())
            .await
            .map_err(sql("read checkpoints"))?
            .iter()
            .map(|r| super::CheckpointRow {
                size: r.get("size"),
                root: r.get("root"),
                note: r.get("note"),
                signer: r.get("signer"),
                created_at: r.get("created_at"),
            })
            .collect())
    }

    async fn tokens(&self) -> Result<Vec<super::TokenRow>, StoreError> {
        db::query(q("SELECT * FROM tokens ORDER BY created_at"))
            .fetch_all(self.long())
            .await
            .map_err(sql("read tokens"))?
            .iter()
            .map(token_row)
            .collect()
    }

    async fn token_by_hash(&self, hash: &str) -> Result<Option<super::TokenRow>, StoreError> {
        db::query(q("SELECT * FROM tokens WHERE hash = ?"))
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
        db::query(q("SELECT t.* FROM sessions s JOIN tokens t ON t.id = s.token_id WHERE s.hash = ? AND s.expires_at > ?"))
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
        let n: i64 = db::query_scalar(
            q("SELECT COUNT(*) FROM alert_claims WHERE source = ? AND fingerprint = ? AND starts_at = ? AND runbook = ? AND outcome = 'started'"),
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

    async fn alert_starts_since(
        &self,
        runbook: &str,
        key: &str,
        since: &str,
        limit: u32,
    ) -> Result<Vec<String>, StoreError> {
        db::query_scalar(
            q("SELECT received_at FROM alert_claims WHERE runbook = ? AND key = ? AND outcome = 'started' AND received_at >= ?
             ORDER BY received_at LIMIT ?"),
        )
        .bind(runbook)
        .bind(key)
        .bind(since)
        .bind(i64::from(limit))
        .fetch_all(&self.reads)
        .await
        .map_err(sql("read alert claims"))
    }

    async fn current_runbook_versions(&self) -> Result<Vec<(String, i64)>, StoreError> {
        db::query_as(
            q("SELECT v.name, v.version FROM runbook_versions v LEFT JOIN runbook_current c ON c.name = v.name
             WHERE v.version = COALESCE(c.version,
                   (SELECT MAX(version) FROM runbook_versions m WHERE m.name = v.name))
             ORDER BY v.name"),
        )
        .fetch_all(&self.reads)
        .await
        .map_err(sql("list current runbooks"))
    }

    async fn recent_triggered(
        &self,
        runbook: &str,
        limit: u32,
    ) -> Result<Vec<(String, RunStatus)>, StoreError> {
        let rows: Vec<(String, String)> = db::query_as(
            q("SELECT c.key, r.status FROM alert_claims c JOIN runs r ON r.id = c.run_id
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
        rows.into_iter()
            .map(|(k, s)| Ok((k, stored("run status", RunStatus::parse, s)?)))
            .collect()
    }

    async fn triggered_outcomes(
        &self,
        runbook: &str,
        key: Option<&str>,
        limit: u32,
    ) -> Result<Vec<RunStatus>, StoreError> {
        // The key's own statement walks `alert_claims_key` newest first:
        // an optional key written as `(? IS NULL OR key = ?)` would scan
        // every claim of the runbook for a new key, on every alert.
        let Some(key) = key else {
            return Ok(self
                .recent_triggered(runbook, limit)
                .await?
                .into_iter()
                .map(|(_, status)| status)
                .collect());
        };
        let rows: Vec<String> = db::query_scalar(
            q("SELECT r.status FROM alert_claims c JOIN runs r ON r.id = c.run_id
             WHERE c.runbook = ? AND c.key = ? AND c.outcome = 'started'
               AND r.status NOT IN ('queued', 'running', 'awaiting-approval')
               AND c.received_at > COALESCE((SELECT reset_at FROM breaker_resets WHERE runbook = ?), '')
             ORDER BY c.received_at DESC LIMIT ?"),
        )
        .bind(runbook)
        .bind(key)
        .bind(runbook)
        .bind(i64::from(limit))
        .fetch_all(&self.reads)
        .await
        .map_err(sql("read triggered runs"))?;
        rows.into_iter()
            .map(|s| stored("run status", RunStatus::parse, s))
            .collect()
    }

    async fn switches(&self) -> Result<Vec<super::SwitchRow>, StoreError> {
        Ok(db::query(q("SELECT * FROM switches ORDER BY scope"))
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

pub(super) use reads;
