//! The transparent handshake on the wire: when the route cannot depend on the
//! vhost, the session connects to its broker as soon as the client's protocol
//! header arrives and relays the broker's handshake to the client
//! (docs/routing.md#handshake-modes; the state machine is
//! `handshake::transparent`).
//!
//! What stays as in the proxied handshake: backend selection, failover and
//! timeouts, the client properties added toward the broker, the session
//! table, and pause (a session whose vhost is paused is held at `Open`; once
//! unpaused it is replayed to a broker chosen then, as a proxied session
//! would be). When no backend answers, the session falls back to the
//! proxied handshake only to learn the vhost the refusal must name. Runs on
//! the session's shard; never blocks.

use super::establish::connect::{Stage, Unfit};
use super::establish::{
    handshake_timed_out, hung_up, log_starting, refuse, replay, vhost_paused, Candidates,
    ClientGone, Established, Reason, Refusal, StartOkAdditions,
};
use super::{HandshakeKind, Phase, SessionInfo, ShardContext};
use crate::codec::{reply_code, PROTOCOL_HEADER};
use crate::handshake::{Side, TransparentError, TransparentHandshake, TransparentProgress};
use crate::net;
use crate::routing;
use crate::stream::Stream;
use futures_lite::AsyncReadExt;
use log::Level;
use std::rc::Rc;
use std::time::{Duration, Instant};

/// Why the transparent handshake handed the session back.
pub(super) enum Fallback {
    /// Refuse the client with this.
    Refused(Refusal),
    /// Run the proxied handshake instead; `no_broker` when every backend
    /// already failed.
    Proxied { no_broker: bool },
}

impl From<Refusal> for Fallback {
    fn from(r: Refusal) -> Self {
        Fallback::Refused(r)
    }
}

/// What happened on the way to `OpenOk`.
enum Outcome {
    Open(Vec<u8>),
    /// The client's `Open` arrived while its vhost is paused.
    HeldAtOpen,
}

pub(super) async fn establish(
    shard: &Rc<ShardContext>,
    info: &Rc<SessionInfo>,
    client: &mut Stream,
    listen_port: u16,
    deadline: Instant,
) -> Result<Established, Fallback> {
    let snapshot = shard.config();
    let Ok(route) = routing::route(&snapshot, "") else {
        // The configuration changed under us: let the proxied path explain.
        return Err(Fallback::Proxied { no_broker: false });
    };
    let routing::Route { via, candidates } = route;
    *info.via.borrow_mut() = Some(via);
    // Each member in turn until one sends its Connection.Start: one that
    // closes or says nothing first is skipped, since nothing of it has
    // reached the client yet.
    let mut candidates = Candidates::new(&candidates);
    // One read buffer for the whole relay, the broker's first bytes included.
    let mut buf = shard.handshake_buffers.take();
    let (mut broker, first) = loop {
        let Some(mut broker) = candidates.next(shard, info).await else {
            return Err(Fallback::Proxied { no_broker: true });
        };
        let left = deadline.saturating_duration_since(Instant::now());
        let limit = shard.shared.broker_handshake_timeout.min(left);
        match await_start(&mut broker, &mut buf, limit).await {
            Ok(first) => break (broker, first),
            Err(why) => {
                net::shutdown(broker.tcp());
                candidates.skip(shard, info, why);
            }
        }
    };
    info.handshake.set(HandshakeKind::Transparent);
    info.phase.set(Phase::BrokerHandshake);
    let additions = StartOkAdditions::new(shard, info, client, listen_port);
    let mut handshake = TransparentHandshake::new(&additions.entries());
    let timeout = shard.shared.handshake_timeout;
    let left = deadline.saturating_duration_since(Instant::now());
    let outcome = net::with_timeout(
        left,
        relay(
            shard,
            info,
            client,
            &mut broker,
            &mut handshake,
            &mut buf,
            first,
        ),
    )
    .await
    .unwrap_or_else(|_| Err(handshake_timed_out(timeout)));
    let outcome = match outcome {
        Ok(o) => o,
        Err(refusal) => {
            net::shutdown(broker.tcp());
            return Err(refusal.into());
        }
    };
    match outcome {
        Outcome::Open(sent_to_client) => {
            candidates.succeeded(shard, info);
            let tune = handshake
                .tune_ok()
                .unwrap_or(crate::handshake::client::PROXY_TUNE);
            Ok(Established {
                broker,
                pipelined: Vec::new(),
                heartbeat: tune.heartbeat,
                frame_max: tune.frame_max,
                sent_to_client,
            })
        }
        Outcome::HeldAtOpen => {
            // The broker may give up on a connection that waits at Open
            // (RabbitMQ's handshake timeout), and the mapping may change
            // while paused: hold without it, then replay to a broker chosen
            // at unpause, as the proxied handshake does.
            net::shutdown(broker.tcp());
            let Some(hello) = handshake.take_hello() else {
                return Err(Fallback::Proxied { no_broker: false });
            };
            // Boxed: rare, and its state would otherwise enlarge every
            // transparent session's handshake.
            Ok(Box::pin(replay::broker_side(
                shard,
                info,
                client,
                listen_port,
                hello,
                false,
            ))
            .await?)
        }
    }
}

/// Sends the broker the protocol header and waits up to `limit` for its
/// first bytes (the start of its `Connection.Start`) into `buf`; returns
/// how many.
async fn await_start(broker: &mut Stream, buf: &mut [u8], limit: Duration) -> Result<usize, Unfit> {
    let stage = Stage::Start;
    let first = async {
        broker
            .send_behind(&PROTOCOL_HEADER)
            .await
            .map_err(|source| Unfit::Failed { stage, source })?;
        // A broker speaks only once it has the header.
        broker.await_reply();
        match broker.read(buf).await {
            Ok(0) => Err(Unfit::Closed { stage }),
            Ok(n) => Ok(n),
            Err(source) => Err(Unfit::Failed { stage, source }),
        }
    };
    net::with_timeout(limit, first)
        .await
        .unwrap_or(Err(Unfit::Silent { stage, limit }))
}

/// Relays the handshake between the two sockets until `OpenOk`, reading
/// into `buf`, whose first `first` bytes are the broker's, already read.
async fn relay(
    shard: &ShardContext,
    info: &SessionInfo,
    client: &mut Stream,
    broker: &mut Stream,
    handshake: &mut TransparentHandshake,
    buf: &mut [u8],
    first: usize,
) -> Result<Outcome, Refusal> {
    let mut first = Some(first);
    // Room for most handshake steps each way (a larger one grows them
    // once), rather than growing from empty a few bytes at a time.
    let (mut to_client, mut to_broker) = (Vec::with_capacity(512), Vec::with_capacity(512));
    loop {
        let side = handshake.waiting_for();
        let read = match (side, first.take()) {
            (Side::Broker, Some(n)) => Ok(n),
            (side, pending) => {
                first = pending;
                match side {
                    Side::Client => client.read(buf).await,
                    Side::Broker => broker.read(buf).await,
                }
            }
        };
        let n = match (read, side) {
            (Ok(0), Side::Client) => return Err(ClientGone::ClosedDuringRelay.into()),
            (Err(e), Side::Client) => return Err(ClientGone::FailedDuringRelay(e).into()),
            (Ok(0), Side::Broker) => return Err(hung_up(handshake.hang_up(), None)),
            (Err(e), Side::Broker) if crate::handshake::is_hang_up(&e) => {
                return Err(hung_up(handshake.hang_up(), None))
            }
            (Err(e), Side::Broker) => return Err(broker_failed(&format!("failed ({e})"))),
            (Ok(n), _) => n,
        };
        let mut progress = match handshake.receive(side, &buf[..n], &mut to_client, &mut to_broker)
        {
            Ok(p) => p,
            Err(TransparentError::Client(e)) => {
                return Err(super::establish::refusal::client_error(e, Level::Error))
            }
            Err(e @ TransparentError::Broker { .. }) => {
                return Err(refuse(
                    reply_code::INTERNAL_ERROR,
                    format!("INTERNAL_ERROR - {e}"),
                    Level::Error,
                ))
            }
        };
        if let TransparentProgress::BrokerClosed(close) = &progress {
            // The broker's own Close, byte for byte, is in `to_client`.
            return Err(Refusal::Reply {
                bytes: std::mem::take(&mut to_client),
                level: Level::Warn,
                reason: Reason::BrokerRefused {
                    code: close.reply_code,
                    text: close.reply_text_lossy(),
                },
            });
        }
        if let TransparentProgress::OpenReceived { vhost } = &mut progress {
            // Moved, not copied: nothing reads it from the progress again.
            *info.vhost.borrow_mut() = std::mem::take(vhost);
            log_starting(
                info,
                &handshake.connection_name(),
                client,
                HandshakeKind::Transparent,
            );
            let paused = vhost_paused(shard, &info.vhost.borrow());
            if paused || info.control.paused() {
                if paused {
                    info.control.set_paused(true);
                }
                return Ok(Outcome::HeldAtOpen);
            }
            // Behind whatever else this read gave the broker (the TuneOk
            // that clients send in the same segment): one write, so the
            // broker reads the two frames in one wake-up, as it would
            // from the client directly.
            handshake.release_open(&mut to_broker);
        }
        if !to_broker.is_empty() {
            broker
                .send_behind(&to_broker)
                .await
                .map_err(|e| broker_failed(&format!("failed ({e})")))?;
            to_broker.clear();
        }
        if !to_client.is_empty() && progress != TransparentProgress::Open {
            client
                .send_behind(&to_client)
                .await
                .map_err(ClientGone::RelayWriteFailed)?;
            to_client.clear();
        }
        match progress {
            TransparentProgress::NeedMore | TransparentProgress::OpenReceived { .. } => {}
            TransparentProgress::Open => {
                client
                    .send_behind(&to_client)
                    .await
                    .map_err(ClientGone::RelayWriteFailed)?;
                return Ok(Outcome::Open(to_client));
            }
            TransparentProgress::ClientClosed => return Err(ClientGone::SentClose.into()),
            TransparentProgress::BrokerClosed(_) => unreachable!("handled above"),
        }
    }
}

fn broker_failed(what: &str) -> Refusal {
    refuse(
        reply_code::CONNECTION_FORCED,
        format!("CONNECTION_FORCED - broker {what} during the handshake"),
        Level::Error,
    )
}
