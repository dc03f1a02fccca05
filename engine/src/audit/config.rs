//! `[audit]` in `firedrill.toml`: checkpoints, their key, witnesses and the
//! syslog export.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// `[audit]` in `firedrill.toml`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "kebab-case", default)]
pub struct AuditConfig {
    /// The log's name in its checkpoints (the note's origin, and the
    /// signing key's name): one per deployment, printable ASCII without
    /// spaces or `+`, for example `firedrill.example.com/prod`. Default
    /// `firedrill/<hostname>`.
    pub origin: Option<String>,
    /// The Ed25519 signing key (`PRIVATE+KEY+...`, as `firedrill audit key`
    /// writes). Default: `audit/signing.key` in the home, generated on first
    /// use, owner-only.
    pub signing_key: Option<PathBuf>,
    /// Verifier keys (`<name>+<id>+<base64>`, as `firedrill audit key`
    /// prints) whose checkpoints verification trusts, besides this home's
    /// own key and the keys it rotated out.
    pub trusted_keys: Vec<String>,
    /// `serve` signs a checkpoint once this many records were written since
    /// the last one. Default 1,000.
    pub checkpoint_every_records: u64,
    /// ...or once this many seconds passed with at least one new record.
    /// Default 60.
    pub checkpoint_interval_s: u64,
    /// Where checkpoints are shipped, so that a copy lives outside the
    /// database. Default none (set at least one in production).
    pub witnesses: Vec<WitnessConfig>,
    /// A failed delivery to a witness is retried after this many seconds,
    /// doubling up to 60. Default 5.
    pub witness_retry_s: u64,
    /// Stream every audit record to this syslog server as RFC 5424 (for a
    /// SIEM): `udp://HOST:PORT`, `tcp://HOST:PORT` or `unix:PATH`. Default
    /// none.
    pub syslog_export: Option<String>,
}

impl Default for AuditConfig {
    fn default() -> Self {
        AuditConfig {
            origin: None,
            signing_key: None,
            trusted_keys: Vec::new(),
            checkpoint_every_records: 1_000,
            checkpoint_interval_s: 60,
            witnesses: Vec::new(),
            witness_retry_s: 5,
            syslog_export: None,
        }
    }
}

impl AuditConfig {
    /// The configured origin, or `firedrill/<hostname>`.
    pub fn origin(&self) -> String {
        self.origin.clone().unwrap_or_else(|| {
            let host = hostname()
                .filter(|h| super::checkpoint::check_name(h).is_ok())
                .unwrap_or_else(|| "localhost".into());
            format!("firedrill/{host}")
        })
    }
}

/// This machine's host name, if it is printable ASCII without spaces.
pub fn hostname() -> Option<String> {
    nix::unistd::gethostname()
        .ok()
        .and_then(|h| h.into_string().ok())
        .filter(|h| !h.is_empty() && h.bytes().all(|b| b.is_ascii_graphic()))
}

/// One place checkpoints are shipped to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(
    deny_unknown_fields,
    rename_all = "kebab-case",
    rename_all_fields = "kebab-case",
    tag = "kind"
)]
pub enum WitnessConfig {
    /// Write each checkpoint as `<size>.checkpoint` (and `latest`) into a
    /// directory: another disk, a mounted share. `audit verify
    /// --witness-dir` reads it back.
    Directory { path: PathBuf },
    /// POST each checkpoint (`text/plain`, the signed note) to a URL; a 2xx
    /// answer is a delivery.
    Http {
        url: String,
        /// The secret (from `[secrets]`) sent as `Authorization: Bearer`.
        token_secret: Option<String>,
        /// Deadline of one delivery, in milliseconds. Default 5,000.
        #[serde(default = "default_http_timeout_ms")]
        timeout_ms: u64,
    },
    /// Send each checkpoint to syslog (RFC 5424, `udp://HOST:PORT`,
    /// `tcp://HOST:PORT` or `unix:PATH`, e.g. `unix:/dev/log` for journald).
    Syslog { address: String },
}

fn default_http_timeout_ms() -> u64 {
    5_000
}

impl WitnessConfig {
    /// How logs and metrics name this witness.
    pub fn name(&self) -> String {
        match self {
            WitnessConfig::Directory { path } => format!("directory:{}", path.display()),
            WitnessConfig::Http { url, .. } => format!("http:{}", without_credentials(url)),
            WitnessConfig::Syslog { address } => format!("syslog:{address}"),
        }
    }
}

pub use crate::outbound::without_credentials;
