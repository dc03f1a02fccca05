//! A consistent copy of the SQLite store taken while it is in use, the
//! checks a copy passes before it is used, and the lock that keeps a
//! restore from replacing a database some process has open.
//!
//! The copy is `VACUUM INTO` on a read-only connection: one read
//! transaction, so the copy is one committed state of the store (a
//! writer goes on meanwhile; its WAL grows until the copy ends). It is
//! written to a hidden file beside the target, synced, then linked into
//! place (a link never replaces a file), so a failed or interrupted
//! backup leaves no file that looks like a backup.

use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use rusqlite::{Connection, OpenFlags};
use serde::Serialize;

/// What a copy of the store holds, as `backup` and `restore` report it.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct CopyInfo {
    pub path: String,
    pub bytes: u64,
    /// The newest schema migration applied to it.
    pub schema: i64,
    pub audit_records: i64,
    /// The newest audit record's sequence number and hash.
    pub audit_head_seq: Option<i64>,
    pub audit_head_hash: Option<String>,
}

/// A backup or a copy to restore could not be made or used.
#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    #[error("{path} already exists; name a new file (a backup never replaces one)")]
    Exists { path: String },
    #[error("cannot copy the store to {path}: {reason}; nothing was written there")]
    Copy { path: String, reason: String },
    #[error("{path} is not a usable firedrill store: {reason}")]
    Unusable { path: String, reason: String },
}

/// The lock file beside the database at `db`: every process that opens
/// the store holds it shared; a restore holds it exclusively.
pub fn lock_path(db: &Path) -> PathBuf {
    let mut name = db.as_os_str().to_owned();
    name.push(".lock");
    PathBuf::from(name)
}

fn open_lock(db: &Path) -> std::io::Result<std::fs::File> {
    std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .open(lock_path(db))
}

/// The shared lock on the store at `db`, held for as long as the file
/// lives; `None` when a restore holds it.
pub fn lock_shared(db: &Path) -> std::io::Result<Option<std::fs::File>> {
    try_lock_with(db, std::fs::File::try_lock_shared)
}

/// The exclusive lock on the store at `db` (`None`: some process has the
/// store open), held for as long as the file lives.
pub fn lock_exclusive(db: &Path) -> std::io::Result<Option<std::fs::File>> {
    try_lock_with(db, std::fs::File::try_lock)
}

fn try_lock_with(
    db: &Path,
    lock: fn(&std::fs::File) -> Result<(), std::fs::TryLockError>,
) -> std::io::Result<Option<std::fs::File>> {
    let file = open_lock(db)?;
    match lock(&file) {
        Ok(()) => Ok(Some(file)),
        Err(std::fs::TryLockError::WouldBlock) => Ok(None),
        Err(std::fs::TryLockError::Error(e)) => Err(e),
    }
}

/// Copy the store at `db` to the new file `to`, consistently, while other
/// processes use it. The copy is checked ([`inspect`]) before it is given
/// its name: a backup that fails leaves no file.
pub fn copy_to(db: &Path, to: &Path, busy_timeout_ms: u64) -> Result<CopyInfo, BackupError> {
    let shown = to.display().to_string();
    if std::fs::symlink_metadata(to).is_ok() {
        return Err(BackupError::Exists { path: shown });
    }
    let failed = |reason: String| BackupError::Copy {
        path: shown.clone(),
        reason,
    };
    let dir = parent_of(to);
    let name = to
        .file_name()
        .ok_or_else(|| failed("the path names no file".into()))?
        .to_string_lossy()
        .into_owned();
    let partial =
        vacuum_into(db, dir, &format!(".{name}.partial-"), busy_timeout_ms).map_err(failed)?;
    let info = inspect(&partial).map_err(|e| failed(format!("the copy fails its check: {e}")))?;
    partial
        .persist_noclobber(to)
        .map_err(|e| match e.error.kind() {
            std::io::ErrorKind::AlreadyExists => BackupError::Exists {
                path: shown.clone(),
            },
            _ => failed(e.error.to_string()),
        })?;
    sync_dir(to).map_err(failed)?;
    Ok(CopyInfo {
        path: shown.clone(),
        ..info
    })
}

/// Check the copy at `path`: SQLite's integrity check, firedrill's
/// tables, and what it holds. Opened read-only; nothing is changed.
pub fn inspect(path: &Path) -> Result<CopyInfo, BackupError> {
    let unusable = |reason: String| BackupError::Unusable {
        path: path.display().to_string(),
        reason,
    };
    let bytes = std::fs::metadata(path)
        .map_err(|e| unusable(e.to_string()))?
        .len();
    let conn = read_only(path).map_err(|e| unusable(e.to_string()))?;
    let integrity: Vec<String> = conn
        .prepare("PRAGMA integrity_check(10)")
        .and_then(|mut s| {
            s.query_map([], |r| r.get::<_, String>(0))?
                .collect::<Result<Vec<_>, _>>()
        })
        .map_err(|e| unusable(format!("SQLite cannot read it: {e}")))?;
    if integrity != ["ok"] {
        return Err(unusable(format!(
            "SQLite's integrity check failed: {}",
            integrity.join("; ")
        )));
    }
    let has = |table: &str| -> Result<bool, BackupError> {
        conn.query_row(
            "SELECT COUNT(*) FROM sqlite_master WHERE type = 'table' AND name = ?1",
            [table],
            |r| r.get::<_, i64>(0),
        )
        .map(|n| n > 0)
        .map_err(|e| unusable(e.to_string()))
    };
    for table in ["_sqlx_migrations", "audit_events", "runs"] {
        if !has(table)? {
            return Err(unusable(format!("it has no {table} table")));
        }
    }
    let read = |e: rusqlite::Error| unusable(e.to_string());
    let schema: Option<i64> = conn
        .query_row(
            "SELECT MAX(version) FROM _sqlx_migrations WHERE success",
            [],
            |r| r.get(0),
        )
        .map_err(read)?;
    let audit_records: i64 = conn
        .query_row("SELECT COUNT(*) FROM audit_events", [], |r| r.get(0))
        .map_err(read)?;
    let head: Option<(i64, String)> = match conn.query_row(
        "SELECT seq, hash FROM audit_events ORDER BY seq DESC LIMIT 1",
        [],
        |r| Ok((r.get(0)?, r.get(1)?)),
    ) {
        Ok(h) => Some(h),
        Err(rusqlite::Error::QueryReturnedNoRows) => None,
        Err(e) => return Err(read(e)),
    };
    Ok(CopyInfo {
        path: path.display().to_string(),
        bytes,
        schema: schema.ok_or_else(|| unusable("no schema migration is recorded".into()))?,
        audit_records,
        audit_head_seq: head.as_ref().map(|h| h.0),
        audit_head_hash: head.map(|h| h.1),
    })
}

/// The newest schema migration applied to the database at `db`, read
/// without changing anything (`None`: no database, or not migrated yet).
pub fn schema_of(db: &Path) -> Result<Option<i64>, String> {
    if std::fs::metadata(db).map(|m| m.len()).unwrap_or(0) == 0 {
        return Ok(None);
    }
    let conn = read_only(db).map_err(|e| e.to_string())?;
    let migrated: i64 = conn
        .query_row(
            "SELECT COUNT(*) FROM sqlite_master WHERE type = 'table' AND name = '_sqlx_migrations'",
            [],
            |r| r.get(0),
        )
        .map_err(|e| e.to_string())?;
    if migrated == 0 {
        return Ok(None);
    }
    conn.query_row(
        "SELECT MAX(version) FROM _sqlx_migrations WHERE success",
        [],
        |r| r.get(0),
    )
    .map_err(|e| e.to_string())
}

/// `VACUUM INTO` a new owner-only file in `dir` named `prefix…`, from a
/// read-only connection on `db` (so with what its WAL holds), synced.
fn vacuum_into(
    db: &Path,
    dir: &Path,
    prefix: &str,
    busy_timeout_ms: u64,
) -> Result<tempfile::TempPath, String> {
    // Owner only, like the store itself (tempfile creates 0600): it holds
    // the audit log and the token hashes. VACUUM INTO accepts an empty file.
    let partial = tempfile::Builder::new()
        .prefix(prefix)
        .tempfile_in(dir)
        .map_err(|e| format!("cannot create a file in {}: {e}", dir.display()))?
        .into_temp_path();
    let conn = read_only(db).map_err(|e| format!("cannot open {}: {e}", db.display()))?;
    conn.busy_timeout(std::time::Duration::from_millis(busy_timeout_ms))
        .map_err(|e| e.to_string())?;
    let target = partial.to_str().ok_or("the path is not UTF-8")?;
    conn.execute("VACUUM INTO ?1", [target])
        .map_err(|e| format!("the copy failed: {e}"))?;
    drop(conn);
    durable(&partial)?;
    Ok(partial)
}

/// A backup copied into `dir` (the home) and checked there: what is
/// installed is exactly what was checked, whatever happens to the backup
/// file meanwhile (and with what its own WAL holds, if it has one).
pub fn stage(from: &Path, dir: &Path) -> Result<(tempfile::TempPath, CopyInfo), BackupError> {
    let shown = from.display().to_string();
    let unusable = |reason: String| BackupError::Unusable {
        path: shown.clone(),
        reason,
    };
    // Absolute: SQLite reads a name that starts with `file:` as a URI.
    let from = std::fs::canonicalize(from).map_err(|e| unusable(e.to_string()))?;
    if !std::fs::metadata(&from)
        .map_err(|e| unusable(e.to_string()))?
        .is_file()
    {
        return Err(unusable("it is not a file".into()));
    }
    inspect(&from)?;
    let staged = vacuum_into(&from, dir, ".firedrill.db.restoring-", 5_000).map_err(|reason| {
        BackupError::Copy {
            path: dir.display().to_string(),
            reason,
        }
    })?;
    let info = inspect(&staged).map_err(|e| unusable(e.to_string()))?;
    Ok((
        staged,
        CopyInfo {
            path: from.display().to_string(),
            ..info
        },
    ))
}

/// What the store about to be replaced holds beyond the backup.
#[derive(Debug)]
pub struct Current {
    pub audit_records: i64,
    /// Records the two share from the start (the same hashes).
    pub shared: i64,
    /// Its records the backup lacks (`None`: none), `from..=to`: past
    /// what they share; not counting the backup's own `store.backed-up`.
    pub lost: Option<(i64, i64)>,
    /// Tokens revoked in it (id, when).
    pub revoked: Vec<(String, String)>,
    /// Its engaged switches (scope, reason).
    pub engaged: Vec<(String, String)>,
}

/// How the store about to be replaced stands.
#[derive(Debug)]
pub enum Quiet {
    /// There is none.
    Missing,
    Read(Current),
    /// It cannot be read as a database (damaged: the usual reason to restore).
    Unreadable(String),
}

/// Why the store about to be replaced could not be read or quiesced.
#[derive(Debug)]
pub enum Busy {
    /// Another connection has it open.
    InUse(String),
    /// Anything else (permissions, I/O, a full disk): nothing is assumed.
    Failed(String),
}

fn classify(e: &rusqlite::Error) -> Option<Busy> {
    match e.sqlite_error_code() {
        Some(rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked) => {
            Some(Busy::InUse(e.to_string()))
        }
        Some(rusqlite::ErrorCode::DatabaseCorrupt | rusqlite::ErrorCode::NotADatabase) => None,
        _ => Some(Busy::Failed(e.to_string())),
    }
}

/// Read, without changing it, what the store at `db` holds that the
/// staged backup at `staged` lacks, and what a restore carries over.
pub fn read_current(db: &Path, staged: &Path) -> Result<Quiet, Busy> {
    match std::fs::symlink_metadata(db) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Quiet::Missing),
        Err(e) => return Err(Busy::Failed(e.to_string())),
        Ok(m) if m.file_type().is_symlink() => {
            return Err(Busy::Failed(format!(
                "{} is a symbolic link; restore into the directory it points to",
                db.display()
            )));
        }
        Ok(_) => {}
    }
    let fail = |e: rusqlite::Error| match classify(&e) {
        Some(b) => Err(b),
        None => Ok(Quiet::Unreadable(e.to_string())),
    };
    let conn = match read_only(db) {
        Ok(c) => c,
        Err(e) => return fail(e),
    };
    let _ = conn.busy_timeout(std::time::Duration::from_millis(1_000));
    let backup = read_only(staged).map_err(|e| Busy::Failed(e.to_string()))?;
    match compare(&conn, &backup) {
        Ok(c) => Ok(Quiet::Read(c)),
        Err(e) => fail(e),
    }
}

fn compare(conn: &Connection, backup: &Connection) -> rusqlite::Result<Current> {
    let count = |c: &Connection| {
        c.query_row("SELECT COUNT(*) FROM audit_events", [], |r| {
            r.get::<_, i64>(0)
        })
    };
    let hash = |c: &Connection, seq: i64| -> rusqlite::Result<Option<String>> {
        match c.query_row("SELECT hash FROM audit_events WHERE seq = ?1", [seq], |r| {
            r.get(0)
        }) {
            Ok(h) => Ok(Some(h)),
            Err(rusqlite::Error::QueryReturnedNoRows) => Ok(None),
            Err(e) => Err(e),
        }
    };
    let (k, n) = (count(conn)?, count(backup)?);
    // The chain is hash-linked: one shared hash at `s` means the first `s`
    // records are the same. The largest such `s`, by bisection.
    let m = k.min(n);
    let same = |s: i64| -> rusqlite::Result<bool> {
        Ok(s == 0 || hash(conn, s)?.is_some_and(|h| hash(backup, s).ok().flatten() == Some(h)))
    };
    let shared = if same(m)? {
        m
    } else {
        let (mut lo, mut hi) = (0, m);
        while hi - lo > 1 {
            let mid = lo + (hi - lo) / 2;
            if same(mid)? {
                lo = mid;
            } else {
                hi = mid;
            }
        }
        lo
    };
    // The newest backup restored in place: the only record past it is the
    // `store.backed-up` that names it.
    let own_record = shared == n
        && k == n + 1
        && {
            let head = hash(backup, n)?.unwrap_or_default();
            conn.query_row(
            "SELECT action = 'store.backed-up' AND instr(details, ?2) > 0 FROM audit_events WHERE seq = ?1",
            rusqlite::params![k, head],
            |r| r.get::<_, bool>(0),
        )?
        };
    let lost = (k > shared && !own_record).then_some((shared + 1, k));
    let mut stmt =
        conn.prepare("SELECT id, revoked_at FROM tokens WHERE revoked_at IS NOT NULL")?;
    let revoked = stmt
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
        .collect::<Result<Vec<_>, _>>()?;
    let mut stmt = conn.prepare("SELECT scope, reason FROM switches WHERE engaged")?;
    let engaged = stmt
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Current {
        audit_records: k,
        shared,
        lost,
        revoked,
        engaged,
    })
}

/// Fold the WAL of the store at `db` into it (`journal_mode = DELETE`),
/// just before it is replaced, so the copy kept aside stands alone. SQLite
/// refuses while another connection that has read it is open (from any
/// process, with or without the lock file): `Busy::InUse`. A damaged store
/// is left as it is.
pub fn quiesce(db: &Path) -> Result<(), Busy> {
    if !db.exists() {
        return Ok(());
    }
    let conn = match Connection::open_with_flags(
        db,
        OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    ) {
        Ok(c) => c,
        Err(e) => return classify(&e).map_or(Ok(()), Err),
    };
    let _ = conn.busy_timeout(std::time::Duration::from_millis(1_000));
    match conn.query_row("PRAGMA journal_mode = DELETE", [], |r| {
        r.get::<_, String>(0)
    }) {
        Ok(mode) if mode.eq_ignore_ascii_case("delete") => Ok(()),
        Ok(mode) => Err(Busy::InUse(format!("its journal stayed in {mode} mode"))),
        Err(e) => classify(&e).map_or(Ok(()), Err),
    }
}

/// What [`prepare`] changed in a staged copy before it was installed.
#[derive(Debug, Default, Serialize)]
pub struct Prepared {
    /// Console sessions dropped (everyone signs in again).
    pub sessions_cleared: u64,
    /// Tokens revoked in the replaced store after the backup was taken,
    /// revoked again.
    pub tokens_revoked_again: Vec<String>,
    /// Runs queued, running or awaiting approval when the backup was
    /// taken: what they did after it is unknown.
    pub runs_in_flight: u64,
}

/// Make a staged copy safe to serve: no console session of the past, no
/// token revoked since the backup working again; count the runs that were
/// in flight.
pub fn prepare(staged: &Path, revoked: &[(String, String)]) -> Result<Prepared, String> {
    let conn = Connection::open_with_flags(
        staged,
        OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(|e| e.to_string())?;
    let run = || -> rusqlite::Result<Prepared> {
        let tx = conn.unchecked_transaction()?;
        // A backup of an older schema may lack a table (migrated on open).
        let has = |table: &str| -> rusqlite::Result<bool> {
            tx.query_row(
                "SELECT COUNT(*) FROM sqlite_master WHERE type = 'table' AND name = ?1",
                [table],
                |r| r.get::<_, i64>(0),
            )
            .map(|n| n > 0)
        };
        let sessions_cleared = if has("sessions")? {
            tx.execute("DELETE FROM sessions", [])? as u64
        } else {
            0
        };
        let mut tokens_revoked_again = Vec::new();
        for (id, at) in revoked.iter().filter(|_| has("tokens").unwrap_or(false)) {
            if tx.execute(
                "UPDATE tokens SET revoked_at = ?2 WHERE id = ?1 AND revoked_at IS NULL",
                [id, at],
            )? > 0
            {
                tokens_revoked_again.push(id.clone());
            }
        }
        let runs_in_flight: i64 = tx.query_row(
            "SELECT COUNT(*) FROM runs WHERE status IN ('queued', 'running', 'awaiting-approval')",
            [],
            |r| r.get(0),
        )?;
        tx.commit()?;
        Ok(Prepared {
            sessions_cleared,
            tokens_revoked_again,
            runs_in_flight: u64::try_from(runs_in_flight).unwrap_or(0),
        })
    };
    let prepared = run().map_err(|e| e.to_string())?;
    drop(conn);
    durable(staged)?;
    Ok(prepared)
}

/// Put the staged copy in place of the database at `db`. Whatever was
/// there (the database, a WAL, an SHM, even without a database) is first
/// linked to `aside` (with the same suffixes), so `db` is never missing
/// and a crash at any point leaves the old store whole at one of the two
/// names. The caller holds [`lock_exclusive`] and has quiesced `db`.
/// `true`: there was a store to move aside.
pub fn install(staged: tempfile::TempPath, db: &Path, aside: &Path) -> Result<bool, BackupError> {
    let failed = |reason: String| BackupError::Copy {
        path: db.display().to_string(),
        reason,
    };
    let with = |p: &Path, suffix: &str| {
        let mut name = p.as_os_str().to_owned();
        name.push(suffix);
        PathBuf::from(name)
    };
    let mut linked = Vec::new();
    for suffix in ["", "-wal", "-shm", "-journal"] {
        let (from, to) = (with(db, suffix), with(aside, suffix));
        if std::fs::symlink_metadata(&from).is_err() {
            continue;
        }
        if let Err(e) = std::fs::hard_link(&from, &to) {
            for l in &linked {
                let _ = std::fs::remove_file(l);
            }
            return Err(failed(format!(
                "cannot keep {} as {}: {e}; nothing was changed",
                from.display(),
                to.display()
            )));
        }
        linked.push(to);
    }
    let moved = !linked.is_empty();
    sync_dir(db).map_err(failed)?;
    // A WAL left beside the new database would be replayed onto it.
    for suffix in ["-wal", "-shm", "-journal"] {
        match std::fs::remove_file(with(db, suffix)) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(failed(e.to_string())),
        }
    }
    staged
        .persist(db)
        .map_err(|e| failed(e.error.to_string()))?;
    sync_dir(db).map_err(failed)?;
    Ok(moved)
}

fn read_only(path: &Path) -> rusqlite::Result<Connection> {
    Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
}

fn durable(path: &Path) -> Result<(), String> {
    std::fs::File::open(path)
        .and_then(|f| f.sync_all())
        .map_err(|e| format!("cannot sync {}: {e}", path.display()))
}

fn parent_of(path: &Path) -> &Path {
    match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    }
}

fn sync_dir(path: &Path) -> Result<(), String> {
    let dir = parent_of(path);
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| format!("cannot sync {}: {e}", dir.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store_file(dir: &Path) -> PathBuf {
        let db = dir.join("firedrill.db");
        let conn = Connection::open(&db).expect("open");
        conn.execute_batch(
            "PRAGMA journal_mode = WAL;
             CREATE TABLE _sqlx_migrations (version BIGINT PRIMARY KEY, success BOOLEAN);
             INSERT INTO _sqlx_migrations VALUES (1, TRUE), (2, TRUE);
             CREATE TABLE runs (id TEXT);
             CREATE TABLE audit_events (seq INTEGER PRIMARY KEY, hash TEXT);
             INSERT INTO audit_events VALUES (1, 'aa'), (2, 'bb');",
        )
        .expect("schema");
        db
    }

    #[test]
    fn a_copy_is_owner_only_never_replaces_a_file_and_leaves_nothing_when_it_fails() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().expect("tempdir");
        let db = store_file(dir.path());
        let to = dir.path().join("copy.db");
        let info = copy_to(&db, &to, 1000).expect("copy");
        assert_eq!(
            (info.schema, info.audit_records, info.audit_head_seq),
            (2, 2, Some(2))
        );
        assert_eq!(info.audit_head_hash.as_deref(), Some("bb"));
        let mode = std::fs::metadata(&to).expect("meta").permissions().mode();
        assert_eq!(mode & 0o777, 0o600, "{mode:o}");

        // Never over an existing file, and the file is untouched.
        let before = std::fs::read(&to).expect("read");
        let err = copy_to(&db, &to, 1000).expect_err("exists").to_string();
        assert!(err.contains("already exists"), "{err}");
        assert_eq!(std::fs::read(&to).expect("read"), before);

        // A store that cannot be read: an error, and no file of either name.
        let missing = dir.path().join("nothing.db");
        let to2 = dir.path().join("copy2.db");
        let err = copy_to(&missing, &to2, 1000)
            .expect_err("no store")
            .to_string();
        assert!(err.contains("nothing was written"), "{err}");
        let left: Vec<_> = std::fs::read_dir(dir.path())
            .expect("dir")
            .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
            .filter(|n| n.contains("copy2"))
            .collect();
        assert!(left.is_empty(), "{left:?}");
    }

    #[test]
    fn inspect_refuses_what_is_not_a_whole_firedrill_store() {
        let dir = tempfile::tempdir().expect("tempdir");
        let db = store_file(dir.path());
        let copy = dir.path().join("copy.db");
        copy_to(&db, &copy, 1000).expect("copy");

        // Not SQLite at all.
        let junk = dir.path().join("junk.db");
        std::fs::write(&junk, b"not a database, just some bytes...").expect("write");
        let err = inspect(&junk).expect_err("junk").to_string();
        assert!(err.contains("is not a usable firedrill store"), "{err}");

        // SQLite, but someone else's.
        let other = dir.path().join("other.db");
        Connection::open(&other)
            .expect("open")
            .execute_batch("CREATE TABLE t (x);")
            .expect("t");
        let err = inspect(&other).expect_err("other").to_string();
        assert!(err.contains("has no _sqlx_migrations table"), "{err}");

        // Damaged: a page of the copy overwritten.
        let mut bytes = std::fs::read(&copy).expect("read");
        let page = 4096;
        assert!(bytes.len() >= 2 * page, "{}", bytes.len());
        for b in &mut bytes[page + 8..2 * page] {
            *b = 0x5a;
        }
        let damaged = dir.path().join("damaged.db");
        std::fs::write(&damaged, &bytes).expect("write");
        let err = inspect(&damaged).expect_err("damaged").to_string();
        assert!(err.contains("is not a usable firedrill store"), "{err}");
    }

    #[test]
    fn a_restore_lock_excludes_every_open_and_the_reverse() {
        let dir = tempfile::tempdir().expect("tempdir");
        let db = dir.path().join("firedrill.db");
        let open = lock_shared(&db).expect("lock").expect("free");
        let second = lock_shared(&db).expect("lock").expect("shared twice");
        assert!(lock_exclusive(&db).expect("lock").is_none());
        drop((open, second));
        let restoring = lock_exclusive(&db).expect("lock").expect("free now");
        assert!(lock_shared(&db).expect("lock").is_none());
        drop(restoring);
        assert!(lock_shared(&db).expect("lock").is_some());
    }
}
