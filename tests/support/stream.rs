//! The private stream nodes that `ci/ensure-rabbitmq-stream.sh --cluster`
//! starts (a standalone node on 127.0.0.20 and a three-node cluster on
//! 127.0.0.21-23, each with the Stream protocol on port 5552), and a proxy
//! with stream listeners in front of them, for the Stream protocol tests
//! whatever their client.
//!
//! Owns the nodes' addresses and the proxy's configuration; never speaks
//! the Stream protocol itself and never skips: a missing node fails the
//! test with the script to run.

use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use super::control::ctl_bin;
use super::proxy::{free_port, ProxyProcess};

pub const STANDALONE: &str = "127.0.0.20";
pub const STANDALONE_NODE: &str = "amqpprox_stream@localhost";
pub const STANDALONE_AMQP: u16 = 5700;
pub const CLUSTER: [&str; 3] = ["127.0.0.21", "127.0.0.22", "127.0.0.23"];
pub const CLUSTER_NODES: [&str; 3] = [
    "amqpprox_sc1@localhost",
    "amqpprox_sc2@localhost",
    "amqpprox_sc3@localhost",
];
pub const CLUSTER_AMQP: [u16; 3] = [5701, 5702, 5703];
pub const STREAM_PORT: u16 = 5552;

/// Panics unless the stream node at `host` accepts connections.
pub fn require_node(host: &str) {
    let addr: SocketAddr = format!("{host}:{STREAM_PORT}").parse().unwrap();
    if let Err(e) = TcpStream::connect_timeout(&addr, Duration::from_secs(10)) {
        panic!(
            "cannot reach the stream node at {addr} ({e}): run ci/ensure-rabbitmq-stream.sh --cluster"
        );
    }
}

/// The Python that has rstream (`AMQPPROX_TEST_STREAM_PYTHON`, or the venv
/// `ci/ensure-stream-clients.sh` makes); panics with that script's name when
/// it is missing.
pub fn rstream_python() -> PathBuf {
    let path = std::env::var_os("AMQPPROX_TEST_STREAM_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/stream-venv/bin/python")
        });
    assert!(
        path.exists(),
        "no Python with rstream at {}: run ci/ensure-stream-clients.sh",
        path.display()
    );
    path
}

/// The rstream test client (`tests/streamproto/rstream_client.py`) against
/// `addr` for `vhost`, with its mode and arguments, ready to run.
pub fn rstream_command(addr: SocketAddr, vhost: &str, args: &[&str]) -> Command {
    let script =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/streamproto/rstream_client.py");
    let mut command = Command::new(rstream_python());
    command
        .arg(script)
        .arg(addr.ip().to_string())
        .arg(addr.port().to_string())
        .args(args)
        .env("RSTREAM_VHOST", vhost);
    command
}

/// Runs the rstream client to its end; panics with its output unless it
/// succeeds, and returns its result line.
pub fn run_rstream(addr: SocketAddr, vhost: &str, args: &[&str]) -> String {
    let output = rstream_command(addr, vhost, args)
        .output()
        .expect("run the rstream client");
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        output.status.success(),
        "rstream client {args:?} failed with {}\nstdout:\n{stdout}\nstderr:\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    stdout.trim().to_string()
}

/// A proxy with no configuration, two shards.
pub fn proxy() -> ProxyProcess {
    ProxyProcess::builder("unused", 1)
        .without_simple_mode()
        .shards(2)
        .connect_timeout_ms(3000)
        .start()
}

/// Sends each control line; panics unless every one succeeds silently.
pub fn configure(proxy: &ProxyProcess, lines: &[String]) {
    for line in lines {
        let (reply, code) = ctl_bin(&proxy.control_socket, line);
        assert_eq!((reply.as_str(), code), ("", 0), "control line {line:?}");
    }
}

/// A stream listener on 127.0.0.1; returns its address.
pub fn listen(proxy: &ProxyProcess, options: &str) -> SocketAddr {
    let port = free_port();
    configure(
        proxy,
        &[format!("LISTEN START_STREAM 127.0.0.1:{port} {options}")
            .trim_end()
            .to_string()],
    );
    SocketAddr::from(([127, 0, 0, 1], port))
}

/// The standalone node as backend `s1` of farm `fs`, the default farm.
pub fn route_to_standalone(proxy: &ProxyProcess) {
    configure(
        proxy,
        &[
            format!("BACKEND ADD s1 dc1 {STANDALONE} {STANDALONE_AMQP}"),
            "FARM ADD fs round-robin s1".into(),
            "MAP DEFAULT fs".into(),
        ],
    );
}

/// The standalone node behind farm `fs`, the default farm; returns the
/// entry listener.
pub fn standalone_proxy() -> (ProxyProcess, SocketAddr) {
    require_node(STANDALONE);
    let proxy = proxy();
    route_to_standalone(&proxy);
    let entry = listen(&proxy, "");
    (proxy, entry)
}

/// Asserts from the proxy's logs that a client's `sessions` connections
/// (at least) went through it to a broker, and that none was refused for
/// want of a route.
pub fn assert_sessions_logged(proxy: &ProxyProcess, sessions: usize) {
    let logs = proxy.settled_log_files();
    let started = logs.matches("Starting connection for:").count();
    assert!(
        started >= sessions,
        "{started} broker connections, expected {sessions} at least:\n{logs}"
    );
    assert!(!logs.contains("not mapped"), "{logs}");
    assert!(!logs.contains("could not be mapped"), "{logs}");
}
