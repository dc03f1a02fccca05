//! Signed checkpoints of the audit log, in the C2SP formats people and
//! tools already read: a [tlog-checkpoint] body (origin, tree size, root
//! hash in base64) in a [signed-note] with Ed25519 signatures.
//!
//! ```text
//! firedrill.example/prod
//! 1234
//! 9xw3hLmnK7mHCz8fS5hS1X1ydBq2Pwi1uHzpF4Gr4Mw=
//!
//! — firedrill.example/prod Az3grm2m...base64(key id || signature)...
//! ```
//!
//! Keys use the Go `note` package's text forms: a signer key
//! `PRIVATE+KEY+<name>+<key id>+<base64(0x01 || seed)>` and a verifier key
//! `<name>+<key id>+<base64(0x01 || public key)>`, where the key id is the
//! first 4 bytes of `SHA-256(name || "\n" || 0x01 || public key)`.
//!
//! [tlog-checkpoint]: https://c2sp.org/tlog-checkpoint
//! [signed-note]: https://c2sp.org/signed-note

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use ed25519_dalek::{Signer as _, SigningKey, VerifyingKey};
use sha2::{Digest, Sha256};

use super::tree::Hash;

/// The signature algorithm byte of Ed25519 in signed notes.
const ALG_ED25519: u8 = 0x01;

/// A checkpoint note is at most this long (a body is three short lines).
pub const MAX_NOTE_BYTES: usize = 16 * 1024;
/// Signature lines read from one note; more are refused.
pub const MAX_SIGNATURES: usize = 16;

/// Why a key, note or checkpoint was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NoteError {
    #[error("malformed {what}: {why}")]
    Malformed { what: &'static str, why: String },
    #[error(
        "no signature by a trusted key (signed by {signers}); add the signer's verifier key to [audit] trusted-keys if it is yours"
    )]
    UnknownKey { signers: String },
    #[error("the signature by {key} does not verify: the note was altered or forged")]
    BadSignature { key: String },
}

fn malformed(what: &'static str, why: impl Into<String>) -> NoteError {
    NoteError::Malformed {
        what,
        why: why.into(),
    }
}

/// A key name or origin: 1 to 128 printable ASCII characters with no
/// space and no `+` (the note format's separators).
pub fn check_name(name: &str) -> Result<(), NoteError> {
    if name.is_empty()
        || name.len() > 128
        || !name.bytes().all(|b| b.is_ascii_graphic() && b != b'+')
    {
        return Err(malformed(
            "name",
            format!(
                "{name:?} must be 1 to 128 printable ASCII characters without spaces or '+' (for example firedrill.example/prod)"
            ),
        ));
    }
    Ok(())
}

fn key_id(name: &str, public: &[u8; 32]) -> [u8; 4] {
    let mut h = Sha256::new();
    h.update(name.as_bytes());
    h.update(b"\n");
    h.update([ALG_ED25519]);
    h.update(public);
    let d = h.finalize();
    [d[0], d[1], d[2], d[3]]
}

/// A key that may verify signatures: a name and an Ed25519 public key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifierKey {
    pub name: String,
    id: [u8; 4],
    key: VerifyingKey,
}

impl VerifierKey {
    /// Parse `<name>+<key id hex>+<base64(0x01 || public key)>`.
    pub fn parse(text: &str) -> Result<Self, NoteError> {
        let text = text.trim();
        let mut parts = text.splitn(3, '+');
        let (Some(name), Some(id), Some(key)) = (parts.next(), parts.next(), parts.next()) else {
            return Err(malformed(
                "verifier key",
                "expected <name>+<key id>+<base64 key> (as printed by `firedrill audit key`)",
            ));
        };
        check_name(name)?;
        let raw = B64
            .decode(key)
            .map_err(|e| malformed("verifier key", format!("key is not base64: {e}")))?;
        let [alg, public @ ..] = raw.as_slice() else {
            return Err(malformed("verifier key", "empty key"));
        };
        if *alg != ALG_ED25519 {
            return Err(malformed(
                "verifier key",
                format!("algorithm {alg} is not Ed25519 (1)"),
            ));
        }
        let public: [u8; 32] = public
            .try_into()
            .map_err(|_| malformed("verifier key", "an Ed25519 public key is 32 bytes"))?;
        let key = VerifyingKey::from_bytes(&public)
            .map_err(|_| malformed("verifier key", "not a valid Ed25519 public key"))?;
        let computed = key_id(name, &public);
        if id != hex::encode(computed) {
            return Err(malformed(
                "verifier key",
                format!(
                    "key id {id} does not match the key (it is {})",
                    hex::encode(computed)
                ),
            ));
        }
        Ok(VerifierKey {
            name: name.to_string(),
            id: computed,
            key,
        })
    }

    /// The key id, hex (what signatures and messages name).
    pub fn id(&self) -> String {
        hex::encode(self.id)
    }

    /// `<name>+<id>`, how messages name a key.
    pub fn label(&self) -> String {
        format!("{}+{}", self.name, self.id())
    }
}

impl std::fmt::Display for VerifierKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut raw = vec![ALG_ED25519];
        raw.extend_from_slice(self.key.as_bytes());
        write!(f, "{}+{}+{}", self.name, self.id(), B64.encode(raw))
    }
}

/// A signing key and its name.
pub struct SignerKey {
    name: String,
    key: SigningKey,
}

impl std::fmt::Debug for SignerKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SignerKey({})", self.verifier().label())
    }
}

impl SignerKey {
    /// A new random key named `name`.
    pub fn generate(name: &str) -> Result<Self, NoteError> {
        check_name(name)?;
        let seed: [u8; 32] = rand::random();
        Ok(SignerKey {
            name: name.to_string(),
            key: SigningKey::from_bytes(&seed),
        })
    }

    /// Parse `PRIVATE+KEY+<name>+<key id>+<base64(0x01 || seed)>`.
    pub fn parse(text: &str) -> Result<Self, NoteError> {
        let rest = text.trim().strip_prefix("PRIVATE+KEY+").ok_or_else(|| {
            malformed("signing key", "expected PRIVATE+KEY+<name>+<key id>+<key>")
        })?;
        let mut parts = rest.splitn(3, '+');
        let (Some(name), Some(id), Some(key)) = (parts.next(), parts.next(), parts.next()) else {
            return Err(malformed(
                "signing key",
                "expected PRIVATE+KEY+<name>+<key id>+<key>",
            ));
        };
        check_name(name)?;
        let raw = zeroize::Zeroizing::new(
            B64.decode(key)
                .map_err(|_| malformed("signing key", "the key is not base64"))?,
        );
        let [ALG_ED25519, seed @ ..] = raw.as_slice() else {
            return Err(malformed("signing key", "not an Ed25519 key"));
        };
        let seed: &[u8; 32] = seed
            .try_into()
            .map_err(|_| malformed("signing key", "an Ed25519 seed is 32 bytes"))?;
        let signer = SignerKey {
            name: name.to_string(),
            key: SigningKey::from_bytes(seed),
        };
        if id != signer.verifier().id() {
            return Err(malformed(
                "signing key",
                "the key id does not match the key",
            ));
        }
        Ok(signer)
    }

    /// The text form, for the key file (owner-only).
    pub fn to_secret_text(&self) -> zeroize::Zeroizing<String> {
        let mut raw = zeroize::Zeroizing::new(vec![ALG_ED25519]);
        raw.extend_from_slice(self.key.as_bytes());
        zeroize::Zeroizing::new(format!(
            "PRIVATE+KEY+{}+{}+{}\n",
            self.name,
            self.verifier().id(),
            B64.encode(raw.as_slice())
        ))
    }

    pub fn verifier(&self) -> VerifierKey {
        let key = self.key.verifying_key();
        VerifierKey {
            name: self.name.clone(),
            id: key_id(&self.name, key.as_bytes()),
            key,
        }
    }

    /// The signature line for `body`: `— <name> <base64(id || sig)>\n`.
    fn sign_line(&self, body: &str) -> String {
        let mut raw = self.verifier().id.to_vec();
        raw.extend_from_slice(&self.key.sign(body.as_bytes()).to_bytes());
        format!("\u{2014} {} {}\n", self.name, B64.encode(raw))
    }
}

/// What a checkpoint states: the log's origin, its size, its root.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checkpoint {
    pub origin: String,
    pub size: u64,
    pub root: Hash,
}

impl Checkpoint {
    /// The note body: origin, size and base64 root, one per line.
    pub fn body(&self) -> String {
        format!(
            "{}\n{}\n{}\n",
            self.origin,
            self.size,
            B64.encode(self.root)
        )
    }

    /// The signed note.
    pub fn sign(&self, key: &SignerKey) -> String {
        let body = self.body();
        let line = key.sign_line(&body);
        format!("{body}\n{line}")
    }

    pub fn root_b64(&self) -> String {
        B64.encode(self.root)
    }
}

/// A checkpoint whose signature by a trusted key verified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedCheckpoint {
    pub checkpoint: Checkpoint,
    /// The trusted key that signed it (`name+id`).
    pub signer: String,
    /// The whole note, as read.
    pub note: String,
}

/// Parse a signed checkpoint note and check that at least one signature is
/// by a key in `trusted` and verifies. Signatures by unknown keys are
/// ignored (as the note format says) unless none is trusted.
pub fn open(note: &str, trusted: &[VerifierKey]) -> Result<SignedCheckpoint, NoteError> {
    if note.len() > MAX_NOTE_BYTES {
        return Err(malformed(
            "checkpoint",
            format!("longer than {MAX_NOTE_BYTES} bytes"),
        ));
    }
    if note.chars().any(|c| c != '\n' && c.is_control()) {
        return Err(malformed("checkpoint", "contains control characters"));
    }
    let Some(split) = note.find("\n\n") else {
        return Err(malformed(
            "checkpoint",
            "no blank line between the body and the signatures",
        ));
    };
    let (body, sigs) = (&note[..=split], &note[split + 2..]);
    let checkpoint = parse_body(body)?;
    if !sigs.ends_with('\n') {
        return Err(malformed("checkpoint", "the note must end with a newline"));
    }
    let mut signers = Vec::new();
    for (n, line) in sigs.lines().enumerate() {
        if n >= MAX_SIGNATURES {
            return Err(malformed(
                "checkpoint",
                format!("more than {MAX_SIGNATURES} signatures"),
            ));
        }
        let Some(rest) = line.strip_prefix("\u{2014} ") else {
            return Err(malformed(
                "checkpoint",
                format!("signature line {} does not start with \"— \"", n + 1),
            ));
        };
        let Some((name, sig)) = rest.split_once(' ') else {
            return Err(malformed(
                "checkpoint",
                format!("signature line {} has no signature", n + 1),
            ));
        };
        let raw = B64
            .decode(sig)
            .map_err(|_| malformed("checkpoint", "a signature is not base64"))?;
        if raw.len() < 4 {
            return Err(malformed("checkpoint", "a signature is too short"));
        }
        let id = hex::encode(&raw[..4]);
        let label = format!("{name}+{id}");
        let Some(key) = trusted.iter().find(|k| k.name == name && k.id() == id) else {
            signers.push(label);
            continue;
        };
        let verified = <[u8; 64]>::try_from(&raw[4..])
            .ok()
            .map(|s| ed25519_dalek::Signature::from_bytes(&s))
            .is_some_and(|s| key.key.verify_strict(body.as_bytes(), &s).is_ok());
        if !verified {
            return Err(NoteError::BadSignature { key: label });
        }
        return Ok(SignedCheckpoint {
            checkpoint,
            signer: label,
            note: note.to_string(),
        });
    }
    Err(NoteError::UnknownKey {
        signers: if signers.is_empty() {
            "nobody".into()
        } else {
            signers.join(", ")
        },
    })
}

fn parse_body(body: &str) -> Result<Checkpoint, NoteError> {
    let mut lines = body.lines();
    let (Some(origin), Some(size), Some(root)) = (lines.next(), lines.next(), lines.next()) else {
        return Err(malformed(
            "checkpoint",
            "the body needs three lines: origin, size, root hash",
        ));
    };
    check_name(origin)?;
    if size.is_empty()
        || !size.bytes().all(|b| b.is_ascii_digit())
        || (size.len() > 1 && size.starts_with('0'))
    {
        return Err(malformed(
            "checkpoint",
            format!("tree size {size:?} is not a decimal number"),
        ));
    }
    let size: u64 = size
        .parse()
        .map_err(|_| malformed("checkpoint", "tree size is too large"))?;
    let root: Hash = B64
        .decode(root)
        .ok()
        .and_then(|r| r.try_into().ok())
        .ok_or_else(|| malformed("checkpoint", "the root hash is not 32 bytes of base64"))?;
    Ok(Checkpoint {
        origin: origin.to_string(),
        size,
        root,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn checkpoint() -> Checkpoint {
        Checkpoint {
            origin: "firedrill.test/log".into(),
            size: 42,
            root: [7u8; 32],
        }
    }

    #[test]
    fn a_signed_checkpoint_opens_with_its_key_and_keys_round_trip() {
        let key = SignerKey::generate("firedrill.test/log").expect("key");
        let again = SignerKey::parse(&key.to_secret_text()).expect("parse");
        assert_eq!(again.verifier(), key.verifier());
        let verifier = VerifierKey::parse(&key.verifier().to_string()).expect("verifier");
        let note = checkpoint().sign(&key);
        assert!(
            note.starts_with("firedrill.test/log\n42\nBwcHBwcH"),
            "{note}"
        );
        let opened = open(&note, &[verifier]).expect("opens");
        assert_eq!(opened.checkpoint, checkpoint());
    }

    #[test]
    fn the_key_id_and_signature_are_the_go_note_packages() {
        // The example key from golang.org/x/mod/sumdb/note's documentation
        // (PeterNeumann): its verifier key and its signature of the body
        // "If you think cryptography is the answer to your problem,\nthen
        // you don't know what your problem is.\n".
        let v = VerifierKey::parse(
            "PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW",
        )
        .expect("the documented verifier key parses, so the key id is computed alike");
        let body = "If you think cryptography is the answer to your problem,\nthen you don't know what your problem is.\n";
        let note = format!(
            "{body}\n\u{2014} PeterNeumann x08go/ZJkuBS9UG/SffcvIAQxVBtiFupLLr8pAcElZInNIuGUgYN1FFYC2pZSNXgKvqfqdngotpRZb6KE6RyyBwJnAM=\n"
        );
        // Not a checkpoint body, so opening fails on the body; check the
        // signature directly.
        let sig = B64
            .decode("x08go/ZJkuBS9UG/SffcvIAQxVBtiFupLLr8pAcElZInNIuGUgYN1FFYC2pZSNXgKvqfqdngotpRZb6KE6RyyBwJnAM=")
            .expect("b64");
        assert_eq!(hex::encode(&sig[..4]), v.id());
        let sig = ed25519_dalek::Signature::from_bytes(&sig[4..].try_into().expect("64"));
        assert!(v.key.verify_strict(body.as_bytes(), &sig).is_ok());
        assert!(matches!(
            open(&note, std::slice::from_ref(&v)),
            Err(NoteError::Malformed { .. })
        ));
    }

    #[test]
    fn forged_altered_and_unknown_notes_are_refused() {
        let key = SignerKey::generate("firedrill.test/log").expect("key");
        let other = SignerKey::generate("firedrill.test/log").expect("key");
        let trusted = [key.verifier()];
        let note = checkpoint().sign(&key);
        // Altered size.
        let altered = note.replacen("\n42\n", "\n43\n", 1);
        assert!(matches!(
            open(&altered, &trusted),
            Err(NoteError::BadSignature { .. })
        ));
        // Signed by a key nobody trusts.
        let unknown = checkpoint().sign(&other);
        let err = open(&unknown, &trusted).expect_err("unknown key");
        assert!(
            matches!(&err, NoteError::UnknownKey { signers } if signers.contains(&other.verifier().id())),
            "{err}"
        );
        // A trusted key's id with a signature that is not its own.
        let zeroed = [&key.verifier().id[..], &[0u8; 64][..]].concat();
        let forged = format!(
            "{}\n\u{2014} firedrill.test/log {}\n",
            checkpoint().body(),
            B64.encode(zeroed)
        );
        assert!(matches!(
            open(&forged, &trusted),
            Err(NoteError::BadSignature { .. })
        ));
        // Malformed shapes.
        for bad in [
            "",
            "firedrill.test/log\n42\n",
            "firedrill.test/log\n042\nBwc=\n\n",
            "has space\n1\nBwc=\n\n",
            &format!("{}\n\u{2014} x\n", checkpoint().body()),
            &"x".repeat(MAX_NOTE_BYTES + 1),
            &note.replace('\n', "\r\n"),
        ] {
            assert!(
                matches!(open(bad, &trusted), Err(NoteError::Malformed { .. })),
                "{bad:?}"
            );
        }
        assert!(check_name("a+b").is_err());
        assert!(
            VerifierKey::parse("name+00000000+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW")
                .is_err()
        );
    }
}
