//! The embedded SQLite store: WAL, `synchronous = FULL` by default, and one
//! writer thread, with its own connection (`direct.rs`), that
//! group-commits batches.
//!
//! Many callers submit batches; the writer takes up to `write-batch-max` of
//! them at once, applies each inside its own SAVEPOINT within a single
//! `BEGIN IMMEDIATE` transaction, commits once, and only then acknowledges
//! them. One fsync serves many runs, and every acknowledged batch is durable.
//! The audit chain head is read inside the transaction, so another process
//! writing to the same database keeps the chain intact (SQLite's write lock
//! serialises the two).

use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use sqlx::Connection;
use sqlx::sqlite::{SqliteConnectOptions, SqliteConnection, SqliteJournalMode, SqliteSynchronous};
use tokio::sync::{mpsc, oneshot};

use super::direct::{self as db, begin_write};
use super::sql::{Reply, json_text, limit, opt_json, parse_json, sql};
use super::{
    Applied, ApprovalRow, AuditFilter, Batch, DrillScheduleRow, HostCallRow, KernelRow, Phase,
    RunFilter, RunRow, RunStatus, RunbookRow, StepRow, StepStatus, StepTargetRow, Store,
    StoreError, TargetStatus, Write,
};
use crate::audit::{AuditRecord, GENESIS_HASH};

/// SQLite durability for commits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum Synchronous {
    /// fsync on every commit: an acknowledged record survives power loss.
    Full,
    /// fsync at checkpoints only: survives a process crash, may lose the
    /// last commits on power loss. Faster; not the default.
    Normal,
}

/// `[store]` in `firedrill.toml`. Its `Debug` hides the database password.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "kebab-case", default)]
pub struct StoreConfig {
    /// Durability of the write path (audit included). Default `full`.
    pub synchronous: Synchronous,
    /// Batches committed together at most. Default 256.
    pub write_batch_max: usize,
    /// Batches waiting for the writer at most; further writers wait. Default 4096.
    pub write_queue: usize,
    /// How long to wait for another process's lock on the database, in ms
    /// (1 to 3,600,000). Default 10,000.
    pub busy_timeout_ms: u64,
    /// Read connections, 1 to 64 (SQLite: read-only; a small read runs on
    /// the calling thread when one is free, a long one or a read that finds
    /// none free on the blocking pool; PostgreSQL: the read pool). Default 4.
    pub read_connections: u32,
    /// A PostgreSQL database (`postgres://user:password@host:port/db`) for
    /// several nodes; default none: SQLite in the home. Prefer
    /// `FIREDRILL_DATABASE` to keep the password out of the file.
    #[serde(skip_serializing)]
    pub url: Option<String>,
}

impl std::fmt::Debug for StoreConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoreConfig")
            .field("synchronous", &self.synchronous)
            .field("write_batch_max", &self.write_batch_max)
            .field("write_queue", &self.write_queue)
            .field("busy_timeout_ms", &self.busy_timeout_ms)
            .field("read_connections", &self.read_connections)
            .field(
                "url",
                &self.url.as_deref().map(super::postgres::redacted_url),
            )
            .finish()
    }
}

/// Longest `busy-timeout-ms`: an hour.
pub const MAX_BUSY_TIMEOUT_MS: u64 = 3_600_000;

impl StoreConfig {
    /// Every problem with these settings, as `[store] key` and the range.
    pub fn problems(&self) -> Vec<String> {
        let max_reads = super::direct::MAX_READ_CONNECTIONS;
        let mut problems = Vec::new();
        for (key, value) in [
            ("write-batch-max", self.write_batch_max),
            ("write-queue", self.write_queue),
        ] {
            if value == 0 {
                problems.push(format!("[store] {key} is 0; it must be at least 1"));
            }
        }
        if !(1..=MAX_BUSY_TIMEOUT_MS).contains(&self.busy_timeout_ms) {
            problems.push(format!(
                "[store] busy-timeout-ms is {}; it must be between 1 and {MAX_BUSY_TIMEOUT_MS}",
                self.busy_timeout_ms
            ));
        }
        if !(1..=max_reads).contains(&self.read_connections) {
            problems.push(format!(
                "[store] read-connections is {}; it must be between 1 and {max_reads}",
                self.read_connections
            ));
        }
        problems
    }
}

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig {
            synchronous: Synchronous::Full,
            write_batch_max: 256,
            write_queue: 4096,
            busy_timeout_ms: 10_000,
            read_connections: 4,
            url: None,
        }
    }
}

/// Create `path` owner-only if it is missing, and make it, its `-wal`
/// and its `-shm` owner-only if they exist.
fn private_files(path: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    match std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
    {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(e),
    }
    for suffix in ["", "-wal", "-shm", "-journal"] {
        let mut name = path.as_os_str().to_owned();
        name.push(suffix);
        let file = std::path::PathBuf::from(name);
        match std::fs::metadata(&file) {
            Ok(meta) if meta.permissions().mode() & 0o077 != 0 => {
                std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600))?;
            }
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// The SQLite store.
#[derive(Debug, Clone)]
pub struct SqliteStore {
    reads: std::sync::Arc<super::direct::Readers>,
    writer: mpsc::Sender<(Batch, Reply)>,
    path: std::path::PathBuf,
    /// The shared lock that keeps `firedrill restore` from replacing the
    /// database while this process has it open (`backup.rs`).
    _open: std::sync::Arc<std::fs::File>,
}

impl SqliteStore {
    /// Open (creating and migrating) the database at `path`.
    pub async fn open(path: &Path, config: &StoreConfig) -> Result<Self, StoreError> {
        Self::open_with(path, config, None).await
    }

    /// [`SqliteStore::open`] by the process that holds the store's
    /// exclusive lock (`lock`, from [`super::backup::lock_exclusive`]: a
    /// restore), which the store keeps until it is dropped.
    pub async fn open_holding(
        path: &Path,
        config: &StoreConfig,
        lock: std::fs::File,
    ) -> Result<Self, StoreError> {
        Self::open_with(path, config, Some(lock)).await
    }

    async fn open_with(
        path: &Path,
        config: &StoreConfig,
        held: Option<std::fs::File>,
    ) -> Result<Self, StoreError> {
        let open = |source| StoreError::Open {
            path: path.display().to_string(),
            source,
        };
        // First, so that a restore in progress is never raced.
        let lock = match held {
            Some(lock) => lock,
            None => super::backup::lock_shared(path)
                .map_err(|e| open(sqlx::Error::Io(e)))?
                .ok_or_else(|| StoreError::Restoring {
                    path: path.display().to_string(),
                })?,
        };
        // The database (and the WAL and SHM files SQLite creates with the
        // database file's mode) holds the audit log and run history: owner
        // only, whatever the umask or the directory's mode.
        // Before anything opens it read-write (which would set WAL mode).
        let migrations = sqlx::migrate!("./migrations");
        let applied = super::backup::schema_of(path).map_err(|e| open(sqlx::Error::Protocol(e)))?;
        super::refuse_newer_schema(&path.display().to_string(), applied, &migrations)?;
        private_files(path).map_err(|e| open(sqlx::Error::Io(e)))?;
        let options = SqliteConnectOptions::from_str("sqlite://")
            .map_err(open)?
            .filename(path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(match config.synchronous {
                Synchronous::Full => SqliteSynchronous::Full,
                Synchronous::Normal => SqliteSynchronous::Normal,
            })
            .busy_timeout(Duration::from_millis(config.busy_timeout_ms))
            .foreign_keys(true);
        let mut migrator = SqliteConnection::connect_with(&options)
            .await
            .map_err(open)?;
        migrations.run(&mut migrator).await?;
        // SQLite has created the WAL and SHM files by now (the migration
        // connection stays open until the writer's is, so they stay).
        private_files(path).map_err(|e| open(sqlx::Error::Io(e)))?;
        // Reads run on the caller's thread, on read-only connections of
        // their own; the writer owns its connection on a thread of its
        // own (`direct.rs`): a group commit runs there with no thread hop
        // per statement.
        let reads =
            super::direct::Readers::open(path, config.read_connections, config.busy_timeout_ms)
                .map_err(|e| open(super::direct::sqlx_error(e)))?;
        let synchronous = match config.synchronous {
            Synchronous::Full => "FULL",
            Synchronous::Normal => "NORMAL",
        };
        let writer = super::direct::Conn::open(path, synchronous, config.busy_timeout_ms)
            .map_err(|e| open(super::direct::sqlx_error(e)))?;
        migrator.close().await.map_err(open)?;
        let (tx, rx) = mpsc::channel(config.write_queue.max(1));
        let batch_max = config.write_batch_max.max(1);
        std::thread::Builder::new()
            .name("firedrill-writer".into())
            .spawn(move || futures::executor::block_on(writer_loop(writer, rx, batch_max)))
            .map_err(|e| open(sqlx::Error::Io(e)))?;
        Ok(SqliteStore {
            reads: std::sync::Arc::new(reads),
            writer: tx,
            path: path.to_path_buf(),
            _open: std::sync::Arc::new(lock),
        })
    }

    /// The database file, for readers that go straight to it.
    fn file(&self) -> Option<&Path> {
        Some(&self.path)
    }

    /// Where a read that may be long runs: on tokio's blocking pool
    /// (`direct.rs`), never on the runtime's threads.
    fn long(&self) -> super::direct::Offload<'_> {
        super::direct::Offload(&self.reads)
    }
}

/// A record the scan refused before hashing it.
struct Tampered(i64, String);

enum ScanError {
    Sql(rusqlite::Error),
    Tampered(Tampered),
}

impl From<rusqlite::Error> for ScanError {
    fn from(e: rusqlite::Error) -> Self {
        ScanError::Sql(e)
    }
}

impl From<Tampered> for ScanError {
    fn from(t: Tampered) -> Self {
        ScanError::Tampered(t)
    }
}

/// Records per chunk handed from the thread that steps SQLite to the one
/// that hashes.
const SCAN_CHUNK: usize = 8_192;

/// Records copied out of SQLite: every text field in one buffer.
#[derive(Default)]
struct Chunk {
    buf: String,
    /// seq, whether run_id is set, and where each of the ten text fields
    /// ends in `buf`.
    recs: Vec<(i64, bool, [usize; 10])>,
}

impl Chunk {
    /// Copy a row; a column that is not text (a value written behind
    /// firedrill's back, e.g. a BLOB, which SQLite's JSON functions would
    /// render raw) is refused, naming the record.
    fn push(&mut self, row: &rusqlite::Row<'_>) -> Result<(), ScanError> {
        const COLUMNS: [&str; 10] = [
            "time",
            "actor_kind",
            "actor_id",
            "action",
            "subject",
            "outcome",
            "details",
            "run_id",
            "prev_hash",
            "hash",
        ];
        let seq: i64 = row.get(0)?;
        let mut ends = [0usize; 10];
        let mut has_run = false;
        for (i, end) in ends.iter_mut().enumerate() {
            match row.get_ref(i + 1)? {
                rusqlite::types::ValueRef::Null if i == 7 => {}
                rusqlite::types::ValueRef::Text(t) => {
                    has_run |= i == 7;
                    let text = std::str::from_utf8(t).map_err(|_| {
                        Tampered(
                            seq,
                            format!(
                                "column {} is not UTF-8 text: the record was written behind firedrill's back",
                                COLUMNS[i]
                            ),
                        )
                    })?;
                    self.buf.push_str(text);
                }
                other => {
                    return Err(Tampered(
                        seq,
                        format!(
                            "column {} holds a {:?} value, not text: the record was written behind firedrill's back",
                            COLUMNS[i],
                            other.data_type()
                        ),
                    )
                    .into());
                }
            }
            *end = self.buf.len();
        }
        self.recs.push((seq, has_run, ends));
        Ok(())
    }

    fn records(&self) -> impl Iterator<Item = crate::audit::RecordRef<'_>> {
        let mut start = 0;
        self.recs.iter().map(move |(seq, has_run, ends)| {
            let mut f = [""; 10];
            for (i, end) in ends.iter().enumerate() {
                f[i] = &self.buf[start..*end];
                start = *end;
            }
            crate::audit::RecordRef {
                seq: *seq,
                time: f[0],
                actor_kind: f[1],
                actor_id: f[2],
                action: f[3],
                subject: f[4],
                outcome: f[5],
                details: f[6],
                run_id: has_run.then_some(f[7]),
                prev_hash: f[8],
                hash: f[9],
            }
        })
    }
}

/// Walk the chain of the database at `path` with `verifier`, reading the
/// rows directly (SQLite's own API through `rusqlite`, one read
/// transaction): this thread steps the rows, another hashes them. For
/// `audit verify`, whose speed is the store read (BENCHMARKS.md).
pub(super) fn scan_audit(
    path: &Path,
    verifier: crate::audit::Verifier,
) -> Result<crate::audit::Verifier, StoreError> {
    use rusqlite::OpenFlags;
    let corrupt = |e: rusqlite::Error| StoreError::Corrupt {
        what: "audit log",
        reason: e.to_string(),
    };
    let conn = rusqlite::Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(corrupt)?;
    conn.busy_timeout(Duration::from_secs(5)).map_err(corrupt)?;
    let mut stmt = conn
        .prepare(
            "SELECT seq, time, actor_kind, actor_id, action, subject, outcome, details, run_id, prev_hash, hash
             FROM audit_events ORDER BY seq",
        )
        .map_err(corrupt)?;
    let (tx, rx) = std::sync::mpsc::sync_channel::<Chunk>(4);
    std::thread::scope(|s| {
        let hasher = s.spawn(move || {
            let mut v = verifier;
            for chunk in rx {
                for r in chunk.records() {
                    if !v.push_ref(&r) {
                        return v;
                    }
                }
            }
            v
        });
        let mut chunk = Chunk::default();
        let read = (|| -> Result<(), ScanError> {
            let mut rows = stmt.query([])?;
            while let Some(row) = rows.next()? {
                chunk.push(row)?;
                if chunk.recs.len() == SCAN_CHUNK && tx.send(std::mem::take(&mut chunk)).is_err() {
                    // The hasher found a bad record and stopped.
                    return Ok(());
                }
            }
            Ok(())
        })();
        // What was read before the end (or a refused record) is checked.
        if !chunk.recs.is_empty() {
            let _ = tx.send(chunk);
        }
        drop(tx);
        let mut verifier = match hasher.join() {
            Ok(v) => v,
            Err(panic) => std::panic::resume_unwind(panic),
        };
        match read {
            Ok(()) => Ok(verifier),
            Err(ScanError::Tampered(Tampered(seq, problem))) => {
                verifier.fail(seq, problem);
                Ok(verifier)
            }
            Err(ScanError::Sql(e)) => Err(corrupt(e)),
        }
    })
}

/// SQLite takes statements as written.
fn q(sql: &'static str) -> &'static str {
    sql
}

/// The newest schema migration this binary has for SQLite.
pub fn known_schema() -> i64 {
    sqlx::migrate!("./migrations")
        .iter()
        .map(|m| m.version)
        .max()
        .unwrap_or(0)
}

/// The write lock already serialises writers: no row locks needed.
const FENCE: &str = "SELECT epoch FROM runs WHERE id = ? AND owner = ? AND epoch = ?";

const CLAIM_QUEUED: &str = "UPDATE runs SET status = 'running', owner = ?1, epoch = epoch + 1, lease_until = ?2
                 WHERE id = (SELECT id FROM runs WHERE status = 'queued' AND (?3 IS NULL OR id = ?3) ORDER BY id LIMIT 1)
                 RETURNING id, epoch";

const FIND_EXPIRED: &str =
    "SELECT id, owner FROM runs WHERE status IN ('running', 'awaiting-approval')
                 AND (lease_until IS NULL OR lease_until < ?) ORDER BY id LIMIT 1";

const RUNS_FILTER: &str =
    "SELECT * FROM runs WHERE (?1 IS NULL OR runbook = ?1) AND (?2 IS NULL OR status = ?2)
             AND (?4 IS NULL OR id < ?4)
             AND (?5 IS NULL OR runbook IN (SELECT value FROM json_each(?5)))
             ORDER BY id DESC LIMIT ?3";

/// A page of the audit chain as one row: a JSON array of each record's
/// columns (in no particular order; `parse_audit_page` sorts by seq). Read
/// row by row, the driver hands every row from its worker thread to the
/// reader with a wake-up, which made reading, not hashing, the cost of
/// `audit verify` (BENCHMARKS.md, "Profile and fix"). `group_concat`, not
/// `json_group_array(... ORDER BY seq)`: the latter sorted the page in a
/// temporary b-tree that spilled to disk.
const AUDIT_PAGE: &str = "SELECT '[' || COALESCE(group_concat(json_array(seq, CAST(time AS TEXT),
             CAST(actor_kind AS TEXT), CAST(actor_id AS TEXT), CAST(action AS TEXT),
             CAST(subject AS TEXT), CAST(outcome AS TEXT), CAST(details AS TEXT),
             CAST(run_id AS TEXT), CAST(prev_hash AS TEXT), CAST(hash AS TEXT)), ','), '') || ']'
             FROM (SELECT * FROM audit_events WHERE seq > ?1 ORDER BY seq LIMIT ?2)";

// The writer and the writes on the writer thread's own connection; the
// reads on the read connections (`direct.rs`).
super::writer::writer!(super::direct::Conn, db::Row, SqliteStore);
super::writes::writes!(super::direct::Conn, db::Row, SqliteStore);
super::reads::reads!(super::direct::Conn, db::Row, SqliteStore);

#[cfg(test)]
mod tests {
    use super::{SqliteStore, StoreConfig};

    /// What SQLite's planner does with `sql`, one line per step.
    fn plan(db: &std::path::Path, sql: &str) -> String {
        let conn = rusqlite::Connection::open(db).expect("open");
        let mut stmt = conn
            .prepare(&format!("EXPLAIN QUERY PLAN {sql}"))
            .expect("prepare");
        let unbound = std::iter::repeat_n(rusqlite::types::Null, stmt.parameter_count());
        let rows = stmt
            .query_map(rusqlite::params_from_iter(unbound), |r| {
                r.get::<_, String>(3)
            })
            .expect("plan")
            .collect::<Result<Vec<_>, _>>()
            .expect("rows");
        rows.join("\n")
    }

    /// An audit filter by run or by actor walks its index: with the
    /// optional form alone (`? IS NULL OR run_id = ?`) SQLite scans the
    /// whole log, so one run's records cost as much as reading them all.
    #[tokio::test]
    async fn audit_filters_by_run_and_actor_use_their_indexes() {
        let dir = tempfile::tempdir().expect("tempdir");
        let db = dir.path().join("firedrill.db");
        let store = SqliteStore::open(&db, &StoreConfig::default())
            .await
            .expect("open");
        let by_run = plan(&db, super::super::sql::audit_filter(true, false));
        assert!(by_run.contains("USING INDEX audit_by_run"), "{by_run}");
        let both = plan(&db, super::super::sql::audit_filter(true, true));
        assert!(both.contains("USING INDEX audit_by_run"), "{both}");
        let by_actor = plan(&db, super::super::sql::audit_filter(false, true));
        assert!(
            by_actor.contains("USING INDEX audit_by_actor"),
            "{by_actor}"
        );
        // Without either, newest first until the limit (no index to use).
        let any = plan(&db, super::super::sql::audit_filter(false, false));
        assert!(any.contains("SCAN audit_events"), "{any}");
        drop(store);
    }

    #[test]
    fn debug_hides_the_database_password() {
        let config = StoreConfig {
            url: Some("postgres://firedrill:s3cret-pw@db.internal:5432/firedrill".into()),
            ..StoreConfig::default()
        };
        let shown = format!("{config:?}");
        assert!(!shown.contains("s3cret-pw"), "{shown}");
        assert!(shown.contains("db.internal"), "{shown}");
    }
}
