//! API tokens and roles: who may do what through `firedrill serve`.
//!
//! A token is `fdt_` followed by 43 URL-safe base64 characters (256 random
//! bits from the OS). It is printed once, when created; the store keeps only
//! its SHA-256 hash (a 256-bit random secret needs no slow hash), and a
//! request is matched by hashing what it presents. Access is denied unless a
//! live token's role allows the action (and, for a token limited to some
//! runbooks, the runbook is one of them).
//!
//! Every token belongs to a person (its `owner`, required at creation),
//! who is the one counted in an approval. Only the machine owner (the CLI)
//! names the owner; a token minted through the API belongs to the same
//! person as the token that minted it. A token that manages tokens may
//! only see, create and revoke tokens no wider than itself: a role it
//! includes ([`Role::includes`]) and runbooks within its own
//! ([`TokenRow::may_manage`]).

use base64::Engine as _;
use sha2::{Digest, Sha256};

use crate::audit::{Actor, ActorKind, NewEvent, now_rfc3339};
use crate::store::{Applied, Batch, Store, StoreError, Write};

/// Every token starts with this, so that it is recognisable in a leak scan.
pub const TOKEN_PREFIX: &str = "fdt_";
/// Every console session id starts with this.
pub const SESSION_PREFIX: &str = "fds_";

pub use crate::role::{Action, Role};

pub use crate::store::TokenRow;

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
            auth: Some(crate::audit::ActorAuth {
                via: crate::audit::Via::Token,
                person: (!self.owner.is_empty()).then(|| self.owner.clone()),
            }),
        }
    }

    /// Whether this token may see or act on `runbook`.
    pub fn covers(&self, runbook: &str) -> bool {
        self.runbooks.is_empty() || self.runbooks.iter().any(|r| r == runbook)
    }

    /// Whether `runbooks` (a token's scope, empty = all) lies within this
    /// token's scope.
    pub fn covers_scope(&self, runbooks: &[String]) -> bool {
        self.runbooks.is_empty()
            || (!runbooks.is_empty() && runbooks.iter().all(|r| self.covers(r)))
    }

    /// Whether this token may see and revoke `other`: a role it includes,
    /// runbooks within its own.
    pub fn may_manage(&self, other: &TokenRow) -> bool {
        self.may_mint(other.role, &other.runbooks).is_ok()
    }

    /// Whether this token may create a token of `role` limited to
    /// `runbooks`; the reason when it may not.
    pub fn may_mint(&self, role: Role, runbooks: &[String]) -> Result<(), String> {
        if !self.role.includes(role) {
            return Err(format!(
                "token {:?} has role {} and may not create a token of role {}",
                self.name,
                self.role.as_str(),
                role.as_str()
            ));
        }
        if !self.covers_scope(runbooks) {
            return Err(format!(
                "token {:?} is limited to runbooks {}; a token it creates must be limited to some of them (\"runbooks\": [...])",
                self.name,
                self.runbooks.join(", ")
            ));
        }
        Ok(())
    }
}

/// What a new token is: its name, role, scope and owner.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenSpec {
    pub name: String,
    pub role: Role,
    /// Runbooks it is limited to; empty = all.
    pub runbooks: Vec<String>,
    /// The person it belongs to.
    pub owner: String,
}

/// A token operation that cannot be done.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    #[error("token name {0:?} is not valid: use 1 to 64 letters, digits, '-', '_' or '.'")]
    Name(String),
    #[error(
        "token owner {0:?} is not valid: name the person the token belongs to (1 to 64 letters, digits, '-', '_', '.' or '@')"
    )]
    Owner(String),
    #[error("runbook name {0:?} in the token's scope is not a valid runbook name")]
    Runbook(String),
    #[error("{0}")]
    Wider(String),
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

/// A person's name as a token owner: like a token name, `@` allowed too.
pub fn valid_person(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '@'))
}

/// Create a token; returns its row and the token, which is not stored and
/// must be shown to the caller exactly once. `within` is the token asking
/// (through the API): the new token may be no wider than it.
pub async fn create(
    store: &dyn Store,
    spec: TokenSpec,
    within: Option<&TokenRow>,
    by: &Actor,
) -> Result<(TokenRow, String), TokenError> {
    let TokenSpec {
        name,
        role,
        runbooks,
        mut owner,
    } = spec;
    // Through the API a token is minted for its minter's own person: one
    // who could name any owner could approve twice as two invented people.
    // Tokens for other people come from the machine owner (the CLI).
    if let Some(asking) = within {
        if owner.is_empty() {
            owner = asking.owner.clone();
        } else if owner != asking.owner {
            return Err(TokenError::Wider(format!(
                "a token created through the API belongs to the person behind the token creating it ({:?}); a token for {owner:?} must be created by the machine owner: `firedrill token create --owner {owner} ...`",
                asking.owner
            )));
        }
    }
    let name = name.as_str();
    if !valid_name(name) {
        return Err(TokenError::Name(name.to_string()));
    }
    if !valid_person(&owner) {
        return Err(TokenError::Owner(owner));
    }
    if let Some(bad) = runbooks.iter().find(|r| !valid_name(r)) {
        return Err(TokenError::Runbook(bad.clone()));
    }
    if let Some(asking) = within {
        asking
            .may_mint(role, &runbooks)
            .map_err(TokenError::Wider)?;
    }
    let token = random_secret(TOKEN_PREFIX);
    let row = TokenRow {
        id: uuid::Uuid::now_v7().to_string(),
        name: name.to_string(),
        role,
        runbooks,
        hash: hash_token(&token),
        created_at: now_rfc3339(),
        created_by: by.to_string(),
        owner,
        revoked_at: None,
    };
    let event = NewEvent::new(by, crate::audit::Action::TokenCreated, format!("token:{name}")).details(
        serde_json::json!({"id": row.id, "role": role.as_str(), "runbooks": row.runbooks, "owner": row.owner}),
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

/// Revoke the live token named or identified by `which`. `within` is the
/// token asking (through the API): a token it may not manage does not
/// exist, as far as it knows.
pub async fn revoke(
    store: &dyn Store,
    which: &str,
    within: Option<&TokenRow>,
    by: &Actor,
) -> Result<TokenRow, TokenError> {
    let row = store
        .tokens()
        .await?
        .into_iter()
        .find(|t| t.revoked_at.is_none() && (t.name == which || t.id == which))
        .filter(|t| within.is_none_or(|w| w.may_manage(t)))
        .ok_or_else(|| TokenError::NotFound(which.to_string()))?;
    let at = now_rfc3339();
    let event = NewEvent::new(
        by,
        crate::audit::Action::TokenRevoked,
        format!("token:{}", row.name),
    )
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

fn random_secret(prefix: &str) -> String {
    let mut bytes = [0u8; 32];
    rand::fill(&mut bytes);
    format!(
        "{prefix}{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
    )
}

/// Start a console session for `token`, lasting `ttl_s` seconds; returns
/// the session id for the cookie (only its hash is stored).
pub async fn start_session(
    store: &dyn Store,
    token: &TokenRow,
    ttl_s: u64,
) -> Result<String, StoreError> {
    let id = random_secret(SESSION_PREFIX);
    let now = std::time::SystemTime::now();
    let expires = now + std::time::Duration::from_secs(ttl_s);
    store
        .apply(
            Batch::new()
                .write(Write::InsertSession {
                    hash: hash_token(&id),
                    token_id: token.id.clone(),
                    created_at: humantime::format_rfc3339_millis(now).to_string(),
                    expires_at: humantime::format_rfc3339_millis(expires).to_string(),
                })
                .event(
                    NewEvent::new(
                        &token.actor(),
                        crate::audit::Action::ConsoleSignedIn,
                        &token.name,
                    )
                    .details(serde_json::json!({"role": token.role.as_str(), "ttl_s": ttl_s})),
                ),
        )
        .await?;
    Ok(id)
}

/// The live token of a presented console session id, if the session is
/// neither expired nor ended and its token not revoked.
pub async fn session(store: &dyn Store, presented: &str) -> Result<Option<TokenRow>, StoreError> {
    if !presented.starts_with(SESSION_PREFIX) || presented.len() > 128 {
        return Ok(None);
    }
    Ok(store
        .session_token(&hash_token(presented), &now_rfc3339())
        .await?
        .filter(|t| t.revoked_at.is_none()))
}

/// End the console session `presented` (sign-out), for `token`.
pub async fn end_session(
    store: &dyn Store,
    presented: &str,
    token: &TokenRow,
) -> Result<(), StoreError> {
    store
        .apply(
            Batch::new()
                .write(Write::EndSession {
                    hash: hash_token(presented),
                    now: now_rfc3339(),
                })
                .event(NewEvent::new(
                    &token.actor(),
                    crate::audit::Action::ConsoleSignedOut,
                    &token.name,
                )),
        )
        .await?;
    Ok(())
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

    fn token(role: Role, runbooks: &[&str]) -> TokenRow {
        TokenRow {
            id: "id".into(),
            name: "t".into(),
            role,
            runbooks: runbooks.iter().map(|s| s.to_string()).collect(),
            hash: String::new(),
            created_at: String::new(),
            created_by: String::new(),
            owner: "alice".into(),
            revoked_at: None,
        }
    }

    /// Every combination of asking role and scope against every role and
    /// scope of the new token.
    #[test]
    fn a_token_mints_and_manages_only_tokens_no_wider_than_itself() {
        let roles = [
            Role::Viewer,
            Role::Operator,
            Role::Approver,
            Role::Admin,
            Role::Webhook,
        ];
        let scopes: [&[&str]; 5] = [&[], &["alpha"], &["beta"], &["alpha", "beta"], &["gamma"]];
        for asking_role in roles {
            for asking_scope in scopes {
                let asking = token(asking_role, asking_scope);
                for role in roles {
                    for scope in scopes {
                        let scope: Vec<String> = scope.iter().map(|s| s.to_string()).collect();
                        let role_ok = asking_role == Role::Admin || asking_role == role;
                        let scope_ok = asking_scope.is_empty()
                            || (!scope.is_empty()
                                && scope.iter().all(|r| asking_scope.contains(&r.as_str())));
                        assert_eq!(
                            asking.may_mint(role, &scope).is_ok(),
                            role_ok && scope_ok,
                            "{asking_role:?} {asking_scope:?} minting {role:?} {scope:?}"
                        );
                        let other = TokenRow {
                            role,
                            runbooks: scope,
                            ..token(role, &[])
                        };
                        assert_eq!(asking.may_manage(&other), role_ok && scope_ok);
                    }
                }
            }
        }
        // The hole that was reported: a runbook-scoped admin minting an
        // unscoped admin.
        assert!(
            token(Role::Admin, &["alpha"])
                .may_mint(Role::Admin, &[])
                .is_err()
        );
    }

    #[test]
    fn owners_are_people_names() {
        assert!(valid_person("alice"));
        assert!(valid_person("alice@example.com"));
        for bad in ["", "a b", "alice\u{1b}[31m", "token:x", &"a".repeat(65)] {
            assert!(!valid_person(bad), "{bad:?}");
        }
    }
}
