//! Roles and what each may do (the role -> action table): a leaf module,
//! used by tokens (`auth.rs`), runbooks (approval roles) and the store.

use serde::{Deserialize, Serialize};

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

    /// Whether a token of this role may hold every right of a token of
    /// `other`: admin includes every role; any other role only itself.
    pub fn includes(self, other: Role) -> bool {
        self == Role::Admin || self == other
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
