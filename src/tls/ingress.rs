//! What happens to an accepted client before its session exists: the PROXY
//! protocol header on a `LISTEN ... PROXY` listener
//! (docs/tls-and-proxy-protocol.md#proxy-protocol-from-a-load-balancer), then
//! the TLS server handshake on a `START_SECURE` one, together bounded by
//! `--handshakeTimeoutMs` (docs/sessions.md#timeouts).
//!
//! The PROXY header is peeked, parsed, then consumed to its exact length,
//! so the client's first bytes (a ClientHello, an AMQP header) stay in the
//! socket for the next step. Its source address becomes the client's
//! address for the whole session: `amqpprox_client`, `CONN`, statistics
//! and the PROXY header sent on to a backend. A refused connection is
//! logged once, with the reason, and closed. Runs on a shard; never blocks.

use super::handshake::Failure;
use super::Contexts;
use crate::net;
use crate::proxy_protocol::{self, Parsed, PARSE_WINDOW};
use crate::stream::Stream;
use arc_swap::ArcSwap;
use futures_lite::AsyncReadExt;
use glommio::net::TcpStream;
use log::Level;
use std::io;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// What a listener does before the AMQP handshake (`LISTEN START_SECURE`,
/// `... PROXY`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ListenerKind {
    /// TLS server handshake with the INGRESS context.
    pub tls: bool,
    /// Expect a PROXY protocol v1 or v2 header first.
    pub proxy: bool,
    /// The RabbitMQ Stream protocol instead of AMQP 0-9-1
    /// (`START_STREAM`; `session::stream`).
    pub stream: bool,
}

/// Why an accepted connection was refused before its session existed.
#[derive(Debug, thiserror::Error)]
pub enum Refused {
    #[error("no complete PROXY protocol header before the handshake timeout")]
    ProxyHeaderTimedOut,
    #[error("the connection closed before a PROXY protocol header")]
    ClosedBeforeProxyHeader,
    #[error("reading the PROXY header: {0}")]
    ProxyHeaderRead(io::Error),
    #[error(transparent)]
    ProxyHeader(proxy_protocol::Invalid),
    #[error(transparent)]
    Tls(Failure),
}

impl Refused {
    /// How loudly to log it: a peer that simply left is not worth a warning.
    pub fn level(&self) -> Level {
        match self {
            Refused::ProxyHeaderTimedOut | Refused::ProxyHeader(_) => Level::Warn,
            Refused::ClosedBeforeProxyHeader | Refused::ProxyHeaderRead(_) => Level::Debug,
            Refused::Tls(failure) => failure.level(),
        }
    }
}

/// A connection as the listener accepted it: the socket, and the client's
/// address when the accept gave it (it mostly does; asked for otherwise).
pub struct Incoming {
    pub tcp: TcpStream,
    pub peer: Option<SocketAddr>,
}

/// A client ready for the AMQP handshake.
pub struct Accepted {
    pub stream: Stream,
    /// The client: the PROXY header's source when there is one.
    pub remote: SocketAddr,
    /// The proxy's own address on this connection.
    pub local: SocketAddr,
}

/// How long to wait before peeking again at a header that arrived in
/// pieces (load balancers send it in one segment; this is the rare case).
const PEEK_AGAIN: Duration = Duration::from_millis(5);

/// Runs the listener's steps within `limit` (`--handshakeTimeoutMs`),
/// with the TLS contexts in force now; `None` when the client was refused
/// or left (already logged).
pub async fn accept(
    tls: &ArcSwap<Contexts>,
    limit: Duration,
    incoming: Incoming,
    listen_port: u16,
    kind: ListenerKind,
) -> Option<Accepted> {
    let Incoming { tcp, peer } = incoming;
    let peer = peer.map_or_else(|| tcp.peer_addr(), Ok);
    let (Ok(peer), Ok(local)) = (peer, tcp.local_addr()) else {
        return None; // the client is already gone
    };
    // A dual-stack listener reports IPv4 clients as ::ffff:a.b.c.d;
    // operators and brokers expect a.b.c.d.
    let (peer, local) = (net::canonical(peer), net::canonical(local));
    // TCP_NODELAY and keepalive came from the listener (net::tune_listener).
    let deadline = Instant::now() + limit;
    let mut tcp = tcp;
    let mut remote = peer;
    if kind.proxy {
        match Box::pin(read_proxy_header(&mut tcp, deadline)).await {
            Ok(Some(source)) => remote = net::canonical(source),
            Ok(None) => {}
            Err(refused) => {
                log::log!(
                    refused.level(),
                    "Refusing connection from {peer} on port {listen_port}: {refused}"
                );
                net::shutdown(&tcp);
                return None;
            }
        }
    }
    let stream = if kind.tls {
        // Taken per connection: new key material applies at once.
        let Some(config) = tls.load().ingress.clone() else {
            log::error!(
                "Refusing TLS connection from {remote} on port {listen_port}: TLS INGRESS has no key and certificate"
            );
            net::shutdown(&tcp);
            return None;
        };
        let left = deadline.saturating_duration_since(Instant::now());
        // Boxed, as the PROXY header read above: inline, their state would
        // enlarge the task of every session, TLS or not, and be copied
        // on each accept.
        match Box::pin(super::handshake::accept(config, tcp, left)).await {
            Ok(stream) => {
                log::debug!(
                    "TLS accepted from {remote} on port {listen_port}: {}",
                    stream.tls_description()
                );
                stream
            }
            Err(failure) => {
                let refused = Refused::Tls(failure);
                log::log!(
                    refused.level(),
                    "Refusing connection from {remote} on port {listen_port}: {refused}"
                );
                return None;
            }
        }
    } else {
        Stream::from(tcp)
    };
    Some(Accepted {
        stream,
        remote,
        local,
    })
}

/// Reads the PROXY header: the client's address, `None` when the header
/// carries none (a balancer's own health check), or why it was refused.
async fn read_proxy_header(
    tcp: &mut TcpStream,
    deadline: Instant,
) -> Result<Option<SocketAddr>, Refused> {
    let mut window = [0u8; PARSE_WINDOW];
    let header = loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let n = match net::with_timeout(left, tcp.peek(&mut window)).await {
            Err(_) => return Err(Refused::ProxyHeaderTimedOut),
            Ok(Err(e)) => return Err(Refused::ProxyHeaderRead(e.into())),
            Ok(Ok(0)) => return Err(Refused::ClosedBeforeProxyHeader),
            Ok(Ok(n)) => n,
        };
        match proxy_protocol::parse(&window[..n]) {
            Parsed::Header(h) => break h,
            Parsed::Invalid(invalid) => return Err(Refused::ProxyHeader(invalid)),
            // Part of a header: peeking again at once would spin on the
            // same bytes.
            Parsed::NeedMore => glommio::timer::sleep(PEEK_AGAIN).await,
        }
    };
    // Consume exactly the header (v2 TLVs included); the rest is the
    // client's.
    let consume = async {
        let mut left = header.len;
        while left > 0 {
            let take = left.min(window.len());
            tcp.read_exact(&mut window[..take]).await?;
            left -= take;
        }
        Ok::<(), io::Error>(())
    };
    let left = deadline.saturating_duration_since(Instant::now());
    match net::with_timeout(left, consume).await {
        Ok(Ok(())) => Ok(header.addresses.map(|(source, _)| source)),
        Ok(Err(e)) => Err(Refused::ProxyHeaderRead(e)),
        Err(_) => Err(Refused::ProxyHeaderTimedOut),
    }
}
