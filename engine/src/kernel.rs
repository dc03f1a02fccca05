//! Recovery kernels: the wasmtime host, its limits and capability checks, the
//! compiled-component cache and the registry of published kernels.

mod bindings;
mod cache;
mod host;
mod limits;
mod registry;
mod sandbox;

pub use cache::{CacheOutcome, WASMTIME_VERSION};
pub use host::{
    HostConfig, HostStartError, InvokeError, InvokeReport, InvokeRequest, KernelHost, LoadError,
    LoadedKernel, digest_of,
};
pub use limits::{KernelLimits, Limit, LimitExceeded};
pub use registry::{Published, Registry, RegistryError};
pub use sandbox::{
    CallKind, CallObserver, CallOutcome, HostCall, ImpureDescribe, LogLine, RECORD_EXCERPT_BYTES,
};
