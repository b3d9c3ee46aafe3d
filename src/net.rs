//! Socket plumbing shared by listeners and sessions: SO_REUSEPORT listeners
//! made with socket2, TCP_NODELAY, keepalive and the window clamp on every
//! session socket (set once on a listener, inherited by what it accepts; on
//! each broker socket by the ring, in its connect's submission),
//! name resolution off the shard, connects bounded by a timeout, and the one
//! timeout race ([`with_timeout`]) every bounded step uses.
//!
//! Runs on a shard; never blocks it (name lookups go to glommio's blocking
//! pool, connects go through io_uring with a linked timeout).

use glommio::net::{SocketOption, TcpListener, TcpStream};
use socket2::{Domain, Protocol, SockRef, Socket, Type};
use std::cell::RefCell;
use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, IntoRawFd, RawFd};
use std::time::{Duration, Instant};

/// Opens one shard's listener on `addr`. Every shard binds the same port with
/// SO_REUSEPORT, so the kernel spreads new connections across shards.
///
/// The listener carries the session socket options ([`tune_listener`]), so
/// the sockets it accepts need no `setsockopt` of their own.
///
/// Returns the listener's raw descriptor beside it, because glommio's listener
/// does not expose it and [`stop_listening`] needs it.
pub fn bind_listener(
    addr: SocketAddr,
    sockets: SessionSockets,
) -> io::Result<(TcpListener, RawFd)> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    socket.set_reuse_address(true)?;
    socket.set_reuse_port(true)?;
    tune_listener(&socket, sockets)?;
    if addr.is_ipv6() {
        // `[::]` serves IPv4 too unless the operator asked for v6 only.
        socket.set_only_v6(false)?;
    }
    socket.bind(&addr.into())?;
    socket.listen(1024)?;
    let fd = socket.into_raw_fd();
    // SAFETY: the fd is a freshly bound, listening TCP socket we own.
    Ok((unsafe { TcpListener::from_raw_fd(fd) }, fd))
}

/// Shuts a listening socket down before it is closed: pending accepts end
/// with an error and new connects are refused from this moment, instead of
/// whenever the reactor finishes cancelling its in-flight accept. Only for a
/// socket this process alone owns: a shutdown acts on the socket, not on
/// this process's descriptor.
pub fn stop_listening(listener: RawFd) {
    // SAFETY: shutdown(2) on a descriptor we own and have not closed yet;
    // failure (already shut) changes nothing we rely on.
    unsafe {
        libc::shutdown(listener, libc::SHUT_RDWR);
    }
}

/// Checks that nobody else holds `port`: binds without SO_REUSEPORT, so a
/// port taken by another process (even another proxy) is refused instead of
/// silently shared.
pub fn probe_port_free(addr: SocketAddr) -> io::Result<()> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    socket.set_reuse_address(true)?;
    socket.bind(&addr.into())
}

/// The socket options of every session socket: TCP_NODELAY (clients that
/// wait for each confirm slow down 15-35x without it) and keepalive (a
/// first probe after 60 s idle, then every 10 s).
const BASE_OPTIONS: [SocketOption; 4] = [
    SocketOption {
        level: libc::IPPROTO_TCP,
        name: libc::TCP_NODELAY,
        value: &1,
    },
    SocketOption {
        level: libc::SOL_SOCKET,
        name: libc::SO_KEEPALIVE,
        value: &1,
    },
    SocketOption {
        level: libc::IPPROTO_TCP,
        name: libc::TCP_KEEPIDLE,
        value: &60,
    },
    SocketOption {
        level: libc::IPPROTO_TCP,
        name: libc::TCP_KEEPINTVL,
        value: &10,
    },
];

/// `--windowClampBytes` when not given (docs/performance.md#the-window-clamp).
pub const DEFAULT_WINDOW_CLAMP: u32 = 128 * 1024;

/// The base options and the default clamp, in static memory like every
/// list a ring submission may point into.
const DEFAULT_OPTIONS: [SocketOption; 5] = [
    BASE_OPTIONS[0],
    BASE_OPTIONS[1],
    BASE_OPTIONS[2],
    BASE_OPTIONS[3],
    clamp_option(&(DEFAULT_WINDOW_CLAMP as libc::c_int)),
];

const fn clamp_option(bytes: &'static libc::c_int) -> SocketOption {
    SocketOption {
        level: libc::IPPROTO_TCP,
        name: libc::TCP_WINDOW_CLAMP,
        value: bytes,
    }
}

/// What every session socket is set to: the base options and, unless the
/// clamp is 0, TCP_WINDOW_CLAMP, set before the handshake (on the
/// listener, whose accepted sockets inherit it, and on a broker socket
/// before its connect). The window scale a socket offers in its handshake
/// is the smallest that reaches the clamp and holds for the connection's
/// life, so a peer never has more than 64 KiB x 2^scale unacknowledged
/// (256 KiB for the default), whatever the kernel does to the clamp
/// afterwards (Linux 6.18 raises it to what the receive buffer allows as
/// data arrives). Without it the window of a socket the proxy drains in
/// large reads grows to megabytes, and clients that write each publish on
/// its own run their congestion windows far ahead and send more, smaller
/// segments, which costs them and the proxy CPU per message
/// (docs/performance.md#the-window-clamp). 0 leaves the window to the
/// kernel: for peers whose bandwidth times round trip is above the cap.
#[derive(Clone, Copy, Debug)]
pub struct SessionSockets {
    options: &'static [SocketOption],
}

impl SessionSockets {
    /// A clamp other than 0 and the default puts its list in memory that
    /// is never freed (the ring reads an option when it takes the
    /// submission): made once per process, by the supervisor.
    pub fn new(window_clamp: u32) -> SessionSockets {
        let options: &'static [SocketOption] = match window_clamp {
            0 => &BASE_OPTIONS,
            DEFAULT_WINDOW_CLAMP => &DEFAULT_OPTIONS,
            bytes => {
                let value: &'static libc::c_int = Box::leak(Box::new(
                    libc::c_int::try_from(bytes).unwrap_or(libc::c_int::MAX),
                ));
                let mut list = BASE_OPTIONS.to_vec();
                list.push(clamp_option(value));
                Box::leak(list.into_boxed_slice())
            }
        };
        SessionSockets { options }
    }

    /// Sets every option on `sock` by `setsockopt`.
    fn set_on(&self, sock: SockRef<'_>) -> io::Result<()> {
        self.options
            .iter()
            .try_for_each(|option| option.set(sock.as_raw_fd()))
    }
}

impl Default for SessionSockets {
    fn default() -> SessionSockets {
        SessionSockets::new(DEFAULT_WINDOW_CLAMP)
    }
}

/// Connects a session's socket to a broker at `addr`, giving up after
/// `timeout`, with the session options set by the shard's ring in the
/// connect's own submission rather than a `setsockopt` call each. The
/// second result is how many options the ring set (the others were set by
/// `setsockopt`: a kernel before 6.7 has no socket commands on the ring),
/// or the first option that could not be set at all.
pub async fn connect_session(
    addr: SocketAddr,
    timeout: Duration,
    sockets: SessionSockets,
) -> io::Result<(TcpStream, io::Result<usize>)> {
    TcpStream::connect_timeout_with_options(addr, timeout, sockets.options)
        .await
        .map_err(io::Error::from)
}

/// The session socket options on a listening socket. Linux copies a
/// listener's socket options into every socket it accepts (the window
/// clamp too, before the handshake's answer), so clients get TCP_NODELAY
/// (before any TLS flight: Nagle would hold it back), keepalive and the
/// window clamp without a `setsockopt` per connection. A listener
/// received from another process (a hitless upgrade) gets them here too.
pub fn tune_listener(listener: &impl AsFd, sockets: SessionSockets) -> io::Result<()> {
    sockets.set_on(SockRef::from(listener))
}

/// How long a forward lookup is reused: absorbs connection storms without
/// pinning stale answers (docs/routing.md#name-resolution).
const DNS_CACHE_TTL: Duration = Duration::from_secs(1);

/// One cached lookup: when it was made and what it gave.
type CachedLookup = (Instant, Vec<SocketAddr>);

/// A shard's forward-resolution cache.
#[derive(Default)]
pub struct Resolver {
    cache: RefCell<HashMap<(String, u16), CachedLookup>>,
}

impl Resolver {
    /// Every address of `host:port`, in the resolver's order. IP literals
    /// need no lookup; names are looked up on glommio's blocking pool.
    pub async fn resolve(&self, host: &str, port: u16) -> io::Result<Vec<SocketAddr>> {
        if let Ok(ip) = host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<IpAddr>()
        {
            return Ok(vec![SocketAddr::new(ip, port)]);
        }
        let key = (host.to_string(), port);
        if let Some((at, addrs)) = self.cache.borrow().get(&key) {
            if at.elapsed() < DNS_CACHE_TTL {
                return Ok(addrs.clone());
            }
        }
        let name = host.to_string();
        let addrs = glommio::executor()
            .spawn_blocking(move || {
                (name.as_str(), port)
                    .to_socket_addrs()
                    .map(|a| a.collect::<Vec<_>>())
            })
            .await?;
        if addrs.is_empty() {
            return Err(io::Error::new(
                io::ErrorKind::NotFound,
                format!("'{host}' has no addresses"),
            ));
        }
        let mut cache = self.cache.borrow_mut();
        cache.retain(|_, (at, _)| at.elapsed() < DNS_CACHE_TTL);
        cache.insert(key, (Instant::now(), addrs.clone()));
        Ok(addrs)
    }
}

/// A wait that ran past its limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("not completed within {} ms", .limit.as_millis())]
pub struct TimedOut {
    pub limit: Duration,
}

/// Awaits `f`, or gives up after `limit`: the one timeout race every
/// bounded step of a session uses (handshakes, TLS, PROXY header, close).
pub async fn with_timeout<T>(
    limit: Duration,
    f: impl std::future::Future<Output = T>,
) -> Result<T, TimedOut> {
    futures_lite::future::or(async { Ok(f.await) }, async {
        glommio::timer::sleep(limit).await;
        Err(TimedOut { limit })
    })
    .await
}

/// Connects to `addr`, giving up after `timeout`.
pub async fn connect(addr: SocketAddr, timeout: Duration) -> io::Result<TcpStream> {
    TcpStream::connect_timeout(addr, timeout)
        .await
        .map_err(io::Error::from)
}

/// Shuts both directions of a socket down now: the peer sees the end at
/// once, even while another task still holds the stream.
pub fn shutdown(stream: &TcpStream) {
    shutdown_now(stream, std::net::Shutdown::Both);
}

/// Shuts the sending side of a socket down now (a FIN after what was
/// written), leaving the receiving side open.
pub fn half_close(stream: &TcpStream) {
    shutdown_now(stream, std::net::Shutdown::Write);
}

fn shutdown_now(stream: &TcpStream, how: std::net::Shutdown) {
    // A handshake message queued on the ring leaves before the FIN.
    stream.submit_send_behind();
    // SAFETY: the fd stays open for the duration of the borrow.
    let fd = unsafe { BorrowedFd::borrow_raw(stream.as_raw_fd()) };
    let _ = SockRef::from(&fd).shutdown(how);
}

/// Queues `bytes` on a socket to leave with what follows it (`MSG_MORE`)
/// rather than at once, without waiting; returns how many it took (0 when
/// the socket would block or fails, or a write queued on the ring is still
/// on its way and must not be overtaken: the caller then writes them as
/// usual, after it, and sees any error there). A session's last bytes
/// queued this way leave in one segment with the FIN of the close that
/// follows (docs/sessions.md#pass-through); anything that must go out
/// without a close is pushed by [`push_queued`].
pub fn queue_before_end(stream: &TcpStream, bytes: &[u8]) -> usize {
    stream.submit_send_behind();
    if stream.send_behind_in_flight() {
        return 0;
    }
    // SAFETY: a send from a live buffer on a descriptor the stream owns.
    let sent = unsafe {
        libc::send(
            stream.as_raw_fd(),
            bytes.as_ptr().cast(),
            bytes.len(),
            libc::MSG_MORE | libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL,
        )
    };
    usize::try_from(sent).unwrap_or(0)
}

/// Sends what [`queue_before_end`] held back now: setting `TCP_NODELAY`
/// (already on for every session socket) pushes the pending segments.
pub fn push_queued(stream: &TcpStream) {
    let _ = stream.set_nodelay(true);
}

/// The address with an IPv4-mapped IPv6 address turned back into IPv4.
pub fn canonical(addr: SocketAddr) -> SocketAddr {
    SocketAddr::new(addr.ip().to_canonical(), addr.port())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs the future `make` gives on a small glommio executor of its
    /// own, as a shard would.
    fn on_executor<T, F>(make: impl FnOnce() -> F + Send + 'static) -> T
    where
        T: Send + 'static,
        F: std::future::Future<Output = T> + 'static,
    {
        glommio::LocalExecutorBuilder::new(glommio::Placement::Unbound)
            .io_memory(256 * 1024)
            .spawn(make)
            .expect("a glommio executor (io_uring) starts")
            .join()
            .expect("the executor thread ends")
    }

    #[test]
    fn accepted_sockets_inherit_the_session_options_from_the_listener() {
        let (nodelay, keepalive, idle, interval, scale) = on_executor(|| async {
            let (listener, _) = loopback_listener();
            let (_client, accepted) = connect_and_accept(&listener).await;
            // SAFETY: the fd stays open while `accepted` lives.
            let fd = unsafe { BorrowedFd::borrow_raw(accepted.as_raw_fd()) };
            let sock = SockRef::from(&fd);
            (
                sock.nodelay().unwrap(),
                sock.keepalive().unwrap(),
                sock.keepalive_time().unwrap(),
                sock.keepalive_interval().unwrap(),
                window_scales_of(accepted.as_raw_fd()).1,
            )
        });
        assert!(nodelay && keepalive);
        assert_eq!(
            (idle, interval),
            (Duration::from_secs(60), Duration::from_secs(10))
        );
        // The clamp was the listener's when the SYN came: the scale the
        // accepted socket offered is the one for 128 KiB.
        assert_eq!(scale, 2, "the window scale offered to the client");
    }

    /// `F_GETFL` and `F_GETFD` of a descriptor.
    fn fd_flags(fd: RawFd) -> (libc::c_int, libc::c_int) {
        // SAFETY: fcntl queries on a descriptor the caller holds open.
        unsafe {
            (
                libc::fcntl(fd, libc::F_GETFL),
                libc::fcntl(fd, libc::F_GETFD),
            )
        }
    }

    #[test]
    fn a_non_blocking_listener_accepts_with_the_peer_and_gives_blocking_close_on_exec_sockets() {
        let outcome = on_executor(|| async {
            let (listener, fd) =
                bind_listener("127.0.0.1:0".parse().unwrap(), SessionSockets::default()).unwrap();
            listener.set_nonblocking_accept().unwrap();
            let listener = std::rc::Rc::new(listener);
            let addr = listener.local_addr().unwrap();
            let mut seen = Vec::new();
            // A connection already queued: accepted by one accept4 call.
            let queued = std::net::TcpStream::connect(addr).unwrap();
            let (accepted, peer) = listener.accept_with_peer().await.unwrap();
            seen.push((
                queued.local_addr().unwrap(),
                peer,
                fd_flags(accepted.as_raw_fd()),
            ));
            // None queued: the accept waits in io_uring on the same
            // non-blocking listener, and still gives the peer.
            let waiting = glommio::spawn_local({
                let listener = std::rc::Rc::clone(&listener);
                async move { listener.accept_with_peer().await }
            });
            // Lets the accept find nothing and go to io_uring first.
            glommio::executor().yield_now().await;
            let later = std::net::TcpStream::connect(addr).unwrap();
            let (accepted_later, peer) = waiting.await.unwrap();
            seen.push((
                later.local_addr().unwrap(),
                peer,
                fd_flags(accepted_later.as_raw_fd()),
            ));
            (fd_flags(fd).0, seen)
        });
        let (listener_flags, seen) = outcome;
        assert_ne!(
            listener_flags & libc::O_NONBLOCK,
            0,
            "the listener is non-blocking"
        );
        for (client, peer, (status, descriptor)) in seen {
            assert_eq!(peer, Some(client), "the accept names the client");
            assert_eq!(status & libc::O_NONBLOCK, 0, "accepted sockets block");
            assert_ne!(
                descriptor & libc::FD_CLOEXEC,
                0,
                "accepted sockets are close-on-exec"
            );
        }
    }

    #[test]
    fn with_timeout_gives_the_result_or_says_it_ran_late() {
        let (done, late) = on_executor(|| async {
            let done = with_timeout(Duration::from_secs(30), async { 7 }).await;
            let limit = Duration::from_millis(20);
            let started = Instant::now();
            let late = with_timeout(limit, futures_lite::future::pending::<()>()).await;
            assert!(started.elapsed() >= limit);
            (done, late)
        });
        assert_eq!(done, Ok(7));
        let late = late.unwrap_err();
        assert_eq!(late.limit, Duration::from_millis(20));
        assert_eq!(late.to_string(), "not completed within 20 ms");
    }

    #[test]
    fn bytes_sent_through_the_ring_keep_their_order_and_reach_the_peer() {
        use futures_lite::AsyncWriteExt;
        use std::io::Read;
        let (in_order, dropped, reset) = on_executor(|| async {
            let (listener, _) = loopback_listener();

            // Ring sends, a plain write between them, and a shutdown right
            // after the last one: the bytes arrive in the order written,
            // all before the end of the stream.
            let (mut peer, mut ours) = connect_and_accept(&listener).await;
            ours.send_behind(b"one,").await.unwrap();
            ours.send_behind(b"two,").await.unwrap();
            ours.write_all(b"three,").await.unwrap();
            ours.send_behind(b"four").await.unwrap();
            shutdown(&ours);
            let mut in_order = String::new();
            peer.read_to_string(&mut in_order).unwrap();

            // Dropped while its send is still queued, not yet submitted:
            // the bytes go out before the socket closes.
            let (mut peer, mut ours) = connect_and_accept(&listener).await;
            ours.send_behind(b"queued, then dropped").await.unwrap();
            drop(ours);
            let mut dropped = String::new();
            peer.read_to_string(&mut dropped).unwrap();

            // A peer that reset the connection: the failed ring send is
            // reported by the next write.
            let (peer, mut ours) = connect_and_accept(&listener).await;
            socket2::SockRef::from(&peer)
                .set_linger(Some(Duration::ZERO))
                .unwrap();
            drop(peer);
            let reset = match ours.send_behind(b"to nobody").await {
                Err(e) => Err(io::Error::from(e)),
                Ok(()) => ours.write_all(b"and more").await,
            };
            (in_order, dropped, reset.map_err(|e| e.kind()))
        });
        assert_eq!(in_order, "one,two,three,four");
        assert_eq!(dropped, "queued, then dropped");
        assert!(
            matches!(
                reset,
                Err(io::ErrorKind::ConnectionReset | io::ErrorKind::BrokenPipe)
            ),
            "{reset:?}"
        );
    }

    #[test]
    fn ring_sends_of_two_streams_reusing_buffers_carry_only_their_own_bytes() {
        use std::io::Read;
        // Completed ring sends hand their buffers back to the shard for the
        // next ones, of either stream: each message must leave alone, with
        // nothing of a longer one sent before it through the same buffer.
        let long = "L".repeat(3000);
        let medium = "m".repeat(600);
        let messages: Vec<String> = [medium.as_str(), "a", &long, "b", &medium, "c"]
            .iter()
            .map(|m| m.to_string())
            .collect();
        let (first, second) = on_executor(move || async move {
            let (listener, _) = loopback_listener();
            let (mut peer_one, mut one) = connect_and_accept(&listener).await;
            let (mut peer_two, mut two) = connect_and_accept(&listener).await;
            for (i, m) in messages.iter().enumerate() {
                let (ours, tag) = if i % 2 == 0 {
                    (&mut one, "1")
                } else {
                    (&mut two, "2")
                };
                ours.send_behind(m.as_bytes()).await.unwrap();
                ours.send_behind(tag.as_bytes()).await.unwrap();
            }
            shutdown(&one);
            shutdown(&two);
            let (mut first, mut second) = (String::new(), String::new());
            peer_one.read_to_string(&mut first).unwrap();
            peer_two.read_to_string(&mut second).unwrap();
            (first, second)
        });
        assert_eq!(first, format!("{medium}1{long}1{medium}1"));
        assert_eq!(second, "a2b2c2");
    }

    /// Fills `ours`'s way to its peer (small buffers, sends until the
    /// kernel refuses more); returns how many bytes went in.
    fn fill_send_path(ours: &TcpStream, peer: &std::net::TcpStream) -> usize {
        SockRef::from(peer).set_recv_buffer_size(4096).unwrap();
        // SAFETY: the fd stays open for the duration of the borrow.
        let fd = unsafe { BorrowedFd::borrow_raw(ours.as_raw_fd()) };
        SockRef::from(&fd).set_send_buffer_size(4096).unwrap();
        let chunk = [b'f'; 1024];
        let mut filled = 0;
        loop {
            // SAFETY: a send from a live buffer on a descriptor `ours` owns.
            let sent = unsafe {
                libc::send(
                    ours.as_raw_fd(),
                    chunk.as_ptr().cast(),
                    chunk.len(),
                    libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL,
                )
            };
            match usize::try_from(sent) {
                Ok(n) if n > 0 => filled += n,
                _ => return filled,
            }
        }
    }

    #[test]
    fn a_ring_send_the_kernel_could_not_take_is_not_overtaken() {
        use futures_lite::AsyncWriteExt;
        use std::io::Read;
        let (declined, in_flight, got, filled) = on_executor(|| async {
            let (listener, _) = loopback_listener();
            let (mut peer, mut ours) = connect_and_accept(&listener).await;
            let filled = fill_send_path(&ours, &peer);
            ours.send_behind(b"queued,").await.unwrap();
            // Submitted here, and refused for now: the socket is full. The
            // send stays on its way, and a `MSG_MORE` send of the session's
            // last bytes declines rather than race it for the room the
            // peer's next read makes.
            let declined = queue_before_end(&ours, b"last") == 0;
            let in_flight = ours.send_behind_in_flight();
            // The peer reads from now on; the queued send then completes,
            // and the last bytes follow it, then the FIN.
            let reader = std::thread::spawn(move || {
                let mut got = Vec::new();
                peer.read_to_end(&mut got).unwrap();
                got
            });
            futures_lite::future::poll_fn(|cx| ours.poll_sent_behind(cx))
                .await
                .unwrap();
            assert!(!ours.send_behind_in_flight());
            ours.write_all(b"last").await.unwrap();
            shutdown(&ours);
            (declined, in_flight, reader.join().unwrap(), filled)
        });
        assert!(filled > 0);
        assert!(in_flight, "the queued send should still wait for room");
        assert!(declined, "a send of its own would overtake the queued one");
        assert_eq!(got.len(), filled + "queued,last".len());
        assert!(got[..filled].iter().all(|&b| b == b'f'));
        assert_eq!(&got[filled..], b"queued,last");
    }

    #[test]
    fn a_read_that_awaits_a_reply_gets_every_byte_whenever_it_came() {
        use futures_lite::{AsyncReadExt, AsyncWriteExt};
        let got = on_executor(|| async {
            let (listener, addr) = loopback_listener();
            let mut got = Vec::new();

            // The reply comes after the read has started to wait.
            let mut asker = TcpStream::connect(addr).await.unwrap();
            let mut answerer = listener.accept().await.unwrap();
            asker.write_all(b"ask").await.unwrap();
            asker.await_reply();
            let answer = glommio::spawn_local(async move {
                let mut buf = [0u8; 3];
                answerer.read_exact(&mut buf).await.unwrap();
                answerer.write_all(b"late").await.unwrap();
                answerer
            });
            let mut buf = [0u8; 16];
            let n = with_timeout(Duration::from_secs(5), asker.read(&mut buf)).await;
            got.push(n.map(|n| buf[..n.unwrap()].to_vec()));
            let _answerer = answer.await;

            // The reply is already queued when the read starts.
            let mut asker = TcpStream::connect(addr).await.unwrap();
            let mut answerer = listener.accept().await.unwrap();
            answerer.write_all(b"early").await.unwrap();
            let deadline = Instant::now() + Duration::from_secs(5);
            while asker.peek(&mut [0u8; 5]).await.unwrap() < 5 && Instant::now() < deadline {}
            asker.await_reply();
            let n = with_timeout(Duration::from_secs(5), asker.read(&mut buf)).await;
            got.push(n.map(|n| buf[..n.unwrap()].to_vec()));

            // A read that filled its buffer left bytes behind, and no poll
            // has reported them: they are read, not waited for.
            answerer.write_all(b"0123456789").await.unwrap();
            let deadline = Instant::now() + Duration::from_secs(5);
            while asker.peek(&mut [0u8; 10]).await.unwrap() < 10 && Instant::now() < deadline {}
            let mut four = [0u8; 4];
            asker.read_exact(&mut four).await.unwrap();
            asker.await_reply();
            let n = with_timeout(Duration::from_secs(5), asker.read(&mut buf)).await;
            got.push(n.map(|n| buf[..n.unwrap()].to_vec()));
            got
        });
        assert_eq!(
            got,
            vec![
                Ok(b"late".to_vec()),
                Ok(b"early".to_vec()),
                Ok(b"456789".to_vec())
            ]
        );
    }

    /// A session listener on a free loopback port, and its address.
    fn loopback_listener() -> (TcpListener, SocketAddr) {
        loopback_listener_with(SessionSockets::default())
    }

    /// A client of `listener`, and the stream the listener accepted from it.
    async fn connect_and_accept(listener: &TcpListener) -> (std::net::TcpStream, TcpStream) {
        let client = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let accepted = listener.accept().await.unwrap();
        (client, accepted)
    }

    fn loopback_listener_with(sockets: SessionSockets) -> (TcpListener, SocketAddr) {
        let (listener, _) = bind_listener("127.0.0.1:0".parse().unwrap(), sockets).unwrap();
        let addr = listener.local_addr().unwrap();
        (listener, addr)
    }

    /// The start of a socket's `struct tcp_info` (Linux 6.2 and later
    /// fill at least this much).
    fn tcp_info_of(fd: RawFd) -> [u8; 232] {
        let mut info = [0u8; 232];
        let mut len = info.len() as libc::socklen_t;
        // SAFETY: the kernel writes at most `len` bytes into `info`.
        let done = unsafe {
            libc::getsockopt(
                fd,
                libc::IPPROTO_TCP,
                libc::TCP_INFO,
                info.as_mut_ptr().cast(),
                &mut len,
            )
        };
        assert_eq!(done, 0, "{}", io::Error::last_os_error());
        assert_eq!(len as usize, info.len(), "a tcp_info with tcpi_snd_wnd");
        info
    }

    /// The window scales a connected socket sends with and was offered
    /// (`tcpi_snd_wscale`, `tcpi_rcv_wscale`: the two halves of byte 6).
    fn window_scales_of(fd: RawFd) -> (u8, u8) {
        let byte = tcp_info_of(fd)[6];
        (byte & 0x0f, byte >> 4)
    }

    /// The window the peer last offered (`tcpi_snd_wnd`, at byte 228).
    fn send_window_of(fd: RawFd) -> u32 {
        let info = tcp_info_of(fd);
        u32::from_ne_bytes(info[228..232].try_into().unwrap())
    }

    /// Reads `peer` to its end on a thread of its own (an executor must
    /// keep turning for a ring close to go in): what it read, or the
    /// error that stopped it (a read timeout when no end came).
    fn read_to_end_elsewhere(
        mut peer: std::net::TcpStream,
    ) -> std::thread::JoinHandle<io::Result<Vec<u8>>> {
        use std::io::Read;
        std::thread::spawn(move || {
            peer.set_read_timeout(Some(Duration::from_secs(10)))?;
            let mut got = Vec::new();
            peer.read_to_end(&mut got).map(|_| got)
        })
    }

    #[test]
    fn a_socket_closed_behind_stays_open_until_the_ring_closes_it_after_its_bytes() {
        let (open_after_drop, got) = on_executor(|| async {
            let (listener, addr) = loopback_listener();
            let reader = read_to_end_elsewhere(std::net::TcpStream::connect(addr).unwrap());
            let mut ours = listener.accept().await.unwrap();
            ours.close_behind();
            ours.send_behind(b"last words").await.unwrap();
            let fd = ours.as_raw_fd();
            drop(ours);
            // The drop made no `close`: the descriptor is the ring's to
            // close with the turn's other requests.
            // SAFETY: F_GETFD only reads the descriptor's flags.
            let open_after_drop = unsafe { libc::fcntl(fd, libc::F_GETFD) } != -1;
            // Turn the executor until the peer has read to its end.
            let deadline = Instant::now() + Duration::from_secs(10);
            while !reader.is_finished() && Instant::now() < deadline {
                glommio::timer::sleep(Duration::from_millis(1)).await;
            }
            (open_after_drop, reader.join().unwrap())
        });
        assert!(open_after_drop, "the drop closed the socket itself");
        assert_eq!(got.unwrap(), b"last words");
    }

    #[test]
    fn closes_still_queued_when_the_executor_ends_reach_the_kernel() {
        let reader = on_executor(|| async {
            let (listener, addr) = loopback_listener();
            let reader = read_to_end_elsewhere(std::net::TcpStream::connect(addr).unwrap());
            let ours = listener.accept().await.unwrap();
            ours.close_behind();
            // Dropped, and the executor ends without another turn.
            drop(ours);
            reader
        });
        assert_eq!(reader.join().unwrap().unwrap(), b"");
    }

    #[test]
    fn the_end_after_bytes_that_came_with_the_fin_is_read_without_asking_the_socket() {
        use futures_lite::AsyncReadExt;
        use std::io::Write;
        let (first, last, then) = on_executor(|| async {
            let (listener, _) = loopback_listener();
            let (mut peer, mut ours) = connect_and_accept(&listener).await;
            let mut buf = [0u8; 64];
            // A first short read leaves the read side waiting on its poll.
            peer.write_all(b"first").unwrap();
            let n = ours.read(&mut buf).await.unwrap();
            let first = buf[..n].to_vec();
            // The last bytes and the FIN, both in the socket before the
            // poll is submitted: its first report carries both.
            peer.write_all(b"last").unwrap();
            peer.shutdown(std::net::Shutdown::Write).unwrap();
            let deadline = Instant::now() + Duration::from_secs(10);
            let mut fin = libc::pollfd {
                fd: ours.as_raw_fd(),
                events: libc::POLLRDHUP,
                revents: 0,
            };
            // SAFETY: a poll of one descriptor we own, no waiting.
            while unsafe { libc::poll(&mut fin, 1, 0) } == 0 && Instant::now() < deadline {}
            let n = ours.read(&mut buf).await.unwrap();
            let last = buf[..n].to_vec();
            // The descriptor now names another socket with bytes queued: a
            // read that asked the kernel would return them.
            let (mut other_peer, other) = connect_and_accept(&listener).await;
            other_peer.write_all(b"other").unwrap();
            // SAFETY: both descriptors are open and ours; `ours` keeps its
            // number, which now refers to the other socket.
            assert_ne!(
                unsafe { libc::dup2(other.as_raw_fd(), ours.as_raw_fd()) },
                -1
            );
            let n = ours.read(&mut buf).await.unwrap();
            (first, last, buf[..n].to_vec())
        });
        assert_eq!(first, b"first");
        assert_eq!(last, b"last");
        assert_eq!(then, b"", "the end was read from the socket");
    }

    /// Whether this kernel takes socket options through the ring (socket
    /// commands came in Linux 6.7).
    fn ring_sets_socket_options() -> bool {
        let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap();
        let mut parts = release.trim().split(['.', '-']);
        let major: u32 = parts.next().unwrap().parse().unwrap();
        let minor: u32 = parts.next().unwrap().parse().unwrap();
        (major, minor) >= (6, 7)
    }

    /// What a broker socket connected with `sockets` ended up with: how
    /// many options the ring set, TCP_NODELAY, keepalive's idle time and
    /// interval, and the window scale its SYN offered.
    struct BrokerSocket {
        by_ring: usize,
        nodelay: bool,
        keepalive: Option<(Duration, Duration)>,
        scale: u8,
    }

    fn broker_socket(sockets: SessionSockets, without_ring_options: bool) -> BrokerSocket {
        on_executor(move || async move {
            if without_ring_options {
                // As on a kernel before 6.7, once its ring has refused one.
                glommio::net::set_socket_options_by_syscall_for_tests();
            }
            let (listener, addr) = loopback_listener();
            let (stream, options) = connect_session(addr, Duration::from_secs(5), sockets)
                .await
                .unwrap();
            let _accepted = listener.accept().await.unwrap();
            // SAFETY: the fd stays open while `stream` lives.
            let fd = unsafe { BorrowedFd::borrow_raw(stream.as_raw_fd()) };
            let sock = SockRef::from(&fd);
            BrokerSocket {
                by_ring: options.unwrap(),
                nodelay: sock.nodelay().unwrap(),
                keepalive: sock.keepalive().unwrap().then(|| {
                    (
                        sock.keepalive_time().unwrap(),
                        sock.keepalive_interval().unwrap(),
                    )
                }),
                scale: window_scales_of(stream.as_raw_fd()).1,
            }
        })
    }

    #[test]
    fn a_broker_socket_gets_the_session_options_in_its_connects_submission() {
        let socket = broker_socket(SessionSockets::default(), false);
        let expected_by_ring = if ring_sets_socket_options() { 5 } else { 0 };
        assert_eq!(socket.by_ring, expected_by_ring, "options the ring set");
        assert!(socket.nodelay);
        assert_eq!(
            socket.keepalive,
            Some((Duration::from_secs(60), Duration::from_secs(10)))
        );
        // The clamp was set before the SYN: the scale offered in it is the
        // one for 128 KiB, not the kernel's own.
        assert_eq!(socket.scale, 2, "the window scale the broker was offered");
    }

    #[test]
    fn without_socket_commands_on_the_ring_the_options_still_precede_the_syn() {
        let socket = broker_socket(SessionSockets::default(), true);
        assert_eq!(socket.by_ring, 0, "options the ring set");
        assert!(socket.nodelay && socket.keepalive.is_some());
        assert_eq!(socket.scale, 2, "the window scale the broker was offered");
    }

    #[test]
    fn a_window_clamp_of_0_leaves_the_broker_sockets_window_scale_to_the_kernel() {
        let socket = broker_socket(SessionSockets::new(0), false);
        let expected_by_ring = if ring_sets_socket_options() { 4 } else { 0 };
        assert_eq!(socket.by_ring, expected_by_ring, "options the ring set");
        assert!(
            socket.scale > 2,
            "the kernel's own scale, got {}",
            socket.scale
        );
    }

    /// The largest window `client` saw while it streamed to `accepted`,
    /// which reads in large chunks as a shard does (the kernel grows the
    /// window of a socket read that way), until `enough` says so or
    /// 256 MiB have gone through.
    fn widest_window_seen(
        mut client: std::net::TcpStream,
        accepted: std::net::TcpStream,
        enough: impl Fn(u32) -> bool,
    ) -> u32 {
        use std::io::{Read, Write};
        let (mut accepted, chunk) = (accepted, vec![7u8; 64 * 1024]);
        let mut sink = vec![0u8; 1 << 20];
        client.set_nonblocking(true).unwrap();
        accepted.set_nonblocking(true).unwrap();
        let (mut widest, mut sent) = (0u32, 0usize);
        while sent < 256 << 20 && !enough(widest) {
            match client.write(&chunk) {
                Ok(n) => sent += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => panic!("{e}"),
            }
            match accepted.read(&mut sink) {
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => panic!("{e}"),
            }
            widest = widest.max(send_window_of(client.as_raw_fd()));
        }
        widest
    }

    /// An accepted session socket, as a blocking std stream, and its client.
    fn accepted_pair(sockets: SessionSockets) -> (std::net::TcpStream, std::net::TcpStream) {
        on_executor(move || async move {
            let (listener, _) = loopback_listener_with(sockets);
            let (client, accepted) = connect_and_accept(&listener).await;
            // SAFETY: a new descriptor of the accepted socket, owned by the
            // std stream; the glommio stream closes its own.
            let copy = unsafe { libc::dup(accepted.as_raw_fd()) };
            assert!(copy >= 0);
            (client, unsafe { std::net::TcpStream::from_raw_fd(copy) })
        })
    }

    #[test]
    fn a_client_never_sees_a_window_past_the_clamps_scale() {
        let (client, accepted) = accepted_pair(SessionSockets::default());
        assert_eq!(
            window_scales_of(client.as_raw_fd()).0,
            2,
            "the scale the client was offered"
        );
        let clamped = widest_window_seen(client, accepted, |_| false);
        assert!(clamped <= 65535 << 2, "a window of {clamped} bytes");
        // Without the clamp the same streaming grows the window past it
        // (the kernel's autotuning): the bound above is the clamp's doing.
        let (client, accepted) = accepted_pair(SessionSockets::new(0));
        let unclamped = widest_window_seen(client, accepted, |w| w > 65535 << 2);
        assert!(unclamped > 65535 << 2, "only {unclamped} bytes without it");
    }

    #[test]
    fn a_refused_broker_connect_says_so() {
        let refused = on_executor(|| async {
            // A port held by a socket that never listens: nothing answers.
            let holder = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
            holder
                .bind(&"127.0.0.1:0".parse::<SocketAddr>().unwrap().into())
                .unwrap();
            let silent = holder.local_addr().unwrap().as_socket().unwrap();
            connect_session(silent, Duration::from_secs(5), SessionSockets::default())
                .await
                .err()
                .map(|e| e.kind())
        });
        assert_eq!(refused, Some(io::ErrorKind::ConnectionRefused));
    }
}
