//! `http-health`: probe an HTTP endpoint from the inventory and report
//! whether it is healthy. Observe only: it runs in dry-run too, so a plan
//! shows the endpoint's real state.

use firedrill_sdk::prelude::*;

fn default_path() -> String {
    "/healthz".into()
}

fn default_expect_status() -> u16 {
    200
}

fn default_fail_unhealthy() -> bool {
    true
}

/// What to probe and what counts as healthy.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Input {
    /// Path under the endpoint's base-url, starting with `/`.
    #[serde(default = "default_path")]
    pub path: String,
    /// The status a healthy endpoint answers.
    #[serde(default = "default_expect_status")]
    #[schemars(range(min = 100, max = 599))]
    pub expect_status: u16,
    /// Text the body must contain, if any.
    #[serde(default)]
    pub contains: Option<String>,
    /// Fail the step (retryable, so `retries` apply) when unhealthy; when
    /// false, report `healthy: false` and succeed.
    #[serde(default = "default_fail_unhealthy")]
    pub fail_unhealthy: bool,
}

/// What the endpoint answered.
#[derive(Debug, Serialize, JsonSchema)]
pub struct Output {
    pub target: String,
    pub status: u16,
    pub healthy: bool,
    /// The first 200 characters of the body.
    pub body_excerpt: String,
}

/// The kernel.
#[derive(Debug)]
pub struct HttpHealth;

impl Kernel for HttpHealth {
    type Input = Input;
    type Output = Output;

    fn declare() -> Declaration {
        Declaration::new(
            "http-health",
            env!("CARGO_PKG_VERSION"),
            "GET a health path on an HTTP endpoint and check its status and body",
        )
        .idempotent(true)
        // Any URL, but only on the endpoints the step grants.
        .http("GET", "*", Effect::Observe)
    }

    fn run(ctx: &Context<'_>, input: Input) -> Result<Output, KernelError> {
        if !input.path.starts_with('/') {
            return Err(KernelError::InvalidInput(format!(
                "path {:?} must start with /",
                input.path
            )));
        }
        let target = ctx.single_target()?;
        let response = ctx.http(&HttpRequest {
            target: target.to_string(),
            method: "GET".into(),
            url: input.path.clone(),
            ..HttpRequest::default()
        })?;
        let body = String::from_utf8_lossy(&response.body);
        let status_ok = response.status == input.expect_status;
        let body_ok = input.contains.as_deref().is_none_or(|c| body.contains(c));
        let healthy = status_ok && body_ok;
        let body_excerpt: String = body.chars().take(200).collect();
        if !healthy && input.fail_unhealthy {
            let why = if status_ok {
                format!(
                    "the body does not contain {:?}",
                    input.contains.unwrap_or_default()
                )
            } else {
                format!(
                    "status {} where {} was expected",
                    response.status, input.expect_status
                )
            };
            return Err(KernelError::Retryable(format!(
                "{target}{} is unhealthy: {why}",
                input.path
            )));
        }
        Ok(Output {
            target: target.to_string(),
            status: response.status,
            healthy,
            body_excerpt,
        })
    }
}

export_kernel!(HttpHealth);

#[cfg(test)]
mod tests {
    use super::*;
    use firedrill_sdk::testing::MockHost;
    use serde_json::json;

    fn answer(status: u16, body: &str) -> HttpResponse {
        HttpResponse {
            status,
            body: body.as_bytes().to_vec(),
            ..HttpResponse::default()
        }
    }

    #[test]
    fn healthy_endpoint() {
        let mut host = MockHost::for_kernel::<HttpHealth>();
        host.on_http("GET", "/healthz", answer(200, "ok"));
        let out = host
            .run::<HttpHealth>(Mode::DryRun, &["lb"], json!({"contains": "ok"}))
            .expect("runs");
        assert_eq!(out["healthy"], json!(true));
        assert_eq!(out["status"], json!(200));
    }

    #[test]
    fn unhealthy_endpoint_is_retryable_or_reported() {
        let mut host = MockHost::for_kernel::<HttpHealth>();
        host.on_http("GET", "/ready", answer(503, "draining"));
        let err = host
            .run::<HttpHealth>(Mode::Live, &["lb"], json!({"path": "/ready"}))
            .unwrap_err();
        assert!(
            matches!(err, KernelError::Retryable(ref m) if m.contains("503")),
            "{err:?}"
        );
        let out = host
            .run::<HttpHealth>(
                Mode::Live,
                &["lb"],
                json!({"path": "/ready", "fail_unhealthy": false}),
            )
            .expect("runs");
        assert_eq!(out["healthy"], json!(false));
        assert_eq!(out["body_excerpt"], json!("draining"));
    }

    #[test]
    fn path_must_be_absolute() {
        let mut host = MockHost::for_kernel::<HttpHealth>();
        let err = host
            .run::<HttpHealth>(Mode::Live, &["lb"], json!({"path": "healthz"}))
            .unwrap_err();
        assert!(matches!(err, KernelError::InvalidInput(_)), "{err:?}");
    }
}
