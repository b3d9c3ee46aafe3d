//! The stream handshake machines against a real RabbitMQ stream node: a
//! client's frames go through the server-role handshake, the captured hello
//! is replayed by the client-role machine to the private node that
//! `ci/ensure-rabbitmq-stream.sh` starts (127.0.0.20:5552 unless
//! `AMQPPROX_TEST_STREAM_ADDR` says otherwise), and the broker's answers are
//! checked: Open succeeds and the broker sees `amqpprox_client`, a real
//! Metadata response decodes and rewrites, a wrong password and an unknown
//! vhost come back as the protocol's codes.
//!
//! Blocking std sockets with read timeouts and an overall deadline; no
//! proxy process. Never skips: without the node, every test fails and says
//! which script starts it.

use amqpprox::streamproto::client::ReplayStep;
use amqpprox::streamproto::rewrite::{rewrite_metadata, rewrite_open};
use amqpprox::streamproto::server::{ServerConfig, PLAIN};
use amqpprox::streamproto::{
    encode_frame, key, response_code, split_frame, AddressMap, BrokerReplay, BrokerReplayError,
    ClientHello, CodeResponse, Endpoint, MetadataQuery, MetadataResponse, OpenRequest,
    OpenResponse, PeerPropertiesRequest, ReplayProgress, SaslAuthenticateRequest,
    SaslHandshakeRequest, ServerHandshake, ServerProgress, Tune, RESPONSE_FLAG,
};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::Command;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

const DEFAULT_ADDR: &str = "127.0.0.20:5552";
const NODE: &str = "amqpprox_stream@localhost";
/// Generous for a loaded two-core machine; a healthy node answers in ms.
const DEADLINE: Duration = Duration::from_secs(60);

fn broker_addr() -> String {
    std::env::var("AMQPPROX_TEST_STREAM_ADDR").unwrap_or_else(|_| DEFAULT_ADDR.to_string())
}

fn unique(prefix: &str) -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    format!("{prefix}-{}-{nanos}", std::process::id())
}

fn connect() -> TcpStream {
    let addr = broker_addr();
    let sock = TcpStream::connect(&addr).unwrap_or_else(|e| {
        panic!("cannot reach the stream node at {addr} ({e}): run ci/ensure-rabbitmq-stream.sh")
    });
    sock.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    sock.set_nodelay(true).unwrap();
    sock
}

/// What a client would send, run through the proxy's server-role handshake.
fn hello(user: &str, password: &str, vhost: &str, marker: &str) -> ClientHello {
    let mut bytes = Vec::new();
    PeerPropertiesRequest {
        correlation_id: 1,
        properties: vec![
            ("connection_name".into(), marker.into()),
            ("product".into(), "amqpprox-test".into()),
        ],
    }
    .encode(&mut bytes);
    SaslHandshakeRequest { correlation_id: 2 }.encode(&mut bytes);
    SaslAuthenticateRequest {
        correlation_id: 3,
        mechanism: PLAIN.into(),
        data: Some(format!("\0{user}\0{password}").into_bytes()),
    }
    .encode(&mut bytes);
    Tune {
        frame_max: 1_048_576,
        heartbeat: 60,
    }
    .encode_response(&mut bytes);
    OpenRequest {
        correlation_id: 4,
        vhost: vhost.into(),
    }
    .encode(&mut bytes);
    let mut hs = ServerHandshake::new(ServerConfig::default());
    match hs.receive(&bytes, &mut Vec::new()) {
        Ok(ServerProgress::Opened(h)) => *h,
        other => panic!("server-role handshake did not reach Open: {other:?}"),
    }
}

struct Opened {
    sock: TcpStream,
    response: OpenResponse,
    tune: Tune,
    buf: Vec<u8>,
}

/// Replays `hello` to the broker until Open is answered or refused.
fn replay(hello: &ClientHello, marker: &str) -> Result<Opened, BrokerReplayError> {
    let mut sock = connect();
    let mut out = Vec::new();
    let mut r = BrokerReplay::start(hello, &[("amqpprox_client", marker)], &mut out);
    let deadline = Instant::now() + DEADLINE;
    let mut chunk = [0u8; 4096];
    loop {
        if !out.is_empty() {
            sock.write_all(&out).expect("write to the broker");
            out.clear();
        }
        assert!(
            Instant::now() < deadline,
            "the broker did not finish the handshake"
        );
        let n = match sock.read(&mut chunk) {
            Ok(0) => panic!("the broker closed the connection during the handshake"),
            Ok(n) => n,
            Err(e) if would_block(&e) => continue,
            Err(e) => panic!("read from the broker: {e}"),
        };
        match r.receive(&chunk[..n], &mut out)? {
            ReplayProgress::NeedMore => {}
            ReplayProgress::Open {
                response,
                tune,
                from_broker,
            } => {
                return Ok(Opened {
                    sock,
                    response,
                    tune,
                    buf: from_broker,
                })
            }
        }
    }
}

fn would_block(e: &std::io::Error) -> bool {
    matches!(
        e.kind(),
        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
    )
}

impl Opened {
    fn send(&mut self, bytes: &[u8]) {
        self.sock.write_all(bytes).expect("write to the broker");
    }

    /// The next frame with key `want`, skipping heartbeats and anything else
    /// the broker pushes meanwhile; returns its body.
    fn frame(&mut self, want: u16) -> Vec<u8> {
        let deadline = Instant::now() + DEADLINE;
        let mut chunk = [0u8; 4096];
        loop {
            if let Some((f, used)) = split_frame(&self.buf, self.tune.frame_max.max(1 << 20))
                .expect("the broker's framing")
            {
                let (k, body) = (f.header.key, f.body.to_vec());
                self.buf.drain(..used);
                if k == want {
                    return body;
                }
                assert_ne!(
                    k,
                    key::CLOSE,
                    "the broker closed while 0x{want:04x} was awaited"
                );
                continue;
            }
            assert!(Instant::now() < deadline, "no frame 0x{want:04x} in time");
            match self.sock.read(&mut chunk) {
                Ok(0) => panic!("the broker closed while 0x{want:04x} was awaited"),
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
                Err(e) if would_block(&e) => {}
                Err(e) => panic!("read from the broker: {e}"),
            }
        }
    }

    /// Sends a request whose body is one stream name (Create with no
    /// arguments, Delete) and returns the response code.
    fn stream_command(&mut self, k: u16, correlation_id: u32, stream: &str) -> u16 {
        let mut out = Vec::new();
        encode_frame(&mut out, k, |o| {
            o.extend_from_slice(&correlation_id.to_be_bytes());
            o.extend_from_slice(&(stream.len() as u16).to_be_bytes());
            o.extend_from_slice(stream.as_bytes());
            if k == key::CREATE {
                o.extend_from_slice(&0u32.to_be_bytes());
            }
        });
        self.send(&out);
        let body = self.frame(k | RESPONSE_FLAG);
        let resp = CodeResponse::decode(k | RESPONSE_FLAG, &body).expect("a code response");
        assert_eq!(resp.correlation_id, correlation_id);
        resp.code
    }
}

/// The broker's view of its stream connections' client properties.
fn broker_client_properties() -> String {
    // The CLI finds the stream plugin's commands through an enabled-plugins
    // file; the node's own may be out of this user's reach.
    let dir = tempfile::tempdir().expect("a temporary directory");
    let plugins = dir.path().join("enabled_plugins");
    std::fs::write(&plugins, "[rabbitmq_stream].\n").expect("write enabled_plugins");
    let output = Command::new("rabbitmqctl")
        .args([
            "-n",
            NODE,
            "-q",
            "list_stream_connections",
            "client_properties",
        ])
        .env("RABBITMQ_ENABLED_PLUGINS_FILE", &plugins)
        .output()
        .expect("run rabbitmqctl");
    assert!(
        output.status.success(),
        "rabbitmqctl list_stream_connections failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

#[test]
fn open_succeeds_and_metadata_rewrites() {
    let marker = unique("amqpprox-streamproto");
    let h = hello("guest", "guest", "/", &marker);
    let mut conn = replay(&h, &marker).unwrap_or_else(|e| panic!("handshake refused: {e}"));
    assert_eq!(conn.response.code, response_code::OK);
    assert_eq!(conn.response.correlation_id, 4);
    let (host, port) = conn
        .response
        .advertised()
        .map(|(h, p)| (h.to_string(), p))
        .expect("the broker advertises an address");
    let addr = broker_addr();
    assert_eq!(
        format!("{host}:{port}"),
        addr,
        "the node advertises its listener"
    );

    // The broker sees the client's properties and the proxy's addition.
    let deadline = Instant::now() + DEADLINE;
    loop {
        let listed = broker_client_properties();
        if listed.contains(&marker) && listed.contains("amqpprox_client") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the broker never listed the connection {marker}: {listed}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }

    let stream = unique("amqpprox-streamproto-s");
    assert_eq!(
        conn.stream_command(key::CREATE, 10, &stream),
        response_code::OK
    );
    let mut query = Vec::new();
    MetadataQuery {
        correlation_id: 11,
        streams: vec![stream.clone(), "amqpprox-no-such-stream".into()],
    }
    .encode(&mut query);
    conn.send(&query);
    let body = conn.frame(key::METADATA | RESPONSE_FLAG);
    let mut md = MetadataResponse::decode(&body).expect("a real Metadata response decodes");
    assert_eq!(md.correlation_id, 11);
    assert_eq!(md.brokers.len(), 1, "{md:?}");
    assert_eq!(
        (md.brokers[0].host.as_str(), md.brokers[0].port),
        (host.as_str(), u32::from(port))
    );
    let ours = md
        .streams
        .iter()
        .find(|s| s.name == stream)
        .expect("our stream");
    assert_eq!(ours.code, response_code::OK);
    assert_eq!(ours.leader, md.brokers[0].reference);
    let missing = md
        .streams
        .iter()
        .find(|s| s.name == "amqpprox-no-such-stream")
        .expect("the missing stream is listed");
    assert_eq!(missing.code, response_code::STREAM_DOES_NOT_EXIST);

    // One map, both frames: the same proxy endpoint in each.
    let mut map = AddressMap::new();
    map.insert(
        Endpoint::new(host.clone(), port),
        Endpoint::new("proxy.example", 15552),
    );
    let mut open = conn.response.clone();
    assert_eq!(rewrite_open(&mut open, &map).rewritten, 1);
    assert_eq!(rewrite_metadata(&mut md, &map).rewritten, 1);
    assert_eq!(open.advertised(), Some(("proxy.example", 15552)));
    assert_eq!(
        (md.brokers[0].host.as_str(), md.brokers[0].port),
        ("proxy.example", 15552)
    );

    assert_eq!(
        conn.stream_command(key::DELETE, 12, &stream),
        response_code::OK
    );
}

#[test]
fn wrong_password_gives_authentication_failure() {
    let marker = unique("amqpprox-streamproto-badpw");
    let h = hello("guest", "not-the-password", "/", &marker);
    match replay(&h, &marker) {
        Err(e @ BrokerReplayError::Refused { .. }) => {
            assert_eq!(
                e,
                BrokerReplayError::Refused {
                    step: ReplayStep::SaslAuthenticate,
                    code: response_code::AUTHENTICATION_FAILURE
                }
            );
            assert_eq!(e.client_code(), 0x08);
        }
        Err(other) => panic!("expected a SASL refusal, got {other}"),
        Ok(_) => panic!("a wrong password was accepted"),
    }
}

#[test]
fn unknown_vhost_gives_vhost_access_failure() {
    let marker = unique("amqpprox-streamproto-novhost");
    let vhost = unique("amqpprox-no-such-vhost");
    let h = hello("guest", "guest", &vhost, &marker);
    match replay(&h, &marker) {
        Err(e) => {
            assert_eq!(
                e,
                BrokerReplayError::Refused {
                    step: ReplayStep::Open,
                    code: response_code::VIRTUAL_HOST_ACCESS_FAILURE
                }
            );
            assert_eq!(e.client_code(), 0x0c);
        }
        Ok(_) => panic!("an unknown vhost was accepted"),
    }
}
