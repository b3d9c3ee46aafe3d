//! Byte-level tests of the established (pass-through) phase of a real
//! `amqpprox` process: after the broker's OpenOk, bytes must flow unchanged
//! both ways (small frames, a 1 MB body cut into many frames and odd-sized
//! writes, frame headers split across writes, heartbeats), a malformed or
//! oversized frame from either side must end the session, a close on one side
//! must reach the other promptly, a storm of short sessions (their first
//! chunks queued on the ring) delivers every byte before the FIN, and a
//! slow client must push back on the broker instead of growing the proxy's
//! memory.
//!
//! The broker side is the dummy broker's socket handed to the test after the
//! handshake; all frames are built by the test's own encoder in
//! `testkit/src/wire.rs`, never by the crate's codec. Every read has a deadline.

mod support;

use std::fs;
use std::thread;
use std::time::{Duration, Instant};

use support::dummy_broker::{AfterOpen, DummyBroker, Script};
use support::proxy::{ProxyBuilder, ProxyProcess};
use support::raw::{self, RawConn, HEARTBEAT};

/// How long the proxy may take to close both sockets after a fatal frame or
/// a close on the other side.
const CLOSE_WITHIN: Duration = Duration::from_secs(2);

/// The largest frame payload the proxy's Tune allows (frame-max 131072).
const MAX_PAYLOAD: usize = 131_072 - 8;

const GOLDEN_OPEN_OK: &[u8] = b"\x01\x00\x00\x00\x00\x00\x05\x00\x0a\x00\x29\x00\xce";

fn builder(dest_port: u16) -> ProxyBuilder {
    ProxyProcess::builder("127.0.0.1", dest_port)
        .shards(1)
        .proxied_handshake()
}

/// An established session: (broker, proxy, client socket, broker socket).
struct Session {
    _broker: DummyBroker,
    proxy: ProxyProcess,
    client: RawConn,
    server: RawConn,
}

fn established() -> Session {
    established_with(|b| b)
}

/// As [`established`], with extra proxy options.
fn established_with(customise: impl FnOnce(ProxyBuilder) -> ProxyBuilder) -> Session {
    let broker = DummyBroker::start(Script::new(AfterOpen::Handover));
    let proxy = customise(builder(broker.port())).start();
    let mut client = RawConn::connect_local(proxy.port);
    let open_ok = raw::client_handshake(&mut client, "raw-pump", "/");
    assert_eq!(open_ok.to_bytes(), GOLDEN_OPEN_OK);
    let server = broker.take_stream(Duration::from_secs(10));
    Session {
        _broker: broker,
        proxy,
        client,
        server,
    }
}

/// A few frames a client typically sends after the handshake.
fn client_frames() -> Vec<u8> {
    let mut out = raw::channel_open(1);
    out.extend_from_slice(&raw::basic_publish(1, "some-queue"));
    out.extend_from_slice(&raw::content_header(1, 5));
    out.extend_from_slice(&raw::frame(raw::FRAME_BODY, 1, b"hello"));
    out.extend_from_slice(HEARTBEAT);
    out.extend_from_slice(&raw::method_frame(0, 10, 60, &[])); // connection.blocked-ish
    out
}

/// A few frames a broker typically sends.
fn broker_frames() -> Vec<u8> {
    let mut out = raw::channel_open_ok(1);
    let mut deliver = raw::shortstr("ctag");
    deliver.extend_from_slice(&7u64.to_be_bytes());
    deliver.push(0);
    deliver.extend_from_slice(&raw::shortstr(""));
    deliver.extend_from_slice(&raw::shortstr("some-queue"));
    out.extend_from_slice(&raw::method_frame(1, 60, 60, &deliver));
    out.extend_from_slice(&raw::content_header(1, 3));
    out.extend_from_slice(&raw::frame(raw::FRAME_BODY, 1, b"abc"));
    out.extend_from_slice(HEARTBEAT);
    out
}

fn assert_same_bytes(what: &str, got: &[u8], expected: &[u8]) {
    if got == expected {
        return;
    }
    let first = got
        .iter()
        .zip(expected)
        .position(|(a, b)| a != b)
        .unwrap_or(got.len().min(expected.len()));
    panic!(
        "{what}: got {} bytes, expected {}; first difference at offset {first}",
        got.len(),
        expected.len()
    );
}

// ---------------------------------------------------------------------------
// Unchanged bytes
// ---------------------------------------------------------------------------

#[test]
fn frames_pass_through_unchanged_both_ways() {
    let mut s = established();
    let up = client_frames();
    s.client.send(&up);
    assert_same_bytes("client -> broker", &s.server.expect_bytes(up.len()), &up);
    let down = broker_frames();
    s.server.send(&down);
    assert_same_bytes(
        "broker -> client",
        &s.client.expect_bytes(down.len()),
        &down,
    );
    // And again, interleaved, to show the session stays usable.
    s.client.send(&up);
    s.server.send(&down);
    assert_same_bytes(
        "client -> broker (2)",
        &s.server.expect_bytes(up.len()),
        &up,
    );
    assert_same_bytes(
        "broker -> client (2)",
        &s.client.expect_bytes(down.len()),
        &down,
    );
    s.client.expect_silence(Duration::from_millis(100));
    s.server.expect_silence(Duration::from_millis(100));
}

/// basic.publish + header + a 1 MB body cut into max-size frames.
fn megabyte_message(seed: u32) -> Vec<u8> {
    let body = raw::pattern(1024 * 1024, seed);
    let mut out = raw::basic_publish(1, "big");
    out.extend_from_slice(&raw::content_header(1, body.len() as u64));
    out.extend_from_slice(&raw::body_frames(1, &body, MAX_PAYLOAD));
    out
}

#[test]
fn megabyte_body_in_many_frames_and_odd_writes_passes_both_ways() {
    let s = established();
    let up = megabyte_message(1);
    let down = megabyte_message(2);

    let mut client_writer = s.client.try_clone();
    let mut server_writer = s.server.try_clone();
    let up_copy = up.clone();
    let down_copy = down.clone();
    // Odd-sized writes: frame headers and ends land in the middle of writes.
    let w1 = thread::spawn(move || {
        client_writer.send_in_pieces(&up_copy, 7919, Duration::ZERO);
    });
    let w2 = thread::spawn(move || {
        server_writer.send_in_pieces(&down_copy, 5003, Duration::ZERO);
    });
    let mut server_reader = s.server.try_clone();
    let up_len = up.len();
    let r1 =
        thread::spawn(move || server_reader.read_exact_within(up_len, Duration::from_secs(30)));
    let mut client_reader = s.client.try_clone();
    let got_down = client_reader
        .read_exact_within(down.len(), Duration::from_secs(30))
        .expect("broker -> client megabyte");
    let got_up = r1.join().unwrap().expect("client -> broker megabyte");
    w1.join().unwrap();
    w2.join().unwrap();
    assert_same_bytes("client -> broker megabyte", &got_up, &up);
    assert_same_bytes("broker -> client megabyte", &got_down, &down);
}

#[test]
fn frame_header_split_across_writes_is_forwarded_unchanged() {
    let mut s = established();
    let mut up = raw::channel_open(1);
    up.extend_from_slice(&raw::basic_publish(1, "split"));
    // Cuts inside the first frame's 7-byte header, before its end octet and
    // inside the second frame's header.
    let cuts = [1, 3, 6, 9, 12, 15, 20];
    s.client
        .send_split_at(&up, &cuts, Duration::from_millis(40));
    assert_same_bytes("client -> broker", &s.server.expect_bytes(up.len()), &up);

    let down = broker_frames();
    s.server
        .send_split_at(&down, &cuts, Duration::from_millis(40));
    assert_same_bytes(
        "broker -> client",
        &s.client.expect_bytes(down.len()),
        &down,
    );
}

/// Many sessions opening at once keep one shard's turns busy, so their
/// first chunks go through the ring (docs/sessions.md#pass-through); each
/// client then leaves at once. Every session's bytes reach the broker
/// whole and in order, before the FIN.
#[test]
fn a_storm_of_short_sessions_delivers_every_byte_before_the_fin() {
    const SESSIONS: usize = 48;
    let broker = DummyBroker::start(Script::new(AfterOpen::Hold));
    let proxy = builder(broker.port()).start();
    let mut content = raw::content_header(1, 5);
    content.extend_from_slice(&raw::frame(raw::FRAME_BODY, 1, b"storm"));
    let writes = [
        raw::channel_open(1),
        raw::basic_publish(1, "storm"),
        content,
    ];
    let expected = writes.concat();
    let start = std::sync::Arc::new(std::sync::Barrier::new(SESSIONS));
    let clients: Vec<_> = (0..SESSIONS)
        .map(|i| {
            let (start, writes, port) = (start.clone(), writes.clone(), proxy.port);
            thread::spawn(move || {
                let mut client = RawConn::connect_local(port);
                raw::client_handshake(&mut client, &format!("storm-{i}"), "/");
                start.wait();
                for w in &writes {
                    client.send(w);
                }
                client.shutdown_write();
                client
            })
        })
        .collect();
    let _clients: Vec<RawConn> = clients.into_iter().map(|c| c.join().unwrap()).collect();
    for i in 0..SESSIONS {
        let conn = broker.wait_conn(i, Duration::from_secs(10), |c| c.eof);
        assert_same_bytes(&format!("session {i}"), &conn.after_open, &expected);
    }
}

#[test]
fn heartbeats_are_forwarded_both_ways() {
    let mut s = established();
    for _ in 0..3 {
        s.client.send(HEARTBEAT);
        assert_eq!(
            s.server.expect_bytes(8),
            HEARTBEAT,
            "client heartbeat to broker"
        );
        s.server.send(HEARTBEAT);
        assert_eq!(
            s.client.expect_bytes(8),
            HEARTBEAT,
            "broker heartbeat to client"
        );
    }
}

// ---------------------------------------------------------------------------
// Fatal frames and closes
// ---------------------------------------------------------------------------

/// Both sockets of the session must be closed within [`CLOSE_WITHIN`] of
/// `since`. Whatever the receiving side got first must be a prefix of `valid`
/// (the frames before the fatal one).
fn assert_both_closed(s: &mut Session, since: Instant, sender_is_client: bool, valid: &[u8]) {
    let (sender, receiver) = if sender_is_client {
        (&mut s.client, &mut s.server)
    } else {
        (&mut s.server, &mut s.client)
    };
    let side = if sender_is_client { "broker" } else { "client" };
    let got = receiver
        .read_until_eof(CLOSE_WITHIN)
        .unwrap_or_else(|why| panic!("{side} socket not closed after the bad frame: {why}"));
    assert!(
        valid.starts_with(&got),
        "{side} got bytes that are not a prefix of the valid frames: {:02x?}",
        &got[..got.len().min(64)]
    );
    let other = if sender_is_client { "client" } else { "broker" };
    let left = CLOSE_WITHIN
        .saturating_sub(since.elapsed())
        .max(Duration::from_millis(200));
    sender
        .read_until_eof(left)
        .unwrap_or_else(|why| panic!("{other} socket (sender of the bad frame) not closed: {why}"));
    assert!(
        since.elapsed() < CLOSE_WITHIN + Duration::from_millis(500),
        "closing took {:?}",
        since.elapsed()
    );
}

fn bad_end_case(from_client: bool) {
    let mut s = established();
    let valid = raw::channel_open(1);
    let mut bad = raw::basic_publish(1, "bad-end");
    *bad.last_mut().unwrap() = 0x00;
    let mut write = valid.clone();
    write.extend_from_slice(&bad);
    send_and_expect_both_closed(&mut s, from_client, &write, &valid);
}

#[test]
fn bad_frame_end_from_client_ends_session() {
    bad_end_case(true);
}

#[test]
fn bad_frame_end_from_broker_ends_session() {
    bad_end_case(false);
}

/// Sends `write` from one side; the other side gets `valid` (the frames
/// before the bad one), then both sockets close.
fn send_and_expect_both_closed(s: &mut Session, from_client: bool, write: &[u8], valid: &[u8]) {
    let since = Instant::now();
    if from_client {
        s.client.send(write);
    } else {
        s.server.send(write);
    }
    assert_both_closed(s, since, from_client, valid);
}

fn oversized_case(from_client: bool) {
    let mut s = established();
    let valid = HEARTBEAT.to_vec();
    let mut write = valid.clone();
    // A body frame header announcing 0x7fffffff bytes, then some payload.
    write.extend_from_slice(b"\x03\x00\x01\x7f\xff\xff\xff");
    write.extend_from_slice(&raw::pattern(64, 9));
    send_and_expect_both_closed(&mut s, from_client, &write, &valid);
}

#[test]
fn oversized_frame_from_client_ends_session() {
    oversized_case(true);
}

#[test]
fn oversized_frame_from_broker_ends_session() {
    oversized_case(false);
}

#[test]
fn broker_close_reaches_client_as_eof_after_pending_bytes() {
    let mut s = established();
    let down = broker_frames();
    s.server.send(&down);
    let since = Instant::now();
    drop(s.server);
    let got = s
        .client
        .read_until_eof(CLOSE_WITHIN)
        .unwrap_or_else(|why| panic!("the client must see EOF when the broker closes: {why}"));
    assert_same_bytes("bytes before the broker's close", &got, &down);
    assert!(since.elapsed() < CLOSE_WITHIN + Duration::from_millis(500));
    drop(s.proxy);
}

#[test]
fn client_close_reaches_broker_as_eof_after_pending_bytes() {
    let mut s = established();
    let up = client_frames();
    s.client.send(&up);
    let since = Instant::now();
    drop(s.client);
    let got = s
        .server
        .read_until_eof(CLOSE_WITHIN)
        .unwrap_or_else(|why| panic!("the broker must see EOF when the client closes: {why}"));
    assert_same_bytes("bytes before the client's close", &got, &up);
    assert!(since.elapsed() < CLOSE_WITHIN + Duration::from_millis(500));
    drop(s.proxy);
}

/// Segments the kernel has received on `socket` so far (`TCP_INFO`).
fn segments_in(socket: &std::net::TcpStream) -> u32 {
    use std::os::fd::AsRawFd;
    // SAFETY: an all-zero `tcp_info` is valid, and getsockopt writes at most
    // `len` bytes into it.
    let mut info: libc::tcp_info = unsafe { std::mem::zeroed() };
    let mut len = std::mem::size_of::<libc::tcp_info>() as libc::socklen_t;
    let rc = unsafe {
        libc::getsockopt(
            socket.as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_INFO,
            (&mut info as *mut libc::tcp_info).cast(),
            &mut len,
        )
    };
    assert_eq!(rc, 0, "TCP_INFO: {}", std::io::Error::last_os_error());
    info.tcpi_segs_in
}

#[test]
fn the_brokers_last_bytes_reach_the_client_with_the_fin_in_one_segment() {
    let mut s = established();
    // The broker's CloseOk leaves with its FIN, as RabbitMQ's often does:
    // queued with MSG_MORE, then pushed out by the shutdown.
    let close_ok: &[u8] = b"\x01\x00\x00\x00\x00\x00\x04\x00\x0a\x00\x33\xce";
    let before = segments_in(s.client.stream());
    {
        use std::os::fd::AsRawFd;
        let fd = s.server.stream().as_raw_fd();
        // SAFETY: a send from a live buffer on the test's own socket.
        let sent = unsafe {
            libc::send(
                fd,
                close_ok.as_ptr().cast(),
                close_ok.len(),
                libc::MSG_MORE | libc::MSG_NOSIGNAL,
            )
        };
        assert_eq!(sent, close_ok.len() as isize);
    }
    s.server
        .stream()
        .shutdown(std::net::Shutdown::Write)
        .expect("shut the broker's side down");
    let got = s
        .client
        .read_until_eof(CLOSE_WITHIN)
        .unwrap_or_else(|why| panic!("the client must see EOF when the broker closes: {why}"));
    assert_same_bytes("the broker's last bytes", &got, close_ok);
    let segments = segments_in(s.client.stream()) - before;
    assert_eq!(
        segments, 1,
        "the proxy sent the client's last bytes and its FIN in {segments} segments, not one"
    );
    drop(s.proxy);
}

// ---------------------------------------------------------------------------
// Backpressure
// ---------------------------------------------------------------------------

/// VmRSS of `pid` in bytes.
fn rss_bytes(pid: u32) -> u64 {
    let status = fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_else(|err| panic!("read /proc/{pid}/status: {err}"));
    let line = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .expect("VmRSS line");
    let kb: u64 = line
        .split_whitespace()
        .nth(1)
        .and_then(|v| v.parse().ok())
        .expect("VmRSS value");
    kb * 1024
}

const MB: usize = 1024 * 1024;

/// A client that stops reading must stall the broker's writes: the dummy
/// broker floods 128 MB of valid body frames and must block (no progress for
/// 2 s) before it has pushed 32 MB (kernel socket buffers on both hops
/// account for a few MB); the proxy's RSS must not grow by more than 32 MB.
/// Afterwards the client drains and every complete frame arrives intact.
#[test]
fn slow_client_stalls_broker_writes_and_bounds_proxy_memory() {
    const FRAME_PAYLOAD: usize = 65_536;
    let broker = DummyBroker::start(Script::new(AfterOpen::Flood {
        total: 128 * MB,
        frame_payload: FRAME_PAYLOAD,
        start_delay: Duration::from_millis(1500),
    }));
    let proxy = builder(broker.port()).start();
    let mut client = RawConn::connect_local(proxy.port);
    let open_ok = raw::client_handshake(&mut client, "raw-backpressure", "/");
    assert_eq!(open_ok.to_bytes(), GOLDEN_OPEN_OK);
    let baseline = rss_bytes(proxy.pid());

    // The client reads nothing from here on.
    let conn = broker.wait_conn(0, Duration::from_secs(90), |c| {
        c.flood_stalled || c.flood_done || c.eof
    });
    let grown = rss_bytes(proxy.pid()).saturating_sub(baseline);
    eprintln!(
        "backpressure: broker pushed {} bytes before stalling={}; proxy RSS {} -> +{} bytes",
        conn.flood_written, conn.flood_stalled, baseline, grown
    );
    assert!(
        conn.flood_stalled,
        "the broker pushed {} MB without ever blocking for 2 s (flood done={}, eof={}): \
         the proxy does not apply backpressure; its RSS grew by {} MB",
        conn.flood_written / MB,
        conn.flood_done,
        conn.eof,
        grown / MB as u64
    );
    assert!(
        conn.flood_written <= 32 * MB,
        "the broker pushed {} bytes (> 32 MB) before blocking",
        conn.flood_written
    );
    assert!(
        grown <= 32 * MB as u64,
        "proxy RSS grew by {} MB while the client was not reading (baseline {} MB)",
        grown / MB as u64,
        baseline / MB as u64
    );

    // Drain: every complete frame the broker wrote arrives intact, in order.
    let frame_len = FRAME_PAYLOAD + 8;
    let complete = conn.flood_written / frame_len;
    let expected = raw::frame(raw::FRAME_BODY, 1, &raw::pattern(FRAME_PAYLOAD, 7));
    for i in 0..complete {
        let got = client
            .read_exact_within(frame_len, Duration::from_secs(10))
            .unwrap_or_else(|err| panic!("drain frame {i} of {complete}: {err}"));
        assert!(got == expected, "flood frame {i} of {complete} corrupted");
    }
}

/// Shards that poll before sleeping (`--spinBeforeParkUs`) forward the
/// same bytes both ways.
#[test]
fn spinning_shards_forward_unchanged() {
    let mut s = established_with(|b| b.arg("--spinBeforeParkUs").arg("50"));
    let up = client_frames();
    s.client.send(&up);
    assert_eq!(s.server.expect_bytes(up.len()), up);
    s.server.send(HEARTBEAT);
    assert_eq!(s.client.expect_bytes(HEARTBEAT.len()), HEARTBEAT);
}
