//! The HTTP executor against a real HTTP server on loopback: base-url
//! bounds, private ranges refused by default, redirects kept on one origin,
//! body cap, timeout, connection retries, reserved headers; and through a
//! kernel: dry-run honours the declared effect, and an endpoint's
//! auth-secret reaches the endpoint but nothing firedrill records.

use std::time::Duration;

use firedrill::Mode;
use firedrill::transport::{
    ExecError, ExecLimits, Faults, HttpOutput, HttpRequest, HttpTarget, Inventory, RetryConfig,
    TargetSpec, Targets, TargetsConfig,
};
use firedrill_tests::web::WebServer;
use firedrill_tests::{CANARY, TestEnv};

fn endpoint(base_url: &str, allow_private: bool) -> TargetSpec {
    TargetSpec::Http(HttpTarget {
        base_url: base_url.into(),
        auth_secret: None,
        allow_private,
        labels: Default::default(),
    })
}

fn targets(specs: Vec<(&str, TargetSpec)>) -> Targets {
    let mut inventory = Inventory::default();
    for (name, spec) in specs {
        inventory.targets.insert(name.to_string(), spec);
    }
    Targets::with_config(
        inventory,
        &TargetsConfig {
            retry: RetryConfig {
                attempts: 3,
                base_delay_ms: 20,
                max_delay_ms: 100,
            },
            ..TargetsConfig::default()
        },
    )
}

async fn get(
    t: &Targets,
    name: &str,
    url: &str,
    timeout_ms: u64,
) -> (Result<HttpOutput, ExecError>, Faults) {
    let mut faults = Faults::default();
    let request = HttpRequest {
        method: "GET".into(),
        url: t.resolve_url(name, url),
        headers: Vec::new(),
        body: Vec::new(),
    };
    let limits = ExecLimits {
        timeout: Duration::from_millis(timeout_ms),
        output_bytes: 4096,
    };
    let r = t
        .http_request(name, request, None, limits, &mut faults)
        .await;
    (r, faults)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn private_addresses_are_refused_unless_the_endpoint_allows_them() {
    let web = WebServer::start().await;
    let t = targets(vec![
        ("strict-ip", endpoint(&web.url(""), false)),
        (
            "strict-name",
            endpoint(&format!("http://localhost:{}", web.port), false),
        ),
        ("allowed", endpoint(&web.url(""), true)),
    ]);
    let err = get(&t, "strict-ip", "/healthz", 5_000)
        .await
        .0
        .unwrap_err()
        .to_string();
    assert!(err.contains("allow-private: true"), "{err}");
    // A name is checked after resolution, so DNS cannot smuggle loopback in.
    let err = get(&t, "strict-name", "/healthz", 5_000)
        .await
        .0
        .unwrap_err()
        .to_string();
    assert!(err.contains("resolves only to loopback"), "{err}");
    assert_eq!(web.requests(), 0);
    let out = get(&t, "allowed", "/healthz", 5_000)
        .await
        .0
        .expect("allowed");
    assert_eq!(out.status, 200);
    assert_eq!(out.body, b"ok auth=[]");
    assert_eq!(web.requests(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_stay_under_the_base_url_and_redirects_on_its_origin() {
    let web = WebServer::start().await;
    let t = targets(vec![
        ("lb", endpoint(&web.url("/api"), true)),
        ("root", endpoint(&web.url(""), true)),
    ]);
    let err = get(&t, "lb", &web.url("/healthz"), 5_000)
        .await
        .0
        .unwrap_err()
        .to_string();
    assert!(err.contains("outside the endpoint's base-url"), "{err}");
    let err = get(&t, "root", "http://127.0.0.2:1/healthz", 5_000)
        .await
        .0
        .unwrap_err()
        .to_string();
    assert!(err.contains("outside the endpoint's base-url"), "{err}");
    // Same-origin redirect followed; cross-host redirect refused.
    let out = get(&t, "root", "/redirect-here", 5_000)
        .await
        .0
        .expect("followed");
    assert_eq!(out.status, 200);
    let err = get(&t, "root", "/redirect-away", 5_000)
        .await
        .0
        .unwrap_err()
        .to_string();
    assert!(err.contains("redirect to http://127.0.0.2"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn body_cap_timeout_and_connection_retries() {
    let web = WebServer::start().await;
    let t = targets(vec![("web", endpoint(&web.url(""), true))]);
    let out = get(&t, "web", "/big", 10_000).await.0.expect("answers");
    assert_eq!(out.body.len(), 4096);
    assert!(out.truncated);
    let started = std::time::Instant::now();
    let err = get(&t, "web", "/slow", 500).await.0.unwrap_err();
    assert!(matches!(err, ExecError::Timeout(_)), "{err}");
    assert!(started.elapsed() < Duration::from_secs(10));

    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("port")
        .port();
    let t = targets(vec![(
        "down",
        endpoint(&format!("http://127.0.0.1:{port}"), true),
    )]);
    let (r, faults) = get(&t, "down", "/healthz", 10_000).await;
    let err = r.unwrap_err().to_string();
    assert!(err.contains("after 3 connection attempts"), "{err}");
    assert_eq!(faults.retries, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kernels_cannot_set_auth_or_host_headers() {
    let web = WebServer::start().await;
    let t = targets(vec![("web", endpoint(&web.url(""), true))]);
    for name in ["Authorization", "host", "Cookie"] {
        let mut faults = Faults::default();
        let err = t
            .http_request(
                "web",
                HttpRequest {
                    method: "GET".into(),
                    url: web.url("/healthz"),
                    headers: vec![(name.into(), "x".into())],
                    body: Vec::new(),
                },
                None,
                ExecLimits {
                    timeout: Duration::from_secs(5),
                    output_bytes: 1024,
                },
                &mut faults,
            )
            .await
            .unwrap_err()
            .to_string();
        assert!(err.contains("is set by firedrill"), "{err}");
    }
    assert_eq!(web.requests(), 0);
}

fn kernel_runbook(method: &str, url: &str) -> String {
    format!(
        "apiVersion: firedrill/v1\nname: web\nversion: 1\nsteps:\n  - id: call\n    kernel: hostile@0.1.0\n    targets: [lb]\n    with: {{ behaviour: http, method: {method}, url: \"{url}\" }}\n"
    )
}

async fn env_with_lb(web: &WebServer) -> TestEnv {
    let mut extra = Inventory::default();
    extra.targets.insert(
        "lb".into(),
        TargetSpec::Http(HttpTarget {
            base_url: web.url(""),
            auth_secret: Some("canary".into()),
            allow_private: true,
            labels: Default::default(),
        }),
    );
    TestEnv::with_targets(extra, TargetsConfig::default()).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dry_run_sends_observe_requests_and_only_plans_changes() {
    let web = WebServer::start().await;
    let env = env_with_lb(&web).await;
    let id = env
        .run_text(&kernel_runbook("POST", "/drain"), Mode::DryRun, &[])
        .await
        .expect("runs");
    let step = &env.store.steps(&id).await.expect("steps")[0];
    assert_eq!(step.output.as_ref().expect("output")["simulated"], true);
    assert_eq!(
        web.counters
            .drains
            .load(std::sync::atomic::Ordering::SeqCst),
        0
    );
    let calls = env.store.host_calls(&id).await.expect("calls");
    assert_eq!(calls[0].call["simulated"], true);
    assert_eq!(calls[0].call["url"], web.url("/drain"));

    let id = env
        .run_text(&kernel_runbook("POST", "/drain"), Mode::Live, &[])
        .await
        .expect("runs");
    let step = &env.store.steps(&id).await.expect("steps")[0];
    assert_eq!(step.output.as_ref().expect("output")["status"], 200);
    assert_eq!(
        web.counters
            .drains
            .load(std::sync::atomic::Ordering::SeqCst),
        1
    );

    // Observe calls run in dry-run too, so a plan shows real state.
    let id = env
        .run_text(&kernel_runbook("GET", "/ready"), Mode::DryRun, &[])
        .await
        .expect("runs");
    let step = &env.store.steps(&id).await.expect("steps")[0];
    assert_eq!(step.output.as_ref().expect("output")["status"], 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_endpoint_auth_secret_is_sent_but_never_recorded() {
    let web = WebServer::start().await;
    let env = env_with_lb(&web).await;
    let id = env
        .run_text(&kernel_runbook("GET", "/healthz"), Mode::Live, &[])
        .await
        .expect("runs");
    let step = &env.store.steps(&id).await.expect("steps")[0];
    // The endpoint got the token and echoed it; firedrill redacted the echo
    // in the kernel's output, its log and the host call record.
    let output = step.output.as_ref().expect("output");
    assert_eq!(output["body"], "ok auth=[Bearer [redacted]]");
    let text = String::from_utf8_lossy(&env.store_bytes().await).into_owned();
    assert!(!text.contains(CANARY), "the auth secret reached the store");
    assert!(text.contains("Bearer [redacted]"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redirect_count_and_request_body_limits_hold_at_their_edges() {
    let web = WebServer::start().await;
    let mut inventory = Inventory::default();
    inventory
        .targets
        .insert("root".into(), endpoint(&web.url(""), true));
    let t = Targets::with_config(
        inventory,
        &TargetsConfig {
            http: firedrill::transport::HttpConfig {
                max_redirects: 3,
                request_bytes: 1024,
                ..Default::default()
            },
            ..TargetsConfig::default()
        },
    );
    // /hops/N answers after N+1 redirects (the last one to /healthz).
    let out = get(&t, "root", "/hops/2", 5_000)
        .await
        .0
        .expect("3 redirects");
    assert_eq!(out.status, 200);
    let err = get(&t, "root", "/hops/3", 5_000)
        .await
        .0
        .unwrap_err()
        .to_string();
    assert!(err.contains("more than 3 redirects"), "{err}");

    let post = |bytes: usize| {
        let request = HttpRequest {
            method: "POST".into(),
            url: t.resolve_url("root", "/drain"),
            headers: Vec::new(),
            body: vec![b'x'; bytes],
        };
        let limits = ExecLimits {
            timeout: Duration::from_secs(5),
            output_bytes: 4096,
        };
        let t = &t;
        async move {
            t.http_request("root", request, None, limits, &mut Faults::default())
                .await
        }
    };
    let out = post(1024).await.expect("exactly the limit is sent");
    assert_eq!(out.status, 200);
    let err = post(1025).await.unwrap_err().to_string();
    assert!(err.contains("targets.http.request-bytes"), "{err}");
    assert_eq!(
        web.counters
            .drains
            .load(std::sync::atomic::Ordering::SeqCst),
        1
    );
}
