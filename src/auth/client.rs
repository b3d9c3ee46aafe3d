//! The auth service's HTTP client: one POST per session, on the session's
//! own shard (see `docs/commands.md#auth-and-limit` and `docs/flags.md#flags`).
//!
//! Runs as a glommio task on the shard's executor; every await is bounded
//! (a connect timeout covering name resolution and every address tried, then
//! a fresh response timeout covering the request write and the response
//! read), so a slow or silent service holds up only the session waiting for
//! it, never the shard. Opens a new connection per request and closes it,
//! as the original does. Every failure comes back as a DENY with its reason;
//! nothing here panics or logs.

use std::time::Duration;

use futures_lite::{AsyncReadExt, AsyncWriteExt};
use glommio::net::TcpStream;
use prost::Message;

use super::decision::{build_request, decide, AuthDecision, DenyReason};
use super::http::{encode_request, parse_response, HttpResponse};
use super::proto::AuthRequest;
use super::{AuthService, AuthSettings};
use crate::codec::StartOk;
use crate::net::Resolver;

/// Default for `--authConnectTimeoutMs`: resolving and connecting.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Default for `--authResponseTimeoutMs`: writing the request and reading
/// the whole response. Shorter than the original's 30 s: a client that
/// waits that long for `OpenOk` has usually given up.
pub const DEFAULT_RESPONSE_TIMEOUT: Duration = Duration::from_secs(10);

/// The two bounds on one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AuthTimeouts {
    pub connect: Duration,
    pub response: Duration,
}

impl AuthTimeouts {
    /// From the `--authConnectTimeoutMs` and `--authResponseTimeoutMs`
    /// flags.
    pub fn from_millis(connect: u64, response: u64) -> AuthTimeouts {
        AuthTimeouts {
            connect: Duration::from_millis(connect),
            response: Duration::from_millis(response),
        }
    }
}

impl Default for AuthTimeouts {
    fn default() -> Self {
        AuthTimeouts {
            connect: DEFAULT_CONNECT_TIMEOUT,
            response: DEFAULT_RESPONSE_TIMEOUT,
        }
    }
}

/// The verdict for one session under `settings`: the always-allow answer
/// without any I/O, else the service's.
pub async fn authorise(
    settings: &AuthSettings,
    vhost: &str,
    start_ok: &StartOk,
    client_hostname: &str,
    resolver: &Resolver,
    timeouts: AuthTimeouts,
) -> AuthDecision {
    match settings {
        AuthSettings::AlwaysAllow => AuthDecision::always_allow(),
        AuthSettings::Service(service) => {
            let request = build_request(vhost, start_ok, client_hostname);
            ask(service, &request, resolver, timeouts).await
        }
    }
}

/// POSTs `request` to `service` and reads its verdict.
pub async fn ask(
    service: &AuthService,
    request: &AuthRequest,
    resolver: &Resolver,
    timeouts: AuthTimeouts,
) -> AuthDecision {
    let stream = match bounded(timeouts.connect, connect(service, resolver, timeouts)).await {
        Some(Ok(stream)) => stream,
        Some(Err(reason)) => return AuthDecision::Deny(reason),
        None => {
            return AuthDecision::Deny(DenyReason::ConnectTimeout {
                host: service.host.clone(),
                port: service.port,
                after: timeouts.connect,
            })
        }
    };
    let body = request.encode_to_vec();
    match bounded(timeouts.response, exchange(stream, service, &body)).await {
        Some(Ok(response)) => decide(&service.host, service.port, &response),
        Some(Err(reason)) => AuthDecision::Deny(reason),
        None => AuthDecision::Deny(DenyReason::ResponseTimeout {
            host: service.host.clone(),
            port: service.port,
            after: timeouts.response,
        }),
    }
}

/// The first address of the service that accepts a connection.
async fn connect(
    service: &AuthService,
    resolver: &Resolver,
    timeouts: AuthTimeouts,
) -> Result<TcpStream, DenyReason> {
    let addrs = resolver
        .resolve(&service.host, service.port)
        .await
        .map_err(|source| DenyReason::Resolve {
            host: service.host.clone(),
            source,
        })?;
    let mut last_error = None;
    for addr in addrs {
        match crate::net::connect(addr, timeouts.connect).await {
            Ok(stream) => return Ok(stream),
            Err(error) => last_error = Some(error),
        }
    }
    Err(DenyReason::Connect {
        host: service.host.clone(),
        port: service.port,
        source: last_error.unwrap_or_else(|| std::io::ErrorKind::NotFound.into()),
    })
}

/// Writes the request and reads until a whole response (or the end).
async fn exchange(
    mut stream: TcpStream,
    service: &AuthService,
    body: &[u8],
) -> Result<HttpResponse, DenyReason> {
    let (host, port) = (&service.host, service.port);
    let request = encode_request(host, port, &service.target, body);
    let write = async {
        stream.write_all(&request).await?;
        stream.flush().await
    };
    write.await.map_err(|source| DenyReason::Write {
        host: host.clone(),
        port,
        source,
    })?;
    let mut received = Vec::with_capacity(1024);
    let mut chunk = [0u8; 4096];
    loop {
        let n = stream
            .read(&mut chunk)
            .await
            .map_err(|source| DenyReason::Read {
                host: host.clone(),
                port,
                source,
            })?;
        received.extend_from_slice(&chunk[..n]);
        match parse_response(&received, n == 0) {
            Ok(Some(response)) => return Ok(response),
            Ok(None) => continue,
            Err(source) => {
                return Err(DenyReason::Http {
                    host: host.clone(),
                    port,
                    source,
                })
            }
        }
    }
}

/// Awaits `f`, or gives `None` after `limit`.
async fn bounded<T>(limit: Duration, f: impl std::future::Future<Output = T>) -> Option<T> {
    futures_lite::future::or(async { Some(f.await) }, async {
        glommio::timer::sleep(limit).await;
        None
    })
    .await
}
