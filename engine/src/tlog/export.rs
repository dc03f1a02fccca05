//! `firedrill audit export` and the syslog export: every record as one JSON
//! line in a stable schema (`firedrill-audit/1`, documented in
//! docs/audit.md) carrying the NIST SP 800-53 AU-3 contents: what happened
//! (`action`), when (`time`), where (`log`, `origin.node`), the source
//! (`origin`), the outcome, and who (`actor`, with the accountable person).

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Serialize;

use crate::audit::AuditRecord;
use crate::store::Store;

use super::TlogError;
use super::syslog;

/// The schema name every line carries; a change that is not an addition
/// gets a new number.
pub const SCHEMA: &str = "firedrill-audit/1";
/// Records read per page.
const PAGE: i64 = 1_000;
/// How often `--follow` and the syslog export look for new records.
pub const FOLLOW_POLL: Duration = Duration::from_millis(500);

#[derive(Debug, Serialize)]
struct Who<'a> {
    kind: &'a str,
    id: &'a str,
    /// The person accountable (a token's owner, the OS user).
    person: Option<String>,
}

#[derive(Debug, Serialize)]
struct Origin {
    /// How the actor was established: `os-user` (the CLI on the host),
    /// `token` (the API or console), `signature` (a signed webhook),
    /// `engine` (the scheduler, a node), `run` (on behalf of a run's
    /// starter).
    via: Option<String>,
    /// The node that wrote the record, when it says.
    node: Option<String>,
}

/// One exported record.
#[derive(Debug, Serialize)]
pub struct Line<'a> {
    schema: &'static str,
    /// The log's origin (`[audit] origin`).
    log: &'a str,
    seq: i64,
    time: &'a str,
    actor: Who<'a>,
    action: &'a str,
    /// What was acted on: `run:ID`, `runbook:NAME@V`, ...
    target: &'a str,
    outcome: &'a str,
    origin: Origin,
    run_id: Option<&'a str>,
    details: serde_json::Value,
    /// The record's chain hash (its leaf in the Merkle tree).
    hash: &'a str,
}

/// The export form of `r`.
pub fn line<'a>(r: &'a AuditRecord, log: &'a str) -> Line<'a> {
    let details: serde_json::Value =
        serde_json::from_str(&r.details).unwrap_or(serde_json::Value::String(r.details.clone()));
    let auth = details.get("actor_auth");
    let text = |v: Option<&serde_json::Value>| v.and_then(|v| v.as_str()).map(str::to_string);
    Line {
        schema: SCHEMA,
        log,
        seq: r.seq,
        time: &r.time,
        actor: Who {
            kind: &r.actor_kind,
            id: &r.actor_id,
            person: text(auth.and_then(|a| a.get("person"))),
        },
        action: &r.action,
        target: &r.subject,
        outcome: &r.outcome,
        origin: Origin {
            via: text(auth.and_then(|a| a.get("via"))),
            node: text(details.get("node")),
        },
        run_id: r.run_id.as_deref(),
        hash: &r.hash,
        details,
    }
}

/// Write records after `after` as JSON lines to `out`; with `follow`, keep
/// waiting for new ones until `out` fails (the reader went away).
pub async fn write(
    store: &dyn Store,
    log: &str,
    mut after: i64,
    follow: bool,
    out: &mut dyn std::io::Write,
) -> Result<u64, TlogError> {
    let mut n = 0u64;
    loop {
        let page = store.audit_page(after, PAGE).await?;
        for r in &page {
            let mut text = serde_json::to_string(&line(r, log)).unwrap_or_default();
            text.push('\n');
            out.write_all(text.as_bytes())
                .map_err(|source| TlogError::Io {
                    what: "write the export",
                    path: "stdout".into(),
                    source,
                })?;
            after = r.seq;
            n += 1;
        }
        let _ = out.flush();
        if page.len() as i64 == PAGE {
            continue;
        }
        if !follow {
            return Ok(n);
        }
        tokio::time::sleep(FOLLOW_POLL).await;
    }
}

fn read_cursor(path: &Path) -> i64 {
    std::fs::read_to_string(path)
        .ok()
        .and_then(|t| t.trim().parse().ok())
        .unwrap_or(0)
}

fn write_cursor(path: &Path, seq: i64) -> std::io::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, format!("{seq}\n"))?;
    std::fs::File::open(&tmp)?.sync_all()?;
    std::fs::rename(&tmp, path)
}

/// Stream every record to syslog, from the record after the one in
/// `cursor` (kept on disk, so a restart neither repeats nor skips more than
/// the record in flight), forever; failures are retried with backoff.
pub async fn syslog(
    store: std::sync::Arc<dyn Store>,
    log: String,
    address: syslog::Address,
    cursor: PathBuf,
) {
    let mut sender = syslog::Sender::new(address);
    let mut after = read_cursor(&cursor);
    let mut saved = after;
    let mut backoff = Duration::from_secs(1);
    loop {
        let page = match store.audit_page(after, PAGE).await {
            Ok(p) => p,
            Err(e) => {
                tracing::warn!(error = %e, "syslog export: cannot read the audit log; retrying");
                tokio::time::sleep(backoff).await;
                continue;
            }
        };
        let mut failed = false;
        for r in &page {
            let severity = if matches!(r.outcome.as_str(), "ok" | "planned" | "done") {
                syslog::SEVERITY_INFO
            } else {
                syslog::SEVERITY_WARNING
            };
            let json = serde_json::to_string(&line(r, &log)).unwrap_or_default();
            let mut msg = syslog::format(severity, "audit", &r.time, &json);
            if msg.len() > syslog::MAX_MESSAGE_BYTES {
                // Too large for one message: a stub that says where the
                // whole record is, rather than a stalled export.
                let stub = serde_json::json!({
                    "schema": SCHEMA, "log": log, "seq": r.seq, "time": r.time,
                    "action": r.action, "target": r.subject, "outcome": r.outcome,
                    "hash": r.hash, "truncated": true,
                });
                msg = syslog::format(severity, "audit", &r.time, &stub.to_string());
            }
            if let Err(e) = sender.send(&msg).await {
                tracing::warn!(error = %e, seq = r.seq, "syslog export: delivery failed; retrying");
                failed = true;
                break;
            }
            after = r.seq;
        }
        if after != saved {
            match write_cursor(&cursor, after) {
                Ok(()) => saved = after,
                Err(e) => {
                    tracing::warn!(error = %e, path = %cursor.display(), "syslog export: cannot save the cursor")
                }
            }
        }
        if failed {
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(Duration::from_secs(60));
            continue;
        }
        backoff = Duration::from_secs(1);
        if (page.len() as i64) < PAGE {
            tokio::time::sleep(FOLLOW_POLL).await;
        }
    }
}
