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
use crate::store::{Batch, SqliteStore, Store, Write};
use crate::tlog::{self, Finding, Report, TlogError};

/// A backup or restore was refused or failed.
#[derive(Debug, thiserror::Error)]
pub enum RestoreError {
    #[error(
        "this home's store is PostgreSQL: back it up with pg_dump and restore it with pg_restore (docs/operations.md, \"Backup, restore and upgrades\")"
    )]
    Postgres,
    #[error(
        "the store at {0} is open in another process (`firedrill serve`, another firedrill command, or a SQLite shell; `fuser -v` on it and its .lock file names the process): stop it, then restore; nothing was changed"
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
        "the backup {path} ends at audit record {ends_at}, but {evidence} holds records {from} to {to} that it lacks: restoring it loses them, and witnesses that hold checkpoints of them will show the loss; nothing was changed. Restore a newer backup, or pass --accept-loss to restore this one anyway (the loss is recorded)"
    )]
    WouldLose {
        path: String,
        ends_at: u64,
        from: u64,
        to: u64,
        evidence: String,
    },
    #[error(
        "the store to replace, {path}, cannot be read ({reason}), so what it holds beyond the backup is unknown; nothing was changed: pass --accept-loss to restore anyway (it is kept aside, not deleted)"
    )]
    UnknownLoss { path: String, reason: String },
    #[error("cannot read the store to replace, {path}: {reason}; nothing was changed")]
    Current { path: String, reason: String },
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
            | RestoreError::WouldLose { .. }
            | RestoreError::UnknownLoss { .. } => true,
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
    /// Audit records the backup lacks (`--accept-loss`), as the replaced
    /// store or a held checkpoint shows: from this record up to `lost_to`.
    pub lost_from: Option<u64>,
    pub lost_to: Option<u64>,
    /// Where this home's last signed checkpoint (`audit/signed`) was moved
    /// when it covered lost records (evidence; `audit verify --checkpoint`).
    pub signed_checkpoint_moved_to: Option<String>,
    #[serde(flatten)]
    pub prepared: copy::Prepared,
    /// The global big red switch is engaged in the restored store (runs
    /// were in flight in the backup, or it was engaged in the replaced one).
    pub switch_engaged: bool,
    /// Every switch scope engaged by the restore.
    pub switches_kept: Vec<String>,
    /// Why the replaced store could not be read (`--accept-loss`): what it
    /// held beyond the backup, and revocations since, are not carried.
    pub previous_unreadable: Option<String>,
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

/// `f` on tokio's blocking pool (file copies and SQLite scans); a panic
/// in it is a copy error about `path`.
async fn blocking<T: Send + 'static>(
    path: &Path,
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<T, BackupError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| BackupError::Copy {
            path: path.display().to_string(),
            reason: e.to_string(),
        })
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
        let failed = |reason: String| BackupError::Copy {
            path: to.display().to_string(),
            reason,
        };
        // Held for the copy: a restore cannot start under it.
        let _open = copy::lock_shared(&db)
            .map_err(|e| failed(e.to_string()))?
            .ok_or_else(|| {
                HomeError::from(crate::store::StoreError::Restoring {
                    path: db.display().to_string(),
                })
            })?;
        let known = crate::store::known_schema();
        if let Some(found) = copy::schema_of(&db).map_err(failed)?
            && found > known
        {
            return Err(HomeError::from(crate::store::StoreError::NewerSchema {
                path: db.display().to_string(),
                found,
                known,
            })
            .into());
        }
        let busy = self.config().store.busy_timeout_ms;
        let (from, dest) = (db.clone(), to.to_path_buf());
        let info = blocking(to, move || copy::copy_to(&from, &dest, busy)).await??;
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
        // What a restore killed midway left (a full copy each): ours now.
        for entry in std::fs::read_dir(self.dir())
            .into_iter()
            .flatten()
            .flatten()
        {
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.starts_with(".firedrill.db.restoring-") {
                let _ = std::fs::remove_file(entry.path());
            } else if name.starts_with(".firedrill-restore-check-") {
                let _ = std::fs::remove_dir_all(entry.path());
            }
        }
        // One copy into the home: what is checked is what is installed.
        let (dir, from_) = (self.dir().to_path_buf(), from.to_path_buf());
        let (staged, info) = blocking(from, move || copy::stage(&from_, &dir)).await??;
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
        // Evidence of records the backup lacks: checkpoints larger than
        // it, and the store it replaces (read, not changed, for now).
        let mut lost: Vec<(u64, u64, String)> = report
            .findings
            .iter()
            .filter_map(|f| match f {
                Finding::Truncated { size, source, .. } => {
                    Some((ends_at + 1, *size, format!("the checkpoint {source}")))
                }
                _ => None,
            })
            .collect();
        let busy = |b: copy::Busy| match b {
            copy::Busy::InUse(_) => RestoreError::InUse(db.display().to_string()),
            copy::Busy::Failed(reason) => RestoreError::Current {
                path: db.display().to_string(),
                reason,
            },
        };
        let current = {
            let (path, staged_path) = (db.clone(), staged.to_path_buf());
            blocking(&db, move || copy::read_current(&path, &staged_path))
                .await?
                .map_err(busy)?
        };
        let (mut revoked, mut engaged, mut shared) = (Vec::new(), Vec::new(), None);
        match &current {
            copy::Quiet::Read(c) => {
                if let Some((from, to)) = c.lost {
                    lost.push((
                        u64::try_from(from).unwrap_or(0),
                        u64::try_from(to).unwrap_or(0),
                        format!("the store it replaces ({})", db.display()),
                    ));
                }
                revoked.clone_from(&c.revoked);
                engaged.clone_from(&c.engaged);
                shared = Some(c.shared);
            }
            copy::Quiet::Unreadable(reason) if !accept_loss => {
                return Err(RestoreError::UnknownLoss {
                    path: db.display().to_string(),
                    reason: reason.clone(),
                });
            }
            copy::Quiet::Unreadable(_) | copy::Quiet::Missing => {}
        }
        let lost_range = lost
            .iter()
            .map(|(from, _, _)| *from)
            .min()
            .zip(lost.iter().map(|(_, to, _)| *to).max());
        if let Some((from, to)) = lost_range
            && !accept_loss
        {
            let evidence = lost
                .iter()
                .find(|(_, t, _)| *t == to)
                .map(|(_, _, e)| e.clone())
                .unwrap_or_default();
            return Err(RestoreError::WouldLose {
                path: shown,
                ends_at,
                from,
                to,
                evidence,
            });
        }
        let prepared = {
            let (path, revoked) = (staged.to_path_buf(), revoked.clone());
            blocking(&db, move || copy::prepare(&path, &revoked))
                .await?
                .map_err(|e| copy_error(&db, e))?
        };
        // Last, so that a refused restore changed nothing: with every
        // other connection out, the old store's WAL folded into it.
        {
            let path = db.clone();
            blocking(&db, move || copy::quiesce(&path))
                .await?
                .map_err(busy)?;
        }

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
        let signed_named = format!("the checkpoint {}", signed.display());
        let signed_aside = if lost.iter().any(|(_, _, e)| *e == signed_named) {
            let to = signed.with_file_name(format!("signed.{suffix}"));
            std::fs::rename(&signed, &to).map_err(|e| after(e.to_string()))?;
            Some(to.display().to_string())
        } else {
            None
        };
        let (lost_from, lost_to) = lost_range.unzip();
        let unreadable = match &current {
            copy::Quiet::Unreadable(reason) => Some(reason.clone()),
            _ => None,
        };
        // One transaction, before any other process may open the restored
        // store: the record (the first after the backup's last) and the
        // switches: those engaged in the store it replaces stay engaged,
        // and runs in flight in the backup halt live automation.
        let now = crate::audit::now_rfc3339();
        let mut halts: Vec<(String, String)> = engaged
            .iter()
            .map(|(scope, reason)| (scope.clone(), format!("kept through a restore: {reason}")))
            .collect();
        if prepared.runs_in_flight > 0 {
            halts.retain(|(scope, _)| scope != crate::switch::GLOBAL);
            halts.push((
                crate::switch::GLOBAL.to_string(),
                format!(
                    "restored from a backup with {} runs in flight: what they did after it was taken is unknown; check them (firedrill runs list), then release the switch",
                    prepared.runs_in_flight
                ),
            ));
        }
        let mut batch = Batch::new().event(
            NewEvent::new(actor, Action::StoreRestored, format!("store:{shown}")).details(
                serde_json::json!({
                    "backup_audit_records": info.audit_records,
                    "backup_audit_head_hash": info.audit_head_hash,
                    "backup_schema": info.schema,
                    "previous": previous,
                    "previous_unreadable": unreadable,
                    "shared_with_previous": shared,
                    "checkpoint_matched_up_to": report.matched_up_to,
                    "lost_from": lost_from,
                    "lost_to": lost_to,
                    "signed_checkpoint_moved_to": signed_aside,
                    "sessions_cleared": prepared.sessions_cleared,
                    "tokens_revoked_again": prepared.tokens_revoked_again,
                    "runs_in_flight": prepared.runs_in_flight,
                }),
            ),
        );
        for (scope, reason) in &halts {
            batch = batch
                .write(Write::SetSwitch(crate::store::SwitchRow {
                    scope: scope.clone(),
                    engaged: true,
                    reason: reason.clone(),
                    actor: actor.to_string(),
                    changed_at: now.clone(),
                }))
                .event(
                    NewEvent::new(actor, Action::SwitchEngaged, format!("switch:{scope}"))
                        .details(serde_json::json!({"reason": reason, "by": "restore"})),
                );
        }
        let store = SqliteStore::open_holding(&db, &self.config().store, exclusive)
            .await
            .map_err(|e| after(e.to_string()))?;
        store.apply(batch).await.map_err(|e| after(e.to_string()))?;
        let switch_engaged = halts
            .iter()
            .any(|(scope, _)| scope == crate::switch::GLOBAL);
        Ok(Restored {
            backup: info,
            previous,
            lost_from,
            lost_to,
            signed_checkpoint_moved_to: signed_aside,
            prepared,
            switch_engaged,
            switches_kept: halts.into_iter().map(|(scope, _)| scope).collect(),
            previous_unreadable: unreadable,
        })
    }
}
