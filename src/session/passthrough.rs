//! The established phase of a session: forwards what the handshakes held back,
//! runs the [`Pump`] in both directions, watches for operator actions, and
//! closes both sockets at the end with the right cause
//! (docs/sessions.md#pass-through, docs/sessions.md#session-end,
//! docs/sessions.md#operator-actions, docs/statistics.md#removal-causes).
//!
//! Runs on the session's shard; never blocks.

use super::control::Ending;
use super::establish::Established;
use super::pump::{
    abrupt_ending, first_end, read_pooled, DirectionEnd, Pump, SharedStream, StreamRef,
    PASS_THROUGH_MAX_FRAME,
};
use super::ShardContext;
use super::{Direction, Disconnect, Phase, SessionInfo};
use crate::codec::FrameScanner;
use crate::net;
use crate::session_log;
use crate::stream::Stream;
use log::Level;
use std::future::Future;
use std::pin::pin;
use std::rc::Rc;
use std::time::Duration;

/// How long a graceful close waits for the broker's `CloseOk` once the
/// client has answered.
const GRACEFUL_BROKER_WAIT: Duration = Duration::from_secs(5);

type First = super::pump::First<DirectionEnd>;

/// Builds the established phase of a session: what it needs is set up
/// here, before the future exists, so that the future holds the pump and
/// its scanners and none of what they were made from (the handshake's
/// result and the client's socket would otherwise keep their room in it
/// for the session's whole life). Ends the session when it ends.
pub(super) fn run(
    shard: Rc<ShardContext>,
    info: Rc<SessionInfo>,
    client: Stream,
    established: Established,
) -> impl Future<Output = ()> {
    let Established {
        broker,
        pipelined,
        heartbeat,
        frame_max,
        sent_to_client,
    } = established;
    info.phase.set(Phase::Open);
    let pump = Pump::new(
        SharedStream::new(client),
        SharedStream::new(broker),
        Rc::clone(&shard.pool),
        Rc::clone(&info),
        heartbeat,
    )
    .with_shaper(info.admission.data_shaper());
    // A client that agreed a larger frame-max with the broker itself (the
    // transparent handshake) may send frames up to it.
    let max_frame = PASS_THROUGH_MAX_FRAME.max(frame_max.saturating_add(8));
    let mut ingress_scanner = FrameScanner::new(max_frame);
    let mut egress_scanner = FrameScanner::new(max_frame);
    // The broker's OpenOk (and anything after it) already went to the
    // client; walk it so the egress scanner is in step with the stream.
    let _ = egress_scanner.scan(&sent_to_client, |_| {});
    // The handshake's buffers go now, not at the end of a session that may
    // idle for days.
    drop(sent_to_client);
    // One async block, not a call of an async function with these as its
    // arguments: those would be stored twice, in the block and again in
    // the function's state, for the session's whole life.
    async move {
        let (shard, info, pump) = (&shard, &*info, &pump);
        // Boxed, as the rare waits below: only a client that pipelined
        // frames behind its Open has any, and a wait's state held inline
        // would size every idle session's for it.
        let held = if pipelined.is_empty() {
            Ok(())
        } else {
            Box::pin(pump.forward_held(&pipelined, &mut ingress_scanner)).await
        };
        drop(pipelined);
        let first = match held {
            Err(e) => First::Up(e),
            Ok(()) => {
                let mut up = pin!(pump.ingress(&mut ingress_scanner));
                let mut down = pin!(pump.egress(&mut egress_scanner));
                let mut operator = pin!(abrupt_ending(info));
                let first = first_end(operator.as_mut(), up.as_mut(), down.as_mut()).await;
                // The client answered a graceful close: let the broker
                // acknowledge ours before closing both.
                if let First::Up(DirectionEnd::CloseSentToBroker { .. }) = first {
                    let wait = net::with_timeout(GRACEFUL_BROKER_WAIT, down.as_mut());
                    let _ = Box::pin(wait).await;
                }
                first
            }
        };

        let cause = match &first {
            First::Operator(Ending::Force) => Disconnect::Proxy,
            First::Operator(_) => Disconnect::Proxy,
            First::Up(DirectionEnd::CloseSentToBroker { .. })
            | First::Down(DirectionEnd::BrokerClosed) => Disconnect::Graceful,
            First::Up(end) => classify(info, Direction::Ingress, end),
            First::Down(end) => classify(info, Direction::Egress, end),
        };
        info.disconnect.set(cause);
        let level = match (&first, cause) {
            (_, Disconnect::Graceful) | (First::Operator(_), _) => Level::Info,
            (First::Up(DirectionEnd::Eof) | First::Down(DirectionEnd::Eof), _) => Level::Info,
            _ => Level::Warn,
        };
        session_log!(
            level,
            info,
            "Session ended ({cause:?}): {}",
            EndedBy(&first)
        );

        if let First::Operator(Ending::BackendDisconnect) = first {
            // The broker side closes now; the client stays open: bytes the
            // egress side queued for the session's end must not wait for a
            // close that is not coming.
            pump.broker.with(|s| net::shutdown(s.tcp()));
            pump.client.with(|s| net::push_queued(s.tcp()));
            info.phase.set(Phase::BrokerDisconnected);
            // Boxed: rare, and inline its state would size every
            // session's for it.
            Box::pin(hold_client(shard, info, pump.client.handle())).await;
        }
        // Both sockets close as this task ends, through the ring with the
        // shard's next submission (their FINs follow what was written):
        // no `shutdown` or `close` system call of their own
        // (docs/sessions.md#pass-through).
        super::finish(shard, info);
    }
}

/// Which side or action ended the session, for its last log line:
/// formatted into the line itself, with no string of its own.
struct EndedBy<'a>(&'a First);

impl std::fmt::Display for EndedBy<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0 {
            First::Up(end) => write!(f, "client side: {end:?}"),
            First::Down(end) => write!(f, "broker side: {end:?}"),
            First::Operator(how) => write!(f, "operator: {how:?}"),
        }
    }
}

/// After `BACKEND_DISCONNECT`: the client side stays open (and the session
/// addressable) until the client closes or the operator forces it; its
/// bytes have nowhere to go and are dropped. A paused session is not read.
async fn hold_client(
    shard: &Rc<ShardContext>,
    info: &SessionInfo,
    mut client: StreamRef<'_, Stream>,
) {
    loop {
        let generation = info.control.generation();
        if matches!(info.control.ending(), Some(Ending::Force | Ending::Drain)) {
            return;
        }
        if info.control.paused() {
            info.control.changed_since(generation).await;
            continue;
        }
        let read = futures_lite::future::or(
            async { Some(read_pooled(&mut client, &shard.pool, usize::MAX).await) },
            async {
                info.control.changed_since(generation).await;
                None
            },
        )
        .await;
        match read {
            None | Some(Ok((_, 1..))) => {}
            Some(Ok((_, 0)) | Err(_)) => return,
        }
    }
}

/// An AMQP close the client started is graceful, one the broker started
/// (`rabbitmqctl close_connection`, a broker shutting down) is the broker's
/// (docs/statistics.md#removal-causes); without one, whichever side ended
/// first.
fn classify(info: &SessionInfo, direction: Direction, end: &DirectionEnd) -> Disconnect {
    match (
        info.ingress.close_seen_at.get(),
        info.egress.close_seen_at.get(),
    ) {
        (Some(client), Some(broker)) if broker < client => return Disconnect::Broker,
        (Some(_), _) => return Disconnect::Graceful,
        (None, Some(_)) => return Disconnect::Broker,
        (None, None) => {}
    }
    match (direction, end) {
        (_, DirectionEnd::BadFrame(_)) => Disconnect::Proxy,
        (Direction::Ingress, DirectionEnd::WriteError(_)) => Disconnect::Broker,
        (Direction::Egress, DirectionEnd::WriteError(_)) => Disconnect::Client,
        (Direction::Ingress, _) => Disconnect::Client,
        (Direction::Egress, _) => Disconnect::Broker,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, Instant};

    fn session() -> SessionInfo {
        SessionInfo::new(
            crate::session::SessionId(7),
            "10.0.0.1:5000".parse().unwrap(),
            "10.0.0.2:5672".parse().unwrap(),
        )
    }

    #[test]
    fn who_started_the_amqp_close_decides_the_cause() {
        let t = Instant::now();
        let s = session();
        s.egress.close_seen_at.set(Some(t));
        s.ingress
            .close_seen_at
            .set(Some(t + Duration::from_millis(1)));
        assert_eq!(
            classify(&s, Direction::Egress, &DirectionEnd::Eof),
            Disconnect::Broker
        );

        let s = session();
        s.ingress.close_seen_at.set(Some(t));
        s.egress
            .close_seen_at
            .set(Some(t + Duration::from_millis(1)));
        assert_eq!(
            classify(&s, Direction::Egress, &DirectionEnd::Eof),
            Disconnect::Graceful
        );

        let s = session();
        assert_eq!(
            classify(&s, Direction::Ingress, &DirectionEnd::Eof),
            Disconnect::Client
        );
        assert_eq!(
            classify(&s, Direction::Egress, &DirectionEnd::Eof),
            Disconnect::Broker
        );
    }

    /// An idle session holds this future, boxed, for as long as it lives:
    /// it must fit mimalloc's 1536-byte size class. A wait that only some
    /// sessions reach, held inline, or an argument kept twice by a step of
    /// the pump, pushes it into the 1792-byte class and every idle session
    /// pays 256 bytes more (docs/performance.md, "An idle session's
    /// memory").
    #[test]
    fn an_established_phase_fits_the_1536_byte_size_class() {
        let size = glommio::LocalExecutorBuilder::new(glommio::Placement::Unbound)
            .io_memory(64 * 1024)
            .spawn(|| async {
                let listener = glommio::net::TcpListener::bind("127.0.0.1:0").unwrap();
                let addr = listener.local_addr().unwrap();
                let broker = glommio::net::TcpStream::connect(addr).await.unwrap();
                let client = listener.accept().await.unwrap();
                let shared = crate::session::Shared::new(
                    crate::config::ConfigSnapshot::new(crate::config::Config::default()),
                    Duration::from_secs(1),
                    Duration::from_secs(1),
                );
                let shard = Rc::new(ShardContext::new(0, std::sync::Arc::new(shared)));
                let info = Rc::new(SessionInfo::new(crate::session::SessionId(1), addr, addr));
                let established = Established {
                    broker: Stream::Plain(broker),
                    pipelined: Vec::new(),
                    heartbeat: 0,
                    frame_max: 131_072,
                    sent_to_client: Vec::new(),
                };
                let phase = run(shard, info, Stream::Plain(client), established);
                std::mem::size_of_val(&phase)
            })
            .unwrap()
            .join()
            .unwrap();
        assert!(
            size <= 1536,
            "the established phase takes {size} bytes, past the 1536-byte class"
        );
    }
}
