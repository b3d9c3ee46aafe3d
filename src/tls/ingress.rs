//! What happens to an accepted client before its session exists: the
//! PROXY protocol header on a `LISTEN ... PROXY` listener (DECISIONS Add 6),
//! then the TLS server handshake on a `START_SECURE` one, together bounded
//! by `--handshakeTimeoutMs` (DECISIONS Fix 3).
//!
//! The PROXY header is peeked, parsed, then consumed to its exact length,
//! so the client's first bytes (a ClientHello, an AMQP header) stay in the
//! socket for the next step. Its source address becomes the client's
//! address for the whole session: `amqpprox_client`, `CONN`, statistics
//! and the PROXY header sent on to a backend. A refused connection is
//! logged once, with the reason, and closed. Runs on a shard; never blocks.

use crate::net;
use crate::proxy_protocol::{self, Parsed, PARSE_WINDOW};
use crate::shard::{ListenerKind, Shared};
use crate::stream::Stream;
use futures_lite::AsyncReadExt;
use glommio::net::TcpStream;
use log::Level;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

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

/// Runs the listener's steps; `None` when the client was refused or left
/// (already logged).
pub async fn accept(
    shared: &Shared,
    tcp: TcpStream,
    listen_port: u16,
    kind: ListenerKind,
) -> Option<Accepted> {
    let (Ok(peer), Ok(local)) = (tcp.peer_addr(), tcp.local_addr()) else {
        return None; // the client is already gone
    };
    // A dual-stack listener reports IPv4 clients as ::ffff:a.b.c.d;
    // operators and brokers expect a.b.c.d.
    let (peer, local) = (net::canonical(peer), net::canonical(local));
    // Before any handshake byte: Nagle would hold back TLS flights.
    if let Err(e) = net::tune_session_socket(&tcp) {
        log::warn!("Cannot set TCP_NODELAY/keepalive for {peer}: {e}");
    }
    let limit = shared.handshake_timeout;
    let deadline = Instant::now() + limit;
    let mut tcp = tcp;
    let mut remote = peer;
    if kind.proxy {
        match read_proxy_header(&mut tcp, deadline).await {
            Ok(Some(source)) => remote = net::canonical(source),
            Ok(None) => {}
            Err((level, reason)) => {
                log::log!(
                    level,
                    "Refusing connection from {peer} on port {listen_port}: {reason}"
                );
                net::shutdown(&tcp);
                return None;
            }
        }
    }
    let stream = if kind.tls {
        // Taken per connection: new key material applies at once.
        let Some(config) = shared.tls.load().ingress.clone() else {
            log::error!(
                "Refusing TLS connection from {remote} on port {listen_port}: TLS INGRESS has no key and certificate"
            );
            net::shutdown(&tcp);
            return None;
        };
        let left = deadline.saturating_duration_since(Instant::now());
        match super::handshake::accept(config, tcp, left).await {
            Ok(stream) => {
                log::debug!(
                    "TLS accepted from {remote} on port {listen_port}: {}",
                    stream.tls_description()
                );
                stream
            }
            Err(failure) => {
                log::log!(
                    failure.level,
                    "Refusing connection from {remote} on port {listen_port}: {}",
                    failure.reason
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
) -> Result<Option<SocketAddr>, (Level, String)> {
    let mut window = [0u8; PARSE_WINDOW];
    let header = loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let peeked = futures_lite::future::or(async { Some(tcp.peek(&mut window).await) }, async {
            glommio::timer::sleep(left).await;
            None
        })
        .await;
        let n = match peeked {
            None => {
                return Err((
                    Level::Warn,
                    "no complete PROXY protocol header before the handshake timeout".into(),
                ))
            }
            Some(Err(e)) => return Err((Level::Debug, format!("reading the PROXY header: {e}"))),
            Some(Ok(0)) => {
                return Err((
                    Level::Debug,
                    "the connection closed before a PROXY protocol header".into(),
                ))
            }
            Some(Ok(n)) => n,
        };
        match proxy_protocol::parse(&window[..n]) {
            Parsed::Header(h) => break h,
            Parsed::Invalid(reason) => return Err((Level::Warn, reason)),
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
        Ok::<(), std::io::Error>(())
    };
    let left = deadline.saturating_duration_since(Instant::now());
    match futures_lite::future::or(async { Some(consume.await) }, async {
        glommio::timer::sleep(left).await;
        None
    })
    .await
    {
        Some(Ok(())) => Ok(header.addresses.map(|(source, _)| source)),
        Some(Err(e)) => Err((Level::Debug, format!("reading the PROXY header: {e}"))),
        None => Err((
            Level::Warn,
            "no complete PROXY protocol header before the handshake timeout".into(),
        )),
    }
}
