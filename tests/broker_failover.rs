//! Failover past brokers that accept TCP but never get through their
//! handshake (docs/reliability.md): a farm whose members include one that
//! says nothing and one that closes at once, in front of a fake broker that
//! answers. In both handshake modes every client must reach the answering
//! broker, the log must name each skipped backend and why, and a client
//! whose farm has no answering member must be refused.
//!
//! The bad members are std listeners in this file; the good one is the
//! scripted fake broker of `support::dummy_broker`. No RabbitMQ is needed.
//! Every wait is bounded and polls a condition.

mod support;

use std::io::Read;
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use support::control::ctl_bin;
use support::dummy_broker::{AfterOpen, DummyBroker, Handshake, Script};
use support::proxy::ProxyProcess;
use support::raw::{self, parse_close, RawConn};

/// The proxy's broker-handshake timeout here: short, so a silent member
/// costs little; the client's handshake timeout stays far above it.
const BROKER_HANDSHAKE_TIMEOUT_MS: u64 = 400;
const CLIENT_HANDSHAKE_TIMEOUT_MS: u64 = 30_000;

/// What a bad member does with each connection it accepts.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Misbehaviour {
    /// Keeps the socket open, reads and drops what comes, never writes.
    Silent,
    /// Closes the socket at once.
    Close,
}

/// A listener that accepts and misbehaves until dropped.
struct BadMember {
    port: u16,
    accepted: Arc<Mutex<usize>>,
    stop: Arc<AtomicBool>,
}

impl BadMember {
    fn start(how: Misbehaviour) -> BadMember {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind a local port");
        listener.set_nonblocking(true).unwrap();
        let port = listener.local_addr().unwrap().port();
        let accepted = Arc::new(Mutex::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let (count, stopped) = (Arc::clone(&accepted), Arc::clone(&stop));
        thread::spawn(move || {
            let mut held: Vec<TcpStream> = Vec::new();
            while !stopped.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((stream, _)) => {
                        *count.lock().unwrap() += 1;
                        if how == Misbehaviour::Silent {
                            stream.set_nonblocking(true).unwrap();
                            held.push(stream);
                        }
                        // Close: dropped here, so the proxy sees EOF at once.
                    }
                    Err(_) => thread::sleep(Duration::from_millis(5)),
                }
                // Drain what the silent member's peers sent, so their
                // writes never block.
                let mut sink = [0u8; 1024];
                for s in &mut held {
                    let _ = s.read(&mut sink);
                }
            }
        });
        BadMember {
            port,
            accepted,
            stop,
        }
    }

    fn accepted(&self) -> usize {
        *self.accepted.lock().unwrap()
    }
}

impl Drop for BadMember {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// A proxy with no simple mode and the short broker-handshake timeout.
fn proxy() -> ProxyProcess {
    proxy_with_shards(2)
}

fn proxy_with_shards(shards: usize) -> ProxyProcess {
    ProxyProcess::builder("unused", 1)
        .shards(shards)
        .without_simple_mode()
        .handshake_timeout_ms(CLIENT_HANDSHAKE_TIMEOUT_MS)
        .connect_timeout_ms(5000)
        .arg("--brokerHandshakeTimeoutMs")
        .arg(BROKER_HANDSHAKE_TIMEOUT_MS.to_string())
        .start()
}

fn configure(proxy: &ProxyProcess, lines: &[String]) {
    for line in lines {
        let (reply, code) = ctl_bin(&proxy.control_socket, line);
        assert_eq!((reply.as_str(), code), ("", 0), "control line {line:?}");
    }
}

/// The farm `f` of `members` (round-robin, in this order), mapped as
/// the default (transparent handshake) or for vhost `/` only (proxied).
fn farm(proxy: &ProxyProcess, members: &[(&str, u16)], proxied: bool) {
    let mut lines: Vec<String> = members
        .iter()
        .map(|(name, port)| format!("BACKEND ADD {name} dc1 127.0.0.1 {port}"))
        .collect();
    let names: Vec<&str> = members.iter().map(|(n, _)| *n).collect();
    lines.push(format!("FARM ADD f round-robin {}", names.join(" ")));
    lines.push(if proxied {
        "MAP FARM / f".to_string()
    } else {
        "MAP DEFAULT f".to_string()
    });
    lines.push(format!("LISTEN START {}", proxy.port));
    configure(proxy, &lines);
}

/// One client handshake that must end in `OpenOk` from the good broker.
fn open_through(proxy: &ProxyProcess, name: &str) {
    let mut client = RawConn::connect_local(proxy.port);
    let open_ok = raw::client_handshake(&mut client, name, "/");
    assert!(
        open_ok.is_method(0, 10, 41),
        "{name}: expected OpenOk, got {}",
        open_ok.describe()
    );
}

fn failover(proxied: bool) {
    let silent = BadMember::start(Misbehaviour::Silent);
    let closer = BadMember::start(Misbehaviour::Close);
    let good = DummyBroker::start(Script::new(AfterOpen::Hold));
    let proxy = proxy();
    farm(
        &proxy,
        &[
            ("silent", silent.port),
            ("closer", closer.port),
            ("good", good.port()),
        ],
        proxied,
    );
    // Round-robin starts each session at a different member: three
    // sessions put each bad member first at least once.
    for i in 0..3 {
        let started = Instant::now();
        open_through(&proxy, &format!("failover-{i}"));
        // Skipping costs at most one broker-handshake timeout per bad
        // member, far below the client's own timeout.
        assert!(
            started.elapsed() < Duration::from_millis(CLIENT_HANDSHAKE_TIMEOUT_MS / 3),
            "session {i} took {:?}",
            started.elapsed()
        );
    }
    assert!(silent.accepted() >= 1 && closer.accepted() >= 1);
    assert_eq!(good.accepted(), 3, "every session ends at the good broker");
    let stage = if proxied {
        "Connection.OpenOk"
    } else {
        "Connection.Start"
    };
    // A closing member's EOF may arrive as a reset (it closed with the
    // proxy's bytes unread): either way the line says so before the stage.
    for (name, port, why) in [
        (
            "silent",
            silent.port,
            format!("sent no {stage} within {BROKER_HANDSHAKE_TIMEOUT_MS} ms"),
        ),
        ("closer", closer.port, format!(" before {stage}")),
    ] {
        let backend = format!("Backend '{name}' at 127.0.0.1:{port}: ");
        assert!(
            proxy.log_contains_within(&backend, Duration::from_secs(10)),
            "the log must name {name}; it has:\n{}",
            proxy.log_files()
        );
        let log = proxy.log_files();
        let line = log.lines().find(|l| l.contains(&backend)).unwrap();
        assert!(
            line.contains(&why) && line.ends_with("; trying the next one"),
            "{name}: {line}"
        );
    }
}

#[test]
fn transparent_sessions_skip_silent_and_closing_members() {
    failover(false);
}

#[test]
fn proxied_sessions_skip_silent_and_closing_members() {
    failover(true);
}

#[test]
fn a_farm_without_an_answering_member_refuses_the_client() {
    for proxied in [false, true] {
        let silent = BadMember::start(Misbehaviour::Silent);
        let closer = BadMember::start(Misbehaviour::Close);
        let proxy = proxy();
        farm(
            &proxy,
            &[("silent", silent.port), ("closer", closer.port)],
            proxied,
        );
        let mut client = RawConn::connect_local(proxy.port);
        raw::client_handshake_until_open(&mut client, &raw::default_start_ok("none-left"), "/");
        let frame = client
            .read_frame_within(Duration::from_millis(CLIENT_HANDSHAKE_TIMEOUT_MS))
            .unwrap_or_else(|e| panic!("proxied={proxied}: expected a Connection.Close: {e}"));
        let close = parse_close(&frame).unwrap_or_else(|why| panic!("{why}"));
        assert_eq!(close.code, 320, "proxied={proxied}: {close:?}");
        assert!(silent.accepted() >= 1 && closer.accepted() >= 1);
    }
}

#[test]
fn a_broker_that_refuses_is_answered_not_skipped() {
    // The broker's own Connection.Close is an answer for the client (wrong
    // credentials, unknown vhost): the next member must not be tried.
    let refuser = DummyBroker::start(Script::new(AfterOpen::Hold).handshake(
        Handshake::CloseAfterStartOk(403, "ACCESS_REFUSED - no".into()),
    ));
    let good = DummyBroker::start(Script::new(AfterOpen::Hold));
    // One shard: round-robin alternates the first member deterministically.
    let proxy = proxy_with_shards(1);
    farm(
        &proxy,
        &[("refuser", refuser.port()), ("good", good.port())],
        true,
    );
    let (mut opened, mut refused) = (0, 0);
    for i in 0..4 {
        let mut client = RawConn::connect_local(proxy.port);
        raw::client_handshake_until_open(
            &mut client,
            &raw::default_start_ok(&format!("refused-{i}")),
            "/",
        );
        let frame = client
            .read_frame_within(Duration::from_secs(10))
            .unwrap_or_else(|e| panic!("session {i}: no answer: {e}"));
        if frame.is_method(0, 10, 41) {
            opened += 1;
        } else {
            let close = parse_close(&frame).unwrap_or_else(|why| panic!("{why}"));
            assert_eq!(close.code, 403, "session {i}: {close:?}");
            refused += 1;
        }
    }
    assert!(
        refused >= 1 && opened >= 1,
        "opened {opened}, refused {refused}"
    );
    assert_eq!(
        refuser.accepted(),
        refused,
        "each refusal came from the refuser"
    );
    assert_eq!(
        good.accepted(),
        opened,
        "no refused session went on to 'good'"
    );
}
