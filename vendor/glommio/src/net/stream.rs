// Unless explicitly stated otherwise all files in this repository are licensed
// under the MIT/Apache-2.0 License, at your convenience
//
// This product includes software developed at Datadog (https://www.datadoghq.com/). Copyright 2020 Datadog, Inc.
//
use crate::{
    reactor::Reactor,
    sys::{self, Source, SourceType},
};
use futures_lite::ready;
use nix::sys::socket::MsgFlags;
use std::{
    cell::Cell,
    io,
    net::Shutdown,
    mem::ManuallyDrop,
    os::unix::io::{AsRawFd, FromRawFd, RawFd},
    rc::{Rc, Weak},
    task::{Context, Poll, Waker},
    time::{Duration, Instant},
};

type Result<T> = crate::Result<T, ()>;

/// Root trait for socket stream receive buffer
pub trait RxBuf {
    fn read(&mut self, buf: &mut [u8]) -> usize;
    fn peek(&self, buf: &mut [u8]) -> usize;
    fn is_empty(&self) -> bool;
    fn as_bytes(&self) -> &[u8];
    fn consume(&mut self, amt: usize);
    fn buffer_size(&self) -> usize;
    fn handle_result(&mut self, result: usize);
    fn unfilled(&mut self) -> &mut [u8];
}

#[derive(Debug, Default)]
pub struct NonBuffered;

impl RxBuf for NonBuffered {
    fn read(&mut self, _buf: &mut [u8]) -> usize {
        0
    }

    fn peek(&self, _buf: &mut [u8]) -> usize {
        0
    }

    fn is_empty(&self) -> bool {
        true
    }

    fn as_bytes(&self) -> &[u8] {
        &[]
    }

    fn consume(&mut self, _amt: usize) {}

    fn buffer_size(&self) -> usize {
        0
    }

    fn handle_result(&mut self, _result: usize) {}

    fn unfilled(&mut self) -> &mut [u8] {
        &mut []
    }
}

/// Trait for receive buffer implementations
pub trait Buffered: RxBuf {}

/// Non-shared fixed sized receive buffer allocated
/// when buffered stream is created
#[derive(Debug)]
pub struct Preallocated {
    buf: Vec<u8>,
    head: usize,
    tail: usize,
    cap: usize,
}

impl Preallocated {
    const DEFAULT_BUFFER_SIZE: usize = 8192;

    /// Creates a fixed sized receive buffer
    pub fn new(size: usize) -> Self {
        Self {
            buf: vec![0; size],
            tail: 0,
            head: 0,
            cap: size,
        }
    }
}

impl Default for Preallocated {
    fn default() -> Self {
        Self::new(Self::DEFAULT_BUFFER_SIZE)
    }
}

impl Preallocated {
    fn len(&self) -> usize {
        self.tail - self.head
    }
}

impl Buffered for Preallocated {}

impl RxBuf for Preallocated {
    fn read(&mut self, buf: &mut [u8]) -> usize {
        let sz = std::cmp::min(self.len(), buf.len());
        if sz > 0 {
            buf[..sz].copy_from_slice(&self.buf[self.head..self.head + sz]);
            self.head += sz;
        }
        sz
    }

    fn peek(&self, buf: &mut [u8]) -> usize {
        let sz = std::cmp::min(self.len(), buf.len());
        if sz > 0 {
            buf[..sz].copy_from_slice(&self.buf[self.head..self.head + sz]);
        }
        sz
    }

    fn is_empty(&self) -> bool {
        self.head >= self.tail
    }

    fn as_bytes(&self) -> &[u8] {
        &self.buf[self.head..self.tail]
    }

    fn consume(&mut self, amt: usize) {
        self.head += std::cmp::min(self.len(), amt);
    }

    fn buffer_size(&self) -> usize {
        self.cap
    }

    fn handle_result(&mut self, result: usize) {
        self.tail += result;
    }

    fn unfilled(&mut self) -> &mut [u8] {
        if self.len() == 0 {
            self.head = 0;
            self.tail = 0;
        }
        &mut self.buf[self.tail..]
    }
}

#[derive(Debug)]
struct Timeout {
    id: u64,
    timeout: Cell<Option<Duration>>,
    timer: Cell<Option<Instant>>,
}

impl Timeout {
    fn new(id: u64) -> Self {
        Self {
            id,
            timeout: Cell::new(None),
            timer: Cell::new(None),
        }
    }

    fn get(&self) -> Option<Duration> {
        self.timeout.get()
    }

    fn set(&self, dur: Option<Duration>) -> Result<()> {
        if let Some(dur) = dur.as_ref() {
            if dur.as_nanos() == 0 {
                return Err(io::Error::from_raw_os_error(libc::EINVAL).into());
            }
        }
        self.timeout.set(dur);
        Ok(())
    }

    fn maybe_set_timer(&self, reactor: &Reactor, waker: &Waker) {
        if let Some(timeout) = self.timeout.get() {
            if self.timer.get().is_none() {
                let deadline = Instant::now() + timeout;
                reactor.insert_timer(self.id, deadline, waker.clone());
                self.timer.set(Some(deadline));
            }
        }
    }

    fn cancel_timer(&self, reactor: &Reactor) {
        if self.timer.take().is_some() {
            reactor.remove_timer(self.id);
        }
    }

    fn check(&self, reactor: &Reactor) -> io::Result<()> {
        if let Some(deadline) = self.timer.get() {
            if !reactor.timer_exists(&(deadline, self.id)) {
                reactor.remove_timer(self.id);
                self.timer.take();
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "Operation timed out",
                ));
            }
        }
        Ok(())
    }
}

/// amqpprox patch: the poll events after which a read never waits for a
/// report first (the peer's FIN, a hang-up, an error).
const RX_CLOSING_EVENTS: u32 = (libc::POLLRDHUP | libc::POLLHUP | libc::POLLERR) as u32;

#[derive(Debug)]
pub(crate) struct NonBufferedStream<S> {
    reactor: Weak<Reactor>,
    // amqpprox patch: dropped by hand, and not at all when the close was
    // handed to the ring (`close_behind`).
    stream: ManuallyDrop<S>,
    source_tx: Option<Source>,
    // amqpprox patch: the read side's readiness comes from one multishot
    // poll (`source_rx`), armed the first time a read finds the socket
    // empty and kept until the stream is dropped (or the kernel ends it),
    // instead of a new poll submitted after every read. `rx_fired_seen`
    // is its completion count already acted on; `rx_ready` says a `recv`
    // may find data (the poll reported readiness since the last read that
    // emptied the socket, or nothing is known yet).
    source_rx: Option<Source>,
    rx_fired_seen: u64,
    rx_ready: bool,
    // amqpprox patch: the poll reported the peer's FIN (or a hang-up or
    // an error): from then on a read never waits for a report first.
    // Without this, a FIN that arrived behind data, both reported before
    // the read that took the data, would never be read.
    rx_closing: bool,
    // amqpprox patch: the poll reported the peer's FIN (or a hang-up) and
    // no error, and a read after that report took less than it asked for:
    // nothing but the end of the stream is left, so the next read returns
    // it without a `recv`. `rx_errored`: the poll reported an error.
    rx_drained: bool,
    rx_errored: bool,
    // amqpprox patch: a send `send_behind` queued on the ring, kept until
    // its completion has been seen. Every other write, the shutdowns and
    // the drop wait for it (or submit it) first, so bytes leave in the
    // order they were written. With it, the length it must send.
    send_behind: Option<(Source, usize)>,
    // amqpprox patch: the descriptor to close through the ring when the
    // stream is dropped, instead of a `close` of its own (`close_behind`).
    close_behind: Cell<Option<RawFd>>,
    write_timeout: Timeout,
    read_timeout: Timeout,
}

impl<S: AsRawFd> NonBufferedStream<S> {
    /// amqpprox patch: arms the read side's multishot poll if none is.
    fn arm_rx(&mut self, reactor: &Reactor) {
        if self.source_rx.is_none() {
            self.source_rx = Some(reactor.poll_read_ready_multishot(self.stream.as_raw_fd()));
            self.rx_fired_seen = 0;
        }
    }

    pub(crate) fn try_peek(&self, buf: &mut [u8]) -> Option<io::Result<usize>> {
        super::yolo_peek(self.stream.as_raw_fd(), buf)
    }

    /// amqpprox patch: whether the read side's poll has reported the peer's
    /// FIN (or a hang-up or an error) by the last read.
    pub(crate) fn peer_closed(&self) -> bool {
        self.rx_closing
    }

    /// amqpprox patch: the next read waits for the poll's report instead of
    /// trying the socket first (see `TcpStream::await_reply`). Only while
    /// no poll is armed: the poll the read then arms completes at once if
    /// data is already queued, so nothing queued is left waiting. An armed
    /// poll may already have reported what is queued, so then reads go on
    /// as before.
    pub(crate) fn await_reply(&mut self) {
        if self.source_rx.is_none() && !self.rx_closing {
            self.rx_ready = false;
        }
    }

    /// amqpprox patch: the drop hands the descriptor's close to the ring
    /// (see `TcpStream::close_behind`).
    pub(crate) fn close_behind(&self) {
        self.close_behind.set(Some(self.stream.as_raw_fd()));
    }

    /// amqpprox patch: queues `buf` to be sent by the ring with the other
    /// requests of this turn of the reactor, instead of a `send` of its own
    /// now (see `TcpStream::send_behind`). The send queued before must have
    /// been seen complete (`poll_sent`).
    pub(crate) fn send_behind(&mut self, buf: &[u8]) {
        debug_assert!(self.send_behind.is_none());
        let reactor = self.reactor.upgrade().unwrap();
        let source = reactor.queue_send(self.stream.as_raw_fd(), buf);
        self.send_behind = Some((source, buf.len()));
    }

    /// amqpprox patch: ready once the send `send_behind` queued (if any) is
    /// complete, with its error if it failed or sent less than all.
    pub(crate) fn poll_sent(&mut self, cx: &Context<'_>) -> Poll<io::Result<()>> {
        let Some((source, len)) = &self.send_behind else {
            return Poll::Ready(Ok(()));
        };
        let Some(result) = source.result() else {
            source.add_waiter_single(cx.waker());
            return Poll::Pending;
        };
        let len = *len;
        if let Some((source, _)) = self.send_behind.take() {
            // Complete: the kernel is done with the bytes, and the source
            // and its buffer go back to the reactor for the next send of
            // any stream.
            if let Some(reactor) = self.reactor.upgrade() {
                reactor.give_send_source(source);
            }
        }
        Poll::Ready(match result {
            Ok(sent) if sent == len => Ok(()),
            Ok(_) => Err(io::ErrorKind::WriteZero.into()),
            Err(e) => Err(e),
        })
    }

    pub(crate) async fn peek(&self, buf: &mut [u8]) -> io::Result<usize> {
        let source = self.reactor.upgrade().unwrap().recv(
            self.stream.as_raw_fd(),
            buf.len(),
            MsgFlags::MSG_PEEK,
        );

        let sz = source.collect_rw().await?;
        match source.extract_source_type() {
            SourceType::SockRecv(mut src) => {
                buf[0..sz].copy_from_slice(&src.take().unwrap().as_bytes()[0..sz]);
            }
            _ => unreachable!(),
        }
        Ok(sz)
    }

    pub(crate) fn poll_read(
        &mut self,
        cx: &Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        let reactor = self.reactor.upgrade().unwrap();
        let reactor = reactor.as_ref();

        // amqpprox patch: learn what the poll reported since the last look.
        if let Some(source) = &self.source_rx {
            let fired = source.fired();
            if fired != self.rx_fired_seen {
                self.rx_fired_seen = fired;
                self.rx_ready = true;
                let events = source.poll_events();
                if events & RX_CLOSING_EVENTS != 0 {
                    self.rx_closing = true;
                }
                if events & libc::POLLERR as u32 != 0 {
                    self.rx_errored = true;
                }
            }
            if let Some(result) = source.result() {
                // The poll ended: single-shot, ended by the kernel (a full
                // completion queue ends multishot requests) or refused by
                // a kernel without multishot polls. Armed again on need.
                if matches!(&result, Err(e) if e.raw_os_error() == Some(libc::EINVAL)) {
                    crate::sys::multishot_poll_refused();
                }
                self.source_rx = None;
                self.rx_ready = true;
            }
        }

        // amqpprox patch: the data before the peer's FIN was all taken.
        if self.rx_drained && !buf.is_empty() {
            self.read_timeout.cancel_timer(reactor);
            return Poll::Ready(Ok(0));
        }

        if self.rx_ready {
            // amqpprox patch: whether the FIN was reported before this read.
            let fin_before = self.rx_closing && !self.rx_errored;
            if let Some(result) = super::yolo_recv(self.stream.as_raw_fd(), buf) {
                self.read_timeout.cancel_timer(reactor);
                let result = poll_err!(result);
                // amqpprox patch: TCP queues data in order and the FIN after
                // it; a FIN reported before this read, which then got less
                // than it asked for, means the queue held nothing more.
                if fin_before && result > 0 && result < buf.len() {
                    self.rx_drained = true;
                }
                // Less than asked for: TCP gave all it had queued, so wait
                // for the poll's next report before reading again. Data that
                // arrives from now on makes the poll complete again.
                if result > 0 && result < buf.len() && !self.rx_closing {
                    self.rx_ready = false;
                    self.arm_rx(reactor);
                }
                return Poll::Ready(Ok(result));
            }
            self.rx_ready = false;
        }

        poll_err!(self.read_timeout.check(reactor));

        self.arm_rx(reactor);
        let source = self.source_rx.as_ref().unwrap();
        source.add_waiter_single(cx.waker());
        self.read_timeout.maybe_set_timer(reactor, cx.waker());
        Poll::Pending
    }

    pub(crate) fn poll_write(&mut self, cx: &Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        // amqpprox patch: bytes queued by `send_behind` go first.
        if self.send_behind.is_some() {
            ready!(self.poll_sent(cx))?;
        }
        // On the write path, we always start with calling `yolo_send`, because
        // it is very likely to success. It could be a waste if it already timed
        // out since the last `poll_write`, but it would not cost much more to
        // give it one last chance in this case.
        if let Some(result) = super::yolo_send(self.stream.as_raw_fd(), buf) {
            let reactor = self.reactor.upgrade().unwrap();
            self.write_timeout.cancel_timer(reactor.as_ref());
            self.source_tx.take();
            return Poll::Ready(result);
        }

        let reactor = self.reactor.upgrade().unwrap();
        let reactor = reactor.as_ref();
        poll_err!(self.write_timeout.check(reactor));

        let no_pending_poll = self
            .source_tx
            .as_ref()
            .map(|src| src.result().is_some())
            .unwrap_or(true);

        if no_pending_poll {
            self.source_tx = Some(reactor.poll_write_ready(self.stream.as_raw_fd()));
        }

        let source = self.source_tx.as_ref().unwrap();
        source.add_waiter_single(cx.waker());
        self.write_timeout.maybe_set_timer(reactor, cx.waker());
        Poll::Pending
    }

    pub(crate) fn poll_close(&mut self, cx: &Context<'_>) -> Poll<io::Result<()>> {
        // amqpprox patch: bytes queued by `send_behind` go before the FIN.
        ready!(self.poll_sent(cx))?;
        self.source_tx.take();
        Poll::Ready(sys::shutdown(self.stream.as_raw_fd(), Shutdown::Write))
    }

    /// io_uring has support for shutdown now, but it is not in any released
    /// kernel. Even with my "let's use latest" policy it would be crazy to
    /// mandate a kernel that doesn't even exist. So in preparation for that
    /// we'll sync-emulate this but already on an async wrapper
    pub(crate) fn poll_shutdown(
        &self,
        cx: &mut Context<'_>,
        how: Shutdown,
    ) -> Poll<io::Result<()>> {
        // amqpprox patch: bytes queued by `send_behind` go before the FIN
        // (the send's result stays for the next write to report).
        if let Some((source, _)) = &self.send_behind {
            if source.result().is_none() {
                source.add_waiter_single(cx.waker());
                return Poll::Pending;
            }
        }
        Poll::Ready(sys::shutdown(self.stream.as_raw_fd(), how))
    }
}

// amqpprox patch: a send `send_behind` queued and not yet submitted would
// be discarded with its source: it goes to the kernel first. A stream asked
// to (`close_behind`) leaves its close to the ring; otherwise the socket
// closes now, as published.
impl<S> Drop for NonBufferedStream<S> {
    fn drop(&mut self) {
        self.submit_send_behind();
        if let (Some(fd), Some(reactor)) = (self.close_behind.get(), self.reactor.upgrade()) {
            // The socket is the descriptor alone: not dropping `S` leaks
            // nothing, and the ring closes the descriptor.
            reactor.queue_close(fd);
            return;
        }
        // SAFETY: dropped once, here, and never used again.
        unsafe { ManuallyDrop::drop(&mut self.stream) }
    }
}

impl<S> NonBufferedStream<S> {
    /// amqpprox patch: a send `send_behind` queued has not completed.
    pub(crate) fn send_behind_in_flight(&self) -> bool {
        matches!(&self.send_behind, Some((source, _)) if source.result().is_none())
    }

    /// amqpprox patch: a send `send_behind` queued that the kernel may not
    /// have seen yet goes to it now, before a system call of the caller's
    /// that must come after it (a `shutdown`) or the drop (which would
    /// discard it unsubmitted).
    pub(crate) fn submit_send_behind(&self) {
        if let Some((source, _)) = &self.send_behind {
            if source.result().is_none() {
                if let Some(reactor) = self.reactor.upgrade() {
                    reactor.submit_main_ring_now();
                }
            }
        }
    }
}

#[derive(Debug)]
pub(crate) struct GlommioStream<S, B> {
    stream: NonBufferedStream<S>,
    rx_buf: B,
    rx_done: Cell<bool>,
}

impl<S> From<socket2::Socket> for GlommioStream<S, NonBuffered>
where
    S: AsRawFd + From<socket2::Socket> + Unpin,
{
    fn from(socket: socket2::Socket) -> Self {
        let reactor = crate::executor().reactor();
        let stream = NonBufferedStream {
            reactor: Rc::downgrade(&reactor),
            stream: ManuallyDrop::new(socket.into()),
            source_tx: None,
            source_rx: None,
            rx_fired_seen: 0,
            // amqpprox patch: nothing is armed until a read finds the
            // socket empty; the first read tries at once.
            rx_ready: true,
            rx_closing: false,
            rx_drained: false,
            rx_errored: false,
            send_behind: None,
            close_behind: Cell::new(None),
            write_timeout: Timeout::new(reactor.register_timer()),
            read_timeout: Timeout::new(reactor.register_timer()),
        };
        GlommioStream {
            stream,
            rx_buf: NonBuffered,
            rx_done: Cell::new(false),
        }
    }
}

impl<S: AsRawFd> AsRawFd for GlommioStream<S, NonBuffered> {
    fn as_raw_fd(&self) -> RawFd {
        self.stream.stream.as_raw_fd()
    }
}

impl<S> FromRawFd for GlommioStream<S, NonBuffered>
where
    S: AsRawFd + FromRawFd + From<socket2::Socket> + Unpin,
{
    unsafe fn from_raw_fd(fd: RawFd) -> Self {
        let socket = socket2::Socket::from_raw_fd(fd);
        GlommioStream::from(socket)
    }
}

impl<S> GlommioStream<S, NonBuffered> {
    pub(crate) fn buffered_with<B: Buffered>(self, rx_buf: B) -> GlommioStream<S, B> {
        GlommioStream {
            stream: self.stream,
            rx_buf,
            rx_done: self.rx_done,
        }
    }
}

impl<S: AsRawFd, B: RxBuf> GlommioStream<S, B> {
    /// Receives data on the socket from the remote address to which it is
    /// connected, without removing that data from the queue.
    ///
    /// On success, returns the number of bytes peeked.
    /// Successive calls return the same data. This is accomplished by passing
    /// `MSG_PEEK` as a flag to the underlying `recv` system call.
    pub(crate) async fn peek(&self, buf: &mut [u8]) -> io::Result<usize> {
        let mut pos = self.rx_buf.peek(buf);
        if pos < buf.len() && !self.rx_done.get() {
            if let Some(result) = self.stream.try_peek(&mut buf[pos..]) {
                match result {
                    Err(e) => return Err(e),
                    Ok(len) => {
                        pos += len;
                        if len == 0 {
                            self.rx_done.set(true);
                        }
                    }
                }
            }
        }
        if pos > 0 || self.rx_done.get() {
            return Ok(pos);
        }
        self.stream.peek(buf).await
    }

    pub(crate) fn poll_read(
        &mut self,
        cx: &Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        if self.rx_buf.is_empty() {
            if buf.len() >= self.rx_buf.buffer_size() {
                return self.stream.poll_read(cx, buf);
            }
            if !self.rx_done.get() {
                poll_err!(ready!(self.poll_replenish_buffer(cx)));
            }
        }
        Poll::Ready(Ok(self.rx_buf.read(buf)))
    }

    fn poll_replenish_buffer(&mut self, cx: &Context<'_>) -> Poll<io::Result<usize>> {
        let result = poll_err!(ready!(self.stream.poll_read(cx, self.rx_buf.unfilled())));
        self.rx_buf.handle_result(result);
        if result == 0 {
            self.rx_done.set(true);
        }
        Poll::Ready(Ok(result))
    }

    pub(crate) fn poll_write(&mut self, cx: &Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        self.stream.poll_write(cx, buf)
    }

    /// amqpprox patch: see `NonBufferedStream::send_behind`.
    pub(crate) fn send_behind(&mut self, buf: &[u8]) {
        self.stream.send_behind(buf)
    }

    /// amqpprox patch: see `NonBufferedStream::send_behind_in_flight`.
    pub(crate) fn send_behind_in_flight(&self) -> bool {
        self.stream.send_behind_in_flight()
    }

    /// amqpprox patch: a queued send's source is still kept (see
    /// `TcpStream::send_behind_held`).
    pub(crate) fn send_behind_held(&self) -> bool {
        self.stream.send_behind.is_some()
    }

    /// amqpprox patch: see `NonBufferedStream::poll_sent`.
    pub(crate) fn poll_sent(&mut self, cx: &Context<'_>) -> Poll<io::Result<()>> {
        self.stream.poll_sent(cx)
    }

    /// amqpprox patch: see `NonBufferedStream::submit_send_behind`.
    pub(crate) fn submit_send_behind(&self) {
        self.stream.submit_send_behind()
    }

    pub(crate) fn poll_flush(&self, _cx: &Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    pub(crate) fn poll_close(&mut self, cx: &Context<'_>) -> Poll<io::Result<()>> {
        self.stream.poll_close(cx)
    }

    pub(crate) fn poll_shutdown(
        &self,
        cx: &mut Context<'_>,
        how: Shutdown,
    ) -> Poll<io::Result<()>> {
        self.stream.poll_shutdown(cx, how)
    }

    pub(crate) fn set_write_timeout(&self, dur: Option<Duration>) -> Result<()> {
        self.stream.write_timeout.set(dur)
    }

    pub(crate) fn set_read_timeout(&self, dur: Option<Duration>) -> Result<()> {
        self.stream.read_timeout.set(dur)
    }

    pub(crate) fn write_timeout(&self) -> Option<Duration> {
        self.stream.write_timeout.get()
    }

    pub(crate) fn read_timeout(&self) -> Option<Duration> {
        self.stream.read_timeout.get()
    }

    pub(crate) fn stream(&self) -> &S {
        &self.stream.stream
    }

    /// amqpprox patch: see `NonBufferedStream::close_behind`.
    pub(crate) fn close_behind(&self)
    where
        S: AsRawFd,
    {
        self.stream.close_behind()
    }

    /// amqpprox patch: see `NonBufferedStream::peer_closed`.
    pub(crate) fn peer_closed(&self) -> bool {
        self.stream.peer_closed()
    }

    /// amqpprox patch: see `NonBufferedStream::await_reply`. Nothing is
    /// skipped while the read buffer holds bytes.
    pub(crate) fn await_reply(&mut self) {
        if self.rx_buf.is_empty() {
            self.stream.await_reply();
        }
    }
}

impl<S: AsRawFd, B: Buffered> GlommioStream<S, B> {
    pub(crate) fn poll_fill_buf(&mut self, cx: &Context<'_>) -> Poll<io::Result<&[u8]>> {
        if self.rx_buf.is_empty() {
            poll_err!(ready!(self.poll_replenish_buffer(cx)));
        }
        Poll::Ready(Ok(self.rx_buf.as_bytes()))
    }

    pub(crate) fn consume(&mut self, amt: usize) {
        self.rx_buf.consume(amt);
    }
}
