//! PROXY protocol end to end: `SEND-PROXY` and `SEND-PROXY-V2` backends make
//! RabbitMQ (the `proxy_protocol = true` node of `ci/ensure-rabbitmq-extra.sh`)
//! see the client's real address; the exact header bytes, read by a
//! recorder in front of the dummy broker; `LISTEN ... PROXY` accepting v1
//! and v2 headers from a load balancer (also before TLS) and using their
//! source everywhere; garbage, a direct client and a silent one refused
//! with a clear log line.
//!
//! Owns the PROXY protocol contract seen from outside; never inspects the
//! proxy's internals and never skips.

#[path = "support/certs.rs"]
mod certs;
mod support;

use std::io::{Read, Write};
use std::net::{Ipv4Addr, Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use certs::{Pki, PROXY_NODE, PROXY_NODE_PORT};
use lapin::{Connection, ConnectionProperties};
use support::control::ctl;
use support::dummy_broker::{AfterOpen, DummyBroker, Script};
use support::proxy::{ProxyBuilder, ProxyProcess};
use support::raw::{self, Frame, RawConn};
use support::{blocking, unique_name};

const LIMIT: Duration = Duration::from_secs(30);
const V2_SIG: &[u8; 12] = b"\r\n\r\n\0\r\nQUIT\n";

fn builder() -> ProxyBuilder {
    ProxyProcess::builder("127.0.0.1", 5672)
        .without_simple_mode()
        .shards(2)
        .verbosity(4)
}

fn setup(proxy: &ProxyProcess, lines: &[String]) {
    for line in lines {
        assert_eq!(ctl(&proxy.control_socket, line), "", "reply to {line:?}");
    }
}

/// Stands for a broker that takes a PROXY header: records the header of
/// each connection, then relays the rest to `upstream` untouched.
struct Recorder {
    port: u16,
    headers: Arc<Mutex<Vec<Vec<u8>>>>,
}

impl Recorder {
    fn start(upstream: SocketAddr) -> Recorder {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind the recorder");
        let port = listener.local_addr().expect("addr").port();
        let headers = Arc::new(Mutex::new(Vec::new()));
        let seen = Arc::clone(&headers);
        thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(mut conn) = conn else { return };
                let _ = conn.set_read_timeout(Some(LIMIT));
                let header = read_header(&mut conn);
                seen.lock().unwrap().push(header);
                let Ok(up) = TcpStream::connect(upstream) else {
                    continue;
                };
                relay(conn, up);
            }
        });
        Recorder { port, headers }
    }

    fn header(&self, index: usize) -> Vec<u8> {
        support::poll_for(LIMIT, "a PROXY header recorded", || {
            self.headers.lock().unwrap().get(index).cloned()
        })
    }
}

/// A v1 line up to `\r\n`, or a v2 header by its length field.
fn read_header(conn: &mut TcpStream) -> Vec<u8> {
    let mut out = Vec::new();
    let mut byte = [0u8; 1];
    while out.len() < 16 {
        if conn.read(&mut byte).unwrap_or(0) == 0 {
            return out;
        }
        out.push(byte[0]);
        if out.starts_with(b"PROXY") && out.ends_with(b"\r\n") {
            return out;
        }
    }
    if out.starts_with(b"PROXY") {
        while !out.ends_with(b"\r\n") && conn.read(&mut byte).unwrap_or(0) == 1 {
            out.push(byte[0]);
        }
        return out;
    }
    let mut rest = vec![0u8; u16::from_be_bytes([out[14], out[15]]) as usize];
    let _ = conn.read_exact(&mut rest);
    out.extend(rest);
    out
}

fn relay(a: TcpStream, b: TcpStream) {
    let (a2, b2) = (a.try_clone().expect("clone"), b.try_clone().expect("clone"));
    for (mut from, mut to) in [(a, b2), (b, a2)] {
        thread::spawn(move || {
            let _ = from.set_read_timeout(None);
            let _ = std::io::copy(&mut from, &mut to);
            let _ = to.shutdown(Shutdown::Write);
        });
    }
}

// lapin's connector signature fixes the closure's large error type.
#[allow(clippy::result_large_err)]
async fn lapin_from(host: &str, port: u16, name: &str) -> (Connection, u16) {
    let socket = TcpStream::connect((host, port)).expect("connect to the proxy");
    let client_port = socket.local_addr().expect("local").port();
    socket.set_nonblocking(true).expect("non-blocking");
    let slot = Mutex::new(Some(lapin::tcp::TcpStream::from_std(socket).expect("wrap")));
    let uri = format!("amqp://guest:guest@localhost:{port}/%2f")
        .parse::<lapin::uri::AMQPUri>()
        .expect("uri");
    let props = ConnectionProperties::default().with_connection_name(name.into());
    let c = Connection::connector(
        uri,
        Box::new(move |_| {
            slot.lock()
                .expect("slot")
                .take()
                .ok_or_else(|| std::io::Error::other("socket used").into())
        }),
        props,
    )
    .await
    .unwrap_or_else(|e| panic!("lapin through the proxy from {host}: {e:?}"));
    (c, client_port)
}

#[tokio::test(flavor = "multi_thread")]
async fn rabbitmq_sees_the_client_address_through_send_proxy_v1_and_v2() {
    certs::require_extra_nodes();
    let proxy = builder().start();
    for flag in ["SEND-PROXY", "SEND-PROXY-V2"] {
        let mut lines = vec![
            format!("BACKEND ADD pp dc 127.0.0.1 {PROXY_NODE_PORT} {flag}"),
            "FARM ADD f round-robin pp".to_string(),
            "MAP DEFAULT f".to_string(),
        ];
        if flag == "SEND-PROXY" {
            lines.push(format!("LISTEN START {}", proxy.port));
        } else {
            lines.insert(0, "BACKEND DELETE pp".to_string());
        }
        setup(&proxy, &lines);
        // rabbitmqctl prints IPv6 peers as the tuple {0,0,0,0,0,0,0,1}.
        for (host, shown) in [("127.0.0.1", "127.0.0.1"), ("::1", "0.0.0.0.0.0.0.1")] {
            let name = unique_name(&format!("pp-{flag}-{host}"));
            let (c, client_port) = lapin_from(host, proxy.port, &name).await;
            let wanted = name.clone();
            let seen =
                blocking(move || certs::wait_node_connection(PROXY_NODE, &wanted, LIMIT)).await;
            assert!(
                (seen.peer_host == shown || seen.peer_host == host)
                    && seen.peer_port == client_port,
                "{flag} from {host}:{client_port}: RabbitMQ saw {}:{}",
                seen.peer_host,
                seen.peer_port
            );
            c.close(200, "done").await.expect("close");
        }
    }
}

#[test]
fn exact_header_bytes_v1_and_v2() {
    let broker = DummyBroker::start(Script::new(AfterOpen::Hold));
    let recorder = Recorder::start(broker.addr());
    let proxy = builder().start();
    let rport = recorder.port;
    setup(
        &proxy,
        &[
            format!("BACKEND ADD rec dc 127.0.0.1 {rport} SEND-PROXY"),
            "FARM ADD f round-robin rec".to_string(),
            "MAP DEFAULT f".to_string(),
            format!("LISTEN START {}", proxy.port),
        ],
    );
    let mut client = RawConn::connect_local(proxy.port);
    raw::client_handshake(&mut client, "v1-bytes", "/");
    let cport = client.local_addr().port();
    assert_eq!(
        String::from_utf8_lossy(&recorder.header(0)),
        format!("PROXY TCP4 127.0.0.1 127.0.0.1 {cport} {rport}\r\n")
    );
    // What follows the header is the client's handshake, unchanged.
    let conn = broker.wait_conn(0, LIMIT, |c| c.open.is_some());
    assert_eq!(conn.header, raw::PROTOCOL_HEADER);

    setup(
        &proxy,
        &[
            "BACKEND DELETE rec".to_string(),
            format!("BACKEND ADD rec dc 127.0.0.1 {rport} SEND-PROXY-V2"),
        ],
    );
    let mut client = RawConn::connect_local(proxy.port);
    raw::client_handshake(&mut client, "v2-bytes", "/");
    let cport = client.local_addr().port();
    let mut expected = V2_SIG.to_vec();
    expected.extend_from_slice(&[0x21, 0x11, 0x00, 0x0c, 127, 0, 0, 1, 127, 0, 0, 1]);
    expected.extend_from_slice(&cport.to_be_bytes());
    expected.extend_from_slice(&rport.to_be_bytes());
    assert_eq!(recorder.header(1), expected);
    assert_eq!(
        broker.wait_conn(1, LIMIT, |c| c.open.is_some()).header,
        raw::PROTOCOL_HEADER
    );
}

/// A proxy with `LISTEN START port PROXY` in front of a `SEND-PROXY`
/// backend: the recorder in front of the dummy broker.
fn proxy_listener(extra: &[&str]) -> (ProxyProcess, DummyBroker, Recorder) {
    let broker = DummyBroker::start(Script::new(AfterOpen::Hold));
    let recorder = Recorder::start(broker.addr());
    let mut b = builder();
    for arg in extra {
        b = b.arg(*arg);
    }
    let proxy = b.start();
    setup(
        &proxy,
        &[
            format!("BACKEND ADD rec dc 127.0.0.1 {} SEND-PROXY", recorder.port),
            "FARM ADD f round-robin rec".to_string(),
            "MAP DEFAULT f".to_string(),
            format!("LISTEN START {} PROXY", proxy.port),
        ],
    );
    (proxy, broker, recorder)
}

#[test]
fn ingress_proxy_v1_and_v2_headers_are_accepted_and_used() {
    let (proxy, broker, recorder) = proxy_listener(&[]);
    let rport = recorder.port;
    let port = proxy.port;

    // v1, cut in two writes.
    let mut client = RawConn::connect_local(port);
    let header = format!("PROXY TCP4 203.0.113.7 127.0.0.1 41000 {port}\r\n");
    client.send_split_at(header.as_bytes(), &[9], Duration::from_millis(50));
    raw::client_handshake(&mut client, "lb-v1", "/");
    let start_ok = broker
        .wait_conn(0, LIMIT, |c| c.open.is_some())
        .start_ok_method();
    assert_eq!(
        start_ok.property("amqpprox_client").as_deref(),
        Some("203.0.113.7:41000")
    );
    assert_eq!(
        String::from_utf8_lossy(&recorder.header(0)),
        format!("PROXY TCP4 203.0.113.7 127.0.0.1 41000 {rport}\r\n")
    );
    let conns = ctl(&proxy.control_socket, "CONN");
    assert!(conns.contains("ingressRemote=203.0.113.7:41000"), "{conns}");

    // v2 from an IPv6 client, with a TLV after the addresses.
    let mut client = RawConn::connect_local(port);
    let mut v2 = V2_SIG.to_vec();
    v2.extend_from_slice(&[0x21, 0x21, 0x00, 36 + 4]);
    v2.extend_from_slice(
        &"2001:db8::5"
            .parse::<std::net::Ipv6Addr>()
            .unwrap()
            .octets(),
    );
    v2.extend_from_slice(&std::net::Ipv4Addr::LOCALHOST.to_ipv6_mapped().octets());
    v2.extend_from_slice(&41001u16.to_be_bytes());
    v2.extend_from_slice(&port.to_be_bytes());
    v2.extend_from_slice(&[0x04, 0x00, 0x01, 0x00]); // PP2_TYPE_NOOP
    client.send(&v2);
    raw::client_handshake(&mut client, "lb-v2", "/");
    let start_ok = broker
        .wait_conn(1, LIMIT, |c| c.open.is_some())
        .start_ok_method();
    assert_eq!(
        start_ok.property("amqpprox_client").as_deref(),
        Some("[2001:db8::5]:41001")
    );
    assert_eq!(
        String::from_utf8_lossy(&recorder.header(1)),
        format!("PROXY TCP6 2001:db8::5 ::ffff:127.0.0.1 41001 {rport}\r\n")
    );

    // A balancer with nothing to say (UNKNOWN): the connection's own address.
    let mut client = RawConn::connect_local(port);
    client.send(b"PROXY UNKNOWN\r\n");
    raw::client_handshake(&mut client, "lb-unknown", "/");
    let cport = client.local_addr().port();
    let start_ok = broker
        .wait_conn(2, LIMIT, |c| c.open.is_some())
        .start_ok_method();
    assert_eq!(
        start_ok.property("amqpprox_client"),
        Some(format!("127.0.0.1:{cport}"))
    );
}

#[test]
fn connections_without_a_valid_header_are_refused() {
    let (proxy, broker, _recorder) = proxy_listener(&["--handshakeTimeoutMs", "1000"]);
    let port = proxy.port;
    let cases: [(&[u8], &str); 3] = [
        (
            b"GET / HTTP/1.1\r\n\r\n",
            "no PROXY protocol header: the connection starts with bytes 47 45 54 20 2f 20 48 54",
        ),
        (
            raw::PROTOCOL_HEADER,
            "(an AMQP protocol header: the client did not come through the load balancer)",
        ),
        (
            b"PROXY TCP4 1.2.3.4\r\n",
            "malformed PROXY v1 line 'PROXY TCP4 1.2.3.4'",
        ),
    ];
    for (bytes, logged) in cases {
        let mut client = RawConn::connect_local(port);
        let cport = client.local_addr().port();
        client.send(bytes);
        client.expect_eof_within(Duration::from_secs(5));
        let line = certs::wait_log(&proxy, &format!("127.0.0.1:{cport} on port {port}"), LIMIT);
        assert!(line.contains("WARN") && line.contains(logged), "{line}");
    }
    let client = RawConn::connect_local(port);
    let cport = client.local_addr().port();
    let started = Instant::now();
    let mut silent = client;
    silent.expect_eof_within(Duration::from_secs(5));
    assert!(
        started.elapsed() >= Duration::from_millis(900),
        "closed before the timeout"
    );
    let line = certs::wait_log(&proxy, &format!("127.0.0.1:{cport} on port {port}"), LIMIT);
    assert!(
        line.contains("no complete PROXY protocol header before the handshake timeout"),
        "{line}"
    );
    assert_eq!(broker.accepted(), 0, "no refused client may reach a broker");
}

/// Reads one frame off any byte stream.
fn read_frame(r: &mut impl Read) -> Frame {
    let mut head = [0u8; 7];
    r.read_exact(&mut head).expect("frame header");
    let size = u32::from_be_bytes([head[3], head[4], head[5], head[6]]) as usize;
    let mut rest = vec![0u8; size + 1];
    r.read_exact(&mut rest).expect("frame body");
    Frame {
        kind: head[0],
        channel: u16::from_be_bytes([head[1], head[2]]),
        payload: rest[..size].to_vec(),
        end: rest[size],
    }
}

#[test]
fn secure_listener_takes_the_proxy_header_before_tls() {
    let broker = DummyBroker::start(Script::new(AfterOpen::Hold));
    let proxy = builder().start();
    let pki = Pki::generate(proxy.dir(), "ingress");
    setup(
        &proxy,
        &[
            format!("TLS INGRESS KEY_FILE {}", pki.path("server.key")),
            format!("TLS INGRESS CERT_CHAIN_FILE {}", pki.path("server.pem")),
            format!("BACKEND ADD dummy dc 127.0.0.1 {}", broker.port()),
            "FARM ADD f round-robin dummy".to_string(),
            "MAP DEFAULT f".to_string(),
            format!("LISTEN START_SECURE {} PROXY", proxy.port),
        ],
    );
    let mut tcp = TcpStream::connect(("127.0.0.1", proxy.port)).expect("connect");
    tcp.set_read_timeout(Some(LIMIT)).expect("timeout");
    let mut v2 = V2_SIG.to_vec();
    v2.extend_from_slice(&[0x21, 0x11, 0x00, 0x0c, 198, 51, 100, 4, 127, 0, 0, 1]);
    v2.extend_from_slice(&5000u16.to_be_bytes());
    v2.extend_from_slice(&proxy.port.to_be_bytes());
    tcp.write_all(&v2).expect("write the PROXY header");

    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls_pemfile::certs(&mut pki.ca_pem().as_bytes()) {
        roots.add(cert.expect("CA PEM")).expect("add the CA");
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("versions")
    .with_root_certificates(roots)
    .with_no_client_auth();
    let name = rustls::pki_types::ServerName::try_from("localhost").expect("name");
    let session = rustls::ClientConnection::new(Arc::new(config), name).expect("session");
    let mut tls = rustls::StreamOwned::new(session, tcp);

    tls.write_all(raw::PROTOCOL_HEADER).expect("header");
    assert!(
        read_frame(&mut tls).is_method(0, 10, 10),
        "Connection.Start over TLS"
    );
    tls.write_all(&raw::default_start_ok("lb-tls"))
        .expect("start-ok");
    assert!(read_frame(&mut tls).is_method(0, 10, 30), "Connection.Tune");
    let mut rest = raw::tune_ok(2047, 131_072, 60);
    rest.extend_from_slice(&raw::open("/"));
    tls.write_all(&rest).expect("tune-ok, open");
    assert!(
        read_frame(&mut tls).is_method(0, 10, 41),
        "Connection.OpenOk"
    );
    let start_ok = broker
        .wait_conn(0, LIMIT, |c| c.open.is_some())
        .start_ok_method();
    assert_eq!(
        start_ok.property("amqpprox_client").as_deref(),
        Some("198.51.100.4:5000 TLS")
    );
    let conns = ctl(&proxy.control_socket, "CONN");
    assert!(conns.contains("ingressRemote=198.51.100.4:5000"), "{conns}");
}
