//! The single writer of a SQL store, as a macro instantiated per database
//! (see `sql.rs`): batches queued by every task are applied in group
//! commits, each in its own savepoint, and **this is where the audit
//! chain's invariant lives**: the chain head is read inside the write
//! transaction, each kept batch's events are sealed onto it in order, and a
//! batch that is rolled back gives its sequence numbers back.

macro_rules! writer {
    ($conn:ty, $row:ty, $store:ty) => {
/// Most audit records one `INSERT` carries (11 parameters each: well
/// under both databases' parameter limits).
const AUDIT_ROWS_PER_INSERT: usize = 32;

/// The `INSERT` of `rows` audit records (1 to [`AUDIT_ROWS_PER_INSERT`]),
/// built once per size.
fn audit_insert(rows: usize) -> &'static str {
    static SQL: std::sync::OnceLock<Vec<&'static str>> = std::sync::OnceLock::new();
    let all = SQL.get_or_init(|| {
        (1..=AUDIT_ROWS_PER_INSERT)
            .map(|n| {
                let values = vec!["(?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"; n].join(", ");
                let sql = format!(
                    "INSERT INTO audit_events (seq, time, actor_kind, actor_id, action, subject, outcome, details, run_id, prev_hash, hash) VALUES {values}"
                );
                &*Box::leak(sql.into_boxed_str())
            })
            .collect()
    });
    all[rows.clamp(1, AUDIT_ROWS_PER_INSERT) - 1]
}

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
    let head = db::query(q("SELECT seq, hash FROM audit_events ORDER BY seq DESC LIMIT 1"))
        .fetch_optional(&mut *tx)
        .await
        .map_err(sql("read audit head"))?;
    let (mut seq, mut hash) = match head {
        Some(row) => (row.get::<i64, _>(0), row.get::<String, _>(1)),
        None => (0, GENESIS_HASH.to_string()),
    };
    let mut results = Vec::with_capacity(group.len());
    for (batch, _) in group {
        db::query(q("SAVEPOINT batch"))
            .execute(&mut *tx)
            .await
            .map_err(sql("savepoint"))?;
        let (saved_seq, saved_hash) = (seq, hash.clone());
        let outcome = apply_batch(&mut tx, batch, &mut seq, &mut hash).await;
        let keep = outcome.as_ref().is_ok_and(Applied::wrote);
        if !keep {
            db::query(q("ROLLBACK TO batch"))
                .execute(&mut *tx)
                .await
                .map_err(sql("rollback to savepoint"))?;
            (seq, hash) = (saved_seq, saved_hash);
        }
        db::query(q("RELEASE batch"))
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
            db::query_scalar(q(FENCE))
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
    let mut records = Vec::with_capacity(batch.events.len() + extra.len());
    for event in batch.events.iter().chain(&extra) {
        let record = AuditRecord::seal(event, *seq + 1, hash);
        *seq = record.seq;
        hash.clone_from(&record.hash);
        records.push(record);
    }
    // Several records per statement: one round trip to the database for
    // a batch's records, not one each.
    for chunk in records.chunks(AUDIT_ROWS_PER_INSERT) {
        let mut insert = db::query(q(audit_insert(chunk.len())));
        for record in chunk {
            insert = insert
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
                .bind(&record.hash);
        }
        insert
            .execute(&mut *tx)
            .await
            .map_err(sql("append audit records"))?;
    }
    Ok(result)
}

    };
}

pub(super) use writer;
