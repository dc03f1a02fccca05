//! The SSH executor: commands on remote hosts through libssh2 (the `ssh2` crate).
//! One file of about 730 lines, on purpose: the pool, the blocking-thread
//! budget and the deadlines below hold together only as a whole.
//!
//! - The host key is checked right after the handshake and before any
//!   authentication, against the key pinned in the inventory. There is no
//!   trust on first use: an unpinned or different key refuses the connection
//!   with the presented fingerprint and how to pin it.
//! - libssh2 is blocking, so every libssh2 call runs on tokio's blocking pool,
//!   behind a semaphore (`ssh.max-blocking`) so a fleet of hung hosts cannot
//!   take every thread; every blocking call is bounded by a deadline.
//! - Sessions are pooled per target and reused across steps, at most
//!   `ssh.max-sessions-per-host` at once per host (one command per session at
//!   a time); a session idle for `ssh.idle-timeout-ms` is closed.
//! - Connection failures before the command was sent are retried with
//!   exponential backoff and jitter and counted; a pooled session found dead
//!   is replaced once, and counted as a reconnect. A connection lost after
//!   the command was sent is not retried: the command may have run.

use std::collections::HashMap;
use std::io::{ErrorKind, Read};
use std::net::{TcpStream, ToSocketAddrs};
use std::os::fd::AsFd;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine as _;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use ssh2::{BlockDirections, MethodType, Session};
use tokio::sync::Semaphore;

use super::inventory::{SshAuth, SshTarget};
use super::{ExecError, ExecLimits, ExecOutput, Faults, RetryConfig};

/// `[targets.ssh]` in `firedrill.toml`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "kebab-case", default)]
pub struct SshConfig {
    /// TCP connect plus SSH handshake plus authentication, per attempt, in
    /// milliseconds. Default 10,000.
    pub connect_timeout_ms: u64,
    /// A pooled session unused for this long is closed instead of reused, in
    /// milliseconds. Default 60,000.
    pub idle_timeout_ms: u64,
    /// Sessions open at once to one host; more commands to that host wait.
    /// Default 4.
    pub max_sessions_per_host: usize,
    /// libssh2 calls in flight at once across all hosts (threads of the
    /// blocking pool). Default 64.
    pub max_blocking: usize,
    /// Seconds a remote command may outlive the engine's own timeout before
    /// the remote `timeout` wrapper kills it. Default 5.
    pub remote_kill_grace_s: u64,
}

impl Default for SshConfig {
    fn default() -> Self {
        SshConfig {
            connect_timeout_ms: 10_000,
            idle_timeout_ms: 60_000,
            max_sessions_per_host: 4,
            max_blocking: 64,
            remote_kill_grace_s: 5,
        }
    }
}

/// A pinned host key, parsed from the inventory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PinnedKey {
    /// `SHA256:<base64>` fingerprint.
    Fingerprint(String),
    /// Key type and public key blob (from an OpenSSH public key or known_hosts line).
    Key { kind: String, blob: Vec<u8> },
}

impl PinnedKey {
    /// Parse `SHA256:...`, `ssh-ed25519 AAAA... [comment]` or a known_hosts line.
    pub fn parse(text: &str) -> Result<Self, String> {
        let text = text.trim();
        if let Some(fp) = text.strip_prefix("SHA256:") {
            let fp = fp.trim_end_matches('=');
            return match base64::engine::general_purpose::STANDARD_NO_PAD.decode(fp) {
                Ok(bytes) if bytes.len() == 32 => {
                    Ok(PinnedKey::Fingerprint(format!("SHA256:{fp}")))
                }
                _ => Err(format!(
                    "host-key {text:?} is not a SHA256 fingerprint as `ssh-keygen -lf` prints it"
                )),
            };
        }
        let words: Vec<&str> = text.split_whitespace().collect();
        for pair in words.windows(2) {
            if key_type_name(pair[0]) {
                let blob = base64::engine::general_purpose::STANDARD
                    .decode(pair[1])
                    .map_err(|e| {
                        format!("host-key: the {} key is not valid base64: {e}", pair[0])
                    })?;
                if blob_kind(&blob).as_deref() != Some(pair[0]) {
                    return Err(format!(
                        "host-key: the key data does not encode a {} key",
                        pair[0]
                    ));
                }
                return Ok(PinnedKey::Key {
                    kind: pair[0].to_string(),
                    blob,
                });
            }
        }
        Err(format!(
            "host-key {text:?} is neither `SHA256:<fingerprint>` nor an OpenSSH public key (`ssh-ed25519 AAAA...`)"
        ))
    }

    fn matches(&self, blob: &[u8]) -> bool {
        match self {
            PinnedKey::Fingerprint(fp) => *fp == fingerprint(blob),
            PinnedKey::Key { blob: pinned, .. } => pinned == blob,
        }
    }

    fn describe(&self) -> String {
        match self {
            PinnedKey::Fingerprint(fp) => fp.clone(),
            PinnedKey::Key { kind, blob } => format!("{kind} {}", fingerprint(blob)),
        }
    }
}

fn key_type_name(word: &str) -> bool {
    word.starts_with("ssh-") || word.starts_with("ecdsa-sha2-") || word.starts_with("sk-")
}

/// The key type named inside an SSH public key blob (its first string).
fn blob_kind(blob: &[u8]) -> Option<String> {
    let len = u32::from_be_bytes(blob.get(..4)?.try_into().ok()?) as usize;
    let name = blob.get(4..4 + len)?;
    String::from_utf8(name.to_vec()).ok()
}

/// OpenSSH's `SHA256:` fingerprint of a public key blob.
pub fn fingerprint(blob: &[u8]) -> String {
    format!(
        "SHA256:{}",
        base64::engine::general_purpose::STANDARD_NO_PAD.encode(Sha256::digest(blob))
    )
}

/// What a probe of an SSH target found.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SshProbe {
    /// Key type and fingerprint the host presented.
    pub presented: String,
    /// The presented key as an OpenSSH public key line, ready to pin.
    pub presented_key: String,
}

/// One pooled connection.
struct Conn {
    session: Session,
    /// A second handle on the socket, for poll(2).
    socket: TcpStream,
    last_used: Instant,
}

impl std::fmt::Debug for Conn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Conn")
            .field("socket", &self.socket)
            .finish_non_exhaustive()
    }
}

#[derive(Debug)]
struct HostPool {
    sessions: Arc<Semaphore>,
    idle: Mutex<Vec<Conn>>,
}

/// Why a connection attempt failed.
#[derive(Debug)]
enum ConnectError {
    /// Worth another attempt: refused, unreachable, timed out, reset.
    Transient(String),
    /// Will fail again: host key, authentication, bad address.
    Permanent(String),
}

/// How running a command on a connection ended.
enum RunEnd {
    Done(Conn, ExecOutput),
    /// The session could not open a channel or start the command; nothing ran.
    Stale(String),
    /// The connection broke after the command was sent.
    Lost(String),
    Timeout,
}

/// Runs commands over SSH; see the module docs.
#[derive(Debug)]
pub struct SshExecutor {
    config: SshConfig,
    retry: RetryConfig,
    blocking: Arc<Semaphore>,
    pools: Mutex<HashMap<String, Arc<HostPool>>>,
}

impl SshExecutor {
    pub fn new(config: SshConfig, retry: RetryConfig) -> Self {
        SshExecutor {
            blocking: Arc::new(Semaphore::new(config.max_blocking.max(1))),
            config,
            retry,
            pools: Mutex::new(HashMap::new()),
        }
    }

    fn pool(&self, name: &str) -> Arc<HostPool> {
        let mut pools = self.pools.lock().unwrap_or_else(|e| e.into_inner());
        pools
            .entry(name.to_string())
            .or_insert_with(|| {
                Arc::new(HostPool {
                    sessions: Arc::new(Semaphore::new(self.config.max_sessions_per_host.max(1))),
                    idle: Mutex::new(Vec::new()),
                })
            })
            .clone()
    }

    /// Sessions currently idle in the pool for `name` (for tests and metrics).
    pub fn idle_sessions(&self, name: &str) -> usize {
        let pool = self.pool(name);
        let idle = pool.idle.lock().unwrap_or_else(|e| e.into_inner());
        idle.len()
    }

    /// Run `command` on the SSH target `name`.
    pub async fn exec(
        &self,
        name: &str,
        spec: &SshTarget,
        command: &str,
        limits: ExecLimits,
        faults: &mut Faults,
    ) -> Result<ExecOutput, ExecError> {
        let deadline = Instant::now() + limits.timeout;
        let failed = |reason: String| ExecError::Failed {
            target: name.to_string(),
            reason,
        };
        let pool = self.pool(name);
        let _session_slot =
            tokio::time::timeout_at(deadline.into(), pool.sessions.clone().acquire_owned())
                .await
                .map_err(|_| ExecError::Timeout(limits.timeout))?
                .map_err(|_| failed("the SSH pool is shut down".into()))?;
        let mut conn = self.take_idle(&pool);
        let mut reused = conn.is_some();
        let wrapped = self.remote_command(command, limits.timeout);
        loop {
            let c = match conn.take() {
                Some(c) => c,
                None => self.connect(name, spec, deadline, faults).await?,
            };
            let permit = self.blocking_permit(deadline, limits.timeout).await?;
            let cmd = wrapped.clone();
            let end = tokio::task::spawn_blocking(move || {
                let _permit = permit;
                run(c, &cmd, deadline, limits)
            })
            .await
            .map_err(|e| failed(format!("the SSH worker thread failed: {e}")))?;
            match end {
                RunEnd::Done(mut c, output) => {
                    c.last_used = Instant::now();
                    pool.idle.lock().unwrap_or_else(|e| e.into_inner()).push(c);
                    return Ok(output);
                }
                RunEnd::Stale(reason) if reused => {
                    tracing::warn!(target_name = name, %reason, "pooled SSH session is dead; reconnecting");
                    faults.reconnects += 1;
                    reused = false;
                }
                RunEnd::Stale(reason) => {
                    return Err(failed(format!("cannot start the command: {reason}")));
                }
                RunEnd::Lost(reason) => {
                    return Err(failed(format!(
                        "connection lost after the command was sent ({reason}); it may or may not have completed on the host, so it is not retried"
                    )));
                }
                RunEnd::Timeout => return Err(ExecError::Timeout(limits.timeout)),
            }
        }
    }

    /// Connect to `spec` and check its host key, without authenticating or
    /// running anything (`inventory check --probe`).
    pub async fn probe(
        &self,
        name: &str,
        spec: &SshTarget,
        timeout: Duration,
    ) -> Result<SshProbe, ExecError> {
        let deadline = Instant::now() + timeout;
        let permit = self.blocking_permit(deadline, timeout).await?;
        let spec = spec.clone();
        let connect_timeout = Duration::from_millis(self.config.connect_timeout_ms).min(timeout);
        let result = tokio::task::spawn_blocking(move || {
            let _permit = permit;
            let (session, _) = handshake(&spec, connect_timeout)?;
            let (blob, _) = session
                .host_key()
                .ok_or_else(|| ConnectError::Transient("the host presented no host key".into()))?;
            let kind = blob_kind(blob).unwrap_or_else(|| "unknown".into());
            Ok::<_, ConnectError>(SshProbe {
                presented: format!("{kind} {}", fingerprint(blob)),
                presented_key: format!(
                    "{kind} {}",
                    base64::engine::general_purpose::STANDARD.encode(blob)
                ),
            })
        })
        .await;
        match result {
            Ok(Ok(p)) => Ok(p),
            Ok(Err(ConnectError::Transient(r) | ConnectError::Permanent(r))) => {
                Err(ExecError::Failed {
                    target: name.to_string(),
                    reason: r,
                })
            }
            Err(e) => Err(ExecError::Failed {
                target: name.to_string(),
                reason: format!("the SSH worker thread failed: {e}"),
            }),
        }
    }

    /// The command as sent: wrapped in coreutils `timeout` so that a command
    /// the engine gave up on does not keep running on the host.
    fn remote_command(&self, command: &str, timeout: Duration) -> String {
        let secs = timeout.as_secs() + u64::from(timeout.subsec_nanos() > 0) + 1;
        let quoted = shlex::try_quote(command)
            .map(|q| q.into_owned())
            .unwrap_or_else(|_| command.to_string());
        format!(
            "exec timeout -k {} {secs} /bin/sh -c {quoted}",
            self.config.remote_kill_grace_s.max(1)
        )
    }

    fn take_idle(&self, pool: &HostPool) -> Option<Conn> {
        let max_idle = Duration::from_millis(self.config.idle_timeout_ms);
        let mut idle = pool.idle.lock().unwrap_or_else(|e| e.into_inner());
        while let Some(c) = idle.pop() {
            if c.last_used.elapsed() < max_idle {
                return Some(c);
            }
            // Dropped: closes the socket.
        }
        None
    }

    async fn blocking_permit(
        &self,
        deadline: Instant,
        timeout: Duration,
    ) -> Result<tokio::sync::OwnedSemaphorePermit, ExecError> {
        tokio::time::timeout_at(deadline.into(), self.blocking.clone().acquire_owned())
            .await
            .map_err(|_| ExecError::Timeout(timeout))?
            .map_err(|_| ExecError::Failed {
                target: String::new(),
                reason: "the SSH worker pool is shut down".into(),
            })
    }

    /// Connect and authenticate, retrying transient failures with backoff.
    async fn connect(
        &self,
        name: &str,
        spec: &SshTarget,
        deadline: Instant,
        faults: &mut Faults,
    ) -> Result<Conn, ExecError> {
        let timeout = deadline.saturating_duration_since(Instant::now());
        let mut attempt: u32 = 0;
        loop {
            let remaining = deadline.saturating_duration_since(Instant::now());
            if remaining.is_zero() {
                return Err(ExecError::Timeout(timeout));
            }
            let permit = self.blocking_permit(deadline, timeout).await?;
            let spec_c = spec.clone();
            let connect_timeout =
                Duration::from_millis(self.config.connect_timeout_ms).min(remaining);
            let result = tokio::task::spawn_blocking(move || {
                let _permit = permit;
                connect(&spec_c, connect_timeout)
            })
            .await
            .map_err(|e| ExecError::Failed {
                target: name.to_string(),
                reason: format!("the SSH worker thread failed: {e}"),
            })?;
            let reason = match result {
                Ok(conn) => return Ok(conn),
                Err(ConnectError::Permanent(reason)) => {
                    return Err(ExecError::Failed {
                        target: name.to_string(),
                        reason,
                    });
                }
                Err(ConnectError::Transient(reason)) => reason,
            };
            attempt += 1;
            let delay = self.retry.delay(attempt);
            if attempt >= self.retry.attempts.max(1) || Instant::now() + delay >= deadline {
                return Err(ExecError::Failed {
                    target: name.to_string(),
                    reason: format!(
                        "{reason} (after {attempt} connection attempt{})",
                        if attempt == 1 { "" } else { "s" }
                    ),
                });
            }
            tracing::warn!(target_name = name, %reason, attempt, ?delay, "SSH connection failed; retrying");
            faults.retries += 1;
            tokio::time::sleep(delay).await;
        }
    }
}

/// TCP connect and SSH handshake, bounded by `timeout`; no host key check yet.
fn handshake(spec: &SshTarget, timeout: Duration) -> Result<(Session, TcpStream), ConnectError> {
    let deadline = Instant::now() + timeout;
    let where_ = format!("{}:{}", spec.address, spec.port);
    let addrs: Vec<_> = (spec.address.as_str(), spec.port)
        .to_socket_addrs()
        .map_err(|e| ConnectError::Transient(format!("cannot resolve {where_}: {e}")))?
        .collect();
    let mut last = format!("{where_} resolves to no address");
    let mut tcp = None;
    for addr in addrs {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            last = format!("connecting to {where_} timed out after {timeout:?}");
            break;
        }
        match TcpStream::connect_timeout(&addr, left) {
            Ok(s) => {
                tcp = Some(s);
                break;
            }
            Err(e) => last = format!("cannot connect to {addr}: {e}"),
        }
    }
    let tcp = tcp.ok_or(ConnectError::Transient(last))?;
    let _ = tcp.set_nodelay(true);
    let socket = tcp
        .try_clone()
        .map_err(|e| ConnectError::Transient(format!("cannot use the socket to {where_}: {e}")))?;
    let mut session =
        Session::new().map_err(|e| ConnectError::Permanent(format!("libssh2: {e}")))?;
    session.set_tcp_stream(tcp);
    session.set_timeout(millis_u32(
        deadline.saturating_duration_since(Instant::now()),
    ));
    session.set_compress(false);
    if let Some(PinnedKey::Key { kind, .. }) = spec
        .host_key
        .as_deref()
        .and_then(|k| PinnedKey::parse(k).ok())
    {
        // Ask for the pinned key's type, so a host with several keys presents that one.
        let _ = session.method_pref(MethodType::HostKey, &kind);
    }
    session
        .handshake()
        .map_err(|e| ConnectError::Transient(format!("SSH handshake with {where_} failed: {e}")))?;
    Ok((session, socket))
}

/// Connect, verify the host key, authenticate.
fn connect(spec: &SshTarget, timeout: Duration) -> Result<Conn, ConnectError> {
    let deadline = Instant::now() + timeout;
    let (session, socket) = handshake(spec, timeout)?;
    let where_ = format!("{}:{}", spec.address, spec.port);
    // Host key, before anything is sent that a man in the middle could use.
    let (blob, _) = session
        .host_key()
        .ok_or_else(|| ConnectError::Permanent(format!("{where_} presented no host key")))?;
    let kind = blob_kind(blob).unwrap_or_else(|| "unknown".into());
    let presented = format!("{kind} {}", fingerprint(blob));
    let line = format!(
        "{kind} {}",
        base64::engine::general_purpose::STANDARD.encode(blob)
    );
    match spec.host_key.as_deref().map(PinnedKey::parse) {
        None => {
            return Err(ConnectError::Permanent(format!(
                "host key of {where_} is not pinned; it presented {presented}. Check that fingerprint out of band (on the host: ssh-keygen -lf /etc/ssh/ssh_host_{}_key.pub) and pin it in inventory.yaml with host-key: \"{line}\"",
                kind.trim_start_matches("ssh-")
            )));
        }
        Some(Err(e)) => return Err(ConnectError::Permanent(e)),
        Some(Ok(pinned)) if !pinned.matches(blob) => {
            return Err(ConnectError::Permanent(format!(
                "HOST KEY MISMATCH for {where_}: it presented {presented} but {} is pinned. Someone may be intercepting the connection, or the host key was rotated; verify the new key out of band before changing host-key in inventory.yaml",
                pinned.describe()
            )));
        }
        Some(Ok(_)) => {}
    }
    session.set_timeout(millis_u32(
        deadline.saturating_duration_since(Instant::now()),
    ));
    let auth = match &spec.auth {
        SshAuth::Agent => session.userauth_agent(&spec.user),
        SshAuth::KeyFile(path) => session.userauth_pubkey_file(&spec.user, None, path, None),
    };
    if let Err(e) = auth {
        let how = match &spec.auth {
            SshAuth::Agent => "with the keys in ssh-agent".to_string(),
            SshAuth::KeyFile(p) => format!("with key-file {}", p.display()),
        };
        // Socket errors and timeouts during auth are the network's fault.
        let kind = if NETWORK_ERRORS
            .iter()
            .any(|c| e.code() == ssh2::ErrorCode::Session(*c))
        {
            ConnectError::Transient
        } else {
            ConnectError::Permanent
        };
        return Err(kind(format!(
            "authentication as {:?} on {where_} {how} failed: {e}; check that the public key is in the user's authorized_keys",
            spec.user
        )));
    }
    if !session.authenticated() {
        return Err(ConnectError::Permanent(format!(
            "authentication as {:?} on {where_} did not complete",
            spec.user
        )));
    }
    Ok(Conn {
        session,
        socket,
        last_used: Instant::now(),
    })
}

fn millis_u32(d: Duration) -> u32 {
    u32::try_from(d.as_millis()).unwrap_or(u32::MAX).max(1)
}

/// libssh2's `LIBSSH2_ERROR_EAGAIN`.
const EAGAIN: i32 = -37;
/// libssh2's socket send/recv/disconnect errors and timeout.
const NETWORK_ERRORS: [i32; 4] = [-7, -9, -13, -43];

enum Wait {
    Timeout,
    Ssh(ssh2::Error),
}

/// Wait until the socket is ready in the direction libssh2 is blocked on.
fn wait_socket(conn: &Conn, deadline: Instant) -> Result<(), Wait> {
    use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
    let left = deadline.saturating_duration_since(Instant::now());
    if left.is_zero() {
        return Err(Wait::Timeout);
    }
    let flags = match conn.session.block_directions() {
        BlockDirections::Outbound => PollFlags::POLLOUT,
        BlockDirections::Both => PollFlags::POLLIN | PollFlags::POLLOUT,
        BlockDirections::Inbound | BlockDirections::None => PollFlags::POLLIN,
    };
    // Wake at least every 100 ms: libssh2 may hold data it already read.
    let ms = u16::try_from(left.as_millis().min(100)).unwrap_or(100);
    let mut fds = [PollFd::new(conn.socket.as_fd(), flags)];
    let _ = poll(&mut fds, PollTimeout::from(ms.max(1)));
    Ok(())
}

/// Call a non-blocking libssh2 operation until it stops saying EAGAIN.
fn again<T>(
    conn: &Conn,
    deadline: Instant,
    mut op: impl FnMut() -> Result<T, ssh2::Error>,
) -> Result<T, Wait> {
    loop {
        match op() {
            Ok(v) => return Ok(v),
            Err(e) if e.code() == ssh2::ErrorCode::Session(EAGAIN) => wait_socket(conn, deadline)?,
            Err(e) => return Err(Wait::Ssh(e)),
        }
    }
}

/// Run one command on an authenticated connection (blocking thread).
fn run(conn: Conn, command: &str, deadline: Instant, limits: ExecLimits) -> RunEnd {
    conn.session.set_blocking(false);
    let mut channel = match again(&conn, deadline, || conn.session.channel_session()) {
        Ok(c) => c,
        Err(Wait::Timeout) => return RunEnd::Timeout,
        Err(Wait::Ssh(e)) => return RunEnd::Stale(format!("cannot open a channel: {e}")),
    };
    match again(&conn, deadline, || channel.exec(command)) {
        Ok(()) => {}
        Err(Wait::Timeout) => return RunEnd::Timeout,
        Err(Wait::Ssh(e)) => return RunEnd::Stale(format!("the host refused the command: {e}")),
    }
    // No stdin: a command that reads it sees end of file.
    match again(&conn, deadline, || channel.send_eof()) {
        Ok(()) => {}
        Err(Wait::Timeout) => return RunEnd::Timeout,
        Err(Wait::Ssh(e)) => return RunEnd::Lost(e.to_string()),
    }
    let mut stdout = Vec::new();
    let mut stderr = Vec::new();
    let mut truncated = false;
    let mut buf = vec![0u8; 32 * 1024];
    loop {
        let mut progressed = false;
        for (id, sink) in [(0, &mut stdout), (1, &mut stderr)] {
            loop {
                match channel.stream(id).read(&mut buf) {
                    Ok(0) => break,
                    Ok(n) => {
                        progressed = true;
                        let keep = n.min(limits.output_bytes.saturating_sub(sink.len()));
                        sink.extend_from_slice(&buf[..keep]);
                        truncated |= keep < n;
                    }
                    Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                    Err(e) => return RunEnd::Lost(e.to_string()),
                }
            }
        }
        if channel.eof() {
            break;
        }
        if !progressed && let Err(Wait::Timeout) = wait_socket(&conn, deadline) {
            return RunEnd::Timeout;
        }
    }
    // The exit status arrives before the close; a connection that dies here
    // has not delivered it, so it counts as lost, never as success.
    match again(&conn, deadline, || channel.wait_close()) {
        Ok(()) => {}
        Err(Wait::Timeout) => return RunEnd::Timeout,
        Err(Wait::Ssh(e)) => return RunEnd::Lost(e.to_string()),
    }
    let signalled = channel
        .exit_signal()
        .ok()
        .and_then(|s| s.exit_signal)
        .is_some();
    let exit_code = if signalled {
        -1
    } else {
        match channel.exit_status() {
            Ok(code) => code,
            Err(e) => return RunEnd::Lost(e.to_string()),
        }
    };
    conn.session.set_blocking(true);
    RunEnd::Done(
        conn,
        ExecOutput {
            exit_code,
            stdout,
            stderr,
            truncated,
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    const ED25519: &str =
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl";

    #[test]
    fn parses_pins() {
        let key = PinnedKey::parse(&format!("{ED25519} root@web-1")).expect("key");
        let PinnedKey::Key { kind, blob } = &key else {
            panic!("{key:?}")
        };
        assert_eq!(kind, "ssh-ed25519");
        assert!(key.matches(blob));
        // A known_hosts line with a non-22 port.
        let kh = PinnedKey::parse(&format!("[10.0.0.5]:2222 {ED25519}")).expect("known_hosts");
        assert_eq!(kh, key);
        let fp = fingerprint(blob);
        assert!(fp.starts_with("SHA256:") && fp.len() == 50, "{fp}");
        let by_fp = PinnedKey::parse(&fp).expect("fingerprint");
        assert!(by_fp.matches(blob));
        assert!(!by_fp.matches(b"other"));
        for bad in ["", "SHA256:short", "ssh-ed25519 !!!", "hello world"] {
            assert!(PinnedKey::parse(bad).is_err(), "{bad}");
        }
        // A blob that claims a different type than its label.
        let err = PinnedKey::parse(&ED25519.replace("ssh-ed25519", "ssh-rsa")).unwrap_err();
        assert!(err.contains("does not encode"), "{err}");
    }

    #[test]
    fn remote_command_is_quoted_and_bounded() {
        let ssh = SshExecutor::new(SshConfig::default(), RetryConfig::default());
        let original = "systemctl restart 'a b'; echo $HOME `id` \"q\"";
        let cmd = ssh.remote_command(original, Duration::from_millis(1500));
        // The remote login shell splits it back into exactly these words:
        // the whole original command is one argument of the inner sh -c.
        assert_eq!(
            shlex::split(&cmd).expect("splits"),
            ["exec", "timeout", "-k", "5", "3", "/bin/sh", "-c", original]
        );
    }
}
