//! API tokens and roles: who may do what through `firedrill serve`.
//!
//! A token is `fdt_` followed by 43 URL-safe base64 characters (256 random
//! bits from the OS). It is printed once, when created; the store keeps only
//! its SHA-256 hash (a 256-bit random secret needs no slow hash), and a
//! request is matched by hashing what it presents. Access is denied unless a
//! live token's role allows the action (and, for a token limited to some
//! runbooks, the runbook is one of them).

use base64::Engine as _;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::audit::{Actor, ActorKind, NewEvent, now_rfc3339};
use crate::store::{Applied, Batch, Store, StoreError, Write};

/// Every token starts with this, so that it is recognisable in a leak scan.
pub const TOKEN_PREFIX: &str = "fdt_";

/// What a token may do.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Serialize,
    Deserialize,
    clap::ValueEnum,
    schemars::JsonSchema,
)]
#[serde(rename_all = "kebab-case")]
pub enum Role {
    /// Read runbooks, kernels, runs, audit, switch state.
    Viewer,
    /// Viewer, plus start runs (dry-run and live), cancel runs, engage the switch.
    Operator,
    /// Viewer, plus approve steps that wait for approval.
    Approver,
    /// Everything: publish runbooks and kernels, release the switch, manage tokens.
    Admin,
    /// Only post alerts to the alert endpoints.
    Webhook,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Viewer => "viewer",
            Role::Operator => "operator",
            Role::Approver => "approver",
            Role::Admin => "admin",
            Role::Webhook => "webhook",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        Some(match text {
            "viewer" => Role::Viewer,
            "operator" => Role::Operator,
            "approver" => Role::Approver,
            "admin" => Role::Admin,
            "webhook" => Role::Webhook,
            _ => return None,
        })
    }

    /// Whether this role may perform `action`.
    pub fn allows(self, action: Action) -> bool {
        use Action::*;
        match self {
            Role::Admin => action != PostAlert,
            Role::Webhook => action == PostAlert,
            Role::Viewer => action == Read,
            Role::Operator => matches!(action, Read | StartRun | CancelRun | EngageSwitch),
            Role::Approver => matches!(action, Read | Approve | EngageSwitch),
        }
    }
}

/// What a request wants to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Read,
    StartRun,
    CancelRun,
    Approve,
    Publish,
    EngageSwitch,
    ReleaseSwitch,
    ManageTokens,
    PostAlert,
}

/// A stored token (never the token itself).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenRow {
    pub id: String,
    pub name: String,
    pub role: Role,
    /// Runbooks this token is limited to; empty = all.
    pub runbooks: Vec<String>,
    /// SHA-256 of the token, hex.
    #[serde(skip_serializing)]
    pub hash: String,
    pub created_at: String,
    pub created_by: String,
    pub revoked_at: Option<String>,
}

impl TokenRow {
    /// The actor a request with this token is recorded as.
    pub fn actor(&self) -> Actor {
        let kind = if self.role == Role::Webhook {
            ActorKind::AlertSource
        } else {
            ActorKind::Token
        };
        Actor {
            kind,
            id: self.name.clone(),
        }
    }

    /// Whether this token may see or act on `runbook`.
    pub fn covers(&self, runbook: &str) -> bool {
        self.runbooks.is_empty() || self.runbooks.iter().any(|r| r == runbook)
    }
}

/// A token operation that cannot be done.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    #[error("token name {0:?} is not valid: use 1 to 64 letters, digits, '-', '_' or '.'")]
    Name(String),
    #[error("a live token named {0:?} exists; revoke it first or pick another name")]
    Exists(String),
    #[error("no live token named or with id {0:?}; list them with `firedrill token list`")]
    NotFound(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// SHA-256 of a presented token, hex.
pub fn hash_token(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

/// Create a token; returns its row and the token, which is not stored and
/// must be shown to the caller exactly once.
pub async fn create(
    store: &dyn Store,
    name: &str,
    role: Role,
    runbooks: Vec<String>,
    by: &Actor,
) -> Result<(TokenRow, String), TokenError> {
    if !valid_name(name) {
        return Err(TokenError::Name(name.to_string()));
    }
    let mut bytes = [0u8; 32];
    rand::fill(&mut bytes);
    let token = format!(
        "{TOKEN_PREFIX}{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
    );
    let row = TokenRow {
        id: uuid::Uuid::now_v7().to_string(),
        name: name.to_string(),
        role,
        runbooks,
        hash: hash_token(&token),
        created_at: now_rfc3339(),
        created_by: by.to_string(),
        revoked_at: None,
    };
    let event = NewEvent::new(by, "token.created", format!("token:{name}")).details(
        serde_json::json!({"id": row.id, "role": role.as_str(), "runbooks": row.runbooks}),
    );
    match store
        .apply(
            Batch::new()
                .write(Write::InsertToken(row.clone()))
                .event(event),
        )
        .await?
    {
        Applied::Done => Ok((row, token)),
        _ => Err(TokenError::Exists(name.to_string())),
    }
}

/// Revoke the live token named or identified by `which`.
pub async fn revoke(store: &dyn Store, which: &str, by: &Actor) -> Result<TokenRow, TokenError> {
    let row = store
        .tokens()
        .await?
        .into_iter()
        .find(|t| t.revoked_at.is_none() && (t.name == which || t.id == which))
        .ok_or_else(|| TokenError::NotFound(which.to_string()))?;
    let at = now_rfc3339();
    let event = NewEvent::new(by, "token.revoked", format!("token:{}", row.name))
        .details(serde_json::json!({"id": row.id, "role": row.role.as_str()}));
    store
        .apply(
            Batch::new()
                .write(Write::RevokeToken {
                    id: row.id.clone(),
                    revoked_at: at.clone(),
                })
                .event(event),
        )
        .await?;
    Ok(TokenRow {
        revoked_at: Some(at),
        ..row
    })
}

/// The live token matching a presented bearer token, if any.
pub async fn authenticate(
    store: &dyn Store,
    presented: &str,
) -> Result<Option<TokenRow>, StoreError> {
    if !presented.starts_with(TOKEN_PREFIX) || presented.len() > 128 {
        return Ok(None);
    }
    Ok(store
        .token_by_hash(&hash_token(presented))
        .await?
        .filter(|t| t.revoked_at.is_none()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roles_allow_only_their_actions() {
        use Action::*;
        let all = [
            Read,
            StartRun,
            CancelRun,
            Approve,
            Publish,
            EngageSwitch,
            ReleaseSwitch,
            ManageTokens,
            PostAlert,
        ];
        let allowed = |r: Role| {
            all.iter()
                .filter(|a| r.allows(**a))
                .copied()
                .collect::<Vec<_>>()
        };
        assert_eq!(allowed(Role::Viewer), [Read]);
        assert_eq!(
            allowed(Role::Operator),
            [Read, StartRun, CancelRun, EngageSwitch]
        );
        assert_eq!(allowed(Role::Approver), [Read, Approve, EngageSwitch]);
        assert_eq!(allowed(Role::Webhook), [PostAlert]);
        assert_eq!(allowed(Role::Admin).len(), all.len() - 1);
        assert!(!Role::Admin.allows(PostAlert));
    }
}
