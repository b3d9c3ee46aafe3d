//! The raw AMQP 0-9-1 client of the byte-level tests: a blocking
//! `std::net` connection ([`RawConn`]) whose every read is bounded by a
//! deadline, a frame reader, and a client handshake built from
//! [`crate::wire`] (re-exported here, so `raw::open_ok()` and
//! `raw::Frame` read as they always have).
//!
//! It never touches the crate under test, never spawns processes and never
//! plays a broker (that is [`crate::broker`]). Every read is bounded by a
//! deadline so no test can hang.

use std::io::{self, ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream, ToSocketAddrs};
use std::time::{Duration, Instant};

use crate::wait;
pub use crate::wire::*;

/// Default bound for a single expected read.
pub const IO_TIMEOUT: Duration = Duration::from_secs(5);

/// Frames larger than this are refused by the test reader (guards the tests
/// against allocating gigabytes when a peer sends garbage).
const MAX_TEST_FRAME: usize = 16 * 1024 * 1024;

// ---------------------------------------------------------------------------
// The connection
// ---------------------------------------------------------------------------

/// A blocking TCP connection that speaks raw bytes, every read bounded by a
/// deadline. Used for the test's client and, handed over by the dummy broker,
/// for the broker side of an established session.
pub struct RawConn {
    stream: TcpStream,
}

impl RawConn {
    /// Connects to `addr` (each resolved address in turn, 5 s each) and sets
    /// TCP_NODELAY so small writes leave at once.
    pub fn connect(addr: impl ToSocketAddrs) -> io::Result<RawConn> {
        let mut last = io::Error::new(ErrorKind::NotFound, "no address to connect to");
        for candidate in addr.to_socket_addrs()? {
            match TcpStream::connect_timeout(&candidate, Duration::from_secs(5)) {
                Ok(stream) => return Ok(RawConn::from_stream(stream)),
                Err(err) => last = err,
            }
        }
        Err(last)
    }

    /// Connects to 127.0.0.1:`port`, panicking on failure.
    pub fn connect_local(port: u16) -> RawConn {
        RawConn::connect(("127.0.0.1", port))
            .unwrap_or_else(|err| panic!("connect to 127.0.0.1:{port}: {err}"))
    }

    pub fn from_stream(stream: TcpStream) -> RawConn {
        let _ = stream.set_nodelay(true);
        RawConn { stream }
    }

    pub fn stream(&self) -> &TcpStream {
        &self.stream
    }

    /// A second handle on the same socket (e.g. one thread reads while
    /// another writes).
    pub fn try_clone(&self) -> RawConn {
        RawConn {
            stream: self.stream.try_clone().expect("clone the socket"),
        }
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.stream.local_addr().expect("local address")
    }

    pub fn peer_addr(&self) -> SocketAddr {
        self.stream.peer_addr().expect("peer address")
    }

    /// Writes all of `bytes`; returns the error instead of panicking (the
    /// peer may legitimately have closed already).
    pub fn try_send(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.stream
            .set_write_timeout(Some(Duration::from_secs(10)))?;
        self.stream.write_all(bytes)?;
        self.stream.flush()
    }

    /// Writes all of `bytes`, panicking on failure.
    pub fn send(&mut self, bytes: &[u8]) {
        self.try_send(bytes)
            .unwrap_or_else(|err| panic!("write of {} bytes failed: {err}", bytes.len()));
    }

    /// Writes `bytes` in pieces of `piece` bytes with `pause` between them.
    pub fn send_in_pieces(&mut self, bytes: &[u8], piece: usize, pause: Duration) {
        for (i, chunk) in bytes.chunks(piece.max(1)).enumerate() {
            if i > 0 && !pause.is_zero() {
                // The pause is the behaviour: a client whose bytes trickle in.
                wait::idle_for(pause);
            }
            self.send(chunk);
        }
    }

    /// Writes `bytes` cut at the given offsets, pausing between the parts.
    pub fn send_split_at(&mut self, bytes: &[u8], cuts: &[usize], pause: Duration) {
        let mut start = 0;
        for &cut in cuts.iter().chain(std::iter::once(&bytes.len())) {
            let cut = cut.min(bytes.len());
            if cut > start {
                if start > 0 {
                    wait::idle_for(pause);
                }
                self.send(&bytes[start..cut]);
                start = cut;
            }
        }
    }

    /// Reads exactly `n` bytes before `timeout` expires.
    pub fn read_exact_within(&mut self, n: usize, timeout: Duration) -> io::Result<Vec<u8>> {
        let deadline = Instant::now() + timeout;
        let mut buf = vec![0u8; n];
        let mut filled = 0;
        while filled < n {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(io::Error::new(
                    ErrorKind::TimedOut,
                    format!("got {filled} of {n} bytes within {timeout:?}"),
                ));
            }
            self.stream.set_read_timeout(Some(left))?;
            match self.stream.read(&mut buf[filled..]) {
                Ok(0) => {
                    return Err(io::Error::new(
                        ErrorKind::UnexpectedEof,
                        format!(
                            "EOF after {filled} of {n} bytes (got {:02x?})",
                            &buf[..filled.min(64)]
                        ),
                    ))
                }
                Ok(k) => filled += k,
                Err(err) if is_timeout(&err) => continue,
                Err(err) if err.kind() == ErrorKind::Interrupted => continue,
                Err(err) => return Err(err),
            }
        }
        Ok(buf)
    }

    /// Reads exactly `n` bytes within [`IO_TIMEOUT`], panicking otherwise.
    pub fn expect_bytes(&mut self, n: usize) -> Vec<u8> {
        self.read_exact_within(n, IO_TIMEOUT)
            .unwrap_or_else(|err| panic!("expected {n} bytes: {err}"))
    }

    /// Reads one whole frame (7-byte header, payload, end octet) within
    /// `timeout`. The end octet is returned as read, not checked.
    pub fn read_frame_within(&mut self, timeout: Duration) -> io::Result<Frame> {
        let deadline = Instant::now() + timeout;
        let header = self.read_exact_within(7, timeout)?;
        let size = u32::from_be_bytes([header[3], header[4], header[5], header[6]]) as usize;
        if size > MAX_TEST_FRAME {
            return Err(io::Error::new(
                ErrorKind::InvalidData,
                format!("frame header {header:02x?} announces {size} bytes"),
            ));
        }
        let left = deadline.saturating_duration_since(Instant::now());
        let rest = self.read_exact_within(size + 1, left.max(Duration::from_millis(1)))?;
        Ok(Frame {
            kind: header[0],
            channel: u16::from_be_bytes([header[1], header[2]]),
            payload: rest[..size].to_vec(),
            end: rest[size],
        })
    }

    /// Reads one frame within [`IO_TIMEOUT`], panicking otherwise.
    pub fn expect_frame(&mut self) -> Frame {
        self.read_frame_within(IO_TIMEOUT)
            .unwrap_or_else(|err| panic!("expected a frame: {err}"))
    }

    /// Reads frames until one is `class.method` on channel 0, skipping
    /// heartbeats only; any other frame is a failure.
    pub fn expect_method(&mut self, class: u16, method: u16) -> Frame {
        loop {
            let frame = self.expect_frame();
            if frame.kind == FRAME_HEARTBEAT {
                continue;
            }
            assert!(
                frame.is_method(0, class, method),
                "expected connection method {class}.{method} on channel 0, got {}: {:02x?}",
                frame.describe(),
                &frame.to_bytes()[..frame.payload.len().min(64) + 7]
            );
            return frame;
        }
    }

    /// Reads until the peer closes (EOF or reset) within `within`; returns
    /// everything read before the close, or an error naming what was read
    /// if the connection is still open at the deadline.
    pub fn read_until_eof(&mut self, within: Duration) -> Result<Vec<u8>, String> {
        let deadline = Instant::now() + within;
        let mut got = Vec::new();
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(format!(
                    "connection still open after {within:?}; read {} bytes meanwhile (first: {:02x?})",
                    got.len(),
                    &got[..got.len().min(32)]
                ));
            }
            if let Err(err) = self.stream.set_read_timeout(Some(left)) {
                return Err(format!("set_read_timeout: {err}"));
            }
            match self.stream.read(&mut buf) {
                Ok(0) => return Ok(got),
                Ok(k) => got.extend_from_slice(&buf[..k]),
                Err(err) if is_timeout(&err) || err.kind() == ErrorKind::Interrupted => continue,
                Err(err) if is_closed(&err) => return Ok(got),
                Err(err) => return Err(format!("read error while waiting for EOF: {err}")),
            }
        }
    }

    /// Asserts the peer closes within `within`; returns the bytes read first.
    pub fn expect_eof_within(&mut self, within: Duration) -> Vec<u8> {
        self.read_until_eof(within)
            .unwrap_or_else(|why| panic!("expected the peer to close: {why}"))
    }

    /// Asserts nothing at all arrives (no byte, no close) during `during`.
    pub fn expect_silence(&mut self, during: Duration) {
        let deadline = Instant::now() + during;
        let mut buf = [0u8; 256];
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return;
            }
            self.stream.set_read_timeout(Some(left)).expect("timeout");
            match self.stream.read(&mut buf) {
                Ok(0) => panic!("peer closed while silence was expected"),
                Ok(k) => panic!("expected silence, got {k} bytes: {:02x?}", &buf[..k]),
                Err(err) if is_timeout(&err) || err.kind() == ErrorKind::Interrupted => continue,
                Err(err) => panic!("expected silence, got error {err}"),
            }
        }
    }

    /// Half-closes the write side (the peer sees EOF).
    pub fn shutdown_write(&self) {
        let _ = self.stream.shutdown(Shutdown::Write);
    }
}

fn is_timeout(err: &io::Error) -> bool {
    matches!(err.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut)
}

/// Errors that mean "the peer closed the connection".
pub fn is_closed(err: &io::Error) -> bool {
    matches!(
        err.kind(),
        ErrorKind::ConnectionReset
            | ErrorKind::ConnectionAborted
            | ErrorKind::BrokenPipe
            | ErrorKind::UnexpectedEof
    )
}

// ---------------------------------------------------------------------------
// Client-side handshake helper
// ---------------------------------------------------------------------------

/// Plays a well-behaved client up to (not including) the broker's OpenOk:
/// header, read Start, StartOk, read Tune, TuneOk + Open in one write.
/// Returns the Start and Tune frames the proxy sent.
pub fn client_handshake_until_open(
    conn: &mut RawConn,
    start_ok: &[u8],
    vhost: &str,
) -> (Frame, Frame) {
    conn.send(PROTOCOL_HEADER);
    let start = conn.expect_method(10, 10);
    conn.send(start_ok);
    let tune = conn.expect_method(10, 30);
    let mut rest = tune_ok(2047, 131_072, 60);
    rest.extend_from_slice(&open(vhost));
    conn.send(&rest);
    (start, tune)
}

/// Plays a whole client handshake and returns the OpenOk frame the proxy
/// forwarded from the broker.
pub fn client_handshake(conn: &mut RawConn, connection_name: &str, vhost: &str) -> Frame {
    client_handshake_until_open(conn, &default_start_ok(connection_name), vhost);
    conn.read_frame_within(Duration::from_secs(10))
        .unwrap_or_else(|err| panic!("expected the broker's OpenOk through the proxy: {err}"))
}
