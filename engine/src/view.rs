//! The JSON answers of actions, shared by the API and the CLI's `--json`,
//! so a script sees the same field names whichever way it asks (and the
//! CLI as an API client can print what the server answers).

use serde_json::{Value, json};

use crate::store::{RunbookRow, TokenRow};

/// A runbook or kernel version after `publish`: `published` is false when
/// the same content was already there.
pub fn published(name: &str, version: impl Into<Value>, digest: &str, new: bool) -> Value {
    json!({"name": name, "version": version.into(), "digest": digest, "published": new})
}

/// A published runbook version with its source and the parsed definition
/// (steps, kernels, targets, triggers, drill), for readers that should not
/// parse YAML themselves.
pub fn runbook_source(row: &RunbookRow) -> Value {
    let definition = crate::runbook::parse_runbook(&row.name, &row.source).ok();
    json!({
        "name": row.name, "version": row.version, "digest": row.digest,
        "source": row.source, "published_at": row.published_at, "published_by": row.published_by,
        "definition": definition,
    })
}

/// The runbook version a rollback made current.
pub fn rolled_back(row: &RunbookRow) -> Value {
    json!({"name": row.name, "current_version": row.version, "digest": row.digest})
}

/// A token just created: the only time the token itself is shown.
pub fn token_created(row: &TokenRow, token: &str) -> Value {
    json!({"token": token, "id": row.id, "name": row.name, "role": row.role, "runbooks": row.runbooks, "owner": row.owner,
        "note": "the token is shown once; store it now"})
}

/// A token just revoked.
pub fn token_revoked(row: &TokenRow) -> Value {
    json!({"revoked": row.name, "id": row.id, "revoked_at": row.revoked_at})
}

/// A cancel request recorded for run `id`.
pub fn cancel_requested(id: &str) -> Value {
    json!({"run_id": id, "cancel_requested": true, "note": "the step in progress finishes; nothing after it starts"})
}

/// Run `id` closed for good.
pub fn abandoned(id: &str) -> Value {
    json!({"run_id": id, "status": "abandoned"})
}

/// An approval or denial recorded on run `id`'s step.
pub fn decided(id: &str, step: &str, approve: bool) -> Value {
    json!({"run_id": id, "step": step, "decision": if approve { "approve" } else { "deny" }})
}
