//! A wrong password through the proxied handshake, against the real
//! RabbitMQ on 127.0.0.1:5672: a client without the
//! `authentication_failure_close` capability (RabbitMQ then closes the
//! socket right after the login) gets Close 403 saying the login was
//! probably refused, and the proxy logs it at WARN; a client with the
//! capability gets RabbitMQ's own Close, every field as RabbitMQ sent it.
//!
//! Needs RabbitMQ (fails, never skips, without it); ci/test.sh lists it.

#[path = "handshake_bytes/common.rs"]
mod common;
mod support;

use std::time::Duration;

use common::{builder, GOLDEN_CLOSE_OK};
use support::rabbit::{require_rabbitmq, RABBITMQ_PORT};
use support::raw::{self, parse_close, RawConn, Table};

const WITHIN: Duration = Duration::from_secs(10);

fn wrong_password_start_ok(properties: &Table) -> Vec<u8> {
    raw::start_ok(
        &properties.encode(),
        "PLAIN",
        b"\x00guest\x00definitely-not-the-password",
        "en_US",
    )
}

/// Runs the client handshake with `start_ok` through a proxy that answers
/// the handshake itself; returns the Close the client got.
fn refusal(start_ok: &[u8]) -> (raw::CloseMethod, support::proxy::ProxyProcess) {
    require_rabbitmq();
    let proxy = builder(RABBITMQ_PORT).start();
    let mut client = RawConn::connect_local(proxy.port);
    raw::client_handshake_until_open(&mut client, start_ok, "/");
    let frame = client
        .read_frame_within(WITHIN)
        .unwrap_or_else(|why| panic!("expected a Connection.Close: {why}"));
    let close = parse_close(&frame).unwrap_or_else(|why| panic!("{why}"));
    client.send(GOLDEN_CLOSE_OK);
    client.expect_eof_within(WITHIN);
    (close, proxy)
}

#[test]
fn without_the_capability_the_client_is_told_its_login_was_probably_refused() {
    let (close, proxy) = refusal(&wrong_password_start_ok(
        &Table::new().longstr("product", "raw-no-capabilities"),
    ));
    assert_eq!(close.code, 403, "{close:?}");
    assert!(close.text.contains("probably a refused login"), "{close:?}");
    assert_eq!((close.class_id, close.method_id), (0, 0));
    assert!(
        proxy.log_contains_within("probably a refused login", WITHIN),
        "{}",
        proxy.output()
    );
    let logs = proxy.log_files();
    let line = logs
        .lines()
        .find(|l| l.contains("probably a refused login"))
        .unwrap();
    assert!(line.contains("WARN"), "{line}");
}

#[test]
fn with_the_capability_the_client_gets_rabbitmqs_own_close() {
    let capabilities = Table::new().bool("authentication_failure_close", true);
    let start_ok = wrong_password_start_ok(
        &Table::new()
            .longstr("product", "raw-with-capabilities")
            .table("capabilities", &capabilities),
    );
    let (through, _proxy) = refusal(&start_ok);
    // The same login straight to RabbitMQ.
    let mut direct = RawConn::connect_local(RABBITMQ_PORT);
    direct.send(raw::PROTOCOL_HEADER);
    direct.expect_method(10, 10);
    direct.send(&start_ok);
    let frame = direct
        .read_frame_within(WITHIN)
        .unwrap_or_else(|why| panic!("RabbitMQ's Close: {why}"));
    let own = parse_close(&frame).unwrap_or_else(|why| panic!("{why}"));
    assert_eq!(own.code, 403, "{own:?}");
    assert_eq!(
        (
            through.code,
            &through.text,
            through.class_id,
            through.method_id
        ),
        (own.code, &own.text, own.class_id, own.method_id),
        "the client must get RabbitMQ's Close as RabbitMQ sent it"
    );
}
