//! Connecting a session to its broker: every candidate backend, every
//! address of each, each at most once, each attempt bounded by
//! `--connectTimeoutMs`; the PROXY protocol header and the TLS handshake a
//! backend asks for, with failover to the next when either fails
//! (docs/routing.md). Runs on the session's shard; never blocks.
//!
//! [`Candidates`] is a cursor over the route's addresses: a caller that
//! finds a connected broker unfit (it says nothing, or closes, before its
//! handshake ends; docs/reliability.md) reports it with
//! [`Candidates::skip`] and asks for the next one; the log names each
//! skipped backend and why. Every skip counts against the backend's
//! health, and [`Candidates::succeeded`] (at `OpenOk`) for it (passive
//! checking); members marked down are left out while any member is up
//! (docs/reliability.md#health-checks).

use super::super::{SessionInfo, ShardContext};
use crate::config::{Backend, ProxyHeader};
use crate::net;
use crate::proxy_protocol;
use crate::session_log;
use crate::stream::Stream;
use futures_lite::AsyncWriteExt;
use glommio::net::TcpStream;
use log::Level;
use std::net::SocketAddr;
use std::time::Duration;

/// How long the PROXY header write may take before the next backend is tried.
const PROXY_WRITE_TIMEOUT: Duration = Duration::from_secs(5);

/// Why one address of a backend was passed over.
#[derive(Debug, thiserror::Error)]
pub enum Skipped {
    #[error("Failed to resolve {host}:{port} error: {source} for {backend}")]
    Resolve {
        backend: String,
        host: String,
        port: u16,
        source: std::io::Error,
    },
    #[error("Connecting to backend '{backend}' at {addr} failed: {source}")]
    Connect {
        backend: String,
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("PROXY header to backend '{backend}' at {addr} failed: {source}")]
    ProxyHeader {
        backend: String,
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("Backend '{backend}' at {addr}: {source}; trying the next one")]
    Tls {
        backend: String,
        addr: SocketAddr,
        source: crate::tls::handshake::Failure,
    },
    #[error("Backend '{backend}' at {addr}: {source}; trying the next one")]
    Unfit {
        backend: String,
        addr: SocketAddr,
        source: Unfit,
    },
}

/// How far a broker's handshake must get before the client may see any of
/// it: until then a failing broker is skipped for the next member.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    /// Transparent: the broker's first bytes, its `Connection.Start`.
    Start,
    /// Proxied: the broker's `Connection.OpenOk` to the replayed handshake.
    OpenOk,
    /// RabbitMQ Stream: the broker's Open response (`session::stream`).
    StreamOpen,
}

impl std::fmt::Display for Stage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Stage::Start => "Connection.Start",
            Stage::OpenOk => "Connection.OpenOk",
            Stage::StreamOpen => "stream Open response",
        })
    }
}

/// Why a connected broker was passed over before its handshake got far
/// enough.
#[derive(Debug, thiserror::Error)]
pub enum Unfit {
    #[error("closed the connection before {stage}")]
    Closed { stage: Stage },
    #[error("failed before {stage}: {source}")]
    Failed {
        stage: Stage,
        source: std::io::Error,
    },
    #[error("sent no {stage} within {} ms", .limit.as_millis())]
    Silent { stage: Stage, limit: Duration },
}

impl Skipped {
    /// The backend the skipped address belongs to.
    pub fn backend(&self) -> &str {
        match self {
            Skipped::Resolve { backend, .. }
            | Skipped::Connect { backend, .. }
            | Skipped::ProxyHeader { backend, .. }
            | Skipped::Tls { backend, .. }
            | Skipped::Unfit { backend, .. } => backend,
        }
    }

    fn level(&self) -> Level {
        match self {
            Skipped::Resolve { .. } => Level::Error,
            Skipped::Connect { .. } | Skipped::ProxyHeader { .. } | Skipped::Unfit { .. } => {
                Level::Warn
            }
            Skipped::Tls { source, .. } => source.level(),
        }
    }
}

/// The route's backends and their addresses, walked in order.
pub struct Candidates<'a> {
    route: &'a [&'a Backend],
    /// The route's members still to try, healthy ones only while any is
    /// (filled at the first [`Candidates::next`]).
    backends: Option<std::vec::IntoIter<&'a Backend>>,
    /// The backend being tried and its addresses not tried yet.
    current: Option<(&'a Backend, std::vec::IntoIter<SocketAddr>)>,
    /// The backend and address [`Candidates::next`] gave last.
    connected: Option<(&'a Backend, SocketAddr)>,
}

impl<'a> Candidates<'a> {
    pub fn new(backends: &'a [&'a Backend]) -> Candidates<'a> {
        Candidates {
            route: backends,
            backends: None,
            current: None,
            connected: None,
        }
    }

    /// Connects to the next address that takes the connection, its PROXY
    /// header and its TLS handshake; records it on the session. `None`
    /// once every address was tried.
    pub async fn next(&mut self, shard: &ShardContext, info: &SessionInfo) -> Option<Stream> {
        let route = self.route;
        let backends = self
            .backends
            .get_or_insert_with(|| healthy_members(shard, info, route).into_iter());
        loop {
            let (backend, addr) = match self
                .current
                .as_mut()
                .and_then(|(b, a)| Some((*b, a.next()?)))
            {
                Some(next) => next,
                None => {
                    let backend = backends.next()?;
                    match addresses(shard, backend).await {
                        Ok(addrs) => self.current = Some((backend, addrs.into_iter())),
                        Err(skipped) => {
                            self.current = None;
                            report_skipped(shard, info, &skipped);
                        }
                    }
                    continue;
                }
            };
            match attempt(shard, info, backend, addr).await {
                Ok(stream) => {
                    self.connected = Some((backend, addr));
                    return Some(stream);
                }
                Err(skipped) => report_skipped(shard, info, &skipped),
            }
        }
    }
}

impl Candidates<'_> {
    /// Reports that the broker [`Candidates::next`] gave last is unfit;
    /// the caller then tries the next one.
    pub fn skip(&mut self, shard: &ShardContext, info: &SessionInfo, why: Unfit) {
        if let Some((backend, addr)) = self.connected.take() {
            report_skipped(
                shard,
                info,
                &Skipped::Unfit {
                    backend: backend.name.clone(),
                    addr,
                    source: why,
                },
            );
        }
    }

    /// Reports that the broker [`Candidates::next`] gave last answered the
    /// handshake up to `OpenOk`: a passive success for its health.
    pub fn succeeded(&mut self, shard: &ShardContext, info: &SessionInfo) {
        if let Some((backend, _)) = self.connected.take() {
            if let Some(recorded) = shard.shared.health.session_succeeded(&backend.name) {
                if recorded.changed() {
                    // Coming back from down is news; a first success is not.
                    let level = if recorded.before == crate::health::HealthState::Down {
                        Level::Warn
                    } else {
                        Level::Info
                    };
                    session_log!(
                        level,
                        info,
                        "Backend '{}' is {} (was {}): a session reached Connection.OpenOk",
                        backend.name,
                        recorded.after,
                        recorded.before
                    );
                }
            }
        }
    }
}

/// The route's members a session may try now: the down ones are left out
/// while any member is routable (docs/reliability.md#health-checks); each
/// left-out member is logged with its last error.
fn healthy_members<'a>(
    shard: &ShardContext,
    info: &SessionInfo,
    route: &'a [&'a Backend],
) -> Vec<&'a Backend> {
    let mut members: Vec<&Backend> = route.to_vec();
    let health = &shard.shared.health;
    if crate::health::filter_up(&mut members, health) > 0 {
        for skipped in route
            .iter()
            .filter(|b| !members.iter().any(|m| std::ptr::eq(*m, **b)))
        {
            let last = health
                .entry(&skipped.name)
                .and_then(|e| e.health.snapshot().last_error)
                .map_or_else(|| "none".to_string(), |e| e.reason);
            session_log!(
                Level::Info,
                info,
                "Backend '{}' is down, not tried (last error: {last})",
                skipped.name
            );
        }
    }
    members
}

/// Logs a skipped address and counts it against its backend's health
/// (passive checking); a state change is logged once, at warning.
fn report_skipped(shard: &ShardContext, info: &SessionInfo, skipped: &Skipped) {
    log_skipped(info, skipped);
    let name = skipped.backend();
    if let Some(recorded) = shard.shared.health.session_failed(name, skipped) {
        if recorded.changed() {
            session_log!(
                Level::Warn,
                info,
                "Backend '{name}' is {} (was {}) after {} consecutive failures seen by sessions; last: {skipped}",
                recorded.after,
                recorded.before,
                shard.shared.health.policy().passive_fall
            );
        }
    }
}

fn log_skipped(info: &SessionInfo, skipped: &Skipped) {
    session_log!(skipped.level(), info, "{skipped}");
}

/// Every address of `backend`: its own, or its host's.
async fn addresses(shard: &ShardContext, backend: &Backend) -> Result<Vec<SocketAddr>, Skipped> {
    match backend.address {
        Some(ip) => Ok(vec![SocketAddr::new(ip, backend.port)]),
        None => shard
            .resolver
            .resolve(&backend.host, backend.port)
            .await
            .map_err(|source| Skipped::Resolve {
                backend: backend.name.clone(),
                host: backend.host.clone(),
                port: backend.port,
                source,
            }),
    }
}

/// One address: connect (with the socket options), PROXY header, TLS.
async fn attempt(
    shard: &ShardContext,
    info: &SessionInfo,
    backend: &Backend,
    addr: SocketAddr,
) -> Result<Stream, Skipped> {
    let (mut stream, options) = net::connect_session(
        addr,
        shard.shared.connect_timeout,
        shard.shared.session_sockets,
    )
    .await
    .map_err(|source| Skipped::Connect {
        backend: backend.name.clone(),
        addr,
        source,
    })?;
    // Closed through the ring when dropped (docs/sessions.md#pass-through).
    stream.close_behind();
    if let Err(e) = options {
        session_log!(
            Level::Warn,
            info,
            "Cannot set TCP_NODELAY/keepalive/window clamp toward {addr}: {e}"
        );
    }
    send_proxy_header(&mut stream, backend.proxy_header, info.ingress_remote, addr)
        .await
        .map_err(|source| Skipped::ProxyHeader {
            backend: backend.name.clone(),
            addr,
            source,
        })?;
    let egress_local = stream.local_addr().ok();
    // TLS after the PROXY header, which goes in clear.
    let tls = shard.shared.tls.load();
    let stream = crate::tls::handshake::for_backend(
        &tls,
        crate::tls::handshake::BackendTls {
            tls: backend.tls,
            host: &backend.host,
        },
        stream,
        shard.shared.connect_timeout,
    )
    .await
    .map_err(|source| Skipped::Tls {
        backend: backend.name.clone(),
        addr,
        source,
    })?;
    info.egress_local.set(egress_local);
    info.egress_remote.set(Some(addr));
    *info.backend.borrow_mut() = backend.name.clone();
    Ok(stream)
}

/// Writes the backend's PROXY protocol header, if it wants one.
async fn send_proxy_header(
    stream: &mut TcpStream,
    header: ProxyHeader,
    client: SocketAddr,
    backend: SocketAddr,
) -> std::io::Result<()> {
    let bytes = match header {
        ProxyHeader::None => return Ok(()),
        ProxyHeader::V1 => proxy_protocol::v1(client, backend),
        ProxyHeader::V2 => proxy_protocol::v2(client, backend),
    };
    net::with_timeout(PROXY_WRITE_TIMEOUT, stream.write_all(&bytes))
        .await
        .unwrap_or_else(|_| {
            Err(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                "PROXY header write timed out",
            ))
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn io(kind: std::io::ErrorKind) -> std::io::Error {
        std::io::Error::from(kind)
    }

    #[test]
    fn skip_lines_read_as_the_log_always_said_them() {
        let addr: SocketAddr = "10.0.0.5:5672".parse().unwrap();
        let resolve = Skipped::Resolve {
            backend: "b1".into(),
            host: "rabbit.example".into(),
            port: 5672,
            source: std::io::Error::new(std::io::ErrorKind::NotFound, "no such host"),
        };
        assert_eq!(
            resolve.to_string(),
            "Failed to resolve rabbit.example:5672 error: no such host for b1"
        );
        assert_eq!(resolve.level(), Level::Error);
        let connect = Skipped::Connect {
            backend: "b1".into(),
            addr,
            source: io(std::io::ErrorKind::ConnectionRefused),
        };
        assert!(connect
            .to_string()
            .starts_with("Connecting to backend 'b1' at 10.0.0.5:5672 failed: "));
        let silent = Skipped::Unfit {
            backend: "b2".into(),
            addr,
            source: Unfit::Silent {
                stage: Stage::Start,
                limit: Duration::from_millis(5000),
            },
        };
        assert_eq!(
            silent.to_string(),
            "Backend 'b2' at 10.0.0.5:5672: sent no Connection.Start within 5000 ms; trying the next one"
        );
        assert_eq!(silent.level(), Level::Warn);
        let closed = Unfit::Closed {
            stage: Stage::OpenOk,
        };
        assert_eq!(
            closed.to_string(),
            "closed the connection before Connection.OpenOk"
        );
    }
}
