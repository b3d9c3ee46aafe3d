//! A RabbitMQ Stream session (a `LISTEN START_STREAM` listener; see
//! docs/routing.md#rabbitmq-streams): one client connection and one
//! broker connection to a node's stream port, driven from accept to close.
//!
//! accept (PROXY header, TLS) → the proxy answers the client's handshake
//! up to Open (bounded by `--handshakeTimeoutMs`; PLAIN captured) → hold
//! while the session or vhost is paused → route the vhost through the same
//! mappings and farms as AMQP (a node's own listener only to that node) →
//! connect to the backend's stream port with failover → replay the
//! handshake (bounded by the broker handshake timeout) → the client gets
//! the broker's Open response with its address rewritten ([`locality`]) →
//! [`pump`] until either side ends.
//!
//! Every refusal after the client's Open is its Open response with a
//! protocol code (the broker's own for a wrong password or an unknown
//! vhost; `VIRTUAL_HOST_ACCESS_FAILURE` for a vhost the proxy cannot route;
//! `STREAM_NOT_AVAILABLE` when no broker of the route can be reached), then
//! a close without reset. Runs on its shard only; never blocks; never logs
//! credentials.

mod locality;
mod pump;

use super::control::Ending;
use super::establish::connect::{Stage, Unfit};
use super::establish::{
    hold_at_open, log_starting, vhost_paused, Candidates, StartOkAdditions, HANDSHAKE_READ,
};
use super::{Disconnect, HandshakeKind, Phase, Protocol, SessionInfo, ShardContext};
use crate::config::Backend;
use crate::net;
use crate::routing::{self, RouteError};
use crate::session_log;
use crate::stream::Stream;
use crate::streamproto::command::{property, ADVERTISED_HOST, ADVERTISED_PORT};
use crate::streamproto::rewrite::rewrite_open;
use crate::streamproto::server::ServerConfig;
use crate::streamproto::{
    response_code, AddressMap, BrokerReplay, BrokerReplayError, ClientHello, Endpoint,
    OpenResponse, ReplayProgress, ServerHandshake, ServerHandshakeError, ServerProgress, Tune,
};
use crate::tls::ingress::{Incoming, ListenerKind};
use futures_lite::{AsyncReadExt, AsyncWriteExt};
use log::Level;
use std::io;
use std::rc::Rc;
use std::time::Duration;

/// How long a refused client may take to close after its last frame.
const REFUSED_CLOSE_WAIT: Duration = Duration::from_secs(2);

/// Why a stream session ended before pass-through.
#[derive(Debug, thiserror::Error)]
pub enum StreamReason {
    #[error("handshake: {0}")]
    Handshake(ServerHandshakeError),
    #[error("handshake not completed within {} ms", .limit.as_millis())]
    HandshakeTimeout { limit: Duration },
    #[error("no route for vhost {vhost}: {source}")]
    NoRoute { vhost: String, source: RouteError },
    #[error("this listener's node '{node}' does not serve vhost {vhost}")]
    NotThisNode { node: String, vhost: String },
    #[error("broker refused: {0}")]
    Broker(BrokerReplayError),
    #[error("no broker could be reached for vhost {vhost}")]
    NoBroker { vhost: String },
    #[error("closed by the operator while paused at Open")]
    ClosedWhilePaused,
    #[error("force disconnected by the operator")]
    Forced,
    #[error("the proxy is draining")]
    Draining,
}

/// How a stream session ended before pass-through.
#[derive(Debug, thiserror::Error)]
pub enum StreamRefusal {
    /// Send `bytes` (maybe none), log `reason` at `level`, then close.
    #[error("{reason}")]
    Reply {
        bytes: Vec<u8>,
        level: Level,
        reason: StreamReason,
    },
    /// The client closed or went away.
    #[error("client left during the handshake: {0}")]
    ClientGone(ClientLeft),
}

#[derive(Debug, thiserror::Error)]
pub enum ClientLeft {
    #[error("connection closed")]
    Closed,
    #[error("it sent Close")]
    SentClose,
    #[error("{0}")]
    Failed(io::Error),
}

/// The refusal of a client waiting for its Open response: that response
/// with `code`.
fn refuse_open(
    hello: &ClientHello,
    code: u16,
    level: Level,
    reason: StreamReason,
) -> StreamRefusal {
    let mut bytes = Vec::with_capacity(32);
    // An error response still carries an (empty) properties array: strict
    // clients cannot decode one without it.
    hello.encode_open_response(code, Vec::new(), &mut bytes);
    StreamRefusal::Reply {
        bytes,
        level,
        reason,
    }
}

/// A session whose broker accepted Open.
pub struct Established {
    pub broker: Stream,
    /// Client bytes that followed its Open, still to go to the broker.
    pub pipelined: Vec<u8>,
    /// Broker bytes that followed its Open response, still to go to the
    /// client (through the Metadata rewrite).
    pub from_broker: Vec<u8>,
    pub tune: Tune,
    /// Broker addresses to proxy endpoints, for Metadata responses.
    pub map: AddressMap,
}

/// From accept to the broker's Open response: `Some` with the established
/// phase to run, or `None` when the session ended before (and is already
/// closed and counted).
pub(super) async fn start(
    shard: Rc<ShardContext>,
    client: Incoming,
    listen_port: u16,
    kind: ListenerKind,
) -> Option<super::EstablishedPhase> {
    let (mut client, info) =
        super::admit(&shard, client, listen_port, kind, Protocol::Stream).await?;
    let remote = info.ingress_remote;

    // Inline: this phase's whole state is boxed apart and freed once the
    // session is established.
    let establishing = futures_lite::future::or(
        establish(&shard, &info, &mut client, listen_port),
        forced(&info),
    );
    match establishing.await {
        Ok(established) => {
            // A routing change made while it connected may already have
            // moved its backend out of its route.
            shard.move_if_misplaced(&info);
            return Some(super::boxed_in_place(|| {
                pump::run(shard, info, client, established)
            }));
        }
        Err(StreamRefusal::Reply {
            bytes,
            level,
            reason,
        }) => {
            session_log!(level, &info, "Closing stream client {remote}: {reason}");
            info.disconnect.set(Disconnect::Proxy);
            if !bytes.is_empty() && client.write_all(&bytes).await.is_ok() {
                close_after_reply(&mut client).await;
            }
            net::shutdown(client.tcp());
        }
        Err(StreamRefusal::ClientGone(why)) => {
            session_log!(
                Level::Info,
                &info,
                "Stream client {remote} left during the handshake: {why}"
            );
            info.disconnect
                .set(if matches!(why, ClientLeft::SentClose) {
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

/// Ends a connection whose last frame was just written, without a reset:
/// closing a socket with unread input (a heartbeat the client sent
/// meanwhile) resets it, and the client may then lose the frame it has not
/// read yet. So: FIN first, then read until the client closes (bounded).
async fn close_after_reply(client: &mut Stream) {
    net::half_close(client.tcp());
    let mut sink = [0u8; 512];
    let drain = async { while matches!(client.read(&mut sink).await, Ok(n) if n > 0) {} };
    let _ = net::with_timeout(REFUSED_CLOSE_WAIT, drain).await;
}

/// Resolves when the operator ends the session before it is established.
async fn forced<T>(info: &SessionInfo) -> Result<T, StreamRefusal> {
    loop {
        let generation = info.control.generation();
        match info.control.ending() {
            Some(Ending::Force) => {
                return Err(StreamRefusal::Reply {
                    bytes: Vec::new(),
                    level: Level::Info,
                    reason: StreamReason::Forced,
                })
            }
            Some(Ending::Drain) => {
                return Err(StreamRefusal::Reply {
                    bytes: Vec::new(),
                    level: Level::Info,
                    reason: StreamReason::Draining,
                })
            }
            _ => {}
        }
        info.control.changed_since(generation).await;
    }
}

/// The client's handshake, the route, the broker's.
async fn establish(
    shard: &Rc<ShardContext>,
    info: &Rc<SessionInfo>,
    client: &mut Stream,
    listen_port: u16,
) -> Result<Established, StreamRefusal> {
    let limit = shard.shared.handshake_timeout;
    let hello = net::with_timeout(limit, client_handshake(client))
        .await
        .unwrap_or_else(|_| {
            Err(StreamRefusal::Reply {
                bytes: Vec::new(),
                level: Level::Warn,
                reason: StreamReason::HandshakeTimeout { limit },
            })
        })?;
    let vhost = hello.open.vhost.clone();
    *info.vhost.borrow_mut() = vhost.clone();
    info.phase.set(Phase::Connecting);

    if hold_at_open(info, vhost_paused(shard, &vhost))
        .await
        .is_err()
    {
        return Err(refuse_open(
            &hello,
            response_code::VIRTUAL_HOST_ACCESS_FAILURE,
            Level::Info,
            StreamReason::ClosedWhilePaused,
        ));
    }
    // The configuration in force now, after any pause.
    let snapshot = shard.config();
    let config = &snapshot.config;
    let route = routing::route(&snapshot, &vhost).map_err(|source| {
        refuse_open(
            &hello,
            response_code::VIRTUAL_HOST_ACCESS_FAILURE,
            Level::Warn,
            StreamReason::NoRoute {
                vhost: vhost.clone(),
                source,
            },
        )
    })?;
    // Sessions reach a node's stream port, not its AMQP one.
    let mut members: Vec<Backend> = route
        .candidates
        .iter()
        .map(|b| Backend {
            port: b.stream_port,
            ..(*b).clone()
        })
        .collect();
    let node = config
        .listeners
        .get(&listen_port)
        .and_then(|l| l.stream.as_ref())
        .and_then(|s| s.backend.clone());
    if let Some(node) = node {
        // A node's own endpoint: the client followed an address the proxy
        // gave for this node, so only this node will do.
        members.retain(|b| b.name == node);
        if members.is_empty() {
            return Err(refuse_open(
                &hello,
                response_code::VIRTUAL_HOST_ACCESS_FAILURE,
                Level::Warn,
                StreamReason::NotThisNode { node, vhost },
            ));
        }
    }
    session_log!(
        Level::Info,
        info,
        "Selected {:?} for stream vhost={vhost}",
        route.via
    );
    // What decides whether a routing change moves the session later.
    *info.via.borrow_mut() = Some(route.via.clone());

    let limit = shard.shared.broker_handshake_timeout;
    let candidates: Vec<&Backend> = members.iter().collect();
    let mut candidates_left = Candidates::new(&candidates);
    let (broker, opened) = loop {
        let Some(mut broker) = candidates_left.next(shard, info).await else {
            return Err(refuse_open(
                &hello,
                response_code::STREAM_NOT_AVAILABLE,
                Level::Error,
                StreamReason::NoBroker { vhost },
            ));
        };
        log_starting(
            info,
            hello.connection_name(),
            client,
            HandshakeKind::Proxied,
        );
        info.phase.set(Phase::BrokerHandshake);
        let additions = StartOkAdditions::new(shard, info, client, listen_port);
        let attempt = net::with_timeout(limit, replay(&mut broker, &hello, &additions.entries()))
            .await
            .unwrap_or(Err(Attempt::Unfit(Unfit::Silent {
                stage: Stage::StreamOpen,
                limit,
            })));
        match attempt {
            Ok(opened) => {
                candidates_left.succeeded(shard, info);
                break (broker, opened);
            }
            Err(Attempt::Refused(e)) => {
                net::shutdown(broker.tcp());
                let level = match e {
                    BrokerReplayError::Refused { .. } | BrokerReplayError::Closed { .. } => {
                        Level::Warn
                    }
                    _ => Level::Error,
                };
                return Err(refuse_open(
                    &hello,
                    e.client_code(),
                    level,
                    StreamReason::Broker(e),
                ));
            }
            Err(Attempt::Unfit(why)) => {
                net::shutdown(broker.tcp());
                candidates_left.skip(shard, info, why);
            }
        }
    };
    let Opened {
        mut response,
        tune,
        from_broker,
    } = opened;

    let mut map = locality::address_map(config, &shard.shared.hostname);
    let advertised = property(&response.properties, ADVERTISED_HOST)
        .zip(property(&response.properties, ADVERTISED_PORT).and_then(|p| p.parse::<u16>().ok()))
        .map(|(h, p)| Endpoint::new(h, p));
    if let Some(advertised) = advertised {
        if map.lookup(&advertised.host, advertised.port).is_none() {
            let backend = info.backend.borrow().clone();
            if let Some(listener) = locality::node_listener(config, &backend) {
                // The node advertises a name it was not declared by.
                locality::learn(advertised.clone(), &backend);
                map.insert(
                    advertised,
                    locality::listener_endpoint(listener, &shard.shared.hostname),
                );
            } else {
                // No listener stands for this node: the one the client
                // used does.
                map.insert(
                    advertised,
                    locality::entry_endpoint(
                        config,
                        &shard.shared.hostname,
                        listen_port,
                        info.ingress_local,
                    ),
                );
            }
        }
    }
    let count = rewrite_open(&mut response, &map);
    if count.unmapped > 0 {
        session_log!(
            Level::Warn,
            info,
            "The broker's advertised address could not be mapped to a proxy endpoint"
        );
    }
    let mut out = Vec::with_capacity(128);
    hello.encode_open_response(response_code::OK, response.properties, &mut out);
    if let Err(e) = client.send_behind(&out).await {
        net::shutdown(broker.tcp());
        return Err(StreamRefusal::ClientGone(ClientLeft::Failed(e)));
    }
    Ok(Established {
        broker,
        pipelined: hello.pipelined,
        from_broker,
        tune,
        map,
    })
}

/// The proxy's side of the client's handshake, up to its Open.
async fn client_handshake(client: &mut Stream) -> Result<ClientHello, StreamRefusal> {
    let mut handshake = ServerHandshake::new(ServerConfig::default());
    let mut buf = vec![0u8; HANDSHAKE_READ];
    let mut out = Vec::with_capacity(512);
    loop {
        let n = match client.read(&mut buf).await {
            Ok(0) => return Err(StreamRefusal::ClientGone(ClientLeft::Closed)),
            Ok(n) => n,
            Err(e) => return Err(StreamRefusal::ClientGone(ClientLeft::Failed(e))),
        };
        out.clear();
        let progress = handshake.receive(&buf[..n], &mut out);
        if !out.is_empty() {
            if let Err(e) = client.send_behind(&out).await {
                return Err(StreamRefusal::ClientGone(ClientLeft::Failed(e)));
            }
        }
        match progress {
            Ok(ServerProgress::NeedMore) => {}
            Ok(ServerProgress::Opened(hello)) => return Ok(*hello),
            Ok(ServerProgress::ClosedByClient) => {
                return Err(StreamRefusal::ClientGone(ClientLeft::SentClose))
            }
            Err(e) => {
                return Err(StreamRefusal::Reply {
                    bytes: e.reply(),
                    level: Level::Warn,
                    reason: StreamReason::Handshake(e),
                })
            }
        }
    }
}

/// How one broker's handshake failed.
enum Attempt {
    /// The broker answered with a refusal, or broke the protocol: the
    /// client gets its code; no other broker is tried.
    Refused(BrokerReplayError),
    /// The broker closed or failed before its Open response: try the next.
    Unfit(Unfit),
}

/// What a broker that accepted Open said.
struct Opened {
    response: OpenResponse,
    tune: Tune,
    /// Its bytes after the Open response, owed to the client.
    from_broker: Vec<u8>,
}

/// Replays the client's handshake to one broker, up to its Open response.
async fn replay(
    broker: &mut Stream,
    hello: &ClientHello,
    additions: &[(&str, &str)],
) -> Result<Opened, Attempt> {
    let stage = Stage::StreamOpen;
    let mut out = Vec::with_capacity(512);
    let mut replay = BrokerReplay::start(hello, additions, &mut out);
    let mut buf = vec![0u8; HANDSHAKE_READ];
    loop {
        if !out.is_empty() {
            broker
                .send_behind(&out)
                .await
                .map_err(|source| Attempt::Unfit(Unfit::Failed { stage, source }))?;
            out.clear();
            // The broker answers what it was just sent.
            broker.await_reply();
        }
        let n = match broker.read(&mut buf).await {
            Ok(0) => return Err(Attempt::Unfit(Unfit::Closed { stage })),
            Ok(n) => n,
            Err(source) => return Err(Attempt::Unfit(Unfit::Failed { stage, source })),
        };
        match replay.receive(&buf[..n], &mut out) {
            Ok(ReplayProgress::NeedMore) => {}
            Ok(ReplayProgress::Open {
                response,
                tune,
                from_broker,
            }) => {
                // What the replay still owes the broker (nothing, normally).
                if !out.is_empty() {
                    let _ = broker.write_all(&out).await;
                }
                return Ok(Opened {
                    response,
                    tune,
                    from_broker,
                });
            }
            Err(e) => return Err(Attempt::Refused(e)),
        }
    }
}
