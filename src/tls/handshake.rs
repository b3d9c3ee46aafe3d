//! The TLS handshakes on a session's sockets, each bounded by a timeout: server
//! side for a client on a `START_SECURE` listener, client side toward a backend
//! flagged `TLS` (SNI and host-name verification from the backend's host,
//! docs/tls-and-proxy-protocol.md#tls-to-brokers-egress).
//!
//! A failure comes back as a [`Failure`]: one log level and one reason that
//! says what went wrong in the operator's terms (a plain-AMQP peer on a TLS
//! port, an unknown CA, a name the certificate does not cover, a timeout).
//! The caller logs it once. Runs on a shard; never blocks.

use crate::net;
use crate::stream::Stream;
use futures_rustls::{TlsAcceptor, TlsConnector};
use glommio::net::TcpStream;
use log::Level;
use rustls::pki_types::{InvalidDnsNameError, ServerName};
use rustls::{ClientConfig, ServerConfig};
use std::fmt;
use std::io;
use std::sync::Arc;
use std::time::Duration;

/// Why a handshake failed; [`Failure::level`] says how loudly to log it and
/// its `Display` is the reason in the operator's terms.
#[derive(Debug, thiserror::Error)]
pub enum Failure {
    #[error("TLS handshake not completed within {} ms", .limit.as_millis())]
    TimedOut { limit: Duration },
    #[error("'{host}' cannot be a TLS server name: {source}")]
    BadServerName {
        host: String,
        source: InvalidDnsNameError,
    },
    /// The peer closed its socket before the handshake ended.
    #[error("the {peer} closed the connection during the TLS handshake")]
    PeerClosed { peer: Peer },
    /// The socket failed under the handshake.
    #[error("TLS handshake failed: {source}")]
    Socket { peer: Peer, source: io::Error },
    /// TLS itself said no (certificate, protocol, alert).
    #[error("TLS handshake with the {peer} failed: {error}{}", hint(.error, *.peer))]
    Rejected { peer: Peer, error: rustls::Error },
}

impl Failure {
    /// How loudly to log it. A backend that fails TLS is a configuration
    /// problem to fix; a client that does is that client's problem, and a
    /// client that leaves mid-handshake (port scans, load-balancer health
    /// checks) is not worth a warning.
    pub fn level(&self) -> Level {
        match self {
            Failure::TimedOut { .. } => Level::Warn,
            Failure::BadServerName { .. } => Level::Error,
            Failure::PeerClosed { peer: Peer::Client } => Level::Debug,
            Failure::PeerClosed { peer: Peer::Broker } => Level::Warn,
            Failure::Socket {
                peer: Peer::Client,
                source,
            } if matches!(
                source.kind(),
                io::ErrorKind::ConnectionReset | io::ErrorKind::BrokenPipe
            ) =>
            {
                Level::Debug
            }
            Failure::Socket { .. } => Level::Warn,
            Failure::Rejected {
                peer: Peer::Broker, ..
            } => Level::Error,
            Failure::Rejected {
                peer: Peer::Client, ..
            } => Level::Warn,
        }
    }
}

/// Who is on the other end of the handshake.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Peer {
    /// A client: the proxy plays the TLS server.
    Client,
    /// A broker: the proxy plays the TLS client.
    Broker,
}

impl fmt::Display for Peer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Peer::Client => "client",
            Peer::Broker => "broker",
        })
    }
}

/// Server handshake with a client.
pub async fn accept(
    config: Arc<ServerConfig>,
    tcp: TcpStream,
    limit: Duration,
) -> Result<Stream, Failure> {
    match net::with_timeout(limit, TlsAcceptor::from(config).accept(tcp)).await {
        Err(net::TimedOut { limit }) => Err(Failure::TimedOut { limit }),
        Ok(Err(e)) => Err(describe(e, Peer::Client)),
        Ok(Ok(tls)) => Ok(Stream::tls_server(tls)),
    }
}

/// The name a backend's certificate must cover, from its host as the
/// operator gave it: a DNS name (also sent as SNI) or an IP address.
pub fn server_name(host: &str) -> Result<ServerName<'static>, Failure> {
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    ServerName::try_from(bare.to_string()).map_err(|source| Failure::BadServerName {
        host: host.to_string(),
        source,
    })
}

/// Client handshake with a backend.
pub async fn connect(
    config: Arc<ClientConfig>,
    host: &str,
    tcp: TcpStream,
    limit: Duration,
) -> Result<Stream, Failure> {
    let name = server_name(host)?;
    match net::with_timeout(limit, TlsConnector::from(config).connect(name, tcp)).await {
        Err(net::TimedOut { limit }) => Err(Failure::TimedOut { limit }),
        Ok(Err(e)) => Err(describe(e, Peer::Broker)),
        Ok(Ok(tls)) => Ok(Stream::tls_client(tls)),
    }
}

/// What [`for_backend`] needs to know of a backend: whether it is flagged
/// `TLS`, and the host name to send as SNI and to verify. Passed as plain
/// values so this module never names the configuration (which names it).
#[derive(Debug, Clone, Copy)]
pub struct BackendTls<'a> {
    pub tls: bool,
    pub host: &'a str,
}

/// A connected backend socket as the session uses it: TLS with `egress`
/// (the EGRESS settings in force now) for a backend flagged `TLS`, bounded
/// by `limit`; plain otherwise.
pub async fn for_backend(
    egress: &crate::tls::Contexts,
    backend: BackendTls<'_>,
    tcp: TcpStream,
    limit: Duration,
) -> Result<Stream, Failure> {
    if !backend.tls {
        return Ok(Stream::from(tcp));
    }
    // Boxed: the TLS handshake's state is several KiB, and inline it would
    // size (and be copied with) every plain session's handshake as well.
    Box::pin(connect(
        Arc::clone(&egress.egress),
        backend.host,
        tcp,
        limit,
    ))
    .await
}

/// Sorts an I/O error out of a handshake: the socket's, or TLS's own.
fn describe(e: io::Error, peer: Peer) -> Failure {
    let is_tls = e
        .get_ref()
        .is_some_and(|i| i.downcast_ref::<rustls::Error>().is_some());
    if !is_tls {
        return match e.kind() {
            io::ErrorKind::UnexpectedEof => Failure::PeerClosed { peer },
            _ => Failure::Socket { peer, source: e },
        };
    }
    let error = e
        .into_inner()
        .and_then(|i| i.downcast::<rustls::Error>().ok())
        .map(|b| *b)
        .expect("checked above: the inner error is a rustls::Error");
    Failure::Rejected { peer, error }
}

/// The usual cause of a TLS error, said after it.
fn hint(error: &rustls::Error, peer: Peer) -> &'static str {
    use rustls::Error as E;
    match (error, peer) {
        (E::InvalidMessage(_), Peer::Client) => {
            " (is the client speaking plain AMQP to a START_SECURE port?)"
        }
        (E::InvalidMessage(_), Peer::Broker) => {
            " (is the backend's port plain AMQP rather than TLS?)"
        }
        (E::InvalidCertificate(_), Peer::Broker) => {
            " (check TLS EGRESS CA_CERT_FILE and the backend's host name)"
        }
        (E::InvalidCertificate(_), Peer::Client) => " (check TLS INGRESS CA_CERT_FILE)",
        (E::NoCertificatesPresented, Peer::Client) => {
            " (VERIFY_MODE PEER FAIL_IF_NO_PEER_CERT requires one)"
        }
        (E::AlertReceived(_), Peer::Client) => " (the client refused the proxy's certificate?)",
        (E::AlertReceived(_), Peer::Broker) => {
            " (does the broker require a client certificate: TLS EGRESS KEY_FILE and CERT_CHAIN_FILE?)"
        }
        _ => "",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn levels_and_reasons_read_as_before() {
        let closed = describe(io::ErrorKind::UnexpectedEof.into(), Peer::Client);
        assert_eq!(closed.level(), Level::Debug);
        assert_eq!(
            closed.to_string(),
            "the client closed the connection during the TLS handshake"
        );
        let reset = describe(io::ErrorKind::ConnectionReset.into(), Peer::Broker);
        assert_eq!(reset.level(), Level::Warn);
        let plain = describe(
            io::Error::new(
                io::ErrorKind::InvalidData,
                rustls::Error::InvalidMessage(rustls::InvalidMessage::InvalidContentType),
            ),
            Peer::Broker,
        );
        assert_eq!(plain.level(), Level::Error);
        assert!(plain
            .to_string()
            .ends_with("(is the backend's port plain AMQP rather than TLS?)"));
        let late = Failure::TimedOut {
            limit: Duration::from_millis(250),
        };
        assert_eq!(
            late.to_string(),
            "TLS handshake not completed within 250 ms"
        );
        assert_eq!(server_name("[::1]").map(|_| ()).ok(), Some(()));
        assert!(server_name("bad name!").is_err());
    }
}
