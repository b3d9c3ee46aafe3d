//! A real Stream client (Python's rstream) through a test-only relay built
//! from the stream handshake machines, to the private stream node that
//! `ci/ensure-rabbitmq-stream.sh` starts: proves that what the proxy's
//! server-role handshake answers, the Open response it writes and the
//! addresses it rewrites are what a strict real client accepts and follows.
//!
//! The relay is the smallest session that uses `streamproto`: one thread
//! per connection, the server-role handshake toward the client, the replay
//! toward the broker, the rewritten Open response, then bytes copied (the
//! broker's Metadata responses rewritten). It is not the proxy's session:
//! no shard, no backpressure policy, whole frames buffered.
//!
//! The client runs from `target/stream-venv` (made by
//! `ci/ensure-stream-clients.sh`) unless `AMQPPROX_TEST_STREAM_PYTHON`
//! names another interpreter. Never skips: a missing node or client fails.

use amqpprox::streamproto::rewrite::{rewrite_metadata_frame, rewrite_open};
use amqpprox::streamproto::server::ServerConfig;
use amqpprox::streamproto::{
    key, response_code, split_frame, AddressMap, BrokerReplay, Endpoint, ReplayProgress,
    ServerHandshake, ServerProgress, RESPONSE_FLAG,
};
use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream, ToSocketAddrs};
use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

const DEFAULT_BROKER: &str = "127.0.0.20:5552";

fn broker_addr() -> SocketAddr {
    let text =
        std::env::var("AMQPPROX_TEST_STREAM_ADDR").unwrap_or_else(|_| DEFAULT_BROKER.to_string());
    let addr = text
        .to_socket_addrs()
        .ok()
        .and_then(|mut a| a.next())
        .unwrap_or_else(|| panic!("bad AMQPPROX_TEST_STREAM_ADDR {text}"));
    TcpStream::connect_timeout(&addr, Duration::from_secs(10)).unwrap_or_else(|e| {
        panic!("cannot reach the stream node at {addr} ({e}): run ci/ensure-rabbitmq-stream.sh")
    });
    addr
}

fn python() -> PathBuf {
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

/// What the relay did, for the assertions.
#[derive(Default)]
struct RelayStats {
    accepted: AtomicUsize,
    opened: AtomicUsize,
    open_rewritten: AtomicUsize,
    metadata_frames: AtomicUsize,
    unmapped: AtomicUsize,
    refusals: Mutex<Vec<u16>>,
}

struct Relay {
    addr: SocketAddr,
    stats: Arc<RelayStats>,
}

/// Starts the relay on an ephemeral loopback port in front of `broker`,
/// which advertises its own listener address.
fn start_relay(broker: SocketAddr) -> Relay {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind the relay");
    let addr = listener.local_addr().unwrap();
    let mut map = AddressMap::new();
    map.insert(
        Endpoint::new(broker.ip().to_string(), broker.port()),
        Endpoint::new(addr.ip().to_string(), addr.port()),
    );
    let map = Arc::new(map);
    let stats = Arc::new(RelayStats::default());
    let s = stats.clone();
    // Lives as long as the test process: each test has its own relay.
    std::thread::spawn(move || {
        for client in listener.incoming().flatten() {
            s.accepted.fetch_add(1, Ordering::SeqCst);
            let (map, s) = (map.clone(), s.clone());
            std::thread::spawn(move || {
                // A session's failure shows in the client's result.
                let _ = session(client, broker, &map, &s);
            });
        }
    });
    Relay { addr, stats }
}

fn session(
    mut client: TcpStream,
    broker_addr: SocketAddr,
    map: &AddressMap,
    stats: &RelayStats,
) -> std::io::Result<()> {
    client.set_read_timeout(Some(Duration::from_secs(60)))?;
    let mut buf = vec![0u8; 64 * 1024];
    let mut out = Vec::new();
    let mut hs = ServerHandshake::new(ServerConfig::default());
    let hello = loop {
        let n = client.read(&mut buf)?;
        if n == 0 {
            return Ok(());
        }
        match hs.receive(&buf[..n], &mut out) {
            Ok(ServerProgress::NeedMore) => {}
            Ok(ServerProgress::Opened(h)) => break *h,
            Ok(ServerProgress::ClosedByClient) => {
                client.write_all(&out)?;
                return Ok(());
            }
            Err(e) => {
                client.write_all(&out)?;
                client.write_all(&e.reply())?;
                return close_after_reply(client);
            }
        }
        client.write_all(&out)?;
        out.clear();
    };
    client.write_all(&out)?;
    out.clear();

    let mut broker = TcpStream::connect(broker_addr)?;
    broker.set_read_timeout(Some(Duration::from_secs(60)))?;
    let additions = vec![(
        "amqpprox_client".to_string(),
        client.peer_addr()?.to_string(),
    )];
    let mut replay = BrokerReplay::start(&hello, &additions, &mut out);
    let mut pending = loop {
        broker.write_all(&out)?;
        out.clear();
        let n = broker.read(&mut buf)?;
        if n == 0 {
            return Ok(());
        }
        match replay.receive(&buf[..n], &mut out) {
            Ok(ReplayProgress::NeedMore) => {}
            Ok(ReplayProgress::Open {
                mut response,
                from_broker,
                ..
            }) => {
                broker.write_all(&out)?;
                out.clear();
                let count = rewrite_open(&mut response, map);
                stats.opened.fetch_add(1, Ordering::SeqCst);
                stats
                    .open_rewritten
                    .fetch_add(count.rewritten, Ordering::SeqCst);
                stats.unmapped.fetch_add(count.unmapped, Ordering::SeqCst);
                hello.encode_open_response(response_code::OK, response.properties, &mut out);
                client.write_all(&out)?;
                out.clear();
                broker.write_all(&hello.pipelined)?;
                break from_broker;
            }
            Err(e) => {
                stats.refusals.lock().unwrap().push(e.client_code());
                hello.encode_open_response(e.client_code(), Vec::new(), &mut out);
                client.write_all(&out)?;
                return close_after_reply(client);
            }
        }
    };

    // Established: the client's bytes go through untouched; the broker's
    // frames too, except Metadata responses, rewritten.
    client.set_read_timeout(None)?;
    broker.set_read_timeout(None)?;
    let (mut c_read, mut b_write) = (client.try_clone()?, broker.try_clone()?);
    let upstream = std::thread::spawn(move || {
        let _ = std::io::copy(&mut c_read, &mut b_write);
        let _ = b_write.shutdown(Shutdown::Write);
    });
    loop {
        let mut used_total = 0;
        while let Some((frame, used)) = split_frame(&pending[used_total..], u32::MAX)
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))?
        {
            if frame.header.key == key::METADATA | RESPONSE_FLAG {
                let count = rewrite_metadata_frame(frame.body, map, &mut out)
                    .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))?;
                stats.metadata_frames.fetch_add(1, Ordering::SeqCst);
                stats.unmapped.fetch_add(count.unmapped, Ordering::SeqCst);
            } else {
                out.extend_from_slice(&pending[used_total..used_total + used]);
            }
            used_total += used;
        }
        pending.drain(..used_total);
        client.write_all(&out)?;
        out.clear();
        let n = broker.read(&mut buf)?;
        if n == 0 {
            let _ = client.shutdown(Shutdown::Both);
            break;
        }
        pending.extend_from_slice(&buf[..n]);
    }
    let _ = upstream.join();
    Ok(())
}

/// Ends a connection whose last frame was just written. Closing a socket
/// with unread input (a heartbeat the client sent meanwhile) resets it, and
/// the client may then lose the frame it has not read yet: send FIN, and
/// read until the client closes (bounded by the read timeout).
fn close_after_reply(mut client: TcpStream) -> std::io::Result<()> {
    client.shutdown(Shutdown::Write)?;
    client.set_read_timeout(Some(Duration::from_secs(10)))?;
    let mut sink = [0u8; 1024];
    while matches!(client.read(&mut sink), Ok(n) if n > 0) {}
    Ok(())
}

fn run_client(relay: &Relay, args: &[&str]) -> String {
    let port = relay.addr.port().to_string();
    let script =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/streamproto/rstream_client.py");
    let output = Command::new(python())
        .arg(&script)
        .arg(relay.addr.ip().to_string())
        .arg(&port)
        .args(args)
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

fn unique(prefix: &str) -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    format!("{prefix}-{}-{nanos}", std::process::id())
}

#[test]
fn rstream_publishes_and_consumes_through_the_relay() {
    let relay = start_relay(broker_addr());
    let stream = unique("amqpprox-relay");
    let line = run_client(&relay, &["roundtrip", &stream, "2000"]);
    assert_eq!(
        line,
        "published 2000 confirmed 2000 consumed 2000 in-order True"
    );
    let s = &relay.stats;
    // rstream opens a locator connection, then follows Metadata to the
    // (rewritten) node for its producer and consumer: all through the relay.
    assert!(s.accepted.load(Ordering::SeqCst) >= 2);
    assert_eq!(
        s.open_rewritten.load(Ordering::SeqCst),
        s.opened.load(Ordering::SeqCst)
    );
    assert!(s.metadata_frames.load(Ordering::SeqCst) >= 1);
    assert_eq!(s.unmapped.load(Ordering::SeqCst), 0);
    assert!(s.refusals.lock().unwrap().is_empty());
}

#[test]
fn rstream_sees_the_brokers_refusals_as_their_codes() {
    let relay = start_relay(broker_addr());
    let line = run_client(&relay, &["refused", "guest", "wrong-password", "/"]);
    assert_eq!(line, "refused AuthenticationFailure");
    let vhost = unique("amqpprox-no-such-vhost");
    let line = run_client(&relay, &["refused", "guest", "guest", &vhost]);
    assert_eq!(line, "refused VirtualHostAccessFailure");
    assert_eq!(
        *relay.stats.refusals.lock().unwrap(),
        vec![
            response_code::AUTHENTICATION_FAILURE,
            response_code::VIRTUAL_HOST_ACCESS_FAILURE
        ]
    );
}
