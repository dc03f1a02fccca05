//! The HTTP executor: `host.http` calls to endpoints in the inventory
//! (reqwest with rustls and the system's root certificates).
//!
//! - A request must stay under its endpoint's `base-url` (same scheme, host,
//!   port, and path prefix); redirects are followed only to the same origin.
//! - Loopback, link-local, private and other non-public addresses are refused
//!   unless the endpoint sets `allow-private: true`: IP literals are checked
//!   before sending, and names are resolved by a resolver that drops such
//!   addresses. No proxy from the environment is used (it would resolve
//!   names for us).
//! - Connect failures (nothing was sent) are retried with backoff and counted;
//!   the total time is bounded by the call's timeout, and the body by its cap.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use reqwest::dns::{Addrs, Name, Resolve, Resolving};
use reqwest::redirect;
use serde::{Deserialize, Serialize};
use url::Url;

use super::inventory::HttpTarget;
use super::{ExecError, ExecLimits, Faults, RetryConfig};
use crate::secret::Secret;

/// `[targets.http]` in `firedrill.toml`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "kebab-case", default)]
pub struct HttpConfig {
    /// TCP and TLS connect timeout per attempt, in milliseconds. Default 5,000.
    pub connect_timeout_ms: u64,
    /// Redirects followed per request (same origin only). Default 5.
    pub max_redirects: usize,
    /// Largest request body a kernel may send, in bytes. Default 1 MiB.
    pub request_bytes: usize,
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            connect_timeout_ms: 5_000,
            max_redirects: 5,
            request_bytes: 1 << 20,
        }
    }
}

/// A request from a kernel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpRequest {
    pub method: String,
    pub url: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

/// A response, body capped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpOutput {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    /// True when the body was cut at the cap.
    pub truncated: bool,
}

/// An endpoint's `base-url`, checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BaseUrl(Url);

impl BaseUrl {
    pub fn parse(text: &str) -> Result<Self, String> {
        let url = Url::parse(text).map_err(|e| format!("base-url {text:?} is not a URL: {e}"))?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(format!("base-url {text:?} must be http:// or https://"));
        }
        if url.host_str().is_none_or(str::is_empty) {
            return Err(format!("base-url {text:?} has no host"));
        }
        if !url.username().is_empty() || url.password().is_some() {
            return Err(format!(
                "base-url {text:?} carries credentials; use auth-secret instead"
            ));
        }
        if url.query().is_some() || url.fragment().is_some() {
            return Err(format!(
                "base-url {text:?} must not have a query or fragment"
            ));
        }
        Ok(BaseUrl(url))
    }

    /// Whether `url` is under this base: same origin and path prefix.
    pub fn contains(&self, url: &Url) -> bool {
        let base = &self.0;
        if !same_origin(base, url) {
            return false;
        }
        let prefix = base.path();
        let path = url.path();
        prefix == "/"
            || path == prefix
            || path.starts_with(&format!("{}/", prefix.trim_end_matches('/')))
    }
}

fn same_origin(a: &Url, b: &Url) -> bool {
    a.scheme() == b.scheme()
        && a.host_str() == b.host_str()
        && a.port_or_known_default() == b.port_or_known_default()
}

/// Addresses an endpoint must opt in to with `allow-private: true`.
pub fn is_internal(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            let o = v4.octets();
            v4.is_loopback()
                || v4.is_private()
                || v4.is_link_local()
                || v4.is_unspecified()
                || v4.is_broadcast()
                || v4.is_multicast()
                || o[0] == 0
                || (o[0] == 100 && (o[1] & 0xc0) == 64) // 100.64.0.0/10, shared (CGNAT)
                || (o[0] == 198 && (o[1] & 0xfe) == 18) // 198.18.0.0/15, benchmarking
                || o[0] >= 240 // reserved
        }
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return is_internal(IpAddr::V4(v4));
            }
            let s = v6.segments();
            v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_multicast()
                || (s[0] & 0xfe00) == 0xfc00 // unique local
                || (s[0] & 0xffc0) == 0xfe80 // link-local
        }
    }
}

/// Resolves names, dropping internal addresses; fails when none is left.
#[derive(Debug)]
struct PublicOnly;

impl Resolve for PublicOnly {
    fn resolve(&self, name: Name) -> Resolving {
        let host = name.as_str().to_string();
        Box::pin(async move {
            let all: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            let public: Vec<SocketAddr> = all
                .iter()
                .copied()
                .filter(|a| !is_internal(a.ip()))
                .collect();
            if public.is_empty() && !all.is_empty() {
                return Err(format!(
                    "{host} resolves only to loopback, link-local or private addresses ({}); set allow-private: true on the endpoint in inventory.yaml if it is meant to be reached",
                    all.iter().map(|a| a.ip().to_string()).collect::<Vec<_>>().join(", ")
                )
                .into());
            }
            Ok(Box::new(public.into_iter()) as Addrs)
        })
    }
}

/// Sends kernels' HTTP requests; see the module docs.
#[derive(Debug)]
pub struct HttpExecutor {
    config: HttpConfig,
    retry: RetryConfig,
    /// Public addresses only.
    public: reqwest::Client,
    /// For endpoints with `allow-private: true`.
    any: reqwest::Client,
}

/// Headers a kernel may not set: they would change where the request goes or
/// who it claims to be.
const RESERVED_HEADERS: [&str; 4] = ["host", "authorization", "proxy-authorization", "cookie"];

impl HttpExecutor {
    pub fn new(config: HttpConfig, retry: RetryConfig) -> Self {
        let build = |public: bool| {
            let max = config.max_redirects;
            let mut b = reqwest::Client::builder()
                .use_rustls_tls()
                .no_proxy()
                .connect_timeout(Duration::from_millis(config.connect_timeout_ms))
                .redirect(redirect::Policy::custom(move |attempt| {
                    if attempt.previous().len() > max {
                        return attempt.error(format!("more than {max} redirects"));
                    }
                    let allowed = attempt
                        .previous()
                        .first()
                        .is_some_and(|first| same_origin(first, attempt.url()));
                    if allowed {
                        attempt.follow()
                    } else {
                        let to = attempt.url().to_string();
                        attempt.error(format!(
                            "redirect to {to} refused: redirects are followed only within the same scheme, host and port"
                        ))
                    }
                }));
            if public {
                b = b.dns_resolver(Arc::new(PublicOnly));
            }
            // Building only fails when the TLS backend cannot start, which
            // is a broken installation; fall back to a default client.
            b.build().unwrap_or_else(|e| {
                tracing::error!(error = %e, "cannot build the HTTP client; using defaults");
                reqwest::Client::new()
            })
        };
        HttpExecutor {
            public: build(true),
            any: build(false),
            config,
            retry,
        }
    }

    /// Send `request` to endpoint `name`.
    pub async fn request(
        &self,
        name: &str,
        spec: &HttpTarget,
        request: HttpRequest,
        auth: Option<&Secret>,
        limits: ExecLimits,
        faults: &mut Faults,
    ) -> Result<HttpOutput, ExecError> {
        let failed = |reason: String| ExecError::Failed {
            target: name.to_string(),
            reason,
        };
        let base = BaseUrl::parse(&spec.base_url).map_err(&failed)?;
        let url = Url::parse(&request.url)
            .map_err(|e| failed(format!("{:?} is not an absolute URL: {e}", request.url)))?;
        if !base.contains(&url) {
            return Err(failed(format!(
                "{url} is outside the endpoint's base-url {}",
                spec.base_url
            )));
        }
        if !spec.allow_private {
            let ip = match url.host() {
                Some(url::Host::Ipv4(v4)) => Some(IpAddr::V4(v4)),
                Some(url::Host::Ipv6(v6)) => Some(IpAddr::V6(v6)),
                _ => None,
            };
            if let Some(ip) = ip.filter(|ip| is_internal(*ip)) {
                return Err(failed(format!(
                    "{ip} is a loopback, link-local or private address; set allow-private: true on the endpoint in inventory.yaml if it is meant to be reached"
                )));
            }
        }
        let method = reqwest::Method::from_bytes(request.method.as_bytes())
            .map_err(|_| failed(format!("{:?} is not an HTTP method", request.method)))?;
        if request.body.len() > self.config.request_bytes {
            return Err(failed(format!(
                "request body of {} bytes is over targets.http.request-bytes ({})",
                request.body.len(),
                self.config.request_bytes
            )));
        }
        let mut headers = reqwest::header::HeaderMap::new();
        for (k, v) in &request.headers {
            if RESERVED_HEADERS.contains(&k.to_ascii_lowercase().as_str()) {
                return Err(failed(format!(
                    "header {k:?} is set by firedrill, not by kernels (auth comes from the endpoint's auth-secret)"
                )));
            }
            let name = reqwest::header::HeaderName::from_bytes(k.as_bytes())
                .map_err(|_| failed(format!("{k:?} is not a valid header name")))?;
            let value = reqwest::header::HeaderValue::from_str(v)
                .map_err(|_| failed(format!("the value of header {k:?} is not valid")))?;
            headers.append(name, value);
        }
        if let Some(secret) = auth {
            let mut value =
                reqwest::header::HeaderValue::from_str(&format!("Bearer {}", secret.expose()))
                    .map_err(|_| failed("the auth-secret is not a valid header value".into()))?;
            value.set_sensitive(true);
            headers.insert(reqwest::header::AUTHORIZATION, value);
        }
        let client = if spec.allow_private {
            &self.any
        } else {
            &self.public
        };
        let deadline = Instant::now() + limits.timeout;
        let mut attempt: u32 = 0;
        let response = loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(ExecError::Timeout(limits.timeout));
            }
            let sent = client
                .request(method.clone(), url.clone())
                .headers(headers.clone())
                .body(request.body.clone())
                .timeout(left)
                .send()
                .await;
            match sent {
                Ok(r) => break r,
                Err(e) if e.is_timeout() => return Err(ExecError::Timeout(limits.timeout)),
                Err(e) if e.is_connect() => {
                    attempt += 1;
                    let delay = self.retry.delay(attempt);
                    let reason = error_chain(&e);
                    if attempt >= self.retry.attempts.max(1) || Instant::now() + delay >= deadline {
                        return Err(failed(format!(
                            "{reason} (after {attempt} connection attempt{})",
                            if attempt == 1 { "" } else { "s" }
                        )));
                    }
                    tracing::warn!(target_name = name, %reason, attempt, ?delay, "HTTP connect failed; retrying");
                    faults.retries += 1;
                    tokio::time::sleep(delay).await;
                }
                Err(e) => return Err(failed(error_chain(&e))),
            }
        };
        let status = response.status().as_u16();
        let headers = response
            .headers()
            .iter()
            .map(|(k, v)| {
                (
                    k.to_string(),
                    String::from_utf8_lossy(v.as_bytes()).into_owned(),
                )
            })
            .collect();
        let mut response = response;
        let mut body = Vec::new();
        let mut truncated = false;
        loop {
            let chunk = tokio::time::timeout_at(deadline.into(), response.chunk())
                .await
                .map_err(|_| ExecError::Timeout(limits.timeout))?;
            match chunk {
                Ok(Some(bytes)) => {
                    let room = limits.output_bytes.saturating_sub(body.len());
                    if bytes.len() > room {
                        body.extend_from_slice(&bytes[..room]);
                        // Stop reading: the rest is not wanted, and the
                        // connection is dropped with the response.
                        truncated = true;
                        break;
                    }
                    body.extend_from_slice(&bytes);
                }
                Ok(None) => break,
                Err(e) if e.is_timeout() => return Err(ExecError::Timeout(limits.timeout)),
                Err(e) => {
                    return Err(failed(format!(
                        "reading the response failed: {}",
                        error_chain(&e)
                    )));
                }
            }
        }
        Ok(HttpOutput {
            status,
            headers,
            body,
            truncated,
        })
    }
}

/// An error with its causes, which is where reqwest keeps the useful part.
fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let s_text = s.to_string();
        if !text.contains(&s_text) {
            text.push_str(": ");
            text.push_str(&s_text);
        }
        source = s.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base_url_bounds_requests() {
        let base = BaseUrl::parse("https://lb.example.com:8443/api").expect("valid");
        let ok = |u: &str| base.contains(&Url::parse(u).expect("url"));
        assert!(ok("https://lb.example.com:8443/api"));
        assert!(ok("https://lb.example.com:8443/api/pools/web?x=1"));
        assert!(!ok("https://lb.example.com:8443/apix"));
        assert!(!ok("https://lb.example.com:8443/"));
        assert!(!ok("http://lb.example.com:8443/api/x"));
        assert!(!ok("https://lb.example.com/api/x"));
        assert!(!ok("https://evil.example.com:8443/api/x"));
        assert!(!ok("https://lb.example.com.evil.com:8443/api/x"));
        let root = BaseUrl::parse("http://10.0.0.1").expect("valid");
        assert!(root.contains(&Url::parse("http://10.0.0.1:80/anything").expect("url")));
        for bad in [
            "ftp://x/",
            "not a url",
            "https://user:pw@x/",
            "https://x/?q=1",
            "file:///etc/passwd",
        ] {
            assert!(BaseUrl::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn internal_addresses() {
        for ip in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "0.0.0.0",
            "::1",
            "fe80::1",
            "fd00::1",
            "::ffff:127.0.0.1",
            "::ffff:169.254.169.254",
        ] {
            assert!(is_internal(ip.parse().expect("ip")), "{ip}");
        }
        for ip in ["8.8.8.8", "1.1.1.1", "2001:4860:4860::8888", "172.32.0.1"] {
            assert!(!is_internal(ip.parse().expect("ip")), "{ip}");
        }
    }
}
