//! Backend health checks end to end (docs/reliability.md#health-checks):
//! a proxy process in front of a farm [dead, alive] whose dead member is a
//! port that refuses connections. The active probe (or, without it, the
//! sessions' own failures) marks the dead member down; sessions are then
//! not sent to it at all (the log shows no connect attempt, only the line
//! saying it was left out), `BACKEND PRINT` shows it down with its last
//! error, and once something listens on its port the probe brings it back.
//!
//! The live member is the scripted fake broker of `support::dummy_broker`;
//! no RabbitMQ is needed. Every wait polls a condition with a deadline.

mod support;

use std::io::{Read, Write};
use std::net::SocketAddr;
use std::time::Duration;

use support::control::ctl_bin;
use support::dummy_broker::{AfterOpen, DummyBroker, Script};
use support::proxy::{free_port, ProxyBuilder, ProxyProcess};
use support::raw::{self, RawConn};
use support::wait::{deadline_in, poll_until, wait_until};

/// Generous for a loaded 2-core machine: the probe runs every 100 ms, so a
/// state change normally takes well under a second.
const STATE_CHANGE_LIMIT: Duration = Duration::from_secs(20);

/// A local port that refuses connections until [`DeadPort::revive`]: a
/// socket bound to it that does not listen keeps anyone else off it.
struct DeadPort {
    socket: Option<socket2::Socket>,
    addr: SocketAddr,
}

impl DeadPort {
    fn new() -> DeadPort {
        let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None)
            .expect("create a socket");
        socket.set_reuse_address(true).unwrap();
        let any: SocketAddr = "127.0.0.1:0".parse().unwrap();
        socket.bind(&any.into()).expect("bind a local port");
        let addr = socket.local_addr().unwrap().as_socket().unwrap();
        DeadPort {
            socket: Some(socket),
            addr,
        }
    }

    /// Gives the port to a fake broker that answers.
    fn revive(&mut self) -> DummyBroker {
        self.socket.take();
        DummyBroker::start_on(self.addr, Script::new(AfterOpen::Hold))
            .expect("a fake broker on the dead member's port")
    }
}

fn proxy() -> ProxyProcess {
    proxy_with(|b| b)
}

fn proxy_with(customise: impl FnOnce(ProxyBuilder) -> ProxyBuilder) -> ProxyProcess {
    customise(
        ProxyProcess::builder("unused", 1)
            .shards(2)
            .without_simple_mode()
            .handshake_timeout_ms(30_000)
            .connect_timeout_ms(5_000),
    )
    .start()
}

/// The body of `GET /metrics` on `port`.
fn metrics(port: u16) -> String {
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).expect("metrics port");
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    stream
        .write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut text = String::new();
    stream.read_to_string(&mut text).expect("read /metrics");
    text
}

/// The state `STAT LISTEN json all` gives backend `name` in its
/// `backendHealth`, once a record shows it other than `unknown` (records come
/// once per statistics interval), within 10 s.
fn stat_health(proxy: &ProxyProcess, name: &str) -> String {
    use std::io::BufRead;
    let mut stream =
        std::os::unix::net::UnixStream::connect(&proxy.control_socket).expect("control socket");
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("read timeout");
    stream
        .write_all(b"STAT LISTEN json all\n")
        .expect("write STAT");
    let deadline = deadline_in(Duration::from_secs(10));
    let mut last = String::new();
    for line in std::io::BufReader::new(stream).lines() {
        let line = line.expect("a STAT record within 10 s");
        let record: serde_json::Value = serde_json::from_str(&line).expect("STAT json");
        let state = record["backendHealth"][name]["state"]
            .as_str()
            .unwrap_or("")
            .to_string();
        if state != "unknown" && !state.is_empty() {
            return state;
        }
        last = line;
        if std::time::Instant::now() >= deadline {
            break;
        }
    }
    panic!("no STAT record gave {name} a health state; last: {last}");
}

fn configure(proxy: &ProxyProcess, lines: &[String]) {
    for line in lines {
        let (reply, code) = ctl_bin(&proxy.control_socket, line);
        assert_eq!((reply.as_str(), code), ("", 0), "control line {line:?}");
    }
}

/// `health` first (so no session runs under the default policy), then the
/// farm [dead, alive] as the default route and the listener.
fn farm(proxy: &ProxyProcess, dead: u16, alive: u16, health: &str) {
    configure(
        proxy,
        &[
            health.to_string(),
            format!("BACKEND ADD dead dc1 127.0.0.1 {dead}"),
            format!("BACKEND ADD alive dc1 127.0.0.1 {alive}"),
            "FARM ADD f round-robin dead alive".to_string(),
            "MAP DEFAULT f".to_string(),
            format!("LISTEN START {}", proxy.port),
        ],
    );
}

/// One client handshake that must end in `OpenOk`.
fn open_through(proxy: &ProxyProcess, name: &str) {
    let mut client = RawConn::connect_local(proxy.port);
    let open_ok = raw::client_handshake(&mut client, name, "/");
    assert!(
        open_ok.is_method(0, 10, 41),
        "{name}: expected OpenOk, got {}",
        open_ok.describe()
    );
}

/// The `BACKEND PRINT` line of `name`.
fn print_line(proxy: &ProxyProcess, name: &str) -> String {
    let (text, code) = ctl_bin(&proxy.control_socket, "BACKEND PRINT");
    assert_eq!(code, 0, "{text}");
    let prefix = format!("{name} (");
    text.lines()
        .find(|l| l.starts_with(&prefix))
        .unwrap_or_else(|| panic!("BACKEND PRINT lacks {name}:\n{text}"))
        .to_string()
}

/// Waits until `name`'s `BACKEND PRINT` line contains `needle`.
fn wait_print(proxy: &ProxyProcess, name: &str, needle: &str) -> String {
    poll_until(deadline_in(STATE_CHANGE_LIMIT), || {
        Some(print_line(proxy, name)).filter(|l| l.contains(needle))
    })
    .unwrap_or_else(|| {
        panic!(
            "{name} never showed {needle:?}: {}\n{}",
            print_line(proxy, name),
            proxy.log_files()
        )
    })
}

fn connect_attempts(log: &str, name: &str) -> usize {
    // Lines that quote a failure as the last error are not attempts: only
    // a line whose message starts so is.
    let needle = format!("Connecting to backend '{name}' at");
    log.lines()
        .filter(|l| {
            l.split_once(": ")
                .is_some_and(|(_, m)| m.starts_with(&needle))
        })
        .count()
}

/// How many sessions the log says started toward `backend`.
fn sessions_to(log: &str, backend: &str) -> usize {
    let needle = format!(" backend={backend} ");
    log.lines()
        .filter(|l| l.contains("Starting connection for:") && l.contains(&needle))
        .count()
}

#[test]
fn the_probe_marks_a_dead_member_down_skips_it_and_brings_it_back() {
    let mut dead = DeadPort::new();
    let alive = DummyBroker::start(Script::new(AfterOpen::Hold));
    let metrics_port = free_port();
    let proxy = proxy_with(|b| b.arg("--metricsPort").arg(metrics_port.to_string()));
    farm(
        &proxy,
        dead.addr.port(),
        alive.port(),
        "BACKEND HEALTH INTERVAL 100 TIMEOUT 2000 RISE 2 FALL 2 PASSIVE_FALL 0",
    );

    // After FALL failed probes the dead member is down, with the reason.
    let line = wait_print(&proxy, "dead", " HEALTH DOWN");
    assert!(
        line.contains("by probe: ") && line.contains("refused"),
        "the last error names the probe and the refusal: {line}"
    );
    wait_print(&proxy, "alive", " HEALTH UP");
    assert!(
        proxy.log_contains_within("Backend 'dead' is down (was ", STATE_CHANGE_LIMIT),
        "the state change is logged:\n{}",
        proxy.log_files()
    );
    let (json, _) = ctl_bin(&proxy.control_socket, "BACKEND PRINT json");
    let doc: serde_json::Value = serde_json::from_str(&json).expect("BACKEND PRINT json");
    let dead_json = doc["backends"]
        .as_array()
        .unwrap()
        .iter()
        .find(|b| b["name"] == "dead")
        .unwrap();
    assert_eq!(dead_json["health"]["state"], "down", "{json}");
    assert_eq!(dead_json["health"]["lastError"]["by"], "probe", "{json}");
    assert_eq!(
        stat_health(&proxy, "dead"),
        "down",
        "STAT LISTEN json all shows the dead member down"
    );
    let text = metrics(metrics_port);
    for line in [
        "amqpprox_backend_health{backend=\"dead\",state=\"down\"} 1",
        "amqpprox_backend_health{backend=\"alive\",state=\"up\"} 1",
    ] {
        assert!(text.lines().any(|l| l == line), "{line} in\n{text}");
    }

    // Round-robin would give the dead member every other session: none
    // goes there, not even a connect attempt.
    for i in 0..4 {
        open_through(&proxy, &format!("health-{i}"));
    }
    assert_eq!(
        sessions_to(&proxy.settled_log_files(), "alive"),
        4,
        "every session reaches the live member"
    );
    assert!(
        proxy.log_contains_within("Backend 'dead' is down, not tried", STATE_CHANGE_LIMIT),
        "the log says why the dead member was left out:\n{}",
        proxy.log_files()
    );
    assert_eq!(
        connect_attempts(&proxy.settled_log_files(), "dead"),
        0,
        "no session tried the dead member:\n{}",
        proxy.log_files()
    );

    // A live session's backend health is in CONN json.
    let mut held = RawConn::connect_local(proxy.port);
    let open_ok = raw::client_handshake(&mut held, "health-held", "/");
    assert!(open_ok.is_method(0, 10, 41), "{}", open_ok.describe());
    let (json, code) = ctl_bin(&proxy.control_socket, "CONN json");
    assert_eq!(code, 0, "{json}");
    let sessions: Vec<serde_json::Value> = serde_json::from_str(&json).expect("CONN json");
    assert!(
        sessions
            .iter()
            .any(|s| s["backend"] == "alive" && s["backend_health"] == "up"),
        "{json}"
    );
    drop(held);

    // Alive again: RISE probes bring it back and sessions reach it.
    let revived = dead.revive();
    let line = wait_print(&proxy, "dead", " HEALTH UP");
    assert!(
        line.contains("last error"),
        "the last error stays visible: {line}"
    );
    for i in 0..4 {
        open_through(&proxy, &format!("health-back-{i}"));
    }
    assert!(
        revived.accepted() >= 2,
        "the probes reach the revived member (accepted {})",
        revived.accepted()
    );
    assert!(
        sessions_to(&proxy.settled_log_files(), "dead") >= 1,
        "sessions are sent to the revived member again:\n{}",
        proxy.log_files()
    );
    assert!(
        wait_until(deadline_in(STATE_CHANGE_LIMIT), || {
            proxy
                .log_files()
                .contains("Backend 'dead' is up (was down)")
        }),
        "the way back is logged:\n{}",
        proxy.log_files()
    );
}

#[test]
fn without_a_probe_sessions_mark_a_dead_member_down_after_passive_fall() {
    let dead = DeadPort::new();
    let alive = DummyBroker::start(Script::new(AfterOpen::Hold));
    let proxy = proxy();
    farm(
        &proxy,
        dead.addr.port(),
        alive.port(),
        "BACKEND HEALTH INTERVAL 0 PASSIVE_FALL 2 DOWN_HOLD 600000",
    );
    // Each session fails over past the dead member until it is marked down.
    for i in 0..8 {
        open_through(&proxy, &format!("passive-{i}"));
    }
    assert_eq!(alive.accepted(), 8, "no probe: only sessions connect");
    let line = wait_print(&proxy, "dead", " HEALTH DOWN");
    assert!(line.contains("by session: "), "{line}");
    let log = proxy.settled_log_files();
    assert_eq!(
        connect_attempts(&log, "dead"),
        2,
        "exactly PASSIVE_FALL sessions tried the dead member:\n{log}"
    );
    assert!(
        log.contains(
            "Backend 'dead' is down (was unknown) after 2 consecutive failures seen by sessions"
        ),
        "{log}"
    );
    assert!(log.contains("Backend 'dead' is down, not tried"), "{log}");
}

#[test]
fn health_off_tries_every_member() {
    let dead = DeadPort::new();
    let alive = DummyBroker::start(Script::new(AfterOpen::Hold));
    let proxy = proxy();
    farm(&proxy, dead.addr.port(), alive.port(), "BACKEND HEALTH OFF");
    for i in 0..6 {
        open_through(&proxy, &format!("off-{i}"));
    }
    let log = proxy.settled_log_files();
    assert!(
        connect_attempts(&log, "dead") >= 3,
        "with checks off, round-robin keeps trying the dead member:\n{log}"
    );
    assert!(!log.contains("not tried"), "{log}");
    assert!(!print_line(&proxy, "dead").contains("HEALTH DOWN"));
}
