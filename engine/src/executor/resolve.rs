//! Runbooks and kernels: validation against the registry, publish and
//! rollback, and the stored runbook a claimed or resumed run uses (checked
//! against the digests it recorded).

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, Mutex};

use serde_json::{Value, json};

use super::Service;
use super::error::{ControlError, PublishError, reason_of};
use crate::audit::{Action, Actor, NewEvent, now_rfc3339};
use crate::kernel::RegistryError;
use crate::runbook::{
    KernelCatalog, Problems, Runbook, ValidRunbook, parse_runbook, source_digest, validate,
};
use crate::store::{Applied, Batch, RunRow, RunbookRow, StoreError, Write};

/// Most validated runbooks kept ([`Validated`]).
pub const VALIDATED_MAX_ENTRIES: usize = 256;
/// Most source bytes they hold together.
pub const VALIDATED_MAX_BYTES: usize = 16 * 1024 * 1024;

/// Published runbooks that passed validation, by the digest of their text: a text
/// that validated once validates again to the same result (its kernels are
/// immutable registry versions, resolved and verified once), so a run of a
/// published runbook parses no YAML. Only successes are kept (a kernel
/// that is missing now may be published later); bounded by
/// [`VALIDATED_MAX_ENTRIES`] and [`VALIDATED_MAX_BYTES`], oldest out first.
#[derive(Debug, Default)]
pub(super) struct Validated {
    inner: Mutex<ValidatedInner>,
}

#[derive(Debug, Default)]
struct ValidatedInner {
    by_digest: HashMap<String, Arc<ValidRunbook>>,
    order: VecDeque<String>,
    bytes: usize,
}

impl Validated {
    fn get(&self, digest: &str) -> Option<Arc<ValidRunbook>> {
        let inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        inner.by_digest.get(digest).cloned()
    }

    fn keep(&self, valid: &Arc<ValidRunbook>) {
        let size = valid.source.len();
        if size > VALIDATED_MAX_BYTES {
            return;
        }
        let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        if inner.by_digest.contains_key(&valid.digest) {
            return;
        }
        while inner.by_digest.len() >= VALIDATED_MAX_ENTRIES
            || inner.bytes + size > VALIDATED_MAX_BYTES
        {
            let Some(oldest) = inner.order.pop_front() else {
                break;
            };
            if let Some(gone) = inner.by_digest.remove(&oldest) {
                inner.bytes -= gone.source.len();
            }
        }
        inner.bytes += size;
        inner.order.push_back(valid.digest.clone());
        inner.by_digest.insert(valid.digest.clone(), valid.clone());
    }
}

impl Service {
    /// Resolve every kernel `runbook` names (or why it cannot be used).
    async fn catalog(&self, runbook: &Runbook) -> KernelCatalog {
        let mut catalog = KernelCatalog::new();
        for step in runbook.all_steps() {
            let Ok(r) = step.kernel_ref() else { continue };
            if catalog.contains_key(&r) {
                continue;
            }
            let resolved = self
                .registry
                .resolve(&self.host, &r.name, &r.version)
                .await
                .map_err(|e: RegistryError| e.to_string());
            catalog.insert(r, resolved);
        }
        catalog
    }

    /// The validated runbook of `digest`, if a run validated it since the
    /// cache last dropped it ([`Validated`]): no YAML parsed.
    pub fn validated_of(&self, digest: &str) -> Option<Arc<ValidRunbook>> {
        self.validated.get(digest)
    }

    /// Validate runbook `text` completely (kernels resolved from the
    /// registry); a published text that validated before is not parsed
    /// again ([`Validated`]).
    pub async fn validate(&self, file: &str, text: &str) -> Result<Arc<ValidRunbook>, Problems> {
        self.validate_keeping(file, text, false).await
    }

    /// [`Service::validate`]; with `keep` (a published version a run
    /// uses), what passes is kept for the next run. Only published
    /// versions are kept, so that texts sent to be checked (any reader may)
    /// never push out what the runs use.
    pub(super) async fn validate_keeping(
        &self,
        file: &str,
        text: &str,
        keep: bool,
    ) -> Result<Arc<ValidRunbook>, Problems> {
        let digest = source_digest(text);
        if let Some(valid) = self.validated.get(&digest) {
            return Ok(valid);
        }
        let parsed = parse_runbook(file, text)?;
        let catalog = self.catalog(&parsed).await;
        let valid = Arc::new(validate(file, text, &catalog, &self.templates)?);
        if keep {
            self.validated.keep(&valid);
        }
        Ok(valid)
    }

    /// `name@version -> digest` of every kernel `runbook` uses, as runs
    /// record it; `None` when one is not published.
    pub async fn kernel_digests(&self, runbook: &Runbook) -> Result<Option<Value>, StoreError> {
        let mut out = BTreeMap::new();
        for step in runbook.all_steps().filter(|s| s.approval.is_none()) {
            let Ok(r) = step.kernel_ref() else {
                return Ok(None);
            };
            match self.store.kernel(&r.name, &r.version).await? {
                Some(k) => out.insert(r.to_string(), k.digest),
                None => return Ok(None),
            };
        }
        Ok(Some(json!(out)))
    }

    /// Validate and publish a runbook version, audited as `actor`.
    pub async fn publish_runbook(
        &self,
        file: &str,
        text: &str,
        actor: &Actor,
    ) -> Result<(RunbookRow, bool), PublishError> {
        let valid = self
            .validate(file, text)
            .await
            .map_err(PublishError::Invalid)?;
        let rb = &valid.runbook;
        let row = RunbookRow {
            name: rb.name.clone(),
            version: i64::from(rb.version),
            digest: valid.digest.clone(),
            source: valid.source.clone(),
            published_at: now_rfc3339(),
            published_by: actor.to_string(),
        };
        let reference = format!("{}@{}", rb.name, rb.version);
        let event = NewEvent::new(
            actor,
            Action::RunbookPublished,
            format!("runbook:{reference}"),
        )
        .details(json!({"digest": valid.digest, "kernels": kernel_map(&valid)}));
        match self
            .store
            .apply(
                Batch::new()
                    .write(Write::PublishRunbook(row.clone()))
                    .event(event),
            )
            .await?
        {
            Applied::Done => Ok((row, true)),
            Applied::AlreadyPresent => Ok((row, false)),
            Applied::Conflict { existing_digest } => Err(PublishError::Conflict {
                reference,
                existing: existing_digest,
            }),
            _ => Err(PublishError::Store(StoreError::Corrupt {
                what: "runbook publish",
                reason: "the store answered a publish as a conditional write".into(),
            })),
        }
    }

    /// Make an earlier published version of `name` current again (what runs
    /// by name, what alerts and drills use) until a new version is
    /// published. Audited as `runbook.rolled-back`.
    pub async fn rollback_runbook(
        &self,
        name: &str,
        version: i64,
        actor: &Actor,
        reason: &str,
    ) -> Result<RunbookRow, ControlError> {
        let reason = reason_of(reason)?;
        let from = self
            .store
            .runbook(name, None)
            .await?
            .ok_or_else(|| ControlError::NotFound(name.to_string()))?;
        let row = self
            .store
            .runbook(name, Some(version))
            .await?
            .ok_or_else(|| {
                ControlError::Refused(format!("{name}@{version} was never published"))
            })?;
        self.store
            .apply(
                Batch::new()
                    .write(Write::SetCurrentRunbook {
                        name: name.to_string(),
                        version,
                        at: now_rfc3339(),
                        by: actor.to_string(),
                    })
                    .event(
                        NewEvent::new(actor, Action::RunbookRolledBack, format!("runbook:{name}"))
                            .details(json!({"from": from.version, "to": version, "digest": row.digest, "reason": reason})),
                    ),
            )
            .await?;
        Ok(row)
    }

    /// The runbook a stored run uses, checked against its recorded digests.
    pub(super) async fn stored_runbook(&self, run: &RunRow) -> Result<Arc<ValidRunbook>, String> {
        let (name, text) = match &run.source {
            Some(text) => (format!("{} (draft)", run.runbook), text.clone()),
            None => {
                let row = self
                    .store
                    .runbook(&run.runbook, Some(run.runbook_version))
                    .await
                    .map_err(|e| e.to_string())?
                    .ok_or_else(|| {
                        format!(
                            "{}@{} is no longer published",
                            run.runbook, run.runbook_version
                        )
                    })?;
                (format!("{}@{}", row.name, row.version), row.source)
            }
        };
        let valid = self
            .validate_keeping(&name, &text, run.source.is_none())
            .await
            .map_err(|p| p.to_string())?;
        if valid.digest != run.runbook_digest {
            return Err(format!("{name} no longer has the digest this run used"));
        }
        if json!(kernel_map(&valid)) != run.kernels {
            return Err(format!(
                "the kernels of {name} no longer resolve to the digests this run used"
            ));
        }
        Ok(valid)
    }
}

/// `name@version -> digest` of the kernels a validated runbook resolved.
pub(super) fn kernel_map(valid: &ValidRunbook) -> BTreeMap<String, String> {
    valid
        .kernels
        .iter()
        .map(|(r, k)| (r.to_string(), k.digest.clone()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A validated runbook whose source is `size` bytes, keyed `digest`.
    fn valid(digest: &str, size: usize) -> Arc<ValidRunbook> {
        let text = "apiVersion: firedrill/v1\nname: t\nversion: 1\nsteps:\n  - id: a\n    approval: { timeout: 5m }\n";
        let mut v = validate(
            "t.yaml",
            text,
            &KernelCatalog::new(),
            &crate::runbook::Templates::default(),
        )
        .expect("valid");
        v.source = "x".repeat(size);
        v.digest = digest.into();
        Arc::new(v)
    }

    #[test]
    fn the_validated_runbooks_kept_are_bounded_in_count_and_bytes_oldest_out_first() {
        let kept = Validated::default();
        for i in 0..VALIDATED_MAX_ENTRIES {
            kept.keep(&valid(&format!("d{i}"), 10));
        }
        assert!(kept.get("d0").is_some());
        // One more entry pushes out the oldest, only it.
        kept.keep(&valid("new", 10));
        assert!(kept.get("d0").is_none());
        assert!(kept.get("d1").is_some() && kept.get("new").is_some());
        // Keeping a digest again changes nothing (it stays where it was).
        kept.keep(&valid("d1", 10));
        kept.keep(&valid("another", 10));
        assert!(kept.get("d1").is_none(), "d1 was the oldest");

        // Bytes: a source larger than the whole budget is never kept; two
        // that do not fit together keep the newer.
        let kept = Validated::default();
        kept.keep(&valid("huge", VALIDATED_MAX_BYTES + 1));
        assert!(kept.get("huge").is_none());
        kept.keep(&valid("at-edge", VALIDATED_MAX_BYTES));
        assert!(kept.get("at-edge").is_some());
        kept.keep(&valid("half", VALIDATED_MAX_BYTES / 2));
        assert!(kept.get("at-edge").is_none() && kept.get("half").is_some());
        kept.keep(&valid("other-half", VALIDATED_MAX_BYTES / 2));
        assert!(kept.get("half").is_some() && kept.get("other-half").is_some());
        let inner = kept.inner.lock().expect("lock");
        assert_eq!(inner.bytes, VALIDATED_MAX_BYTES);
        assert_eq!(inner.order.len(), inner.by_digest.len());
    }
}
