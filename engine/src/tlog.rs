//! The audit log as a verifiable log: signed checkpoints of its Merkle
//! tree (`audit::tree`, `audit::checkpoint`), the keys that sign them,
//! inclusion and consistency proofs, verification against checkpoints held
//! elsewhere, and (in `serve`) the checkpointer and the witnesses.
//!
//! The hash chain says which record was changed; a checkpoint kept outside
//! the database says what the log looked like, so that deleting its tail or
//! rewriting it from some record on (with every hash recomputed) is seen.

use std::collections::{BTreeMap, BTreeSet};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::audit::checkpoint::{
    self, Checkpoint, NoteError, SignedCheckpoint, SignerKey, VerifierKey,
};
use crate::audit::tree::{self, Hash};
use crate::audit::{Action, Actor, AuditConfig, NewEvent};
use crate::store::{Applied, Batch, CheckpointRow, Store, StoreError, Write};

pub mod export;
pub mod serve;
pub mod syslog;
pub mod witness;

/// Record hashes read per page when building the tree.
const HASH_PAGE: i64 = 50_000;
/// Checkpoints read from a witness directory at most (the newest by size).
pub const MAX_WITNESS_FILES: usize = 10_000;
/// Checkpoints kept in the store that verification also checks (newest).
const STORED_CHECKED: i64 = 1_000;

/// Why a checkpoint, proof or key operation failed.
#[derive(Debug, thiserror::Error)]
pub enum TlogError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("{what} {path}: {source}")]
    Io {
        what: &'static str,
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{0}")]
    Note(#[from] NoteError),
    #[error("{0}")]
    Invalid(String),
}

fn io<'a>(what: &'static str, path: &'a Path) -> impl FnOnce(std::io::Error) -> TlogError + 'a {
    move |source| TlogError::Io {
        what,
        path: path.display().to_string(),
        source,
    }
}

/// The signing key, the keys verification trusts, and the log's origin.
#[derive(Debug)]
pub struct Keys {
    pub origin: String,
    signer: SignerKey,
    trusted: Vec<VerifierKey>,
    signing_path: PathBuf,
    retired_path: PathBuf,
}

impl Keys {
    /// Load the signing key (generating it into the home on first use, unless
    /// `[audit] signing-key` names a file) and the trusted keys: this key, the
    /// keys it rotated out (`audit/retired.keys`), and `[audit] trusted-keys`.
    /// Returns whether a key was generated.
    pub fn load(home: &Path, config: &AuditConfig) -> Result<(Self, bool), TlogError> {
        let origin = config.origin();
        checkpoint::check_name(&origin)
            .map_err(|e| TlogError::Invalid(format!("[audit] origin: {e}")))?;
        let dir = home.join("audit");
        let signing_path = config
            .signing_key
            .clone()
            .unwrap_or_else(|| dir.join("signing.key"));
        let mut created = false;
        let signer = match std::fs::read_to_string(&signing_path) {
            Ok(text) => SignerKey::parse(&text).map_err(|e| {
                TlogError::Invalid(format!("signing key {}: {e}", signing_path.display()))
            })?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && config.signing_key.is_none() => {
                let key = SignerKey::generate(&origin)?;
                write_private(&signing_path, &key)?;
                created = true;
                key
            }
            Err(e) => return Err(io("read the audit signing key", &signing_path)(e)),
        };
        if signer.verifier().name != origin {
            return Err(TlogError::Invalid(format!(
                "the signing key {} is named {:?} but [audit] origin is {origin:?}; sign with a key of that name (`firedrill audit key rotate` makes one)",
                signing_path.display(),
                signer.verifier().name
            )));
        }
        let retired_path = dir.join("retired.keys");
        let mut trusted = vec![signer.verifier()];
        trusted.extend(other_trusted(&retired_path, config)?);
        Ok((
            Keys {
                origin,
                signer,
                trusted,
                signing_path,
                retired_path,
            },
            created,
        ))
    }

    pub fn verifier(&self) -> VerifierKey {
        self.signer.verifier()
    }

    pub fn trusted(&self) -> &[VerifierKey] {
        &self.trusted
    }

    /// Replace the signing key with a new one; the old verifier key stays
    /// trusted (appended to `audit/retired.keys`) so that old checkpoints
    /// still verify. Only for a key kept in the home.
    pub fn rotate(
        &mut self,
        config: &AuditConfig,
    ) -> Result<(VerifierKey, VerifierKey), TlogError> {
        if config.signing_key.is_some() {
            return Err(TlogError::Invalid(format!(
                "the signing key is {} ([audit] signing-key): replace that file, and add the old key's verifier key to [audit] trusted-keys",
                self.signing_path.display()
            )));
        }
        let old = self.signer.verifier();
        let new = SignerKey::generate(&self.origin)?;
        let mut retired = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o600)
            .open(&self.retired_path)
            .map_err(io("write retired audit keys", &self.retired_path))?;
        use std::io::Write as _;
        writeln!(retired, "{old}")
            .and_then(|()| retired.sync_all())
            .map_err(io("write retired audit keys", &self.retired_path))?;
        write_private(&self.signing_path, &new)?;
        self.signer = new;
        self.trusted.insert(0, self.signer.verifier());
        Ok((old, self.signer.verifier()))
    }

    /// Sign `checkpoint`.
    pub fn sign(&self, checkpoint: &Checkpoint) -> String {
        checkpoint.sign(&self.signer)
    }
}

/// The keys rotated out (`retired`) and `[audit] trusted-keys`.
fn other_trusted(retired: &Path, config: &AuditConfig) -> Result<Vec<VerifierKey>, TlogError> {
    let text = match std::fs::read_to_string(retired) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(e) => return Err(io("read retired audit keys", retired)(e)),
    };
    text.lines()
        .chain(config.trusted_keys.iter().map(String::as_str))
        .filter(|l| !l.trim().is_empty())
        .enumerate()
        .map(|(n, line)| {
            VerifierKey::parse(line)
                .map_err(|e| TlogError::Invalid(format!("trusted key {} ({line:?}): {e}", n + 1)))
        })
        .collect()
}

/// The log's origin and the keys verification trusts, without creating a
/// signing key (verification writes nothing): this home's key if it has
/// one, the keys it rotated out, `[audit] trusted-keys`.
pub fn trusted(home: &Path, config: &AuditConfig) -> Result<(String, Vec<VerifierKey>), TlogError> {
    let origin = config.origin();
    let dir = home.join("audit");
    let signing = config
        .signing_key
        .clone()
        .unwrap_or_else(|| dir.join("signing.key"));
    let mut keys = Vec::new();
    match std::fs::read_to_string(&signing) {
        Ok(text) => keys.push(
            SignerKey::parse(&text)
                .map_err(|e| TlogError::Invalid(format!("signing key {}: {e}", signing.display())))?
                .verifier(),
        ),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(io("read the audit signing key", &signing)(e)),
    }
    keys.extend(other_trusted(&dir.join("retired.keys"), config)?);
    Ok((origin, keys))
}

/// Write a signing key owner-only, atomically (a temp file renamed).
fn write_private(path: &Path, key: &SignerKey) -> Result<(), TlogError> {
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(io("create", dir))?;
    let tmp = path.with_extension("key.tmp");
    let write = || -> std::io::Result<()> {
        use std::io::Write as _;
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .write(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)?;
        f.write_all(key.to_secret_text().as_bytes())?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)?;
        std::fs::File::open(dir)?.sync_all()
    };
    write().map_err(io("write the audit signing key", path))
}

/// Record that a key was created or rotated.
pub async fn record_key_change(
    store: &dyn Store,
    actor: &Actor,
    action: Action,
    old: Option<&VerifierKey>,
    new: &VerifierKey,
) -> Result<(), TlogError> {
    let details = serde_json::json!({
        "old_key": old.map(VerifierKey::to_string),
        "new_key": new.to_string(),
    });
    store
        .apply(Batch::new().event(
            NewEvent::new(actor, action, format!("audit-key:{}", new.label())).details(details),
        ))
        .await?;
    Ok(())
}

/// The leaf hashes of the first `size` records (all with `None`), read in
/// pages; refuses a gap in the sequence numbers (`audit verify` names it).
pub async fn leaves(store: &dyn Store, size: Option<u64>) -> Result<Vec<Hash>, TlogError> {
    let mut out = Vec::new();
    let want = size.unwrap_or(u64::MAX);
    while (out.len() as u64) < want {
        let limit = HASH_PAGE.min(i64::try_from(want - out.len() as u64).unwrap_or(HASH_PAGE));
        let page = store.audit_hashes(out.len() as i64, limit).await?;
        if page.is_empty() {
            break;
        }
        for (seq, hash) in page {
            let expected = out.len() as i64 + 1;
            if seq != expected {
                return Err(TlogError::Invalid(format!(
                    "the audit log has no record {expected} (the next is {seq}); run `firedrill audit verify`"
                )));
            }
            out.push(tree::record_leaf(&hash).ok_or_else(|| {
                TlogError::Invalid(format!(
                    "record {seq}'s hash is not SHA-256 hex; run `firedrill audit verify`"
                ))
            })?);
        }
    }
    if let Some(size) = size
        && (out.len() as u64) < size
    {
        return Err(TlogError::Invalid(format!(
            "the audit log has {} records, fewer than {size}",
            out.len()
        )));
    }
    Ok(out)
}

/// Sign a checkpoint of the log as it is now and keep it in the store.
/// Answers the kept checkpoint of that size if the log has not grown.
pub async fn checkpoint_now(store: &dyn Store, keys: &Keys) -> Result<SignedCheckpoint, TlogError> {
    let mut frontier = tree::Frontier::default();
    extend(&mut frontier, store).await?;
    let cp = Checkpoint {
        origin: keys.origin.clone(),
        size: frontier.size(),
        root: frontier.root(),
    };
    keep(store, keys, &cp).await
}

/// Add the records after `tree`'s size to it, a page at a time (a frontier
/// holds O(log n) hashes, whatever the log's size).
pub async fn extend(tree: &mut tree::Frontier, store: &dyn Store) -> Result<(), TlogError> {
    loop {
        let page = store.audit_hashes(tree.size() as i64, HASH_PAGE).await?;
        let full = page.len() as i64 == HASH_PAGE;
        for (seq, hash) in page {
            if seq as u64 != tree.size() + 1 {
                return Err(TlogError::Invalid(format!(
                    "the audit log skips from record {} to {seq}; run `firedrill audit verify`",
                    tree.size()
                )));
            }
            tree.push(tree::record_leaf(&hash).ok_or_else(|| {
                TlogError::Invalid(format!(
                    "record {seq}'s hash is not SHA-256 hex; run `firedrill audit verify`"
                ))
            })?);
        }
        if !full {
            return Ok(());
        }
    }
}

/// Sign `cp` and keep it (or answer the one kept at its size).
pub async fn keep(
    store: &dyn Store,
    keys: &Keys,
    cp: &Checkpoint,
) -> Result<SignedCheckpoint, TlogError> {
    let note = keys.sign(cp);
    let row = CheckpointRow {
        size: cp.size as i64,
        root: cp.root_b64(),
        note: note.clone(),
        signer: keys.verifier().label(),
        created_at: crate::audit::now_rfc3339(),
    };
    match store
        .apply(Batch::new().write(Write::InsertCheckpoint(row)))
        .await?
    {
        Applied::Exists => {
            // Signed before (by this node, or another node of the store
            // with its own key): the same root, or the log was rewritten.
            let kept = stored_checkpoint(store, cp.size)
                .await?
                .ok_or_else(|| TlogError::Invalid(format!("checkpoint {} vanished", cp.size)))?;
            if kept.root != cp.root_b64() {
                return Err(TlogError::Invalid(format!(
                    "the store keeps a checkpoint of size {} whose root differs from the log's: the log was rewritten; run `firedrill audit verify`",
                    cp.size
                )));
            }
            Ok(SignedCheckpoint {
                checkpoint: cp.clone(),
                signer: kept.signer,
                note: kept.note,
            })
        }
        _ => Ok(SignedCheckpoint {
            checkpoint: cp.clone(),
            signer: keys.verifier().label(),
            note,
        }),
    }
}

/// The kept checkpoint of `size`, if any (searching the newest kept).
pub async fn stored_checkpoint(
    store: &dyn Store,
    size: u64,
) -> Result<Option<CheckpointRow>, TlogError> {
    Ok(store
        .checkpoints(STORED_CHECKED)
        .await?
        .into_iter()
        .find(|c| c.size as u64 == size))
}

/// An inclusion proof, in the documented format (`docs/audit.md`).
#[derive(Debug, Clone, Serialize)]
pub struct InclusionProof {
    pub format: &'static str,
    /// The checkpoint the proof is against (the signed note).
    pub checkpoint: String,
    pub tree_size: u64,
    /// `seq - 1`.
    pub leaf_index: u64,
    /// The record, with every field its hash covers.
    pub record: crate::audit::AuditRecord,
    /// Base64 hashes, leaf to root.
    pub proof: Vec<String>,
}

/// A consistency proof, in the documented format (`docs/audit.md`).
#[derive(Debug, Clone, Serialize)]
pub struct ConsistencyProof {
    pub format: &'static str,
    pub old_checkpoint: String,
    pub new_checkpoint: String,
    pub old_size: u64,
    pub new_size: u64,
    /// Base64 hashes, RFC 9162 order.
    pub proof: Vec<String>,
}

fn b64(hashes: &[Hash]) -> Vec<String> {
    use base64::Engine as _;
    hashes
        .iter()
        .map(|h| base64::engine::general_purpose::STANDARD.encode(h))
        .collect()
}

/// Check that the log's first `cp.size` records have `cp`'s root; the
/// leaves are returned for the proof.
async fn leaves_matching(store: &dyn Store, cp: &SignedCheckpoint) -> Result<Vec<Hash>, TlogError> {
    let size = cp.checkpoint.size;
    let leaves = match leaves(store, Some(size)).await {
        Ok(l) => l,
        Err(TlogError::Invalid(m)) if m.contains("fewer than") => {
            return Err(TlogError::Invalid(format!(
                "the log is shorter than checkpoint {size} ({m}): its tail was deleted; run `firedrill audit verify --checkpoint`"
            )));
        }
        Err(e) => return Err(e),
    };
    if tree::root(&leaves) != cp.checkpoint.root {
        return Err(TlogError::Invalid(format!(
            "the log's first {size} records are not the ones checkpoint {size} signed: the log was rewritten; run `firedrill audit verify --checkpoint`"
        )));
    }
    Ok(leaves)
}

/// Prove that record `seq` is in the log `cp` signed.
pub async fn prove(
    store: &dyn Store,
    cp: &SignedCheckpoint,
    seq: i64,
) -> Result<InclusionProof, TlogError> {
    let size = cp.checkpoint.size;
    if seq < 1 || seq as u64 > size {
        return Err(TlogError::Invalid(format!(
            "record {seq} is not in checkpoint {size} (it covers records 1 to {size}); prove against a newer checkpoint (`firedrill audit checkpoint`)"
        )));
    }
    let leaves = leaves_matching(store, cp).await?;
    let record = store
        .audit_page(seq - 1, 1)
        .await?
        .into_iter()
        .next()
        .filter(|r| r.seq == seq)
        .ok_or_else(|| TlogError::Invalid(format!("record {seq} is not in the store")))?;
    let index = (seq - 1) as usize;
    if tree::record_leaf(&record.hash) != Some(leaves[index])
        || crate::audit::record_hash(&record) != record.hash
    {
        return Err(TlogError::Invalid(format!(
            "record {seq} does not match its hash; run `firedrill audit verify`"
        )));
    }
    let proof = tree::inclusion_proof(index, &leaves).unwrap_or_default();
    Ok(InclusionProof {
        format: "firedrill-inclusion-proof/1",
        checkpoint: cp.note.clone(),
        tree_size: size,
        leaf_index: index as u64,
        record,
        proof: b64(&proof),
    })
}

/// Prove that `new` extends `old`.
pub async fn consistency(
    store: &dyn Store,
    old: &SignedCheckpoint,
    new: &SignedCheckpoint,
) -> Result<ConsistencyProof, TlogError> {
    let (m, n) = (old.checkpoint.size, new.checkpoint.size);
    if m == 0 || m > n {
        return Err(TlogError::Invalid(format!(
            "the old checkpoint ({m} records) must be non-empty and no larger than the new one ({n})"
        )));
    }
    let leaves = leaves_matching(store, new).await?;
    if tree::root(&leaves[..m as usize]) != old.checkpoint.root {
        return Err(TlogError::Invalid(format!(
            "checkpoint {m} is not a prefix of this log: the history forked or was rewritten after an earlier checkpoint; run `firedrill audit verify --checkpoint`"
        )));
    }
    let proof = tree::consistency_proof(m as usize, &leaves).unwrap_or_default();
    Ok(ConsistencyProof {
        format: "firedrill-consistency-proof/1",
        old_checkpoint: old.note.clone(),
        new_checkpoint: new.note.clone(),
        old_size: m,
        new_size: n,
        proof: b64(&proof),
    })
}

/// Where a checkpoint given to verification came from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Held {
    /// A file, `store`, or a witness directory's file.
    pub source: String,
    pub note: String,
}

/// Checkpoints from files, witness directories and the store.
pub async fn gather(
    files: &[PathBuf],
    witness_dirs: &[PathBuf],
    store: Option<&dyn Store>,
) -> Result<Vec<Held>, TlogError> {
    let mut held = Vec::new();
    let read = |path: &Path| -> Result<Held, TlogError> {
        let meta = std::fs::metadata(path).map_err(io("read checkpoint", path))?;
        if meta.len() > checkpoint::MAX_NOTE_BYTES as u64 {
            return Err(TlogError::Invalid(format!(
                "{} is larger than a checkpoint may be ({} bytes)",
                path.display(),
                checkpoint::MAX_NOTE_BYTES
            )));
        }
        Ok(Held {
            source: path.display().to_string(),
            note: std::fs::read_to_string(path).map_err(io("read checkpoint", path))?,
        })
    };
    for f in files {
        held.push(read(f)?);
    }
    for dir in witness_dirs {
        let mut found: Vec<(u64, PathBuf)> = std::fs::read_dir(dir)
            .map_err(io("read witness directory", dir))?
            .filter_map(|e| e.ok())
            .filter_map(|e| {
                let name = e.file_name().into_string().ok()?;
                let size = name.strip_suffix(".checkpoint")?.parse().ok()?;
                Some((size, e.path()))
            })
            .collect();
        found.sort();
        if found.len() > MAX_WITNESS_FILES {
            found.drain(..found.len() - MAX_WITNESS_FILES);
        }
        for (_, path) in found {
            held.push(read(&path)?);
        }
    }
    if let Some(store) = store {
        for row in store.checkpoints(STORED_CHECKED).await? {
            held.push(Held {
                source: format!("store (checkpoint {})", row.size),
                note: row.note,
            });
        }
    }
    Ok(held)
}

/// What verification against checkpoints found, worst first when sorted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, PartialOrd, Ord)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum Finding {
    /// The chain itself is broken at a record (modified, deleted...).
    ChainBroken { seq: i64, problem: String },
    /// Two trusted checkpoints describe different histories.
    Forked {
        size: u64,
        first: String,
        second: String,
    },
    /// The log's first `size` records are not those a checkpoint signed.
    Rewritten {
        size: u64,
        /// The largest checkpoint the log still matches (0: none).
        intact_up_to: u64,
        source: String,
    },
    /// A checkpoint covers more records than the log holds.
    Truncated {
        size: u64,
        log_size: u64,
        source: String,
    },
    /// A checkpoint that could not be trusted: unknown key, bad signature,
    /// another log's origin, malformed.
    Untrusted { source: String, why: String },
}

impl Finding {
    /// The exit code of `audit verify` when this is the worst finding.
    pub fn exit_code(&self) -> u8 {
        match self {
            Finding::ChainBroken { .. } => 1,
            Finding::Truncated { .. } => 3,
            Finding::Rewritten { .. } => 4,
            Finding::Forked { .. } => 5,
            Finding::Untrusted { .. } => 6,
        }
    }
}

impl std::fmt::Display for Finding {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Finding::ChainBroken { seq, problem } => {
                write!(f, "chain broken at record {seq}: {problem}")
            }
            Finding::Forked {
                size,
                first,
                second,
            } => write!(
                f,
                "FORK: {first} and {second} are both signed by trusted keys but describe different histories (they cannot both be prefixes of one log; they disagree by record {size}): someone kept two logs"
            ),
            Finding::Rewritten {
                size,
                intact_up_to,
                source,
            } => write!(
                f,
                "REWRITTEN: the log's first {size} records are not the ones {source} signed; the log still matches the checkpoint of {intact_up_to} records, so records after {intact_up_to} (up to {size}) were rewritten, deleted and re-added, or replaced"
            ),
            Finding::Truncated {
                size,
                log_size,
                source,
            } => write!(
                f,
                "TRUNCATED: {source} covers {size} records but the log holds {log_size}: records {} to {size} were deleted",
                log_size + 1
            ),
            Finding::Untrusted { source, why } => write!(f, "untrusted checkpoint {source}: {why}"),
        }
    }
}

/// The outcome of `audit verify` with checkpoints.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub chain: crate::audit::Verification,
    /// Distinct trusted checkpoints checked, by size.
    pub checkpoints_checked: usize,
    /// The largest checkpoint the log matches (0 when none).
    pub matched_up_to: u64,
    pub findings: Vec<Finding>,
}

impl Report {
    /// 0 when nothing was found, else the worst finding's code.
    pub fn exit_code(&self) -> u8 {
        self.findings.iter().min().map_or(0, Finding::exit_code)
    }
}

/// Verify the chain, and the log against every checkpoint in `held`.
pub async fn verify(
    store: &dyn Store,
    origin: &str,
    trusted: &[VerifierKey],
    held: &[Held],
) -> Result<Report, TlogError> {
    let mut findings = Vec::new();
    // size -> (root, source), first seen; a second root at one size is a fork.
    let mut by_size: BTreeMap<u64, (Hash, String)> = BTreeMap::new();
    for h in held {
        let opened = match checkpoint::open(&h.note, trusted) {
            Ok(o) => o,
            Err(e) => {
                findings.push(Finding::Untrusted {
                    source: h.source.clone(),
                    why: e.to_string(),
                });
                continue;
            }
        };
        let cp = opened.checkpoint;
        if cp.origin != origin {
            findings.push(Finding::Untrusted {
                source: h.source.clone(),
                why: format!(
                    "it is a checkpoint of the log {:?}, not of this log ({origin:?})",
                    cp.origin
                ),
            });
            continue;
        }
        match by_size.get(&cp.size) {
            Some((root, first)) if *root != cp.root => findings.push(Finding::Forked {
                size: cp.size,
                first: first.clone(),
                second: h.source.clone(),
            }),
            Some(_) => {}
            None => {
                by_size.insert(cp.size, (cp.root, h.source.clone()));
            }
        }
    }
    let sizes: BTreeSet<u64> = by_size.keys().copied().collect();
    let (chain, roots) = crate::store::verify_store_with_roots(store, &sizes).await?;
    if let Some(bad) = &chain.first_bad {
        findings.push(Finding::ChainBroken {
            seq: bad.seq,
            problem: bad.problem.clone(),
        });
    }
    let log_size = chain.records;
    let mut matched = Vec::new();
    let mut mismatched = Vec::new();
    for (&size, (root, source)) in &by_size {
        match roots.get(&size) {
            Some(r) if r == root => matched.push(size),
            Some(_) => mismatched.push((size, source.clone())),
            // A chain broken before this size: already reported.
            None if chain.first_bad.is_some() => {}
            None => findings.push(Finding::Truncated {
                size,
                log_size,
                source: source.clone(),
            }),
        }
    }
    for (size, source) in mismatched {
        // The log matches a signed checkpoint at or past this size: two
        // signed histories.
        if let Some(&other) = matched.iter().find(|&&m| m >= size) {
            findings.push(Finding::Forked {
                size,
                first: by_size[&other].1.clone(),
                second: source,
            });
        } else {
            let intact_up_to = matched
                .iter()
                .copied()
                .filter(|&m| m < size)
                .max()
                .unwrap_or(0);
            findings.push(Finding::Rewritten {
                size,
                intact_up_to,
                source,
            });
        }
    }
    findings.sort();
    findings.dedup();
    Ok(Report {
        chain,
        checkpoints_checked: by_size.len(),
        matched_up_to: matched.into_iter().max().unwrap_or(0),
        findings,
    })
}
