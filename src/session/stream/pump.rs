//! The established phase of a stream session: client→broker bytes pass
//! untouched (a [`StreamFrameScanner`] walks their headers for the
//! statistics and the frame boundaries operator actions wait for),
//! broker→client bytes go through the [`EgressFilter`], which passes every
//! frame as it was read except Metadata responses, rewritten to the proxy's
//! endpoints. Reads go into pooled buffers and are written from them; no
//! read until the previous chunk is written, so a slow side stalls its
//! writer instead of growing memory. Heartbeats pass end to end.
//!
//! Operator actions (docs/routing.md#operating-stream-sessions), at frame boundaries: `PAUSE` stops
//! reading the client and keeps the broker's heartbeat expectation met;
//! `DISCONNECT_GRACEFUL`, a drain and a move off a drained backend send
//! each side a Close request and give the client a moment to answer; `FORCE_DISCONNECT` and
//! `BACKEND_DISCONNECT` close both sockets (a stream client has nothing to
//! do on a connection without its broker). Runs on the session's shard;
//! never blocks.

use super::super::control::{Ending, SessionControl};
use super::super::pool::BufferPool;
use super::super::pump::{abrupt_ending, first_end, read_pooled, SharedStream};
use super::super::{Direction, DirectionStats, Disconnect, Phase, SessionInfo, ShardContext};
use super::Established;
use crate::net;
use crate::session_log;
use crate::stream::Stream;
use crate::streamproto::{
    key, response_code, AddressMap, CloseRequest, EgressFilter, StreamFrameError,
    StreamFrameScanner, HEARTBEAT_FRAME,
};
use futures_lite::AsyncWriteExt;
use log::Level;
use std::future::Future;
use std::io;
use std::pin::pin;
use std::rc::Rc;
use std::time::{Duration, Instant};

/// How long a graceful close waits for the other direction to reach a
/// frame boundary, and for the client to answer the proxy's Close.
const GRACEFUL_WAIT: Duration = Duration::from_secs(5);

/// The correlation id of the Close requests the proxy sends: it has no
/// other request outstanding on either connection.
const PROXY_CLOSE_CORRELATION: u32 = 0x7fff_fff0;

/// How one direction ended.
#[derive(Debug, thiserror::Error)]
enum End {
    #[error("connection closed")]
    Eof,
    #[error("read failed: {0}")]
    ReadError(io::Error),
    #[error("write to the other side failed: {0}")]
    WriteError(io::Error),
    #[error("bad frame: {0}")]
    BadFrame(StreamFrameError),
    /// Stopped at a frame boundary for a graceful end or a drain.
    #[error("stopped at a frame boundary to close")]
    AtBoundary,
    /// Stopped at a frame boundary for a forced or backend end.
    #[error("stopped by the operator")]
    Stopped,
}

type First = super::super::pump::First<End>;

/// Both sides and what the directions share.
struct Pump<'a> {
    client: &'a SharedStream<Stream>,
    broker: &'a SharedStream<Stream>,
    pool: &'a Rc<BufferPool>,
    control: &'a SessionControl,
    info: &'a SessionInfo,
    /// Seconds, as the client agreed (0: none).
    heartbeat: u32,
}

/// Builds the established phase of a Stream session, set up before its
/// future exists so that the future holds the two sockets, the scanners
/// and the held bytes once, and none of what they were made from, for the
/// session's whole life (as the AMQP one, `session::passthrough::run`).
/// Ends the session when it ends.
pub(super) fn run(
    shard: Rc<ShardContext>,
    info: Rc<SessionInfo>,
    client: Stream,
    established: Established,
) -> impl Future<Output = ()> {
    let Established {
        broker,
        pipelined,
        from_broker,
        tune,
        map,
    } = established;
    info.phase.set(Phase::Open);
    // No bound on passing frames: they are never held, the broker enforces
    // its own limit on the client's, and the broker's Deliver chunks may
    // exceed the agreed frame size (seen: 1052729 bytes with 1048576).
    // Only a Metadata response is held, under its own bound.
    let max_frame = u32::MAX;
    let (client, broker) = (SharedStream::new(client), SharedStream::new(broker));
    let mut scanner = StreamFrameScanner::new(max_frame);
    let mut filter = EgressFilter::new(max_frame);
    let heartbeat = tune.heartbeat;
    async move {
        let pump = Pump {
            client: &client,
            broker: &broker,
            pool: &shard.pool,
            control: &info.control,
            info: &info,
            heartbeat,
        };
        let info: &SessionInfo = &info;
        let held = async {
            pump.forward_held(&pipelined, &mut scanner).await?;
            pump.deliver_held(&from_broker, &mut filter, &map).await
        }
        .await;
        drop((pipelined, from_broker));

        let first = match held {
            Err(first) => first,
            Ok(()) => {
                let mut up = pin!(pump.ingress(&mut scanner));
                let mut down = pin!(pump.egress(&mut filter, &map));
                let mut operator = pin!(abrupt_ending(info));
                let first = first_end(operator.as_mut(), up.as_mut(), down.as_mut()).await;
                // A graceful end: the other direction finishes its frame too,
                // then each side is told.
                let other_done = match &first {
                    First::Up(End::AtBoundary) => {
                        matches!(
                            net::with_timeout(GRACEFUL_WAIT, down.as_mut()).await,
                            Ok(End::AtBoundary)
                        )
                    }
                    First::Down(End::AtBoundary) => {
                        matches!(
                            net::with_timeout(GRACEFUL_WAIT, up.as_mut()).await,
                            Ok(End::AtBoundary)
                        )
                    }
                    _ => false,
                };
                if other_done {
                    let how = info.control.ending().unwrap_or(Ending::Graceful);
                    pump.close_both(how).await;
                }
                first
            }
        };

        let cause = match &first {
            First::Operator(_) | First::Up(End::AtBoundary) | First::Down(End::AtBoundary) => {
                Disconnect::Proxy
            }
            First::Up(End::Stopped) | First::Down(End::Stopped) => Disconnect::Proxy,
            First::Up(end) => classify(info, Direction::Ingress, end),
            First::Down(end) => classify(info, Direction::Egress, end),
        };
        info.disconnect.set(cause);
        let description = match &first {
            First::Up(end) => format!("client side: {end}"),
            First::Down(end) => format!("broker side: {end}"),
            First::Operator(how) => format!("operator: {how:?}"),
        };
        let level = match (&first, cause) {
            (_, Disconnect::Graceful) | (First::Operator(_), _) => Level::Info,
            (
                First::Up(End::Eof | End::AtBoundary) | First::Down(End::Eof | End::AtBoundary),
                _,
            ) => Level::Info,
            _ => Level::Warn,
        };
        session_log!(
            level,
            info,
            "Stream session ended ({cause:?}): {description}"
        );
        if filter.rewrites.unmapped > 0 || filter.undecodable > 0 {
            session_log!(
                Level::Warn,
                info,
                "{} Metadata responses: {} broker addresses not mapped to a proxy endpoint, {} undecodable (passed unchanged)",
                filter.metadata_frames,
                filter.rewrites.unmapped,
                filter.undecodable
            );
        }
        pump.broker.with(|s| net::shutdown(s.tcp()));
        pump.client.with(|s| net::shutdown(s.tcp()));
        super::super::finish(&shard, info);
    }
}

/// A Close request from the side that started it makes the end graceful
/// (the client's) or the broker's; without one, whichever side ended first.
fn classify(info: &SessionInfo, direction: Direction, end: &End) -> Disconnect {
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
        (_, End::BadFrame(_)) => Disconnect::Proxy,
        (Direction::Ingress, End::WriteError(_)) => Disconnect::Broker,
        (Direction::Egress, End::WriteError(_)) => Disconnect::Client,
        (Direction::Ingress, _) => Disconnect::Client,
        (Direction::Egress, _) => Disconnect::Broker,
    }
}

/// How much may be read now: up to the end of the current frame when the
/// direction must stop at the next boundary.
fn read_limit(remaining: Option<u32>, must_stop: bool) -> usize {
    match (must_stop, remaining) {
        (false, _) | (true, Some(0)) => usize::MAX,
        (true, Some(n)) => usize::try_from(n).unwrap_or(usize::MAX),
        // Inside a header: a byte at a time until it is whole.
        (true, None) => 1,
    }
}

fn note_frames(stats: &DirectionStats, frames: u64, closes: u64) {
    stats.frames.set(stats.frames.get() + frames);
    if closes > 0 && stats.close_seen_at.get().is_none() {
        stats.close_seen_at.set(Some(Instant::now()));
    }
}

impl Pump<'_> {
    /// Sends the client's pipelined bytes on.
    async fn forward_held(
        &self,
        bytes: &[u8],
        scanner: &mut StreamFrameScanner,
    ) -> Result<(), First> {
        if bytes.is_empty() {
            return Ok(());
        }
        let mut closes = 0;
        let mut frames = 0;
        scanner
            .scan(bytes, |ev| {
                frames += 1;
                closes += u64::from(ev.header.key == key::CLOSE);
            })
            .map_err(|e| First::Up(End::BadFrame(e)))?;
        note_frames(&self.info.ingress, frames, closes);
        self.broker
            .handle()
            .write_all(bytes)
            .await
            .map_err(|e| First::Up(End::WriteError(e)))?;
        self.info.ingress.on_chunk(bytes.len(), Instant::now());
        Ok(())
    }

    /// Sends the broker's bytes that came with its Open response on.
    async fn deliver_held(
        &self,
        bytes: &[u8],
        filter: &mut EgressFilter,
        map: &AddressMap,
    ) -> Result<(), First> {
        if bytes.is_empty() {
            return Ok(());
        }
        self.write_filtered(bytes, filter, map)
            .await
            .map_err(First::Down)?;
        self.info.egress.on_chunk(bytes.len(), Instant::now());
        Ok(())
    }

    /// Writes `chunk` to the client through the filter.
    async fn write_filtered(
        &self,
        chunk: &[u8],
        filter: &mut EgressFilter,
        map: &AddressMap,
    ) -> Result<(), End> {
        let (frames, closes) = (filter.frames, filter.closes);
        let mut client = self.client.handle();
        let mut pos = 0;
        let result = loop {
            match filter.next(chunk, &mut pos, map) {
                Ok(Some(piece)) => {
                    if let Err(e) = client.write_all(piece).await {
                        break Err(End::WriteError(e));
                    }
                }
                Ok(None) => break Ok(()),
                Err(e) => break Err(End::BadFrame(e)),
            }
        };
        note_frames(
            &self.info.egress,
            filter.frames - frames,
            filter.closes - closes,
        );
        result
    }

    /// Client → broker.
    async fn ingress(&self, scanner: &mut StreamFrameScanner) -> End {
        let mut client = self.client.handle();
        let mut broker = self.broker.handle();
        loop {
            let generation = self.control.generation();
            let ending = self.control.ending();
            let paused = self.control.paused();
            if scanner.at_frame_boundary() {
                match ending {
                    Some(Ending::Graceful | Ending::Drain | Ending::Move) => {
                        return End::AtBoundary
                    }
                    Some(_) => return End::Stopped,
                    None if paused => {
                        if let Err(e) = self.hold_paused(generation).await {
                            return End::WriteError(e);
                        }
                        continue;
                    }
                    None => {}
                }
            }
            let limit = read_limit(scanner.remaining_in_frame(), ending.is_some() || paused);
            let read = futures_lite::future::or(
                async { Some(read_pooled(&mut client, self.pool, limit).await) },
                async {
                    self.control.changed_since(generation).await;
                    None
                },
            )
            .await;
            let (buf, n) = match read {
                None => continue,
                Some(Ok((_, 0))) => return End::Eof,
                Some(Ok(read)) => read,
                Some(Err(e)) => return End::ReadError(e),
            };
            let (mut frames, mut closes) = (0, 0);
            if let Err(e) = scanner.scan(&buf[..n], |ev| {
                frames += 1;
                closes += u64::from(ev.header.key == key::CLOSE);
            }) {
                return End::BadFrame(e);
            }
            note_frames(&self.info.ingress, frames, closes);
            let read_at = Instant::now();
            if let Err(e) = broker.write_all(&buf[..n]).await {
                return End::WriteError(e);
            }
            let stats = &self.info.ingress;
            stats.record_write(read_at.elapsed().as_nanos().try_into().unwrap_or(u64::MAX));
            stats.on_chunk(n, read_at);
        }
    }

    /// Broker → client.
    async fn egress(&self, filter: &mut EgressFilter, map: &AddressMap) -> End {
        let mut broker = self.broker.handle();
        loop {
            let generation = self.control.generation();
            let ending = self.control.ending();
            if filter.at_frame_boundary() {
                match ending {
                    Some(Ending::Graceful | Ending::Drain | Ending::Move) => {
                        return End::AtBoundary
                    }
                    Some(_) => return End::Stopped,
                    None => {}
                }
            }
            let limit = read_limit(filter.remaining_in_frame(), ending.is_some());
            let read = futures_lite::future::or(
                async { Some(read_pooled(&mut broker, self.pool, limit).await) },
                async {
                    self.control.changed_since(generation).await;
                    None
                },
            )
            .await;
            let (buf, n) = match read {
                None => continue,
                Some(Ok((_, 0))) => return End::Eof,
                Some(Ok(read)) => read,
                Some(Err(e)) => return End::ReadError(e),
            };
            let read_at = Instant::now();
            if let Err(end) = self.write_filtered(&buf[..n], filter, map).await {
                return end;
            }
            let stats = &self.info.egress;
            stats.record_write(read_at.elapsed().as_nanos().try_into().unwrap_or(u64::MAX));
            stats.on_chunk(n, read_at);
        }
    }

    /// While paused: read nothing from the client, and send the broker a
    /// heartbeat at half the agreed interval so that it does not close the
    /// connection. Returns when anything changes.
    async fn hold_paused(&self, generation: u64) -> io::Result<()> {
        if self.heartbeat == 0 {
            self.control.changed_since(generation).await;
            return Ok(());
        }
        let interval = Duration::from_millis(u64::from(self.heartbeat) * 500);
        loop {
            if net::with_timeout(interval, self.control.changed_since(generation))
                .await
                .is_ok()
            {
                return Ok(());
            }
            self.broker.handle().write_all(&HEARTBEAT_FRAME).await?;
        }
    }

    /// Both directions stand at a frame boundary: send each side a Close
    /// request, give the client a moment to answer, then the caller closes
    /// both sockets.
    async fn close_both(&self, how: Ending) {
        let reason = match how {
            Ending::Drain => "amqpprox is shutting down; reconnect",
            Ending::Move => "the broker is leaving this route; reconnect",
            _ => "closed by the amqpprox operator",
        };
        let mut out = Vec::with_capacity(64);
        CloseRequest {
            correlation_id: PROXY_CLOSE_CORRELATION,
            code: response_code::OK,
            reason: reason.into(),
        }
        .encode(&mut out);
        let _ = self.broker.handle().write_all(&out).await;
        let mut client = self.client.handle();
        if client.write_all(&out).await.is_err() {
            return;
        }
        self.client.with(|s| net::half_close(s.tcp()));
        // The client answers, then closes; what it sends is dropped.
        let drain = async {
            while let Ok((_, 1..)) = read_pooled(&mut client, self.pool, usize::MAX).await {}
        };
        let _ = net::with_timeout(GRACEFUL_WAIT, drain).await;
    }
}
