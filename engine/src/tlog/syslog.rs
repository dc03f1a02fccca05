//! RFC 5424 syslog messages, sent over UDP, TCP (RFC 6587 octet counting)
//! or a Unix datagram socket (`/dev/log`). The witness and the audit
//! export both use it.

use std::path::PathBuf;
use std::time::Duration;

use tokio::io::AsyncWriteExt;

use super::TlogError;

/// Facility `log audit` (13), RFC 5424 table 1.
const FACILITY_AUDIT: u8 = 13;
/// Severity `informational` (6).
pub const SEVERITY_INFO: u8 = 6;
/// Severity `warning` (4): refusals and failures.
pub const SEVERITY_WARNING: u8 = 4;
/// The largest message sent (a UDP datagram must fit; rsyslog's default
/// `maxMessageSize` is 8 KiB, raise it for larger audit records).
pub const MAX_MESSAGE_BYTES: usize = 60 * 1024;
/// Deadline of connecting or sending one message.
const SEND_TIMEOUT: Duration = Duration::from_secs(5);

/// Where syslog messages go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Address {
    Udp(String),
    Tcp(String),
    Unix(PathBuf),
}

impl Address {
    /// `udp://HOST:PORT`, `tcp://HOST:PORT` or `unix:PATH`.
    pub fn parse(text: &str) -> Result<Self, TlogError> {
        if let Some(rest) = text.strip_prefix("udp://") {
            Ok(Address::Udp(rest.to_string()))
        } else if let Some(rest) = text.strip_prefix("tcp://") {
            Ok(Address::Tcp(rest.to_string()))
        } else if let Some(rest) = text.strip_prefix("unix:") {
            Ok(Address::Unix(PathBuf::from(rest)))
        } else {
            Err(TlogError::Invalid(format!(
                "syslog address {text:?} must be udp://HOST:PORT, tcp://HOST:PORT or unix:PATH (e.g. unix:/dev/log)"
            )))
        }
    }
}

/// One RFC 5424 message: `<PRI>1 TIME HOST APP PROCID MSGID - MSG`.
pub fn format(severity: u8, msgid: &str, time: &str, msg: &str) -> String {
    let host = crate::audit::hostname().unwrap_or_else(|| "-".into());
    format!(
        "<{}>1 {time} {host} firedrill {} {msgid} - {msg}",
        FACILITY_AUDIT * 8 + severity,
        std::process::id()
    )
}

enum Conn {
    Udp(tokio::net::UdpSocket),
    Tcp(tokio::net::TcpStream),
    Unix(tokio::net::UnixDatagram),
}

/// A connection to a syslog server, reopened after a failure.
pub struct Sender {
    address: Address,
    conn: Option<Conn>,
}

impl std::fmt::Debug for Sender {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "syslog::Sender({:?})", self.address)
    }
}

impl Sender {
    pub fn new(address: Address) -> Self {
        Sender {
            address,
            conn: None,
        }
    }

    async fn connect(&self) -> std::io::Result<Conn> {
        Ok(match &self.address {
            Address::Udp(addr) => {
                let target = tokio::net::lookup_host(addr)
                    .await?
                    .next()
                    .ok_or_else(|| std::io::Error::other(format!("{addr} resolves to nothing")))?;
                let local = if target.is_ipv6() {
                    "[::]:0"
                } else {
                    "0.0.0.0:0"
                };
                let socket = tokio::net::UdpSocket::bind(local).await?;
                socket.connect(target).await?;
                Conn::Udp(socket)
            }
            Address::Tcp(addr) => Conn::Tcp(tokio::net::TcpStream::connect(addr).await?),
            Address::Unix(path) => {
                let socket = tokio::net::UnixDatagram::unbound()?;
                socket.connect(path)?;
                Conn::Unix(socket)
            }
        })
    }

    /// Send one message (reconnecting if the last send failed).
    pub async fn send(&mut self, message: &str) -> Result<(), TlogError> {
        if message.len() > MAX_MESSAGE_BYTES {
            return Err(TlogError::Invalid(format!(
                "a syslog message of {} bytes is larger than {MAX_MESSAGE_BYTES}",
                message.len()
            )));
        }
        let result = tokio::time::timeout(SEND_TIMEOUT, async {
            if self.conn.is_none() {
                self.conn = Some(self.connect().await?);
            }
            match self.conn.as_mut() {
                Some(Conn::Udp(s)) => s.send(message.as_bytes()).await.map(drop),
                Some(Conn::Unix(s)) => s.send(message.as_bytes()).await.map(drop),
                Some(Conn::Tcp(s)) => {
                    // RFC 6587 octet counting: "LEN SP MSG".
                    let framed = format!("{} {message}", message.len());
                    s.write_all(framed.as_bytes()).await?;
                    s.flush().await
                }
                None => Ok(()),
            }
        })
        .await
        .unwrap_or_else(|_| Err(std::io::Error::other("timed out")));
        result.map_err(|source| {
            self.conn = None;
            TlogError::Io {
                what: "send to syslog",
                path: format!("{:?}", self.address),
                source,
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_are_rfc_5424() {
        let m = format(
            SEVERITY_INFO,
            "checkpoint",
            "2026-12-01T00:00:00.000Z",
            "{}",
        );
        assert!(m.starts_with("<110>1 2026-12-01T00:00:00.000Z "), "{m}");
        assert!(m.contains(" firedrill "), "{m}");
        assert!(m.ends_with(" checkpoint - {}"), "{m}");
        assert!(Address::parse("syslog.example:514").is_err());
        assert_eq!(
            Address::parse("unix:/dev/log").expect("ok"),
            Address::Unix("/dev/log".into())
        );
    }
}
