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
