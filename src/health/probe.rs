//! The active health probe: an AMQP-level check of one backend (connect,
//! send the protocol header, read the broker's `Connection.Start` frame,
//! close), and the [`Prober`] thread that checks every registered backend
//! each interval and records the results.
//!
//! It runs on its own std thread with blocking std sockets, every step
//! bounded by the probe's deadline; it never runs on a shard and never
//! touches a session. TLS backends are checked up to the TCP connect only
//! (the TLS client settings live with the shards). A backend that takes a
//! PROXY header gets a "no address" header first (v1 `UNKNOWN`, v2
//! `LOCAL`), which is how a balancer's own health check announces itself.

use std::fmt;
use std::io::{self, Read, Write};
use std::net::{IpAddr, SocketAddr, TcpStream, ToSocketAddrs};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::registry::HealthRegistry;
use super::state::{Observer, Outcome, Recorded};
use crate::codec::{decode_frame, method_ids, DecodeError, FRAME_METHOD, PROTOCOL_HEADER};
use crate::config::ProxyHeader;

/// How to reach one backend; equal targets keep their health across a
/// registry sync.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProbeTarget {
    pub name: String,
    pub host: String,
    /// Resolved when the backend was added; `None` resolves `host` at every
    /// probe (DNS backends).
    pub address: Option<IpAddr>,
    pub port: u16,
    pub proxy_header: ProxyHeader,
    pub tls: bool,
}

impl From<&crate::config::Backend> for ProbeTarget {
    fn from(b: &crate::config::Backend) -> Self {
        ProbeTarget {
            name: b.name.clone(),
            host: b.host.clone(),
            address: b.address,
            port: b.port,
            proxy_header: b.proxy_header,
            tls: b.tls,
        }
    }
}

/// What a successful probe saw.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProbeReport {
    pub addr: SocketAddr,
    pub elapsed: Duration,
    /// False for TLS backends, which are checked up to the TCP connect.
    pub amqp_checked: bool,
}

/// The step a probe was at when its deadline passed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProbeStep {
    Connect,
    Write,
    ReadStart,
}

impl fmt::Display for ProbeStep {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ProbeStep::Connect => "connecting",
            ProbeStep::Write => "sending the protocol header",
            ProbeStep::ReadStart => "waiting for Connection.Start",
        })
    }
}

/// Why a probe failed; the text is the backend's "last error".
#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    #[error("cannot resolve {host}: {source}")]
    Resolve { host: String, source: io::Error },
    #[error("{host} resolves to no address")]
    NoAddress { host: String },
    #[error("connect to {addr} failed: {source}")]
    Connect { addr: SocketAddr, source: io::Error },
    #[error("no answer within {limit:?} while {step} ({addr})")]
    Timeout {
        addr: SocketAddr,
        step: ProbeStep,
        limit: Duration,
    },
    #[error("{addr} closed the connection after {received} bytes, before Connection.Start")]
    ClosedBeforeStart { addr: SocketAddr, received: usize },
    #[error("{addr} failed while {step}: {source}")]
    Io {
        addr: SocketAddr,
        step: ProbeStep,
        source: io::Error,
    },
    #[error("{addr} answered with protocol header {header:02x?}: it speaks another AMQP version")]
    OtherProtocol { addr: SocketAddr, header: [u8; 8] },
    #[error("{addr} sent a bad frame: {error}")]
    BadFrame {
        addr: SocketAddr,
        error: DecodeError,
    },
    #[error("{addr} sent a frame of type {frame_type} on channel {channel} (method {method:?}) instead of Connection.Start")]
    NotStart {
        addr: SocketAddr,
        frame_type: u8,
        channel: u16,
        method: Option<(u16, u16)>,
    },
}

/// The largest `Connection.Start` frame a probe reads (server properties
/// are a few hundred bytes; this leaves room for plugins' additions).
const MAX_START_FRAME: u32 = 64 * 1024;

/// Checks `target` once; the whole check ends within `timeout`. Every
/// address of the target is tried in order until one answers.
pub fn probe_once(target: &ProbeTarget, timeout: Duration) -> Result<ProbeReport, ProbeError> {
    let started = Instant::now();
    let deadline = started + timeout;
    let addrs: Vec<SocketAddr> = match target.address {
        Some(ip) => vec![SocketAddr::new(ip, target.port)],
        None => (target.host.as_str(), target.port)
            .to_socket_addrs()
            .map_err(|source| ProbeError::Resolve {
                host: target.host.clone(),
                source,
            })?
            .collect(),
    };
    let mut last = ProbeError::NoAddress {
        host: target.host.clone(),
    };
    for addr in addrs {
        match probe_addr(target, addr, deadline, timeout) {
            Ok(amqp_checked) => {
                return Ok(ProbeReport {
                    addr,
                    elapsed: started.elapsed(),
                    amqp_checked,
                })
            }
            Err(e) => last = e,
        }
        if Instant::now() >= deadline {
            break;
        }
    }
    Err(last)
}

/// Time left before `deadline`, or the timeout error for `step`.
fn remaining(
    deadline: Instant,
    addr: SocketAddr,
    step: ProbeStep,
    limit: Duration,
) -> Result<Duration, ProbeError> {
    let left = deadline.saturating_duration_since(Instant::now());
    if left.is_zero() {
        Err(ProbeError::Timeout { addr, step, limit })
    } else {
        Ok(left)
    }
}

fn probe_addr(
    target: &ProbeTarget,
    addr: SocketAddr,
    deadline: Instant,
    limit: Duration,
) -> Result<bool, ProbeError> {
    let left = remaining(deadline, addr, ProbeStep::Connect, limit)?;
    let mut stream = TcpStream::connect_timeout(&addr, left).map_err(|source| {
        if source.kind() == io::ErrorKind::TimedOut {
            ProbeError::Timeout {
                addr,
                step: ProbeStep::Connect,
                limit,
            }
        } else {
            ProbeError::Connect { addr, source }
        }
    })?;
    if target.tls {
        return Ok(false);
    }
    let io_err = |step: ProbeStep| {
        move |source: io::Error| match source.kind() {
            io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => {
                ProbeError::Timeout { addr, step, limit }
            }
            _ => ProbeError::Io { addr, step, source },
        }
    };
    let mut hello = match target.proxy_header {
        ProxyHeader::None => Vec::new(),
        ProxyHeader::V1 => b"PROXY UNKNOWN\r\n".to_vec(),
        ProxyHeader::V2 => V2_LOCAL.to_vec(),
    };
    hello.extend_from_slice(&PROTOCOL_HEADER);
    let left = remaining(deadline, addr, ProbeStep::Write, limit)?;
    stream
        .set_write_timeout(Some(left))
        .map_err(io_err(ProbeStep::Write))?;
    stream.write_all(&hello).map_err(io_err(ProbeStep::Write))?;

    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 4096];
    loop {
        if buf.len() >= 8 && buf.starts_with(b"AMQP") {
            let mut header = [0u8; 8];
            header.copy_from_slice(&buf[..8]);
            return Err(ProbeError::OtherProtocol { addr, header });
        }
        match decode_frame(&buf, MAX_START_FRAME) {
            Ok(Some((frame, _))) => {
                let method = method_ids(frame.payload);
                if frame.frame_type == FRAME_METHOD
                    && frame.channel == 0
                    && method == Some((10, 10))
                {
                    // Closing now is the whole goodbye: no StartOk was sent,
                    // so the broker has nothing to clean up.
                    let _ = stream.shutdown(std::net::Shutdown::Both);
                    return Ok(true);
                }
                return Err(ProbeError::NotStart {
                    addr,
                    frame_type: frame.frame_type,
                    channel: frame.channel,
                    method,
                });
            }
            Ok(None) => {}
            Err(error) => return Err(ProbeError::BadFrame { addr, error }),
        }
        let left = remaining(deadline, addr, ProbeStep::ReadStart, limit)?;
        stream
            .set_read_timeout(Some(left))
            .map_err(io_err(ProbeStep::ReadStart))?;
        match stream.read(&mut chunk) {
            Ok(0) => {
                return Err(ProbeError::ClosedBeforeStart {
                    addr,
                    received: buf.len(),
                })
            }
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(io_err(ProbeStep::ReadStart)(e)),
        }
    }
}

/// A PROXY v2 header with the LOCAL command and no addresses.
const V2_LOCAL: [u8; 16] = *b"\r\n\r\n\0\r\nQUIT\n\x20\x00\x00\x00";

/// Called with a backend's name, the state change and the failure that
/// caused it, whenever a probe changes a backend's state.
pub type OnChange = dyn Fn(&str, Recorded, Option<&ProbeError>) + Send + Sync;

/// The probe thread: probes every registered backend each policy interval
/// (all backends of a round in parallel, so one slow backend does not delay
/// the others), until stopped or dropped.
pub struct Prober {
    stop: Arc<(Mutex<bool>, Condvar)>,
    thread: Option<JoinHandle<()>>,
}

impl Prober {
    /// Starts the thread. While the policy has no interval it only waits
    /// (re-reading the policy each second), so a later `BACKEND HEALTH`
    /// turns probing on without a restart.
    pub fn spawn(registry: Arc<HealthRegistry>, on_change: Arc<OnChange>) -> io::Result<Prober> {
        let stop = Arc::new((Mutex::new(false), Condvar::new()));
        let flag = Arc::clone(&stop);
        let thread = std::thread::Builder::new()
            .name("amqpprox-health".into())
            .spawn(move || run(&registry, &*on_change, &flag))?;
        Ok(Prober {
            stop,
            thread: Some(thread),
        })
    }

    /// Stops the thread and waits for the round in progress to end (at
    /// most one probe timeout).
    pub fn stop(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        let (lock, cvar) = &*self.stop;
        *lock.lock().unwrap_or_else(|p| p.into_inner()) = true;
        cvar.notify_all();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for Prober {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// Sleeps up to `wait`; true when asked to stop.
fn wait_or_stop(stop: &(Mutex<bool>, Condvar), wait: Duration) -> bool {
    let (lock, cvar) = stop;
    let guard = lock.lock().unwrap_or_else(|p| p.into_inner());
    let (guard, _) = cvar
        .wait_timeout_while(guard, wait, |stopped| !*stopped)
        .unwrap_or_else(|p| p.into_inner());
    *guard
}

fn run(registry: &HealthRegistry, on_change: &OnChange, stop: &(Mutex<bool>, Condvar)) {
    loop {
        let policy = registry.policy();
        let Some(interval) = policy.interval else {
            if wait_or_stop(stop, Duration::from_secs(1)) {
                return;
            }
            continue;
        };
        let round = Instant::now();
        let entries = registry.entries();
        std::thread::scope(|scope| {
            for entry in &entries {
                scope.spawn(move || {
                    let result = probe_once(&entry.target, policy.timeout);
                    let outcome = Outcome {
                        observer: Observer::Probe,
                        ok: result.is_ok(),
                    };
                    let error = result.err();
                    let reason = error.as_ref().map(|e| e as &dyn fmt::Display);
                    let recorded =
                        entry
                            .health
                            .record(outcome, reason, registry.now(), &registry.policy());
                    if recorded.changed() {
                        on_change(&entry.target.name, recorded, error.as_ref());
                    }
                });
            }
        });
        if wait_or_stop(stop, interval.saturating_sub(round.elapsed())) {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn v2_local_header_parses_as_a_header_without_addresses() {
        match crate::proxy_protocol::parse(&V2_LOCAL) {
            crate::proxy_protocol::Parsed::Header(h) => {
                assert_eq!((h.version, h.len, h.addresses), (2, 16, None));
            }
            other => panic!("{other:?}"),
        }
        match crate::proxy_protocol::parse(b"PROXY UNKNOWN\r\n") {
            crate::proxy_protocol::Parsed::Header(h) => assert_eq!(h.addresses, None),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_refused_connect_is_a_connect_error() {
        // Bind then drop: nothing listens on the port afterwards.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let target = ProbeTarget {
            name: "gone".into(),
            host: "127.0.0.1".into(),
            address: Some([127, 0, 0, 1].into()),
            port,
            proxy_header: ProxyHeader::None,
            tls: false,
        };
        let err = probe_once(&target, Duration::from_secs(5)).unwrap_err();
        assert!(matches!(err, ProbeError::Connect { .. }), "{err}");
    }
}
