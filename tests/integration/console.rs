//! The web console over real HTTP: the shell and assets with their
//! security headers, sign-in into an HttpOnly cookie, the CSRF check on
//! cookie-authenticated changes, sign-out and revocation, the live run
//! stream (server-sent events) and its limit, and the endpoints the pages
//! read (`/api/v1/me`, `/api/v1/triggers`, kernels with their users, a
//! runbook's parsed definition, a run's pending approval).

use std::time::Duration;

use firedrill::audit::Actor;
use firedrill::auth::{self, Role};
use firedrill::server::ServerConfig;
use firedrill::store::AuditFilter;
use firedrill_tests::TestEnv;
use reqwest::StatusCode;
use reqwest::header::{HeaderMap, SET_COOKIE};
use serde_json::{Value, json};

const WAIT_FOR: &str = "apiVersion: firedrill/v1\nname: waiter\nversion: 1\ninputs: { type: object, properties: { dir: { type: string } } }\nsteps:\n  - id: wait\n    kernel: hostile@0.1.0\n    targets: [demo-host]\n    with: { behaviour: wait-for, path: \"{{ inputs.dir }}\" }\n  - id: after\n    kernel: trivial@0.1.0\n    targets: [demo-host]\n";
const ALERTED: &str = "apiVersion: firedrill/v1\nname: alerted\nversion: 1\nsteps:\n  - id: one\n    kernel: trivial@0.1.0\n    targets: [demo-host]\ntriggers:\n  - source: alertmanager\n    match: { alertname: Down }\n";

struct Console {
    url: String,
    env: TestEnv,
    client: reqwest::Client,
}

async fn console(config: ServerConfig) -> Console {
    let env = TestEnv::new().await;
    env.publish(&[WAIT_FOR, ALERTED]).await;
    let (url, _state) = env.serve(config).await;
    Console {
        url,
        env,
        client: reqwest::Client::new(),
    }
}

impl Console {
    /// `method path` with these headers and JSON body; status, headers, JSON
    /// (or the text as a JSON string).
    async fn send(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: Option<Value>,
    ) -> (StatusCode, HeaderMap, Value) {
        let mut req = self.client.request(
            method.parse().expect("method"),
            format!("{}{path}", self.url),
        );
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await.expect("request");
        let (status, headers) = (resp.status(), resp.headers().clone());
        let text = resp.text().await.expect("body");
        let value = serde_json::from_str(&text).unwrap_or(Value::String(text));
        (status, headers, value)
    }

    /// Start a live `waiter` run as `token`: it waits in its first step until
    /// `go` is written into the returned directory.
    async fn start_waiter(&self, token: &str) -> (tempfile::TempDir, String) {
        let gate = tempfile::tempdir().expect("gate");
        let dir = gate.path().display().to_string();
        let (status, _, started) = self
            .send(
                "POST",
                "/api/v1/runs",
                &[("authorization", &format!("Bearer {token}"))],
                Some(json!({"runbook": "waiter", "mode": "live", "force_untested": true, "inputs": {"dir": dir}})),
            )
            .await;
        assert_eq!(status, StatusCode::ACCEPTED, "{started}");
        (gate, started["run_id"].as_str().expect("id").to_string())
    }

    /// Open run `id`'s event stream as `token`.
    async fn events(&self, token: &str, id: &str) -> reqwest::Response {
        self.client
            .get(format!("{}/api/v1/runs/{id}/events", self.url))
            .bearer_auth(token)
            .send()
            .await
            .expect("stream")
    }

    /// `POST /console/session` with `token`.
    async fn post_session(&self, token: &str) -> (StatusCode, HeaderMap, Value) {
        self.send(
            "POST",
            "/console/session",
            &[],
            Some(json!({"token": token})),
        )
        .await
    }

    /// Sign in with `token`; the cookie header to send back and the CSRF token.
    async fn sign_in(&self, token: &str) -> (String, String) {
        let (status, headers, body) = self.post_session(token).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        let cookie = headers
            .get(SET_COOKIE)
            .and_then(|v| v.to_str().ok())
            .expect("a session cookie")
            .to_string();
        let pair = cookie.split(';').next().expect("name=value").to_string();
        (pair, body["csrf"].as_str().expect("csrf").to_string())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_shell_and_assets_come_from_the_binary_with_strict_headers() {
    let c = console(ServerConfig::default()).await;
    for path in ["/console/", "/console/runs/some-id", "/console/audit"] {
        let (status, headers, body) = c.send("GET", path, &[], None).await;
        assert_eq!(status, StatusCode::OK, "{path}");
        let csp = headers["content-security-policy"].to_str().expect("csp");
        assert!(
            csp.contains("default-src 'none'") && csp.contains("script-src 'self'"),
            "{csp}"
        );
        assert_eq!(headers["x-frame-options"], "DENY");
        let html = body.as_str().expect("html");
        assert!(html.contains("/console/assets/console.js"), "{html}");
        // Nothing from outside: every script and stylesheet is ours.
        assert!(
            !html.contains("http://") && !html.contains("https://"),
            "{html}"
        );
    }
    let (status, headers, body) = c.send("GET", "/console/assets/console.js", &[], None).await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        headers["content-type"]
            .to_str()
            .expect("type")
            .starts_with("text/javascript")
    );
    assert!(body.as_str().expect("js").contains("EventSource"));
    let (status, _, _) = c
        .send("GET", "/console/assets/../../etc/passwd", &[], None)
        .await;
    assert_ne!(status, StatusCode::OK);
    let (status, _, _) = c.send("GET", "/console/assets/other.js", &[], None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    // `/` leads to the console.
    let resp = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client")
        .get(format!("{}/", c.url))
        .send()
        .await
        .expect("get /");
    assert!(resp.status().is_redirection());
    assert_eq!(resp.headers()["location"], "/console/");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sign_in_keeps_the_token_in_an_httponly_cookie_and_changes_need_csrf() {
    let c = console(ServerConfig::default()).await;
    let alice = c.env.token("alice", Role::Admin, &[]).await;
    // An unknown token gets no cookie.
    let (status, headers, _) = c.post_session("fdt_nope").await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert!(headers.get(SET_COOKIE).is_none());
    let (status, headers, body) = c.post_session(&alice).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let set = headers[SET_COOKIE].to_str().expect("cookie");
    for part in [
        "firedrill_session=",
        "HttpOnly",
        "SameSite=Strict",
        "Path=/",
        "Max-Age=43200",
    ] {
        assert!(set.contains(part), "{part} missing in {set}");
    }
    assert!(!set.contains("Secure"), "plain HTTP by default: {set}");
    assert_eq!(body["role"], "admin");
    let (cookie, csrf) = c.sign_in(&alice).await;
    let cookie = cookie.as_str();
    // The cookie authenticates reads.
    let (status, _, me) = c
        .send("GET", "/api/v1/me", &[("cookie", cookie)], None)
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(me["name"], "alice");
    assert_eq!(me["csrf"], csrf.as_str());
    assert_eq!(me["may"]["engage_switch"], true);
    // A change with the cookie but without the CSRF token (what a forged
    // cross-site form would send) is refused, and nothing changes.
    let engage = json!({"engaged": true, "reason": "console test"});
    for headers in [
        vec![("cookie", cookie)],
        vec![("cookie", cookie), ("x-csrf-token", "0000")],
    ] {
        let (status, _, body) = c
            .send("PUT", "/api/v1/switch", &headers, Some(engage.clone()))
            .await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
        assert_eq!(body["error"]["code"], "csrf");
    }
    let switches = c.env.store.switches().await.expect("switches");
    assert!(switches.iter().all(|s| !s.engaged), "{switches:?}");
    // With it, the change is made, by the token's actor.
    let (status, _, body) = c
        .send(
            "PUT",
            "/api/v1/switch",
            &[("cookie", cookie), ("x-csrf-token", &csrf)],
            Some(engage),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let switches = c.env.store.switches().await.expect("switches");
    assert!(
        switches
            .iter()
            .any(|s| s.engaged && s.actor == "token:alice"),
        "{switches:?}"
    );
    // Bearer clients are unaffected: no CSRF token needed.
    let (status, _, _) = c
        .send(
            "PUT",
            "/api/v1/switch",
            &[("authorization", &format!("Bearer {alice}"))],
            Some(json!({"engaged": false, "reason": "bearer"})),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    // Signing in is audited, without the token.
    let records = c
        .env
        .store
        .audit(&AuditFilter {
            action: Some("console.signed-in".into()),
            limit: 10,
            ..AuditFilter::default()
        })
        .await
        .expect("audit");
    assert_eq!(records.len(), 2);
    assert_eq!(
        (records[0].actor_kind.as_str(), records[0].actor_id.as_str()),
        ("token", "alice")
    );
    assert!(
        !serde_json::to_string(&records)
            .expect("json")
            .contains(&alice)
    );
    // Sign-out clears the cookie (and needs the CSRF token too).
    let (status, _, _) = c
        .send("DELETE", "/console/session", &[("cookie", cookie)], None)
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, headers, _) = c
        .send(
            "DELETE",
            "/console/session",
            &[("cookie", cookie), ("x-csrf-token", &csrf)],
            None,
        )
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    assert!(
        headers[SET_COOKIE]
            .to_str()
            .expect("cookie")
            .contains("Max-Age=0")
    );
    let signed_out = c.env.audited("console.signed-out").await;
    assert!(
        signed_out
            .iter()
            .any(|r| r.actor_kind == "token" && r.actor_id == "alice" && r.subject == "alice"),
        "{signed_out:?}"
    );
    // Revoking the token ends every session that holds it.
    auth::revoke(c.env.store.as_ref(), "alice", None, &Actor::user("admin"))
        .await
        .expect("revoke");
    let revoked = c.env.audited("token.revoked").await;
    assert!(
        revoked
            .iter()
            .any(|r| r.subject == "token:alice" && r.actor_id == "admin"),
        "{revoked:?}"
    );
    let (status, _, _) = c
        .send("GET", "/api/v1/me", &[("cookie", cookie)], None)
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_secure_flag_is_set_when_configured() {
    let c = console(ServerConfig {
        secure_cookie: true,
        session_ttl_s: 600,
        ..ServerConfig::default()
    })
    .await;
    let token = c.env.token("viewer", Role::Viewer, &[]).await;
    let (_, headers, body) = c.post_session(&token).await;
    let set = headers[SET_COOKIE].to_str().expect("cookie");
    assert!(
        set.contains("; Secure") && set.contains("Max-Age=600"),
        "{set}"
    );
    assert_eq!(
        body["may"]["start_run"], false,
        "a viewer may not start runs"
    );
}

/// Read server-sent events from `resp` until the stream ends or `until`
/// says stop; returns (event, data) pairs.
async fn read_events(
    mut resp: reqwest::Response,
    mut until: impl FnMut(&str, &Value) -> bool,
) -> (Vec<(String, Value)>, bool) {
    let mut buf = String::new();
    let mut events = Vec::new();
    loop {
        let chunk = tokio::time::timeout(Duration::from_secs(60), resp.chunk())
            .await
            .expect("an event within 60 s")
            .expect("stream");
        let Some(chunk) = chunk else {
            return (events, true); // the server ended the stream
        };
        buf.push_str(std::str::from_utf8(&chunk).expect("utf-8"));
        while let Some(end) = buf.find("\n\n") {
            let block: String = buf.drain(..end + 2).collect();
            let mut name = String::new();
            let mut data = String::new();
            for line in block.lines() {
                if let Some(v) = line.strip_prefix("event:") {
                    name = v.trim().to_string();
                } else if let Some(v) = line.strip_prefix("data:") {
                    data.push_str(v.trim_start());
                }
            }
            if name.is_empty() {
                continue; // a keep-alive comment
            }
            let value = serde_json::from_str(&data).unwrap_or(Value::String(data));
            let stop = until(&name, &value);
            events.push((name, value));
            if stop {
                return (events, false);
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_streams_each_change_until_it_finishes_and_streams_are_bounded() {
    let c = console(ServerConfig {
        max_event_streams: 1,
        event_poll_ms: 50,
        ..ServerConfig::default()
    })
    .await;
    let token = c.env.token("oncall", Role::Operator, &[]).await;
    let bearer = format!("Bearer {token}");
    let (gate, id) = c.start_waiter(&token).await;
    let stream = c.events(&token, &id).await;
    assert_eq!(stream.status(), StatusCode::OK);
    assert!(
        stream.headers()["content-type"]
            .to_str()
            .expect("type")
            .starts_with("text/event-stream")
    );
    // A second stream is over the limit of one.
    let (status, _, body) = c
        .send(
            "GET",
            &format!("/api/v1/runs/{id}/events"),
            &[("authorization", &bearer)],
            None,
        )
        .await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .expect("message")
            .contains("max-event-streams")
    );
    // The first event is the run as it is: waiting in its first step.
    let (first, ended) = read_events(stream, |_, v| {
        v["steps"]
            .as_array()
            .is_some_and(|s| s.iter().any(|s| s["id"] == "wait"))
    })
    .await;
    assert!(!ended);
    assert_eq!(first.last().expect("event").0, "run");
    // Let the step finish; the stream follows the run to its end, then closes.
    std::fs::write(gate.path().join("go"), "").expect("go");
    let stream = c
        .client
        .get(format!("{}/api/v1/runs/{id}/events", c.url))
        .bearer_auth(&token)
        .send()
        .await;
    // The first stream may not have been released yet; retry briefly.
    let stream = match stream {
        Ok(r) if r.status() == StatusCode::OK => r,
        _ => {
            tokio::time::sleep(Duration::from_millis(500)).await;
            c.client
                .get(format!("{}/api/v1/runs/{id}/events", c.url))
                .bearer_auth(&token)
                .send()
                .await
                .expect("stream")
        }
    };
    assert_eq!(stream.status(), StatusCode::OK);
    let (events, ended) = read_events(stream, |_, _| false).await;
    assert!(ended, "the stream ends once the run settles");
    let statuses: Vec<&str> = events
        .iter()
        .map(|(_, v)| v["status"].as_str().unwrap_or(""))
        .collect();
    assert_eq!(statuses.last(), Some(&"succeeded"), "{statuses:?}");
    // Each event is a change: no two in a row are the same.
    assert!(events.windows(2).all(|w| w[0].1 != w[1].1));
    let last = &events.last().expect("last").1;
    assert_eq!(last["steps"].as_array().expect("steps").len(), 2);
    // A run that does not exist (or is not visible) is refused before streaming.
    let (status, _, _) = c
        .send(
            "GET",
            "/api/v1/runs/nope/events",
            &[("authorization", &bearer)],
            None,
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pages_read_triggers_kernels_with_their_users_and_parsed_runbooks() {
    let c = console(ServerConfig::default()).await;
    let token = c.env.token("viewer", Role::Viewer, &[]).await;
    let bearer = format!("Bearer {token}");
    let auth = [("authorization", bearer.as_str())];
    let (status, _, triggers) = c.send("GET", "/api/v1/triggers", &auth, None).await;
    assert_eq!(status, StatusCode::OK, "{triggers}");
    let list = triggers["triggers"].as_array().expect("list");
    assert_eq!(list.len(), 1, "only `alerted` has triggers: {triggers}");
    assert_eq!(list[0]["runbook"], "alerted");
    assert_eq!(list[0]["breaker_open"], false);
    assert_eq!(list[0]["triggers"][0]["breaker"], 3);
    assert_eq!(list[0]["triggers"][0]["breaker_scope"], "key");
    let (_, _, kernels) = c.send("GET", "/api/v1/kernels", &auth, None).await;
    let trivial = kernels["kernels"]
        .as_array()
        .expect("kernels")
        .iter()
        .find(|k| k["name"] == "trivial")
        .expect("trivial")
        .clone();
    let users: Vec<&str> = trivial["used_by"]
        .as_array()
        .expect("used_by")
        .iter()
        .map(|u| u["runbook"].as_str().expect("name"))
        .collect();
    assert_eq!(users, ["alerted", "waiter"]);
    assert!(trivial["manifest"].is_object());
    let (_, _, rb) = c.send("GET", "/api/v1/runbooks/waiter", &auth, None).await;
    let steps = rb["definition"]["steps"].as_array().expect("steps");
    assert_eq!(steps[0]["kernel"], "hostile@0.1.0");
    assert_eq!(steps[1]["targets"], json!(["demo-host"]));
    // A token limited to one runbook sees only its triggers.
    let limited = c.env.token("limited", Role::Viewer, &["waiter"]).await;
    let (_, _, triggers) = c
        .send(
            "GET",
            "/api/v1/triggers",
            &[("authorization", &format!("Bearer {limited}"))],
            None,
        )
        .await;
    assert_eq!(triggers["triggers"], json!([]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_closes_at_event_stream_max_s_even_while_the_run_goes_on() {
    let c = console(ServerConfig {
        event_stream_max_s: 1,
        event_poll_ms: 50,
        ..ServerConfig::default()
    })
    .await;
    let token = c.env.token("oncall", Role::Operator, &[]).await;
    let (gate, id) = c.start_waiter(&token).await;
    let stream = c.events(&token, &id).await;
    let (events, ended) = read_events(stream, |_, _| false).await;
    assert!(ended, "the server closed the stream");
    assert!(!events.is_empty(), "it sent the run first");
    let run = c.env.store.run(&id).await.expect("read").expect("run");
    assert!(
        run.status.is_pending(),
        "the run was still going: {:?}",
        run.status
    );
    std::fs::write(gate.path().join("go"), "").expect("go");
}
