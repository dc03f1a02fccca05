//! Clients of a firedrill under test: the CLI as a process, the HTTP API.

use super::*;

/// Run the `firedrill` binary of this build on `home` with `args`.
///
/// # Panics
/// If it cannot be run.
#[allow(clippy::expect_used)]
pub fn run_firedrill(home: &Path, args: &[&str]) -> std::process::Output {
    Command::new(firedrill_bin())
        .args(args)
        .env("FIREDRILL_HOME", home)
        .env_remove("FIREDRILL_ACTOR")
        .output()
        .expect("run firedrill")
}

/// A command's stdout and stderr, as text.
pub fn output_text(out: &std::process::Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// One API call: `method path` on `base` with an optional bearer token and
/// JSON body; the status and the body (JSON, or the text as a string).
///
/// # Panics
/// If the request cannot be sent or its body read.
#[allow(clippy::expect_used)]
pub async fn api_call(
    client: &reqwest::Client,
    base: &str,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Option<serde_json::Value>,
) -> (reqwest::StatusCode, serde_json::Value) {
    let mut req = client.request(method.parse().expect("method"), format!("{base}{path}"));
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    if let Some(b) = body {
        req = req.json(&b);
    }
    let resp = req.send().await.expect("request");
    let status = resp.status();
    let text = resp.text().await.expect("body");
    (
        status,
        serde_json::from_str(&text).unwrap_or(serde_json::Value::String(text)),
    )
}
