//! A session socket: plain TCP, or TLS over TCP on either leg. One enum so
//! the handshakes and the pump are written once for both; the match per
//! poll costs nothing next to the syscall behind it.
//!
//! Two TLS details live here because callers rely on plain-TCP semantics.
//! A write is reported done only once its TLS records are on the socket
//! (rustls would otherwise keep the tail of a write in its buffer until the
//! next write or flush, which the pump never issues). A peer that closes
//! TCP without TLS `close_notify` reads as a plain end of stream: AMQP
//! frames delimit themselves, and most clients close that way.
//!
//! Owns no policy: TLS configuration and handshakes live in `tls`. Runs on a
//! shard; never blocks.

use futures_lite::{AsyncRead, AsyncWrite};
use glommio::net::TcpStream;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

type ServerTls = futures_rustls::server::TlsStream<TcpStream>;
type ClientTls = futures_rustls::client::TlsStream<TcpStream>;

/// A connected session socket.
pub enum Stream {
    Plain(TcpStream),
    /// A client connection on a `START_SECURE` listener.
    TlsServer(Box<Tls<ServerTls>>),
    /// A connection to a backend flagged `TLS`.
    TlsClient(Box<Tls<ClientTls>>),
}

/// A TLS stream and the size of a write rustls has taken whose records
/// are not all on the socket yet.
pub struct Tls<S> {
    io: S,
    accepted: Option<usize>,
}

impl Stream {
    pub fn tls_server(s: ServerTls) -> Stream {
        Stream::TlsServer(Box::new(Tls {
            io: s,
            accepted: None,
        }))
    }

    pub fn tls_client(s: ClientTls) -> Stream {
        Stream::TlsClient(Box::new(Tls {
            io: s,
            accepted: None,
        }))
    }

    /// The TCP socket underneath.
    pub fn tcp(&self) -> &TcpStream {
        match self {
            Stream::Plain(s) => s,
            Stream::TlsServer(s) => s.io.get_ref().0,
            Stream::TlsClient(s) => s.io.get_ref().0,
        }
    }

    pub fn is_tls(&self) -> bool {
        !matches!(self, Stream::Plain(_))
    }

    /// `TLSv1_3 TLS13_AES_256_GCM_SHA384`, for logs; empty for plain TCP.
    pub fn tls_description(&self) -> String {
        let (version, suite) = match self {
            Stream::Plain(_) => return String::new(),
            Stream::TlsServer(s) => {
                let c = s.io.get_ref().1;
                (c.protocol_version(), c.negotiated_cipher_suite())
            }
            Stream::TlsClient(s) => {
                let c = s.io.get_ref().1;
                (c.protocol_version(), c.negotiated_cipher_suite())
            }
        };
        format!(
            "{} {}",
            version.and_then(|v| v.as_str()).unwrap_or("?"),
            suite.and_then(|s| s.suite().as_str()).unwrap_or("?")
        )
    }

    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.tcp().local_addr().map_err(io::Error::from)
    }

    pub fn peer_addr(&self) -> io::Result<SocketAddr> {
        self.tcp().peer_addr().map_err(io::Error::from)
    }

    /// The next read waits until the socket reports data instead of trying
    /// it first: for a peer that has just been asked something and cannot
    /// have answered yet (a broker sent the protocol header), it saves a
    /// `recv` that would find nothing. TLS streams read as before: rustls
    /// may already hold the bytes.
    pub fn await_reply(&mut self) {
        if let Stream::Plain(s) = self {
            s.await_reply();
        }
    }

    /// Writes a handshake message that the peer will answer. On plain TCP
    /// the bytes go through the ring, sent with the shard's other requests
    /// of this turn in one system call instead of a `send` of their own,
    /// and this returns once they are queued (`vendor/glommio/PATCHES.md`).
    /// The order with later writes and shutdowns is kept, and an error
    /// comes back from the next write. TLS streams write as before.
    pub async fn send_behind(&mut self, bytes: &[u8]) -> io::Result<()> {
        match self {
            Stream::Plain(s) => s.send_behind(bytes).await.map_err(io::Error::from),
            Stream::TlsServer(_) | Stream::TlsClient(_) => {
                futures_lite::AsyncWriteExt::write_all(self, bytes).await
            }
        }
    }
}

/// What the pump asks of a socket besides reading and writing: whether its
/// peer has closed, a way to queue a session's last bytes so that they
/// leave with its FIN, and a way to queue a write on the ring behind the
/// shard's turn (docs/sessions.md#pass-through). TLS sockets decline both:
/// their bytes are records rustls writes, and `close_notify` follows.
pub trait SessionEnd {
    /// The peer's FIN (or a hang-up or an error) has been reported: what is
    /// still queued to read is followed by the end of the stream.
    fn peer_closed(&self) -> bool;
    /// Queues `bytes` to leave with the close that follows; returns how
    /// many it took (see [`crate::net::queue_before_end`]).
    fn queue_before_end(&self, bytes: &[u8]) -> usize;
    /// Queues `bytes` on the ring, sent with the shard's other requests at
    /// the end of this turn, once the write queued before has completed:
    /// `Ready(Ok(true))` when queued, `Ready(Ok(false))` when the socket
    /// declines (the caller writes them itself), an error the queued write
    /// before met.
    fn poll_queue_behind(&mut self, cx: &mut Context<'_>, bytes: &[u8]) -> Poll<io::Result<bool>>;
    /// Ready once no write queued by [`Self::poll_queue_behind`] is still
    /// on its way, with the error it met if any.
    fn poll_sent_behind(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>>;
}

impl SessionEnd for TcpStream {
    fn peer_closed(&self) -> bool {
        TcpStream::peer_closed(self)
    }
    fn queue_before_end(&self, bytes: &[u8]) -> usize {
        crate::net::queue_before_end(self, bytes)
    }
    fn poll_queue_behind(&mut self, cx: &mut Context<'_>, bytes: &[u8]) -> Poll<io::Result<bool>> {
        ready!(self.poll_sent_behind(cx))?;
        self.queue_behind(bytes);
        Poll::Ready(Ok(true))
    }
    fn poll_sent_behind(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        TcpStream::poll_sent_behind(self, cx)
    }
}

impl SessionEnd for Stream {
    fn peer_closed(&self) -> bool {
        match self {
            Stream::Plain(s) => SessionEnd::peer_closed(s),
            Stream::TlsServer(_) | Stream::TlsClient(_) => false,
        }
    }
    fn queue_before_end(&self, bytes: &[u8]) -> usize {
        match self {
            Stream::Plain(s) => s.queue_before_end(bytes),
            Stream::TlsServer(_) | Stream::TlsClient(_) => 0,
        }
    }
    fn poll_queue_behind(&mut self, cx: &mut Context<'_>, bytes: &[u8]) -> Poll<io::Result<bool>> {
        match self {
            Stream::Plain(s) => SessionEnd::poll_queue_behind(s, cx, bytes),
            Stream::TlsServer(_) | Stream::TlsClient(_) => Poll::Ready(Ok(false)),
        }
    }
    fn poll_sent_behind(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self {
            Stream::Plain(s) => SessionEnd::poll_sent_behind(s, cx),
            Stream::TlsServer(_) | Stream::TlsClient(_) => Poll::Ready(Ok(())),
        }
    }
}

impl From<TcpStream> for Stream {
    fn from(s: TcpStream) -> Self {
        Stream::Plain(s)
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> Tls<S> {
    fn poll_read(&mut self, cx: &mut Context<'_>, buf: &mut [u8]) -> Poll<io::Result<usize>> {
        match ready!(Pin::new(&mut self.io).poll_read(cx, buf)) {
            // A TCP close without close_notify.
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => Poll::Ready(Ok(0)),
            other => Poll::Ready(other),
        }
    }

    fn poll_write(&mut self, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        // Like glommio's own sockets, a write answered Pending is polled
        // again with the same bytes: the count is kept until the records
        // are out.
        if self.accepted.is_none() {
            let n = ready!(Pin::new(&mut self.io).poll_write(cx, buf))?;
            self.accepted = Some(n);
        }
        let flushed = ready!(Pin::new(&mut self.io).poll_flush(cx));
        let n = self.accepted.take().unwrap_or(0);
        Poll::Ready(flushed.map(|()| n))
    }

    fn poll_flush(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_close(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.accepted = None;
        Pin::new(&mut self.io).poll_close(cx)
    }
}

impl AsyncRead for Stream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Stream::TlsServer(s) => s.poll_read(cx, buf),
            Stream::TlsClient(s) => s.poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Stream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Stream::TlsServer(s) => s.poll_write(cx, buf),
            Stream::TlsClient(s) => s.poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_flush(cx),
            Stream::TlsServer(s) => s.poll_flush(cx),
            Stream::TlsClient(s) => s.poll_flush(cx),
        }
    }

    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_close(cx),
            Stream::TlsServer(s) => s.poll_close(cx),
            Stream::TlsClient(s) => s.poll_close(cx),
        }
    }
}
