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
    /// The newest checkpoint this home signed (`audit/signed`): the engine
    /// refuses to sign a log that does not extend it.
    anchor_path: PathBuf,
}

impl Keys {
    /// Load the signing key (generating it into the home on first use, unless
    /// `[audit] signing-key` names a file) and the trusted keys: this key, the
    /// keys it rotated out (`audit/retired.keys`), and `[audit] trusted-keys`.
    /// Returns whether a key was generated.
    pub fn load(home: &Path, config: &AuditConfig) -> Result<(Self, bool), TlogError> {
        Self::load_as(home, config, false)
    }

    /// [`Keys::load`]; with `renaming`, a key named other than `[audit]
    /// origin` is accepted (to rotate to a key of the new name).
    pub fn load_as(
        home: &Path,
        config: &AuditConfig,
        renaming: bool,
    ) -> Result<(Self, bool), TlogError> {
        let dir = home.join("audit");
        let signing_path = config
            .signing_key
            .clone()
            .unwrap_or_else(|| dir.join("signing.key"));
        let origin = origin_of(config, &signing_path);
        checkpoint::check_name(&origin)
            .map_err(|e| TlogError::Invalid(format!("[audit] origin: {e}")))?;
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
        if signer.verifier().name != origin && !renaming {
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
                anchor_path: dir.join("signed"),
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

    /// The newest checkpoint this home signed, if any.
    pub fn anchor(&self) -> Result<Option<Checkpoint>, TlogError> {
        match std::fs::read_to_string(&self.anchor_path) {
            Ok(note) => Ok(Some(
                checkpoint::open(&note, &self.trusted)
                    .map_err(|e| {
                        TlogError::Invalid(format!(
                            "{} (the last checkpoint this home signed): {e}",
                            self.anchor_path.display()
                        ))
                    })?
                    .checkpoint,
            )),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(io("read the last signed checkpoint", &self.anchor_path)(e)),
        }
    }

    /// Remember `note` as the newest checkpoint signed here.
    fn set_anchor(&self, note: &str) -> Result<(), TlogError> {
        let tmp = self.anchor_path.with_extension("tmp");
        let write = || -> std::io::Result<()> {
            std::fs::write(&tmp, note)?;
            std::fs::File::open(&tmp)?.sync_all()?;
            std::fs::rename(&tmp, &self.anchor_path)
        };
        write().map_err(io("write the last signed checkpoint", &self.anchor_path))
    }
}

/// `[audit] origin`; else the name of the signing key the home has (so a
/// new host name does not change the log's name); else
/// `firedrill/<hostname>`.
fn origin_of(config: &AuditConfig, signing: &Path) -> String {
    if let Some(o) = &config.origin {
        return o.clone();
    }
    std::fs::read_to_string(signing)
        .ok()
        .and_then(|t| SignerKey::parse(&t).ok())
        .map_or_else(|| config.origin(), |k| k.verifier().name)
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
    let dir = home.join("audit");
    let signing = config
        .signing_key
        .clone()
        .unwrap_or_else(|| dir.join("signing.key"));
    let origin = origin_of(config, &signing);
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
    let mut tree = Tree::new(keys.anchor()?);
    tree.extend(store).await?;
    keep(store, keys, &tree.checkpoint(&keys.origin)?).await
}

/// The log's tree as this process has read it: the frontier, the hash of
/// its last record (to notice the log shrinking under it), and its root at
/// the size this home last signed (to refuse to sign a rewritten log).
#[derive(Debug, Default)]
pub struct Tree {
    frontier: tree::Frontier,
    last_hash: Option<String>,
    anchor: Option<Checkpoint>,
    /// Whether the log extends the anchor; `None` until read that far.
    extends_anchor: Option<bool>,
}

impl Tree {
    /// An empty tree that checks the log against `anchor` as it grows.
    pub fn new(anchor: Option<Checkpoint>) -> Self {
        let extends_anchor = match &anchor {
            Some(a) if a.size == 0 => Some(a.root == tree::empty_root()),
            Some(_) => None,
            None => Some(true),
        };
        Tree {
            anchor,
            extends_anchor,
            ..Tree::default()
        }
    }

    pub fn size(&self) -> u64 {
        self.frontier.size()
    }

    pub fn root(&self) -> tree::Hash {
        self.frontier.root()
    }

    /// Add the records after the tree's size, a page at a time (the
    /// frontier holds O(log n) hashes whatever the log's size). Refuses a
    /// log whose last record read before is gone or changed.
    pub async fn extend(&mut self, store: &dyn Store) -> Result<(), TlogError> {
        if let Some(last) = &self.last_hash {
            let size = self.frontier.size() as i64;
            let now = store.audit_hashes(size - 1, 1).await?;
            if now.first().map(|(seq, h)| (*seq, h)) != Some((size, last)) {
                return Err(TlogError::Invalid(format!(
                    "record {size}, read before, is gone or changed: the log was truncated or rewritten under this process; run `firedrill audit verify --checkpoint`"
                )));
            }
        }
        loop {
            let page = store.audit_hashes(self.size() as i64, HASH_PAGE).await?;
            let full = page.len() as i64 == HASH_PAGE;
            for (seq, hash) in page {
                if seq as u64 != self.size() + 1 {
                    return Err(TlogError::Invalid(format!(
                        "the audit log skips from record {} to {seq}; run `firedrill audit verify`",
                        self.size()
                    )));
                }
                self.frontier.push(tree::record_leaf(&hash).ok_or_else(|| {
                    TlogError::Invalid(format!(
                        "record {seq}'s hash is not SHA-256 hex; run `firedrill audit verify`"
                    ))
                })?);
                self.last_hash = Some(hash);
                if let Some(a) = &self.anchor
                    && a.size == self.size()
                {
                    self.extends_anchor = Some(self.frontier.root() == a.root);
                }
            }
            if !full {
                return Ok(());
            }
        }
    }

    /// The checkpoint of the tree as read, if this home may sign it: the
    /// log must be non-empty and extend the last checkpoint signed here.
    pub fn checkpoint(&self, origin: &str) -> Result<Checkpoint, TlogError> {
        if self.size() == 0 {
            return Err(TlogError::Invalid(
                "the audit log is empty: there is nothing to checkpoint yet".into(),
            ));
        }
        if self.extends_anchor != Some(true) {
            let a = self.anchor.as_ref().map_or(0, |a| a.size);
            return Err(TlogError::Invalid(format!(
                "refusing to sign: the log's first {a} records are not the ones this home signed last (audit/signed, {a} records): the log was truncated or rewritten; run `firedrill audit verify --checkpoint` with the witnesses' checkpoints"
            )));
        }
        Ok(Checkpoint {
            origin: origin.to_string(),
            size: self.size(),
            root: self.root(),
        })
    }
}

/// Sign `cp` and keep it (or answer the one kept at its size).
pub async fn keep(
    store: &dyn Store,
    keys: &Keys,
    cp: &Checkpoint,
) -> Result<SignedCheckpoint, TlogError> {
    let signed = keep_row(store, keys, cp).await?;
    if keys.anchor()?.is_none_or(|a| a.size < cp.size) {
        keys.set_anchor(&keys.sign(cp))?;
    }
    Ok(signed)
}

async fn keep_row(
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
    /// Why it could not be read, if it could not.
    pub problem: Option<String>,
}

/// A checkpoint file's text: a regular file of at most
/// [`checkpoint::MAX_NOTE_BYTES`] (read no further, so a device or a huge
/// file cannot exhaust memory; a FIFO is refused before it is opened).
pub fn read_checkpoint_file(path: &Path) -> Result<String, String> {
    use std::io::Read as _;
    let meta = std::fs::metadata(path).map_err(|e| format!("cannot read it: {e}"))?;
    if !meta.is_file() {
        return Err("it is not a regular file".into());
    }
    let mut text = String::new();
    std::fs::File::open(path)
        .and_then(|f| {
            f.take(checkpoint::MAX_NOTE_BYTES as u64 + 1)
                .read_to_string(&mut text)
        })
        .map_err(|e| format!("cannot read it as text: {e}"))?;
    if text.len() > checkpoint::MAX_NOTE_BYTES {
        return Err(format!(
            "it is larger than a checkpoint may be ({} bytes)",
            checkpoint::MAX_NOTE_BYTES
        ));
    }
    Ok(text)
}

/// Checkpoints from files, witness directories and the store. A source
/// that cannot be read is kept with its problem (verification reports it
/// and goes on with the others).
pub async fn gather(
    files: &[PathBuf],
    witness_dirs: &[PathBuf],
    store: Option<&dyn Store>,
) -> Result<Vec<Held>, TlogError> {
    let mut held = Vec::new();
    let read = |path: &Path| {
        let (note, problem) = match read_checkpoint_file(path) {
            Ok(note) => (note, None),
            Err(why) => (String::new(), Some(why)),
        };
        Held {
            source: path.display().to_string(),
            note,
            problem,
        }
    };
    for f in files {
        held.push(read(f));
    }
    for dir in witness_dirs {
        let entries = match std::fs::read_dir(dir) {
            Ok(e) => e,
            Err(e) => {
                held.push(Held {
                    source: dir.display().to_string(),
                    note: String::new(),
                    problem: Some(format!(
                        "cannot read the witness directory (is the share mounted?): {e}"
                    )),
                });
                continue;
            }
        };
        let mut found: Vec<(u64, PathBuf)> = entries
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
            held.push(read(&path));
        }
    }
    if let Some(store) = store {
        for row in store.checkpoints(STORED_CHECKED).await? {
            held.push(Held {
                source: format!("store (checkpoint {})", row.size),
                note: row.note,
                problem: None,
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
                "FORK: {first} and {second} are both signed by trusted keys but describe different histories (they cannot both be prefixes of one log; they differ at or before record {size}): two logs were kept, or a rewritten log was signed"
            ),
            Finding::Rewritten {
                size,
                intact_up_to,
                source,
            } if *intact_up_to == 0 => write!(
                f,
                "REWRITTEN: the log's first {size} records are not the ones {source} signed; no older checkpoint was given, so the rewrite is somewhere in records 1 to {size} (records were rewritten, deleted and re-added, or replaced)"
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
        if let Some(why) = &h.problem {
            findings.push(Finding::Untrusted {
                source: h.source.clone(),
                why: why.clone(),
            });
            continue;
        }
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
        // This log's origin, or a former one (the name of a key it trusts:
        // the log was renamed with `audit key rotate`).
        if cp.origin != origin && !trusted.iter().any(|k| k.name == cp.origin) {
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
