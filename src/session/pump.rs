//! The pass-through pump: after `OpenOk`, bytes move client→broker (ingress)
//! and broker→client (egress) until either side ends
//! (docs/sessions.md#pass-through, docs/sessions.md#operator-actions).
//!
//! Each direction reads into a pooled buffer and writes the same buffer to
//! the other socket: no copy between the sockets, no allocation per frame,
//! and no read until the previous chunk is written (natural backpressure: a
//! slow reader stalls its writer instead of growing memory). The one
//! exception is a session's first four small chunks in a busy turn of the
//! shard: each is copied (at most 4 KiB, once per session) into a send
//! queued on the ring, the next read goes ahead, and the next write waits
//! for it, so at most one chunk per direction is on its way; the copy buys
//! a system call per chunk during a connection storm. A
//! [`FrameScanner`] walks the 7-byte frame headers as they pass to count
//! frames, spot channel-0 `Close`/`CloseOk`, and refuse a bad frame end or an
//! oversized frame. Operator actions take effect at a frame boundary: a
//! paused ingress stops reading and keeps the broker's heartbeat
//! expectations met; a graceful end runs the Close/CloseOk exchange with both
//! sides. A direction under a data-rate limit reads at most what its
//! [`DataShaper`] grants and otherwise waits on a timer without reading, so
//! the sender's TCP window fills and pushes back: nothing spins and nothing
//! is buffered beyond one read (docs/commands.md#auth-and-limit). Runs on a
//! shard; never blocks.

use super::control::{Ending, SessionControl};
use super::pool::{BufferPool, PooledBuffer};
use super::{Direction, DirectionStats, SessionInfo};
use crate::codec::{
    method_id, FrameEvent, FrameScanner, ScanError, CONNECTION_CLASS, HEARTBEAT_FRAME,
};
use crate::handshake::close_frame;
use crate::limits::{self, Allowance, DataShaper, Stamp};
use crate::stream::SessionEnd;
use futures_lite::{AsyncRead, AsyncWrite, AsyncWriteExt};
use std::cell::{Cell, RefCell};
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

/// The largest frame accepted in pass-through, header and end octet
/// included: the original's safety net, above the 131072 offered in Tune.
pub const PASS_THROUGH_MAX_FRAME: u32 = 150_000;

/// How many of a direction's first chunks may be queued on the ring behind
/// the shard's turn rather than written at once, and how large each may be:
/// the few short methods that open a session. Later chunks go out
/// directly: a steady flow wakes the shard for each one anyway, and a queued
/// send would cost it a turn of its own.
const QUEUED_FIRST_CHUNKS: u64 = 4;
const QUEUED_CHUNK_MAX: usize = 4096;

/// What ended an established session first: one of its two directions
/// (each ending with an `E`), or the operator.
pub enum First<E> {
    Up(E),
    Down(E),
    Operator(Ending),
}

/// Resolves when the operator asks for a forced or backend end (a graceful
/// end is run by the pumps themselves).
pub async fn abrupt_ending(info: &SessionInfo) -> Ending {
    loop {
        let generation = info.control.generation();
        match info.control.ending() {
            Some(how @ (Ending::Force | Ending::BackendDisconnect)) => return how,
            _ => info.control.changed_since(generation).await,
        }
    }
}

/// Runs a session's two directions and the operator's watch until one of
/// them ends. Polled in that order, the operator first, which decides what
/// is named when several end in the same wake-up. All three stay the
/// caller's, which may let a direction finish afterwards; the future this
/// returns holds only the three references.
pub fn first_end<'a, E>(
    mut operator: Pin<&'a mut impl Future<Output = Ending>>,
    mut up: Pin<&'a mut impl Future<Output = E>>,
    mut down: Pin<&'a mut impl Future<Output = E>>,
) -> impl Future<Output = First<E>> + 'a {
    futures_lite::future::poll_fn(move |cx| {
        if let Poll::Ready(how) = operator.as_mut().poll(cx) {
            return Poll::Ready(First::Operator(how));
        }
        if let Poll::Ready(end) = up.as_mut().poll(cx) {
            return Poll::Ready(First::Up(end));
        }
        if let Poll::Ready(end) = down.as_mut().poll(cx) {
            return Poll::Ready(First::Down(end));
        }
        Poll::Pending
    })
}

/// One socket shared by the two directions of a session: each poll borrows
/// it for the duration of the call only, on one thread, so the reading and
/// the writing direction never contend. Held in place by its pump; each
/// direction works through a [`StreamRef`] to it.
pub struct SharedStream<S>(RefCell<S>);

impl<S> SharedStream<S> {
    pub fn new(stream: S) -> Self {
        SharedStream(RefCell::new(stream))
    }

    /// A handle to read from or write to the socket.
    pub fn handle(&self) -> StreamRef<'_, S> {
        StreamRef(&self.0)
    }

    /// Runs `f` on the socket (for shutdown and addresses).
    pub fn with<R>(&self, f: impl FnOnce(&S) -> R) -> R {
        self.handle().with(f)
    }
}

/// A direction's handle to a [`SharedStream`].
pub struct StreamRef<'a, S>(&'a RefCell<S>);

impl<S> Clone for StreamRef<'_, S> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<S> Copy for StreamRef<'_, S> {}

impl<S> StreamRef<'_, S> {
    /// Runs `f` on the socket (for shutdown and addresses).
    pub fn with<R>(&self, f: impl FnOnce(&S) -> R) -> R {
        f(&self.0.borrow())
    }

    /// Runs `f` on the socket mutably, for the length of one poll.
    pub fn with_mut<R>(&self, f: impl FnOnce(&mut S) -> R) -> R {
        f(&mut self.0.borrow_mut())
    }
}

impl<S: SessionEnd> StreamRef<'_, S> {
    /// Waits until no write queued on the ring is on its way to the socket
    /// (its error, if it met one). A direction that stops reading waits
    /// here, so that its last bytes are out before it ends the session and
    /// the sockets are closed, just as a direct write would have been.
    pub async fn sent_behind(&self) -> io::Result<()> {
        futures_lite::future::poll_fn(|cx| self.with_mut(|s| s.poll_sent_behind(cx))).await
    }

    /// Queues `bytes` on the ring behind this turn (see
    /// [`SessionEnd::poll_queue_behind`]); false when the socket declines.
    async fn queue_behind(&self, bytes: &[u8]) -> io::Result<bool> {
        futures_lite::future::poll_fn(|cx| self.with_mut(|s| s.poll_queue_behind(cx, bytes))).await
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for StreamRef<'_, S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut *self.0.borrow_mut()).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for StreamRef<'_, S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut *self.0.borrow_mut()).poll_write(cx, buf)
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut *self.0.borrow_mut()).poll_flush(cx)
    }
    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut *self.0.borrow_mut()).poll_close(cx)
    }
}

/// Reads the next chunk (at most `limit` bytes) into a pooled buffer. The
/// buffer is taken only for the read attempt itself and handed back when
/// the socket has nothing, so an idle session holds none. Cancel-safe:
/// nothing is consumed from the socket unless the read completes.
pub async fn read_pooled<S: AsyncRead + Unpin>(
    from: &mut StreamRef<'_, S>,
    pool: &Rc<BufferPool>,
    limit: usize,
) -> io::Result<(PooledBuffer, usize)> {
    futures_lite::future::poll_fn(|cx| {
        let mut buf = pool.take();
        let len = read_len(&buf, limit);
        match Pin::new(&mut *from).poll_read(cx, &mut buf[..len]) {
            Poll::Ready(Ok(n)) => Poll::Ready(Ok((buf, n))),
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending => Poll::Pending,
        }
    })
    .await
}

/// How much of `buf` a read limited to `limit` asks for (at least a byte).
fn read_len(buf: &[u8], limit: usize) -> usize {
    buf.len().min(limit.max(1))
}

/// How one direction ended.
#[derive(Debug)]
pub enum DirectionEnd {
    /// The reading side closed its socket.
    Eof,
    ReadError(io::Error),
    WriteError(io::Error),
    BadFrame(ScanError),
    /// Stopped at a frame boundary for an operator's forced or backend end.
    Stopped,
    /// Graceful end, ingress side: the client answered (or left) and the
    /// broker has been sent `Connection.Close`.
    CloseSentToBroker {
        client_answered: bool,
    },
    /// Graceful end, egress side: the broker answered the close.
    BrokerClosed,
}

/// Whether a frame is channel 0's `Connection.Close` (an AMQP close
/// starts with it; `CloseOk` only answers one).
pub fn is_connection_close(ev: &FrameEvent) -> bool {
    connection_method(ev) == Some(method_id::CLOSE)
}

fn connection_method(ev: &FrameEvent) -> Option<u16> {
    match ev.method {
        Some((CONNECTION_CLASS, m)) if ev.channel == 0 => Some(m),
        _ => None,
    }
}

/// What both directions of one session share.
pub struct Pump<C, B> {
    pub client: SharedStream<C>,
    pub broker: SharedStream<B>,
    pub pool: Rc<BufferPool>,
    /// The session: its control flags and each direction's counters.
    pub session: Rc<SessionInfo>,
    /// Client → broker.
    up: Leg,
    /// Broker → client.
    down: Leg,
    /// The heartbeat the client agreed (seconds, 0 = none): while paused the
    /// proxy sends the broker heartbeats at half this interval.
    pub heartbeat: u16,
    /// The egress side has sent the client our `Connection.Close`; from then
    /// on it never writes to the client again.
    close_sent_to_client: Cell<bool>,
    /// The session's data limits (its vhost's and its own), if it was
    /// admitted through the limits.
    shaper: Option<DataShaper>,
}

/// What a direction's step works with, handed over as one reference: an
/// async function keeps each argument twice in its state (as the argument
/// and as its local) for as long as it waits, and a step waits for the
/// next read all the while a session idles (docs/performance.md, "An idle
/// session's memory").
struct Way<'a, 'b, R, W> {
    from: &'a mut StreamRef<'b, R>,
    to: &'a mut StreamRef<'b, W>,
    scanner: &'a mut FrameScanner,
    leg: &'a Leg,
    /// The next read's most bytes.
    limit: usize,
    /// The control flags' generation the next read watches.
    generation: u64,
}

impl<'a, 'b, R, W> Way<'a, 'b, R, W> {
    fn new(
        from: &'a mut StreamRef<'b, R>,
        to: &'a mut StreamRef<'b, W>,
        scanner: &'a mut FrameScanner,
        leg: &'a Leg,
    ) -> Self {
        Way {
            from,
            to,
            scanner,
            leg,
            limit: 0,
            generation: 0,
        }
    }
}

/// One direction's own state.
struct Leg {
    /// Whose counters it keeps (the session's `ingress` or `egress`), and
    /// so which budget its reads are charged to.
    side: Direction,
    /// The stream this leg writes is between frames (for the ingress leg:
    /// the egress side may then inject a `CloseOk` toward the broker).
    at_boundary: Cell<bool>,
}

impl Leg {
    fn new(side: Direction) -> Leg {
        Leg {
            side,
            at_boundary: Cell::new(true),
        }
    }

    /// The data budget the leg's reads are charged to.
    fn budget(&self) -> limits::Direction {
        match self.side {
            Direction::Ingress => limits::Direction::ClientToBroker,
            Direction::Egress => limits::Direction::BrokerToClient,
        }
    }
}

/// Whether a read that stops here would leave the stream mid-frame, and so
/// how much may be read before the next boundary.
fn read_limit(scanner: &FrameScanner, must_stop_at_boundary: bool) -> usize {
    if must_stop_at_boundary && !scanner.at_frame_boundary() {
        scanner.remaining_in_frame().unwrap_or(1)
    } else {
        usize::MAX
    }
}

impl<C, B> Pump<C, B>
where
    C: AsyncRead + AsyncWrite + SessionEnd + Unpin,
    B: AsyncRead + AsyncWrite + SessionEnd + Unpin,
{
    pub fn new(
        client: SharedStream<C>,
        broker: SharedStream<B>,
        pool: Rc<BufferPool>,
        session: Rc<SessionInfo>,
        heartbeat: u16,
    ) -> Self {
        Pump {
            client,
            broker,
            pool,
            session,
            up: Leg::new(Direction::Ingress),
            down: Leg::new(Direction::Egress),
            heartbeat,
            close_sent_to_client: Cell::new(false),
            shaper: None,
        }
    }

    /// The session's control flags.
    fn control(&self) -> &SessionControl {
        &self.session.control
    }

    /// The counters `leg` keeps.
    fn stats(&self, leg: &Leg) -> &DirectionStats {
        match leg.side {
            Direction::Ingress => &self.session.ingress,
            Direction::Egress => &self.session.egress,
        }
    }

    /// The same pump, obeying `shaper`'s data limits.
    pub fn with_shaper(mut self, shaper: Option<DataShaper>) -> Self {
        self.shaper = shaper;
        self
    }

    /// How much `leg` may read now (at most `limit`): waits while its data
    /// budget is spent, asking again when the shaper says or when the
    /// session's control flags change (`None`: the caller looks at them
    /// first). A limit raised or removed is seen at the next question,
    /// which is never more than a quarter second away.
    async fn shaped_limit(&self, leg: &Leg, limit: usize, generation: u64) -> Option<usize> {
        let Some(shaper) = &self.shaper else {
            return Some(limit);
        };
        loop {
            if !shaper.is_shaped(leg.budget()) {
                return Some(limit);
            }
            let now = Stamp::from_instant(Instant::now());
            match shaper.allowance(leg.budget(), now, limit) {
                Allowance::Read(n) => return Some(n),
                Allowance::Wait(wait) => {
                    let changed =
                        crate::net::with_timeout(wait, self.control().changed_since(generation));
                    if changed.await.is_ok() {
                        return None;
                    }
                }
            }
        }
    }

    /// Charges `n` bytes just read by `leg` to its budgets; logs a data
    /// rate alarm when one is due.
    fn charge(&self, leg: &Leg, n: usize, read_at: Instant) {
        let Some(shaper) = &self.shaper else {
            return;
        };
        if !shaper.is_metered(leg.budget()) {
            return;
        }
        if let Some(alarm) = shaper.charge(leg.budget(), Stamp::from_instant(read_at), n) {
            log::info!("{alarm}");
        }
    }

    /// Writes bytes that were already read (the handshake's leftovers)
    /// client→broker, keeping `scanner` in step.
    pub async fn forward_held(
        &self,
        bytes: &[u8],
        scanner: &mut FrameScanner,
    ) -> Result<(), DirectionEnd> {
        if bytes.is_empty() {
            return Ok(());
        }
        scanner
            .scan(bytes, |ev| self.stats(&self.up).on_frame(&ev))
            .map_err(DirectionEnd::BadFrame)?;
        self.broker
            .handle()
            .write_all(bytes)
            .await
            .map_err(DirectionEnd::WriteError)?;
        self.stats(&self.up).on_chunk(bytes.len(), Instant::now());
        self.up.at_boundary.set(scanner.at_frame_boundary());
        Ok(())
    }

    /// Reads the next chunk of `from` (`None` when the session's control
    /// flags changed first; a direction end when `from` ended or failed).
    /// Meanwhile a write queued on the ring toward `to` is let go as soon
    /// as it completes, so that a session that goes idle after its first
    /// chunks holds none of its buffers; its error ends the direction.
    async fn next_chunk<R, W>(
        &self,
        from: &mut StreamRef<'_, R>,
        to: &StreamRef<'_, W>,
        limit: usize,
        generation: u64,
    ) -> Result<Option<(PooledBuffer, usize)>, DirectionEnd>
    where
        R: AsyncRead + Unpin,
        W: SessionEnd,
    {
        futures_lite::future::or(
            async {
                match read_pooled(from, &self.pool, limit).await {
                    Ok(read @ (_, 1..)) => Ok(Some(read)),
                    Ok(_) => Err(DirectionEnd::Eof),
                    Err(e) => Err(DirectionEnd::ReadError(e)),
                }
            },
            futures_lite::future::or(
                async {
                    self.control().changed_since(generation).await;
                    Ok(None)
                },
                async {
                    to.sent_behind().await.map_err(DirectionEnd::WriteError)?;
                    futures_lite::future::pending().await
                },
            ),
        )
        .await
    }

    /// Client → broker. (The rare paths, closing and pausing, are boxed so
    /// that they do not size the future every established session holds;
    /// the scanner is the caller's, so that it is not held twice, as the
    /// future's argument and again as its local.)
    pub async fn ingress(&self, scanner: &mut FrameScanner) -> DirectionEnd {
        let mut client = self.client.handle();
        let mut broker = self.broker.handle();
        let mut way = Way::new(&mut client, &mut broker, scanner, &self.up);
        loop {
            way.generation = self.control().generation();
            let ending = self.control().ending();
            if way.scanner.at_frame_boundary() {
                match ending {
                    Some(Ending::Graceful | Ending::Drain | Ending::Move) => {
                        return Box::pin(self.ingress_closing(way.scanner)).await
                    }
                    Some(_) => return DirectionEnd::Stopped,
                    None if self.control().paused() => {
                        if let Err(e) = Box::pin(self.hold_paused(way.generation)).await {
                            return DirectionEnd::WriteError(e);
                        }
                        continue;
                    }
                    None => {}
                }
            }
            way.limit = read_limit(way.scanner, ending.is_some() || self.control().paused());
            if let Err(end) = self.step(&mut way).await {
                return end;
            }
        }
    }

    /// One step of a direction: reads a chunk (at most `way.limit` bytes,
    /// or nothing when the control flags change first), walks its frames
    /// and writes it on from the same buffer.
    async fn step<R, W>(&self, way: &mut Way<'_, '_, R, W>) -> Result<(), DirectionEnd>
    where
        R: AsyncRead + SessionEnd + Unpin,
        W: AsyncWrite + SessionEnd + Unpin,
    {
        let Some(limit) = self.shaped_limit(way.leg, way.limit, way.generation).await else {
            return Ok(());
        };
        let (buf, n) = match self
            .next_chunk(way.from, way.to, limit, way.generation)
            .await
        {
            Ok(None) => return Ok(()),
            Ok(Some(read)) => read,
            Err(end) => {
                // The last write may still be queued on the ring: it leaves
                // before this direction ends the session.
                way.to
                    .sent_behind()
                    .await
                    .map_err(DirectionEnd::WriteError)?;
                return Err(end);
            }
        };
        // The reading side has closed and this read took all it had left:
        // the next read ends this direction.
        let last = n < read_len(&buf, limit) && way.from.with(|s| s.peer_closed());
        self.forward_chunk(way.to, way.scanner, way.leg, &buf[..n], last)
            .await
    }

    /// The second half of a step: walks the chunk's frames and writes it
    /// on. A future of its own rather than inline in `step`: its locals
    /// live across its writes, and inline they would be kept in the state
    /// each direction of every idle session holds while it waits to read
    /// (docs/performance.md, "An idle session's memory").
    async fn forward_chunk<W>(
        &self,
        to: &mut StreamRef<'_, W>,
        scanner: &mut FrameScanner,
        leg: &Leg,
        chunk: &[u8],
        last: bool,
    ) -> Result<(), DirectionEnd>
    where
        W: AsyncWrite + SessionEnd + Unpin,
    {
        let n = chunk.len();
        let stats = self.stats(leg);
        scanner
            .scan(chunk, |ev| stats.on_frame(&ev))
            .map_err(DirectionEnd::BadFrame)?;
        leg.at_boundary.set(false);
        // One clock reading serves as the read's time and the write's start.
        let read_at = Instant::now();
        self.charge(leg, n, read_at);
        // The last bytes of the reading side: the session's end closes the
        // other socket, so they are queued to leave in one segment with
        // that FIN instead of a segment of their own.
        let queued = if last {
            to.with(|s| s.queue_before_end(chunk))
        } else {
            0
        };
        let rest = &chunk[queued..];
        // A session's first few small chunks (the AMQP methods that open
        // channels, declare and consume) go through the ring when other
        // tasks are ready in this turn: their sends then share the turn's
        // one submission instead of a system call each
        // (docs/sessions.md#pass-through). Queued writes are not timed.
        let behind = !rest.is_empty()
            && stats.packets.get() < QUEUED_FIRST_CHUNKS
            && rest.len() <= QUEUED_CHUNK_MAX
            && glommio::executor().more_tasks_ready()
            && to
                .queue_behind(rest)
                .await
                .map_err(DirectionEnd::WriteError)?;
        if !behind {
            if !rest.is_empty() {
                to.write_all(rest).await.map_err(DirectionEnd::WriteError)?;
            }
            stats.record_write(read_at.elapsed().as_nanos().try_into().unwrap_or(u64::MAX));
        }
        stats.on_chunk(n, read_at);
        leg.at_boundary.set(scanner.at_frame_boundary());
        Ok(())
    }

    /// While paused: read nothing from the client, and keep the broker from
    /// timing the connection out (docs/sessions.md#operator-actions). Returns
    /// when anything changes.
    async fn hold_paused(&self, generation: u64) -> io::Result<()> {
        let interval = Duration::from_millis(u64::from(self.heartbeat) * 500);
        loop {
            if self.heartbeat == 0 {
                self.control().changed_since(generation).await;
                return Ok(());
            }
            let woke = crate::net::with_timeout(interval, self.control().changed_since(generation))
                .await
                .is_ok();
            if woke {
                return Ok(());
            }
            self.broker.handle().write_all(&HEARTBEAT_FRAME).await?;
        }
    }

    /// Graceful end, client side: discard the client's frames until it
    /// answers our Close (or leaves), then close toward the broker.
    async fn ingress_closing(&self, scanner: &mut FrameScanner) -> DirectionEnd {
        let mut client = self.client.handle();
        let client_answered = loop {
            let (buf, n) = match read_pooled(&mut client, &self.pool, usize::MAX).await {
                Ok((_, 0)) | Err(_) => break false,
                Ok(read) => read,
            };
            let mut answer = None;
            if scanner
                .scan(&buf[..n], |ev| answer = answer.or(connection_method(&ev)))
                .is_err()
            {
                break false;
            }
            match answer {
                Some(method_id::CLOSE_OK) => break true,
                Some(method_id::CLOSE) => {
                    // The client closed instead of acknowledging: answer it,
                    // once our own Close has gone out (then the egress side
                    // no longer writes to the client).
                    if self.close_sent_to_client.get() {
                        let mut ok = Vec::with_capacity(12);
                        crate::codec::ConnectionMethod::CloseOk.encode_frame(&mut ok);
                        let _ = client.write_all(&ok).await;
                    }
                    break true;
                }
                _ => {}
            }
        };
        let _ = self
            .broker
            .handle()
            .write_all(&close_frame(200, "OK"))
            .await;
        DirectionEnd::CloseSentToBroker { client_answered }
    }

    /// Broker → client (the scanner is the caller's, as in `ingress`).
    pub async fn egress(&self, scanner: &mut FrameScanner) -> DirectionEnd {
        let mut broker = self.broker.handle();
        let mut client = self.client.handle();
        let mut way = Way::new(&mut broker, &mut client, scanner, &self.down);
        loop {
            way.generation = self.control().generation();
            let ending = self.control().ending();
            if way.scanner.at_frame_boundary() {
                match ending {
                    Some(how @ (Ending::Graceful | Ending::Drain | Ending::Move)) => {
                        return Box::pin(self.egress_closing(way.scanner, how)).await
                    }
                    Some(_) => return DirectionEnd::Stopped,
                    None => {}
                }
            }
            way.limit = read_limit(way.scanner, ending.is_some());
            if let Err(end) = self.step(&mut way).await {
                return end;
            }
        }
    }

    /// Graceful end, broker side: tell the client (200 OK, or 320 when the
    /// proxy drains or moves the session off its broker), then discard the
    /// broker's frames until it acknowledges our Close (or closes itself).
    async fn egress_closing(&self, scanner: &mut FrameScanner, how: Ending) -> DirectionEnd {
        let mut client = self.client.handle();
        let (code, text) = how.client_close();
        if let Err(e) = client.write_all(&close_frame(code, text)).await {
            return DirectionEnd::WriteError(e);
        }
        self.close_sent_to_client.set(true);
        let mut broker = self.broker.handle();
        loop {
            let (buf, n) = match read_pooled(&mut broker, &self.pool, usize::MAX).await {
                Ok((_, 0)) => return DirectionEnd::Eof,
                Ok(read) => read,
                Err(e) => return DirectionEnd::ReadError(e),
            };
            let mut answer = None;
            if let Err(e) = scanner.scan(&buf[..n], |ev| answer = answer.or(connection_method(&ev)))
            {
                return DirectionEnd::BadFrame(e);
            }
            match answer {
                Some(method_id::CLOSE_OK) => return DirectionEnd::BrokerClosed,
                Some(method_id::CLOSE) => {
                    if self.up.at_boundary.get() {
                        let mut ok = Vec::with_capacity(12);
                        crate::codec::ConnectionMethod::CloseOk.encode_frame(&mut ok);
                        let _ = broker.write_all(&ok).await;
                    }
                    return DirectionEnd::BrokerClosed;
                }
                _ => {}
            }
        }
    }
}
