//! Connecting a session to its broker: every candidate backend, every
//! address of each, each at most once, each attempt bounded by
//! `--connectTimeoutMs`; the PROXY protocol header and the TLS handshake a
//! backend asks for, with failover to the next when either fails
//! (behaviour.md §3.5, DECISIONS Fix 4). Runs on the session's shard; never
//! blocks.

use super::driver::bounded;
use super::SessionInfo;
use crate::config::ProxyHeader;
use crate::net;
use crate::proxy_protocol;
use crate::session_log;
use crate::shard::Shard;
use crate::stream::Stream;
use futures_lite::AsyncWriteExt;
use glommio::net::TcpStream;
use log::Level;
use std::time::Duration;

/// Tries every candidate backend, and every address of each, in order.
pub(super) async fn connect_any(
    shard: &Shard,
    info: &SessionInfo,
    candidates: &[crate::config::Backend],
) -> Option<Stream> {
    let timeout = shard.shared.connect_timeout;
    for backend in candidates {
        let addrs = match backend.address {
            Some(ip) => vec![std::net::SocketAddr::new(ip, backend.port)],
            None => match shard.resolver.resolve(&backend.host, backend.port).await {
                Ok(addrs) => addrs,
                Err(e) => {
                    session_log!(
                        Level::Error,
                        info,
                        "Failed to resolve {}:{} error: {e} for {}",
                        backend.host,
                        backend.port,
                        backend.name
                    );
                    continue;
                }
            },
        };
        for addr in addrs {
            match net::connect(addr, timeout).await {
                Ok(mut stream) => {
                    if let Err(e) = send_proxy_header(
                        &mut stream,
                        backend.proxy_header,
                        info.ingress_remote,
                        addr,
                    )
                    .await
                    {
                        // DECISIONS Fix 4: a failed PROXY write tries the next one.
                        session_log!(
                            Level::Warn,
                            info,
                            "PROXY header to backend '{}' at {addr} failed: {e}",
                            backend.name
                        );
                        continue;
                    }
                    if let Err(e) = net::tune_session_socket(&stream) {
                        session_log!(
                            Level::Warn,
                            info,
                            "Cannot set TCP_NODELAY/keepalive toward {addr}: {e}"
                        );
                    }
                    let egress_local = stream.local_addr().ok();
                    // TLS after the PROXY header, which goes in clear (§6.2).
                    let stream =
                        match crate::tls::handshake::for_backend(shard, backend, stream).await {
                            Ok(stream) => stream,
                            Err(failure) => {
                                // DECISIONS Fix 4: the next one is tried.
                                session_log!(
                                    failure.level,
                                    info,
                                    "Backend '{}' at {addr}: {}; trying the next one",
                                    backend.name,
                                    failure.reason
                                );
                                continue;
                            }
                        };
                    info.egress_local.set(egress_local);
                    info.egress_remote.set(Some(addr));
                    *info.backend.borrow_mut() = backend.name.clone();
                    return Some(stream);
                }
                Err(e) => {
                    session_log!(
                        Level::Warn,
                        info,
                        "Connecting to backend '{}' at {addr} failed: {e}",
                        backend.name
                    );
                }
            }
        }
    }
    None
}

/// Writes the backend's PROXY protocol header, if it wants one.
async fn send_proxy_header(
    stream: &mut TcpStream,
    header: ProxyHeader,
    client: std::net::SocketAddr,
    backend: std::net::SocketAddr,
) -> std::io::Result<()> {
    let bytes = match header {
        ProxyHeader::None => return Ok(()),
        ProxyHeader::V1 => proxy_protocol::v1(client, backend),
        ProxyHeader::V2 => proxy_protocol::v2(client, backend),
    };
    bounded(PROXY_WRITE_TIMEOUT, stream.write_all(&bytes))
        .await
        .unwrap_or_else(|| {
            Err(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                "PROXY header write timed out",
            ))
        })
}

/// How long the PROXY header write may take before the next backend is tried.
const PROXY_WRITE_TIMEOUT: Duration = Duration::from_secs(5);
