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
