//! Helpers of the limits and auth end-to-end tests (`tests/limits_e2e.rs`,
//! `tests/auth_e2e.rs`): a 2-shard proxy in front of the real RabbitMQ, a raw
//! client that plays the handshake up to `Open` and reports how the proxy
//! answered it (the broker's `OpenOk`, a `Connection.Close` with its fields
//! and delay, or a bare disconnect), and the sum of one `STAT` field.
//!
//! Owns no assertions about the proxy; every read is bounded; never skips
//! without RabbitMQ.
#![allow(dead_code)]

use std::time::{Duration, Instant};

use crate::support::proxy::ProxyProcess;
use crate::support::rabbit;
use crate::support::raw::{self, Frame, RawConn, Table};

/// A proxy with two shards in front of the local RabbitMQ.
pub fn proxy(extra: &[&str]) -> ProxyProcess {
    rabbit::require_rabbitmq();
    let mut b = ProxyProcess::builder(rabbit::RABBITMQ_HOST, rabbit::RABBITMQ_PORT)
        .shards(2)
        .arg("--cleanupIntervalMs")
        .arg("100");
    for a in extra {
        b = b.arg(*a);
    }
    b.start()
}

/// The control reply to `line`.
pub fn control(proxy: &ProxyProcess, line: &str) -> String {
    crate::support::control::ctl(&proxy.control_socket, line)
}

/// A `Connection.Close` as the client read it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Closed {
    pub code: u16,
    pub text: String,
    pub class: u16,
    pub method: u16,
}

/// How the proxy answered a client's `Open`.
pub enum Answer {
    /// The broker's `OpenOk`: the session is established.
    Open(RawConn),
    /// A `Connection.Close` (answered with `CloseOk`), and how long after the
    /// `Open` it came.
    Closed(Closed, Duration),
    /// The socket ended without a `Close`, this long after the `Open`.
    Dropped(Duration),
}

impl Answer {
    pub fn is_open(&self) -> bool {
        matches!(self, Answer::Open(_))
    }

    pub fn closed(&self) -> Option<&Closed> {
        match self {
            Answer::Closed(c, _) => Some(c),
            _ => None,
        }
    }

    pub fn describe(&self) -> String {
        match self {
            Answer::Open(_) => "OpenOk".into(),
            Answer::Closed(c, after) => format!("{c:?} after {after:?}"),
            Answer::Dropped(after) => format!("disconnected after {after:?}"),
        }
    }
}

/// A client's properties, with or without the
/// `authentication_failure_close` capability.
pub fn properties(connection_name: &str, failure_close: bool) -> Table {
    let capabilities = Table::new()
        .bool("authentication_failure_close", failure_close)
        .bool("publisher_confirms", true);
    Table::new()
        .longstr("product", "limits-e2e")
        .table("capabilities", &capabilities)
        .longstr("connection_name", connection_name)
}

/// PLAIN `StartOk` for `user`/`password` with `props`.
pub fn start_ok(props: &Table, user: &str, password: &str) -> Vec<u8> {
    let response = format!("\0{user}\0{password}");
    raw::start_ok(&props.encode(), "PLAIN", response.as_bytes(), "en_US")
}

/// Plays a client to `Open` on `vhost` with `start_ok` and `heartbeat`,
/// then reads the proxy's answer (within 15 s).
pub fn open_session(proxy: &ProxyProcess, vhost: &str, start_ok: &[u8], heartbeat: u16) -> Answer {
    let mut conn = RawConn::connect_local(proxy.port);
    conn.send(raw::PROTOCOL_HEADER);
    conn.expect_method(10, 10);
    conn.send(start_ok);
    conn.expect_method(10, 30);
    let mut rest = raw::tune_ok(2047, 131_072, heartbeat);
    rest.extend_from_slice(&raw::open(vhost));
    // Taken before the send: the proxy may read the Open and start its
    // refusal delay before this thread runs again after `send` returns.
    let sent = Instant::now();
    conn.send(&rest);
    read_answer_from(conn, sent)
}

/// The answer to an `Open` sent at `sent`.
pub fn read_answer_from(mut conn: RawConn, sent: Instant) -> Answer {
    loop {
        match conn.read_frame_within(Duration::from_secs(15)) {
            Ok(frame) if frame.is_method(0, 10, 41) => return Answer::Open(conn),
            Ok(frame) if frame.is_method(0, 10, 50) => {
                let after = sent.elapsed();
                let close = parse_close(&frame);
                let _ = conn.try_send(&raw::close_ok());
                return Answer::Closed(close, after);
            }
            // A heartbeat or anything else before the answer: read on.
            Ok(_) => continue,
            Err(e) if raw::is_closed(&e) => return Answer::Dropped(sent.elapsed()),
            Err(e) => panic!("no answer to Open within 15 s: {e}"),
        }
    }
}

/// The fields of a `Connection.Close` frame.
pub fn parse_close(frame: &Frame) -> Closed {
    let args = frame.args();
    let code = u16::from_be_bytes([args[0], args[1]]);
    let len = usize::from(args[2]);
    let text = String::from_utf8_lossy(&args[3..3 + len]).into_owned();
    let rest = &args[3 + len..];
    Closed {
        code,
        text,
        class: u16::from_be_bytes([rest[0], rest[1]]),
        method: u16::from_be_bytes([rest[2], rest[3]]),
    }
}

/// Closes an established raw session politely (Close, then its CloseOk).
pub fn close_session(mut conn: RawConn) {
    conn.send(&raw::close(200, "bye", 0, 0));
    let _ = conn.read_until_eof(Duration::from_secs(5));
}
