//! The active health probe (`amqpprox::health`) against scripted fake
//! brokers (std listeners in this file, one behaviour each) and against the
//! real RabbitMQ on 5672, and the probe thread marking backends down and up
//! through the registry that routing reads.
//!
//! It owns no proxy process and never sleeps for a fixed time to wait for a
//! result: every wait polls a condition with a deadline.

mod support;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicU8, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use amqpprox::config::ProxyHeader;
use amqpprox::handshake::client::start_frame;
use amqpprox::health::{
    filter_up, probe_once, HealthPolicy, HealthRegistry, HealthState, ProbeError, ProbeTarget,
    Prober,
};

/// What a fake broker does with each connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
enum Behaviour {
    /// Reads the 8-byte protocol header, sends `Connection.Start`.
    Answer = 0,
    /// Like `Answer`, one byte per write.
    AnswerByteByByte,
    /// Accepts and never says anything (a node stuck at boot).
    Silent,
    /// Accepts and closes at once.
    Close,
    /// Answers with its own protocol header (another AMQP version).
    OtherVersion,
    /// Sends bytes that are no AMQP frame.
    Garbage,
    /// Sends a heartbeat frame instead of `Connection.Start`.
    Heartbeat,
    /// Expects a PROXY header (v1 or v2) before the protocol header.
    AnswerAfterProxyHeader,
}

impl Behaviour {
    fn from_u8(v: u8) -> Behaviour {
        [
            Behaviour::Answer,
            Behaviour::AnswerByteByByte,
            Behaviour::Silent,
            Behaviour::Close,
            Behaviour::OtherVersion,
            Behaviour::Garbage,
            Behaviour::Heartbeat,
            Behaviour::AnswerAfterProxyHeader,
        ][usize::from(v)]
    }
}

/// A fake broker whose behaviour can change while it runs. Connections it
/// holds open (silent ones) are kept until it is dropped with the process.
struct FakeBroker {
    addr: SocketAddr,
    behaviour: Arc<AtomicU8>,
    accepted: Arc<AtomicUsize>,
    /// What came before the protocol header, per connection (PROXY headers).
    preambles: Arc<Mutex<Vec<Vec<u8>>>>,
}

impl FakeBroker {
    fn start(behaviour: Behaviour) -> FakeBroker {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind fake broker");
        let addr = listener.local_addr().unwrap();
        let shared = Arc::new(AtomicU8::new(behaviour as u8));
        let accepted = Arc::new(AtomicUsize::new(0));
        let preambles = Arc::new(Mutex::new(Vec::new()));
        let (b, a, p) = (shared.clone(), accepted.clone(), preambles.clone());
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(conn) = conn else { continue };
                a.fetch_add(1, Ordering::SeqCst);
                let behaviour = Behaviour::from_u8(b.load(Ordering::SeqCst));
                let p = p.clone();
                std::thread::spawn(move || serve(conn, behaviour, &p));
            }
        });
        FakeBroker {
            addr,
            behaviour: shared,
            accepted,
            preambles,
        }
    }

    fn set(&self, behaviour: Behaviour) {
        self.behaviour.store(behaviour as u8, Ordering::SeqCst);
    }

    fn target(&self, name: &str) -> ProbeTarget {
        ProbeTarget {
            name: name.into(),
            host: self.addr.ip().to_string(),
            address: Some(self.addr.ip()),
            port: self.addr.port(),
            proxy_header: ProxyHeader::None,
            tls: false,
        }
    }
}

/// Reads until the AMQP protocol header has arrived; returns what preceded
/// it, or `None` if the peer closed first.
fn read_to_protocol_header(conn: &mut TcpStream) -> Option<Vec<u8>> {
    let mut seen = Vec::new();
    let mut byte = [0u8; 1];
    while !seen.ends_with(b"AMQP\x00\x00\x09\x01") {
        match conn.read(&mut byte) {
            Ok(1) => seen.push(byte[0]),
            _ => return None,
        }
    }
    seen.truncate(seen.len() - 8);
    Some(seen)
}

fn serve(mut conn: TcpStream, behaviour: Behaviour, preambles: &Mutex<Vec<Vec<u8>>>) {
    conn.set_read_timeout(Some(Duration::from_secs(30))).ok();
    if behaviour == Behaviour::Close {
        return;
    }
    let Some(preamble) = read_to_protocol_header(&mut conn) else {
        return;
    };
    preambles.lock().unwrap().push(preamble.clone());
    let reply: Vec<u8> = match behaviour {
        Behaviour::Answer | Behaviour::AnswerByteByByte => start_frame().to_vec(),
        Behaviour::AnswerAfterProxyHeader if !preamble.is_empty() => start_frame().to_vec(),
        Behaviour::AnswerAfterProxyHeader => return,
        Behaviour::OtherVersion => b"AMQP\x00\x00\x08\x00".to_vec(),
        Behaviour::Garbage => b"HTTP/1.1 400 Bad Request\r\n\r\n".to_vec(),
        Behaviour::Heartbeat => amqpprox::codec::HEARTBEAT_FRAME.to_vec(),
        Behaviour::Silent => {
            // Hold the connection until the prober gives up and closes it.
            let mut sink = [0u8; 64];
            while matches!(conn.read(&mut sink), Ok(n) if n > 0) {}
            return;
        }
        Behaviour::Close => unreachable!("handled above"),
    };
    if behaviour == Behaviour::AnswerByteByByte {
        for b in reply {
            if conn.write_all(&[b]).is_err() {
                return;
            }
            conn.flush().ok();
        }
    } else {
        conn.write_all(&reply).ok();
    }
    // Wait for the probe to close its side.
    let mut sink = [0u8; 64];
    while matches!(conn.read(&mut sink), Ok(n) if n > 0) {}
}

/// Generous: the probe must answer well within it on a loaded machine.
const PROBE_TIMEOUT: Duration = Duration::from_secs(10);

#[test]
fn a_broker_that_sends_connection_start_passes() {
    for behaviour in [Behaviour::Answer, Behaviour::AnswerByteByByte] {
        let broker = FakeBroker::start(behaviour);
        let report = probe_once(&broker.target("b"), PROBE_TIMEOUT)
            .unwrap_or_else(|e| panic!("{behaviour:?}: {e}"));
        assert_eq!(report.addr, broker.addr);
        assert!(report.amqp_checked);
        assert_eq!(
            broker.preambles.lock().unwrap().as_slice(),
            [Vec::<u8>::new()]
        );
    }
}

#[test]
fn a_silent_broker_times_out_waiting_for_connection_start() {
    let broker = FakeBroker::start(Behaviour::Silent);
    let limit = Duration::from_millis(300);
    let started = Instant::now();
    let err = probe_once(&broker.target("b"), limit).unwrap_err();
    let took = started.elapsed();
    assert!(
        matches!(err, ProbeError::Timeout { .. }),
        "expected a timeout, got {err}"
    );
    assert!(
        err.to_string().contains("waiting for Connection.Start"),
        "{err}"
    );
    // Bounded by the timeout (with a wide margin for a loaded machine).
    assert!(took >= limit, "gave up after {took:?}");
    assert!(took < limit * 20, "took {took:?} for a {limit:?} timeout");
}

#[test]
fn brokers_that_fail_before_connection_start_are_named_by_what_they_did() {
    type Expected = fn(&ProbeError) -> bool;
    let cases: [(Behaviour, Expected); 4] = [
        (Behaviour::Close, |e| {
            matches!(
                e,
                ProbeError::ClosedBeforeStart { .. } | ProbeError::Io { .. }
            )
        }),
        (
            Behaviour::OtherVersion,
            |e| matches!(e, ProbeError::OtherProtocol { header, .. } if header == b"AMQP\x00\x00\x08\x00"),
        ),
        (Behaviour::Garbage, |e| {
            matches!(e, ProbeError::BadFrame { .. })
        }),
        (Behaviour::Heartbeat, |e| {
            matches!(
                e,
                ProbeError::NotStart {
                    frame_type: 8,
                    channel: 0,
                    method: None,
                    ..
                }
            )
        }),
    ];
    for (behaviour, expected) in cases {
        let broker = FakeBroker::start(behaviour);
        let err = probe_once(&broker.target("b"), PROBE_TIMEOUT).unwrap_err();
        assert!(expected(&err), "{behaviour:?}: unexpected error {err:?}");
    }
}

#[test]
fn proxy_header_backends_get_a_header_without_addresses_first() {
    let broker = FakeBroker::start(Behaviour::AnswerAfterProxyHeader);
    for (kind, expected) in [
        (ProxyHeader::V1, b"PROXY UNKNOWN\r\n".to_vec()),
        (
            ProxyHeader::V2,
            b"\r\n\r\n\0\r\nQUIT\n\x20\x00\x00\x00".to_vec(),
        ),
    ] {
        let target = ProbeTarget {
            proxy_header: kind,
            ..broker.target("b")
        };
        probe_once(&target, PROBE_TIMEOUT).unwrap_or_else(|e| panic!("{kind:?}: {e}"));
        let last = broker.preambles.lock().unwrap().last().cloned();
        assert_eq!(last, Some(expected));
        assert!(matches!(
            amqpprox::proxy_protocol::parse(last.as_deref().unwrap()),
            amqpprox::proxy_protocol::Parsed::Header(_)
        ));
    }
}

#[test]
fn a_tls_backend_is_checked_up_to_the_connect() {
    let broker = FakeBroker::start(Behaviour::Silent);
    let target = ProbeTarget {
        tls: true,
        ..broker.target("b")
    };
    let report = probe_once(&target, PROBE_TIMEOUT).expect("connect-only probe");
    assert!(!report.amqp_checked);
}

#[test]
fn a_dns_backend_is_resolved_at_each_probe() {
    let broker = FakeBroker::start(Behaviour::Answer);
    let target = ProbeTarget {
        host: "localhost".into(),
        address: None,
        ..broker.target("b")
    };
    // localhost may resolve to ::1 first, where nothing listens: the probe
    // goes on to the next address.
    let report = probe_once(&target, PROBE_TIMEOUT).expect("probe via localhost");
    assert_eq!(report.addr.port(), broker.addr.port());
}

#[test]
fn the_real_rabbitmq_passes_the_probe() {
    support::rabbit::require_rabbitmq();
    let target = ProbeTarget {
        name: "rabbit".into(),
        host: support::rabbit::RABBITMQ_HOST.into(),
        address: None,
        port: support::rabbit::RABBITMQ_PORT,
        proxy_header: ProxyHeader::None,
        tls: false,
    };
    let report = probe_once(&target, PROBE_TIMEOUT).expect("RabbitMQ answers the probe");
    assert!(report.amqp_checked);
}

/// Polls `cond` every 20 ms until it holds or `limit` passes.
fn wait_until(limit: Duration, what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn the_prober_marks_a_silent_backend_down_and_brings_it_back() {
    let good = FakeBroker::start(Behaviour::Answer);
    let sick = FakeBroker::start(Behaviour::Silent);
    let registry = Arc::new(HealthRegistry::new(HealthPolicy {
        interval: Some(Duration::from_millis(50)),
        // Long enough that the good backend answers in time on a loaded
        // machine; the sick one needs two of them to go down.
        timeout: Duration::from_millis(1000),
        rise: 2,
        fall: 2,
        ..HealthPolicy::default()
    }));
    registry.sync([good.target("good"), sick.target("sick")]);
    let changes = Arc::new(Mutex::new(Vec::new()));
    let log = changes.clone();
    let prober = Prober::spawn(
        registry.clone(),
        Arc::new(move |name: &str, rec, err: Option<&ProbeError>| {
            log.lock()
                .unwrap()
                .push((name.to_string(), rec.after, err.map(|e| e.to_string())));
        }),
    )
    .expect("spawn prober");

    let state = |name: &str| registry.entry(name).unwrap().health.state();
    let limit = Duration::from_secs(30);
    wait_until(limit, "sick to go down", || {
        state("sick") == HealthState::Down
    });
    wait_until(limit, "good to be up", || state("good") == HealthState::Up);
    // Polled: on a loaded machine the good one may miss a probe too.
    wait_until(limit, "routing to skip only the sick one", || {
        let mut members = vec!["sick", "good"];
        filter_up(&mut members, &registry) == 1 && members == ["good"]
    });
    let snapshot = registry.entry("sick").unwrap().health.snapshot();
    let last = snapshot.last_error.expect("a last error");
    assert!(last.reason.contains("Connection.Start"), "{}", last.reason);
    assert!(snapshot.counters.consecutive_failures >= 2);

    sick.set(Behaviour::Answer);
    wait_until(limit, "sick to come back", || {
        state("sick") == HealthState::Up
    });
    prober.stop();
    assert!(sick.accepted.load(Ordering::SeqCst) >= 4);

    let changes = changes.lock().unwrap();
    let sick_changes: Vec<_> = changes.iter().filter(|c| c.0 == "sick").collect();
    assert_eq!(sick_changes[0].1, HealthState::Down);
    assert!(sick_changes[0]
        .2
        .as_deref()
        .unwrap()
        .contains("Connection.Start"));
    assert_eq!(sick_changes.last().unwrap().1, HealthState::Up);
}

#[test]
fn the_prober_waits_while_probing_is_off_and_stops_promptly() {
    let broker = FakeBroker::start(Behaviour::Answer);
    let registry = Arc::new(HealthRegistry::new(HealthPolicy::default()));
    registry.sync([broker.target("b")]);
    let prober = Prober::spawn(
        registry.clone(),
        Arc::new(|_: &str, _, _: Option<&ProbeError>| {}),
    )
    .expect("spawn prober");
    // Turned on later, as a BACKEND HEALTH command would.
    registry.set_policy(HealthPolicy {
        interval: Some(Duration::from_millis(50)),
        ..HealthPolicy::default()
    });
    wait_until(Duration::from_secs(30), "the first probe", || {
        registry.entry("b").unwrap().health.state() == HealthState::Up
    });
    let started = Instant::now();
    prober.stop();
    assert!(started.elapsed() < Duration::from_secs(10));
}
