//! The pass-through pump: after `OpenOk`, bytes move client→broker and
//! broker→client until either side ends (behaviour.md §4.4).
//!
//! Each direction reads into a pooled buffer and writes the same buffer to
//! the other socket: no copy between the sockets, no allocation per frame,
//! and no read until the previous chunk is written (natural backpressure: a
//! slow reader stalls its writer instead of growing memory). A
//! [`FrameScanner`] walks the 7-byte frame headers as they pass to count
//! frames, spot channel-0 `Close`/`CloseOk`, and refuse a bad frame end or an
//! oversized frame. Runs on a shard; never blocks.

use super::pool::{BufferPool, PooledBuffer};
use super::{Direction, DirectionStats};
use crate::codec::{method_id, FrameEvent, FrameScanner, ScanError, CONNECTION_CLASS};
use futures_lite::{AsyncRead, AsyncWrite, AsyncWriteExt};
use std::cell::RefCell;
use std::io;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll};

/// The largest frame accepted in pass-through, header and end octet
/// included: the original's safety net, above the 131072 offered in Tune.
pub const PASS_THROUGH_MAX_FRAME: u32 = 150_000;

/// One socket shared by the two directions of a session: each poll borrows
/// it for the duration of the call only, on one thread, so the reading and
/// the writing direction never contend.
pub struct SharedStream<S>(Rc<RefCell<S>>);

impl<S> Clone for SharedStream<S> {
    fn clone(&self) -> Self {
        SharedStream(Rc::clone(&self.0))
    }
}

impl<S> SharedStream<S> {
    pub fn new(stream: S) -> Self {
        SharedStream(Rc::new(RefCell::new(stream)))
    }

    /// Runs `f` on the socket (for shutdown and addresses).
    pub fn with<R>(&self, f: impl FnOnce(&S) -> R) -> R {
        f(&self.0.borrow())
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for SharedStream<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut *self.0.borrow_mut()).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for SharedStream<S> {
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

/// Reads the next chunk into a pooled buffer. The buffer is taken only for
/// the read attempt itself and handed back when the socket has nothing, so
/// an idle session holds none.
async fn read_pooled<S: AsyncRead + Unpin>(
    from: &mut SharedStream<S>,
    pool: &Rc<BufferPool>,
) -> io::Result<(PooledBuffer, usize)> {
    futures_lite::future::poll_fn(|cx| {
        let mut buf = pool.take();
        match Pin::new(&mut *from).poll_read(cx, &mut buf) {
            Poll::Ready(Ok(n)) => Poll::Ready(Ok((buf, n))),
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending => Poll::Pending,
        }
    })
    .await
}

/// How one direction ended.
#[derive(Debug)]
pub enum DirectionEnd {
    /// The reading side closed its socket.
    Eof,
    ReadError(io::Error),
    WriteError(io::Error),
    BadFrame(ScanError),
}

/// Whether a frame is channel 0's `Connection.Close` or `CloseOk`.
pub fn is_connection_close(ev: &FrameEvent) -> bool {
    ev.channel == 0
        && matches!(ev.method, Some((CONNECTION_CLASS, m)) if m == method_id::CLOSE || m == method_id::CLOSE_OK)
}

/// Feeds bytes that were already read (the handshake's leftovers) through
/// the scanner and writes them on.
pub async fn forward_chunk<S: AsyncWrite + Unpin>(
    bytes: &[u8],
    to: &mut SharedStream<S>,
    scanner: &mut FrameScanner,
    stats: &DirectionStats,
) -> Result<(), DirectionEnd> {
    if bytes.is_empty() {
        return Ok(());
    }
    scanner
        .scan(bytes, |ev| stats.on_frame(&ev))
        .map_err(DirectionEnd::BadFrame)?;
    to.write_all(bytes)
        .await
        .map_err(DirectionEnd::WriteError)?;
    stats.on_chunk(bytes.len());
    Ok(())
}

/// Moves bytes from `from` to `to` until `from` ends or either side fails.
pub async fn forward<R: AsyncRead + Unpin, W: AsyncWrite + Unpin>(
    mut from: SharedStream<R>,
    mut to: SharedStream<W>,
    mut scanner: FrameScanner,
    pool: Rc<BufferPool>,
    stats: Rc<DirectionStats>,
    _direction: Direction,
) -> DirectionEnd {
    loop {
        let (buf, n) = match read_pooled(&mut from, &pool).await {
            Ok((_, 0)) => return DirectionEnd::Eof,
            Ok(read) => read,
            Err(e) => return DirectionEnd::ReadError(e),
        };
        let chunk = &buf[..n];
        if let Err(e) = scanner.scan(chunk, |ev| stats.on_frame(&ev)) {
            return DirectionEnd::BadFrame(e);
        }
        if let Err(e) = to.write_all(chunk).await {
            return DirectionEnd::WriteError(e);
        }
        stats.on_chunk(n);
    }
}
