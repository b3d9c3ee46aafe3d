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

mod support;

use amqpprox::streamproto::rewrite::{rewrite_metadata_frame, rewrite_open};
use amqpprox::streamproto::server::ServerConfig;
use amqpprox::streamproto::{
    key, response_code, split_frame, AddressMap, BrokerReplay, Endpoint, MetadataResponse,
    ReplayProgress, ServerHandshake, ServerProgress, StreamFrameScanner, RESPONSE_FLAG,
};
use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream, ToSocketAddrs};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use support::stream::run_rstream;

const DEFAULT_BROKER: &str = "127.0.0.20:5552";

const DEFAULT_CLUSTER: &str = "127.0.0.21:5552,127.0.0.22:5552,127.0.0.23:5552";

/// A stream node's address, checked to accept connections.
fn reachable(text: &str, script: &str) -> SocketAddr {
    let addr = text
        .to_socket_addrs()
        .ok()
        .and_then(|mut a| a.next())
        .unwrap_or_else(|| panic!("bad stream node address {text}"));
    TcpStream::connect_timeout(&addr, Duration::from_secs(10))
        .unwrap_or_else(|e| panic!("cannot reach the stream node at {addr} ({e}): run {script}"));
    addr
}

fn broker_addr() -> SocketAddr {
    let text =
        std::env::var("AMQPPROX_TEST_STREAM_ADDR").unwrap_or_else(|_| DEFAULT_BROKER.to_string());
    reachable(&text, "ci/ensure-rabbitmq-stream.sh")
}

/// The three cluster nodes (`AMQPPROX_TEST_STREAM_CLUSTER`, comma-separated).
fn cluster_addrs() -> Vec<SocketAddr> {
    let text = std::env::var("AMQPPROX_TEST_STREAM_CLUSTER")
        .unwrap_or_else(|_| DEFAULT_CLUSTER.to_string());
    text.split(',')
        .map(|a| reachable(a.trim(), "ci/ensure-rabbitmq-stream.sh --cluster"))
        .collect()
}

/// What one relay did, for the assertions.
#[derive(Default)]
struct RelayStats {
    accepted: AtomicUsize,
    opened: AtomicUsize,
    open_rewritten: AtomicUsize,
    metadata_frames: AtomicUsize,
    unmapped: AtomicUsize,
    refusals: Mutex<Vec<u16>>,
    /// Client frames seen on established connections, by command.
    declare_publishers: AtomicUsize,
    subscribes: AtomicUsize,
    /// Established connections on which the client sent something other
    /// than Close or Heartbeat: opened minus this is the connections a
    /// load-balancer-mode client turned down (wrong node) and closed.
    used: AtomicUsize,
    /// The node each DeclarePublisher and Subscribe went to.
    landed: Mutex<Vec<(SocketAddr, u16)>>,
    /// Each stream's leader and replicas as the broker's Metadata named
    /// them, before the rewrite.
    placements: Mutex<Vec<Placement>>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Placement {
    stream: String,
    leader: Option<(String, u32)>,
    replicas: Vec<(String, u32)>,
}

struct Relay {
    addr: SocketAddr,
    broker: SocketAddr,
    stats: Arc<RelayStats>,
}

/// Starts one relay per broker node, each on an ephemeral loopback port,
/// sharing one address map from every node's advertised listener (each node
/// advertises its own listener address) to its relay: the proxy's "one
/// endpoint per node".
fn start_relays(brokers: &[SocketAddr]) -> Vec<Relay> {
    let listeners: Vec<TcpListener> = brokers
        .iter()
        .map(|_| TcpListener::bind("127.0.0.1:0").expect("bind a relay"))
        .collect();
    let mut map = AddressMap::new();
    for (broker, l) in brokers.iter().zip(&listeners) {
        let addr = l.local_addr().unwrap();
        map.insert(
            Endpoint::new(broker.ip().to_string(), broker.port()),
            Endpoint::new(addr.ip().to_string(), addr.port()),
        );
    }
    let map = Arc::new(map);
    brokers
        .iter()
        .zip(listeners)
        .map(|(&broker, listener)| {
            let addr = listener.local_addr().unwrap();
            let stats = Arc::new(RelayStats::default());
            let (s, map) = (stats.clone(), map.clone());
            // Lives as long as the test process: each test has its own relays.
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
            Relay {
                addr,
                broker,
                stats,
            }
        })
        .collect()
}

/// Starts a relay in front of a whole farm: each connection goes to the
/// next node in turn, and its Open response names that node's own relay
/// (from `map`), as a load balancer in front of the nodes would be seen by
/// a client in load-balancer mode.
fn start_farm_relay(nodes: Vec<SocketAddr>, map: Arc<AddressMap>) -> Relay {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind the farm relay");
    let addr = listener.local_addr().unwrap();
    let stats = Arc::new(RelayStats::default());
    let s = stats.clone();
    let first = nodes[0];
    std::thread::spawn(move || {
        for (i, client) in listener.incoming().flatten().enumerate() {
            s.accepted.fetch_add(1, Ordering::SeqCst);
            let (map, s, node) = (map.clone(), s.clone(), nodes[i % nodes.len()]);
            std::thread::spawn(move || {
                let _ = session(client, node, &map, &s);
            });
        }
    });
    Relay {
        addr,
        broker: first,
        stats,
    }
}

/// The map the per-node relays share.
fn map_of(relays: &[Relay]) -> Arc<AddressMap> {
    let mut map = AddressMap::new();
    for r in relays {
        map.insert(
            Endpoint::new(r.broker.ip().to_string(), r.broker.port()),
            Endpoint::new(r.addr.ip().to_string(), r.addr.port()),
        );
    }
    Arc::new(map)
}

fn start_relay(broker: SocketAddr) -> Relay {
    start_relays(&[broker]).pop().unwrap()
}

fn session(
    mut client: TcpStream,
    broker_addr: SocketAddr,
    map: &AddressMap,
    stats: &Arc<RelayStats>,
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
    let client_addr = client.peer_addr()?.to_string();
    let mut replay = BrokerReplay::start(&hello, &[("amqpprox_client", &client_addr)], &mut out);
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
    let up_stats = stats.clone();
    let upstream = std::thread::spawn(move || {
        let mut scanner = StreamFrameScanner::new(u32::MAX);
        let mut chunk = vec![0u8; 64 * 1024];
        let mut used = false;
        loop {
            let n = match c_read.read(&mut chunk) {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            let seen = scanner.scan(&chunk[..n], |e| {
                let k = e.header.key;
                if !used && k != key::CLOSE && k != key::HEARTBEAT {
                    used = true;
                    up_stats.used.fetch_add(1, Ordering::SeqCst);
                }
                match k {
                    key::DECLARE_PUBLISHER => {
                        up_stats.declare_publishers.fetch_add(1, Ordering::SeqCst);
                    }
                    key::SUBSCRIBE => {
                        up_stats.subscribes.fetch_add(1, Ordering::SeqCst);
                    }
                    _ => return,
                }
                up_stats.landed.lock().unwrap().push((broker_addr, k));
            });
            if seen.is_err() || b_write.write_all(&chunk[..n]).is_err() {
                break;
            }
        }
        let _ = b_write.shutdown(Shutdown::Write);
    });
    loop {
        let mut used_total = 0;
        while let Some((frame, used)) = split_frame(&pending[used_total..], u32::MAX)
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))?
        {
            if frame.header.key == key::METADATA | RESPONSE_FLAG {
                record_placements(frame.body, stats);
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

/// Notes where the broker says each stream lives.
fn record_placements(body: &[u8], stats: &RelayStats) {
    let Ok(md) = MetadataResponse::decode(body) else {
        return;
    };
    let node = |r: u16| {
        md.brokers
            .iter()
            .find(|b| b.reference == r)
            .map(|b| (b.host.clone(), b.port))
    };
    let mut placements = stats.placements.lock().unwrap();
    for s in &md.streams {
        placements.push(Placement {
            stream: s.name.clone(),
            leader: node(s.leader),
            replicas: s.replicas.iter().filter_map(|r| node(*r)).collect(),
        });
    }
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
    let line = run_rstream(relay.addr, "/", &["roundtrip", &stream, "2000"]);
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
    let line = run_rstream(
        relay.addr,
        "/",
        &["refused", "guest", "wrong-password", "/"],
    );
    assert_eq!(line, "refused AuthenticationFailure");
    let vhost = unique("amqpprox-no-such-vhost");
    let line = run_rstream(relay.addr, "/", &["refused", "guest", "guest", &vhost]);
    assert_eq!(line, "refused VirtualHostAccessFailure");
    assert_eq!(
        *relay.stats.refusals.lock().unwrap(),
        vec![
            response_code::AUTHENTICATION_FAILURE,
            response_code::VIRTUAL_HOST_ACCESS_FAILURE
        ]
    );
}

#[test]
fn rstream_follows_metadata_to_the_leader_and_a_member_node() {
    let nodes = cluster_addrs();
    assert_eq!(nodes.len(), 3, "a three-node cluster");
    let relays = start_relays(&nodes);
    // Created directly on the third node, whose connection-local leader
    // placement puts the leader there; the client then starts from the
    // first node's relay and has to follow Metadata to find it.
    let stream = unique("amqpprox-relay-cluster");
    assert_eq!(run_rstream(nodes[2], "/", &["create", &stream]), "created");
    let line = run_rstream(relays[0].addr, "/", &["roundtrip", &stream, "1000"]);
    assert_eq!(
        line,
        "published 1000 confirmed 1000 consumed 1000 in-order True"
    );

    let placement = relays
        .iter()
        .flat_map(|r| r.stats.placements.lock().unwrap().clone())
        .find(|p| p.stream == stream && p.leader.is_some())
        .expect("the client asked for the stream's metadata");
    let leader = placement.leader.clone().unwrap();
    eprintln!("placement: {placement:?}");
    let relay_of = |node: &(String, u32)| {
        relays
            .iter()
            .find(|r| (r.broker.ip().to_string(), u32::from(r.broker.port())) == *node)
            .unwrap_or_else(|| panic!("no relay for {node:?}"))
    };
    let members: Vec<_> = std::iter::once(leader.clone())
        .chain(placement.replicas.iter().cloned())
        .collect();
    for r in &relays {
        // Shown with --nocapture: where each connection went.
        eprintln!(
            "{}: accepted {} publishers {} subscribes {}",
            r.broker,
            r.stats.accepted.load(Ordering::SeqCst),
            r.stats.declare_publishers.load(Ordering::SeqCst),
            r.stats.subscribes.load(Ordering::SeqCst)
        );
        let publishers = r.stats.declare_publishers.load(Ordering::SeqCst);
        let is_leader = std::ptr::eq(r, relay_of(&leader));
        assert_eq!(
            publishers > 0,
            is_leader,
            "publishers on {}: {publishers} (leader {leader:?})",
            r.broker
        );
        let subscribes = r.stats.subscribes.load(Ordering::SeqCst);
        if subscribes > 0 {
            assert!(
                members.contains(&(r.broker.ip().to_string(), u32::from(r.broker.port()))),
                "a subscription on {}, which hosts no member of {placement:?}",
                r.broker
            );
        }
        assert_eq!(r.stats.unmapped.load(Ordering::SeqCst), 0);
    }
    assert!(
        relays
            .iter()
            .map(|r| r.stats.subscribes.load(Ordering::SeqCst))
            .sum::<usize>()
            > 0,
        "the consumer subscribed somewhere"
    );
}

#[test]
fn rstream_in_load_balancer_mode_converges_through_a_farm() {
    let nodes = cluster_addrs();
    let relays = start_relays(&nodes);
    let farm = start_farm_relay(nodes.clone(), map_of(&relays));
    let stream = unique("amqpprox-relay-lb");
    assert_eq!(run_rstream(nodes[1], "/", &["create", &stream]), "created");
    let line = run_rstream(farm.addr, "/", &["roundtrip", &stream, "500", "lb"]);
    assert_eq!(
        line,
        "published 500 confirmed 500 consumed 500 in-order True"
    );
    let s = &farm.stats;
    let placement = s
        .placements
        .lock()
        .unwrap()
        .iter()
        .find(|p| p.stream == stream && p.leader.is_some())
        .cloned()
        .expect("the client asked for the stream's metadata");
    let leader = placement.leader.clone().unwrap();
    let landed = s.landed.lock().unwrap().clone();
    eprintln!(
        "placement {placement:?}, landed {landed:?}, opened {}, used {}",
        s.opened.load(Ordering::SeqCst),
        s.used.load(Ordering::SeqCst)
    );
    let node_name = |a: &SocketAddr| (a.ip().to_string(), u32::from(a.port()));
    assert!(landed
        .iter()
        .filter(|(_, k)| *k == key::DECLARE_PUBLISHER)
        .all(|(n, _)| node_name(n) == leader));
    assert!(landed.iter().any(|(_, k)| *k == key::DECLARE_PUBLISHER));
    assert!(landed.iter().any(|(_, k)| *k == key::SUBSCRIBE));
    // Locator connections take any node; the producer and the consumer
    // each find theirs within one round of the farm, so each turns down at
    // most farm size - 1 connections. One more each is allowed for a
    // locator connection the client closes unused: the bound is about
    // convergence, not about how rstream manages its locators.
    let farm_size = nodes.len();
    let opened = s.opened.load(Ordering::SeqCst);
    let turned_down = opened - s.used.load(Ordering::SeqCst);
    assert!(
        turned_down <= 2 * farm_size,
        "{turned_down} of {opened} connections turned down"
    );
    assert_eq!(s.unmapped.load(Ordering::SeqCst), 0);
}
