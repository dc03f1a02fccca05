//! firedrill: runbook engine whose steps are sandboxed WebAssembly recovery kernels.
//!
//! See ARCHITECTURE.md for the map. Modules own their data:
//! [`kernel`] (wasm host, limits, capabilities, registry), [`transport`]
//! (inventory and executors), [`secret`], [`home`] (the home directory and its
//! config) and [`cli`] (the command line; `main.rs` only calls it).

pub mod alerts;
pub mod audit;
pub mod auth;
pub mod cli;
pub mod drill;
pub mod executor;
pub mod failpoint;
pub mod home;
pub mod kernel;
pub mod metrics;
pub mod notify;
pub mod outbound;
pub mod retry;
pub mod role;
pub mod runbook;
pub mod secret;
pub mod server;
pub mod store;
pub mod switch;
pub mod term;
pub mod tlog;
pub mod transport;
pub mod view;
pub mod yaml;

#[cfg(test)]
mod layers;

pub use firedrill_sdk::manifest::{Effect, Manifest, Mode};
