//! What a client sees when the broker ends the handshake early, byte for
//! byte, with a dummy broker (no RabbitMQ): the broker's `Connection.Close`
//! reaches the client with the broker's class and method ids, and a broker
//! that closes its socket right after the login (RabbitMQ's answer to a
//! wrong password for a client without `authentication_failure_close`) is a
//! probable refused login: Close 403 saying so, logged at WARN, where a
//! hang-up at any other point stays a broker failure (320, ERROR).
//!
//! Expected bytes come from the tests' own mini-encoder (`support/raw`),
//! never from the crate's codec. Every read has a deadline.

#[path = "handshake_bytes/common.rs"]
mod common;
mod support;

use std::time::Duration;

use common::*;
use support::dummy_broker::{broker_start, DummyBroker, Handshake};
use support::proxy::ProxyProcess;
use support::raw::{self, RawConn};

const WITHIN: Duration = Duration::from_secs(10);

/// The log line (from the proxy's log files) that contains `needle`.
fn log_line(proxy: &ProxyProcess, needle: &str) -> String {
    assert!(
        proxy.log_contains_within(needle, WITHIN),
        "no log line with {needle:?}:\n{}",
        proxy.output()
    );
    proxy
        .log_files()
        .lines()
        .find(|l| l.contains(needle))
        .expect("the line was just seen")
        .to_string()
}

/// Reads exactly the bytes of `expected` and then EOF.
fn expect_exactly_then_eof(client: &mut RawConn, expected: &[u8]) {
    assert_eq!(
        client.expect_bytes(expected.len()),
        expected,
        "the client must get these bytes"
    );
    // The client acknowledges, as a well-behaved one does, so the proxy
    // closes without waiting out its CloseOk timer.
    client.send(GOLDEN_CLOSE_OK);
    let rest = client.expect_eof_within(CLOSE_WITHIN);
    assert!(rest.is_empty(), "unexpected bytes after Close: {rest:02x?}");
}

#[test]
fn broker_close_after_open_keeps_its_class_and_method_ids() {
    let text = "NOT_ALLOWED - vhost nowhere not found";
    let (_broker, proxy) =
        proxy_with_broker(hold().handshake(Handshake::CloseAfterOpen(530, text.into())));
    let mut client = RawConn::connect_local(proxy.port);
    raw::client_handshake_until_open(&mut client, &raw::default_start_ok("raw-530"), "nowhere");
    expect_exactly_then_eof(&mut client, &raw::close(530, text, 10, 40));
}

#[test]
fn broker_close_after_start_ok_keeps_its_class_and_method_ids() {
    let (_broker, proxy) = proxy_with_broker(
        hold().handshake(Handshake::CloseAfterStartOk(403, ACCESS_REFUSED.into())),
    );
    let mut client = RawConn::connect_local(proxy.port);
    raw::client_handshake_until_open(&mut client, &raw::default_start_ok("raw-403"), "/");
    expect_exactly_then_eof(&mut client, &raw::close(403, ACCESS_REFUSED, 10, 11));
}

#[test]
fn proxied_hang_up_after_login_is_a_probable_refused_login() {
    let (broker, proxy) = proxy_with_broker(hold().handshake(Handshake::DropAfterStartOk));
    let mut client = RawConn::connect_local(proxy.port);
    raw::client_handshake_until_open(&mut client, &raw::default_start_ok("raw-drop"), "prod");
    let text = "ACCESS_REFUSED - broker for vhost prod closed the connection right after \
                the login: probably a refused login (check the user name and password)";
    expect_exactly_then_eof(&mut client, &raw::close(403, text, 0, 0));
    assert!(
        broker.conn(0).and_then(|c| c.start_ok).is_some(),
        "the broker got the login"
    );
    let line = log_line(&proxy, "probably a refused login");
    assert!(line.contains("WARN"), "{line}");
}

#[test]
fn proxied_hang_up_before_login_stays_a_broker_failure() {
    let (_broker, proxy) = proxy_with_broker(hold().handshake(Handshake::DropAfterHeader));
    let mut client = RawConn::connect_local(proxy.port);
    raw::client_handshake_until_open(&mut client, &raw::default_start_ok("raw-drop"), "prod");
    let text = "CONNECTION_FORCED - broker for vhost prod closed the connection during the \
                handshake (while connection.start was expected)";
    expect_exactly_then_eof(&mut client, &raw::close(320, text, 0, 0));
    let line = log_line(&proxy, "while connection.start was expected");
    assert!(line.contains("ERROR"), "{line}");
}

#[test]
fn transparent_hang_up_after_login_is_a_probable_refused_login() {
    let broker = DummyBroker::start(hold().handshake(Handshake::DropAfterStartOk));
    // No vhost mapping: the broker answers the client itself.
    let proxy = ProxyProcess::builder("127.0.0.1", broker.port())
        .shards(1)
        .start();
    let mut client = RawConn::connect_local(proxy.port);
    client.send(raw::PROTOCOL_HEADER);
    let start = broker_start();
    assert_eq!(
        client.expect_bytes(start.len()),
        start,
        "the broker's own Start"
    );
    client.send(&raw::default_start_ok("raw-drop"));
    let text = "ACCESS_REFUSED - broker closed the connection right after the login: \
                probably a refused login (check the user name and password)";
    expect_exactly_then_eof(&mut client, &raw::close(403, text, 0, 0));
    let line = log_line(&proxy, "probably a refused login");
    assert!(line.contains("WARN"), "{line}");
}

#[test]
fn a_hang_up_after_the_login_is_answered_not_failed_over() {
    // Another member of the farm would refuse the same login: the client
    // is told at once, where a broker that fails before the login is
    // skipped (tests/broker_failover.rs).
    let dropper = DummyBroker::start(hold().handshake(Handshake::DropAfterStartOk));
    let good = DummyBroker::start(hold());
    let proxy = ProxyProcess::builder("unused", 1)
        .without_simple_mode()
        .shards(1)
        .start();
    for line in [
        format!("BACKEND ADD dropper dc1 127.0.0.1 {}", dropper.port()),
        format!("BACKEND ADD good dc1 127.0.0.1 {}", good.port()),
        "FARM ADD f round-robin dropper good".to_string(),
        // Mapped by vhost: the proxy answers the client's handshake.
        "MAP FARM / f".to_string(),
        format!("LISTEN START {}", proxy.port),
    ] {
        let reply = support::control::ctl(&proxy.control_socket, &line);
        assert_eq!(reply, "", "{line}");
    }
    // One shard: round-robin alternates the first member, so some of the
    // four sessions start at the dropper.
    let (mut opened, mut refused) = (0, 0);
    for i in 0..4 {
        let mut client = RawConn::connect_local(proxy.port);
        raw::client_handshake_until_open(
            &mut client,
            &raw::default_start_ok(&format!("drop-{i}")),
            "/",
        );
        let frame = client
            .read_frame_within(WITHIN)
            .unwrap_or_else(|e| panic!("session {i}: no answer: {e}"));
        if frame.is_method(0, 10, 41) {
            opened += 1;
        } else {
            let close = raw::parse_close(&frame).unwrap_or_else(|why| panic!("{why}"));
            assert_eq!(close.code, 403, "session {i}: {close:?}");
            assert!(close.text.contains("probably a refused login"), "{close:?}");
            refused += 1;
        }
    }
    // Failed over, all four would have opened.
    assert!(
        refused >= 1 && opened >= 1,
        "opened {opened}, refused {refused}"
    );
}
