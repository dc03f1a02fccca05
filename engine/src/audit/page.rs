//! A page of records as the store hands it over: one JSON array of rows,
//! each row the array `[seq, time, actor_kind, actor_id, action, subject,
//! outcome, details, run_id, prev_hash, hash]` (`AUDIT_PAGE`). Used where
//! records are read a page at a time (PostgreSQL's `audit verify`, proofs,
//! export); SQLite's `audit verify` reads the file directly
//! (`store/sqlite.rs::scan_audit`).

use super::AuditRecord;

/// Parse one row into a record (a struct deserialises from an array of its
/// fields in order, and the row's columns are in `AuditRecord`'s order).
pub fn parse_row(row: &str) -> Result<AuditRecord, serde_json::Error> {
    serde_json::from_str(row)
}

/// The seq a row starts with.
pub fn seq_of(row: &str) -> Option<i64> {
    let rest = row.strip_prefix('[')?;
    let end = rest.find(|c: char| !c.is_ascii_digit())?;
    rest[..end].parse().ok()
}

/// The rows of a page (borrowed from its text).
pub fn rows(page: &str) -> Result<Vec<&str>, serde_json::Error> {
    let raw: Vec<&serde_json::value::RawValue> = serde_json::from_str(page)?;
    Ok(raw.into_iter().map(|r| r.get()).collect())
}
