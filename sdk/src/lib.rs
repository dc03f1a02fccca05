//! firedrill SDK: the recovery-kernel contract and the tools to write kernels in Rust.
//!
//! - [`manifest`] and [`capability`]: the contract's data and the one matcher
//!   that decides whether a host call is allowed (shared with the engine).
//! - With the `kernel` feature (default): [`Kernel`], [`Context`],
//!   [`export_kernel!`], and [`testing::MockHost`] to test a kernel natively.
//!
//! A kernel in full:
//!
//! ```text
//! use firedrill_sdk::prelude::*;
//!
//! #[derive(Deserialize, JsonSchema)]
//! struct Input { unit: String }
//! #[derive(Serialize, JsonSchema)]
//! struct Output { active: bool }
//!
//! struct ServiceStatus;
//! impl Kernel for ServiceStatus {
//!     type Input = Input;
//!     type Output = Output;
//!     fn declare() -> Declaration {
//!         Declaration::new("service-status", env!("CARGO_PKG_VERSION"), "Is a unit active?")
//!             .idempotent(true)
//!             .observe_exec("systemctl is-active -- *")
//!     }
//!     fn run(ctx: &Context<'_>, input: Input) -> Result<Output, KernelError> {
//!         let target = ctx.single_target()?;
//!         let r = ctx.exec_words(target, &["systemctl", "is-active", "--", &input.unit])?;
//!         Ok(Output { active: r.success() })
//!     }
//! }
//! export_kernel!(ServiceStatus);
//! ```

pub mod capability;
pub mod manifest;
pub mod pattern;

#[cfg(feature = "kernel")]
pub mod guest;
#[cfg(feature = "kernel")]
mod kernel;
#[cfg(feature = "kernel")]
pub mod testing;

#[cfg(feature = "kernel")]
pub use kernel::{
    Context, Declaration, ExecResult, Host, HostError, HttpRequest, HttpResponse, Invocation,
    Kernel, KernelError, LogLevel, manifest as manifest_of, run_with_host,
};
pub use manifest::{Effect, Manifest, Mode};

/// Re-exports for kernel authors: `use firedrill_sdk::prelude::*;`.
#[cfg(feature = "kernel")]
pub mod prelude {
    pub use crate::{
        Context, Declaration, Effect, ExecResult, HostError, HttpRequest, HttpResponse, Kernel,
        KernelError, LogLevel, Mode, export_kernel,
    };
    pub use schemars::{self, JsonSchema};
    pub use serde::{self, Deserialize, Serialize};
}
