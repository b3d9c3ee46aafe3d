//! Byte-level tests of the client side of the handshake through a real
//! `amqpprox` process, where the proxy plays the broker up to
//! `Connection.Open`: golden Start and Tune frames, header handling, protocol
//! errors, timeouts and pipelined frames. (The broker side and the logging
//! rules are in `broker_side_bytes.rs`.)
//!
//! Expected bytes are golden literals or built by the test's own mini-encoder
//! in `testkit/src/wire.rs`; these tests never use the crate's codec and never need
//! RabbitMQ. Every read has a deadline, so a wrong proxy fails, never hangs.

#[path = "handshake_bytes/common.rs"]
mod common;
mod support;

use std::time::{Duration, Instant};

use common::*;
use support::dummy_broker::DummyBroker;
use support::raw::{self, parse_close, split_frames, RawConn, Table, HEARTBEAT};

// ---------------------------------------------------------------------------
// Client side: protocol header and Connection.Start
// ---------------------------------------------------------------------------

#[test]
fn header_is_answered_with_golden_start() {
    let (_broker, proxy) = proxy_with_broker(hold());
    let mut client = RawConn::connect_local(proxy.port);
    client.send(raw::PROTOCOL_HEADER);
    let start = client.expect_bytes(GOLDEN_START.len());
    assert_eq!(
        start, GOLDEN_START,
        "Connection.Start differs from the golden bytes"
    );
    client.expect_silence(Duration::from_millis(200));
}

#[test]
fn header_split_into_single_bytes_is_answered_with_golden_start() {
    let (_broker, proxy) = proxy_with_broker(hold());
    let mut client = RawConn::connect_local(proxy.port);
    client.send_in_pieces(raw::PROTOCOL_HEADER, 1, Duration::from_millis(30));
    assert_eq!(client.expect_bytes(GOLDEN_START.len()), GOLDEN_START);
}

#[test]
fn legacy_header_is_answered_with_golden_start() {
    let (_broker, proxy) = proxy_with_broker(hold());
    let mut client = RawConn::connect_local(proxy.port);
    client.send(raw::LEGACY_HEADER);
    assert_eq!(client.expect_bytes(GOLDEN_START.len()), GOLDEN_START);
}

fn assert_header_rejected(first_write: &[u8]) {
    let (_broker, proxy) = proxy_with_broker(hold());
    let mut client = RawConn::connect_local(proxy.port);
    client.send(first_write);
    let got = client.read_until_eof(CLOSE_WITHIN).unwrap_or_else(|why| {
        panic!("after sending {first_write:02x?} the proxy must send the header and close: {why}")
    });
    assert_eq!(
        got,
        raw::PROTOCOL_HEADER,
        "after {first_write:02x?} expected exactly AMQP\\0\\0\\x09\\x01 then EOF"
    );
}

#[test]
fn http_header_gets_amqp_header_and_close() {
    assert_header_rejected(b"HTTP/1.1");
}

#[test]
fn amqp_0_8_header_gets_amqp_header_and_close() {
    assert_header_rejected(b"AMQP\x00\x00\x08\x00");
}

#[test]
fn first_read_longer_than_header_gets_amqp_header_and_close() {
    let mut first = raw::PROTOCOL_HEADER.to_vec();
    first.extend_from_slice(HEARTBEAT);
    assert_header_rejected(&first);
}

// ---------------------------------------------------------------------------
// Client side: StartOk, Tune, heartbeats, Open
// ---------------------------------------------------------------------------

#[test]
fn start_ok_is_answered_with_golden_tune() {
    let (_broker, proxy) = proxy_with_broker(hold());
    let mut client = after_start(&proxy);
    client.send(&raw::default_start_ok("raw-tune"));
    assert_eq!(client.expect_bytes(GOLDEN_TUNE.len()), GOLDEN_TUNE);
    // Nothing else until TuneOk/Open: the proxy waits for the client.
    client.expect_silence(Duration::from_millis(300));
}

#[test]
fn heartbeats_during_handshake_are_ignored() {
    let (broker, proxy) = proxy_with_broker(hold());
    let mut client = RawConn::connect_local(proxy.port);
    client.send(raw::PROTOCOL_HEADER);
    assert_eq!(client.expect_bytes(GOLDEN_START.len()), GOLDEN_START);
    client.send(HEARTBEAT);
    client.expect_silence(Duration::from_millis(100));
    client.send(&raw::default_start_ok("raw-heartbeats"));
    assert_eq!(client.expect_bytes(GOLDEN_TUNE.len()), GOLDEN_TUNE);
    client.send(HEARTBEAT);
    client.send(&raw::tune_ok(2047, 131_072, 60));
    client.send(HEARTBEAT);
    client.send(&raw::open("/"));
    assert_eq!(
        client.expect_bytes(GOLDEN_OPEN_OK.len()),
        GOLDEN_OPEN_OK,
        "the broker's OpenOk must reach the client"
    );
    let conn = broker.wait_conn(0, Duration::from_secs(5), |c| c.open.is_some());
    assert!(
        conn.unexpected.is_empty(),
        "broker saw {:?}",
        conn.unexpected
    );
    assert_eq!(conn.open.unwrap().to_bytes(), GOLDEN_OPEN_ROOT);
}

#[test]
fn client_close_during_handshake_gets_close_ok() {
    let (_broker, proxy) = proxy_with_broker(hold());
    for stage in ["after-start", "after-tune"] {
        let mut client = if stage == "after-start" {
            after_start(&proxy)
        } else {
            after_tune(&proxy)
        };
        client.send(&raw::close(200, "Goodbye", 0, 0));
        let frame = client
            .read_frame_within(Duration::from_secs(5))
            .unwrap_or_else(|err| panic!("{stage}: expected CloseOk: {err}"));
        assert_eq!(
            frame.to_bytes(),
            GOLDEN_CLOSE_OK,
            "{stage}: {}",
            frame.describe()
        );
        client.expect_eof_within(CLOSE_WITHIN);
    }
}

// ---------------------------------------------------------------------------
// Client side: protocol errors
// ---------------------------------------------------------------------------

#[test]
fn open_right_after_start_ok_is_closed_with_503() {
    let (broker, proxy) = proxy_with_broker(hold());
    let mut client = after_tune(&proxy);
    client.send(&raw::open("/"));
    expect_close_then_eof(&mut client, 503, &[(0, 0), (10, 40)]);
    assert_eq!(
        broker.accepted(),
        0,
        "no broker connection for a bad handshake"
    );
}

#[test]
fn tune_ok_before_start_ok_is_closed_with_503() {
    let (_broker, proxy) = proxy_with_broker(hold());
    let mut client = after_start(&proxy);
    client.send(&raw::tune_ok(2047, 131_072, 60));
    expect_close_then_eof(&mut client, 503, &[(0, 0), (10, 31)]);
}

#[test]
fn second_start_ok_is_closed_with_503() {
    let (_broker, proxy) = proxy_with_broker(hold());
    let mut client = after_tune(&proxy);
    client.send(&raw::default_start_ok("again"));
    expect_close_then_eof(&mut client, 503, &[(0, 0), (10, 11)]);
}

#[test]
fn channel_frame_before_open_is_closed_with_505() {
    let (_broker, proxy) = proxy_with_broker(hold());
    let mut client = after_tune(&proxy);
    client.send(&raw::tune_ok(2047, 131_072, 60));
    client.send(&raw::channel_open(1));
    expect_close_then_eof(&mut client, 505, &[(0, 0), (20, 10)]);
}

#[test]
fn channel_frame_right_after_header_is_closed_with_505() {
    let (_broker, proxy) = proxy_with_broker(hold());
    let mut client = after_start(&proxy);
    client.send(&raw::channel_open(1));
    expect_close_then_eof(&mut client, 505, &[(0, 0), (20, 10)]);
}

#[test]
fn bad_frame_end_during_handshake_is_closed_with_501() {
    let (_broker, proxy) = proxy_with_broker(hold());
    let mut client = after_start(&proxy);
    let mut start_ok = raw::default_start_ok("bad-end");
    *start_ok.last_mut().unwrap() = 0x00;
    client.send(&start_ok);
    expect_close_then_eof(&mut client, 501, &[(0, 0), (10, 11)]);
}

#[test]
fn start_ok_with_unknown_field_type_is_closed_with_502() {
    let (_broker, proxy) = proxy_with_broker(hold());
    let mut client = after_start(&proxy);
    let properties =
        Table::new()
            .longstr("product", "raw-test-client")
            .raw("mystery", b'Z', &[0, 0, 0, 1]);
    client.send(&raw::start_ok(
        &properties.encode(),
        "PLAIN",
        b"\x00guest\x00guest",
        "en_US",
    ));
    expect_close_then_eof(&mut client, 502, &[(0, 0), (10, 11)]);
}

// ---------------------------------------------------------------------------
// Client side: handshake timeout
// ---------------------------------------------------------------------------

/// Waits for the proxy to close a stalled client; a Close frame may come
/// first. Returns how long it took from `since`.
fn expect_timeout_close(client: &mut RawConn, since: Instant) -> Duration {
    let got = client
        .read_until_eof(Duration::from_secs(3))
        .unwrap_or_else(|why| {
            panic!("a stalled client must be closed by the handshake timeout: {why}")
        });
    let elapsed = since.elapsed();
    if !got.is_empty() {
        let frames = split_frames(&got);
        assert!(
            frames.len() == 1 && parse_close(&frames[0]).is_ok(),
            "only a Connection.Close may precede the EOF, got {got:02x?}"
        );
    }
    elapsed
}

#[test]
fn handshake_timeout_closes_client_stalled_after_header() {
    let broker = DummyBroker::start(hold());
    let proxy = builder(broker.port()).handshake_timeout_ms(500).start();
    let connected = Instant::now();
    let mut client = after_start(&proxy);
    let elapsed = expect_timeout_close(&mut client, connected);
    assert!(
        elapsed >= Duration::from_millis(300),
        "closed after {elapsed:?}, before the 500 ms timeout"
    );
}

#[test]
fn handshake_timeout_closes_silent_client() {
    let broker = DummyBroker::start(hold());
    let proxy = builder(broker.port()).handshake_timeout_ms(500).start();
    let connected = Instant::now();
    let mut client = RawConn::connect_local(proxy.port);
    let elapsed = expect_timeout_close(&mut client, connected);
    assert!(
        elapsed >= Duration::from_millis(300),
        "closed after {elapsed:?}, before the 500 ms timeout"
    );
}

#[test]
fn handshake_timeout_does_not_apply_after_open() {
    let broker = DummyBroker::start(hold());
    let proxy = builder(broker.port()).handshake_timeout_ms(500).start();
    let mut client = RawConn::connect_local(proxy.port);
    let open_ok = raw::client_handshake(&mut client, "raw-timeout-open", "/");
    assert_eq!(open_ok.to_bytes(), GOLDEN_OPEN_OK);
    // Three times the handshake timeout pass on purpose: the session must
    // outlive it once open.
    support::idle_for(Duration::from_millis(1500));
    client
        .try_send(HEARTBEAT)
        .expect("the session must outlive the handshake timeout");
    let got = broker.wait_after_open(0, HEARTBEAT.len(), Duration::from_secs(3));
    assert_eq!(got, HEARTBEAT);
    client.expect_silence(Duration::from_millis(100));
}

// ---------------------------------------------------------------------------
// Pipelining
// ---------------------------------------------------------------------------

#[test]
fn frames_pipelined_with_open_are_forwarded_after_open_ok() {
    let (broker, proxy) =
        proxy_with_broker(hold().linger_before_open_ok(Duration::from_millis(300)));
    let mut client = after_tune(&proxy);
    let mut pipelined = raw::channel_open(1);
    pipelined.extend_from_slice(&raw::channel_open(2));
    pipelined.extend_from_slice(&raw::basic_publish(1, "q"));
    let mut write = raw::tune_ok(2047, 131_072, 60);
    write.extend_from_slice(&raw::open("/"));
    write.extend_from_slice(&pipelined);
    client.send(&write);

    assert_eq!(client.expect_bytes(GOLDEN_OPEN_OK.len()), GOLDEN_OPEN_OK);
    let got = broker.wait_after_open(0, pipelined.len(), Duration::from_secs(5));
    // A short window on purpose, in which anything extra would show up.
    support::idle_for(Duration::from_millis(100));
    let conn = broker.conn(0).unwrap();
    assert!(
        conn.before_open_ok.is_empty(),
        "pipelined frames reached the broker before its OpenOk: {:02x?}",
        conn.before_open_ok
    );
    assert_eq!(conn.open.unwrap().to_bytes(), GOLDEN_OPEN_ROOT);
    assert_eq!(got, pipelined, "pipelined frames must arrive byte for byte");
    assert_eq!(
        conn.after_open, pipelined,
        "nothing else after the pipelined frames"
    );
}
