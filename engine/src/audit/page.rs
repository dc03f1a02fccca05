//! Verifying a page of records as the store hands it over: one JSON array
//! of rows, each row the array `[seq, time, actor_kind, actor_id, action,
//! subject, outcome, details, run_id, prev_hash, hash]`.
//!
//! The canonical form a record's hash covers is that row without its last
//! two elements. When a row's only escapes are `\"` and `\\` and it holds
//! no control byte, the database's JSON text of those nine fields is byte
//! for byte what `serde_json` writes (both escape exactly `"`, `\` and
//! control characters), so the row is hashed as it is, without parsing it
//! into strings; the rows of a page are hashed on two threads. Any other
//! row, and any row that does not verify this way, goes through
//! [`Verifier::push`], which parses it and names the problem: the fast path
//! can only accept what the exact path would.

use sha2::{Digest, Sha256};

use super::tree::{self, Hash};
use super::{AuditRecord, Verifier};

/// `,"<64 hex>","<64 hex>"]`: the row's prev_hash and hash, and its end.
const TAIL: usize = 1 + 66 + 1 + 66 + 1;

/// What a row says about itself, when it can be checked without parsing.
struct Quick<'a> {
    seq: i64,
    prev: &'a str,
    hash: &'a str,
    /// Its hash matches its contents.
    intact: bool,
    leaf: Option<Hash>,
}

fn quick(row: &str, leaves: bool) -> Option<Quick<'_>> {
    let b = row.as_bytes();
    let n = b.len();
    if n < TAIL + 3 || b[0] != b'[' {
        return None;
    }
    let mut i = 0;
    while i < n {
        match b[i] {
            0..=0x1f => return None,
            b'\\' => match b.get(i + 1) {
                Some(b'"' | b'\\') => i += 2,
                _ => return None,
            },
            _ => i += 1,
        }
    }
    let tail = &b[n - TAIL..];
    if tail[0] != b','
        || tail[1] != b'"'
        || tail[66] != b'"'
        || tail[67] != b','
        || tail[68] != b'"'
        || tail[133] != b'"'
        || tail[134] != b']'
    {
        return None;
    }
    let prev = row.get(n - TAIL + 2..n - TAIL + 66)?;
    let hash = row.get(n - TAIL + 69..n - 2)?;
    let digits = b[1..].iter().take_while(|c| c.is_ascii_digit()).count();
    if digits == 0 || b.get(1 + digits) != Some(&b',') {
        return None;
    }
    let seq: i64 = row[1..1 + digits].parse().ok()?;
    let mut h = Sha256::new();
    h.update(prev.as_bytes());
    h.update(&b[..n - TAIL]);
    h.update(b"]");
    let mut hex = [0u8; 64];
    let _ = hex::encode_to_slice(h.finalize(), &mut hex);
    let intact = hex == hash.as_bytes();
    let leaf = (intact && leaves)
        .then(|| tree::record_leaf(hash))
        .flatten();
    Some(Quick {
        seq,
        prev,
        hash,
        intact,
        leaf,
    })
}

/// The columns of a row, in order.
type Columns = (
    i64,
    String,
    String,
    String,
    String,
    String,
    String,
    String,
    Option<String>,
    String,
    String,
);

/// Parse one row into a record.
pub fn parse_row(row: &str) -> Result<AuditRecord, serde_json::Error> {
    let (
        seq,
        time,
        actor_kind,
        actor_id,
        action,
        subject,
        outcome,
        details,
        run_id,
        prev_hash,
        hash,
    ): Columns = serde_json::from_str(row)?;
    Ok(AuditRecord {
        seq,
        time,
        actor_kind,
        actor_id,
        action,
        subject,
        outcome,
        details,
        run_id,
        prev_hash,
        hash,
    })
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

impl Verifier {
    /// Check the rows of one page, in order; false once a bad record was
    /// found. A row that cannot be parsed is an error.
    pub fn push_rows(&mut self, rows: &[&str]) -> Result<bool, serde_json::Error> {
        let leaves = self.tree.is_some();
        let half = rows.len().div_ceil(2);
        let (first, second) = rows.split_at(half);
        let (a, b) = std::thread::scope(|s| {
            let other = s.spawn(|| second.iter().map(|r| quick(r, leaves)).collect::<Vec<_>>());
            let mine: Vec<_> = first.iter().map(|r| quick(r, leaves)).collect();
            // A panic on the other thread leaves its rows to the exact path.
            let theirs = other
                .join()
                .unwrap_or_else(|_| second.iter().map(|_| None).collect());
            (mine, theirs)
        });
        let checked = a.into_iter().chain(b);
        for (row, q) in rows.iter().zip(checked) {
            if self.bad.is_some() {
                return Ok(false);
            }
            match q {
                Some(q)
                    if q.intact
                        && q.seq == self.expected_seq
                        && q.prev == self.prev_hash
                        && (!leaves || q.leaf.is_some()) =>
                {
                    self.count += 1;
                    self.accept(q.hash, q.leaf);
                }
                _ => {
                    if !self.push(&parse_row(row)?) {
                        return Ok(false);
                    }
                }
            }
        }
        Ok(self.bad.is_none())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::{Actor, GENESIS_HASH, NewEvent, verify};

    fn chain(texts: &[&str]) -> Vec<AuditRecord> {
        let mut prev = GENESIS_HASH.to_string();
        texts
            .iter()
            .enumerate()
            .map(|(i, t)| {
                let r = AuditRecord::seal(
                    &NewEvent::custom(&Actor::user(*t), "test.page", format!("{t}:{i}"))
                        .details(serde_json::json!({ "t": t })),
                    i as i64 + 1,
                    &prev,
                );
                prev = r.hash.clone();
                r
            })
            .collect()
    }

    fn row(r: &AuditRecord) -> String {
        serde_json::to_string(&(
            r.seq,
            &r.time,
            &r.actor_kind,
            &r.actor_id,
            &r.action,
            &r.subject,
            &r.outcome,
            &r.details,
            &r.run_id,
            &r.prev_hash,
            &r.hash,
        ))
        .unwrap_or_default()
    }

    /// The fast path agrees with the exact one on every record, awkward or
    /// tampered, and the rows it cannot take go the exact way.
    #[test]
    fn rows_verify_exactly_as_records_do() {
        let texts = [
            "plain",
            "quote \" backslash \\",
            "control \u{1} tab \t",
            "unicode é 日本 🔥 \u{7f}",
        ];
        let records = chain(&texts.repeat(5));
        let fast_eligible = records
            .iter()
            .filter(|r| quick(&row(r), false).is_some_and(|q| q.intact))
            .count();
        assert!(fast_eligible >= 10, "the fast path takes the plain rows");
        assert!(
            fast_eligible < records.len(),
            "and not the control characters"
        );
        type Tamper = fn(&mut Vec<AuditRecord>);
        let cases: Vec<(&str, Tamper)> = vec![
            ("intact", |_| {}),
            ("modified", |c| c[6].outcome = "denied".into()),
            ("modified awkward", |c| c[2].details = "{}".into()),
            ("deleted", |c| drop(c.remove(9))),
            ("relinked", |c| c[11].prev_hash = c[3].hash.clone()),
            ("hash replaced", |c| c[13].hash = c[12].hash.clone()),
        ];
        for (what, tamper) in cases {
            let mut c = records.clone();
            tamper(&mut c);
            let rows: Vec<String> = c.iter().map(row).collect();
            let rows: Vec<&str> = rows.iter().map(String::as_str).collect();
            let mut v = Verifier::with_roots_at([4, 20].into());
            let _ = v.push_rows(&rows).expect("rows parse");
            let mut exact = Verifier::with_roots_at([4, 20].into());
            for r in &c {
                if !exact.push(r) {
                    break;
                }
            }
            assert_eq!(v.roots(), exact.roots(), "{what}");
            assert_eq!(v.finish(), exact.finish(), "{what}");
            assert_eq!(
                verify(c.clone()).first_bad.is_some(),
                what != "intact",
                "{what}"
            );
        }
    }
}
