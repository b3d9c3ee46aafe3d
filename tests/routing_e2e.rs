//! Routing end to end (docs/routing.md#round-robin, docs/sessions.md#refusals,
//! docs/sessions.md#broker-handshake): the proxy, configured only over its
//! control socket, in front of three "backends" that are TCP relays to the
//! local RabbitMQ, so each relay's accept count shows where sessions went. A
//! real client (lapin) connects, opens a channel and closes.
//!
//! These tests own the observable routing contract: even round-robin,
//! datacenter affinity with fallback, skipping a dead backend, direct
//! `MAP BACKEND`, and the `Connection.Close` a client gets when there is no
//! mapping (506) or no reachable broker (320). They never inspect frames on
//! the wire, and fail (never skip) when RabbitMQ is not running.

mod support;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use lapin::{Connection, ConnectionProperties};
use support::control::ctl_bin;
use support::proxy::ProxyProcess;
use support::rabbit::{require_rabbitmq, RABBITMQ_HOST, RABBITMQ_PORT};
use support::relay::Relay;

/// The proxy's broker connect timeout in these tests; a dead backend must
/// cost far less than this (a refused connect fails over at once).
const CONNECT_TIMEOUT_MS: u64 = 5000;

/// A proxy without simple mode and `n` relays to RabbitMQ.
fn start(n: usize) -> (ProxyProcess, Vec<Relay>) {
    require_rabbitmq();
    let rabbit: SocketAddr = format!("{RABBITMQ_HOST}:{RABBITMQ_PORT}").parse().unwrap();
    let relays = (0..n).map(|_| Relay::start(rabbit)).collect();
    let proxy = ProxyProcess::builder("unused", 1)
        .without_simple_mode()
        .connect_timeout_ms(CONNECT_TIMEOUT_MS)
        .start();
    (proxy, relays)
}

/// Runs control lines that must all succeed with an empty reply.
fn configure(proxy: &ProxyProcess, lines: &[String]) {
    for line in lines {
        let (reply, code) = ctl_bin(&proxy.control_socket, line);
        assert_eq!((reply.as_str(), code), ("", 0), "control line {line:?}");
    }
}

/// `BACKEND ADD b<i+1> <dc> 127.0.0.1 <relay port>` for each relay.
fn backends(relays: &[Relay], datacenters: &[&str]) -> Vec<String> {
    relays
        .iter()
        .zip(datacenters)
        .enumerate()
        .map(|(i, (r, dc))| format!("BACKEND ADD b{} {dc} 127.0.0.1 {}", i + 1, r.port()))
        .collect()
}

fn listen(proxy: &ProxyProcess) -> String {
    format!("LISTEN START {}", proxy.port)
}

fn url(proxy: &ProxyProcess, vhost: &str) -> String {
    support::amqp_url("127.0.0.1", proxy.port, "guest", "guest", vhost)
}

/// One client session: connect, open a channel, close both. Returns how
/// long it took.
async fn session(proxy: &ProxyProcess, vhost: &str) -> Result<Duration, lapin::Error> {
    let started = Instant::now();
    let connection =
        Connection::connect(&url(proxy, vhost), ConnectionProperties::default()).await?;
    let channel = connection.create_channel().await?;
    channel.close(200, "OK").await?;
    connection.close(200, "OK").await?;
    Ok(started.elapsed())
}

/// `count` sequential sessions that must all succeed, each well within
/// the connect timeout.
async fn sessions(proxy: &ProxyProcess, vhost: &str, count: usize) {
    for i in 0..count {
        let took = session(proxy, vhost)
            .await
            .unwrap_or_else(|e| panic!("session {i} to vhost {vhost:?}: {e:?}"));
        assert!(
            took < Duration::from_millis(CONNECT_TIMEOUT_MS / 2),
            "session {i} took {took:?}"
        );
    }
}

fn counts(relays: &[Relay]) -> Vec<usize> {
    relays.iter().map(Relay::accepted).collect()
}

/// The reply code and text of the `Connection.Close` lapin got.
fn close_of(err: &lapin::Error) -> (u16, String) {
    match err {
        lapin::Error::ProtocolError(amqp) => (amqp.get_id(), amqp.get_message().to_string()),
        other => panic!("expected a Connection.Close with a reply code, got {other:?}"),
    }
}

async fn refused(proxy: &ProxyProcess, vhost: &str) -> (u16, String) {
    let limit = Duration::from_millis(3 * CONNECT_TIMEOUT_MS);
    match tokio::time::timeout(limit, session(proxy, vhost)).await {
        Err(_) => panic!("no answer for vhost {vhost:?} within {limit:?}"),
        Ok(Ok(_)) => panic!("a session to vhost {vhost:?} succeeded but must be refused"),
        Ok(Err(e)) => close_of(&e),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn round_robin_spreads_sessions_evenly() {
    let (proxy, relays) = start(3);
    let mut lines = backends(&relays, &["dc1", "dc1", "dc1"]);
    lines.push("FARM ADD f round-robin b1 b2 b3".into());
    lines.push("MAP DEFAULT f".into());
    lines.push(listen(&proxy));
    configure(&proxy, &lines);
    sessions(&proxy, "/", 30).await;
    assert_eq!(counts(&relays), [10, 10, 10]);
}

#[tokio::test(flavor = "multi_thread")]
async fn datacenter_affinity_prefers_the_local_datacenter_then_falls_back() {
    let (proxy, relays) = start(3);
    let mut lines = backends(&relays, &["dc1", "dc2", "dc1"]);
    lines.push("FARM ADD f round-robin b1 b2 b3".into());
    lines.push("DATACENTER SET dc2".into());
    lines.push("FARM PARTITION f datacenter-affinity".into());
    lines.push("MAP DEFAULT f".into());
    lines.push(listen(&proxy));
    configure(&proxy, &lines);
    sessions(&proxy, "/", 10).await;
    assert_eq!(counts(&relays), [0, 10, 0], "all to the dc2 backend");

    relays[1].cut();
    sessions(&proxy, "/", 10).await;
    // The fallback partition rotates too: the other datacenter shares them.
    assert_eq!(counts(&relays), [5, 10, 5], "fallback to dc1");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_dead_backend_is_skipped() {
    let (proxy, relays) = start(3);
    relays[0].cut();
    let mut lines = backends(&relays, &["dc1", "dc1", "dc1"]);
    lines.push("FARM ADD f round-robin b1 b2 b3".into());
    lines.push("MAP DEFAULT f".into());
    lines.push(listen(&proxy));
    configure(&proxy, &lines);
    // `sessions` also checks each is far quicker than the connect timeout.
    sessions(&proxy, "/", 6).await;
    let c = counts(&relays);
    assert_eq!((c[0], c[1] + c[2]), (0, 6), "{c:?}");
    assert!(
        c[1] >= 2 && c[2] >= 2,
        "the live backends share the sessions: {c:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn map_backend_sends_a_vhost_to_one_backend() {
    let (proxy, relays) = start(3);
    let mut lines = backends(&relays, &["dc1", "dc1", "dc1"]);
    lines.push("FARM ADD f round-robin b1 b3".into());
    lines.push("MAP DEFAULT f".into());
    lines.push("MAP BACKEND / b2".into());
    lines.push(listen(&proxy));
    configure(&proxy, &lines);
    sessions(&proxy, "/", 6).await;
    assert_eq!(counts(&relays), [0, 6, 0]);

    // Unmapped again, the vhost follows the default farm.
    configure(&proxy, &["MAP UNMAP /".into()]);
    sessions(&proxy, "/", 4).await;
    assert_eq!(counts(&relays), [2, 6, 2]);

    // A mapping to a backend that no longer exists refuses, with no
    // fallback to the default farm.
    configure(
        &proxy,
        &["MAP BACKEND / b2".into(), "BACKEND DELETE b2".into()],
    );
    assert_eq!(
        refused(&proxy, "/").await,
        (506, "No known broker mapping for vhost /".to_string())
    );
    assert_eq!(counts(&relays), [2, 6, 2]);
}

#[tokio::test(flavor = "multi_thread")]
async fn an_unmapped_vhost_without_default_gets_close_506() {
    let (proxy, relays) = start(1);
    let mut lines = backends(&relays, &["dc1"]);
    lines.push("MAP BACKEND mapped b1".into());
    lines.push(listen(&proxy));
    configure(&proxy, &lines);
    let (code, text) = refused(&proxy, "no-such-mapping").await;
    assert_eq!(code, 506);
    assert_eq!(text, "No known broker mapping for vhost no-such-mapping");
    assert_eq!(counts(&relays), [0]);
}

#[tokio::test(flavor = "multi_thread")]
async fn all_backends_dead_gets_close_320_naming_the_vhost() {
    let (proxy, relays) = start(2);
    for relay in &relays {
        relay.cut();
    }
    let mut lines = backends(&relays, &["dc1", "dc2"]);
    lines.push("FARM ADD f round-robin b1 b2".into());
    lines.push("MAP DEFAULT f".into());
    lines.push(listen(&proxy));
    configure(&proxy, &lines);
    let started = Instant::now();
    let (code, text) = refused(&proxy, "/").await;
    assert_eq!(code, 320, "{text}");
    assert!(
        text.contains("vhost /"),
        "the text names the vhost: {text:?}"
    );
    assert!(
        started.elapsed() < Duration::from_millis(CONNECT_TIMEOUT_MS),
        "refused connects fail over at once, took {:?}",
        started.elapsed()
    );
}
