//! The TLS handshakes on a session's sockets, each bounded by a timeout:
//! server side for a client on a `START_SECURE` listener, client side
//! toward a backend flagged `TLS` (SNI and host-name verification from the
//! backend's host, DECISIONS Fix 12).
//!
//! A failure comes back as a [`Failure`]: one log level and one reason that
//! says what went wrong in the operator's terms (a plain-AMQP peer on a TLS
//! port, an unknown CA, a name the certificate does not cover, a timeout).
//! The caller logs it once. Runs on a shard; never blocks.

use crate::stream::Stream;
use futures_rustls::{TlsAcceptor, TlsConnector};
use glommio::net::TcpStream;
use log::Level;
use rustls::pki_types::ServerName;
use rustls::{ClientConfig, ServerConfig};
use std::future::Future;
use std::io;
use std::sync::Arc;
use std::time::Duration;

/// Why a handshake failed, and how loudly to say so.
#[derive(Debug)]
pub struct Failure {
    pub level: Level,
    pub reason: String,
}

/// Which end of the handshake the proxy plays.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role {
    /// Facing a client.
    Server,
    /// Facing a broker.
    Client,
}

async fn bounded<T>(limit: Duration, f: impl Future<Output = T>) -> Option<T> {
    futures_lite::future::or(async { Some(f.await) }, async {
        glommio::timer::sleep(limit).await;
        None
    })
    .await
}

fn timed_out(limit: Duration) -> Failure {
    Failure {
        level: Level::Warn,
        reason: format!(
            "TLS handshake not completed within {} ms",
            limit.as_millis()
        ),
    }
}

/// Server handshake with a client.
pub async fn accept(
    config: Arc<ServerConfig>,
    tcp: TcpStream,
    limit: Duration,
) -> Result<Stream, Failure> {
    match bounded(limit, TlsAcceptor::from(config).accept(tcp)).await {
        None => Err(timed_out(limit)),
        Some(Err(e)) => Err(describe(&e, Role::Server)),
        Some(Ok(tls)) => Ok(Stream::tls_server(tls)),
    }
}

/// The name a backend's certificate must cover, from its host as the
/// operator gave it: a DNS name (also sent as SNI) or an IP address.
pub fn server_name(host: &str) -> Result<ServerName<'static>, Failure> {
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    ServerName::try_from(bare.to_string()).map_err(|e| Failure {
        level: Level::Error,
        reason: format!("'{host}' cannot be a TLS server name: {e}"),
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
    match bounded(limit, TlsConnector::from(config).connect(name, tcp)).await {
        None => Err(timed_out(limit)),
        Some(Err(e)) => Err(describe(&e, Role::Client)),
        Some(Ok(tls)) => Ok(Stream::tls_client(tls)),
    }
}

/// A connected backend socket as the session uses it: TLS with the EGRESS
/// settings in force now for a backend flagged `TLS`, bounded by
/// `--connectTimeoutMs`; plain otherwise.
pub async fn for_backend(
    shard: &crate::shard::Shard,
    backend: &crate::config::Backend,
    tcp: TcpStream,
) -> Result<Stream, Failure> {
    if !backend.tls {
        return Ok(Stream::from(tcp));
    }
    let config = Arc::clone(&shard.shared.tls.load().egress);
    connect(config, &backend.host, tcp, shard.shared.connect_timeout).await
}

/// One line for the log: the rustls error in words, plus the usual cause.
fn describe(e: &io::Error, role: Role) -> Failure {
    let peer = match role {
        Role::Server => "client",
        Role::Client => "broker",
    };
    let Some(tls) = e.get_ref().and_then(|i| i.downcast_ref::<rustls::Error>()) else {
        // The socket, not TLS: a peer that left mid-handshake (port scans,
        // load-balancer health checks) is not worth a warning.
        let level = match (role, e.kind()) {
            (
                Role::Server,
                io::ErrorKind::UnexpectedEof
                | io::ErrorKind::ConnectionReset
                | io::ErrorKind::BrokenPipe,
            ) => Level::Debug,
            _ => Level::Warn,
        };
        let reason = match e.kind() {
            io::ErrorKind::UnexpectedEof => {
                format!("the {peer} closed the connection during the TLS handshake")
            }
            _ => format!("TLS handshake failed: {e}"),
        };
        return Failure { level, reason };
    };
    use rustls::Error as E;
    let hint = match (tls, role) {
        (E::InvalidMessage(_), Role::Server) => {
            " (is the client speaking plain AMQP to a START_SECURE port?)"
        }
        (E::InvalidMessage(_), Role::Client) => {
            " (is the backend's port plain AMQP rather than TLS?)"
        }
        (E::InvalidCertificate(_), Role::Client) => {
            " (check TLS EGRESS CA_CERT_FILE and the backend's host name)"
        }
        (E::InvalidCertificate(_), Role::Server) => " (check TLS INGRESS CA_CERT_FILE)",
        (E::NoCertificatesPresented, Role::Server) => {
            " (VERIFY_MODE PEER FAIL_IF_NO_PEER_CERT requires one)"
        }
        (E::AlertReceived(_), Role::Server) => " (the client refused the proxy's certificate?)",
        (E::AlertReceived(_), Role::Client) => {
            " (does the broker require a client certificate: TLS EGRESS KEY_FILE and CERT_CHAIN_FILE?)"
        }
        _ => "",
    };
    // A backend that fails TLS is a configuration problem to fix; a client
    // that does is that client's problem.
    let level = match role {
        Role::Client => Level::Error,
        Role::Server => Level::Warn,
    };
    Failure {
        level,
        reason: format!("TLS handshake with the {peer} failed: {tls}{hint}"),
    }
}
