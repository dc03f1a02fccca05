//! Hard limits on one kernel invocation, and the error that names the one exceeded.

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Limits applied to every kernel invocation. Each field is a config key
/// under `[kernel.limits]` in `firedrill.toml`; the default is next to it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "kebab-case", default)]
pub struct KernelLimits {
    /// Largest linear memory a kernel may grow to, in bytes. Default 64 MiB.
    pub memory_bytes: u64,
    /// Guest CPU time per invocation, in milliseconds, measured in epoch ticks
    /// while guest code runs (time spent waiting on the host is not counted).
    /// Default 10,000 ms.
    pub cpu_ms: u64,
    /// Wall-clock time per invocation, in milliseconds, including time spent
    /// waiting on host calls and sleeping. Default 60,000 ms.
    pub wall_clock_ms: u64,
    /// Largest JSON output a kernel may return, in bytes. Default 1 MiB.
    pub output_bytes: u64,
    /// Log volume per invocation (host `log` messages plus WASI stdout and
    /// stderr), in bytes. Default 256 KiB.
    pub log_bytes: u64,
    /// Host calls per invocation (every import counts). Default 1,000.
    pub host_calls: u64,
    /// Bytes of stdout and of stderr a single `exec` returns to the kernel;
    /// the rest is dropped and the result marked truncated. Default 256 KiB.
    pub exec_output_bytes: u64,
    /// Time limit of a single `exec`, in milliseconds. Default 30,000 ms.
    pub exec_timeout_ms: u64,
}

impl Default for KernelLimits {
    fn default() -> Self {
        KernelLimits {
            memory_bytes: 64 << 20,
            cpu_ms: 10_000,
            wall_clock_ms: 60_000,
            output_bytes: 1 << 20,
            log_bytes: 256 << 10,
            host_calls: 1_000,
            exec_output_bytes: 256 << 10,
            exec_timeout_ms: 30_000,
        }
    }
}

impl KernelLimits {
    pub fn wall_clock(&self) -> Duration {
        Duration::from_millis(self.wall_clock_ms)
    }

    pub fn exec_timeout(&self) -> Duration {
        Duration::from_millis(self.exec_timeout_ms)
    }
}

/// Which limit an invocation hit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Limit {
    Memory,
    Cpu,
    WallClock,
    Output,
    Log,
    HostCalls,
}

impl Limit {
    /// The config key that raises this limit.
    pub fn config_key(self) -> &'static str {
        match self {
            Limit::Memory => "kernel.limits.memory-bytes",
            Limit::Cpu => "kernel.limits.cpu-ms",
            Limit::WallClock => "kernel.limits.wall-clock-ms",
            Limit::Output => "kernel.limits.output-bytes",
            Limit::Log => "kernel.limits.log-bytes",
            Limit::HostCalls => "kernel.limits.host-calls",
        }
    }

    fn describe(self) -> &'static str {
        match self {
            Limit::Memory => "memory limit",
            Limit::Cpu => "CPU time limit",
            Limit::WallClock => "wall-clock limit",
            Limit::Output => "output size limit",
            Limit::Log => "log volume limit",
            Limit::HostCalls => "host call limit",
        }
    }

    fn unit(self) -> &'static str {
        match self {
            Limit::Memory | Limit::Output | Limit::Log => "bytes",
            Limit::Cpu | Limit::WallClock => "ms",
            Limit::HostCalls => "calls",
        }
    }
}

/// A kernel exceeded a limit; the invocation was stopped.
///
/// Raised as a trap from inside the sandbox (host functions, the resource
/// limiter, the epoch callback) and recovered by downcasting, so the caller
/// always learns which limit it was.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
#[error(
    "kernel exceeded the {} of {} {}; if the kernel legitimately needs more, raise `{}` in firedrill.toml",
    limit.describe(), value, limit.unit(), limit.config_key()
)]
pub struct LimitExceeded {
    pub limit: Limit,
    /// The configured value that was exceeded.
    pub value: u64,
}

impl KernelLimits {
    /// The error for exceeding `limit` under these settings.
    pub fn exceeded(&self, limit: Limit) -> LimitExceeded {
        let value = match limit {
            Limit::Memory => self.memory_bytes,
            Limit::Cpu => self.cpu_ms,
            Limit::WallClock => self.wall_clock_ms,
            Limit::Output => self.output_bytes,
            Limit::Log => self.log_bytes,
            Limit::HostCalls => self.host_calls,
        };
        LimitExceeded { limit, value }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn message_names_the_limit_and_the_config_key() {
        let msg = KernelLimits::default().exceeded(Limit::Memory).to_string();
        assert!(msg.contains("memory limit of 67108864 bytes"), "{msg}");
        assert!(msg.contains("kernel.limits.memory-bytes"), "{msg}");
    }

    #[test]
    fn unknown_keys_are_rejected_and_defaults_fill_in() {
        let l: KernelLimits = toml::from_str("cpu-ms = 5").expect("parses");
        assert_eq!(l.cpu_ms, 5);
        assert_eq!(l.memory_bytes, 64 << 20);
        let err = toml::from_str::<KernelLimits>("cpu_ms = 5")
            .unwrap_err()
            .to_string();
        assert!(err.contains("unknown field"), "{err}");
    }
}
