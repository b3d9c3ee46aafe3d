//! Byte-level tests of the AMQP handshake through a real `amqpprox` process:
//! the client side (the proxy plays the broker up to `Connection.Open`:
//! golden Start and Tune frames, header handling, protocol errors, timeouts,
//! pipelined frames) and the broker side (the proxy replays the client's
//! handshake to a dummy broker: appended client properties, TuneOk verbatim,
//! normalised Open, broker Close and refused connects), plus the two logging
//! rules (no password in any log; the `Starting connection for:` line).
//!
//! Expected bytes are golden literals or built by the test's own mini-encoder
//! in `support/raw.rs`; these tests never use the crate's codec and never need
//! RabbitMQ. Every read has a deadline, so a wrong proxy fails, never hangs.

mod support;

use std::fs;
use std::net::{SocketAddr, TcpListener, ToSocketAddrs};
use std::path::Path;
use std::time::{Duration, Instant};

use support::dummy_broker::{AfterOpen, DummyBroker, Handshake, Script};
use support::proxy::{ProxyBuilder, ProxyProcess};
use support::raw::{self, parse_close, split_frames, CloseMethod, RawConn, Table, HEARTBEAT};

/// The proxy's synthesized Connection.Start, byte for byte (behaviour.md
/// §4.2): version 0-9, server properties `capabilities` (nine booleans, in
/// order), `cluster_name`, `copyright`, `product`, `version`; mechanisms
/// `PLAIN`; locales `en_US`. 379 bytes.
const GOLDEN_START: &[u8] = b"\
\x01\x00\x00\x00\x00\x01\x73\
\x00\x0a\x00\x0a\
\x00\x09\
\x00\x00\x01\x57\
\x0ccapabilitiesF\x00\x00\x00\xc7\
\x12publisher_confirmst\x01\
\x1aexchange_exchange_bindingst\x01\
\x0abasic.nackt\x01\
\x16consumer_cancel_notifyt\x01\
\x12connection.blockedt\x01\
\x13consumer_prioritiest\x01\
\x1cauthentication_failure_closet\x01\
\x10per_consumer_qost\x01\
\x0fdirect_reply_tot\x01\
\x0ccluster_nameS\x00\x00\x00\x0eamqpprox_cloud\
\x09copyrightS\x00\x00\x00\x2aCopyright (C) Bloomberg Finance L.P. 2016.\
\x07productS\x00\x00\x00\x08amqpprox\
\x07versionS\x00\x00\x00\x030.1\
\x00\x00\x00\x05PLAIN\
\x00\x00\x00\x05en_US\
\xce";

/// Connection.Tune: channel-max 2047, frame-max 131072, heartbeat 60.
const GOLDEN_TUNE: &[u8] =
    b"\x01\x00\x00\x00\x00\x00\x0c\x00\x0a\x00\x1e\x07\xff\x00\x02\x00\x00\x00\x3c\xce";

/// Connection.CloseOk.
const GOLDEN_CLOSE_OK: &[u8] = b"\x01\x00\x00\x00\x00\x00\x04\x00\x0a\x00\x33\xce";

/// The dummy broker's Connection.OpenOk (known-hosts empty).
const GOLDEN_OPEN_OK: &[u8] = b"\x01\x00\x00\x00\x00\x00\x05\x00\x0a\x00\x29\x00\xce";

/// The re-encoded Connection.Open for vhost `/`: reserved shortstr empty,
/// insist bit 0.
const GOLDEN_OPEN_ROOT: &[u8] = b"\x01\x00\x00\x00\x00\x00\x08\x00\x0a\x00\x28\x01/\x00\x00\xce";

/// The re-encoded Connection.Open for vhost `compat-a`.
const GOLDEN_OPEN_COMPAT_A: &[u8] =
    b"\x01\x00\x00\x00\x00\x00\x0f\x00\x0a\x00\x28\x08compat-a\x00\x00\xce";

/// Real clients' handshakes (see tests/fixtures/handshakes/README.md).
const FIXTURES: &[(&str, &[u8])] = &[
    (
        "pika-connect",
        include_bytes!("fixtures/handshakes/pika-connect.client.bin"),
    ),
    (
        "pika-vhost-compat-a",
        include_bytes!("fixtures/handshakes/pika-vhost-compat-a.client.bin"),
    ),
    (
        "aiopika-connect",
        include_bytes!("fixtures/handshakes/aiopika-connect.client.bin"),
    ),
    (
        "kombu-connect",
        include_bytes!("fixtures/handshakes/kombu-connect.client.bin"),
    ),
    (
        "amqplib-connect",
        include_bytes!("fixtures/handshakes/amqplib-connect.client.bin"),
    ),
    (
        "amqp091go-connect",
        include_bytes!("fixtures/handshakes/amqp091go-connect.client.bin"),
    ),
    (
        "java-connect",
        include_bytes!("fixtures/handshakes/java-connect.client.bin"),
    ),
    (
        "amqptools-connect",
        include_bytes!("fixtures/handshakes/amqptools-connect.client.bin"),
    ),
    (
        "rabbitmqc-connect",
        include_bytes!("fixtures/handshakes/rabbitmqc-connect.client.bin"),
    ),
    (
        "lapin-connect",
        include_bytes!("fixtures/handshakes/lapin-connect.client.bin"),
    ),
    (
        "lapin-vhost-compat-a",
        include_bytes!("fixtures/handshakes/lapin-vhost-compat-a.client.bin"),
    ),
    (
        "amqprs-connect",
        include_bytes!("fixtures/handshakes/amqprs-connect.client.bin"),
    ),
];

const PIKA_WRONG_PASSWORD: &[u8] =
    include_bytes!("fixtures/handshakes/pika-wrong-password.client.bin");

const ACCESS_REFUSED: &str = "ACCESS_REFUSED - Login was refused using authentication mechanism PLAIN. For details see the broker logfile.";

/// How long the proxy may take to close a socket it has given up on.
const CLOSE_WITHIN: Duration = Duration::from_secs(2);

// ---------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------

fn builder(dest_port: u16) -> ProxyBuilder {
    ProxyProcess::builder("127.0.0.1", dest_port)
        .shards(1)
        .proxied_handshake()
}

/// A dummy broker that records and holds, and a proxy in front of it.
fn proxy_with_broker(script: Script) -> (DummyBroker, ProxyProcess) {
    let broker = DummyBroker::start(script);
    let proxy = builder(broker.port()).start();
    (broker, proxy)
}

fn hold() -> Script {
    Script::new(AfterOpen::Hold)
}

/// Client connected, header sent and the golden Start read.
fn after_start(proxy: &ProxyProcess) -> RawConn {
    let mut client = RawConn::connect_local(proxy.port);
    client.send(raw::PROTOCOL_HEADER);
    assert_eq!(client.expect_bytes(GOLDEN_START.len()), GOLDEN_START);
    client
}

/// Client past StartOk, golden Tune read.
fn after_tune(proxy: &ProxyProcess) -> RawConn {
    let mut client = after_start(proxy);
    client.send(&raw::default_start_ok("raw-handshake"));
    assert_eq!(client.expect_bytes(GOLDEN_TUNE.len()), GOLDEN_TUNE);
    client
}

/// Reads until the proxy's Connection.Close (heartbeats skipped), checks
/// code, non-empty text and class/method ids, then requires EOF within 2 s.
fn expect_close_then_eof(client: &mut RawConn, code: u16, ids: &[(u16, u16)]) -> CloseMethod {
    let frame = loop {
        let frame = client
            .read_frame_within(Duration::from_secs(5))
            .unwrap_or_else(|err| panic!("expected Connection.Close {code}: {err}"));
        if frame.kind != raw::FRAME_HEARTBEAT {
            break frame;
        }
    };
    let close = parse_close(&frame).unwrap_or_else(|why| panic!("expected Close {code}: {why}"));
    assert_eq!(close.code, code, "reply code of {close:?}");
    assert!(
        !close.text.is_empty(),
        "reply text must not be empty: {close:?}"
    );
    assert!(
        ids.contains(&(close.class_id, close.method_id)),
        "class/method ids of {close:?}, expected one of {ids:?}"
    );
    let rest = client.expect_eof_within(CLOSE_WITHIN);
    assert!(rest.is_empty(), "unexpected bytes after Close: {rest:02x?}");
    close
}

/// gethostname(2), as the proxy sees it.
fn hostname() -> String {
    let mut buf = [0u8; 256];
    // SAFETY: the buffer is valid for its whole length.
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    assert_eq!(rc, 0, "gethostname failed");
    let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    String::from_utf8_lossy(&buf[..end]).into_owned()
}

/// A `key` = long string table entry, encoded by hand.
fn longstr_entry(key: &str, value: &str) -> Vec<u8> {
    let mut out = vec![key.len() as u8];
    out.extend_from_slice(key.as_bytes());
    out.push(b'S');
    out.extend_from_slice(&(value.len() as u32).to_be_bytes());
    out.extend_from_slice(value.as_bytes());
    out
}

/// A port nothing listens on (bound, read, released).
fn dead_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().port()
}

/// Every byte of every file under `dir`, with its path.
fn files_under(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    if let Ok(entries) = fs::read_dir(dir) {
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() {
                out.extend(files_under(&path));
            } else if let Ok(bytes) = fs::read(&path) {
                out.push((path.display().to_string(), bytes));
            }
        }
    }
    out
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

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
    std::thread::sleep(Duration::from_millis(1500));
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
    std::thread::sleep(Duration::from_millis(100));
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

// ---------------------------------------------------------------------------
// Broker side
// ---------------------------------------------------------------------------

/// Replays each real client's handshake through the proxy and checks what
/// the broker gets: the protocol header; the StartOk with the client's table
/// byte for byte plus `amqpprox_client` and `amqpprox_host` appended; the
/// TuneOk verbatim; a normalised Open; after OpenOk, the client's remaining
/// frames verbatim. The client gets the broker's OpenOk verbatim.
#[test]
fn real_client_handshakes_are_replayed_to_the_broker() {
    let (broker, proxy) = proxy_with_broker(hold());
    let host = hostname();
    for (index, (name, bytes)) in FIXTURES.iter().enumerate() {
        assert_eq!(&bytes[..8], raw::PROTOCOL_HEADER, "{name}");
        let frames = split_frames(&bytes[8..]);
        let (start_ok, tune_ok, open) = (&frames[0], &frames[1], &frames[2]);
        let rest: Vec<u8> = frames[3..].iter().flat_map(|f| f.to_bytes()).collect();
        let (vhost, _, _) = raw::parse_open(open).unwrap();

        let mut client = RawConn::connect_local(proxy.port);
        client.send(raw::PROTOCOL_HEADER);
        assert_eq!(
            client.expect_bytes(GOLDEN_START.len()),
            GOLDEN_START,
            "{name}"
        );
        client.send(&start_ok.to_bytes());
        assert_eq!(
            client.expect_bytes(GOLDEN_TUNE.len()),
            GOLDEN_TUNE,
            "{name}"
        );
        client.send(&tune_ok.to_bytes());
        client.send(&open.to_bytes());
        assert_eq!(
            client.expect_bytes(GOLDEN_OPEN_OK.len()),
            GOLDEN_OPEN_OK,
            "{name}: OpenOk"
        );
        client.send(&rest);
        broker.wait_after_open(index, rest.len(), Duration::from_secs(5));
        let conn = broker.conn(index).unwrap();

        assert_eq!(
            conn.header,
            raw::PROTOCOL_HEADER,
            "{name}: header to broker"
        );
        assert!(conn.unexpected.is_empty(), "{name}: {:?}", conn.unexpected);

        // StartOk: the client's table entries unchanged, two entries appended,
        // then mechanism, response and locale unchanged.
        let sent = raw::parse_start_ok(start_ok).unwrap();
        let egress_port = conn.peer.expect("broker peer").port();
        let mut table_body = sent.properties_raw[4..].to_vec();
        table_body.extend_from_slice(&longstr_entry(
            "amqpprox_client",
            &format!("127.0.0.1:{}", client.local_addr().port()),
        ));
        table_body.extend_from_slice(&longstr_entry(
            "amqpprox_host",
            &format!("(:{}) {}:{}", proxy.port, host, egress_port),
        ));
        let mut args = raw::longstr(&table_body);
        args.extend_from_slice(&start_ok.args()[sent.properties_raw.len()..]);
        let expected_start_ok = raw::method_frame(0, 10, 11, &args);
        let got_start_ok = conn.start_ok.as_ref().unwrap();
        if got_start_ok.to_bytes() != expected_start_ok {
            let got = conn.start_ok_method();
            panic!(
                "{name}: StartOk to the broker differs.\n got properties: {:?}\n amqpprox_client={:?} amqpprox_host={:?}\n mechanism={:?} response={:02x?} locale={:?}\n expected amqpprox_client=\"127.0.0.1:{}\" amqpprox_host=\"(:{}) {}:{}\"",
                got.properties.iter().map(|f| f.key.as_str()).collect::<Vec<_>>(),
                got.property("amqpprox_client"),
                got.property("amqpprox_host"),
                got.mechanism,
                got.response,
                got.locale,
                client.local_addr().port(),
                proxy.port,
                host,
                egress_port
            );
        }

        assert_eq!(
            conn.tune_ok.as_ref().unwrap().to_bytes(),
            tune_ok.to_bytes(),
            "{name}: TuneOk must reach the broker unchanged"
        );
        let expected_open: &[u8] = match vhost.as_str() {
            "/" => GOLDEN_OPEN_ROOT,
            "compat-a" => GOLDEN_OPEN_COMPAT_A,
            other => panic!("{name}: unexpected fixture vhost {other}"),
        };
        assert_eq!(
            conn.open.as_ref().unwrap().to_bytes(),
            expected_open,
            "{name}: Open to the broker (insist bit 0, reserved empty)"
        );
        assert_eq!(conn.after_open, rest, "{name}: frames after Open");
    }
}

#[test]
fn open_ok_and_bytes_after_it_are_forwarded_raw() {
    let mut trailer = raw::channel_open_ok(1);
    trailer.extend_from_slice(HEARTBEAT);
    trailer.extend_from_slice(&raw::method_frame(1, 85, 11, &[]));
    let (_broker, proxy) = proxy_with_broker(hold().open_ok_trailer(&trailer));
    let mut client = after_tune(&proxy);
    let mut write = raw::tune_ok(2047, 131_072, 60);
    write.extend_from_slice(&raw::open("/"));
    client.send(&write);
    let mut expected = GOLDEN_OPEN_OK.to_vec();
    expected.extend_from_slice(&trailer);
    assert_eq!(client.expect_bytes(expected.len()), expected);
}

#[test]
fn broker_close_after_start_ok_reaches_client() {
    let (broker, proxy) = proxy_with_broker(
        hold().handshake(Handshake::CloseAfterStartOk(403, ACCESS_REFUSED.into())),
    );
    let frames = split_frames(&PIKA_WRONG_PASSWORD[8..]);
    let mut client = after_start(&proxy);
    client.send(&frames[0].to_bytes());
    assert_eq!(client.expect_bytes(GOLDEN_TUNE.len()), GOLDEN_TUNE);
    let mut write = raw::tune_ok(2047, 131_072, 60);
    write.extend_from_slice(&raw::open("/"));
    client.send(&write);
    let frame = client
        .read_frame_within(Duration::from_secs(10))
        .expect("expected the broker's Close through the proxy");
    let close = parse_close(&frame).unwrap_or_else(|why| panic!("{why}"));
    assert_eq!((close.code, close.text.as_str()), (403, ACCESS_REFUSED));
    client.expect_eof_within(CLOSE_WITHIN);
    let conn = broker.conn(0).expect("the broker was contacted");
    assert_eq!(
        conn.start_ok_method().response,
        b"\x00guest\x00guest-wrong",
        "the SASL response must reach the broker unchanged"
    );
}

#[test]
fn broker_close_after_open_reaches_client() {
    let text = "NOT_ALLOWED - vhost nowhere not found";
    let (_broker, proxy) =
        proxy_with_broker(hold().handshake(Handshake::CloseAfterOpen(530, text.into())));
    let mut client = RawConn::connect_local(proxy.port);
    raw::client_handshake_until_open(&mut client, &raw::default_start_ok("raw-530"), "nowhere");
    let frame = client
        .read_frame_within(Duration::from_secs(10))
        .expect("expected the broker's Close through the proxy");
    let close = parse_close(&frame).unwrap_or_else(|why| panic!("{why}"));
    assert_eq!((close.code, close.text.as_str()), (530, text));
    client.expect_eof_within(CLOSE_WITHIN);
}

#[test]
fn refused_broker_connect_gives_close_320_naming_vhost() {
    let proxy = builder(dead_port()).connect_timeout_ms(1000).start();
    let mut client = RawConn::connect_local(proxy.port);
    raw::client_handshake_until_open(
        &mut client,
        &raw::default_start_ok("raw-refused"),
        "vhost-nobody-serves",
    );
    let frame = client
        .read_frame_within(Duration::from_secs(10))
        .expect("expected Connection.Close when no broker is reachable");
    let close = parse_close(&frame).unwrap_or_else(|why| panic!("{why}"));
    assert_eq!(close.code, 320, "{close:?}");
    assert!(
        close.text.contains("vhost-nobody-serves"),
        "the reply text must name the vhost: {close:?}"
    );
    client.expect_eof_within(CLOSE_WITHIN);
}

#[test]
fn broker_dropping_tcp_during_handshake_closes_client() {
    for (case, handshake) in [
        ("after header", Handshake::DropAfterHeader),
        ("after StartOk", Handshake::DropAfterStartOk),
    ] {
        let (_broker, proxy) = proxy_with_broker(hold().handshake(handshake));
        let mut client = RawConn::connect_local(proxy.port);
        raw::client_handshake_until_open(&mut client, &raw::default_start_ok("raw-drop"), "/");
        let got = client
            .read_until_eof(Duration::from_secs(10))
            .unwrap_or_else(|why| panic!("{case}: the client must be closed: {why}"));
        if !got.is_empty() {
            let frames = split_frames(&got);
            assert!(
                frames.len() == 1 && parse_close(&frames[0]).is_ok(),
                "{case}: only a Connection.Close may precede the EOF, got {got:02x?}"
            );
        }
    }
}

fn localhost_resolves_to(v6: bool) -> bool {
    ("localhost", 1)
        .to_socket_addrs()
        .map(|mut addrs| addrs.any(|a| a.is_ipv6() == v6))
        .unwrap_or(false)
}

fn assert_reaches_broker_via_localhost(bind: &str) {
    let addr: SocketAddr = bind.parse().unwrap();
    let broker = DummyBroker::start_on(addr, hold()).expect("dummy broker listens");
    assert!(
        localhost_resolves_to(addr.is_ipv6()),
        "`localhost` must resolve to an address of {bind}'s family for this test"
    );
    let proxy = ProxyProcess::builder("localhost", broker.port())
        .proxied_handshake()
        .shards(1)
        .connect_timeout_ms(1000)
        .start();
    let mut client = RawConn::connect_local(proxy.port);
    let open_ok = raw::client_handshake(&mut client, "raw-localhost", "/");
    assert_eq!(open_ok.to_bytes(), GOLDEN_OPEN_OK);
    let conn = broker.wait_conn(0, Duration::from_secs(5), |c| c.open_ok_sent);
    assert_eq!(conn.open.unwrap().to_bytes(), GOLDEN_OPEN_ROOT);
}

#[test]
fn destination_dns_localhost_reaches_ipv4_only_broker() {
    assert_reaches_broker_via_localhost("127.0.0.1:0");
}

// ---------------------------------------------------------------------------
// Logging
// ---------------------------------------------------------------------------

const SECRET: &str = "s3cr3t-pw-XYZ";

/// A full session with a distinctive password in the SASL PLAIN response.
fn session_with_secret(proxy: &ProxyProcess, connection_name: &str) {
    let mut client = RawConn::connect_local(proxy.port);
    let start_ok = raw::start_ok(
        &raw::client_properties(connection_name).encode(),
        "PLAIN",
        format!("\x00guest\x00{SECRET}").as_bytes(),
        "en_US",
    );
    raw::client_handshake_until_open(&mut client, &start_ok, "/");
    let open_ok = client
        .read_frame_within(Duration::from_secs(10))
        .expect("OpenOk");
    assert_eq!(open_ok.to_bytes(), GOLDEN_OPEN_OK);
    client.send(&raw::channel_open(1));
    client.send(&raw::close(200, "bye", 0, 0));
    drop(client);
}

#[test]
fn password_is_never_logged_even_at_trace() {
    let broker = DummyBroker::start(hold());
    let proxy = builder(broker.port()).verbosity(5).start();
    session_with_secret(&proxy, "raw-secret-check");
    let conn = broker.wait_conn(0, Duration::from_secs(5), |c| c.eof);
    assert_eq!(
        conn.start_ok_method().response,
        format!("\x00guest\x00{SECRET}").as_bytes(),
        "the broker must still get the password"
    );
    std::thread::sleep(Duration::from_millis(500));

    let hex: String = SECRET.bytes().map(|b| format!("{b:02x}")).collect();
    let hex_spaced: Vec<String> = SECRET.bytes().map(|b| format!("{b:02x}")).collect();
    let needles = [
        SECRET.to_string(),
        hex.clone(),
        hex.to_uppercase(),
        hex_spaced.join(" "),
    ];
    let mut sources = vec![
        ("stdout".to_string(), proxy.stdout().into_bytes()),
        ("stderr".to_string(), proxy.stderr().into_bytes()),
    ];
    sources.extend(files_under(&proxy.log_dir));
    for (source, bytes) in &sources {
        eprintln!("password check: {source}: {} bytes", bytes.len());
    }
    for (source, bytes) in &sources {
        for needle in &needles {
            assert!(
                !contains(bytes, needle.as_bytes()),
                "{source} contains the password (as {needle:?})"
            );
        }
    }
    assert!(
        !proxy.stderr().is_empty() || !files_under(&proxy.log_dir).is_empty(),
        "at -v 5 the proxy should log something; the check would be vacuous"
    );
}

#[test]
fn log_file_records_starting_connection_with_connection_name() {
    let broker = DummyBroker::start(hold());
    let proxy = builder(broker.port()).start();
    session_with_secret(&proxy, "raw-log-line-app");
    let wanted =
        r#"Starting connection for: connectionName="raw-log-line-app" tlsEnabled=insecure"#;
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let logs: Vec<(String, Vec<u8>)> = fs::read_dir(&proxy.log_dir)
            .map(|entries| {
                entries
                    .flatten()
                    .filter(|e| {
                        let name = e.file_name().to_string_lossy().into_owned();
                        name.starts_with("amqpprox_") && name.ends_with(".log")
                    })
                    .filter_map(|e| {
                        fs::read(e.path())
                            .ok()
                            .map(|b| (e.path().display().to_string(), b))
                    })
                    .collect()
            })
            .unwrap_or_default();
        if logs.iter().any(|(_, b)| contains(b, wanted.as_bytes())) {
            return;
        }
        if Instant::now() >= deadline {
            let listing: Vec<String> = files_under(&proxy.log_dir)
                .into_iter()
                .map(|(p, b)| format!("{p} ({} bytes)", b.len()))
                .collect();
            panic!(
                "no amqpprox_*.log in {} contains {wanted:?}; files: {listing:?}",
                proxy.log_dir.display()
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}
