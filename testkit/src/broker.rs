//! The scripted fake broker of the byte-level tests, on std threads: it
//! listens (127.0.0.1:0 by default), plays the broker's half of the
//! handshake with frames from [`crate::wire`] (Start, Tune 2047/131072/60,
//! OpenOk), then does what the test's [`Script`] says (echo, record and
//! hold, flood, close, hand the socket to the test) and records every byte
//! it receives per connection. Scripts also make it misbehave on purpose:
//! silent after accept, closing after accept, after the header, after the
//! login (StartOk), refusing the login or the Open with a Close.
//!
//! It never decides whether the proxy is right: it only records (StartOk,
//! TuneOk, Open, everything after Open) and exposes the records for the test
//! to assert on. Its threads poll a stop flag and bound every read and
//! write, so a dropped broker never hangs a test.

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use crate::raw::{is_closed, RawConn};
use crate::wait;
use crate::wire::{
    self, parse_start_ok, Frame, StartOkMethod, Table, FRAME_HEARTBEAT, PROTOCOL_HEADER,
};

/// How long the broker waits for each step of the proxy's handshake.
const STEP_TIMEOUT: Duration = Duration::from_secs(10);

/// What the broker does during the handshake.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Handshake {
    /// Start, Tune, OpenOk.
    Normal,
    /// Accepts, then neither reads nor writes (a hung broker); holds the
    /// socket until the broker is dropped.
    SilentAfterAccept,
    /// Closes TCP right after accepting, before reading anything.
    CloseAfterAccept,
    /// Answers the StartOk with Connection.Close(code, text).
    CloseAfterStartOk(u16, String),
    /// Answers the Open with Connection.Close(code, text).
    CloseAfterOpen(u16, String),
    /// Closes TCP right after reading the protocol header.
    DropAfterHeader,
    /// Closes TCP right after reading the StartOk.
    DropAfterStartOk,
    /// Reads the header, StartOk, TuneOk and Open before it says anything,
    /// then answers Start, Tune and OpenOk: only a peer that sends its whole
    /// handshake without waiting gets through.
    AnswersAfterOpen,
}

/// What the broker does once it has sent OpenOk.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AfterOpen {
    /// Writes back every byte it reads.
    Echo,
    /// Records what it reads, sends nothing.
    Hold,
    /// After `start_delay`, writes body frames on channel 1 (each
    /// `frame_payload` bytes of payload) until `total` bytes are written or a
    /// write has made no progress for 2 s (recorded as stalled); then holds.
    Flood {
        total: usize,
        frame_payload: usize,
        start_delay: Duration,
    },
    /// Closes the TCP connection.
    CloseTcp,
    /// Gives the socket to the test (see [`DummyBroker::take_stream`]).
    Handover,
}

/// A whole script for every connection the broker accepts.
#[derive(Clone, Debug)]
pub struct Script {
    pub handshake: Handshake,
    pub after_open: AfterOpen,
    /// Bytes written in the same write as OpenOk, right after it.
    pub open_ok_trailer: Vec<u8>,
    /// After reading Open, listen this long (recording into
    /// [`Conn::before_open_ok`]) before answering.
    pub linger_before_open_ok: Duration,
}

impl Script {
    pub fn new(after_open: AfterOpen) -> Script {
        Script {
            handshake: Handshake::Normal,
            after_open,
            open_ok_trailer: Vec::new(),
            linger_before_open_ok: Duration::ZERO,
        }
    }

    pub fn handshake(mut self, handshake: Handshake) -> Script {
        self.handshake = handshake;
        self
    }

    pub fn open_ok_trailer(mut self, bytes: &[u8]) -> Script {
        self.open_ok_trailer = bytes.to_vec();
        self
    }

    pub fn linger_before_open_ok(mut self, linger: Duration) -> Script {
        self.linger_before_open_ok = linger;
        self
    }
}

/// What the broker saw on one connection.
#[derive(Clone, Debug, Default)]
pub struct Conn {
    /// The proxy's address for this connection (its egress local port).
    pub peer: Option<SocketAddr>,
    pub header: Vec<u8>,
    pub start_ok: Option<Frame>,
    pub tune_ok: Option<Frame>,
    pub open: Option<Frame>,
    /// Non-heartbeat frames seen before the Open that were not expected.
    pub unexpected: Vec<Frame>,
    /// Heartbeats received during the handshake.
    pub handshake_heartbeats: usize,
    /// Bytes that arrived after Open but before OpenOk was sent.
    pub before_open_ok: Vec<u8>,
    /// Every byte received after the Open frame (after OpenOk was sent).
    pub after_open: Vec<u8>,
    /// The proxy closed the connection (EOF or reset).
    pub eof: bool,
    /// The broker gave up on the script (wrong frame, timeout, ...).
    pub error: Option<String>,
    pub open_ok_sent: bool,
    pub flood_written: usize,
    pub flood_stalled: bool,
    pub flood_done: bool,
}

impl Conn {
    /// The StartOk decoded by the test's own decoder.
    pub fn start_ok_method(&self) -> StartOkMethod {
        let frame = self.start_ok.as_ref().expect("the broker got no StartOk");
        parse_start_ok(frame).unwrap_or_else(|why| panic!("undecodable StartOk: {why}"))
    }
}

struct Shared {
    conns: Mutex<Vec<Conn>>,
    stop: AtomicBool,
    handover: Mutex<Sender<TcpStream>>,
}

/// The running fake broker; dropping it stops its threads.
pub struct DummyBroker {
    addr: SocketAddr,
    shared: Arc<Shared>,
    handed: Mutex<Receiver<TcpStream>>,
}

impl DummyBroker {
    /// Listens on 127.0.0.1 with a free port.
    pub fn start(script: Script) -> DummyBroker {
        DummyBroker::start_on("127.0.0.1:0".parse().unwrap(), script)
            .expect("bind the dummy broker on 127.0.0.1:0")
    }

    /// Listens on `addr` (port 0 picks a free one).
    pub fn start_on(addr: SocketAddr, script: Script) -> std::io::Result<DummyBroker> {
        let listener = TcpListener::bind(addr)?;
        listener.set_nonblocking(true)?;
        let addr = listener.local_addr()?;
        let (tx, rx) = mpsc::channel();
        let shared = Arc::new(Shared {
            conns: Mutex::new(Vec::new()),
            stop: AtomicBool::new(false),
            handover: Mutex::new(tx),
        });
        let accept_shared = shared.clone();
        thread::spawn(move || accept_loop(listener, script, accept_shared));
        Ok(DummyBroker {
            addr,
            shared,
            handed: Mutex::new(rx),
        })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// How many connections were accepted so far.
    pub fn accepted(&self) -> usize {
        self.shared.conns.lock().unwrap().len()
    }

    /// A snapshot of connection `index` (in accept order).
    pub fn conn(&self, index: usize) -> Option<Conn> {
        self.shared.conns.lock().unwrap().get(index).cloned()
    }

    /// Waits until connection `index` exists and satisfies `ready`; panics
    /// with the last snapshot after `timeout`.
    pub fn wait_conn(
        &self,
        index: usize,
        timeout: Duration,
        ready: impl Fn(&Conn) -> bool,
    ) -> Conn {
        let found = wait::poll_until(wait::deadline_in(timeout), || {
            self.conn(index).filter(|conn| ready(conn))
        });
        found.unwrap_or_else(|| {
            panic!(
                "dummy broker connection {index}: condition not met within {timeout:?}; state: {}",
                match self.conn(index) {
                    Some(conn) => summary(&conn),
                    None => format!("not accepted ({} accepted)", self.accepted()),
                }
            )
        })
    }

    /// Waits until connection `index` has received at least `n` bytes after
    /// the Open and returns them.
    pub fn wait_after_open(&self, index: usize, n: usize, timeout: Duration) -> Vec<u8> {
        self.wait_conn(index, timeout, |c| c.after_open.len() >= n)
            .after_open
    }

    /// The socket of the next connection scripted with [`AfterOpen::Handover`],
    /// once OpenOk (and any trailer) has been written.
    pub fn take_stream(&self, timeout: Duration) -> RawConn {
        let stream = self
            .handed
            .lock()
            .unwrap()
            .recv_timeout(timeout)
            .unwrap_or_else(|err| {
                panic!(
                    "the dummy broker handed over no socket within {timeout:?} ({err}); state: {}",
                    self.conn(0).map(|c| summary(&c)).unwrap_or_default()
                )
            });
        RawConn::from_stream(stream)
    }
}

impl Drop for DummyBroker {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
    }
}

fn summary(conn: &Conn) -> String {
    format!(
        "peer={:?} header={:02x?} start_ok={} tune_ok={} open={} unexpected={} before_open_ok={}B \
         after_open={}B eof={} error={:?} flood_written={} stalled={}",
        conn.peer,
        conn.header,
        conn.start_ok.is_some(),
        conn.tune_ok.is_some(),
        conn.open.is_some(),
        conn.unexpected.len(),
        conn.before_open_ok.len(),
        conn.after_open.len(),
        conn.eof,
        conn.error,
        conn.flood_written,
        conn.flood_stalled
    )
}

fn accept_loop(listener: TcpListener, script: Script, shared: Arc<Shared>) {
    while !shared.stop.load(Ordering::SeqCst) {
        match listener.accept() {
            Ok((stream, peer)) => {
                let _ = stream.set_nonblocking(false);
                let _ = stream.set_nodelay(true);
                let index = {
                    let mut conns = shared.conns.lock().unwrap();
                    conns.push(Conn {
                        peer: Some(peer),
                        ..Conn::default()
                    });
                    conns.len() - 1
                };
                let script = script.clone();
                let shared = shared.clone();
                thread::spawn(move || {
                    let mut session = Session {
                        stream,
                        index,
                        shared,
                    };
                    if let Err(why) = session.run(&script) {
                        session.update(|c| {
                            if c.error.is_none() {
                                c.error = Some(why)
                            }
                        });
                    }
                });
            }
            // Non-blocking accept so that the loop sees the stop flag.
            Err(err) if err.kind() == ErrorKind::WouldBlock => {
                thread::sleep(Duration::from_millis(5))
            }
            Err(_) => thread::sleep(Duration::from_millis(5)),
        }
    }
}

struct Session {
    stream: TcpStream,
    index: usize,
    shared: Arc<Shared>,
}

enum Step {
    Frame(Frame),
    Eof,
}

impl Session {
    fn update(&self, change: impl FnOnce(&mut Conn)) {
        let mut conns = self.shared.conns.lock().unwrap();
        change(&mut conns[self.index]);
    }

    fn stopped(&self) -> bool {
        self.shared.stop.load(Ordering::SeqCst)
    }

    fn write(&mut self, bytes: &[u8]) -> Result<(), String> {
        self.stream
            .set_write_timeout(Some(STEP_TIMEOUT))
            .map_err(|e| e.to_string())?;
        self.stream
            .write_all(bytes)
            .map_err(|e| format!("write failed: {e}"))
    }

    /// Reads exactly `n` bytes, polling the stop flag; `Ok(None)` on EOF.
    fn read_exact(&mut self, n: usize, timeout: Duration) -> Result<Option<Vec<u8>>, String> {
        let deadline = Instant::now() + timeout;
        let mut buf = vec![0u8; n];
        let mut filled = 0;
        while filled < n {
            if self.stopped() {
                return Err("broker stopped".into());
            }
            if Instant::now() >= deadline {
                return Err(format!("timed out after {filled} of {n} bytes"));
            }
            let _ = self
                .stream
                .set_read_timeout(Some(Duration::from_millis(100)));
            match self.stream.read(&mut buf[filled..]) {
                Ok(0) => return Ok(None),
                Ok(k) => filled += k,
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) if is_closed(&e) => return Ok(None),
                Err(e) => return Err(format!("read failed: {e}")),
            }
        }
        Ok(Some(buf))
    }

    /// Reads the next non-heartbeat frame of the handshake.
    fn next_frame(&mut self) -> Result<Step, String> {
        loop {
            let header = match self.read_exact(7, STEP_TIMEOUT)? {
                Some(h) => h,
                None => return Ok(Step::Eof),
            };
            let size = u32::from_be_bytes([header[3], header[4], header[5], header[6]]) as usize;
            if size > 1 << 20 {
                return Err(format!("handshake frame header {header:02x?} too large"));
            }
            let rest = match self.read_exact(size + 1, STEP_TIMEOUT)? {
                Some(r) => r,
                None => return Ok(Step::Eof),
            };
            let frame = Frame {
                kind: header[0],
                channel: u16::from_be_bytes([header[1], header[2]]),
                payload: rest[..size].to_vec(),
                end: rest[size],
            };
            if frame.kind == FRAME_HEARTBEAT {
                self.update(|c| c.handshake_heartbeats += 1);
                continue;
            }
            return Ok(Step::Frame(frame));
        }
    }

    /// Reads the next handshake frame and requires it to be `class.method`
    /// on channel 0; `Ok(None)` on EOF.
    fn expect(&mut self, class: u16, method: u16) -> Result<Option<Frame>, String> {
        match self.next_frame()? {
            Step::Eof => {
                self.update(|c| c.eof = true);
                Ok(None)
            }
            Step::Frame(frame) if frame.is_method(0, class, method) && frame.end == 0xce => {
                Ok(Some(frame))
            }
            Step::Frame(frame) => {
                let text = format!("expected {class}.{method}, got {}", frame.describe());
                self.update(|c| c.unexpected.push(frame));
                Err(text)
            }
        }
    }

    fn run(&mut self, script: &Script) -> Result<(), String> {
        match script.handshake {
            Handshake::CloseAfterAccept => return Ok(()),
            Handshake::SilentAfterAccept => {
                self.hold_until_stopped();
                return Ok(());
            }
            _ => {}
        }
        let header = match self.read_exact(8, STEP_TIMEOUT)? {
            Some(h) => h,
            None => {
                self.update(|c| c.eof = true);
                return Ok(());
            }
        };
        self.update(|c| c.header = header.clone());
        if header != PROTOCOL_HEADER {
            return Err(format!("bad protocol header {header:02x?}"));
        }
        if script.handshake == Handshake::DropAfterHeader {
            return Ok(());
        }
        let answers_last = script.handshake == Handshake::AnswersAfterOpen;
        if !answers_last {
            self.write(&broker_start())?;
        }

        let Some(start_ok) = self.expect(10, 11)? else {
            return Ok(());
        };
        self.update(|c| c.start_ok = Some(start_ok));
        match &script.handshake {
            Handshake::DropAfterStartOk => return Ok(()),
            Handshake::CloseAfterStartOk(code, text) => {
                self.write(&wire::close(*code, text, 10, 11))?;
                return self.drain_until_eof();
            }
            _ => {}
        }
        if !answers_last {
            self.write(&wire::tune(2047, 131_072, 60))?;
        }

        let Some(tune_ok) = self.expect(10, 31)? else {
            return Ok(());
        };
        self.update(|c| c.tune_ok = Some(tune_ok));
        let Some(open) = self.expect(10, 40)? else {
            return Ok(());
        };
        self.update(|c| c.open = Some(open));
        if answers_last {
            let mut start_and_tune = broker_start();
            start_and_tune.extend_from_slice(&wire::tune(2047, 131_072, 60));
            self.write(&start_and_tune)?;
        }
        if let Handshake::CloseAfterOpen(code, text) = &script.handshake {
            self.write(&wire::close(*code, text, 10, 40))?;
            return self.drain_until_eof();
        }

        if !script.linger_before_open_ok.is_zero() {
            let early = self.read_for(script.linger_before_open_ok)?;
            self.update(|c| c.before_open_ok = early);
        }
        let mut open_ok = wire::open_ok();
        open_ok.extend_from_slice(&script.open_ok_trailer);
        self.write(&open_ok)?;
        self.update(|c| c.open_ok_sent = true);

        match &script.after_open {
            AfterOpen::Echo => self.pump(true),
            AfterOpen::Hold => self.pump(false),
            AfterOpen::CloseTcp => Ok(()),
            AfterOpen::Flood {
                total,
                frame_payload,
                start_delay,
            } => self.flood(*total, *frame_payload, *start_delay),
            AfterOpen::Handover => {
                let stream = self.stream.try_clone().map_err(|e| e.to_string())?;
                let _ = stream.set_read_timeout(None);
                let _ = stream.set_write_timeout(None);
                self.shared
                    .handover
                    .lock()
                    .unwrap()
                    .send(stream)
                    .map_err(|e| e.to_string())
            }
        }
    }

    /// Collects whatever arrives during `during` (stops early on EOF).
    fn read_for(&mut self, during: Duration) -> Result<Vec<u8>, String> {
        let deadline = Instant::now() + during;
        let mut got = Vec::new();
        let mut buf = [0u8; 4096];
        while Instant::now() < deadline && !self.stopped() {
            let _ = self
                .stream
                .set_read_timeout(Some(Duration::from_millis(20)));
            match self.stream.read(&mut buf) {
                Ok(0) => break,
                Ok(k) => got.extend_from_slice(&buf[..k]),
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) if is_closed(&e) => break,
                Err(e) => return Err(format!("read failed: {e}")),
            }
        }
        Ok(got)
    }

    /// Records (and optionally echoes) everything until EOF or stop.
    fn pump(&mut self, echo: bool) -> Result<(), String> {
        let mut buf = vec![0u8; 64 * 1024];
        while !self.stopped() {
            let _ = self
                .stream
                .set_read_timeout(Some(Duration::from_millis(100)));
            match self.stream.read(&mut buf) {
                Ok(0) => {
                    self.update(|c| c.eof = true);
                    return Ok(());
                }
                Ok(k) => {
                    self.update(|c| c.after_open.extend_from_slice(&buf[..k]));
                    if echo {
                        let chunk = buf[..k].to_vec();
                        self.write(&chunk)?;
                    }
                }
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) if is_closed(&e) => {
                    self.update(|c| c.eof = true);
                    return Ok(());
                }
                Err(e) => return Err(format!("read failed: {e}")),
            }
        }
        Ok(())
    }

    /// Drains after a broker-side Close: records bytes, stops at EOF.
    fn drain_until_eof(&mut self) -> Result<(), String> {
        self.pump(false)
    }

    fn flood(&mut self, total: usize, frame_payload: usize, delay: Duration) -> Result<(), String> {
        // The script's delay is the behaviour (the flood starts late on
        // purpose); the stop flag is still watched meanwhile.
        wait::wait_until(wait::deadline_in(delay), || self.stopped());
        let one = wire::frame(wire::FRAME_BODY, 1, &wire::pattern(frame_payload, 7));
        let _ = self
            .stream
            .set_write_timeout(Some(Duration::from_millis(100)));
        let mut written = 0usize;
        let mut offset = 0usize;
        let mut last_progress = Instant::now();
        while written < total && !self.stopped() {
            match self.stream.write(&one[offset..]) {
                Ok(0) => return Err("write returned 0".into()),
                Ok(k) => {
                    written += k;
                    offset = (offset + k) % one.len();
                    last_progress = Instant::now();
                    self.update(|c| c.flood_written = written);
                }
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                    if last_progress.elapsed() >= Duration::from_secs(2) {
                        self.update(|c| c.flood_stalled = true);
                        break;
                    }
                }
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) if is_closed(&e) => {
                    self.update(|c| c.eof = true);
                    return Ok(());
                }
                Err(e) => return Err(format!("flood write failed: {e}")),
            }
        }
        self.update(|c| c.flood_done = true);
        self.hold_until_stopped();
        Ok(())
    }

    /// Holds the socket open without reading or writing until the broker is
    /// dropped (the test ends).
    fn hold_until_stopped(&self) {
        // Polling the stop flag is the only way to hear about the drop: the
        // thread owns no other channel to the test.
        while !self.stopped() {
            thread::sleep(Duration::from_millis(20));
        }
    }
}

/// The broker's Connection.Start (some RabbitMQ-like server properties).
pub fn broker_start() -> Vec<u8> {
    let capabilities = Table::new()
        .bool("publisher_confirms", true)
        .bool("basic.nack", true)
        .bool("authentication_failure_close", true);
    let properties = Table::new()
        .table("capabilities", &capabilities)
        .longstr("cluster_name", "dummy@broker")
        .longstr("product", "DummyBroker")
        .longstr("version", "0.0.0");
    wire::start(&properties, "AMQPLAIN PLAIN", "en_US")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::raw;

    #[test]
    fn a_normal_broker_completes_a_client_handshake_and_records_it() {
        let broker = DummyBroker::start(Script::new(AfterOpen::Echo));
        let mut client = RawConn::connect_local(broker.port());
        let open_ok = raw::client_handshake(&mut client, "kit-self-test", "/");
        assert_eq!(open_ok.to_bytes(), wire::open_ok());
        client.send(wire::HEARTBEAT);
        assert_eq!(client.expect_bytes(wire::HEARTBEAT.len()), wire::HEARTBEAT);
        let conn = broker.wait_conn(0, Duration::from_secs(10), |c| {
            c.after_open.len() >= wire::HEARTBEAT.len()
        });
        assert_eq!(
            conn.start_ok_method()
                .property("connection_name")
                .as_deref(),
            Some("kit-self-test")
        );
        assert_eq!(
            wire::parse_open(conn.open.as_ref().unwrap()).unwrap().0,
            "/"
        );
    }

    #[test]
    fn close_after_accept_closes_before_reading() {
        let broker =
            DummyBroker::start(Script::new(AfterOpen::Hold).handshake(Handshake::CloseAfterAccept));
        let mut client = RawConn::connect_local(broker.port());
        assert!(client.expect_eof_within(Duration::from_secs(10)).is_empty());
        assert!(broker.conn(0).unwrap().header.is_empty());
    }

    #[test]
    fn silent_after_accept_neither_answers_nor_closes() {
        let broker = DummyBroker::start(
            Script::new(AfterOpen::Hold).handshake(Handshake::SilentAfterAccept),
        );
        let mut client = RawConn::connect_local(broker.port());
        client.send(PROTOCOL_HEADER);
        client.expect_silence(Duration::from_millis(300));
        let conn = broker.wait_conn(0, Duration::from_secs(10), |_| true);
        assert!(conn.header.is_empty() && !conn.eof, "{}", summary(&conn));
    }

    #[test]
    fn close_after_start_ok_refuses_the_login() {
        let broker = DummyBroker::start(
            Script::new(AfterOpen::Hold)
                .handshake(Handshake::CloseAfterStartOk(403, "ACCESS_REFUSED".into())),
        );
        let mut client = RawConn::connect_local(broker.port());
        client.send(PROTOCOL_HEADER);
        client.expect_method(10, 10);
        client.send(&wire::default_start_ok("kit-refused"));
        let close = wire::parse_close(&client.expect_method(10, 50)).unwrap();
        assert_eq!((close.code, close.text.as_str()), (403, "ACCESS_REFUSED"));
    }
}
