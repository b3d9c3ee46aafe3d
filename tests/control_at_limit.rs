//! The control socket at the open-files limit and under too many control
//! clients (docs/reliability.md#resource-limits), against a proxy process:
//!
//! * the proxy's open-files limit is lowered from outside (`prlimit` on the
//!   child, so its own raise at start cannot undo it) to a little above what
//!   it has open, then filled with client connections: `amqpprox_ctl CONN`
//!   must still answer, and the failing accepts must not flood the log;
//! * past the bound on control clients served at once, the next client is
//!   refused with a reply that says so, and is served again once one ends.
//!
//! No RabbitMQ is needed: the clients never finish their handshake. Every
//! wait polls a condition with a deadline; the log-rate check counts lines
//! over a measured window.

mod support;

use std::net::TcpStream;
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

use support::control::{amqpprox_ctl, ctl, ctl_bin};
use support::dummy_broker::{AfterOpen, DummyBroker, Script};
use support::proxy::ProxyProcess;
use support::wait::{deadline_in, idle_for, wait_until};

const LIMIT: Duration = Duration::from_secs(30);

fn proxy() -> ProxyProcess {
    ProxyProcess::builder("unused", 1)
        .shards(2)
        .without_simple_mode()
        .handshake_timeout_ms(120_000)
        .start()
}

fn open_descriptors(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .expect("read the proxy's descriptors")
        .count()
}

/// Sets both the soft and the hard open-files limit of process `pid`.
fn prlimit_nofile(pid: u32, limit: u64) {
    let lim = libc::rlimit {
        rlim_cur: limit as libc::rlim_t,
        rlim_max: limit as libc::rlim_t,
    };
    // SAFETY: prlimit reads `lim` and writes nothing (no old-limit pointer).
    let rc = unsafe {
        libc::prlimit(
            pid as libc::pid_t,
            libc::RLIMIT_NOFILE,
            &lim,
            std::ptr::null_mut(),
        )
    };
    assert_eq!(
        rc,
        0,
        "prlimit on the proxy: {}",
        std::io::Error::last_os_error()
    );
}

/// Threads of process `pid` serving a control client.
fn control_client_threads(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/task"))
        .map(|tasks| {
            tasks
                .filter_map(|t| t.ok())
                .filter(|t| {
                    std::fs::read_to_string(t.path().join("comm"))
                        .is_ok_and(|c| c.trim_end() == "control-client")
                })
                .count()
        })
        .unwrap_or(0)
}

fn count(log: &str, needle: &str) -> usize {
    log.lines().filter(|l| l.contains(needle)).count()
}

#[test]
fn conn_still_answers_when_client_connections_fill_the_open_files_limit() {
    let broker = DummyBroker::start(Script::new(AfterOpen::Hold));
    let proxy = proxy();
    for line in [
        format!("BACKEND ADD b dc1 127.0.0.1 {}", broker.port()),
        "FARM ADD f round-robin b".to_string(),
        "MAP DEFAULT f".to_string(),
        format!("LISTEN START {}", proxy.port),
    ] {
        assert_eq!(ctl_bin(&proxy.control_socket, &line), (String::new(), 0));
    }
    let pid = proxy.pid();
    let open = open_descriptors(pid) as u64;
    prlimit_nofile(pid, open + 24);

    // Each client the proxy accepts costs it one descriptor (they never
    // send a byte); more than fit wait in the listen backlog.
    let mut clients: Vec<TcpStream> = Vec::new();
    for _ in 0..80 {
        clients.push(TcpStream::connect(("127.0.0.1", proxy.port)).expect("connect"));
    }
    assert!(
        proxy.log_contains_within("Too many open files", LIMIT),
        "the shards must hit the limit:\n{}",
        proxy.log_files()
    );
    let window_start = Instant::now();
    let before = proxy.log_files();

    // The operator gets in, more than once (the spare comes back). `ctl`
    // gives up after its read timeout, so a locked-out socket fails here.
    for _ in 0..3 {
        let reply = ctl(&proxy.control_socket, "CONN");
        assert!(
            !reply.starts_with("Too many"),
            "CONN at the limit: {reply}\n{}",
            proxy.log_files()
        );
    }
    let reply = ctl(&proxy.control_socket, "BACKEND PRINT");
    assert!(reply.starts_with("b (dc1)"), "{reply}");

    // Over a window of at least 3 s at the limit, the backoff keeps the
    // accept-failure lines to a few (a tight loop would log hundreds).
    idle_for(Duration::from_secs(3));
    let after = proxy.settled_log_files();
    let window = window_start.elapsed();
    let new_lines = count(&after, "Accept on port") - count(&before, "Accept on port");
    assert!(
        new_lines <= 2 * 10,
        "{new_lines} accept-failure lines in {window:?}:\n{after}"
    );
    assert!(
        count(&after, "Control socket accept failed") <= 10,
        "{after}"
    );
    drop(clients);
}

#[test]
fn control_clients_past_the_bound_are_refused_with_a_reason() {
    let proxy = proxy();
    // The harness's readiness probes were control clients too, perhaps
    // queued before the socket was served: one full round trip means they
    // were all accepted (in order, before it); then wait until none is
    // being served any more.
    let pid = proxy.pid();
    ctl(&proxy.control_socket, "DATACENTER PRINT");
    assert!(
        wait_until(deadline_in(LIMIT), || control_client_threads(pid) == 0),
        "control clients left: {}",
        control_client_threads(pid)
    );
    // 32 clients that say nothing hold every slot (each until its read
    // times out, 30 s, or it goes away); nobody else is a client now.
    let idle: Vec<UnixStream> = (0..32)
        .map(|_| UnixStream::connect(&proxy.control_socket).expect("connect"))
        .collect();
    assert!(
        wait_until(deadline_in(LIMIT), || control_client_threads(pid) == 32),
        "32 idle control clients are served: {} served",
        control_client_threads(pid)
    );
    // Accepted in order: the next one is past the bound.
    let reply = ctl(&proxy.control_socket, "CONN");
    assert_eq!(
        reply,
        "Too many control clients at once (at most 32); try again when one has finished.\n"
    );
    // amqpprox_ctl prints it and exits with its error status.
    let run = amqpprox_ctl(&[proxy.control_socket.to_str().unwrap(), "CONN"]);
    assert!(
        run.stdout.starts_with("Too many control clients") && run.code == Some(3),
        "{run:?}"
    );
    assert!(proxy.log_contains_within("Control client refused: 32 clients are being served", LIMIT));

    // The idle ones go away: their slots are free again.
    drop(idle);
    assert!(
        wait_until(deadline_in(LIMIT), || {
            ctl_bin(&proxy.control_socket, "DATACENTER PRINT").1 == 0
        }),
        "a freed slot serves the next client:\n{}",
        proxy.log_files()
    );
}
