//! Byte-level tests of the broker side of the proxied handshake: the proxy
//! replays the client's handshake to a dummy broker (appended client
//! properties, TuneOk verbatim, normalised Open, broker Close and refused
//! connects), plus the two logging rules (no password in any log; the
//! `Starting connection for:` line).
//!
//! Expected bytes are golden literals or built by the test's own mini-encoder
//! in `testkit/src/wire.rs`; these tests never use the crate's codec and never need
//! RabbitMQ. Every read has a deadline, so a wrong proxy fails, never hangs.

#[path = "handshake_bytes/common.rs"]
mod common;
mod support;

use std::fs;
use std::net::{SocketAddr, ToSocketAddrs};
use std::time::Duration;

use common::*;
use support::dummy_broker::{DummyBroker, Handshake};
use support::proxy::ProxyProcess;
use support::raw::{self, parse_close, split_frames, RawConn, HEARTBEAT};

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

/// The replay does not wait for the broker: a broker that reads the whole
/// handshake (header, StartOk, TuneOk, Open) before it says anything still
/// opens the session, one round trip instead of three.
#[test]
fn the_whole_replay_reaches_a_broker_that_answers_only_after_the_open() {
    let (broker, proxy) = proxy_with_broker(hold().handshake(Handshake::AnswersAfterOpen));
    let mut client = after_tune(&proxy);
    let mut write = raw::tune_ok(2047, 131_072, 60);
    write.extend_from_slice(&raw::open("/"));
    client.send(&write);
    assert_eq!(
        client.expect_bytes(GOLDEN_OPEN_OK.len()),
        GOLDEN_OPEN_OK,
        "the broker's OpenOk"
    );
    let conn = broker.conn(0).expect("the broker's connection");
    assert!(conn.unexpected.is_empty(), "{:?}", conn.unexpected);
    assert_eq!(
        conn.open.as_ref().map(|f| f.to_bytes()),
        Some(GOLDEN_OPEN_ROOT.to_vec()),
        "the Open came before the broker's Start"
    );
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
    // Everything the session logs is written before the logs are searched:
    // its last line ends it, and the batching writer then goes quiet.
    proxy.log_contains_within("Session ended", Duration::from_secs(5));
    proxy.settled_log_files();

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
    let mut deadline = support::Deadline::within(Duration::from_secs(5));
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
        if !deadline.pause() {
            let listing: Vec<String> = files_under(&proxy.log_dir)
                .into_iter()
                .map(|(p, b)| format!("{p} ({} bytes)", b.len()))
                .collect();
            panic!(
                "no amqpprox_*.log in {} contains {wanted:?}; files: {listing:?}",
                proxy.log_dir.display()
            );
        }
    }
}
