//! The SQLite store's writer connection, owned by the writer's own thread
//! through SQLite's API directly (`rusqlite`), with the slice of sqlx's
//! query API that the writer and the writes (`writer.rs`, `writes.rs`) are
//! written in, so both backends still run the same statements and logic.
//!
//! Why: through sqlx every statement is a round trip to its connection's
//! worker thread and back (two thread wake-ups), and a group commit is a
//! few dozen statements; on this thread a whole group commit runs with no
//! hop at all, and its batches' callers are woken once each
//! (BENCHMARKS.md, "What holds the throughput goals").
//!
//! Every future here is ready when first polled: the writer's thread
//! drives them with a plain `block_on`, and waits only for its queue.

use std::ops::{Deref, DerefMut};

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
        conn.busy_timeout(std::time::Duration::from_millis(busy_timeout_ms))?;
        conn.execute_batch(&format!(
            "PRAGMA synchronous = {synchronous}; PRAGMA foreign_keys = ON;"
        ))?;
        conn.set_prepared_statement_cache_capacity(STATEMENT_CACHE);
        Ok(Conn(conn))
    }
}

fn err(e: rusqlite::Error) -> sqlx::Error {
    sqlx::Error::Protocol(format!("sqlite: {e}"))
}

/// A statement with its parameters, as `sqlx::query` builds one.
pub(super) struct Query<'q> {
    sql: &'q str,
    args: Vec<Box<dyn ToSql + 'q>>,
}

/// What an executed statement changed.
#[derive(Debug)]
pub(super) struct Done(u64);

impl Done {
    pub(super) fn rows_affected(&self) -> u64 {
        self.0
    }
}

/// One row, its columns as values.
#[derive(Debug)]
pub(super) struct Row(Vec<Value>);

/// A column index of [`Row::get`].
pub(super) trait Index {
    fn at(self) -> usize;
}

impl Index for i32 {
    fn at(self) -> usize {
        usize::try_from(self).unwrap_or(usize::MAX)
    }
}

impl Index for usize {
    fn at(self) -> usize {
        self
    }
}

impl Row {
    /// Column `i` as `T`.
    ///
    /// # Panics
    /// If there is no such column or it is not a `T` (as sqlx's `get`).
    #[allow(clippy::panic)]
    pub(super) fn get<T: FromSql, I: Index>(&self, i: I) -> T {
        let i = i.at();
        match self.0.get(i).map(|v| T::column_result(ValueRef::from(v))) {
            Some(Ok(v)) => v,
            Some(Err(e)) => panic!("column {i}: {e}"),
            None => panic!("no column {i}"),
        }
    }

    fn first<T: FromSql>(&self) -> Result<T, sqlx::Error> {
        let v = self
            .0
            .first()
            .ok_or(sqlx::Error::ColumnNotFound("0".into()))?;
        T::column_result(ValueRef::from(v)).map_err(|e| sqlx::Error::Decode(Box::new(e)))
    }
}

/// `sqlx::query`.
pub(super) fn query(sql: &str) -> Query<'_> {
    Query {
        sql,
        args: Vec::new(),
    }
}

impl<'q> Query<'q> {
    pub(super) fn bind<T: ToSql + 'q>(mut self, value: T) -> Self {
        self.args.push(Box::new(value));
        self
    }

    /// Run the statement to its end and say how many rows it changed.
    fn run(&self, conn: &mut Conn) -> Result<Done, sqlx::Error> {
        let mut stmt = conn.0.prepare_cached(self.sql).map_err(err)?;
        let params: Vec<&dyn ToSql> = self.args.iter().map(|a| a.as_ref()).collect();
        let mut rows = stmt.query(&params[..]).map_err(err)?;
        while rows.next().map_err(err)?.is_some() {}
        drop(rows);
        drop(stmt);
        Ok(Done(conn.0.changes()))
    }

    /// The statement's first row, if any.
    fn row(&self, conn: &mut Conn) -> Result<Option<Row>, sqlx::Error> {
        let mut stmt = conn.0.prepare_cached(self.sql).map_err(err)?;
        let params: Vec<&dyn ToSql> = self.args.iter().map(|a| a.as_ref()).collect();
        let columns = stmt.column_count();
        let mut rows = stmt.query(&params[..]).map_err(err)?;
        let Some(row) = rows.next().map_err(err)? else {
            return Ok(None);
        };
        let values = (0..columns)
            .map(|i| row.get::<_, Value>(i))
            .collect::<Result<Vec<_>, _>>()
            .map_err(err)?;
        Ok(Some(Row(values)))
    }

    pub(super) async fn execute(self, conn: &mut Conn) -> Result<Done, sqlx::Error> {
        self.run(conn)
    }

    pub(super) async fn fetch_optional(self, conn: &mut Conn) -> Result<Option<Row>, sqlx::Error> {
        self.row(conn)
    }
}

/// `sqlx::query_scalar`: the first column of the first row.
pub(super) struct Scalar<'q, T>(Query<'q>, std::marker::PhantomData<T>);

pub(super) fn query_scalar<T: FromSql>(sql: &str) -> Scalar<'_, T> {
    Scalar(query(sql), std::marker::PhantomData)
}

impl<'q, T: FromSql> Scalar<'q, T> {
    pub(super) fn bind<V: ToSql + 'q>(self, value: V) -> Self {
        Scalar(self.0.bind(value), self.1)
    }

    pub(super) async fn fetch_optional(self, conn: &mut Conn) -> Result<Option<T>, sqlx::Error> {
        self.0.row(conn)?.map(|r| r.first()).transpose()
    }

    pub(super) async fn fetch_one(self, conn: &mut Conn) -> Result<T, sqlx::Error> {
        self.0.row(conn)?.ok_or(sqlx::Error::RowNotFound)?.first()
    }
}

/// A row as a tuple, for [`query_as`].
pub(super) trait FromRow: Sized {
    fn from_row(row: &Row) -> Result<Self, sqlx::Error>;
}

fn column<T: FromSql>(row: &Row, i: usize) -> Result<T, sqlx::Error> {
    let v = row
        .0
        .get(i)
        .ok_or_else(|| sqlx::Error::ColumnNotFound(i.to_string()))?;
    T::column_result(ValueRef::from(v)).map_err(|e| sqlx::Error::Decode(Box::new(e)))
}

impl<A: FromSql, B: FromSql> FromRow for (A, B) {
    fn from_row(row: &Row) -> Result<Self, sqlx::Error> {
        Ok((column(row, 0)?, column(row, 1)?))
    }
}

/// `sqlx::query_as`, for tuples.
pub(super) struct As<'q, T>(Query<'q>, std::marker::PhantomData<T>);

pub(super) fn query_as<T: FromRow>(sql: &str) -> As<'_, T> {
    As(query(sql), std::marker::PhantomData)
}

impl<'q, T: FromRow> As<'q, T> {
    pub(super) fn bind<V: ToSql + 'q>(self, value: V) -> Self {
        As(self.0.bind(value), self.1)
    }

    pub(super) async fn fetch_optional(self, conn: &mut Conn) -> Result<Option<T>, sqlx::Error> {
        self.0.row(conn)?.map(|r| T::from_row(&r)).transpose()
    }

    pub(super) async fn fetch_one(self, conn: &mut Conn) -> Result<T, sqlx::Error> {
        T::from_row(&self.0.row(conn)?.ok_or(sqlx::Error::RowNotFound)?)
    }
}

/// A write transaction (`BEGIN IMMEDIATE`), rolled back unless committed.
pub(super) struct Tx<'c> {
    conn: &'c mut Conn,
    open: bool,
}

/// `BEGIN IMMEDIATE`: the database's write lock, held to COMMIT.
pub(super) async fn begin_write(conn: &mut Conn) -> Result<Tx<'_>, StoreError> {
    conn.0
        .execute_batch("BEGIN IMMEDIATE")
        .map_err(|e| super::sql::sql("begin")(err(e)))?;
    Ok(Tx { conn, open: true })
}

impl Tx<'_> {
    /// Commit; a failed commit is rolled back when this is dropped.
    pub(super) async fn commit(mut self) -> Result<(), sqlx::Error> {
        self.conn.0.execute_batch("COMMIT").map_err(err)?;
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
