//! A kernel built to misbehave, one behaviour per input, for the host's tests.
//! It implements the raw WIT bindings (not the SDK's `Kernel` trait) so that it
//! can return output the SDK would never produce.

#![allow(clippy::all)]

use firedrill_sdk::guest::bindings::firedrill::kernel::{host, types::*};
use firedrill_sdk::guest::bindings::{Guest, export_guest};

struct Hostile;

fn manifest() -> Manifest {
    let exec = |pattern: &str, effect| ExecCapability {
        pattern: pattern.into(),
        effect,
    };
    Manifest {
        name: "hostile".into(),
        version: "0.1.0".into(),
        description: "Misbehaves on request".into(),
        input_schema: r#"{"type":"object","required":["behaviour"],"properties":{"behaviour":{"type":"string"},"path":{"type":"string"}}}"#.into(),
        output_schema: r#"{"type":"object","required":["ok"],"properties":{"ok":{"type":"boolean"}}}"#.into(),
        idempotent: false,
        capabilities: Capabilities {
            exec: vec![
                exec("echo ...", Effect::Observe),
                exec("sleep *", Effect::Observe),
                exec("touch *", Effect::Change),
                exec("test -e *", Effect::Observe),
            ],
            http: vec![
                HttpCapability {
                    method: "GET".into(),
                    url_pattern: "*".into(),
                    effect: Effect::Observe,
                },
                HttpCapability {
                    method: "POST".into(),
                    url_pattern: "*".into(),
                    effect: Effect::Change,
                },
            ],
            secrets: vec!["canary".into()],
        },
    }
}

fn target(inv: &Invocation) -> String {
    inv.targets.first().cloned().unwrap_or_default()
}

fn run(inv: Invocation) -> Result<String, KernelError> {
    let input: serde_json::Value =
        serde_json::from_str(&inv.input).map_err(|e| KernelError::InvalidInput(e.to_string()))?;
    let path = input["path"].as_str().unwrap_or("/nonexistent").to_string();
    let ok = |extra: serde_json::Value| {
        let mut v = serde_json::json!({"ok": true});
        if let (Some(o), Some(e)) = (v.as_object_mut(), extra.as_object()) {
            o.extend(e.clone());
        }
        Ok(v.to_string())
    };
    match input["behaviour"].as_str().unwrap_or("") {
        "ok" => {
            host::log(LogLevel::Info, "behaving");
            let r = host::exec(&target(&inv), "echo hello")
                .map_err(|e| KernelError::Failed(format!("{e:?}")))?;
            ok(serde_json::json!({"echo": r.stdout}))
        }
        "remember" => {
            // Linear memory is reset between invocations: a value an
            // earlier invocation left in a static must not be seen here.
            static SEEN: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
            let before = SEEN.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            ok(serde_json::json!({"seen": before}))
        }
        "loop" => {
            let mut x: u64 = 0;
            loop {
                x = std::hint::black_box(x.wrapping_add(1));
            }
        }
        "memory-bomb" => {
            let mut hoard: Vec<Vec<u8>> = Vec::new();
            loop {
                hoard.push(vec![1u8; 1 << 20]);
                std::hint::black_box(&hoard);
            }
        }
        "output-flood" => ok(serde_json::json!({"data": "x".repeat(2 << 20)})),
        "log-flood" => loop {
            host::log(LogLevel::Info, &"y".repeat(1024));
        },
        "stdout-flood" => loop {
            println!("{}", "z".repeat(1024));
        },
        "host-call-flood" => loop {
            std::hint::black_box(host::now());
        },
        "undeclared-command" => match host::exec(&target(&inv), "rm -rf /") {
            Err(HostError::Denied(m)) => Err(KernelError::Failed(format!("denied: {m}"))),
            other => ok(serde_json::json!({"unexpected": format!("{other:?}")})),
        },
        "injection" => {
            let r = host::exec(&target(&inv), &format!("echo hi; touch {path}"))
                .map_err(|e| KernelError::Failed(format!("{e:?}")))?;
            ok(serde_json::json!({"stdout": r.stdout}))
        }
        "ungranted-target" => match host::exec("someone-elses-host", "echo hi") {
            Err(HostError::Denied(m)) => Err(KernelError::Failed(format!("denied: {m}"))),
            other => ok(serde_json::json!({"unexpected": format!("{other:?}")})),
        },
        "change" => {
            let r = host::exec(&target(&inv), &format!("touch {path}"))
                .map_err(|e| KernelError::Failed(format!("{e:?}")))?;
            ok(serde_json::json!({"simulated": r.simulated, "exit_code": r.exit_code}))
        }
        "malformed-output" => Ok("{not json".into()),
        "schema-violating-output" => Ok(r#"{"ok": "yes"}"#.into()),
        "panic" => panic!("hostile kernel panicked on purpose"),
        "sleep-forever" => {
            host::sleep(u64::MAX);
            ok(serde_json::json!({}))
        }
        "slow-exec" => {
            let r = host::exec(&target(&inv), "sleep 30");
            ok(serde_json::json!({"unexpected": format!("{r:?}")}))
        }
        // Waits until PATH/go exists on the target: lets a test act while
        // this step is in flight.
        "wait-for" => {
            let t = target(&inv);
            loop {
                let r = host::exec(&t, &format!("test -e {path}/go"));
                if r.is_ok_and(|r| r.exit_code == 0) {
                    break;
                }
                host::sleep(50);
            }
            ok(serde_json::json!({}))
        }
        "retryable" => Err(KernelError::Retryable("try again".into())),
        // Fails (retryably) until PATH exists; creates it on the first try.
        "flaky" => {
            let t = target(&inv);
            let seen = host::exec(&t, &format!("test -e {path}"))
                .map_err(|e| KernelError::Failed(format!("{e:?}")))?;
            if seen.exit_code == 0 {
                ok(serde_json::json!({"attempt": "later"}))
            } else {
                host::exec(&t, &format!("touch {path}"))
                    .map_err(|e| KernelError::Failed(format!("{e:?}")))?;
                Err(KernelError::Retryable("first attempt always fails".into()))
            }
        }
        "fail" => Err(KernelError::Failed("failed on purpose".into())),
        // Records that it ran on its target (touch PATH/TARGET), then fails
        // if the target is listed in `fail_targets`.
        "fail-on" => {
            let t = target(&inv);
            host::exec(&t, &format!("touch {path}/{t}"))
                .map_err(|e| KernelError::Failed(format!("{e:?}")))?;
            let listed = input["fail_targets"]
                .as_array()
                .is_some_and(|a| a.iter().any(|v| v.as_str() == Some(t.as_str())));
            if listed {
                Err(KernelError::Failed(format!("{t} is broken")))
            } else {
                ok(serde_json::json!({"target": t}))
            }
        }
        // Tries every way to leak a secret: log, stdout, stderr, a command
        // (and its output), the output JSON, and (with fail: true) the error.
        "leak-secret" => {
            let s = host::secret("canary").map_err(|e| KernelError::Failed(format!("{e:?}")))?;
            host::log(LogLevel::Info, &format!("the secret is {s}"));
            println!("stdout {s}");
            eprintln!("stderr {s}");
            let t = target(&inv);
            let r = host::exec(&t, &format!("echo {s}"))
                .map_err(|e| KernelError::Failed(format!("{e:?}")))?;
            host::exec(&t, &format!("touch {path}/{s}"))
                .map_err(|e| KernelError::Failed(format!("{e:?}")))?;
            if input["fail"] == serde_json::json!(true) {
                return Err(KernelError::Failed(format!("failed while holding {s}")));
            }
            ok(serde_json::json!({"leaked": s, "echo": r.stdout}))
        }
        // One HTTP request (`method`, `url`) to the first granted target;
        // the answer (body included) goes to the log and the output.
        "http" => {
            let request = HttpRequest {
                target: target(&inv),
                method: input["method"].as_str().unwrap_or("GET").into(),
                url: input["url"].as_str().unwrap_or("/").into(),
                headers: input["headers"]
                    .as_object()
                    .map(|h| {
                        h.iter()
                            .map(|(k, v)| Header {
                                name: k.clone(),
                                value: v.as_str().unwrap_or_default().into(),
                            })
                            .collect()
                    })
                    .unwrap_or_default(),
                body: Vec::new(),
            };
            match host::http(&request) {
                Ok(r) => {
                    let body = String::from_utf8_lossy(&r.body).into_owned();
                    host::log(LogLevel::Info, &format!("answer: {body}"));
                    ok(
                        serde_json::json!({"status": r.status, "body": body, "truncated": r.truncated, "simulated": r.simulated}),
                    )
                }
                Err(e) => ok(serde_json::json!({"error": format!("{e:?}")})),
            }
        }
        other => Err(KernelError::InvalidInput(format!(
            "unknown behaviour {other:?}"
        ))),
    }
}

impl Guest for Hostile {
    fn describe() -> Manifest {
        manifest()
    }

    fn run(inv: Invocation) -> Result<String, KernelError> {
        run(inv)
    }
}

export_guest!(Hostile with_types_in firedrill_sdk::guest::bindings);
