//! RabbitMQ Streams through the real proxy (`LISTEN START_STREAM`), with a
//! real client (Python's rstream) and the private stream nodes that
//! `ci/ensure-rabbitmq-stream.sh --cluster` starts (a standalone node on
//! 127.0.0.20 and a three-node cluster on 127.0.0.21-23, each with the
//! Stream protocol on port 5552).
//!
//! Owns the end-to-end contract of stream sessions: 10,000 messages
//! published with confirms and consumed through the proxy; the handshake as
//! the broker receives it (`amqpprox_client` among the client properties);
//! vhost routing to two farms; the codes a client sees for a wrong
//! password, an unknown vhost, a vhost the proxy cannot route and a dead
//! farm; locality on the cluster (the publisher on the stream's leader,
//! the consumer on a member, every connection through the proxy, checked
//! with `rabbitmq-streams`); a client in load-balancer mode converging;
//! sessions in `CONN` with their protocol. Never skips: a missing node or
//! client fails the test with the script to run.

mod support;

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::time::Duration;

use amqpprox::streamproto::{key, response_code, split_frame, MetadataQuery, Tune, RESPONSE_FLAG};
use support::control::ctl;
use support::proxy::{free_port, ProxyProcess};
use support::stream::{
    assert_sessions_logged, configure, listen, proxy, require_node, route_to_standalone,
    rstream_command, run_rstream, standalone_proxy, CLUSTER, CLUSTER_AMQP, CLUSTER_NODES,
    STANDALONE, STANDALONE_AMQP, STANDALONE_NODE, STREAM_PORT,
};

/// A client holding a producer and a consumer open (`hold` mode) until
/// dropped.
struct Held {
    child: Child,
    stdin: Option<ChildStdin>,
    /// Kept open until the client has exited, so its last line has
    /// somewhere to go.
    _stdout: BufReader<ChildStdout>,
}

impl Held {
    /// Starts `hold` with its connections named `name`-producer and
    /// `name`-consumer.
    fn start(addr: SocketAddr, vhost: &str, name: &str, args: &[&str]) -> Held {
        let mut child = rstream_command(addr, vhost, args)
            .env("RSTREAM_NAME", name)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start the rstream client");
        let stdin = child.stdin.take();
        let stdout = child.stdout.take().unwrap();
        // The client bounds its own waits (90 s each), so this read ends.
        let mut stdout = BufReader::new(stdout);
        let mut line = String::new();
        stdout
            .read_line(&mut line)
            .expect("read the client's first line");
        assert_eq!(line.trim(), "ready", "the held client did not get ready");
        Held {
            child,
            stdin,
            _stdout: stdout,
        }
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        if let Some(mut stdin) = self.stdin.take() {
            let _ = stdin.write_all(b"");
        }
        // Closing stdin ends the client; kill it if it lingers.
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while std::time::Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// An enabled-plugins file naming the stream plugin, for the CLI: it loads
/// the commands of the plugins that file names (`list_stream_connections`
/// is the stream plugin's). Written by the test itself, so that it does not
/// matter which checkout's `ci/ensure-rabbitmq-stream.sh` started the nodes.
fn cli_plugins_file() -> PathBuf {
    let path = std::env::temp_dir().join(format!(
        "amqpprox-stream-cli-{}-enabled_plugins",
        std::process::id()
    ));
    std::fs::write(&path, "[rabbitmq_stream].\n").expect("write the CLI's plugins file");
    // The CLI runs as the rabbitmq user; the file is only read.
    std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o644))
        .expect("make the CLI's plugins file readable");
    path
}

/// `rabbitmq-streams` (or `rabbitmqctl` with `ctl`) against a private
/// node, as the rabbitmq user (its Erlang cookie), bounded.
fn node_cli(tool: &str, node: &str, args: &[&str]) -> String {
    let plugins = cli_plugins_file();
    let output = Command::new("runuser")
        .args(["-u", "rabbitmq", "--", "env", "HOME=/var/lib/rabbitmq"])
        .arg(format!(
            "RABBITMQ_ENABLED_PLUGINS_FILE={}",
            plugins.display()
        ))
        .args(["timeout", "-k", "5", "60"])
        .arg(format!("/usr/lib/rabbitmq/bin/{tool}"))
        .args(["-q", "-n", node])
        .args(args)
        .output()
        .expect("run the RabbitMQ CLI");
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        output.status.success(),
        "{tool} -n {node} {args:?} failed with {}\nstdout:\n{stdout}\nstderr:\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    stdout
}

fn unique(prefix: &str) -> String {
    support::unique_name(prefix)
}

/// The cluster's nodes as backends c1-c3 in farm `fc`, each with a stream
/// listener of its own; returns the listeners.
fn cluster_backends(proxy: &ProxyProcess) -> Vec<SocketAddr> {
    for host in CLUSTER {
        require_node(host);
    }
    let mut lines: Vec<String> = (0..3)
        .map(|i| {
            format!(
                "BACKEND ADD c{} dc1 {} {}",
                i + 1,
                CLUSTER[i],
                CLUSTER_AMQP[i]
            )
        })
        .collect();
    lines.push("FARM ADD fc round-robin c1 c2 c3".into());
    configure(proxy, &lines);
    (0..3)
        .map(|i| listen(proxy, &format!("BACKEND=c{}", i + 1)))
        .collect()
}

#[test]
fn rstream_publishes_and_consumes_10000_messages_through_the_proxy() {
    let (proxy, entry) = standalone_proxy();
    let stream = unique("amqpprox-proxy");
    let line = run_rstream(entry, "/", &["roundtrip", &stream, "10000"]);
    assert_eq!(
        line,
        "published 10000 confirmed 10000 consumed 10000 in-order True"
    );
    // The client followed the rewritten addresses back to the proxy (a
    // locator, a producer and a consumer connection at least).
    assert_sessions_logged(&proxy, 2);
}

#[test]
fn deliver_chunks_larger_than_the_frame_size_pass_through() {
    // The broker's chunks are not bound by the agreed frame size (1 MiB);
    // 20,000 messages of 1 KiB published at once make chunks above it.
    let (proxy, entry) = standalone_proxy();
    let stream = unique("amqpprox-big-chunks");
    let output = rstream_command(entry, "/", &["roundtrip", &stream, "20000"])
        .env("RSTREAM_SIZE", "1024")
        .output()
        .expect("run the rstream client");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert_eq!(
        stdout.trim(),
        "published 20000 confirmed 20000 consumed 20000 in-order True",
        "stderr:\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let logs = proxy.settled_log_files();
    assert!(!logs.contains("bad frame"), "{logs}");
}

/// `STAT LISTEN json all` records as they arrive, read on a thread.
fn stat_records(proxy: &ProxyProcess) -> std::sync::mpsc::Receiver<serde_json::Value> {
    let mut socket =
        std::os::unix::net::UnixStream::connect(&proxy.control_socket).expect("control socket");
    socket.write_all(b"STAT LISTEN json all\n").unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(socket).lines().map_while(Result::ok) {
            let Ok(record) = serde_json::from_str(&line) else {
                continue;
            };
            if tx.send(record).is_err() {
                break;
            }
        }
    });
    rx
}

#[test]
fn the_broker_sees_the_replayed_handshake_and_conn_and_stat_show_stream_sessions() {
    let (proxy, entry) = standalone_proxy();
    let stats = stat_records(&proxy);
    let stream = unique("amqpprox-held");
    assert_eq!(
        run_rstream(
            SocketAddr::from(([127, 0, 0, 20], STREAM_PORT)),
            "/",
            &["create", &stream]
        ),
        "created"
    );
    let held = Held::start(entry, "/", &stream, &["hold", &stream]);

    let connections = node_cli(
        "rabbitmq-streams",
        STANDALONE_NODE,
        &["list_stream_connections", "client_properties"],
    );
    assert!(
        connections.contains("amqpprox_client") && connections.contains("127.0.0.1:"),
        "the broker's view of the stream connections:\n{connections}"
    );
    let conn = ctl(&proxy.control_socket, "CONN");
    assert!(
        conn.lines()
            .filter(|l| l.contains("vhost=/ protocol=stream"))
            .count()
            >= 2,
        "CONN:\n{conn}"
    );
    let json = ctl(&proxy.control_socket, "CONN json");
    assert!(json.contains("\"protocol\":\"stream\""), "{json}");
    // The vhost's statistics count the stream sessions and their bytes.
    let (mut active, mut received, mut sent) = (0, 0, 0);
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while (active < 2 || received == 0 || sent == 0) && std::time::Instant::now() < deadline {
        let Ok(record) = stats.recv_timeout(Duration::from_millis(500)) else {
            continue;
        };
        let vhost = &record["vhosts"]["/"];
        active = active.max(vhost["activeConnectionCount"].as_u64().unwrap_or(0));
        received += vhost["bytesReceived"].as_u64().unwrap_or(0);
        sent += vhost["bytesSent"].as_u64().unwrap_or(0);
    }
    assert!(
        active >= 2 && received > 0 && sent > 0,
        "vhost / in STAT: active {active}, received {received}, sent {sent}"
    );
    drop(held);
}

#[test]
fn refusals_reach_the_client_as_protocol_codes() {
    let (proxy, entry) = standalone_proxy();
    assert_eq!(
        run_rstream(entry, "/", &["refused", "guest", "wrong-password", "/"]),
        "refused AuthenticationFailure"
    );
    // Mapped (the default farm) but unknown to the broker.
    let unknown = unique("amqpprox-no-such-vhost");
    assert_eq!(
        run_rstream(entry, "/", &["refused", "guest", "guest", &unknown]),
        "refused VirtualHostAccessFailure"
    );
    // A farm whose only member is dead: a clear code, not a bare close.
    let dead_port = free_port();
    configure(
        &proxy,
        &[
            format!("BACKEND ADD dead dc1 127.0.0.1 {dead_port} STREAM-PORT={dead_port}"),
            "FARM ADD fdead round-robin dead".into(),
            "MAP FARM deadvhost fdead".into(),
        ],
    );
    assert_eq!(
        run_rstream(entry, "/", &["refused", "guest", "guest", "deadvhost"]),
        "refused StreamNotAvailable"
    );
    // A vhost the proxy cannot route at all.
    ctl(&proxy.control_socket, "MAP REMOVE_DEFAULT");
    assert_eq!(
        run_rstream(entry, "/", &["refused", "guest", "guest", "unmapped"]),
        "refused VirtualHostAccessFailure"
    );
    let logs = proxy.settled_log_files();
    assert!(
        logs.contains("no broker could be reached for vhost deadvhost"),
        "{logs}"
    );
    assert!(logs.contains("no route for vhost unmapped"), "{logs}");
}

#[test]
fn vhosts_route_to_two_farms() {
    let (proxy, entry) = standalone_proxy();
    cluster_backends(&proxy);
    // A vhost that exists only on the cluster.
    let vhost = unique("amqpprox-stream-vhost");
    node_cli("rabbitmqctl", CLUSTER_NODES[0], &["add_vhost", &vhost]);
    node_cli(
        "rabbitmqctl",
        CLUSTER_NODES[0],
        &["set_permissions", "-p", &vhost, "guest", ".*", ".*", ".*"],
    );
    configure(&proxy, &[format!("MAP FARM {vhost} fc")]);
    let routed = std::panic::catch_unwind(|| {
        let stream = unique("amqpprox-two-farms");
        assert_eq!(
            run_rstream(entry, &vhost, &["roundtrip", &stream, "500"]),
            "published 500 confirmed 500 consumed 500 in-order True"
        );
        // The same vhost sent to the standalone node is unknown there.
        configure(&proxy, &[format!("MAP FARM {vhost} fs")]);
        assert_eq!(
            run_rstream(entry, "/", &["refused", "guest", "guest", &vhost]),
            "refused VirtualHostAccessFailure"
        );
        // And "/" still goes to the standalone node.
        let stream = unique("amqpprox-default-farm");
        assert_eq!(
            run_rstream(entry, "/", &["roundtrip", &stream, "100"]),
            "published 100 confirmed 100 consumed 100 in-order True"
        );
    });
    node_cli("rabbitmqctl", CLUSTER_NODES[0], &["delete_vhost", &vhost]);
    if let Err(panic) = routed {
        std::panic::resume_unwind(panic);
    }
}

/// One stream connection as the cluster lists it.
#[derive(Debug)]
struct NodeConnection {
    /// The node's stream address the connection is on (`host:port`).
    node: String,
    /// The client's `connection_name` property.
    name: String,
    /// It came through the proxy (`amqpprox_client` is among its
    /// properties).
    via_proxy: bool,
}

/// Every stream connection of the cluster (any node lists them all).
fn cluster_connections() -> Vec<NodeConnection> {
    let json = node_cli(
        "rabbitmq-streams",
        CLUSTER_NODES[0],
        &[
            "list_stream_connections",
            "--formatter",
            "json",
            "conn_name",
            "client_properties",
        ],
    );
    let rows: Vec<serde_json::Value> =
        serde_json::from_str(&json).unwrap_or_else(|e| panic!("bad listing ({e}):\n{json}"));
    rows.iter()
        .map(|row| {
            let conn_name = row["conn_name"].as_str().unwrap_or_default();
            let property = |key: &str| {
                row["client_properties"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .find(|p| p[0] == key)
                    .and_then(|p| p[2].as_str().map(str::to_string))
            };
            NodeConnection {
                node: conn_name
                    .split(" -> ")
                    .nth(1)
                    .unwrap_or_default()
                    .to_string(),
                name: property("connection_name").unwrap_or_default(),
                via_proxy: property("amqpprox_client").is_some(),
            }
        })
        .collect()
}

/// The connections of the held client `name` while it runs: every one
/// came through the proxy, the producer's is on `leader`, the consumer's
/// on a node of the cluster (every node hosts a member: streams declared
/// over the Stream protocol span the cluster). Other tests' connections
/// (running at the same time) are told apart by name.
fn assert_placed(name: &str, leader: &str) {
    let connections: Vec<NodeConnection> = cluster_connections()
        .into_iter()
        .filter(|c| c.name.contains(name))
        .collect();
    assert!(
        connections.iter().all(|c| c.via_proxy),
        "a connection bypassed the proxy: {connections:?}"
    );
    let on = |name: &str| -> Vec<&str> {
        connections
            .iter()
            .filter(|c| c.name == name)
            .map(|c| c.node.as_str())
            .collect()
    };
    assert_eq!(
        on(&format!("{name}-producer")),
        vec![format!("{leader}:{STREAM_PORT}").as_str()],
        "{connections:?}"
    );
    let consumer = on(&format!("{name}-consumer"));
    assert_eq!(consumer.len(), 1, "{connections:?}");
    assert!(
        CLUSTER
            .iter()
            .any(|h| consumer[0] == format!("{h}:{STREAM_PORT}")),
        "{connections:?}"
    );
}

#[test]
fn a_plain_client_follows_metadata_to_the_leader_and_a_member() {
    let proxy = proxy();
    cluster_backends(&proxy);
    configure(&proxy, &["MAP DEFAULT fc".into()]);
    let entry = listen(&proxy, "");
    // Created directly on the third node, which places the leader there;
    // the client starts at the entry and must follow Metadata to it.
    let stream = unique("amqpprox-locality");
    let third = SocketAddr::from(([127, 0, 0, 23], STREAM_PORT));
    assert_eq!(run_rstream(third, "/", &["create", &stream]), "created");
    let held = Held::start(entry, "/", &stream, &["hold", &stream]);
    assert_placed(&stream, CLUSTER[2]);
    drop(held);
}

#[test]
fn a_load_balancer_mode_client_converges_within_the_farm() {
    let proxy = proxy();
    cluster_backends(&proxy);
    configure(&proxy, &["MAP DEFAULT fc".into()]);
    let entry = listen(&proxy, "");
    let stream = unique("amqpprox-lb");
    let second = SocketAddr::from(([127, 0, 0, 22], STREAM_PORT));
    assert_eq!(run_rstream(second, "/", &["create", &stream]), "created");
    let held = Held::start(entry, "/", &stream, &["hold", &stream, "lb"]);
    assert_placed(&stream, CLUSTER[1]);
    drop(held);
    // Each of the producer and the consumer (and a locator each) finds its
    // node within one round of the three-node farm.
    let logs = proxy.settled_log_files();
    let started = logs.matches("Starting connection for:").count();
    assert!(started <= 4 * 3, "{started} broker connections:\n{logs}");
}

/// A minimal Stream protocol client for the operator tests: it does the
/// handshake with the crate's own encoders and then reads whole frames.
struct RawClient {
    socket: TcpStream,
    pending: Vec<u8>,
}

impl RawClient {
    /// Connects, authenticates as guest, agrees `heartbeat` seconds and
    /// opens `vhost`; panics unless the Open response is OK.
    fn open(addr: SocketAddr, vhost: &str, heartbeat: u32) -> RawClient {
        use amqpprox::streamproto::{
            OpenRequest, PeerPropertiesRequest, SaslAuthenticateRequest, SaslHandshakeRequest,
        };
        let socket = TcpStream::connect_timeout(&addr, Duration::from_secs(10)).expect("connect");
        socket
            .set_read_timeout(Some(Duration::from_millis(200)))
            .unwrap();
        let mut client = RawClient {
            socket,
            pending: Vec::new(),
        };
        let mut out = Vec::new();
        PeerPropertiesRequest {
            correlation_id: 1,
            properties: vec![("connection_name".into(), "raw-operator-test".into())],
        }
        .encode(&mut out);
        client.send(&out);
        client.expect(key::PEER_PROPERTIES | RESPONSE_FLAG);
        out.clear();
        SaslHandshakeRequest { correlation_id: 2 }.encode(&mut out);
        client.send(&out);
        client.expect(key::SASL_HANDSHAKE | RESPONSE_FLAG);
        out.clear();
        SaslAuthenticateRequest {
            correlation_id: 3,
            mechanism: "PLAIN".into(),
            data: Some(b"\0guest\0guest".to_vec()),
        }
        .encode(&mut out);
        client.send(&out);
        client.expect(key::SASL_AUTHENTICATE | RESPONSE_FLAG);
        client.expect(key::TUNE);
        out.clear();
        Tune {
            frame_max: 1_048_576,
            heartbeat,
        }
        .encode_response(&mut out);
        OpenRequest {
            correlation_id: 4,
            vhost: vhost.into(),
        }
        .encode(&mut out);
        client.send(&out);
        let body = client.expect(key::OPEN | RESPONSE_FLAG);
        assert_eq!(
            &body[4..6],
            &response_code::OK.to_be_bytes(),
            "Open refused"
        );
        client
    }

    fn send(&mut self, bytes: &[u8]) {
        self.socket.write_all(bytes).expect("write to the proxy");
    }

    /// The next frame other than a heartbeat within `limit`: `Ok(None)` at
    /// the end of the connection, `Err(())` when none came in time.
    fn next_frame(&mut self, limit: Duration) -> Result<Option<(u16, Vec<u8>)>, ()> {
        let deadline = std::time::Instant::now() + limit;
        loop {
            while let Some((frame, used)) = split_frame(&self.pending, u32::MAX).expect("framing") {
                let item = (frame.header.key, frame.body.to_vec());
                self.pending.drain(..used);
                if item.0 != key::HEARTBEAT {
                    return Ok(Some(item));
                }
            }
            if std::time::Instant::now() >= deadline {
                return Err(());
            }
            let mut buf = [0u8; 4096];
            match std::io::Read::read(&mut self.socket, &mut buf) {
                Ok(0) => return Ok(None),
                Ok(n) => self.pending.extend_from_slice(&buf[..n]),
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) => {}
                Err(_) => return Ok(None),
            }
        }
    }

    /// The next frame, which must have `wanted` as its key; its body.
    fn expect(&mut self, wanted: u16) -> Vec<u8> {
        match self.next_frame(Duration::from_secs(30)) {
            Ok(Some((k, body))) if k == wanted => body,
            other => panic!("expected key 0x{wanted:04x}, got {other:?}"),
        }
    }

    fn metadata_query(&mut self, correlation_id: u32) {
        let mut out = Vec::new();
        MetadataQuery {
            correlation_id,
            streams: vec!["amqpprox-no-such-stream".into()],
        }
        .encode(&mut out);
        self.send(&out);
    }
}

/// The id of the only stream session in `CONN`.
fn only_stream_session(proxy: &ProxyProcess) -> String {
    let conn = ctl(&proxy.control_socket, "CONN");
    let ids: Vec<&str> = conn
        .lines()
        .filter(|l| l.contains("protocol=stream"))
        .filter_map(|l| l.strip_prefix("id=")?.split_whitespace().next())
        .collect();
    assert_eq!(ids.len(), 1, "CONN:\n{conn}");
    ids[0].to_string()
}

#[test]
fn a_silent_client_is_closed_by_the_broker() {
    // The control for the pause test below: without heartbeats from the
    // proxy, the broker ends a connection whose client says nothing.
    require_node(STANDALONE);
    let mut client = RawClient::open(SocketAddr::from(([127, 0, 0, 20], STREAM_PORT)), "/", 1);
    let mut ended = false;
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while std::time::Instant::now() < deadline {
        if let Ok(None) = client.next_frame(Duration::from_millis(500)) {
            ended = true;
            break;
        }
    }
    assert!(ended, "the broker kept a silent connection for 30 s");
}

#[test]
fn a_paused_session_is_kept_alive_and_a_graceful_disconnect_closes_both_sides() {
    let (proxy, entry) = standalone_proxy();
    // A one-second heartbeat: the broker would close a silent client
    // within a few seconds (the test above).
    let mut client = RawClient::open(entry, "/", 1);
    let id = only_stream_session(&proxy);
    client.metadata_query(10);
    client.expect(key::METADATA | RESPONSE_FLAG);

    assert_eq!(
        ctl(&proxy.control_socket, &format!("SESSION {id} PAUSE")),
        ""
    );
    client.metadata_query(11);
    // Held while paused, for well over the broker's heartbeat timeout.
    assert_eq!(
        client.next_frame(Duration::from_secs(8)),
        Err(()),
        "a paused session's request was answered"
    );
    assert_eq!(
        ctl(&proxy.control_socket, &format!("SESSION {id} UNPAUSE")),
        ""
    );
    client.expect(key::METADATA | RESPONSE_FLAG);

    assert_eq!(
        ctl(
            &proxy.control_socket,
            &format!("SESSION {id} DISCONNECT_GRACEFUL")
        ),
        ""
    );
    let close = client.expect(key::CLOSE);
    assert_eq!(&close[4..6], &response_code::OK.to_be_bytes());
    assert_eq!(
        client.next_frame(Duration::from_secs(30)),
        Ok(None),
        "the connection ends after the proxy's Close"
    );
    assert!(proxy.log_contains_within("Stream session ended (Proxy)", Duration::from_secs(30)));
}

#[test]
fn a_forced_disconnect_closes_the_client() {
    let (proxy, entry) = standalone_proxy();
    let mut client = RawClient::open(entry, "/", 60);
    let id = only_stream_session(&proxy);
    assert_eq!(
        ctl(
            &proxy.control_socket,
            &format!("SESSION {id} FORCE_DISCONNECT")
        ),
        ""
    );
    assert_eq!(client.next_frame(Duration::from_secs(30)), Ok(None));
}

/// A CA and a server certificate for 127.0.0.1 it signed, as PEM files in
/// `dir`: `ca.pem`, `server.pem`, `server.key`.
fn write_pki(dir: &std::path::Path) {
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair};
    let ca_key = KeyPair::generate().expect("CA key");
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
    // Names of their own: a leaf whose issuer reads as its subject would
    // look self-signed.
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "amqpprox stream test CA");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = ca_params.self_signed(&ca_key).expect("self-sign the CA");
    let key = KeyPair::generate().expect("server key");
    let mut server_params = CertificateParams::new(vec!["127.0.0.1".into(), "localhost".into()])
        .expect("server params");
    server_params
        .distinguished_name
        .push(DnType::CommonName, "amqpprox stream test server");
    let server = server_params
        .signed_by(&key, &ca, &ca_key)
        .expect("sign the server certificate");
    std::fs::write(dir.join("ca.pem"), ca.pem()).unwrap();
    std::fs::write(dir.join("server.pem"), server.pem()).unwrap();
    std::fs::write(dir.join("server.key"), key.serialize_pem()).unwrap();
}

#[test]
fn a_secure_stream_listener_serves_tls() {
    require_node(STANDALONE);
    let dir = tempfile::tempdir().unwrap();
    write_pki(dir.path());
    let proxy = proxy();
    for line in [
        format!(
            "TLS INGRESS KEY_FILE {}",
            dir.path().join("server.key").display()
        ),
        format!(
            "TLS INGRESS CERT_CHAIN_FILE {}",
            dir.path().join("server.pem").display()
        ),
    ] {
        let reply = ctl(&proxy.control_socket, &line);
        assert!(
            reply.is_empty() || reply.contains("not in force yet"),
            "reply to {line:?}: {reply:?}"
        );
    }
    route_to_standalone(&proxy);
    let port = free_port();
    configure(
        &proxy,
        &[format!("LISTEN START_STREAM_SECURE 127.0.0.1:{port}")],
    );
    let entry = SocketAddr::from(([127, 0, 0, 1], port));
    let stream = unique("amqpprox-tls");
    let output = rstream_command(entry, "/", &["roundtrip", &stream, "1000"])
        .env("RSTREAM_CAFILE", dir.path().join("ca.pem"))
        .output()
        .expect("run the rstream client");
    assert_eq!(
        String::from_utf8_lossy(&output.stdout).trim(),
        "published 1000 confirmed 1000 consumed 1000 in-order True",
        "stderr:\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let logs = proxy.settled_log_files();
    assert!(logs.contains("tlsEnabled=secured"), "{logs}");
}

#[test]
fn sigterm_drains_a_stream_session_with_a_close() {
    require_node(STANDALONE);
    let mut proxy = ProxyProcess::builder("unused", 1)
        .without_simple_mode()
        .shards(2)
        .arg("--drainTimeoutMs")
        .arg("20000")
        .start();
    route_to_standalone(&proxy);
    let entry = listen(&proxy, "");
    let mut client = RawClient::open(entry, "/", 60);
    client.metadata_query(10);
    client.expect(key::METADATA | RESPONSE_FLAG);

    // SAFETY: kill(2) on the proxy child's pid.
    assert_eq!(unsafe { libc::kill(proxy.pid() as i32, libc::SIGTERM) }, 0);
    let close = client.expect(key::CLOSE);
    assert_eq!(&close[4..6], &response_code::OK.to_be_bytes());
    assert!(
        String::from_utf8_lossy(&close[8..]).contains("shutting down"),
        "{close:?}"
    );
    assert_eq!(client.next_frame(Duration::from_secs(30)), Ok(None));
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(status) = proxy.try_exit_status() {
            break status;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the proxy did not exit once drained:\n{}",
            proxy.output()
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(status.code(), Some(0), "{}", proxy.output());
}

#[test]
fn draining_the_backend_moves_a_stream_session_with_a_close() {
    // Two members, so that draining one leaves the farm a route.
    require_node(STANDALONE);
    require_node(CLUSTER[0]);
    let proxy = proxy();
    configure(
        &proxy,
        &[
            format!("BACKEND ADD s1 dc1 {STANDALONE} {STANDALONE_AMQP}"),
            format!("BACKEND ADD c1 dc1 {} {}", CLUSTER[0], CLUSTER_AMQP[0]),
            "FARM ADD both round-robin s1 c1".into(),
            "MAP DEFAULT both".into(),
        ],
    );
    let entry = listen(&proxy, "");
    let mut client = RawClient::open(entry, "/", 60);
    client.metadata_query(10);
    client.expect(key::METADATA | RESPONSE_FLAG);
    let conn: serde_json::Value =
        serde_json::from_str(&ctl(&proxy.control_socket, "CONN json")).expect("CONN json");
    let backend = conn
        .as_array()
        .and_then(|all| all.iter().find(|s| s["protocol"] == "stream"))
        .and_then(|s| s["backend"].as_str())
        .unwrap_or_else(|| panic!("no stream session in {conn}"))
        .to_string();
    assert_eq!(
        ctl(&proxy.control_socket, &format!("BACKEND DRAIN {backend}")),
        ""
    );
    let close = client.expect(key::CLOSE);
    assert_eq!(&close[4..6], &response_code::OK.to_be_bytes());
    assert!(
        String::from_utf8_lossy(&close[8..]).contains("reconnect"),
        "{close:?}"
    );
    assert_eq!(client.next_frame(Duration::from_secs(30)), Ok(None));
}
