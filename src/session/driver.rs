//! Drives one session through its phases; see the module above for the
//! order. Each phase is a function with a bounded wait and a typed outcome,
//! and `run` turns outcomes into the client's `Connection.Close`, the log
//! line and the disconnect cause.
//!
//! Owns the client's side of the proxied handshake and the choice between
//! it and the transparent one (`super::transparent`); both hand the broker
//! side to `super::establish`, which never calls back here.

use super::control::Ending;
use super::establish::refusal::{client_error, client_read};
use super::establish::{
    handshake_timed_out, refuse, replay, ClientGone, Established, Reason, Refusal, HANDSHAKE_READ,
};
use super::transparent::Fallback;
use super::{Disconnect, HandshakeKind, SessionInfo, ShardContext};
use crate::codec::{decode_frame, method_id, method_ids, CONNECTION_CLASS, FRAME_METHOD};
use crate::handshake::{
    check_protocol_header, ClientHandshake, ClientHandshakeError, ClientHello, ClientProgress,
    HeaderCheck, HANDSHAKE_MAX_FRAME,
};
use crate::net;
use crate::routing;
use crate::session_log;
use crate::stream::Stream;
use crate::tls::ingress::{Incoming, ListenerKind};
use futures_lite::{AsyncReadExt, AsyncWriteExt};
use log::Level;
use std::rc::Rc;
use std::time::{Duration, Instant};

/// From accept to `OpenOk`: `Some` with the established phase to run, or
/// `None` when the session ended before (refused, or the client left), in
/// which case it is already closed and counted.
pub(super) async fn start(
    shard: Rc<ShardContext>,
    client: Incoming,
    listen_port: u16,
    kind: ListenerKind,
) -> Option<super::EstablishedPhase> {
    let (mut client, info) =
        super::admit(&shard, client, listen_port, kind, super::Protocol::Amqp).await?;
    let remote = info.ingress_remote;
    // The auth interceptor in force at accept is the session's.
    *info.admission.auth.borrow_mut() = Some(shard.auth());

    // An operator's forced disconnect ends the session in any phase.
    let establishing = futures_lite::future::or(
        establish(&shard, &info, &mut client, listen_port),
        forced(&info),
    );
    match establishing.await {
        Ok(established) => {
            // The vhost is known from here: a `TRACE vhost` may apply.
            shard.trace_on_open(&info);
            // Routed by the configuration before a change that concerns its
            // backend (a drain while it was connecting): moved at once.
            shard.move_if_misplaced(&info);
            return Some(super::boxed_in_place(|| {
                super::passthrough::run(shard, info, client, established)
            }));
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
                let _ = net::with_timeout(CLOSE_OK_WAIT, await_close_ok(&mut client)).await;
            }
            net::shutdown(client.tcp());
            // Marked as it leaves, so the statistics count it once.
            match reason {
                Reason::Limited(_) => info.limited.set(true),
                Reason::AuthDenied(_) => info.auth_denied.set(true),
                _ => {}
            }
        }
        Err(Refusal::ClientGone(reason)) => {
            session_log!(
                Level::Info,
                &info,
                "Client {remote} left during the handshake: {reason}"
            );
            info.disconnect.set(if reason.graceful() {
                Disconnect::Graceful
            } else {
                Disconnect::Client
            });
            net::shutdown(client.tcp());
        }
    }
    super::finish(&shard, &info);
    None
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
/// operator forced it (closed without a word), or the proxy is draining or
/// the broker being connected to is leaving (the client is told 320, to
/// reconnect).
async fn forced<T>(info: &SessionInfo) -> Result<T, Refusal> {
    loop {
        let generation = info.control.generation();
        match info.control.ending() {
            Some(Ending::Force) => {
                return Err(Refusal::Reply {
                    bytes: Vec::new(),
                    level: Level::Info,
                    reason: Reason::Forced,
                })
            }
            Some(how @ (Ending::Drain | Ending::Move)) => {
                let (code, text) = how.client_close();
                return Err(refuse(code, text.into(), Level::Info));
            }
            _ => {}
        }
        info.control.changed_since(generation).await;
    }
}

/// Protocol header, then either the transparent handshake (when the route
/// cannot depend on the vhost) or the proxy's own handshake and the replay.
async fn establish(
    shard: &Rc<ShardContext>,
    info: &Rc<SessionInfo>,
    client: &mut Stream,
    listen_port: u16,
) -> Result<Established, Refusal> {
    let timeout = shard.shared.handshake_timeout;
    let deadline = Instant::now() + timeout;
    let header = net::with_timeout(timeout, read_header(client))
        .await
        .unwrap_or_else(|_| {
            Err(Refusal::Reply {
                bytes: Vec::new(),
                level: Level::Warn,
                reason: Reason::NoProtocolHeader { limit: timeout },
            })
        })?;
    let mut unreachable = false;
    // Decided once per session, when its header arrives: a configuration
    // change never switches a session already past this point. A limit or
    // an auth service may refuse the session at `Open`, before any broker
    // is reached, so either makes the session proxied
    // (docs/routing.md#handshake-modes).
    if routing::vhost_independent(&shard.shared.config.load().config)
        && !shard.shared.admission_needs_vhost()
    {
        match super::transparent::establish(shard, info, client, listen_port, deadline).await {
            Ok(established) => return Ok(established),
            Err(Fallback::Refused(refusal)) => return Err(refusal),
            Err(Fallback::Proxied { no_broker }) => unreachable = no_broker,
        }
    }
    info.handshake.set(HandshakeKind::Proxied);
    let mut handshake = ClientHandshake::new();
    let left = deadline.saturating_duration_since(Instant::now());
    let hello = net::with_timeout(
        left,
        client_handshake(shard, client, &mut handshake, &header),
    )
    .await
    .unwrap_or_else(|_| Err(handshake_timed_out(timeout)))?;
    replay::broker_side(shard, info, client, listen_port, hello, unreachable).await
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
                return Err(client_error(
                    ClientHandshakeError::BadProtocolHeader,
                    Level::Warn,
                ));
            }
        }
    }
}

async fn client_handshake(
    shard: &ShardContext,
    client: &mut Stream,
    handshake: &mut ClientHandshake,
    header: &[u8],
) -> Result<ClientHello, Refusal> {
    let mut buf = shard.handshake_buffers.take();
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
                return Err(client_error(e, level));
            }
        };
        if !out.is_empty() {
            if let Err(e) = client.send_behind(&out).await {
                return Err(ClientGone::Failed(e).into());
            }
        }
        match progress {
            ClientProgress::NeedMore => {}
            ClientProgress::Opened(hello) => return Ok(*hello),
            ClientProgress::ClosedByClient => return Err(ClientGone::SentClose.into()),
        }
    }
}
