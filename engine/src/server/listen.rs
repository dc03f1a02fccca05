//! Accepting connections, before any request is read: at most
//! `max-connections` open at once and `max-connections-per-ip` from one
//! client address (more are closed at once and counted),
//! TLS when `tls-cert` and `tls-key` are set (reloaded on SIGHUP), and
//! connections dropped when their request headers take longer than
//! `header-read-timeout-ms` (hyper's HTTP/1 header timer; the TLS handshake
//! gets the same deadline) or when no byte moves either way for
//! `idle-timeout-ms` (our own timer over the socket: hyper has none for
//! idle keep-alive connections; a request in progress still gets its
//! answer, and a connection that stays silent for `request-timeout-ms`
//! more is dropped). HTTP/1.1 by hyper, the application by axum.

use std::collections::HashMap;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock, RwLock};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::{Semaphore, watch};
use tokio_rustls::rustls;

use super::state::AppState;

/// The TLS certificate and key could not be used.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error(
        "cannot read the TLS certificate chain {path}: {reason}; [server] tls-cert must name a PEM file with the server certificate first"
    )]
    Cert { path: String, reason: String },
    #[error(
        "cannot read the TLS private key {path}: {reason}; [server] tls-key must name a PEM file with one private key (PKCS#8, PKCS#1 or SEC1)"
    )]
    Key { path: String, reason: String },
    #[error("the TLS certificate and key cannot be used together: {0}")]
    Config(String),
}

/// The server's TLS configuration, replaced in place by [`Tls::reload`].
#[derive(Debug)]
pub struct Tls {
    cert: PathBuf,
    key: PathBuf,
    current: RwLock<Arc<rustls::ServerConfig>>,
}

fn server_config(cert: &Path, key: &Path) -> Result<Arc<rustls::ServerConfig>, TlsError> {
    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::{CertificateDer, PrivateKeyDer};
    let cert_error = |reason: String| TlsError::Cert {
        path: cert.display().to_string(),
        reason,
    };
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .map_err(|e| cert_error(e.to_string()))?
        .collect::<Result<_, _>>()
        .map_err(|e| cert_error(e.to_string()))?;
    if chain.is_empty() {
        return Err(cert_error("it holds no certificate".into()));
    }
    let key = PrivateKeyDer::from_pem_file(key).map_err(|e| TlsError::Key {
        path: key.display().to_string(),
        reason: e.to_string(),
    })?;
    let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| TlsError::Config(e.to_string()))?
    .with_no_client_auth()
    .with_single_cert(chain, key)
    .map_err(|e| TlsError::Config(e.to_string()))?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

impl Tls {
    /// Load the certificate chain and key (PEM files).
    pub fn load(cert: &Path, key: &Path) -> Result<Self, TlsError> {
        Ok(Tls {
            current: RwLock::new(server_config(cert, key)?),
            cert: cert.to_path_buf(),
            key: key.to_path_buf(),
        })
    }

    /// Read the files again (after a certificate renewal); on an error the
    /// configuration in use stays.
    pub fn reload(&self) -> Result<(), TlsError> {
        let fresh = server_config(&self.cert, &self.key)?;
        *self.current.write().unwrap_or_else(|e| e.into_inner()) = fresh;
        Ok(())
    }

    fn acceptor(&self) -> tokio_rustls::TlsAcceptor {
        tokio_rustls::TlsAcceptor::from(
            self.current
                .read()
                .unwrap_or_else(|e| e.into_inner())
                .clone(),
        )
    }
}

/// Connections open per client address.
type Peers = Arc<std::sync::Mutex<HashMap<IpAddr, usize>>>;

/// One connection of one client address (`max-connections-per-ip`),
/// given back when dropped.
struct PeerSlot {
    ip: IpAddr,
    peers: Peers,
}

impl PeerSlot {
    /// A slot for `ip`, unless it holds `max` already (0: no limit).
    fn take(peers: &Peers, ip: IpAddr, max: usize) -> Option<PeerSlot> {
        let mut open = peers.lock().unwrap_or_else(|e| e.into_inner());
        let n = open.entry(ip).or_insert(0);
        if max > 0 && *n >= max {
            return None;
        }
        *n += 1;
        Some(PeerSlot {
            ip,
            peers: peers.clone(),
        })
    }
}

impl Drop for PeerSlot {
    fn drop(&mut self) {
        let mut open = self.peers.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = open.get_mut(&self.ip) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                open.remove(&self.ip);
            }
        }
    }
}

/// Milliseconds since the first call, for activity stamps.
fn now_ms() -> u64 {
    static START: OnceLock<Instant> = OnceLock::new();
    START.get_or_init(Instant::now).elapsed().as_millis() as u64
}

/// A socket that stamps the time of every byte read or written.
struct Tracked<IO> {
    io: IO,
    last: Arc<AtomicU64>,
}

impl<IO: AsyncRead + Unpin> AsyncRead for Tracked<IO> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.io).poll_read(cx, buf);
        if matches!(polled, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.last.store(now_ms(), Ordering::Relaxed);
        }
        polled
    }
}

impl<IO: AsyncWrite + Unpin> AsyncWrite for Tracked<IO> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let polled = Pin::new(&mut self.io).poll_write(cx, buf);
        if matches!(polled, Poll::Ready(Ok(n)) if n > 0) {
            self.last.store(now_ms(), Ordering::Relaxed);
        }
        polled
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

/// How long a connection is given to close by itself.
#[derive(Debug, Clone, Copy)]
struct Deadlines {
    /// `header-read-timeout-ms`: request headers (and the TLS handshake).
    header: Duration,
    /// `idle-timeout-ms`: no byte either way, then a graceful close.
    idle: Duration,
    /// `request-timeout-ms`: after a graceful close was asked for, how much
    /// longer a connection on which still no byte moves is kept (a request
    /// in progress has finished by then) before it is dropped.
    linger: Duration,
}

/// Serve one connection until it closes, goes idle, or the server stops.
async fn connection<IO>(
    io: IO,
    app: axum::Router,
    deadlines: Deadlines,
    mut stopping: watch::Receiver<bool>,
) where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let last = Arc::new(AtomicU64::new(now_ms()));
    let io = hyper_util::rt::TokioIo::new(Tracked {
        io,
        last: last.clone(),
    });
    let service = hyper_util::service::TowerToHyperService::new(app);
    let conn = hyper::server::conn::http1::Builder::new()
        .timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(deadlines.header)
        .serve_connection(io, service);
    tokio::pin!(conn);
    let idle_ms = deadlines.idle.as_millis() as u64;
    let drop_ms = idle_ms + deadlines.linger.as_millis() as u64;
    let mut check = tokio::time::interval((deadlines.idle / 4).max(Duration::from_millis(10)));
    check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut closing = false;
    loop {
        tokio::select! {
            result = conn.as_mut() => {
                if let Err(e) = result {
                    tracing::debug!(error = %e, "connection ended with an error");
                }
                return;
            }
            _ = check.tick() => {
                let quiet = now_ms().saturating_sub(last.load(Ordering::Relaxed));
                if quiet >= drop_ms {
                    // Asked to close and still silent: a client that sent
                    // part of a request and stopped. Dropped.
                    tracing::debug!(quiet_ms = quiet, "dropping a silent connection");
                    return;
                }
                if quiet >= idle_ms && !closing {
                    // A request in progress still gets its answer.
                    closing = true;
                    conn.as_mut().graceful_shutdown();
                }
            }
            changed = stopping.changed(), if !closing => {
                if changed.is_err() || *stopping.borrow() {
                    closing = true;
                    conn.as_mut().graceful_shutdown();
                }
            }
        }
    }
}

/// Accept connections on `listener` for `app` until `shutdown` resolves;
/// then stop accepting, let open connections finish what they are doing
/// (up to `shutdown-grace-ms`), and return.
pub async fn accept(
    state: &AppState,
    listener: tokio::net::TcpListener,
    app: axum::Router,
    tls: Option<Arc<Tls>>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) {
    let config = state.config.clone();
    let max = config.max_connections.max(1);
    let open = Arc::new(Semaphore::new(max));
    let deadlines = Deadlines {
        header: Duration::from_millis(config.header_read_timeout_ms.max(1)),
        idle: Duration::from_millis(config.idle_timeout_ms.max(1)),
        linger: Duration::from_millis(config.request_timeout_ms.max(1)),
    };
    let (stop, stopping) = watch::channel(false);
    let peers: Peers = Arc::new(std::sync::Mutex::new(HashMap::new()));
    let reload = tls.clone().map(|tls| {
        tokio::spawn(async move {
            let Ok(mut hup) =
                tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
            else {
                return;
            };
            while hup.recv().await.is_some() {
                match tls.reload() {
                    Ok(()) => tracing::info!("TLS certificate and key reloaded (SIGHUP)"),
                    Err(e) => {
                        tracing::error!(error = %e, "TLS reload failed; the previous certificate stays in use")
                    }
                }
            }
        })
    });
    tokio::pin!(shutdown);
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            () = &mut shutdown => break,
        };
        let (socket, peer) = match accepted {
            Ok(a) => a,
            Err(e) => {
                // Out of file descriptors and the like: say so, keep serving.
                tracing::warn!(error = %e, "cannot accept a connection; retrying");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let Ok(permit) = open.clone().try_acquire_owned() else {
            state.metrics.shed("max-connections");
            tracing::debug!(%peer, "connection refused: server.max-connections reached");
            drop(socket);
            continue;
        };
        let Some(per_peer) = PeerSlot::take(&peers, peer.ip(), config.max_connections_per_ip)
        else {
            state.metrics.shed("max-connections-per-ip");
            tracing::debug!(%peer, "connection refused: server.max-connections-per-ip reached");
            drop(socket);
            continue;
        };
        let _ = socket.set_nodelay(true);
        let app = app.clone();
        let stopping = stopping.clone();
        let tls = tls.clone();
        let metrics = state.metrics.clone();
        tokio::spawn(async move {
            match tls {
                None => connection(socket, app, deadlines, stopping).await,
                Some(tls) => {
                    match tokio::time::timeout(deadlines.header, tls.acceptor().accept(socket))
                        .await
                    {
                        Ok(Ok(stream)) => connection(stream, app, deadlines, stopping).await,
                        Ok(Err(e)) => {
                            metrics.inc("firedrill_tls_handshake_failures_total", &[]);
                            tracing::debug!(%peer, error = %e, "TLS handshake failed");
                        }
                        Err(_) => {
                            metrics.inc("firedrill_tls_handshake_failures_total", &[]);
                            tracing::debug!(%peer, "TLS handshake took longer than server.header-read-timeout-ms");
                        }
                    }
                }
            }
            drop(per_peer);
            drop(permit);
        });
    }
    drop(listener);
    let _ = stop.send(true);
    if let Some(task) = reload {
        task.abort();
    }
    // Every permit back means every connection closed.
    let grace = Duration::from_millis(config.shutdown_grace_ms);
    let _ = tokio::time::timeout(grace, open.acquire_many(max as u32)).await;
}

/// Whether `listen` (an address or `host:port`) is reachable only from
/// this machine.
pub fn is_loopback(addr: &std::net::SocketAddr) -> bool {
    addr.ip().is_loopback()
}
