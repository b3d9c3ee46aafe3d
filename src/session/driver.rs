//! Drives one session through its phases; see the module above for the
//! order. Each phase is a function with a bounded wait and a typed outcome,
//! and `run` turns outcomes into the client's `Connection.Close`, the log
//! line and the disconnect cause.

use super::connect::connect_any;
use super::control::Ending;
use super::transparent::Fallback;
use super::{Disconnect, HandshakeKind, Phase, SessionInfo};
use crate::codec::{
    decode_frame, method_id, method_ids, reply_code, CONNECTION_CLASS, FRAME_METHOD,
};
use crate::config::Mapping;
use crate::handshake::{
    broker_close_frame, check_protocol_header, close_frame, is_hang_up, BrokerHandshake,
    BrokerHandshakeError, BrokerProgress, ClientHandshake, ClientHandshakeError, ClientHello,
    ClientProgress, HangUp, HeaderCheck, HANDSHAKE_MAX_FRAME,
};
use crate::net;
use crate::routing::{self, RouteError};
use crate::session_log;
use crate::shard::{ListenerKind, Shard};
use crate::stream::Stream;
use futures_lite::{AsyncReadExt, AsyncWriteExt};
use glommio::net::TcpStream;
use log::Level;
use std::rc::Rc;
use std::time::{Duration, Instant};

/// Size of the reads during the handshakes (small: these are a few frames).
const HANDSHAKE_READ: usize = 4096;

/// A session whose broker said `OpenOk`.
pub(super) struct Established {
    pub broker: Stream,
    /// Client bytes that followed its `Open`, still to go to the broker.
    pub pipelined: Vec<u8>,
    /// The heartbeat and frame-max the client agreed.
    pub heartbeat: u16,
    pub frame_max: u32,
    /// The broker's `OpenOk` and whatever followed it, already sent to the
    /// client: the pump's egress scanner must walk it to stay in step.
    pub sent_to_client: Vec<u8>,
}

/// How a session ended before reaching pass-through.
pub(super) enum Refusal {
    /// Bytes to send the client (maybe none) before closing, and why.
    Reply {
        bytes: Vec<u8>,
        level: Level,
        reason: String,
    },
    /// The client went away or closed itself; nothing to send.
    ClientGone { reason: String, graceful: bool },
}

pub(super) fn refuse(code: u16, text: String, level: Level) -> Refusal {
    let reason = format!("{code} {text}");
    Refusal::Reply {
        bytes: close_frame(code, &text),
        level,
        reason,
    }
}

/// The broker closed its socket mid-handshake: a probable refused login
/// after the `StartOk` (WARN, 403), else a broker failure (ERROR, 320).
pub(super) fn hung_up(hang_up: HangUp, vhost: Option<&str>) -> Refusal {
    let (code, text) = hang_up.reply(vhost);
    refuse(code, text, hang_up.level())
}

/// Runs a session from accept to close.
pub async fn run(shard: Rc<Shard>, client: TcpStream, listen_port: u16, kind: ListenerKind) {
    // An ingress PROXY header and TLS, when the listener asks for them,
    // come before the session exists (they log their own refusals).
    let Some(accepted) =
        crate::tls::ingress::accept(&shard.shared, client, listen_port, kind).await
    else {
        return;
    };
    let crate::tls::ingress::Accepted {
        stream: client,
        remote,
        local,
    } = accepted;
    let info = Rc::new(SessionInfo::new(
        shard.shared.next_session_id(),
        remote,
        local,
    ));
    shard
        .sessions
        .borrow_mut()
        .insert(info.id, Rc::clone(&info));
    session_log!(
        Level::Debug,
        &info,
        "Accepted connection from {remote} on port {listen_port}"
    );

    let mut client = client;
    // An operator's forced disconnect ends the session in any phase.
    // Boxed: the handshake's state is large and short-lived; inline it
    // would size every idle session's task for it.
    let establishing = futures_lite::future::or(
        Box::pin(establish(&shard, &info, &mut client, listen_port)),
        forced(&info),
    );
    match establishing.await {
        Ok(established) => {
            // The vhost is known from here: a `TRACE vhost` may apply.
            crate::stats::trace::on_open(&shard, &info);
            super::passthrough::run(&shard, &info, client, established).await
        }
        Err(Refusal::Reply {
            bytes,
            level,
            reason,
        }) => {
            session_log!(level, &info, "Closing client {remote}: {reason}");
            info.disconnect.set(Disconnect::Proxy);
            if !bytes.is_empty()
                && client.write_all(&bytes).await.is_ok()
                && bytes[0] == FRAME_METHOD
            {
                // A Connection.Close went out: wait for the CloseOk, as a
                // broker does, so clients that read to the end of the socket
                // before handling frames still see the code and text.
                bounded(CLOSE_OK_WAIT, await_close_ok(&mut client)).await;
            }
            net::shutdown(client.tcp());
        }
        Err(Refusal::ClientGone { reason, graceful }) => {
            session_log!(
                Level::Info,
                &info,
                "Client {remote} left during the handshake: {reason}"
            );
            info.disconnect.set(if graceful {
                Disconnect::Graceful
            } else {
                Disconnect::Client
            });
            net::shutdown(client.tcp());
        }
    }
    info.phase.set(Phase::Closed);
    shard.sessions.borrow_mut().remove(&info.id);
    // Counted now, in the interval it ended in: it has left the table.
    shard.stats.session_ended(&info);
}

/// How long a refused client may take to acknowledge our `Connection.Close`.
const CLOSE_OK_WAIT: Duration = Duration::from_secs(1);

/// Reads and drops what the client sends until its `CloseOk` or EOF.
async fn await_close_ok(client: &mut Stream) {
    let mut buf = vec![0u8; HANDSHAKE_READ];
    let mut pending: Vec<u8> = Vec::new();
    loop {
        match client.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => pending.extend_from_slice(&buf[..n]),
        }
        while let Ok(Some((frame, used))) = decode_frame(&pending, HANDSHAKE_MAX_FRAME) {
            if frame.channel == 0
                && method_ids(frame.payload) == Some((CONNECTION_CLASS, method_id::CLOSE_OK))
            {
                return;
            }
            pending.drain(..used);
        }
        if pending.len() > HANDSHAKE_MAX_FRAME as usize {
            return;
        }
    }
}

/// Resolves when the session must end before it is established: the
/// operator forced it (closed without a word), or the proxy is draining
/// (the client is told 320, to reconnect elsewhere).
async fn forced<T>(info: &SessionInfo) -> Result<T, Refusal> {
    loop {
        let generation = info.control.generation();
        match info.control.ending() {
            Some(Ending::Force) => {
                return Err(Refusal::Reply {
                    bytes: Vec::new(),
                    level: Level::Info,
                    reason: "force disconnected by the operator".into(),
                })
            }
            Some(Ending::Drain) => {
                let (code, text) = Ending::Drain.client_close();
                return Err(refuse(code, text.into(), Level::Info));
            }
            _ => {}
        }
        info.control.changed_since(generation).await;
    }
}

/// Holds a session at `Open` while it or its vhost is paused, so that it is
/// routed by the mapping in force when it is unpaused (behaviour.md §4.7).
pub(super) async fn hold_at_open(info: &SessionInfo, vhost_paused: bool) -> Result<(), Refusal> {
    if vhost_paused {
        info.control.set_paused(true);
    }
    loop {
        let generation = info.control.generation();
        match info.control.ending() {
            Some(Ending::Graceful) => {
                return Err(refuse(reply_code::REPLY_SUCCESS, "OK".into(), Level::Info));
            }
            // Force is handled by `forced`; a backend cut does not concern a
            // session that has no broker yet.
            _ if !info.control.paused() => return Ok(()),
            _ => {}
        }
        session_log!(
            Level::Info,
            info,
            "Session paused at Open; waiting for UNPAUSE"
        );
        info.control.changed_since(generation).await;
    }
}

/// Protocol header, then either the transparent handshake (when the route
/// cannot depend on the vhost) or the proxy's own handshake and the replay.
async fn establish(
    shard: &Rc<Shard>,
    info: &Rc<SessionInfo>,
    client: &mut Stream,
    listen_port: u16,
) -> Result<Established, Refusal> {
    let timeout = shard.shared.handshake_timeout;
    let deadline = Instant::now() + timeout;
    let header = bounded(timeout, read_header(client))
        .await
        .unwrap_or_else(|| {
            Err(Refusal::Reply {
                bytes: Vec::new(),
                level: Level::Warn,
                reason: format!("no protocol header within {} ms", timeout.as_millis()),
            })
        })?;
    let mut unreachable = false;
    // Decided once per session, when its header arrives: a configuration
    // change never switches a session already past this point.
    if routing::vhost_independent(&shard.shared.config.load().config) {
        match super::transparent::establish(shard, info, client, listen_port, deadline).await {
            Ok(established) => return Ok(established),
            Err(Fallback::Refused(refusal)) => return Err(refusal),
            Err(Fallback::Proxied { no_broker }) => unreachable = no_broker,
        }
    }
    info.handshake.set(HandshakeKind::Proxied);
    let mut handshake = ClientHandshake::new();
    let left = deadline.saturating_duration_since(Instant::now());
    let hello = bounded(left, client_handshake(client, &mut handshake, &header))
        .await
        .unwrap_or_else(|| Err(handshake_timed_out(timeout)))?;
    broker_side(shard, info, client, listen_port, hello, unreachable).await
}

/// The refusal of a client that did not finish its handshake in time.
pub(super) fn handshake_timed_out(timeout: Duration) -> Refusal {
    refuse(
        reply_code::CONNECTION_FORCED,
        format!(
            "CONNECTION_FORCED - handshake not completed within {} ms",
            timeout.as_millis()
        ),
        Level::Warn,
    )
}

/// What a failed or empty read from the client means for the session.
fn client_read(read: std::io::Result<usize>) -> Result<usize, Refusal> {
    match read {
        Ok(0) => Err(Refusal::ClientGone {
            reason: "connection closed".into(),
            graceful: false,
        }),
        Ok(n) => Ok(n),
        Err(e) => Err(Refusal::ClientGone {
            reason: e.to_string(),
            graceful: false,
        }),
    }
}

/// Reads the client's 8-byte protocol header.
async fn read_header(client: &mut Stream) -> Result<Vec<u8>, Refusal> {
    let mut header = Vec::with_capacity(8);
    let mut buf = [0u8; 16];
    loop {
        let n = client_read(client.read(&mut buf).await)?;
        header.extend_from_slice(&buf[..n]);
        match check_protocol_header(&header) {
            HeaderCheck::NeedMore => {}
            HeaderCheck::Accepted { .. } => return Ok(header),
            HeaderCheck::Bad => {
                let e = ClientHandshakeError::BadProtocolHeader;
                return Err(Refusal::Reply {
                    bytes: e.reply(),
                    level: Level::Warn,
                    reason: e.to_string(),
                });
            }
        }
    }
}

/// From the vhost on: hold while paused, route, connect, replay the
/// handshake to the broker. `no_broker`: every backend already failed (in
/// a transparent attempt), so only the refusal naming the vhost is left.
pub(super) async fn broker_side(
    shard: &Rc<Shard>,
    info: &Rc<SessionInfo>,
    client: &mut Stream,
    listen_port: u16,
    hello: ClientHello,
    no_broker: bool,
) -> Result<Established, Refusal> {
    let timeout = shard.shared.handshake_timeout;
    let vhost = hello.open.vhost.clone();
    *info.vhost.borrow_mut() = vhost.clone();
    info.phase.set(Phase::Connecting);

    let paused = shard
        .shared
        .config
        .load()
        .config
        .paused_vhosts
        .contains(&vhost);
    hold_at_open(info, paused).await?;
    // The mapping in force now, after any pause.
    let snapshot = shard.shared.config.load_full();
    let route = routing::route(&snapshot, &vhost).map_err(|e| {
        let level = if matches!(e, RouteError::NoFarm) {
            Level::Error
        } else {
            Level::Warn
        };
        session_log!(
            level,
            info,
            "No mapping available for vhost={vhost} ingressRemote={}: {e}",
            info.ingress_remote
        );
        refuse(
            reply_code::RESOURCE_ERROR,
            format!("No known broker mapping for vhost {vhost}"),
            Level::Error,
        )
    })?;
    match &route.via {
        Mapping::Farm(f) => session_log!(Level::Info, info, "Selected farm: {f} For vhost={vhost}"),
        Mapping::Backend(b) => session_log!(
            Level::Info,
            info,
            "Selected directly: {b} For vhost={vhost}"
        ),
    }

    let connected = if no_broker {
        None
    } else {
        connect_any(shard, info, &route.candidates).await
    };
    let mut broker = connected.ok_or_else(|| {
        refuse(
            reply_code::CONNECTION_FORCED,
            format!("CONNECTION_FORCED - no broker could be reached for vhost {vhost}"),
            Level::Error,
        )
    })?;

    session_log!(
        Level::Info,
        info,
        "Starting connection for: connectionName=\"{}\" tlsEnabled={} backend={} egress={} handshake=proxied",
        hello.connection_name(),
        tls_enabled(client),
        info.backend.borrow(),
        info.egress_remote
            .get()
            .map(|a| a.to_string())
            .unwrap_or_default()
    );
    info.phase.set(Phase::BrokerHandshake);
    let egress_local = info.egress_local.get().map_or(0, |a| a.port());
    let additions = [
        (
            "amqpprox_client",
            client_endpoint(info.ingress_remote, client.is_tls()),
        ),
        (
            "amqpprox_host",
            format!("(:{listen_port}) {}:{egress_local}", shard.shared.hostname),
        ),
    ];
    let to_client = bounded(
        timeout,
        broker_handshake(&mut broker, &hello, &additions, &vhost),
    )
    .await
    .unwrap_or_else(|| {
        Err(refuse(
            reply_code::CONNECTION_FORCED,
            format!(
                "CONNECTION_FORCED - broker handshake for vhost {vhost} not completed within {} ms",
                timeout.as_millis()
            ),
            Level::Error,
        ))
    });
    let to_client = match to_client {
        Ok(bytes) => bytes,
        Err(refusal) => {
            net::shutdown(broker.tcp());
            return Err(refusal);
        }
    };
    if let Err(e) = client.write_all(&to_client).await {
        net::shutdown(broker.tcp());
        return Err(Refusal::ClientGone {
            reason: format!("write of OpenOk failed: {e}"),
            graceful: false,
        });
    }
    Ok(Established {
        broker,
        pipelined: hello.pipelined,
        heartbeat: hello.tune_ok.heartbeat,
        frame_max: hello.tune_ok.frame_max,
        sent_to_client: to_client,
    })
}

/// `host:port` of the client for `amqpprox_client`: its name once
/// `MAPHOSTNAME DNS` has resolved it (never waiting for that), else its IP;
/// then ` TLS` for a client on a `START_SECURE` listener, as the original.
pub(super) fn client_endpoint(addr: std::net::SocketAddr, tls: bool) -> String {
    let endpoint = match crate::hostnames::hostname_for(addr.ip()) {
        Some(host) => format!("{host}:{}", addr.port()),
        None => addr.to_string(),
    };
    if tls {
        endpoint + " TLS"
    } else {
        endpoint
    }
}

/// The `tlsEnabled=` word of the "Starting connection" line.
pub(super) fn tls_enabled(client: &Stream) -> &'static str {
    if client.is_tls() {
        "secured"
    } else {
        "insecure"
    }
}

/// Awaits `f`, or gives `None` after `limit`.
pub(super) async fn bounded<T>(
    limit: Duration,
    f: impl std::future::Future<Output = T>,
) -> Option<T> {
    futures_lite::future::or(async { Some(f.await) }, async {
        glommio::timer::sleep(limit).await;
        None
    })
    .await
}

async fn client_handshake(
    client: &mut Stream,
    handshake: &mut ClientHandshake,
    header: &[u8],
) -> Result<ClientHello, Refusal> {
    let mut buf = vec![0u8; HANDSHAKE_READ];
    let mut out = Vec::with_capacity(1024);
    let mut initial = Some(header);
    loop {
        let read = match initial.take() {
            Some(bytes) => {
                buf[..bytes.len()].copy_from_slice(bytes);
                Ok(bytes.len())
            }
            None => client.read(&mut buf).await,
        };
        let n = client_read(read)?;
        out.clear();
        let progress = match handshake.receive(&buf[..n], &mut out) {
            Ok(p) => p,
            Err(e) => {
                let level = if e.reply_code().is_none() {
                    Level::Warn
                } else {
                    Level::Error
                };
                return Err(Refusal::Reply {
                    bytes: e.reply(),
                    level,
                    reason: e.to_string(),
                });
            }
        };
        if !out.is_empty() {
            if let Err(e) = client.write_all(&out).await {
                return Err(Refusal::ClientGone {
                    reason: e.to_string(),
                    graceful: false,
                });
            }
        }
        match progress {
            ClientProgress::NeedMore => {}
            ClientProgress::Opened(hello) => return Ok(*hello),
            ClientProgress::ClosedByClient => {
                return Err(Refusal::ClientGone {
                    reason: "client sent Connection.Close".into(),
                    graceful: true,
                })
            }
        }
    }
}

/// Replays the handshake to the broker; gives the bytes owed to the client
/// (`OpenOk` and whatever followed).
pub(super) async fn broker_handshake(
    broker: &mut Stream,
    hello: &ClientHello,
    additions: &[(&str, String)],
    vhost: &str,
) -> Result<Vec<u8>, Refusal> {
    let mut out = Vec::with_capacity(1024);
    let mut handshake = BrokerHandshake::start(hello, additions, &mut out);
    let mut buf = vec![0u8; HANDSHAKE_READ];
    let gone = |what: String| {
        refuse(
            reply_code::CONNECTION_FORCED,
            format!("CONNECTION_FORCED - broker for vhost {vhost} {what} during the handshake"),
            Level::Error,
        )
    };
    loop {
        if !out.is_empty() {
            broker
                .write_all(&out)
                .await
                .map_err(|e| gone(format!("failed ({e})")))?;
            out.clear();
        }
        let n = match broker.read(&mut buf).await {
            Ok(0) => return Err(hung_up(handshake.hang_up(), Some(vhost))),
            Err(e) if is_hang_up(&e) => return Err(hung_up(handshake.hang_up(), Some(vhost))),
            Ok(n) => n,
            Err(e) => return Err(gone(format!("failed ({e})"))),
        };
        match handshake.receive(&buf[..n], &mut out) {
            Ok(BrokerProgress::NeedMore) => {}
            Ok(BrokerProgress::Open { to_client }) => return Ok(to_client),
            Err(BrokerHandshakeError::Closed(close)) => {
                let _ = broker.write_all(&out).await;
                let text = close.reply_text_lossy();
                return Err(Refusal::Reply {
                    bytes: broker_close_frame(&close),
                    level: Level::Warn,
                    reason: format!("broker refused: {} {text}", close.reply_code),
                });
            }
            Err(e) => {
                return Err(refuse(
                    reply_code::INTERNAL_ERROR,
                    format!("INTERNAL_ERROR - broker for vhost {vhost}: {e}"),
                    Level::Error,
                ))
            }
        }
    }
}
