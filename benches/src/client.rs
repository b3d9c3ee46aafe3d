//! The raw AMQP 0-9-1 load client: one blocking TCP connection (plain, or
//! TLS with rustls for the `direct` target of `connections-tls`) that runs
//! the handshake (header, StartOk PLAIN guest/guest, TuneOk + Open), opens
//! channel 1, writes pre-encoded publish bytes, and closes with
//! `Connection.Close` / `CloseOk`, whose round trip proves every byte
//! written before it has passed the target.
//!
//! Owns one socket and its read buffer. Never encodes a message itself (the
//! caller hands it pre-encoded bytes, reused across messages), never spawns
//! threads, and never waits without a bound: every socket has read and write
//! timeouts.

use crate::tls::BROKER_HOST;
use amqpprox_testkit::load::frames::{self, ids, FrameReader};
use anyhow::{bail, Context, Result};
use rustls::pki_types::ServerName;
use rustls::{ClientConfig, ClientConnection, StreamOwned};
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

/// The bound on any one blocking read or write.
const IO_TIMEOUT: Duration = Duration::from_secs(60);

/// Client frames that never change, encoded once per process.
struct Fixed {
    start_ok: Vec<u8>,
    tune_ok_open: Vec<u8>,
    channel_open: Vec<u8>,
    confirm_select: Vec<u8>,
    close: Vec<u8>,
}

fn fixed() -> &'static Fixed {
    static FIXED: OnceLock<Fixed> = OnceLock::new();
    FIXED.get_or_init(|| Fixed {
        start_ok: frames::start_ok(),
        tune_ok_open: frames::tune_ok_and_open(),
        channel_open: frames::channel_open(1),
        confirm_select: frames::confirm_select(1),
        close: frames::close(1),
    })
}

/// The byte stream under a session. The TLS handshake runs on the first
/// read or write; each `write` is one TLS record, sent at once.
enum Conn {
    Plain(TcpStream),
    Tls(Box<StreamOwned<ClientConnection, TcpStream>>),
}

impl Read for Conn {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Conn::Plain(s) => s.read(buf),
            Conn::Tls(s) => s.read(buf),
        }
    }
}

impl Write for Conn {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Conn::Plain(s) => s.write(buf),
            Conn::Tls(s) => s.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            Conn::Plain(s) => s.flush(),
            Conn::Tls(s) => s.flush(),
        }
    }
}

/// One open AMQP connection with channel 1 open.
pub struct Session {
    stream: Conn,
    reader: FrameReader,
}

impl Session {
    /// Connects, completes the handshake and opens channel 1.
    pub fn open(addr: SocketAddr) -> Result<Session> {
        Session::open_with(addr, None)
    }

    /// Like [`Session::open`]; with `tls`, speaks TLS to the target (which
    /// must present a certificate for [`BROKER_HOST`] that `tls` trusts).
    pub fn open_with(addr: SocketAddr, tls: Option<&Arc<ClientConfig>>) -> Result<Session> {
        let tcp = TcpStream::connect_timeout(&addr, IO_TIMEOUT)
            .with_context(|| format!("connect {addr}"))?;
        tcp.set_nodelay(true)?;
        tcp.set_read_timeout(Some(IO_TIMEOUT))?;
        tcp.set_write_timeout(Some(IO_TIMEOUT))?;
        let stream = match tls {
            None => Conn::Plain(tcp),
            Some(config) => {
                let name = ServerName::try_from(BROKER_HOST)?;
                let conn = ClientConnection::new(Arc::clone(config), name)?;
                Conn::Tls(Box::new(StreamOwned::new(conn, tcp)))
            }
        };
        let mut session = Session {
            stream,
            reader: FrameReader::new(),
        };
        session
            .handshake()
            .with_context(|| format!("handshake with {addr}"))?;
        Ok(session)
    }

    fn handshake(&mut self) -> Result<()> {
        let f = fixed();
        let s = &mut self.stream;
        s.write_all(frames::PROTOCOL_HEADER)?;
        self.reader.expect(s, ids::CONNECTION_START)?;
        s.write_all(&f.start_ok)?;
        let tune = self.reader.expect(s, ids::CONNECTION_TUNE)?;
        // The publish frames are pre-encoded for FRAME_MAX; a target that
        // offers less would have to refuse them.
        let frame_max = tune
            .get(2..6)
            .map_or(0, |b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]));
        if frame_max != 0 && frame_max < frames::FRAME_MAX {
            bail!(
                "target offers frame-max {frame_max}, the harness needs {}",
                frames::FRAME_MAX
            );
        }
        s.write_all(&f.tune_ok_open)?;
        self.reader.expect(s, ids::CONNECTION_OPEN_OK)?;
        s.write_all(&f.channel_open)?;
        self.reader.expect(s, ids::CHANNEL_OPEN_OK)?;
        Ok(())
    }

    /// Writes bytes (pre-encoded messages) as they are.
    pub fn write(&mut self, bytes: &[u8]) -> Result<()> {
        self.stream.write_all(bytes).context("write to target")
    }

    /// Puts channel 1 in publisher-confirm mode (`Confirm.Select`, then
    /// waits for `SelectOk`).
    pub fn select_confirms(&mut self) -> Result<()> {
        self.stream.write_all(&fixed().confirm_select)?;
        self.reader
            .expect(&mut self.stream, frames::CONFIRM_SELECT_OK)
            .map(drop)
    }

    /// Writes one pre-encoded publish and waits for its `Basic.Ack`: a
    /// client with one confirm in flight (pika's `BlockingConnection`).
    pub fn publish_confirmed(&mut self, msg: &[u8]) -> Result<()> {
        self.stream.write_all(msg).context("write to target")?;
        self.reader
            .expect(&mut self.stream, frames::BASIC_ACK)
            .map(drop)
    }

    /// Writes `msg` and reads the same number of bytes back (echo broker).
    pub fn round_trip(&mut self, msg: &[u8], scratch: &mut [u8]) -> Result<()> {
        self.stream.write_all(msg).context("write to target")?;
        self.reader
            .read_exact(&mut self.stream, &mut scratch[..msg.len()])
    }

    /// `Channel.Close` + `Connection.Close`, then waits for `CloseOk`.
    pub fn close(mut self) -> Result<()> {
        self.close_with(&[])
    }

    /// Like [`Session::close`], with `before` written in the same call
    /// (one tiny message and the close, as a short-lived publisher does).
    pub fn close_with(&mut self, before: &[u8]) -> Result<()> {
        let close = &fixed().close;
        if before.is_empty() {
            self.stream.write_all(close)?;
        } else {
            let mut bytes = Vec::with_capacity(before.len() + close.len());
            bytes.extend_from_slice(before);
            bytes.extend_from_slice(close);
            self.stream.write_all(&bytes)?;
        }
        self.reader
            .expect(&mut self.stream, ids::CONNECTION_CLOSE_OK)?;
        Ok(())
    }
}
