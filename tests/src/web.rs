//! A small HTTP server on a free loopback port, for the HTTP executor's tests
//! (stands in for a load balancer's admin API or a service's health path).

use std::sync::Arc;
use std::sync::atomic::{AtomicU16, AtomicUsize, Ordering};
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Redirect};
use axum::routing::{get, post};

/// What the server saw and how it answers.
#[derive(Debug, Default)]
pub struct Counters {
    /// Requests of any kind.
    pub requests: AtomicUsize,
    /// POSTs to /drain (changes).
    pub drains: AtomicUsize,
    /// Status /ready answers (200 until set).
    pub ready_status: AtomicU16,
}

/// The running server; stops when dropped.
#[derive(Debug)]
pub struct WebServer {
    pub port: u16,
    pub counters: Arc<Counters>,
    task: tokio::task::JoinHandle<()>,
}

async fn healthz(State(c): State<Arc<Counters>>, headers: HeaderMap) -> String {
    c.requests.fetch_add(1, Ordering::SeqCst);
    // Echoes the Authorization header, as a careless endpoint might.
    let auth = headers
        .get(header::AUTHORIZATION)
        .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
        .unwrap_or_default();
    format!("ok auth=[{auth}]")
}

async fn ready(State(c): State<Arc<Counters>>) -> impl IntoResponse {
    c.requests.fetch_add(1, Ordering::SeqCst);
    let code = match c.ready_status.load(Ordering::SeqCst) {
        0 => 200,
        n => n,
    };
    (
        StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
        "ready?",
    )
}

async fn drain(State(c): State<Arc<Counters>>) -> &'static str {
    c.requests.fetch_add(1, Ordering::SeqCst);
    c.drains.fetch_add(1, Ordering::SeqCst);
    "drained"
}

/// A listener on a free port of 127.0.0.1, and the port.
async fn loopback() -> (tokio::net::TcpListener, u16) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .unwrap_or_else(|e| panic!("bind: {e}"));
    let port = listener
        .local_addr()
        .unwrap_or_else(|e| panic!("addr: {e}"))
        .port();
    (listener, port)
}

impl WebServer {
    /// Start on a free port of 127.0.0.1.
    ///
    /// # Panics
    /// If no port can be bound.
    pub async fn start() -> WebServer {
        let counters = Arc::new(Counters::default());
        let (listener, port) = loopback().await;
        let c = counters.clone();
        let app = Router::new()
            .route("/healthz", get(healthz))
            .route("/ready", get(ready))
            .route("/drain", post(drain))
            .route("/big", get(|| async { "x".repeat(1 << 20) }))
            .route(
                "/slow",
                get(|| async {
                    tokio::time::sleep(Duration::from_secs(30)).await;
                    "late"
                }),
            )
            .route(
                "/wait/{ms}",
                get(
                    |State(c): State<Arc<Counters>>,
                     axum::extract::Path(ms): axum::extract::Path<u64>| async move {
                        // A slow target: answers after `ms` (the memory bench).
                        c.requests.fetch_add(1, Ordering::SeqCst);
                        tokio::time::sleep(Duration::from_millis(ms)).await;
                        "late"
                    },
                ),
            )
            .route(
                "/hops/{n}",
                get(
                    |axum::extract::Path(n): axum::extract::Path<u32>| async move {
                        // /hops/N redirects N times before answering.
                        if n == 0 {
                            Redirect::temporary("/healthz")
                        } else {
                            Redirect::temporary(&format!("/hops/{}", n - 1))
                        }
                    },
                ),
            )
            .route(
                "/redirect-here",
                get(|| async { Redirect::temporary("/healthz") }),
            )
            .route(
                "/redirect-away",
                get(move || async move {
                    // Same port, another host name: another origin.
                    Redirect::temporary(&format!("http://127.0.0.2:{port}/healthz"))
                }),
            )
            .with_state(c);
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        WebServer {
            port,
            counters,
            task,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    /// An inventory whose only target, `name`, is this server as an HTTP
    /// endpoint (loopback allowed), for `TestEnv::with_targets`.
    pub fn inventory(&self, name: &str) -> firedrill::transport::Inventory {
        let mut inventory = firedrill::transport::Inventory::default();
        inventory.targets.insert(
            name.into(),
            firedrill::transport::TargetSpec::Http(firedrill::transport::HttpTarget {
                base_url: self.url(""),
                auth_secret: None,
                allow_private: true,
                labels: Default::default(),
            }),
        );
        inventory
    }

    pub fn requests(&self) -> usize {
        self.counters.requests.load(Ordering::SeqCst)
    }
}

impl Drop for WebServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// One request a [`Receiver`] was sent.
#[derive(Debug, Clone)]
pub struct Received {
    pub path: String,
    pub headers: HeaderMap,
    pub body: Vec<u8>,
    /// The status it was answered.
    pub status: u16,
}

impl Received {
    /// The body as JSON (`Null` when it is not).
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or(serde_json::Value::Null)
    }

    /// A header's value ("" when absent).
    pub fn header(&self, name: &str) -> String {
        self.headers
            .get(name)
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
            .unwrap_or_default()
    }
}

/// A notification receiver on a free loopback port: records every POST
/// (any path) and answers `fail_status` (503 until set) while `failing`
/// (the first `fail_next` too); while `hanging`, answers after a minute.
#[derive(Debug)]
pub struct Receiver {
    pub port: u16,
    pub seen: Arc<std::sync::Mutex<Vec<Received>>>,
    pub fail_next: Arc<AtomicUsize>,
    pub failing: Arc<std::sync::atomic::AtomicBool>,
    pub fail_status: Arc<AtomicU16>,
    pub hanging: Arc<std::sync::atomic::AtomicBool>,
    task: tokio::task::JoinHandle<()>,
}

impl Receiver {
    /// # Panics
    /// If no port can be bound.
    pub async fn start() -> Receiver {
        let (listener, port) = loopback().await;
        let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
        let fail_next = Arc::new(AtomicUsize::new(0));
        let failing = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let fail_status = Arc::new(AtomicU16::new(503));
        let hanging = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (s, f, down) = (seen.clone(), fail_next.clone(), failing.clone());
        let (code, hang) = (fail_status.clone(), hanging.clone());
        let app = Router::new().fallback(post(
            move |uri: axum::http::Uri, headers: HeaderMap, body: axum::body::Bytes| {
                let (s, f, down) = (s.clone(), f.clone(), down.clone());
                let (code, hang) = (code.clone(), hang.clone());
                async move {
                    let fail = down.load(Ordering::SeqCst)
                        || f.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                            .is_ok();
                    let status = if fail {
                        code.load(Ordering::SeqCst)
                    } else {
                        200
                    };
                    let hangs = hang.load(Ordering::SeqCst);
                    s.lock().unwrap_or_else(|p| p.into_inner()).push(Received {
                        path: uri.path().to_string(),
                        headers,
                        body: body.to_vec(),
                        status,
                    });
                    if hangs {
                        tokio::time::sleep(Duration::from_secs(60)).await;
                    }
                    StatusCode::from_u16(status).unwrap_or(StatusCode::OK)
                }
            },
        ));
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Receiver {
            port,
            seen,
            fail_next,
            failing,
            fail_status,
            hanging,
            task,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    /// Every request so far, in order.
    pub fn seen(&self) -> Vec<Received> {
        self.seen.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// The requests answered 200.
    pub fn accepted(&self) -> Vec<Received> {
        self.seen()
            .into_iter()
            .filter(|r| r.status == 200)
            .collect()
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.task.abort();
    }
}
