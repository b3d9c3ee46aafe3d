//! What the byte-level handshake tests share: the golden frames the proxy
//! must send (written literally, never from the crate's codec), the real
//! clients' captured handshakes, and small helpers to drive a raw client
//! and a dummy broker. Owns no test.
#![allow(dead_code)]

use std::fs;
use std::net::TcpListener;
use std::path::Path;
use std::time::Duration;

use crate::support::dummy_broker::{AfterOpen, DummyBroker, Script};
use crate::support::proxy::{ProxyBuilder, ProxyProcess};
use crate::support::raw::{self, parse_close, CloseMethod, RawConn};

/// The proxy's synthesized Connection.Start, byte for byte
/// (docs/sessions.md#client-handshake): version 0-9, server properties
/// `capabilities` (nine booleans, in order), `cluster_name`, `copyright`,
/// `product`, `version`; mechanisms `PLAIN`; locales `en_US`. 379 bytes.
pub const GOLDEN_START: &[u8] = b"\
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
pub const GOLDEN_TUNE: &[u8] =
    b"\x01\x00\x00\x00\x00\x00\x0c\x00\x0a\x00\x1e\x07\xff\x00\x02\x00\x00\x00\x3c\xce";

/// Connection.CloseOk.
pub const GOLDEN_CLOSE_OK: &[u8] = b"\x01\x00\x00\x00\x00\x00\x04\x00\x0a\x00\x33\xce";

/// The dummy broker's Connection.OpenOk (known-hosts empty).
pub const GOLDEN_OPEN_OK: &[u8] = b"\x01\x00\x00\x00\x00\x00\x05\x00\x0a\x00\x29\x00\xce";

/// The re-encoded Connection.Open for vhost `/`: reserved shortstr empty,
/// insist bit 0.
pub const GOLDEN_OPEN_ROOT: &[u8] =
    b"\x01\x00\x00\x00\x00\x00\x08\x00\x0a\x00\x28\x01/\x00\x00\xce";

/// The re-encoded Connection.Open for vhost `compat-a`.
pub const GOLDEN_OPEN_COMPAT_A: &[u8] =
    b"\x01\x00\x00\x00\x00\x00\x0f\x00\x0a\x00\x28\x08compat-a\x00\x00\xce";

/// Real clients' handshakes (see tests/fixtures/handshakes/README.md).
pub const FIXTURES: &[(&str, &[u8])] = &[
    (
        "pika-connect",
        include_bytes!("../fixtures/handshakes/pika-connect.client.bin"),
    ),
    (
        "pika-vhost-compat-a",
        include_bytes!("../fixtures/handshakes/pika-vhost-compat-a.client.bin"),
    ),
    (
        "aiopika-connect",
        include_bytes!("../fixtures/handshakes/aiopika-connect.client.bin"),
    ),
    (
        "kombu-connect",
        include_bytes!("../fixtures/handshakes/kombu-connect.client.bin"),
    ),
    (
        "amqplib-connect",
        include_bytes!("../fixtures/handshakes/amqplib-connect.client.bin"),
    ),
    (
        "amqp091go-connect",
        include_bytes!("../fixtures/handshakes/amqp091go-connect.client.bin"),
    ),
    (
        "java-connect",
        include_bytes!("../fixtures/handshakes/java-connect.client.bin"),
    ),
    (
        "amqptools-connect",
        include_bytes!("../fixtures/handshakes/amqptools-connect.client.bin"),
    ),
    (
        "rabbitmqc-connect",
        include_bytes!("../fixtures/handshakes/rabbitmqc-connect.client.bin"),
    ),
    (
        "lapin-connect",
        include_bytes!("../fixtures/handshakes/lapin-connect.client.bin"),
    ),
    (
        "lapin-vhost-compat-a",
        include_bytes!("../fixtures/handshakes/lapin-vhost-compat-a.client.bin"),
    ),
    (
        "amqprs-connect",
        include_bytes!("../fixtures/handshakes/amqprs-connect.client.bin"),
    ),
];

pub const PIKA_WRONG_PASSWORD: &[u8] =
    include_bytes!("../fixtures/handshakes/pika-wrong-password.client.bin");

pub const ACCESS_REFUSED: &str = "ACCESS_REFUSED - Login was refused using authentication mechanism PLAIN. For details see the broker logfile.";

/// How long the proxy may take to close a socket it has given up on.
pub const CLOSE_WITHIN: Duration = Duration::from_secs(2);

// ---------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------

pub fn builder(dest_port: u16) -> ProxyBuilder {
    ProxyProcess::builder("127.0.0.1", dest_port)
        .shards(1)
        .proxied_handshake()
}

/// A dummy broker that records and holds, and a proxy in front of it.
pub fn proxy_with_broker(script: Script) -> (DummyBroker, ProxyProcess) {
    let broker = DummyBroker::start(script);
    let proxy = builder(broker.port()).start();
    (broker, proxy)
}

pub fn hold() -> Script {
    Script::new(AfterOpen::Hold)
}

/// Client connected, header sent and the golden Start read.
pub fn after_start(proxy: &ProxyProcess) -> RawConn {
    let mut client = RawConn::connect_local(proxy.port);
    client.send(raw::PROTOCOL_HEADER);
    assert_eq!(client.expect_bytes(GOLDEN_START.len()), GOLDEN_START);
    client
}

/// Client past StartOk, golden Tune read.
pub fn after_tune(proxy: &ProxyProcess) -> RawConn {
    let mut client = after_start(proxy);
    client.send(&raw::default_start_ok("raw-handshake"));
    assert_eq!(client.expect_bytes(GOLDEN_TUNE.len()), GOLDEN_TUNE);
    client
}

/// Reads until the proxy's Connection.Close (heartbeats skipped), checks
/// code, non-empty text and class/method ids, then requires EOF within 2 s.
pub fn expect_close_then_eof(client: &mut RawConn, code: u16, ids: &[(u16, u16)]) -> CloseMethod {
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
pub fn hostname() -> String {
    let mut buf = [0u8; 256];
    // SAFETY: the buffer is valid for its whole length.
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    assert_eq!(rc, 0, "gethostname failed");
    let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    String::from_utf8_lossy(&buf[..end]).into_owned()
}

/// A `key` = long string table entry, encoded by hand.
pub fn longstr_entry(key: &str, value: &str) -> Vec<u8> {
    let mut out = vec![key.len() as u8];
    out.extend_from_slice(key.as_bytes());
    out.push(b'S');
    out.extend_from_slice(&(value.len() as u32).to_be_bytes());
    out.extend_from_slice(value.as_bytes());
    out
}

/// A port nothing listens on (bound, read, released).
pub fn dead_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().port()
}

/// Every byte of every file under `dir`, with its path.
pub fn files_under(dir: &Path) -> Vec<(String, Vec<u8>)> {
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

pub fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}
