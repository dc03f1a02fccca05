//! Shared support for the integration tests and benchmarks: builds the guest
//! kernels from source and starts kernel hosts with test-sized limits.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, OnceLock};

pub mod bench;
pub mod browser;
mod build;
mod client;
mod env;
mod host;
pub mod nodes;
pub mod pg;
pub mod restate;
pub mod sshd;
pub mod web;

pub use build::*;
pub use client::*;
pub use env::*;
pub use host::*;

use firedrill::audit::Actor;
use firedrill::executor::{RunRequest, RunbookSource, Service};
use firedrill::kernel::{HostConfig, KernelHost, KernelLimits, Registry};
use firedrill::secret::StaticSecrets;
use firedrill::store::{SqliteStore, Store, StoreConfig};
use firedrill::transport::{Inventory, TargetSpec, Targets, TargetsConfig};

/// `gated`: an approval gate (1 approver, role approver, reason "fail over
/// the primary") before one step on demo-host. For the notification tests.
pub const GATED: &str = "apiVersion: firedrill/v1\nname: gated\nversion: 1\nsteps:\n  - id: gate\n    approval: { required: 1, roles: [approver], timeout: 10m, reason: \"fail over the primary\" }\n  - id: act\n    kernel: trivial@0.1.0\n    targets: [demo-host]\n";

/// Check a notification (an Alertmanager alert or a webhook body: labels
/// and annotations) of `run` of [`GATED`] awaiting approval, with links
/// under `https://firedrill.example.com`, started by the token `boss`.
///
/// # Panics
/// When it is not.
pub fn assert_awaiting_approval(alert: &serde_json::Value, run: &str) {
    assert_eq!(
        alert["labels"]["alertname"], "FiredrillRunAwaitingApproval",
        "{alert}"
    );
    assert_eq!(alert["labels"]["runbook"], "gated");
    assert_eq!(alert["labels"]["event"], "awaiting-approval");
    let notes = &alert["annotations"];
    assert!(
        notes["approvers"]
            .as_str()
            .is_some_and(|a| a.contains("approver") && a.contains("not token:boss")),
        "{alert}"
    );
    assert_eq!(
        notes["approve"],
        format!("firedrill approve {run} --comment \"...\"")
    );
    assert_eq!(
        notes["url"],
        format!("https://firedrill.example.com/console/runs/{run}")
    );
    assert_eq!(notes["reason"], "fail over the primary");
}

/// `unit-fix`: an alert (`alertname: UnitDown`) per `unit` label, whose
/// run fails when the alert's `behaviour` label says `fail`; a per-key
/// (unit) breaker of 2, cooldown 1 ms. For the breaker-scope tests.
pub const UNIT_FIX: &str = r#"apiVersion: firedrill/v1
name: unit-fix
version: 1
inputs: { type: object, properties: { behaviour: { type: string } } }
steps:
  - id: one
    kernel: hostile@0.1.0
    targets: [demo-host]
    with: { behaviour: "{{ inputs.behaviour }}" }
triggers:
  - source: alertmanager
    match: { alertname: UnitDown }
    inputs: { behaviour: "{{ alert.labels.behaviour }}" }
    key: "{{ alert.labels.unit }}"
    cooldown: 1ms
    breaker: 2
"#;

/// A port free on loopback right now (for a server a test starts).
///
/// # Panics
/// If no port can be bound.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or_else(|e| panic!("no free port: {e}"))
}
