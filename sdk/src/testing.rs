//! Test a kernel natively, in an ordinary `cargo test`, against a scripted host.
//!
//! The mock host applies the same rules as firedrill: calls must match a
//! declared capability and a granted target, and in dry-run a `change` call is
//! not "performed" (its scripted answer is not used) but answered as simulated.
//!
//! ```text
//! let mut host = MockHost::for_kernel::<ServiceStatus>();
//! host.on_exec("systemctl is-active -- nginx", ExecResult::ok("active\n"));
//! let out = host.run::<ServiceStatus>(Mode::DryRun, &["web-1"], json!({"unit": "nginx"}));
//! ```

use std::cell::RefCell;

use crate::capability::{CommandPattern, check_target, split_words};
use crate::kernel::{
    ExecResult, Host, HostError, HttpRequest, HttpResponse, Invocation, Kernel, KernelError,
    LogLevel, manifest,
};
use crate::manifest::{Capabilities, Effect, Mode};

/// One host call the kernel made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MockCall {
    Exec {
        target: String,
        command: String,
        effect: Effect,
        simulated: bool,
    },
    Http {
        target: String,
        method: String,
        url: String,
        effect: Effect,
        simulated: bool,
    },
    Secret {
        name: String,
    },
    Denied {
        reason: String,
    },
}

#[derive(Debug, Default)]
struct Recorded {
    calls: Vec<MockCall>,
    logs: Vec<(LogLevel, String)>,
    clock_ms: u64,
}

/// A scripted host that enforces the kernel's declared capabilities.
#[derive(Debug)]
pub struct MockHost {
    capabilities: Capabilities,
    exec_answers: Vec<(CommandPattern, Result<ExecResult, HostError>)>,
    http_answers: Vec<(String, String, Result<HttpResponse, HostError>)>,
    secrets: Vec<(String, String)>,
    mode: Mode,
    targets: Vec<String>,
    recorded: RefCell<Recorded>,
}

impl MockHost {
    /// A mock host that enforces the capabilities kernel `K` declares.
    pub fn for_kernel<K: Kernel>() -> Self {
        MockHost {
            capabilities: manifest::<K>().capabilities,
            exec_answers: Vec::new(),
            http_answers: Vec::new(),
            secrets: Vec::new(),
            mode: Mode::DryRun,
            targets: Vec::new(),
            recorded: RefCell::new(Recorded {
                clock_ms: 1_700_000_000_000,
                ..Recorded::default()
            }),
        }
    }

    /// Answer commands matching `pattern` (same syntax as exec capabilities;
    /// an exact command is a pattern too). The first matching answer wins.
    ///
    /// # Panics
    /// If `pattern` is not a valid pattern: that is a bug in the test.
    pub fn on_exec(&mut self, pattern: &str, answer: ExecResult) -> &mut Self {
        self.on_exec_result(pattern, Ok(answer))
    }

    /// Like [`MockHost::on_exec`], with a host error (timeout, failure) as the answer.
    ///
    /// # Panics
    /// If `pattern` is not a valid pattern.
    #[allow(clippy::expect_used)]
    pub fn on_exec_result(
        &mut self,
        pattern: &str,
        answer: Result<ExecResult, HostError>,
    ) -> &mut Self {
        let pattern = CommandPattern::parse(pattern).expect("mock exec pattern must be valid");
        self.exec_answers.push((pattern, answer));
        self
    }

    /// Answer `method url` (URL compared exactly).
    pub fn on_http(&mut self, method: &str, url: &str, answer: HttpResponse) -> &mut Self {
        self.http_answers
            .push((method.to_string(), url.to_string(), Ok(answer)));
        self
    }

    /// Provide a secret value.
    pub fn with_secret(&mut self, name: &str, value: &str) -> &mut Self {
        self.secrets.push((name.to_string(), value.to_string()));
        self
    }

    /// Run kernel `K` in `mode` with `targets` granted and `input`, as the engine would.
    pub fn run<K: Kernel>(
        &mut self,
        mode: Mode,
        targets: &[&str],
        input: serde_json::Value,
    ) -> Result<serde_json::Value, KernelError> {
        self.mode = mode;
        self.targets = targets.iter().map(|t| t.to_string()).collect();
        let invocation = Invocation {
            run_id: "run-test".into(),
            step_id: "step-test".into(),
            mode,
            actor: "user:test".into(),
            targets: self.targets.clone(),
            input: input.to_string(),
        };
        let output = crate::kernel::run_with_host::<K>(&invocation, self)?;
        serde_json::from_str(&output)
            .map_err(|e| KernelError::Failed(format!("kernel output is not JSON: {e}")))
    }

    /// Every host call so far, in order.
    pub fn calls(&self) -> Vec<MockCall> {
        self.recorded.borrow().calls.clone()
    }

    /// The commands that were (or would have been) executed, in order.
    pub fn commands(&self) -> Vec<String> {
        self.calls()
            .into_iter()
            .filter_map(|c| match c {
                MockCall::Exec { command, .. } => Some(command),
                _ => None,
            })
            .collect()
    }

    /// The `change` calls that were simulated (the dry-run plan).
    pub fn planned_changes(&self) -> Vec<MockCall> {
        self.calls()
            .into_iter()
            .filter(|c| {
                matches!(
                    c,
                    MockCall::Exec {
                        simulated: true,
                        ..
                    } | MockCall::Http {
                        simulated: true,
                        ..
                    }
                )
            })
            .collect()
    }

    /// The log lines so far.
    pub fn logs(&self) -> Vec<(LogLevel, String)> {
        self.recorded.borrow().logs.clone()
    }

    fn deny(&self, reason: String) -> HostError {
        self.recorded.borrow_mut().calls.push(MockCall::Denied {
            reason: reason.clone(),
        });
        HostError::Denied(reason)
    }

    fn simulate(&self, effect: Effect) -> bool {
        effect == Effect::Change && self.mode == Mode::DryRun
    }
}

impl Host for MockHost {
    fn log(&self, level: LogLevel, message: &str) {
        self.recorded
            .borrow_mut()
            .logs
            .push((level, message.to_string()));
    }

    fn exec(&self, target: &str, command: &str) -> Result<ExecResult, HostError> {
        check_target(&self.targets, target).map_err(|e| self.deny(e.to_string()))?;
        let matched = self
            .capabilities
            .match_exec(command)
            .map_err(|e| self.deny(e.to_string()))?;
        let simulated = self.simulate(matched.effect());
        self.recorded.borrow_mut().calls.push(MockCall::Exec {
            target: target.to_string(),
            command: matched.command.clone(),
            effect: matched.effect(),
            simulated,
        });
        if simulated {
            return Ok(ExecResult {
                simulated: true,
                ..ExecResult::default()
            });
        }
        let argv = split_words(&matched.command).map_err(|e| HostError::Failed(e.to_string()))?;
        self.exec_answers
            .iter()
            .find(|(pattern, _)| pattern.matches(&argv))
            .map(|(_, answer)| answer.clone())
            .unwrap_or_else(|| {
                Err(HostError::Failed(format!(
                    "the mock host has no scripted answer for {:?}: add one with on_exec",
                    matched.command
                )))
            })
    }

    fn http(&self, request: &HttpRequest) -> Result<HttpResponse, HostError> {
        check_target(&self.targets, &request.target).map_err(|e| self.deny(e.to_string()))?;
        let cap = self
            .capabilities
            .match_http(&request.method, &request.url)
            .map_err(|e| self.deny(e.to_string()))?;
        let simulated = self.simulate(cap.effect);
        self.recorded.borrow_mut().calls.push(MockCall::Http {
            target: request.target.clone(),
            method: request.method.clone(),
            url: request.url.clone(),
            effect: cap.effect,
            simulated,
        });
        if simulated {
            return Ok(HttpResponse {
                simulated: true,
                ..HttpResponse::default()
            });
        }
        self.http_answers
            .iter()
            .find(|(m, u, _)| *m == request.method && *u == request.url)
            .map(|(_, _, answer)| answer.clone())
            .unwrap_or_else(|| {
                Err(HostError::Failed(format!(
                    "the mock host has no scripted answer for {} {}: add one with on_http",
                    request.method, request.url
                )))
            })
    }

    fn secret(&self, name: &str) -> Result<String, HostError> {
        self.capabilities
            .check_secret(name)
            .map_err(|e| self.deny(e.to_string()))?;
        self.recorded.borrow_mut().calls.push(MockCall::Secret {
            name: name.to_string(),
        });
        self.secrets
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.clone())
            .ok_or_else(|| {
                HostError::Failed(format!("secret {name:?} is not set in the mock host"))
            })
    }

    fn sleep(&self, ms: u64) {
        self.recorded.borrow_mut().clock_ms += ms;
    }

    fn now(&self) -> u64 {
        self.recorded.borrow().clock_ms
    }
}
