//! Hitless upgrade, end to end against the real RabbitMQ on 127.0.0.1:5672:
//! real `amqpprox` processes take each other over with `--takeover` while
//! clients keep connecting, each doing a whole AMQP handshake, opening a
//! channel, publishing a message and closing (waiting for every `*-Ok`, so
//! the broker really answered). Any refused, reset, closed or silent
//! connection fails the test. Also: a session held open across an upgrade
//! keeps working on the old process, which exits only once that session
//! has ended; the new processes run other shard counts than the old ones;
//! a handover the new process abandons leaves the old one serving and
//! configurable as before.
//!
//! Needs RabbitMQ (guest/guest on `/`); fails, never skips, without it.
//! Starts its own proxies on ephemeral ports; never touches RabbitMQ's
//! configuration.

use amqpprox_testkit::ports::free_port;
use amqpprox_testkit::raw::RawConn;
use amqpprox_testkit::wire::{
    basic_publish, body_frames, channel_close, channel_open, close, content_header,
    default_start_ok, open, tune_ok, Frame, FRAME_HEARTBEAT, FRAME_METHOD, PROTOCOL_HEADER,
};
use std::fs::File;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::SeqCst};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Upgrades in the connection-loop test, each to another shard count.
const UPGRADES: usize = 10;
/// Shard counts the processes run, in turn.
const SHARDS: [usize; 3] = [2, 3, 1];
/// Clients looping concurrently.
const CLIENTS: usize = 3;
/// Bound on anything one client step waits for (a loaded 2-core machine).
const STEP_TIMEOUT: Duration = Duration::from_secs(20);
/// Bound on a process starting, taking over, or exiting.
const PROCESS_TIMEOUT: Duration = Duration::from_secs(60);

fn require_rabbitmq() {
    assert!(
        TcpStream::connect_timeout(&"127.0.0.1:5672".parse().unwrap(), Duration::from_secs(5))
            .is_ok(),
        "this test needs RabbitMQ on 127.0.0.1:5672 (guest/guest)"
    );
}

fn wait_for(what: &str, within: Duration, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + within;
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// One control line, the whole reply.
fn ctl(socket: &Path, line: &str) -> String {
    let mut stream = UnixStream::connect(socket)
        .unwrap_or_else(|e| panic!("control socket {}: {e}", socket.display()));
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    stream.write_all(format!("{line}\n").as_bytes()).unwrap();
    let mut reply = String::new();
    stream.read_to_string(&mut reply).unwrap();
    reply
}

/// One `amqpprox` process; killed if the test ends while it runs.
struct Proxy {
    name: String,
    child: Option<Child>,
    stdout: PathBuf,
}

impl Proxy {
    fn spawn(dir: &Path, name: &str, args: &[String]) -> Proxy {
        let stdout = dir.join(format!("{name}.out"));
        // The console log goes to stderr; both in one file, read as one.
        let out = File::create(&stdout).unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_amqpprox"))
            .arg("--logDirectory")
            .arg(dir.join(format!("{name}-logs")))
            .args(["-v", "4"])
            .args(args)
            .stderr(Stdio::from(out.try_clone().unwrap()))
            .stdout(Stdio::from(out))
            .spawn()
            .expect("amqpprox starts");
        Proxy {
            name: name.to_string(),
            child: Some(child),
            stdout,
        }
    }

    fn output(&self) -> String {
        std::fs::read_to_string(&self.stdout).unwrap_or_default()
    }

    fn exited(&mut self) -> Option<ExitStatus> {
        self.child.as_mut().unwrap().try_wait().unwrap()
    }

    /// Waits for `text` on the console, failing early if the process ends.
    fn wait_for_line(&mut self, text: &str) {
        let deadline = Instant::now() + PROCESS_TIMEOUT;
        while !self.output().contains(text) {
            if let Some(status) = self.exited() {
                panic!(
                    "{} exited ({status}) before printing '{text}':\n{}",
                    self.name,
                    self.output()
                );
            }
            assert!(
                Instant::now() < deadline,
                "{} did not print '{text}':\n{}",
                self.name,
                self.output()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    fn wait_for_exit(&mut self) -> ExitStatus {
        let deadline = Instant::now() + PROCESS_TIMEOUT;
        loop {
            if let Some(status) = self.exited() {
                self.child = None;
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "{} did not exit:\n{}",
                self.name,
                self.output()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// A proxy in simple mode in front of RabbitMQ on a free port, ready; and
/// that port. Once taken over, it lets its connections end on their own
/// for `grace_ms`.
fn first_proxy(dir: &Path, control: &Path, shards: usize, grace_ms: u64) -> (Proxy, u16) {
    // A port found free may be taken by someone else before the proxy
    // binds it: then the proxy exits, and another port is tried.
    for _ in 0..3 {
        let port = free_port();
        let mut proxy = Proxy::spawn(
            dir,
            "gen0",
            &[
                "--upgradeGraceMs".into(),
                grace_ms.to_string(),
                // A client held in its PROXY step outlives any test pause.
                "--handshakeTimeoutMs".into(),
                "120000".into(),
                "--controlSocket".into(),
                control.display().to_string(),
                "--shards".into(),
                shards.to_string(),
                "--listenPort".into(),
                port.to_string(),
                "--destinationDNS".into(),
                "127.0.0.1".into(),
                "--destinationPort".into(),
                "5672".into(),
            ],
        );
        let listening = format!("'LISTEN START {port}' Output (finish=1): \n");
        let deadline = Instant::now() + PROCESS_TIMEOUT;
        loop {
            if proxy.output().contains(&listening) {
                return (proxy, port);
            }
            if proxy.exited().is_some() {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "the first proxy did not start:\n{}",
                proxy.output()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }
    panic!("the first proxy could not listen on three free ports");
}

/// Starts generation `generation` taking over from whoever serves
/// `control`, and waits until it accepts. `grace_ms` is its own grace,
/// for when it is taken over in turn. Returns it and how many listening
/// sockets the old process handed over and stopped accepting on.
fn take_over(
    dir: &Path,
    control: &Path,
    generation: usize,
    shards: usize,
    grace_ms: u64,
) -> (Proxy, usize) {
    let mut proxy = Proxy::spawn(
        dir,
        &format!("gen{generation}"),
        &[
            "--takeover".into(),
            control.display().to_string(),
            "--shards".into(),
            shards.to_string(),
            "--upgradeGraceMs".into(),
            grace_ms.to_string(),
        ],
    );
    // Accepting, and serving the control socket path.
    proxy.wait_for_line("--takeover: complete");
    let out = proxy.output();
    let released = out
        .lines()
        .find(|l| l.contains("the old process answered"))
        .unwrap_or_else(|| panic!("no answer from the old process:\n{out}"));
    // "stopped accepting on N of N": every accept of the old process was
    // completed, none given up on.
    let counts: Vec<&str> = released
        .split("stopped accepting on ")
        .nth(1)
        .and_then(|r| r.split(" listening").next())
        .map(|r| r.split(" of ").collect())
        .unwrap_or_default();
    assert!(
        counts.len() == 2 && counts[0] == counts[1] && counts[0] != "0",
        "{released}"
    );
    let handed = counts[0].parse().unwrap();
    (proxy, handed)
}

/// A client connection, plain or TLS: whole frames in, bytes out.
trait Client {
    fn frame(&mut self, timeout: Duration) -> std::io::Result<Frame>;
    fn put(&mut self, bytes: &[u8]) -> std::io::Result<()>;
}

impl Client for RawConn {
    fn frame(&mut self, timeout: Duration) -> std::io::Result<Frame> {
        self.read_frame_within(timeout)
    }
    fn put(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.try_send(bytes)
    }
}

/// A TLS client over a blocking socket, trusting one CA.
struct TlsClient(rustls::StreamOwned<rustls::ClientConnection, TcpStream>);

impl TlsClient {
    /// TLS over an already connected socket (the handshake runs on the
    /// first read or write).
    fn over(tcp: TcpStream, ca_pem: &str) -> TlsClient {
        let mut roots = rustls::RootCertStore::empty();
        for cert in rustls_pemfile::certs(&mut ca_pem.as_bytes()) {
            roots.add(cert.unwrap()).unwrap();
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
        let connection = rustls::ClientConnection::new(Arc::new(config), name).unwrap();
        TlsClient(rustls::StreamOwned::new(connection, tcp))
    }
}

impl Client for TlsClient {
    fn frame(&mut self, timeout: Duration) -> std::io::Result<Frame> {
        self.0.sock.set_read_timeout(Some(timeout))?;
        let mut header = [0u8; 7];
        self.0.read_exact(&mut header)?;
        let size = u32::from_be_bytes([header[3], header[4], header[5], header[6]]) as usize;
        let mut rest = vec![0u8; size + 1];
        self.0.read_exact(&mut rest)?;
        let end = rest.pop().unwrap();
        Ok(Frame {
            kind: header[0],
            channel: u16::from_be_bytes([header[1], header[2]]),
            payload: rest,
            end,
        })
    }
    fn put(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.0.write_all(bytes)?;
        self.0.flush()
    }
}

/// Reads the next method frame (heartbeats skipped) and checks it.
fn expect(conn: &mut impl Client, channel: u16, ids: (u16, u16)) -> Result<Frame, String> {
    loop {
        let frame = conn
            .frame(STEP_TIMEOUT)
            .map_err(|e| format!("waiting for {}.{}: {e} ({:?})", ids.0, ids.1, e.kind()))?;
        if frame.kind == FRAME_HEARTBEAT {
            continue;
        }
        if frame.kind == FRAME_METHOD && frame.channel == channel && frame.method_ids() == Some(ids)
        {
            return Ok(frame);
        }
        return Err(format!(
            "expected {}.{} on channel {channel}, got {}",
            ids.0,
            ids.1,
            frame.describe()
        ));
    }
}

fn send(conn: &mut impl Client, bytes: &[u8]) -> Result<(), String> {
    conn.put(bytes)
        .map_err(|e| format!("send: {e} ({:?})", e.kind()))
}

/// Connects and does a full handshake, returning the open connection.
fn open_session(port: u16, name: &str) -> Result<RawConn, String> {
    let mut conn = RawConn::connect(("127.0.0.1", port))
        .map_err(|e| format!("connect: {e} ({:?})", e.kind()))?;
    handshake(&mut conn, name)?;
    Ok(conn)
}

fn handshake(conn: &mut impl Client, name: &str) -> Result<(), String> {
    send(conn, PROTOCOL_HEADER)?;
    expect(conn, 0, (10, 10))?;
    send(conn, &default_start_ok(name))?;
    expect(conn, 0, (10, 30))?;
    let mut rest = tune_ok(2047, 131_072, 0);
    rest.extend_from_slice(&open("/"));
    send(conn, &rest)?;
    expect(conn, 0, (10, 41))?;
    Ok(())
}

/// Opens `channel`, publishes one message on it and closes it again,
/// waiting for the broker's answers.
fn publish_once(conn: &mut impl Client, channel: u16, body: &[u8]) -> Result<(), String> {
    send(conn, &channel_open(channel))?;
    expect(conn, channel, (20, 11))?;
    let mut message = basic_publish(channel, "amqpprox-upgrade-e2e-nowhere");
    message.extend_from_slice(&content_header(channel, body.len() as u64));
    message.extend_from_slice(&body_frames(channel, body, 4096));
    // The channel's CloseOk comes after the publish was handled.
    message.extend_from_slice(&channel_close(channel, 200, "done", 0, 0));
    send(conn, &message)?;
    expect(conn, channel, (20, 41))?;
    Ok(())
}

fn close_session(mut conn: impl Client) -> Result<(), String> {
    send(&mut conn, &close(200, "bye", 0, 0))?;
    expect(&mut conn, 0, (10, 51))?;
    Ok(())
}

/// One whole client: handshake, publish, close.
fn client_round(port: u16, name: &str) -> Result<(), String> {
    let conn = RawConn::connect(("127.0.0.1", port))
        .map_err(|e| format!("connect: {e} ({:?})", e.kind()))?;
    client_round_on(conn, name)
}

fn client_round_on(mut conn: impl Client, name: &str) -> Result<(), String> {
    handshake(&mut conn, name)?;
    publish_once(&mut conn, 1, name.as_bytes())?;
    close_session(conn)
}

/// Clients looping until stopped; every failure is recorded with its
/// client and round.
struct Loop {
    stop: Arc<AtomicBool>,
    done: Arc<AtomicUsize>,
    failures: Arc<Mutex<Vec<String>>>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl Loop {
    fn start(port: u16, clients: usize) -> Loop {
        let stop = Arc::new(AtomicBool::new(false));
        let done = Arc::new(AtomicUsize::new(0));
        let failures = Arc::new(Mutex::new(Vec::new()));
        let threads = (0..clients)
            .map(|client| {
                let (stop, done, failures) =
                    (Arc::clone(&stop), Arc::clone(&done), Arc::clone(&failures));
                std::thread::spawn(move || {
                    let mut round = 0;
                    while !stop.load(SeqCst) {
                        let name = format!("upgrade-e2e-{client}-{round}");
                        match client_round(port, &name) {
                            Ok(()) => {
                                done.fetch_add(1, SeqCst);
                            }
                            Err(e) => {
                                // One failure fails the test; this client
                                // stops rather than pile up more.
                                lock(&failures).push(format!("{name}: {e}"));
                                return;
                            }
                        }
                        round += 1;
                    }
                })
            })
            .collect();
        Loop {
            stop,
            done,
            failures,
            threads,
        }
    }

    /// Waits until `rounds` more rounds have succeeded, so the loop runs
    /// on whichever process serves now.
    fn progress(&self, rounds: usize) {
        let target = self.done.load(SeqCst) + rounds;
        wait_for("client rounds to succeed", PROCESS_TIMEOUT, || {
            self.done.load(SeqCst) >= target || !lock(&self.failures).is_empty()
        });
        self.check();
    }

    fn check(&self) {
        let failures = lock(&self.failures);
        assert!(
            failures.is_empty(),
            "{} client rounds failed (after {} succeeded):\n{}",
            failures.len(),
            self.done.load(SeqCst),
            failures.join("\n")
        );
    }

    fn finish(self) -> usize {
        self.stop.store(true, SeqCst);
        for t in self.threads {
            t.join().expect("a client thread ends");
        }
        let done = self.done.load(SeqCst);
        let failures = lock(&self.failures);
        assert!(
            failures.is_empty(),
            "{} client rounds failed (after {done} succeeded):\n{}",
            failures.len(),
            failures.join("\n")
        );
        done
    }
}

/// The failures so far, also after a failed assertion poisoned the lock.
fn lock(failures: &Mutex<Vec<String>>) -> std::sync::MutexGuard<'_, Vec<String>> {
    failures.lock().unwrap_or_else(|p| p.into_inner())
}

/// The old process's log says it never gave up on an accept.
fn assert_no_accept_given_up(proxy: &Proxy) {
    let out = proxy.output();
    assert!(
        !out.contains("giving up") && !out.contains("Stopping the accepts"),
        "{} gave up on an accept in flight:\n{out}",
        proxy.name
    );
}

#[test]
fn a_connection_loop_runs_through_upgrades_without_one_failure() {
    require_rabbitmq();
    let dir = tempfile::tempdir().unwrap();
    let control = dir.path().join("amqpprox.sock");
    let (mut serving, port) = first_proxy(dir.path(), &control, SHARDS[0], 30_000);
    let clients = Loop::start(port, CLIENTS);
    clients.progress(CLIENTS * 2);
    // A port keeps the sockets it was handed, and a process with more
    // shards than sockets adds its own: the count is the most shards any
    // generation ran so far.
    let mut most_shards = SHARDS[0];
    for generation in 1..=UPGRADES {
        let shards = SHARDS[generation % SHARDS.len()];
        let (next, handed) = take_over(dir.path(), &control, generation, shards, 30_000);
        assert_eq!(
            handed,
            most_shards,
            "sockets handed by generation {}",
            generation - 1
        );
        most_shards = most_shards.max(shards);
        let mut old = std::mem::replace(&mut serving, next);
        // The old process ends on its own once its last client is done.
        let status = old.wait_for_exit();
        assert!(status.success(), "{} exited with {status}", old.name);
        assert_no_accept_given_up(&old);
        // The control socket path is the new process's, not removed by
        // the old one on its way out.
        assert!(ctl(&control, "CONFIG DUMP").contains(&format!("LISTEN START {port}")));
        clients.progress(CLIENTS * 2);
    }
    let rounds = clients.finish();
    assert!(rounds >= CLIENTS * 2 * (UPGRADES + 1), "{rounds}");
    assert!(serving.exited().is_none(), "the last process serves on");
}

#[test]
fn a_held_session_finishes_on_the_old_process() {
    require_rabbitmq();
    let dir = tempfile::tempdir().unwrap();
    let control = dir.path().join("amqpprox.sock");
    let (mut old, port) = first_proxy(dir.path(), &control, 2, 60_000);
    let mut held = open_session(port, "upgrade-e2e-held").expect("the held session opens");
    publish_once(&mut held, 1, b"before").expect("the held session publishes");

    let (new, _) = take_over(dir.path(), &control, 1, 1, 60_000);
    // Released and draining, but the held session is still served by the
    // old process, which waits for it.
    publish_once(&mut held, 2, b"after").expect("the held session works after the upgrade");
    assert!(
        old.exited().is_none(),
        "the old process still serves a session"
    );
    // New clients go to the new process meanwhile.
    for round in 0..5 {
        client_round(port, &format!("upgrade-e2e-after-{round}")).expect("the new process serves");
    }
    publish_once(&mut held, 3, b"still").expect("the held session still works");
    assert!(
        old.exited().is_none(),
        "the old process still serves a session"
    );

    close_session(held).expect("the held session closes cleanly");
    let status = old.wait_for_exit();
    assert!(status.success(), "old exited with {status}");
    assert_no_accept_given_up(&old);
    client_round(port, "upgrade-e2e-last").expect("the new process serves on");
    drop(new);
}

#[test]
fn an_abandoned_handover_leaves_the_old_process_as_it_was() {
    require_rabbitmq();
    let dir = tempfile::tempdir().unwrap();
    let control = dir.path().join("amqpprox.sock");
    let (mut old, port) = first_proxy(dir.path(), &control, 2, 60_000);

    let received = amqpprox::handoff::request_handoff(&control, Duration::from_secs(30))
        .expect("the handover is answered");
    assert_eq!(received.listeners.len(), 2, "one socket per shard");
    assert!(received.config.contains(&format!("LISTEN START {port}")));
    // While handed over: no configuration change, no second handover.
    let refused = ctl(&control, "DATACENTER SET dc-upgrade");
    assert!(refused.starts_with("Refused"), "{refused}");
    let refused = ctl(&control, "LISTEN STOP");
    assert!(refused.starts_with("Refused"), "{refused}");
    match amqpprox::handoff::request_handoff(&control, Duration::from_secs(30)) {
        Err(amqpprox::handoff::HandoffError::NotSupported { reply }) => {
            assert!(reply.contains("already handed"), "{reply}")
        }
        other => panic!("a second handover was not refused: {other:?}"),
    }
    // The old process still serves.
    client_round(port, "upgrade-e2e-while-handed").expect("the old process serves");

    // Through amqpprox_ctl's status opt-in the exchange cannot run.
    let via_ctl = ctl(&control, "\0amqpprox_ctl status\nUPGRADE RELEASE");
    assert!(
        via_ctl.contains("--takeover") && via_ctl.ends_with("\0error"),
        "{via_ctl:?}"
    );

    // The new process goes away without releasing: the old one carries on.
    drop(received);
    wait_for("the handover to be taken back", PROCESS_TIMEOUT, || {
        ctl(&control, "DATACENTER SET dc-upgrade").is_empty()
    });
    assert_eq!(ctl(&control, "DATACENTER PRINT").trim(), "dc-upgrade");
    let nothing = ctl(&control, "UPGRADE RELEASE");
    assert!(nothing.starts_with("Nothing was handed over"), "{nothing}");
    client_round(port, "upgrade-e2e-after-abandon").expect("the old process serves on");
    // And LISTEN STOP shuts its (no longer shared) sockets down again.
    assert_eq!(ctl(&control, "LISTEN STOP"), "");
    assert!(TcpStream::connect(("127.0.0.1", port)).is_err());
    assert!(old.exited().is_none());
}

#[test]
fn a_connection_still_in_its_proxy_header_step_keeps_the_old_process() {
    require_rabbitmq();
    let dir = tempfile::tempdir().unwrap();
    let control = dir.path().join("amqpprox.sock");
    let (mut old, _) = first_proxy(dir.path(), &control, 1, 60_000);
    assert_eq!(ctl(&control, "LISTEN STOP"), "");
    // A port found free may be taken before the proxy binds it: retried.
    let port = (0..3)
        .map(|_| free_port())
        .find(|port| ctl(&control, &format!("LISTEN START {port} PROXY")).is_empty())
        .expect("a PROXY listener on one of three free ports");

    // Accepted, but no PROXY header yet: not a session, still a
    // connection the old process must wait for. One shard, one socket: the
    // old process's accept completes with this client, and the release
    // answers only once that accept has been counted (its gate), so the
    // drain below counts it (beside, perhaps, the dummy client that
    // completed the accept armed after it).
    let mut waiting = RawConn::connect(("127.0.0.1", port)).expect("connect");
    let (new, _) = take_over(dir.path(), &control, 1, 1, 60_000);
    old.wait_for_line("Released by a new process: waiting up to 60000 ms for ");
    let out = old.output();
    let counted: usize = out
        .split("waiting up to 60000 ms for ")
        .nth(1)
        .and_then(|r| r.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no connection count:\n{out}"));
    assert!(
        counted >= 1,
        "the connection in its PROXY step was not counted:\n{out}"
    );
    assert!(old.exited().is_none());

    // It finishes on the old process: header, handshake, publish, close.
    let header = format!("PROXY TCP4 127.0.0.1 127.0.0.1 40000 {port}\r\n");
    send(&mut waiting, header.as_bytes()).unwrap();
    client_round_on(waiting, "upgrade-e2e-proxy-held").expect("the held client finishes");
    let status = old.wait_for_exit();
    assert!(status.success(), "old exited with {status}");

    // The PROXY listener was handed over as one.
    let mut conn = RawConn::connect(("127.0.0.1", port)).expect("connect");
    send(&mut conn, header.as_bytes()).unwrap();
    client_round_on(conn, "upgrade-e2e-proxy-new").expect("the new process serves PROXY");
    drop(new);
}

/// A CA and a server certificate for localhost it signed, as PEM files in
/// `dir`: (CA, server certificate, server key) paths.
fn ingress_certificates(dir: &Path) -> (PathBuf, PathBuf, PathBuf) {
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair, KeyUsagePurpose};
    let ca_key = KeyPair::generate().unwrap();
    let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.distinguished_name
        .push(DnType::CommonName, "upgrade_e2e CA");
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.key_usages = vec![KeyUsagePurpose::KeyCertSign];
    let ca = ca.self_signed(&ca_key).unwrap();
    let key = KeyPair::generate().unwrap();
    let server = CertificateParams::new(vec!["localhost".to_string()])
        .unwrap()
        .signed_by(&key, &ca, &ca_key)
        .unwrap();
    let paths = (
        dir.join("ca.pem"),
        dir.join("server.pem"),
        dir.join("server.key"),
    );
    std::fs::write(&paths.0, ca.pem()).unwrap();
    std::fs::write(&paths.1, server.pem()).unwrap();
    std::fs::write(&paths.2, key.serialize_pem()).unwrap();
    paths
}

#[test]
fn a_connection_still_in_its_tls_handshake_keeps_the_old_process() {
    require_rabbitmq();
    let dir = tempfile::tempdir().unwrap();
    let control = dir.path().join("amqpprox.sock");
    let (ca, cert, key) = ingress_certificates(dir.path());
    let ca_pem = std::fs::read_to_string(&ca).unwrap();
    let (mut old, _) = first_proxy(dir.path(), &control, 1, 60_000);
    assert_eq!(ctl(&control, "LISTEN STOP"), "");
    for line in [
        format!("TLS INGRESS KEY_FILE {}", key.display()),
        format!("TLS INGRESS CERT_CHAIN_FILE {}", cert.display()),
    ] {
        assert_eq!(ctl(&control, &line), "", "{line}");
    }
    let port = (0..3)
        .map(|_| free_port())
        .find(|port| ctl(&control, &format!("LISTEN START_SECURE {port}")).is_empty())
        .expect("a TLS listener on one of three free ports");

    // Connected, TLS not started: not a session yet, but a connection the
    // old process counts (see the PROXY test for why it is counted by the
    // time the release is answered).
    let waiting = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    let (new, handed) = take_over(dir.path(), &control, 1, 1, 60_000);
    assert_eq!(handed, 1);
    old.wait_for_line("Released by a new process: waiting up to 60000 ms for ");
    assert!(
        !old.output()
            .contains("waiting up to 60000 ms for 0 connections"),
        "the connection in its TLS step was not counted:\n{}",
        old.output()
    );
    assert!(old.exited().is_none());

    // It finishes on the old process: TLS, handshake, publish, close.
    client_round_on(TlsClient::over(waiting, &ca_pem), "upgrade-e2e-tls-held")
        .expect("the held TLS client finishes");
    let status = old.wait_for_exit();
    assert!(status.success(), "old exited with {status}");

    // The new process replayed the TLS settings and serves TLS on the
    // handed-over socket.
    let tcp = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    client_round_on(TlsClient::over(tcp, &ca_pem), "upgrade-e2e-tls-new")
        .expect("the new process serves TLS");
    drop(new);
}
