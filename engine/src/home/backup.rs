//! `firedrill backup` and `firedrill restore` on a home's SQLite store
//! (PostgreSQL: `pg_dump` and `pg_restore`, docs/operations.md).
//!
//! A backup is a consistent copy taken while the store is in use
//! (`store/backup.rs`), recorded in the audit log. A restore checks the
//! copy before anything is changed (SQLite's integrity check, a schema
//! this binary knows, the audit chain, and the checkpoints this home and
//! its witnesses hold), refuses while any process has the store open,
//! moves the current database aside (never deletes it), installs the
//! copy, migrates it forward and records the restore in the restored
//! log, whose chain goes on from the copy's last record.

use std::path::{Path, PathBuf};

use serde::Serialize;

use super::{Home, HomeError};
use crate::audit::{Action, Actor, NewEvent};
use crate::store::backup::{self as copy, BackupError, CopyInfo};
use crate::store::{Batch, SqliteStore, Store};
use crate::tlog::{self, Finding, Report, TlogError};

/// A backup or restore was refused or failed.
#[derive(Debug, thiserror::Error)]
pub enum RestoreError {
    #[error(
        "this home's store is PostgreSQL: back it up with pg_dump and restore it with pg_restore (docs/operations.md, \"Backup, restore and upgrades\")"
    )]
    Postgres,
    #[error(
        "the store at {0} is open in another process (`firedrill serve`, another command, or a sqlite3 shell; `fuser` on the file names it): stop it, then restore; nothing was changed"
    )]
    InUse(String),
    #[error(
        "the backup {path} was written by a newer firedrill (schema version {found}; this binary knows up to {known}); nothing was changed: restore it with the newer firedrill"
    )]
    NewerSchema {
        path: String,
        found: i64,
        known: i64,
    },
    #[error("the backup {path} fails the audit check, so it was not restored (nothing was changed): {}", problems.join("; "))]
    AuditFails { path: String, problems: Vec<String> },
    #[error(
        "the backup {path} ends at audit record {ends_at}, but {checkpoint} holds {size} records: restoring it loses records {from} to {size}, and witnesses that hold checkpoints of them will show the loss; nothing was changed. Restore a newer backup, or pass --accept-loss to restore this one anyway (the loss is recorded)",
        from = ends_at + 1
    )]
    WouldLose {
        path: String,
        ends_at: u64,
        size: u64,
        checkpoint: String,
    },
    #[error(
        "the backup was installed (the store it replaced is kept at {previous}), but then: {reason}; run `firedrill audit verify`, and restore again or move the kept store back if it says so"
    )]
    AfterInstall { previous: String, reason: String },
    #[error(transparent)]
    Copy(#[from] BackupError),
    #[error(transparent)]
    Tlog(#[from] TlogError),
    #[error(transparent)]
    Home(#[from] HomeError),
}

impl RestoreError {
    /// Refused before anything was changed (exit 2), as opposed to failed.
    pub fn refused(&self) -> bool {
        match self {
            RestoreError::Postgres
            | RestoreError::InUse(_)
            | RestoreError::NewerSchema { .. }
            | RestoreError::AuditFails { .. }
            | RestoreError::WouldLose { .. } => true,
            RestoreError::Copy(c) => !matches!(c, BackupError::Copy { .. }),
            RestoreError::Home(HomeError::Store(s)) => s.is_refusal(),
            _ => false,
        }
    }
}

/// What `restore` did, as it reports it.
#[derive(Debug, Serialize)]
pub struct Restored {
    pub backup: CopyInfo,
    /// Where the store it replaced now is (`None`: the home had none).
    pub previous: Option<String>,
    /// Audit records a held checkpoint proves the backup lacks
    /// (`--accept-loss`): from this record up to `lost_to`.
    pub lost_from: Option<u64>,
    pub lost_to: Option<u64>,
    /// Where this home's last signed checkpoint (`audit/signed`) was moved
    /// when it covered lost records (evidence; `audit verify --checkpoint`).
    pub signed_checkpoint_moved_to: Option<String>,
    #[serde(flatten)]
    pub prepared: copy::Prepared,
    /// The big red switch was engaged: runs were in flight in the backup.
    pub switch_engaged: bool,
}

/// What `backup` wrote.
#[derive(Debug, Serialize)]
pub struct Backup {
    #[serde(flatten)]
    pub copy: CopyInfo,
    /// Recorded in the audit log (`false`: the store's schema is older
    /// than this binary's, and recording would migrate it).
    pub recorded: bool,
}

impl Home {
    /// Verify `store`'s audit log: the chain, the checkpoints it holds,
    /// this home's last signed checkpoint (`audit/signed`), the `[audit]`
    /// witness directories, and `checkpoints` and `witness_dirs` besides.
    pub async fn verify_audit(
        &self,
        store: &dyn Store,
        mut checkpoints: Vec<PathBuf>,
        mut witness_dirs: Vec<PathBuf>,
    ) -> Result<Report, TlogError> {
        let config = &self.config().audit;
        // The last checkpoint this home signed is a copy outside the
        // database too.
        let signed = self.dir().join("audit").join("signed");
        if signed.is_file() && !checkpoints.contains(&signed) {
            checkpoints.push(signed);
        }
        let (origin, trusted) = tlog::trusted(self.dir(), config)?;
        for w in &config.witnesses {
            if let crate::audit::WitnessConfig::Directory { path } = w
                && !witness_dirs.contains(path)
            {
                witness_dirs.push(path.clone());
            }
        }
        let held = tlog::gather(&checkpoints, &witness_dirs, Some(store)).await?;
        tlog::verify(store, &origin, &trusted, &held).await
    }

    fn sqlite_only(&self) -> Result<PathBuf, RestoreError> {
        match self.config().store.url {
            Some(_) => Err(RestoreError::Postgres),
            None => Ok(self.database_path()),
        }
    }

    /// Copy the store to the new file `to` while it is in use, and record
    /// the backup (as `actor`) in the audit log. A store with an older
    /// schema than this binary's (the backup before an upgrade) is copied
    /// as it is and not recorded: recording would migrate it.
    pub async fn backup(&self, to: &Path, actor: &Actor) -> Result<Backup, RestoreError> {
        let db = self.sqlite_only()?;
        let busy = self.config().store.busy_timeout_ms;
        let (from, dest) = (db.clone(), to.to_path_buf());
        let info = tokio::task::spawn_blocking(move || copy::copy_to(&from, &dest, busy))
            .await
            .map_err(|e| BackupError::Copy {
                path: to.display().to_string(),
                reason: e.to_string(),
            })??;
        let known = crate::store::known_schema();
        if info.schema > known {
            return Err(RestoreError::NewerSchema {
                path: info.path,
                found: info.schema,
                known,
            });
        }
        if info.schema < known {
            return Ok(Backup {
                copy: info,
                recorded: false,
            });
        }
        let store = self.store().await?;
        let subject = std::fs::canonicalize(to)
            .map_or_else(|_| info.path.clone(), |p| p.display().to_string());
        store
            .apply(Batch::new().event(
                NewEvent::new(actor, Action::StoreBackedUp, format!("store:{subject}")).details(
                    serde_json::json!({
                        "bytes": info.bytes,
                        "schema": info.schema,
                        "audit_records": info.audit_records,
                        "audit_head_seq": info.audit_head_seq,
                        "audit_head_hash": info.audit_head_hash,
                    }),
                ),
            ))
            .await
            .map_err(HomeError::from)?;
        Ok(Backup {
            copy: info,
            recorded: true,
        })
    }

    /// Replace the store with the backup `from`, after checking it; with
    /// `accept_loss`, also when the store it replaces, or a checkpoint this
    /// home holds, has audit records the backup lacks. Refused while any
    /// process has the store open.
    pub async fn restore(
        &self,
        from: &Path,
        accept_loss: bool,
        actor: &Actor,
    ) -> Result<Restored, RestoreError> {
        let db = self.sqlite_only()?;
        let copy_error = |path: &Path, reason: String| BackupError::Copy {
            path: path.display().to_string(),
            reason,
        };
        let Some(exclusive) =
            copy::lock_exclusive(&db).map_err(|e| copy_error(&db, e.to_string()))?
        else {
            return Err(RestoreError::InUse(db.display().to_string()));
        };
        // One copy into the home: what is checked is what is installed.
        let (dir, from_) = (self.dir().to_path_buf(), from.to_path_buf());
        let (staged, info) = tokio::task::spawn_blocking(move || copy::stage(&from_, &dir))
            .await
            .map_err(|e| copy_error(from, e.to_string()))??;
        let shown = info.path.clone();
        let known = crate::store::known_schema();
        if info.schema > known {
            return Err(RestoreError::NewerSchema {
                path: shown,
                found: info.schema,
                known,
            });
        }
        // The audit check opens (so migrates) a scratch copy of it.
        let scratch = tempfile::Builder::new()
            .prefix(".firedrill-restore-check-")
            .tempdir_in(self.dir())
            .map_err(|e| copy_error(self.dir(), e.to_string()))?;
        let check = scratch.path().join("firedrill.db");
        std::fs::copy(&staged, &check).map_err(|e| copy_error(&check, e.to_string()))?;
        let report = {
            let store = SqliteStore::open(&check, &self.config().store)
                .await
                .map_err(|e| RestoreError::AuditFails {
                    path: shown.clone(),
                    problems: vec![format!("it cannot be opened as a store: {e}")],
                })?;
            self.verify_audit(&store, Vec::new(), Vec::new()).await?
        };
        drop(scratch);
        let ends_at = u64::try_from(info.audit_records).unwrap_or(0);
        let problems: Vec<String> = report
            .findings
            .iter()
            .filter(|f| !matches!(f, Finding::Truncated { .. }))
            .map(ToString::to_string)
            .collect();
        if !problems.is_empty() {
            return Err(RestoreError::AuditFails {
                path: shown,
                problems,
            });
        }
        // Evidence of records the backup lacks: checkpoints larger than it,
        // and the store it replaces (read with every other connection out).
        let mut lost: Vec<(u64, String)> = report
            .findings
            .iter()
            .filter_map(|f| match f {
                Finding::Truncated { size, source, .. } => {
                    Some((*size, format!("the checkpoint {source}")))
                }
                _ => None,
            })
            .collect();
        let quiet = {
            let (path, head) = (db.clone(), info.audit_head_seq);
            tokio::task::spawn_blocking(move || copy::quiesce(&path, head))
                .await
                .map_err(|e| copy_error(&db, e.to_string()))?
                .map_err(|_| RestoreError::InUse(db.display().to_string()))?
        };
        let mut prefix_matches = false;
        let mut revoked = Vec::new();
        if let copy::Quiet::Read(current) = &quiet {
            prefix_matches = info.audit_head_hash.is_some()
                && current.hash_at_backup_head == info.audit_head_hash;
            let records = u64::try_from(current.audit_records).unwrap_or(0);
            if records > ends_at || !prefix_matches && records > 0 {
                lost.push((records, format!("the store it replaces ({})", db.display())));
            }
            revoked.clone_from(&current.revoked);
        }
        let lost_to = lost.iter().map(|(size, _)| *size).max();
        if let Some(size) = lost_to {
            let evidence = lost
                .iter()
                .find(|(s, _)| *s == size)
                .map(|(_, source)| source.clone())
                .unwrap_or_default();
            if !accept_loss {
                return Err(RestoreError::WouldLose {
                    path: shown,
                    ends_at,
                    size,
                    checkpoint: evidence,
                });
            }
            // What vouches for the history the backup keeps: a checkpoint
            // it matches, or the replaced store holding the same record at
            // its head.
            if report.matched_up_to == 0 && !prefix_matches {
                return Err(RestoreError::AuditFails {
                    path: shown,
                    problems: vec![format!(
                        "nothing vouches for its history: no checkpoint this home holds matches it, and the store it replaces has another record at its head (seq {})",
                        info.audit_head_seq.unwrap_or(0)
                    )],
                });
            }
        }
        let prepared = {
            let (path, revoked) = (staged.to_path_buf(), revoked.clone());
            tokio::task::spawn_blocking(move || copy::prepare(&path, &revoked))
                .await
                .map_err(|e| copy_error(&db, e.to_string()))?
                .map_err(|e| copy_error(&db, e))?
        };

        let stamp = humantime::format_rfc3339_seconds(std::time::SystemTime::now())
            .to_string()
            .replace(':', "");
        let unique = format!("{:016x}", rand::random::<u64>());
        let suffix = format!("before-restore-{stamp}-{}", &unique[..8]);
        let aside = db.with_file_name(format!("firedrill.db.{suffix}"));
        let moved = copy::install(staged, &db, &aside)?;
        let previous = moved.then(|| aside.display().to_string());
        let after = |reason: String| RestoreError::AfterInstall {
            previous: previous.clone().unwrap_or_else(|| "none".into()),
            reason,
        };
        // This home's last signed checkpoint, when it covers records the
        // restored log lacks: kept beside it as evidence, out of the way of
        // the next checkpoint (which must extend the last one signed).
        let signed = self.dir().join("audit").join("signed");
        let signed_shown = signed.display().to_string();
        let signed_aside = if lost
            .iter()
            .any(|(_, source)| *source == format!("the checkpoint {signed_shown}"))
        {
            let to = signed.with_file_name(format!("signed.{suffix}"));
            std::fs::rename(&signed, &to).map_err(|e| after(e.to_string()))?;
            Some(to.display().to_string())
        } else {
            None
        };
        let lost_from = lost_to.map(|_| ends_at + 1);
        // Recorded before any other process may open the restored store:
        // the first record after the backup's last.
        let store = SqliteStore::open_holding(&db, &self.config().store, exclusive)
            .await
            .map_err(|e| after(e.to_string()))?;
        store
            .apply(Batch::new().event(
                NewEvent::new(actor, Action::StoreRestored, format!("store:{shown}")).details(
                    serde_json::json!({
                        "backup_audit_records": info.audit_records,
                        "backup_audit_head_hash": info.audit_head_hash,
                        "backup_schema": info.schema,
                        "previous": previous,
                        "lost_from": lost_from,
                        "lost_to": lost_to,
                        "signed_checkpoint_moved_to": signed_aside,
                        "sessions_cleared": prepared.sessions_cleared,
                        "tokens_revoked_again": prepared.tokens_revoked_again,
                        "runs_in_flight": prepared.runs_in_flight,
                    }),
                ),
            ))
            .await
            .map_err(|e| after(e.to_string()))?;
        // Runs the backup holds in flight would be taken over and go on
        // from what the backup knew, repeating what they did after it.
        let halted = prepared.runs_in_flight > 0;
        if halted {
            crate::switch::flip(
                &store,
                None,
                true,
                &format!(
                    "restored from a backup with {} runs in flight: what they did after it was taken is unknown; check them (firedrill runs list), then release the switch",
                    prepared.runs_in_flight
                ),
                actor,
            )
            .await
            .map_err(|e| after(e.to_string()))?;
        }
        Ok(Restored {
            backup: info,
            previous,
            lost_from,
            lost_to,
            signed_checkpoint_moved_to: signed_aside,
            prepared,
            switch_engaged: halted,
        })
    }
}
