//! The broker side of a session whose client handshake the proxy answered
//! itself (or that was held at `Open` by a pause): hold while paused, admit
//! through the limits, route the vhost, ask the auth service, connect, replay the client's handshake to the broker and
//! hand the client the broker's `OpenOk` (docs/sessions.md). Runs on the
//! session's shard; never blocks.

use super::connect::{Stage, Unfit};
use super::refusal::{hung_up, refuse, ClientGone, Reason, Refusal};
use super::{hold_at_open, log_starting, vhost_paused, Candidates, Established, StartOkAdditions};
use crate::codec::reply_code;
use crate::config::Mapping;
use crate::handshake::{
    broker_close_frame, is_hang_up, BrokerHandshake, BrokerHandshakeError, BrokerProgress,
    ClientHello,
};
use crate::net;
use crate::routing::{self, RouteError};
use crate::session::{HandshakeKind, Phase, SessionInfo, ShardContext};
use crate::session_log;
use crate::stream::Stream;
use futures_lite::{AsyncReadExt, AsyncWriteExt};
use log::Level;
use std::rc::Rc;

/// From the vhost on: hold while paused, route, connect, replay the
/// handshake to the broker. `no_broker`: every backend already failed (in
/// a transparent attempt), so only the refusal naming the vhost is left.
pub async fn broker_side(
    shard: &Rc<ShardContext>,
    info: &Rc<SessionInfo>,
    client: &mut Stream,
    listen_port: u16,
    mut hello: ClientHello,
    no_broker: bool,
) -> Result<Established, Refusal> {
    let vhost = hello.open.vhost.clone();
    *info.vhost.borrow_mut() = vhost.clone();
    info.phase.set(Phase::Connecting);

    hold_at_open(info, vhost_paused(shard, &vhost)).await?;
    // Limits first, as in the original (a paused session is checked once
    // unpaused), then the route, then the auth service.
    super::admission::admit(shard, info, &vhost).await?;
    // The mapping in force now, after any pause.
    let snapshot = shard.config();
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
    *info.via.borrow_mut() = Some(route.via.clone());
    match &route.via {
        Mapping::Farm(f) => session_log!(Level::Info, info, "Selected farm: {f} For vhost={vhost}"),
        Mapping::Backend(b) => session_log!(
            Level::Info,
            info,
            "Selected directly: {b} For vhost={vhost}"
        ),
    }

    super::admission::authorise(shard, info, &mut hello).await?;

    // Each member in turn until one reaches OpenOk; one that closes or
    // says nothing first is skipped, since the client has not seen a byte
    // of it. A broker's own refusal (its Connection.Close) ends the search.
    let limit = shard.shared.broker_handshake_timeout;
    let mut candidates = Candidates::new(&route.candidates);
    let mut last_failure = None;
    let (broker, to_client) = loop {
        let connected = if no_broker {
            None
        } else {
            candidates.next(shard, info).await
        };
        let Some(mut broker) = connected else {
            return Err(last_failure.unwrap_or_else(|| {
                refuse(
                    reply_code::CONNECTION_FORCED,
                    format!("CONNECTION_FORCED - no broker could be reached for vhost {vhost}"),
                    Level::Error,
                )
            }));
        };
        log_starting(
            info,
            &hello.connection_name(),
            client,
            HandshakeKind::Proxied,
        );
        info.phase.set(Phase::BrokerHandshake);
        let additions = StartOkAdditions::new(shard, info, client, listen_port);
        let attempt = net::with_timeout(
            limit,
            broker_handshake(shard, &mut broker, &hello, &additions.entries(), &vhost),
        )
        .await
        .unwrap_or_else(|_| {
            Err(Attempt::Unfit(
                Unfit::Silent {
                    stage: Stage::OpenOk,
                    limit,
                },
                refuse(
                    reply_code::CONNECTION_FORCED,
                    format!(
                        "CONNECTION_FORCED - broker handshake for vhost {vhost} not completed within {} ms",
                        limit.as_millis()
                    ),
                    Level::Error,
                ),
            ))
        });
        match attempt {
            Ok(to_client) => {
                candidates.succeeded(shard, info);
                break (broker, to_client);
            }
            Err(Attempt::Refused(refusal)) => {
                net::shutdown(broker.tcp());
                return Err(refusal);
            }
            Err(Attempt::Unfit(why, refusal)) => {
                net::shutdown(broker.tcp());
                candidates.skip(shard, info, why);
                last_failure = Some(refusal);
            }
        }
    };
    if let Err(e) = client.send_behind(&to_client).await {
        net::shutdown(broker.tcp());
        return Err(ClientGone::OpenOkWriteFailed(e).into());
    }
    Ok(Established {
        broker,
        pipelined: hello.pipelined,
        heartbeat: hello.tune_ok.heartbeat,
        frame_max: hello.tune_ok.frame_max,
        sent_to_client: to_client,
    })
}

/// How one broker's handshake failed.
enum Attempt {
    /// The broker answered (its `Connection.Close`), or the proxy cannot go
    /// on: the client gets this.
    Refused(Refusal),
    /// The broker closed or failed before `OpenOk`: try the next member;
    /// the refusal stands if none is left.
    Unfit(Unfit, Refusal),
}

/// The broker closed its socket: right after the login that is its answer
/// to the login (RabbitMQ's to a wrong password), which another member of
/// the farm would give too, so the client is told at once; anywhere else
/// the broker failed and the next member is tried.
fn hang_up(handshake: &BrokerHandshake, vhost: &str, unfit: Unfit) -> Attempt {
    let hang_up = handshake.hang_up();
    let refusal = hung_up(hang_up, Some(vhost));
    if hang_up.is_probable_refused_login() {
        Attempt::Refused(refusal)
    } else {
        Attempt::Unfit(unfit, refusal)
    }
}

/// Replays the handshake to the broker; gives the bytes owed to the client
/// (`OpenOk` and whatever followed).
async fn broker_handshake(
    shard: &ShardContext,
    broker: &mut Stream,
    hello: &ClientHello,
    additions: &[(&str, &str)],
    vhost: &str,
) -> Result<Vec<u8>, Attempt> {
    let mut out = Vec::with_capacity(1024);
    let mut handshake = BrokerHandshake::start(hello, additions, &mut out);
    let mut buf = shard.handshake_buffers.take();
    let gone = |what: String, why: Unfit| {
        Attempt::Unfit(
            why,
            refuse(
                reply_code::CONNECTION_FORCED,
                format!("CONNECTION_FORCED - broker for vhost {vhost} {what} during the handshake"),
                Level::Error,
            ),
        )
    };
    let stage = Stage::OpenOk;
    loop {
        if !out.is_empty() {
            broker
                .send_behind(&out)
                .await
                .map_err(|e| gone(format!("failed ({e})"), Unfit::Failed { stage, source: e }))?;
            out.clear();
            // The broker answers what it was just sent.
            broker.await_reply();
        }
        let n = match broker.read(&mut buf).await {
            Ok(0) => return Err(hang_up(&handshake, vhost, Unfit::Closed { stage })),
            Err(e) if is_hang_up(&e) => {
                return Err(hang_up(
                    &handshake,
                    vhost,
                    Unfit::Failed { stage, source: e },
                ))
            }
            Ok(n) => n,
            Err(e) => {
                return Err(gone(
                    format!("failed ({e})"),
                    Unfit::Failed { stage, source: e },
                ))
            }
        };
        match handshake.receive(&buf[..n], &mut out) {
            Ok(BrokerProgress::NeedMore) => {}
            Ok(BrokerProgress::Open { to_client }) => return Ok(to_client),
            Err(BrokerHandshakeError::Closed(close)) => {
                let _ = broker.write_all(&out).await;
                let text = close.reply_text_lossy();
                return Err(Attempt::Refused(Refusal::Reply {
                    bytes: broker_close_frame(&close),
                    level: Level::Warn,
                    reason: Reason::BrokerRefused {
                        code: close.reply_code,
                        text,
                    },
                }));
            }
            Err(e) => {
                return Err(Attempt::Refused(refuse(
                    reply_code::INTERNAL_ERROR,
                    format!("INTERNAL_ERROR - broker for vhost {vhost}: {e}"),
                    Level::Error,
                )))
            }
        }
    }
}
