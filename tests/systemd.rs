//! The proxy as systemd runs it (`Type=notify`, `ExecReload=kill -HUP`):
//! the real binary is started with `$NOTIFY_SOCKET` naming a datagram
//! socket the test owns, and with `--config`. Checks `READY=1` once the
//! listeners accept, `STATUS=` following the session count, `STOPPING=1`
//! on SIGTERM and on `EXIT`, and SIGHUP re-applying the file
//! (`RELOADING=1` ... `READY=1` around it): `CONFIG DUMP` shows the new
//! file's state, and a file that fails or cannot be read changes nothing.
//!
//! Needs no RabbitMQ: the session is with the kit's scripted broker. Owns
//! only its child process and temporary files; every wait has a deadline.

mod support;

use std::net::TcpStream;
use std::os::unix::net::UnixDatagram;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use support::control::ctl;
use support::dummy_broker::{AfterOpen, DummyBroker, Script};
use support::proxy::free_port;
use support::raw::{self, RawConn};
use support::wait;

/// Generous on a loaded 2-core machine: each is a bound, never a pause.
const STEP: Duration = Duration::from_secs(30);

/// A proxy started as systemd would start it, killed when dropped.
struct Notified {
    child: Child,
    dir: tempfile::TempDir,
    notify: UnixDatagram,
    config: PathBuf,
    control: PathBuf,
    /// Every datagram received so far, in order.
    seen: Vec<String>,
}

impl Notified {
    fn start(config_text: &str) -> Notified {
        let dir = tempfile::Builder::new()
            .prefix("amqpprox-systemd-")
            .tempdir()
            .unwrap();
        let notify_path = dir.path().join("notify");
        let notify = UnixDatagram::bind(&notify_path).unwrap();
        let config = dir.path().join("amqpprox.conf");
        std::fs::write(&config, config_text).unwrap();
        let control = dir.path().join("control");
        let child = Command::new(env!("CARGO_BIN_EXE_amqpprox"))
            .arg("--config")
            .arg(&config)
            .arg("--controlSocket")
            .arg(&control)
            .arg("--logDirectory")
            .arg(dir.path().join("logs"))
            .args(["--shards", "1", "--cleanupIntervalMs", "200"])
            .args(["--drainTimeoutMs", "20000"])
            .env("NOTIFY_SOCKET", &notify_path)
            .current_dir(dir.path())
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(dir.path().join("stdout")).unwrap())
            .stderr(std::fs::File::create(dir.path().join("stderr")).unwrap())
            .spawn()
            .unwrap();
        Notified {
            child,
            dir,
            notify,
            config,
            control,
            seen: Vec::new(),
        }
    }

    /// A proxy started with the configuration `config(ports)` makes for
    /// `n` ports that were free a moment ago, once it has sent `READY=1`.
    /// Another program may take such a port before the proxy binds it;
    /// then the start fails and is tried again with new ports.
    fn start_ready(n: usize, config: impl Fn(&[u16]) -> String) -> (Notified, Vec<u16>) {
        let mut attempt = 1;
        loop {
            let ports: Vec<u16> = (0..n).map(|_| free_port()).collect();
            let mut proxy = Notified::start(&config(&ports));
            match proxy.wait_for("READY=1", |d| has_line(d, "READY=1")) {
                Ok(_) => return (proxy, ports),
                Err(why) if attempt < 3 && proxy.output().contains("in use") => {
                    eprintln!("start attempt {attempt} failed ({why}); new ports");
                    attempt += 1;
                }
                Err(why) => panic!("{why}"),
            }
        }
    }

    /// Receives datagrams until one satisfies `wanted`, which it returns.
    fn expect(&mut self, what: &str, wanted: impl Fn(&str) -> bool) -> String {
        self.wait_for(what, wanted)
            .unwrap_or_else(|why| panic!("{why}"))
    }

    /// As [`Notified::expect`]; an error, with the proxy's output, when the
    /// deadline passes or the proxy exits first.
    fn wait_for(&mut self, what: &str, wanted: impl Fn(&str) -> bool) -> Result<String, String> {
        let deadline = Instant::now() + STEP;
        let mut buf = [0u8; 4096];
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(format!(
                    "no {what} within {STEP:?}; got {:?}\n{}",
                    self.seen,
                    self.output()
                ));
            }
            // Short reads, so an exit is noticed without waiting it out.
            let slice = left.min(Duration::from_millis(250));
            self.notify.set_read_timeout(Some(slice)).unwrap();
            match self.notify.recv(&mut buf) {
                Ok(n) => {
                    let text = String::from_utf8(buf[..n].to_vec()).unwrap();
                    self.seen.push(text.clone());
                    if wanted(&text) {
                        return Ok(text);
                    }
                }
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) =>
                {
                    if let Some(status) = self.child.try_wait().unwrap() {
                        return Err(format!(
                            "the proxy exited ({status}) before {what}; got {:?}\n{}",
                            self.seen,
                            self.output()
                        ));
                    }
                }
                Err(e) => panic!("receiving from the notify socket: {e}"),
            }
        }
    }

    fn signal(&self, signal: libc::c_int) {
        let pid = libc::pid_t::try_from(self.child.id()).unwrap();
        // SAFETY: kill only sends a signal to our own child.
        assert_eq!(unsafe { libc::kill(pid, signal) }, 0);
    }

    /// SIGHUP, then the reload's `RELOADING=1` and the `READY=1` that ends it.
    fn reload(&mut self) {
        self.signal(libc::SIGHUP);
        self.expect("RELOADING=1", |d| {
            d.lines().any(|l| l == "RELOADING=1")
                && d.lines().any(|l| l.starts_with("MONOTONIC_USEC="))
        });
        self.expect("READY=1 after the reload", |d| {
            d.lines().any(|l| l == "READY=1")
        });
    }

    fn dump(&self) -> String {
        ctl(&self.control, "CONFIG DUMP")
    }

    fn logs(&self) -> String {
        let mut paths: Vec<PathBuf> = std::fs::read_dir(self.dir.path().join("logs"))
            .map(|e| e.filter_map(|e| e.ok().map(|e| e.path())).collect())
            .unwrap_or_default();
        paths.sort();
        paths
            .iter()
            .filter_map(|p| std::fs::read_to_string(p).ok())
            .collect()
    }

    /// Waits (the log is written in batches) until the logs hold `needle`.
    fn expect_log(&self, needle: &str) {
        let found = wait::wait_until(wait::deadline_in(STEP), || self.logs().contains(needle));
        assert!(found, "the log never said {needle:?}\n{}", self.output());
    }

    fn output(&self) -> String {
        let read = |name: &str| std::fs::read_to_string(self.dir.path().join(name));
        format!(
            "--- stdout ---\n{}\n--- stderr ---\n{}\n--- logs ---\n{}",
            read("stdout").unwrap_or_default(),
            read("stderr").unwrap_or_default(),
            self.logs()
        )
    }
}

impl Drop for Notified {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn accepts(port: u16) -> bool {
    TcpStream::connect(("127.0.0.1", port)).is_ok()
}

fn has_line(datagram: &str, line: &str) -> bool {
    datagram.lines().any(|l| l == line)
}

#[test]
fn ready_status_and_stopping_reach_the_notify_socket() {
    let broker = DummyBroker::start(Script::new(AfterOpen::Hold));
    let (mut proxy, ports) = Notified::start_ready(1, |ports| {
        format!(
            "BACKEND ADD b dc1 127.0.0.1 {}\n\
             FARM ADD f round-robin b\n\
             MAP FARM / f\n\
             LISTEN START {}\n",
            broker.port(),
            ports[0]
        )
    });
    let port = ports[0];
    let ready = proxy.seen.last().cloned().unwrap();
    assert!(has_line(&ready, "STATUS=0 sessions"), "{ready:?}");
    // READY=1 comes once the --config listeners are open, not before.
    assert!(
        accepts(port),
        "READY=1 was sent before port {port} accepted"
    );

    let mut client = RawConn::connect_local(port);
    raw::client_handshake(&mut client, "systemd-status", "/");
    proxy.expect("STATUS=1 session", |d| has_line(d, "STATUS=1 session"));

    proxy.signal(libc::SIGTERM);
    let stopping = proxy.expect("STOPPING=1", |d| has_line(d, "STOPPING=1"));
    assert!(has_line(&stopping, "STATUS=1 session"), "{stopping:?}");
    // The drain asks the client to reconnect elsewhere (Close 320); once it
    // answers, the last session is gone and the process exits.
    let close = client.expect_method(10, 50);
    assert_eq!(&close.args()[..2], &320u16.to_be_bytes());
    client.send(&support::wire::close_ok());
    let exited = wait::poll_until(wait::deadline_in(STEP), || proxy.child.try_wait().unwrap());
    assert!(
        exited.is_some_and(|s| s.success()),
        "the proxy did not exit cleanly after the drain: {exited:?}\n{}",
        proxy.output()
    );
}

/// The configuration of the first file, as `CONFIG DUMP` prints it.
fn first_file(listen: u16) -> String {
    format!(
        "BACKEND ADD b1 dc1 127.0.0.1 5672\n\
         BACKEND ADD b2 dc1 127.0.0.1 5673\n\
         FARM ADD f round-robin b1 b2\n\
         MAP FARM v1 f\n\
         VHOST PAUSE held\n\
         LISTEN START {listen}\n"
    )
}

/// The second file: one backend changed, one gone, one new; the farm now
/// partitioned; other mappings; the pause lifted; another port.
fn second_file(listen: u16) -> String {
    format!(
        "DATACENTER SET dc2\n\
         BACKEND ADD b1 dc1 127.0.0.1 5672\n\
         BACKEND ADD b3 dc2 127.0.0.1 5674\n\
         BACKEND DRAIN b3\n\
         FARM ADD f round-robin b1 b3\n\
         FARM PARTITION f datacenter-affinity\n\
         MAP BACKEND v2 b3\n\
         MAP DEFAULT f\n\
         LISTEN START {listen}\n"
    )
}

#[test]
fn sighup_reapplies_the_config_file_and_a_bad_file_changes_nothing() {
    let (mut proxy, ports) = Notified::start_ready(2, |ports| first_file(ports[0]));
    let (first_port, second_port) = (ports[0], ports[1]);
    assert_eq!(proxy.dump(), first_file(first_port));

    std::fs::write(&proxy.config, second_file(second_port)).unwrap();
    proxy.reload();
    assert_eq!(proxy.dump(), second_file(second_port));
    assert!(accepts(second_port), "the new listener is not open");
    let closed = wait::wait_until(wait::deadline_in(STEP), || !accepts(first_port));
    assert!(
        closed,
        "port {first_port} is still open after its LISTEN left the file\n{}",
        proxy.output()
    );
    proxy.expect_log("SIGHUP: re-applied");

    // A line that fails: nothing at all changes, and the log says where.
    let bad = format!("{}FARM ADD g round-robin b1 nope\n", first_file(first_port));
    std::fs::write(&proxy.config, bad).unwrap();
    proxy.reload();
    assert_eq!(proxy.dump(), second_file(second_port));
    proxy.expect_log(&format!(
        "{}:7: 'FARM ADD g round-robin b1 nope'",
        proxy.config.display()
    ));

    // A file that cannot be read: the same.
    std::fs::remove_file(&proxy.config).unwrap();
    proxy.reload();
    assert_eq!(proxy.dump(), second_file(second_port));
    proxy.expect_log("cannot read the config file");
    assert!(accepts(second_port));

    // The same file twice: the second reload changes nothing.
    std::fs::write(&proxy.config, second_file(second_port)).unwrap();
    proxy.reload();
    assert_eq!(proxy.dump(), second_file(second_port));
    proxy.expect_log("0 changes");
}

#[test]
fn exit_over_the_control_socket_sends_stopping() {
    let (mut proxy, _) = Notified::start_ready(1, |ports| format!("LISTEN START {}\n", ports[0]));
    assert_eq!(ctl(&proxy.control, "EXIT"), "Exiting.\n");
    let stopping = proxy.expect("STOPPING=1", |d| has_line(d, "STOPPING=1"));
    assert!(has_line(&stopping, "STATUS=0 sessions"), "{stopping:?}");
    let exited = wait::poll_until(wait::deadline_in(STEP), || proxy.child.try_wait().unwrap());
    assert!(exited.is_some_and(|s| s.success()), "{exited:?}");
}

/// A proxy routing vhost `v1` through farm `f` (with `farm_f` its members)
/// when `mapped`, else through the default farm `g`.
fn moving_file(port: u16, broker_1: u16, broker_2: u16, farm_f: &str, mapped: bool) -> String {
    let map = if mapped { "MAP FARM v1 f\n" } else { "" };
    format!(
        "BACKEND ADD b1 dc1 127.0.0.1 {broker_1}\n\
         BACKEND ADD b2 dc1 127.0.0.1 {broker_2}\n\
         FARM ADD f round-robin {farm_f}\n\
         FARM ADD g round-robin b2\n\
         MAP FARM other f\n\
         {map}\
         MAP DEFAULT g\n\
         LISTEN START {port}\n"
    )
}

#[test]
fn a_reload_moves_only_the_sessions_the_new_file_moves() {
    let (broker_1, broker_2) = (
        DummyBroker::start(Script::new(AfterOpen::Hold)),
        DummyBroker::start(Script::new(AfterOpen::Hold)),
    );
    let (b1, b2) = (broker_1.port(), broker_2.port());
    let (mut proxy, ports) =
        Notified::start_ready(1, |ports| moving_file(ports[0], b1, b2, "b1", true));
    let port = ports[0];
    let mut client = RawConn::connect_local(port);
    raw::client_handshake(&mut client, "systemd-move", "v1");
    assert_eq!(broker_1.accepted(), 1, "the session went to b1");

    // v1 loses its mapping (a mapping change alone moves nobody) and farm
    // f, which chose b1, gains a member: f is replaced, b1 is still in it,
    // so the session stays. Deleting f on the way would have moved it to
    // g, where v1 now routes.
    std::fs::write(&proxy.config, moving_file(port, b1, b2, "b1 b2", false)).unwrap();
    proxy.reload();
    assert!(proxy.dump().contains("FARM ADD f round-robin b1 b2\n"));
    client.expect_silence(Duration::from_secs(1));

    // b1 leaves f: now the session is asked to reconnect.
    std::fs::write(&proxy.config, moving_file(port, b1, b2, "b2", false)).unwrap();
    proxy.reload();
    let close = client.expect_method(10, 50);
    assert_eq!(&close.args()[..2], &320u16.to_be_bytes());
}
