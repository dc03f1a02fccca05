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
        let mut stmt = conn.0.prepare_cached(self.sql).map_err(sqlx_error)?;
        let params: Vec<&dyn ToSql> = self.args.iter().map(|a| a.as_ref()).collect();
        let mut rows = stmt.query(&params[..]).map_err(sqlx_error)?;
        while rows.next().map_err(sqlx_error)?.is_some() {}
        drop(rows);
        drop(stmt);
        Ok(Done(conn.0.changes()))
    }

    /// The statement's first row, if any.
    fn row(&self, conn: &mut Conn) -> Result<Option<Row>, sqlx::Error> {
        let mut stmt = conn.0.prepare_cached(self.sql).map_err(sqlx_error)?;
        let params: Vec<&dyn ToSql> = self.args.iter().map(|a| a.as_ref()).collect();
        let columns = stmt.column_count();
        let mut rows = stmt.query(&params[..]).map_err(sqlx_error)?;
        let Some(row) = rows.next().map_err(sqlx_error)? else {
            return Ok(None);
        };
        let values = (0..columns)
            .map(|i| row.get::<_, Value>(i))
            .collect::<Result<Vec<_>, _>>()
            .map_err(sqlx_error)?;
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
}
