//! The PostgreSQL store, for several nodes on one database: the same
//! statements and logic as the SQLite store (`sql::backend!`), one writer
//! connection per node that group-commits batches, and a transaction-scoped
//! advisory lock around every write transaction, so writes from all nodes
//! are serialised: the audit chain stays single and gap-free, admission
//! limits count every node's runs, and a claim or takeover sees the
//! committed state of the others. Reads use a pool and take no lock.

use std::collections::HashMap;
use std::str::FromStr;
use std::sync::{Mutex, OnceLock};

use sqlx as db;
use sqlx::postgres::{PgConnectOptions, PgConnection, PgPool, PgPoolOptions, PgRow};
use sqlx::{Connection, Row};
use tokio::sync::{mpsc, oneshot};

use super::sql::{Reply, dollar_placeholders, json_text, limit, opt_json, parse_json, sql};
use super::{
    Applied, ApprovalRow, AuditFilter, Batch, DrillScheduleRow, HostCallRow, KernelRow, Phase,
    RunFilter, RunRow, RunStatus, RunbookRow, StepRow, StepStatus, StepTargetRow, Store,
    StoreConfig, StoreError, TargetStatus, Write,
};
use crate::audit::{AuditRecord, GENESIS_HASH};

/// The advisory lock key every write transaction takes ("firedril").
const WRITE_LOCK: i64 = 0x6669_7265_6472_696c;

/// The PostgreSQL store.
#[derive(Debug, Clone)]
pub struct PgStore {
    reads: PgPool,
    writer: mpsc::Sender<(Batch, Reply)>,
}

impl PgStore {
    /// No file to read directly.
    fn file(&self) -> Option<&std::path::Path> {
        None
    }

    /// Where a read that may be long runs: the pool (its connections'
    /// tasks are not the runtime's threads).
    fn long(&self) -> &PgPool {
        &self.reads
    }
}

/// `url` without its password, for messages.
pub fn redacted_url(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut u) => {
            if u.password().is_some() {
                let _ = u.set_password(Some("***"));
            }
            u.to_string()
        }
        Err(_) => "(an unparseable database URL)".to_string(),
    }
}

impl PgStore {
    /// Connect to the database at `url` (`postgres://user:pass@host/db`),
    /// migrating its schema (migrations take their own lock, so nodes may
    /// start together).
    pub async fn open(url: &str, config: &StoreConfig) -> Result<Self, StoreError> {
        let open = |source| StoreError::Open {
            path: redacted_url(url),
            source,
        };
        let options = PgConnectOptions::from_str(url)
            .map_err(open)?
            .application_name("firedrill");
        let mut writer = PgConnection::connect_with(&options).await.map_err(open)?;
        let migrations = sqlx::migrate!("./migrations-pg");
        let migrated: bool =
            sqlx::query_scalar("SELECT to_regclass('_sqlx_migrations') IS NOT NULL")
                .fetch_one(&mut writer)
                .await
                .map_err(open)?;
        let applied: Option<i64> = if migrated {
            sqlx::query_scalar("SELECT MAX(version) FROM _sqlx_migrations WHERE success")
                .fetch_one(&mut writer)
                .await
                .map_err(open)?
        } else {
            None
        };
        super::refuse_newer_schema(&redacted_url(url), applied, &migrations)?;
        migrations.run(&mut writer).await?;
        let reads = PgPoolOptions::new()
            .max_connections(config.read_connections.max(1))
            .connect_with(options)
            .await
            .map_err(open)?;
        let (tx, rx) = mpsc::channel(config.write_queue.max(1));
        tokio::spawn(writer_loop(writer, rx, config.write_batch_max.max(1)));
        Ok(PgStore { reads, writer: tx })
    }
}

/// The statement with `$N` placeholders (translated once, then cached).
fn q(sql: &'static str) -> &'static str {
    static CACHE: OnceLock<Mutex<HashMap<usize, &'static str>>> = OnceLock::new();
    let cache = CACHE.get_or_init(|| Mutex::new(HashMap::new()));
    let mut cache = cache.lock().unwrap_or_else(|e| e.into_inner());
    cache
        .entry(sql.as_ptr() as usize)
        .or_insert_with(|| Box::leak(dollar_placeholders(sql).into_boxed_str()))
}

/// A transaction holding the store-wide write lock until it ends.
async fn begin_write(
    conn: &mut PgConnection,
) -> Result<sqlx::Transaction<'_, sqlx::Postgres>, StoreError> {
    let mut tx = conn.begin().await.map_err(sql("begin"))?;
    sqlx::query("SELECT pg_advisory_xact_lock($1)")
        .bind(WRITE_LOCK)
        .execute(&mut *tx)
        .await
        .map_err(sql("take the write lock"))?;
    Ok(tx)
}

/// The run row is locked for share: a takeover waits until this batch is
/// committed (or refused), never the other way round.
const FENCE: &str = "SELECT epoch FROM runs WHERE id = ? AND owner = ? AND epoch = ? FOR SHARE";

const CLAIM_QUEUED: &str = "UPDATE runs SET status = 'running', owner = ?1, epoch = epoch + 1, lease_until = ?2
                 WHERE id = (SELECT id FROM runs WHERE status = 'queued' AND (?3::text IS NULL OR id = ?3) ORDER BY id LIMIT 1 FOR UPDATE SKIP LOCKED)
                 RETURNING id, epoch";

const FIND_EXPIRED: &str = "SELECT id, owner FROM runs WHERE status IN ('running', 'awaiting-approval')
                 AND (lease_until IS NULL OR lease_until < ?) ORDER BY id LIMIT 1 FOR UPDATE SKIP LOCKED";

const RUNS_FILTER: &str = "SELECT * FROM runs WHERE (?1::text IS NULL OR runbook = ?1) AND (?2::text IS NULL OR status = ?2)
             AND (?4::text IS NULL OR id < ?4)
             AND (?5::text IS NULL OR runbook IN (SELECT jsonb_array_elements_text(?5::jsonb)))
             ORDER BY id DESC LIMIT ?3";

/// A page of the audit chain as one row (as for SQLite).
const AUDIT_PAGE: &str =
    "SELECT COALESCE(json_agg(json_build_array(seq, time, actor_kind, actor_id, action, subject,
             outcome, details, run_id, prev_hash, hash)), '[]')::text
             FROM (SELECT * FROM audit_events WHERE seq > ?1 ORDER BY seq LIMIT ?2) page";

super::sql::backend!(PgConnection, PgRow, PgStore);
