//! The SQLite store's connections, through SQLite's API directly
//! (`rusqlite`), with the slice of sqlx's query API that the writer, the
//! writes and the reads (`writer.rs`, `writes.rs`, `reads.rs`) are written
//! in, so both backends still run the same statements and logic:
//!
//! - the writer's connection ([`Conn`]), owned by the writer's own thread;
//! - the read connections ([`Readers`]): a small read runs on the
//!   caller's thread when a connection is free at once; a read that may
//!   be long (through [`Offload`]), or any read when no connection is
//!   free, runs on tokio's blocking pool, so no read holds a runtime
//!   thread for long or waits on one for a connection.
//!
//! Why: through sqlx every statement is a round trip to its connection's
//! worker thread and back (two thread wake-ups, and one more per row), and
//! a group commit is a few dozen statements; on the writer's thread a
//! whole group commit runs with no hop at all, and its batches' callers
//! are woken once each; a read is a few microseconds of SQLite's work with
//! no hop (BENCHMARKS.md, "What holds the throughput goals").
//!
//! A read on the caller's thread blocks it while SQLite steps the rows:
//! only small reads run there (a lookup by key, a count over an index,
//! the switches), never waiting for a connection (in WAL mode a reader
//! does not wait for the writer either). A read that may be long (a list
//! of runs or runbooks, an audit filter with no index, a 10,000-record
//! page, a run with thousands of targets: `reads.rs` passes `self.long()`)
//! costs one hop to the blocking pool and back, and the runtime's threads
//! keep serving.
//!
//! Every future here is ready when first polled: the writer's thread
//! drives them with a plain `block_on`, and waits only for its queue.

use std::ops::{Deref, DerefMut};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError, TryLockError};

use rusqlite::types::{FromSql, ToSql, Value, ValueRef};

use super::StoreError;

/// Statements kept prepared on the writer connection (the writes use
/// about 60 distinct statements).
const STATEMENT_CACHE: usize = 128;

/// The writer's connection.
pub(super) struct Conn(rusqlite::Connection);

impl std::fmt::Debug for Conn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Conn")
    }
}

impl Conn {
    /// Open the (existing, migrated) database at `path` for writing:
    /// `synchronous` as configured, foreign keys on, `busy_timeout_ms` to
    /// wait for another process's write lock. WAL mode is the database's
    /// own (set when it was created).
    pub(super) fn open(
        path: &std::path::Path,
        synchronous: &str,
        busy_timeout_ms: u64,
    ) -> Result<Conn, rusqlite::Error> {
        use rusqlite::OpenFlags;
        let conn = rusqlite::Connection::open_with_flags(
            path,
            OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )?;
        if conn.is_readonly(rusqlite::MAIN_DB)? {
            return Err(rusqlite::Error::SqliteFailure(
                rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_READONLY),
                Some("the database file is not writable by this user".into()),
            ));
        }
        conn.busy_timeout(std::time::Duration::from_millis(busy_timeout_ms))?;
        conn.execute_batch(&format!(
            "PRAGMA synchronous = {synchronous}; PRAGMA foreign_keys = ON;"
        ))?;
        conn.set_prepared_statement_cache_capacity(STATEMENT_CACHE);
        Ok(Conn(conn))
    }
}

/// Most read connections (`[store] read-connections`).
pub(super) const MAX_READ_CONNECTIONS: u32 = 64;

impl Conn {
    /// A read connection never keeps a transaction open (it would pin its
    /// snapshot: stale reads, and a WAL that can never be reset): end one
    /// a statement left open.
    fn end_any_transaction(&mut self) {
        if !self.0.is_autocommit() {
            tracing::warn!("a read left a transaction open; rolling it back");
            let _ = self.0.execute_batch("ROLLBACK");
        }
    }
}

/// The read connections: read-only, each behind its own lock; a read
/// takes the first that is free, and only a read on the blocking pool
/// ever waits for one.
pub(super) struct Readers {
    conns: Box<[Mutex<Conn>]>,
    next: AtomicUsize,
}

impl std::fmt::Debug for Readers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Readers({})", self.conns.len())
    }
}

/// Statements kept prepared on each read connection (the reads use about
/// 45 distinct statements).
const READ_STATEMENT_CACHE: usize = 64;

impl Readers {
    /// Open `count` (at least one) read-only connections to the (existing,
    /// migrated) database at `path`.
    pub(super) fn open(
        path: &std::path::Path,
        count: u32,
        busy_timeout_ms: u64,
    ) -> Result<Readers, rusqlite::Error> {
        use rusqlite::OpenFlags;
        let conns = (0..count.clamp(1, MAX_READ_CONNECTIONS))
            .map(|_| {
                let conn = rusqlite::Connection::open_with_flags(
                    path,
                    OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
                )?;
                conn.busy_timeout(std::time::Duration::from_millis(busy_timeout_ms))?;
                conn.execute_batch("PRAGMA query_only = ON;")?;
                conn.set_prepared_statement_cache_capacity(READ_STATEMENT_CACHE);
                Ok(Mutex::new(Conn(conn)))
            })
            .collect::<Result<Vec<_>, rusqlite::Error>>()?;
        Ok(Readers {
            conns: conns.into(),
            next: AtomicUsize::new(0),
        })
    }

    /// Run `f` on a connection that is free now, if one is (else `f`
    /// back). A panic in a read poisons no state (each statement is reset
    /// when it is dropped, and a read never opens a transaction), so a
    /// poisoned lock is taken back as it is.
    fn try_with<R, F: FnOnce(&mut Conn) -> R>(&self, f: F) -> Result<R, F> {
        let n = self.conns.len();
        let start = self.next.fetch_add(1, Ordering::Relaxed);
        for i in 0..n {
            let conn = match self.conns[(start + i) % n].try_lock() {
                Ok(conn) => conn,
                Err(TryLockError::Poisoned(p)) => p.into_inner(),
                Err(TryLockError::WouldBlock) => continue,
            };
            let mut conn = conn;
            let r = f(&mut conn);
            conn.end_any_transaction();
            return Ok(r);
        }
        Err(f)
    }

    /// Run `f` on a connection, waiting for one if none is free: only on
    /// a thread that may block (the blocking pool, or outside a runtime).
    fn with<R>(&self, f: impl FnOnce(&mut Conn) -> R) -> R {
        match self.try_with(f) {
            Ok(r) => r,
            Err(f) => {
                let at = self.next.fetch_add(1, Ordering::Relaxed) % self.conns.len();
                let mut conn = self.conns[at]
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner);
                let r = f(&mut conn);
                conn.end_any_transaction();
                r
            }
        }
    }

    /// Run `f` with `query`: at once on this thread if `inline` and a
    /// connection is free; otherwise on tokio's blocking pool (the query
    /// copied, to own its parameters), or here outside a runtime.
    async fn read<R: Send + 'static>(
        self: &Arc<Self>,
        query: Query<'_>,
        inline: bool,
        f: Read<R>,
    ) -> Result<R, sqlx::Error> {
        let query = if inline {
            match self.try_with(|c| f(&query, c)) {
                Ok(r) => return r,
                Err(_) => query,
            }
        } else {
            query
        };
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return self.with(|c| f(&query, c));
        };
        let query = query.into_owned()?;
        let readers = Arc::clone(self);
        runtime
            .spawn_blocking(move || readers.with(|c| f(&query, c)))
            .await
            .map_err(|e| {
                sqlx::Error::Io(std::io::Error::other(format!("a store read failed: {e}")))
            })?
    }
}

/// What a read does with its statement on a connection.
type Read<R> = for<'a, 'q> fn(&'a Query<'q>, &'a mut Conn) -> Result<R, sqlx::Error>;

/// Where a statement runs: the writer's connection (or its transaction),
/// at once; or the read connections: `&Arc<Readers>` on this thread when
/// one is free, [`Offload`] always on the blocking pool.
pub(super) trait Exec {
    async fn run<R: Send + 'static>(self, query: Query<'_>, f: Read<R>) -> Result<R, sqlx::Error>;
}

/// The read connections, for a read that may be long: always on tokio's
/// blocking pool.
#[derive(Debug, Clone, Copy)]
pub(super) struct Offload<'r>(pub(super) &'r Arc<Readers>);

impl Exec for &mut Conn {
    async fn run<R: Send + 'static>(self, query: Query<'_>, f: Read<R>) -> Result<R, sqlx::Error> {
        f(&query, self)
    }
}

impl Exec for &mut Tx<'_> {
    async fn run<R: Send + 'static>(self, query: Query<'_>, f: Read<R>) -> Result<R, sqlx::Error> {
        f(&query, &mut *self.conn)
    }
}

impl Exec for &Arc<Readers> {
    async fn run<R: Send + 'static>(self, query: Query<'_>, f: Read<R>) -> Result<R, sqlx::Error> {
        self.read(query, true, f).await
    }
}

impl Exec for Offload<'_> {
    async fn run<R: Send + 'static>(self, query: Query<'_>, f: Read<R>) -> Result<R, sqlx::Error> {
        self.0.read(query, false, f).await
    }
}

/// SQLite's refusal as the error the writes report (`StoreError::Sql`
/// names the operation): what SQLite said, and for a held write lock what
/// to do.
pub(super) fn sqlx_error(e: rusqlite::Error) -> sqlx::Error {
    let busy = e.sqlite_error_code() == Some(rusqlite::ErrorCode::DatabaseBusy);
    let hint = if busy {
        " (another process holds the database's write lock; [store] busy-timeout-ms is how long this one waits)"
    } else {
        ""
    };
    sqlx::Error::Io(std::io::Error::other(format!("sqlite: {e}{hint}")))
}

/// A statement with its parameters, as `sqlx::query` builds one.
pub(super) struct Query<'q> {
    sql: std::borrow::Cow<'q, str>,
    args: Vec<Box<dyn ToSql + Send + Sync + 'q>>,
}

/// What an executed statement changed.
#[derive(Debug)]
pub(super) struct Done(u64);

impl Done {
    pub(super) fn rows_affected(&self) -> u64 {
        self.0
    }
}

/// One row: its statement's column names and its columns as values.
#[derive(Debug)]
pub(super) struct Row {
    names: Arc<[Box<str>]>,
    values: Vec<Value>,
}

/// A column of [`Row::get`]: its position or its name.
pub(super) trait Index: std::fmt::Display + Copy {
    fn at(self, names: &[Box<str>]) -> Option<usize>;
}

impl Index for i32 {
    fn at(self, _: &[Box<str>]) -> Option<usize> {
        usize::try_from(self).ok()
    }
}

impl Index for usize {
    fn at(self, _: &[Box<str>]) -> Option<usize> {
        Some(self)
    }
}

impl Index for &str {
    fn at(self, names: &[Box<str>]) -> Option<usize> {
        names.iter().position(|n| **n == *self)
    }
}

impl Row {
    /// Column `i` as `T`.
    ///
    /// # Panics
    /// If there is no such column or it is not a `T` (as sqlx's `get`).
    #[allow(clippy::panic)]
    pub(super) fn get<T: FromSql, I: Index>(&self, i: I) -> T {
        match self.try_get(i) {
            Ok(v) => v,
            Err(e) => panic!("column {i}: {e}"),
        }
    }

    /// Column `i` as `T`, or why not (as sqlx's `try_get`).
    pub(super) fn try_get<T: FromSql, I: Index>(&self, i: I) -> Result<T, sqlx::Error> {
        let v = i
            .at(&self.names)
            .and_then(|at| self.values.get(at))
            .ok_or_else(|| sqlx::Error::ColumnNotFound(i.to_string()))?;
        T::column_result(ValueRef::from(v)).map_err(|e| sqlx::Error::Decode(Box::new(e)))
    }
}

/// `sqlx::query`.
pub(super) fn query(sql: &str) -> Query<'_> {
    Query {
        sql: sql.into(),
        args: Vec::new(),
    }
}

impl<'q> Query<'q> {
    pub(super) fn bind<T: ToSql + Send + Sync + 'q>(mut self, value: T) -> Self {
        self.args.push(Box::new(value));
        self
    }

    /// Run the statement to its end and say how many rows it changed.
    fn exec(&self, conn: &mut Conn) -> Result<Done, sqlx::Error> {
        let mut stmt = conn.0.prepare_cached(&self.sql).map_err(sqlx_error)?;
        let params: Vec<&dyn ToSql> = self.args.iter().map(|a| a.as_ref() as &dyn ToSql).collect();
        let mut rows = stmt.query(&params[..]).map_err(sqlx_error)?;
        while rows.next().map_err(sqlx_error)?.is_some() {}
        drop(rows);
        drop(stmt);
        Ok(Done(conn.0.changes()))
    }

    /// The statement's rows, `max` at most (the rest are not stepped).
    fn rows(&self, conn: &mut Conn, max: usize) -> Result<Vec<Row>, sqlx::Error> {
        let mut stmt = conn.0.prepare_cached(&self.sql).map_err(sqlx_error)?;
        let names: Arc<[Box<str>]> = stmt.column_names().into_iter().map(Box::from).collect();
        let params: Vec<&dyn ToSql> = self.args.iter().map(|a| a.as_ref() as &dyn ToSql).collect();
        let mut rows = stmt.query(&params[..]).map_err(sqlx_error)?;
        let mut out = Vec::new();
        while out.len() < max
            && let Some(row) = rows.next().map_err(sqlx_error)?
        {
            let values = (0..names.len())
                .map(|i| row.get::<_, Value>(i))
                .collect::<Result<Vec<_>, _>>()
                .map_err(sqlx_error)?;
            out.push(Row {
                names: Arc::clone(&names),
                values,
            });
        }
        Ok(out)
    }

    /// The statement's first row, if any.
    fn row(&self, conn: &mut Conn) -> Result<Option<Row>, sqlx::Error> {
        Ok(self.rows(conn, 1)?.pop())
    }

    /// This statement with copies of its parameters, to run elsewhere.
    fn into_owned(self) -> Result<Query<'static>, sqlx::Error> {
        use rusqlite::types::ToSqlOutput;
        let mut args: Vec<Box<dyn ToSql + Send + Sync>> = Vec::with_capacity(self.args.len());
        for arg in &self.args {
            let value = match arg.to_sql().map_err(sqlx_error)? {
                ToSqlOutput::Borrowed(v) => {
                    Value::try_from(v).map_err(|e| sqlx::Error::Decode(Box::new(e)))?
                }
                ToSqlOutput::Owned(v) => v,
                _ => {
                    return Err(sqlx::Error::Protocol(
                        "a read's parameter is of a kind that cannot be copied".into(),
                    ));
                }
            };
            args.push(Box::new(value));
        }
        Ok(Query {
            sql: self.sql.into_owned().into(),
            args,
        })
    }

    pub(super) async fn execute(self, on: impl Exec) -> Result<Done, sqlx::Error> {
        on.run(self, |q, c| q.exec(c)).await
    }

    pub(super) async fn fetch_optional(self, on: impl Exec) -> Result<Option<Row>, sqlx::Error> {
        on.run(self, |q, c| q.row(c)).await
    }

    pub(super) async fn fetch_one(self, on: impl Exec) -> Result<Row, sqlx::Error> {
        self.fetch_optional(on)
            .await?
            .ok_or(sqlx::Error::RowNotFound)
    }

    pub(super) async fn fetch_all(self, on: impl Exec) -> Result<Vec<Row>, sqlx::Error> {
        on.run(self, |q, c| q.rows(c, usize::MAX)).await
    }
}

/// `sqlx::query_scalar`: the first column of the first row.
pub(super) struct Scalar<'q, T>(Query<'q>, std::marker::PhantomData<T>);

pub(super) fn query_scalar<T: FromSql>(sql: &str) -> Scalar<'_, T> {
    Scalar(query(sql), std::marker::PhantomData)
}

impl<'q, T: FromSql> Scalar<'q, T> {
    pub(super) fn bind<V: ToSql + Send + Sync + 'q>(self, value: V) -> Self {
        Scalar(self.0.bind(value), self.1)
    }

    pub(super) async fn fetch_optional(self, on: impl Exec) -> Result<Option<T>, sqlx::Error> {
        self.0
            .fetch_optional(on)
            .await?
            .map(|r| r.try_get(0))
            .transpose()
    }

    pub(super) async fn fetch_one(self, on: impl Exec) -> Result<T, sqlx::Error> {
        self.0.fetch_one(on).await?.try_get(0)
    }

    pub(super) async fn fetch_all(self, on: impl Exec) -> Result<Vec<T>, sqlx::Error> {
        self.0
            .fetch_all(on)
            .await?
            .iter()
            .map(|r| r.try_get(0))
            .collect()
    }
}

/// A row as a tuple, for [`query_as`].
pub(super) trait FromRow: Sized {
    fn from_row(row: &Row) -> Result<Self, sqlx::Error>;
}

/// `FromRow` for the tuples of these types, column `i` to element `i`.
macro_rules! tuple_rows {
    ($(($($t:ident $i:tt),+))+) => {$(
        impl<$($t: FromSql),+> FromRow for ($($t,)+) {
            fn from_row(row: &Row) -> Result<Self, sqlx::Error> {
                Ok(($(row.try_get::<$t, usize>($i)?,)+))
            }
        }
    )+};
}

tuple_rows! {
    (A 0, B 1)
    (A 0, B 1, C 2)
    (A 0, B 1, C 2, D 3)
}

/// `sqlx::query_as`, for tuples.
pub(super) struct As<'q, T>(Query<'q>, std::marker::PhantomData<T>);

pub(super) fn query_as<T: FromRow>(sql: &str) -> As<'_, T> {
    As(query(sql), std::marker::PhantomData)
}

impl<'q, T: FromRow> As<'q, T> {
    pub(super) fn bind<V: ToSql + Send + Sync + 'q>(self, value: V) -> Self {
        As(self.0.bind(value), self.1)
    }

    pub(super) async fn fetch_optional(self, on: impl Exec) -> Result<Option<T>, sqlx::Error> {
        self.0
            .fetch_optional(on)
            .await?
            .map(|r| T::from_row(&r))
            .transpose()
    }

    pub(super) async fn fetch_one(self, on: impl Exec) -> Result<T, sqlx::Error> {
        T::from_row(&self.0.fetch_one(on).await?)
    }

    pub(super) async fn fetch_all(self, on: impl Exec) -> Result<Vec<T>, sqlx::Error> {
        self.0
            .fetch_all(on)
            .await?
            .iter()
            .map(T::from_row)
            .collect()
    }
}

/// A write transaction (`BEGIN IMMEDIATE`), rolled back unless committed.
pub(super) struct Tx<'c> {
    conn: &'c mut Conn,
    open: bool,
}

/// `BEGIN IMMEDIATE`: the database's write lock, held to COMMIT.
pub(super) async fn begin_write(conn: &mut Conn) -> Result<Tx<'_>, StoreError> {
    // A transaction left open by a failed rollback would refuse every
    // BEGIN from now on: end it first.
    if !conn.0.is_autocommit() {
        tracing::warn!("the store's writer found a transaction left open; rolling it back");
        let _ = conn.0.execute_batch("ROLLBACK");
    }
    conn.0
        .execute_batch("BEGIN IMMEDIATE")
        .map_err(|e| super::sql::sql("begin")(sqlx_error(e)))?;
    Ok(Tx { conn, open: true })
}

impl Tx<'_> {
    /// Commit; a failed commit is rolled back when this is dropped.
    pub(super) async fn commit(mut self) -> Result<(), sqlx::Error> {
        self.conn.0.execute_batch("COMMIT").map_err(sqlx_error)?;
        self.open = false;
        Ok(())
    }
}

impl Drop for Tx<'_> {
    fn drop(&mut self) {
        if self.open {
            let _ = self.conn.0.execute_batch("ROLLBACK");
        }
    }
}

impl Deref for Tx<'_> {
    type Target = Conn;
    fn deref(&self) -> &Conn {
        self.conn
    }
}

impl DerefMut for Tx<'_> {
    fn deref_mut(&mut self) -> &mut Conn {
        self.conn
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pragma(conn: &Conn, name: &str) -> String {
        conn.0
            .query_row(&format!("PRAGMA {name}"), [], |r| {
                r.get::<_, rusqlite::types::Value>(0)
            })
            .map(|v| match v {
                Value::Integer(i) => i.to_string(),
                Value::Text(t) => t,
                other => format!("{other:?}"),
            })
            .expect("pragma")
    }

    /// The writer connection's settings are the store's: durability as
    /// configured, foreign keys enforced, the lock wait, WAL; and the API
    /// answers as sqlx's did.
    #[tokio::test]
    async fn the_writer_connection_has_the_stores_settings_and_sqlxs_answers() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("db.sqlite");
        {
            let c = rusqlite::Connection::open(&path).expect("create");
            c.execute_batch(
                "PRAGMA journal_mode = WAL; CREATE TABLE p (id TEXT PRIMARY KEY); CREATE TABLE c (id INTEGER PRIMARY KEY, p TEXT REFERENCES p(id), flag INTEGER, note TEXT);",
            )
            .expect("schema");
        }
        for (setting, code) in [("FULL", "2"), ("NORMAL", "1")] {
            let conn = Conn::open(&path, setting, 1234).expect("open");
            assert_eq!(pragma(&conn, "synchronous"), code, "{setting}");
            assert_eq!(pragma(&conn, "foreign_keys"), "1");
            assert_eq!(pragma(&conn, "busy_timeout"), "1234");
            assert_eq!(pragma(&conn, "journal_mode"), "wal");
        }
        let mut conn = Conn::open(&path, "FULL", 1000).expect("open");
        let mut tx = begin_write(&mut conn).await.expect("begin");
        // A foreign key violation is refused.
        let e = query("INSERT INTO c (p) VALUES (?)")
            .bind("missing")
            .execute(&mut tx)
            .await
            .expect_err("foreign key");
        assert!(e.to_string().contains("FOREIGN KEY"), "{e}");
        query("INSERT INTO p (id) VALUES (?)")
            .bind("a")
            .execute(&mut tx)
            .await
            .expect("insert");
        let done = query("INSERT INTO c (p, flag, note) VALUES (?, ?, ?)")
            .bind("a")
            .bind(true)
            .bind(None::<String>)
            .execute(&mut tx)
            .await
            .expect("insert");
        assert_eq!(done.rows_affected(), 1);
        // A write that changes nothing says so.
        let none = query("UPDATE c SET note = 'x' WHERE p = ?")
            .bind("nobody")
            .execute(&mut tx)
            .await
            .expect("update");
        assert_eq!(none.rows_affected(), 0);
        let (flag, note): (i64, Option<String>) = query_as("SELECT flag, note FROM c")
            .fetch_one(&mut tx)
            .await
            .expect("row");
        assert_eq!((flag, note), (1, None));
        let id: Option<i64> = query_scalar("UPDATE c SET note = 'y' WHERE p = ? RETURNING id")
            .bind("a")
            .fetch_optional(&mut tx)
            .await
            .expect("returning");
        assert_eq!(id, Some(1));
        let missing: Option<String> = query_scalar("SELECT id FROM p WHERE id = ?")
            .bind("zzz")
            .fetch_optional(&mut tx)
            .await
            .expect("none");
        assert_eq!(missing, None);
        tx.commit().await.expect("commit");
        // Dropped without commit: rolled back.
        {
            let mut tx = begin_write(&mut conn).await.expect("begin");
            query("DELETE FROM c")
                .execute(&mut tx)
                .await
                .expect("delete");
        }
        let kept: i64 = query_scalar("SELECT COUNT(*) FROM c")
            .fetch_one(&mut conn)
            .await
            .expect("count");
        assert_eq!(kept, 1);
    }

    /// The read connections see what the writer committed, by column name
    /// as sqlx's rows do, in every shape the reads use; and they cannot
    /// write, whatever the statement.
    #[tokio::test]
    async fn read_connections_read_by_name_and_refuse_every_write() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("db.sqlite");
        {
            let c = rusqlite::Connection::open(&path).expect("create");
            c.execute_batch(
                "PRAGMA journal_mode = WAL; CREATE TABLE t (id INTEGER PRIMARY KEY, name TEXT, flag INTEGER, note TEXT);
                 INSERT INTO t (name, flag, note) VALUES ('a', 1, NULL), ('b', 0, 'x'), ('c', 1, 'y');",
            )
            .expect("schema");
        }
        let readers = Arc::new(Readers::open(&path, 2, 1000).expect("open readers"));
        let rows = query("SELECT * FROM t WHERE flag = ? ORDER BY id")
            .bind(true)
            .fetch_all(&readers)
            .await
            .expect("rows");
        let names: Vec<String> = rows.iter().map(|r| r.get("name")).collect();
        assert_eq!(names, ["a", "c"]);
        let notes: Vec<Option<String>> = rows.iter().map(|r| r.get("note")).collect();
        assert_eq!(notes, [None, Some("y".to_string())]);
        let e = rows[0]
            .try_get::<String, _>("nope")
            .expect_err("no such column");
        assert!(e.to_string().contains("nope"), "{e}");
        let e = rows[0]
            .try_get::<i64, _>("name")
            .expect_err("text is not a number");
        assert!(matches!(e, sqlx::Error::Decode(_)), "{e}");
        let count: i64 = query_scalar("SELECT COUNT(*) FROM t")
            .fetch_one(&readers)
            .await
            .expect("count");
        assert_eq!(count, 3);
        let all: Vec<String> = query_scalar("SELECT name FROM t ORDER BY id DESC")
            .fetch_all(&readers)
            .await
            .expect("names");
        assert_eq!(all, ["c", "b", "a"]);
        let triples: Vec<(i64, String, Option<String>)> =
            query_as("SELECT id, name, note FROM t ORDER BY id")
                .fetch_all(&readers)
                .await
                .expect("tuples");
        assert_eq!(triples[1], (2, "b".to_string(), Some("x".to_string())));
        let none = query("SELECT * FROM t WHERE id = ?")
            .bind(99)
            .fetch_optional(&readers)
            .await
            .expect("none");
        assert!(none.is_none());
        assert!(matches!(
            query("SELECT * FROM t WHERE id = ?")
                .bind(99)
                .fetch_one(&readers)
                .await,
            Err(sqlx::Error::RowNotFound)
        ));
        // What the writer commits, a reader sees next.
        let mut writer = Conn::open(&path, "FULL", 1000).expect("writer");
        let tx = begin_write(&mut writer).await.expect("begin");
        let mut tx = tx;
        query("INSERT INTO t (name, flag) VALUES ('d', 0)")
            .execute(&mut tx)
            .await
            .expect("insert");
        tx.commit().await.expect("commit");
        for _ in 0..4 {
            let n: i64 = query_scalar("SELECT COUNT(*) FROM t")
                .fetch_one(&readers)
                .await
                .expect("count");
            assert_eq!(n, 4, "every read connection sees the commit");
        }
        for write in [
            "INSERT INTO t (name) VALUES ('evil')",
            "UPDATE t SET name = 'evil'",
            "DELETE FROM t",
            "DROP TABLE t",
            "CREATE TABLE u (x)",
        ] {
            for _ in 0..2 {
                let e = query(write).execute(&readers).await.expect_err(write);
                assert!(
                    e.to_string().contains("readonly")
                        || e.to_string().contains("read-only")
                        || e.to_string().contains("query_only"),
                    "{write}: {e}"
                );
            }
        }
        let n: i64 = query_scalar("SELECT COUNT(*) FROM t")
            .fetch_one(&readers)
            .await
            .expect("count");
        assert_eq!(n, 4, "nothing was written through a read connection");
        let _ = query("PRAGMA journal_mode = DELETE")
            .execute(&readers)
            .await;
        assert_eq!(
            pragma(&writer, "journal_mode"),
            "wal",
            "nor its journal mode changed"
        );
        // A transaction a statement opens on a read connection is ended
        // at once: it cannot pin a snapshot, and later reads see later
        // commits.
        let one = Arc::new(Readers::open(&path, 1, 1000).expect("open reader"));
        query("BEGIN")
            .execute(&one)
            .await
            .expect("BEGIN writes nothing");
        let before: i64 = query_scalar("SELECT COUNT(*) FROM t")
            .fetch_one(&one)
            .await
            .expect("count");
        let mut tx = begin_write(&mut writer).await.expect("begin");
        query("INSERT INTO t (name, flag) VALUES ('e', 0)")
            .execute(&mut tx)
            .await
            .expect("insert");
        tx.commit().await.expect("commit");
        let after: i64 = query_scalar("SELECT COUNT(*) FROM t")
            .fetch_one(&one)
            .await
            .expect("count");
        assert_eq!((before, after), (4, 5), "no snapshot is pinned");
    }

    /// A read that finds every connection taken, or one that may be long,
    /// waits on the blocking pool, not on the runtime's thread: on a
    /// single-threaded runtime, a timer keeps firing while the read waits
    /// for a connection another thread holds. The long read runs with
    /// borrowed parameters copied, and reads what an inline one reads.
    #[tokio::test(flavor = "current_thread")]
    async fn a_read_that_must_wait_never_holds_the_runtime_thread() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("db.sqlite");
        {
            let c = rusqlite::Connection::open(&path).expect("create");
            c.execute_batch(
                "PRAGMA journal_mode = WAL; CREATE TABLE t (id INTEGER PRIMARY KEY, name TEXT);
                 INSERT INTO t (name) VALUES ('a'), ('b');",
            )
            .expect("schema");
        }
        let readers = Arc::new(Readers::open(&path, 2, 1000).expect("open readers"));
        let (held, release) = (std::sync::mpsc::channel(), std::sync::mpsc::channel::<()>());
        let holder = {
            let readers = Arc::clone(&readers);
            let (held, release) = (held.0, release.1);
            std::thread::spawn(move || {
                let guards: Vec<_> = readers
                    .conns
                    .iter()
                    .map(|c| c.lock().expect("lock"))
                    .collect();
                held.send(()).expect("held");
                // Released by the runtime's timer, or (were the runtime's
                // thread stuck in the read) after a while, failing below.
                let by_timer = release
                    .recv_timeout(std::time::Duration::from_secs(10))
                    .is_ok();
                drop(guards);
                by_timer
            })
        };
        held.1.recv().expect("every connection held");
        let name = String::from("b");
        let read = query("SELECT name FROM t WHERE name = ?")
            .bind(name.as_str())
            .fetch_optional(&readers);
        let ticker = async {
            for _ in 0..3 {
                tokio::time::sleep(std::time::Duration::from_millis(5)).await;
            }
            let _ = release.0.send(());
        };
        let (row, ()) = tokio::join!(read, ticker);
        let row = row.expect("read").expect("row");
        assert_eq!(row.get::<String, _>("name"), "b");
        assert!(
            holder.join().expect("holder"),
            "the runtime's timer ran while the read waited for a connection"
        );
        let long: Vec<String> = query_scalar("SELECT name FROM t WHERE name >= ? ORDER BY id")
            .bind(name.as_str())
            .fetch_all(Offload(&readers))
            .await
            .expect("long read");
        assert_eq!(long, ["b"]);
    }
}
