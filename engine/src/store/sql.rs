//! What the SQL stores share: helpers, and the store itself as a macro
//! instantiated once per database (`backend!` in `postgres.rs`; its three
//! parts one by one in `sqlite.rs`), so both run the same statements and
//! the same logic. The macro is three: the group-commit writer
//! (`writer.rs`, where the audit chain's invariant lives), the writes
//! (`writes.rs`) and the reads (`reads.rs`). All three call `db::query`
//! and friends: sqlx's on PostgreSQL, `direct.rs`'s on SQLite (the writer
//! thread's own connection; the read connections). A read that may be
//! long runs on `self.long()` (SQLite: tokio's blocking pool; PostgreSQL:
//! the pool), a small one on `&self.reads`.
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

/// `audit` with `?1` run, `?2` actor kind, `?3` actor id, `?4` action,
/// `?5` since and `?6` limit, each filter optional. `(? IS NULL OR col = ?)`
/// alone uses no index, so a filter by run or by actor leads with its
/// equality: it walks `audit_by_run` or `audit_by_actor`, not the whole log.
macro_rules! audit_filter {
    ($lead:literal) => {
        concat!(
            "SELECT * FROM (SELECT * FROM audit_events WHERE ",
            $lead,
            " (?1 IS NULL OR run_id = ?1) AND (?2 IS NULL OR actor_kind = ?2)
               AND (?3 IS NULL OR actor_id = ?3) AND (?4 IS NULL OR action = ?4)
               AND (?5 IS NULL OR time >= ?5)
             ORDER BY seq DESC LIMIT ?6) AS page ORDER BY seq"
        )
    };
}

/// The `audit` statement for a filter with (or without) a run and an actor.
pub(super) fn audit_filter(run: bool, actor: bool) -> &'static str {
    match (run, actor) {
        (true, _) => audit_filter!("run_id = ?1 AND"),
        (false, true) => audit_filter!("actor_kind = ?2 AND actor_id = ?3 AND"),
        (false, false) => audit_filter!(""),
    }
}

/// Records of a page that `AUDIT_PAGE` returned as one JSON array of
/// column arrays, in seq order.
pub(super) fn parse_audit_page(text: &str) -> Result<Vec<crate::audit::AuditRecord>, StoreError> {
    let corrupt = |e: serde_json::Error| StoreError::Corrupt {
        what: "audit page",
        reason: e.to_string(),
    };
    let mut records = crate::audit::page::rows(text)
        .map_err(corrupt)?
        .into_iter()
        .map(crate::audit::page::parse_row)
        .collect::<Result<Vec<_>, _>>()
        .map_err(corrupt)?;
    // Aggregates promise no order; already sorted, this is one pass.
    records.sort_by_key(|r| r.seq);
    Ok(records)
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
        super::writer::writer!($conn, $row, $store);
        super::writes::writes!($conn, $row, $store);
        super::reads::reads!($conn, $row, $store);
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
