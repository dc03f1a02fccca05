//! HTTP endpoints firedrill posts to (audit witnesses, notification
//! sinks): the URL checked (http or https, no credentials in it), a bearer
//! token read from the secret providers, a client with a deadline and no
//! redirects, and a name without credentials for logs, errors and metrics.

use std::time::Duration;

use crate::secret::SecretProvider;

/// A checked endpoint.
#[derive(Clone)]
pub struct Endpoint {
    pub url: url::Url,
    /// The URL without user, password, query or fragment.
    pub name: String,
    pub token: Option<String>,
    pub client: reqwest::Client,
}

impl std::fmt::Debug for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the token.
        write!(f, "Endpoint({})", self.name)
    }
}

/// `url` without a user name, password, query or fragment, for logs,
/// errors and metrics (any of them may carry a credential).
pub fn without_credentials(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut u) => {
            let _ = u.set_username("");
            let _ = u.set_password(None);
            u.set_query(None);
            u.set_fragment(None);
            u.to_string()
        }
        Err(_) => "(not a URL)".to_string(),
    }
}

impl Endpoint {
    /// `what` names the endpoint in errors ("witness", "notification sink").
    pub fn new(
        what: &str,
        url: &str,
        token_secret: Option<&str>,
        timeout_ms: u64,
        secrets: &dyn SecretProvider,
    ) -> Result<Endpoint, String> {
        let name = without_credentials(url);
        let parsed =
            url::Url::parse(url).map_err(|e| format!("{what} URL {name} is not a URL: {e}"))?;
        if !matches!(parsed.scheme(), "http" | "https") {
            return Err(format!("{what} URL {name} must be http:// or https://"));
        }
        if !parsed.username().is_empty() || parsed.password().is_some() {
            return Err(format!(
                "{what} URL {name}: put no credentials in the URL; use token-secret"
            ));
        }
        if token_secret.is_some()
            && parsed.scheme() == "http"
            && !parsed
                .host_str()
                .is_some_and(|h| h == "127.0.0.1" || h == "localhost" || h == "[::1]")
        {
            tracing::warn!(endpoint = %name, "the {what} token crosses the network in clear text; use https://");
        }
        let token = token_secret
            .map(|secret| {
                secrets
                    .get(secret)
                    .map(|s| s.expose().to_string())
                    .map_err(|e| format!("{what} {name}: token secret: {e}"))
            })
            .transpose()?;
        let client = reqwest::Client::builder()
            .timeout(Duration::from_millis(timeout_ms.max(1)))
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| format!("{what} {name}: {e}"))?;
        Ok(Endpoint {
            url: parsed,
            name,
            token,
            client,
        })
    }

    /// POST `body` with `content_type` and `headers` to `url` (this
    /// endpoint's, or one under it); an error names the endpoint, never its
    /// credentials.
    pub async fn post(
        &self,
        url: &url::Url,
        content_type: &str,
        headers: &[(&str, &str)],
        body: Vec<u8>,
    ) -> Result<(), String> {
        self.send(url, content_type, headers, body)
            .await
            .map_err(|f| f.message)
    }

    /// [`Endpoint::post`], with the answer's status when there was one.
    pub async fn send(
        &self,
        url: &url::Url,
        content_type: &str,
        headers: &[(&str, &str)],
        body: Vec<u8>,
    ) -> Result<(), Failure> {
        let mut req = self
            .client
            .post(url.as_str())
            .header("content-type", content_type)
            .body(body);
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        if let Some(t) = &self.token {
            req = req.bearer_auth(t);
        }
        let resp = req.send().await.map_err(|e| Failure {
            status: None,
            message: format!("POST {}: {}", self.name, described(e)),
        })?;
        if !resp.status().is_success() {
            return Err(Failure {
                status: Some(resp.status().as_u16()),
                message: format!("POST {} answered {}", self.name, resp.status()),
            });
        }
        Ok(())
    }
}

/// A post that did not succeed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    /// The status of the answer (none: no answer).
    pub status: Option<u16>,
    /// What failed, naming the endpoint without credentials.
    pub message: String,
}

/// What kind of failure `e` is (timed out, could not connect...) and its
/// causes, without the URL.
fn described(e: reqwest::Error) -> String {
    let kind = if e.is_timeout() {
        "timed out"
    } else if e.is_connect() {
        "could not connect"
    } else if e.is_request() {
        "the request failed"
    } else {
        "failed"
    };
    let e = e.without_url();
    let mut causes = Vec::new();
    let mut source = std::error::Error::source(&e);
    while let Some(s) = source {
        causes.push(s.to_string());
        source = s.source();
    }
    if causes.is_empty() {
        format!("{kind}: {e}")
    } else {
        format!("{kind}: {e}: {}", causes.join(": "))
    }
}
