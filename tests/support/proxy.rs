//! Runs the real `amqpprox` binary for a test: picks a free port, gives it a
//! private control socket and log directory in a temporary directory, waits
//! until it accepts TCP, and kills it when the test is done.
//!
//! It owns only the child process and its files; it never talks AMQP or the
//! control protocol, and never reuses a proxy between tests. The proxy's
//! stdout and stderr go to files so a failing test can show them.

use std::fs::{self, File};
use std::io::ErrorKind;
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::Duration;

use tempfile::TempDir;

use super::wait;

/// How long a starting proxy may take before it must accept connections.
const READY_TIMEOUT: Duration = Duration::from_secs(15);

/// How many times a start is retried when the chosen port was taken by
/// someone else between choosing it and the proxy binding it.
const PORT_RACE_ATTEMPTS: usize = 3;

/// A running `amqpprox` child process in simple mode (or, built with
/// [`ProxyBuilder::without_simple_mode`], with no configuration at all).
pub struct ProxyProcess {
    /// The AMQP listen port on 127.0.0.1. Without simple mode: a port that
    /// was free at start, for the test's own `LISTEN START`.
    pub port: u16,
    pub control_socket: PathBuf,
    pub log_dir: PathBuf,
    child: Child,
    stdout_path: PathBuf,
    stderr_path: PathBuf,
    // Declared last: the directory goes after the child has been reaped.
    dir: TempDir,
}

/// Extra command-line options for a proxy; `start` spawns it.
#[derive(Clone, Debug)]
pub struct ProxyBuilder {
    dest_host: String,
    dest_port: u16,
    extra_args: Vec<String>,
    /// False: start with no listener and no configuration (the original's
    /// default), ready once the control socket answers.
    simple_mode: bool,
    proxied_handshake: bool,
}

impl ProxyBuilder {
    pub fn shards(self, shards: usize) -> Self {
        self.arg("--shards").arg(shards.to_string())
    }

    pub fn verbosity(self, level: u8) -> Self {
        self.arg("-v").arg(level.to_string())
    }

    pub fn handshake_timeout_ms(self, ms: u64) -> Self {
        self.arg("--handshakeTimeoutMs").arg(ms.to_string())
    }

    pub fn connect_timeout_ms(self, ms: u64) -> Self {
        self.arg("--connectTimeoutMs").arg(ms.to_string())
    }

    /// Starts the proxy without simple mode: no backends, no listener; the
    /// test configures it over the control socket (or with `--config`).
    pub fn without_simple_mode(mut self) -> Self {
        self.simple_mode = false;
        self
    }

    /// Makes the proxy answer the client's handshake itself (the original's
    /// behaviour) by giving it a vhost mapping, so the route depends on the
    /// vhost. The mapping (to the simple-mode farm) comes from a `--config`
    /// file, so it is in place before the proxy listens.
    pub fn proxied_handshake(mut self) -> Self {
        self.proxied_handshake = true;
        self
    }

    /// Any other argument, passed through verbatim after the simple-mode ones.
    pub fn arg(mut self, arg: impl Into<String>) -> Self {
        self.extra_args.push(arg.into());
        self
    }

    /// Spawns the proxy and waits until its listen port accepts; panics with
    /// the proxy's output if it exits or never listens.
    pub fn start(self) -> ProxyProcess {
        let mut attempt = 1;
        loop {
            match self.try_start() {
                Ok(proxy) => return proxy,
                Err(failure) => {
                    if failure.port_in_use && attempt < PORT_RACE_ATTEMPTS {
                        attempt += 1;
                        continue;
                    }
                    panic!("{}", failure.report);
                }
            }
        }
    }

    fn try_start(&self) -> Result<ProxyProcess, StartFailure> {
        let dir = tempfile::Builder::new()
            .prefix("amqpprox-test-")
            .tempdir()
            .expect("create a temporary directory for the proxy");
        let port = free_port();
        let control_socket = dir.path().join("control.sock");
        let log_dir = dir.path().join("logs");
        let stdout_path = dir.path().join("stdout.txt");
        let stderr_path = dir.path().join("stderr.txt");
        let stdout = File::create(&stdout_path).expect("create the proxy's stdout file");
        let stderr = File::create(&stderr_path).expect("create the proxy's stderr file");

        let mut command = Command::new(env!("CARGO_BIN_EXE_amqpprox"));
        if self.proxied_handshake {
            let config = dir.path().join("proxied-handshake.conf");
            std::fs::write(&config, "MAP FARM amqpprox-test-mapped-vhost default\n")
                .expect("write the proxied-handshake config");
            command.arg("--config").arg(config);
        }
        if self.simple_mode {
            command
                .arg("--listenPort")
                .arg(port.to_string())
                .arg("--destinationDNS")
                .arg(&self.dest_host)
                .arg("--destinationPort")
                .arg(self.dest_port.to_string());
        }
        command
            .arg("--controlSocket")
            .arg(&control_socket)
            .arg("--logDirectory")
            .arg(&log_dir)
            .args(&self.extra_args)
            .current_dir(dir.path())
            .stdin(Stdio::null())
            .stdout(stdout)
            .stderr(stderr);
        let child = command
            .spawn()
            .unwrap_or_else(|err| panic!("cannot spawn {:?}: {err}", command.get_program()));

        let mut proxy = ProxyProcess {
            port,
            control_socket,
            log_dir,
            child,
            stdout_path,
            stderr_path,
            dir,
        };
        // The control socket first, in both modes: it is bound before any
        // listener, so once it answers, this process (and not another test's
        // proxy sharing the port through SO_REUSEPORT) is up.
        let ready = proxy.wait_until_controllable().and_then(|()| {
            if self.simple_mode {
                proxy.wait_until_listening()
            } else {
                Ok(())
            }
        });
        match ready {
            Ok(()) => Ok(proxy),
            Err(why) => {
                proxy.stop();
                let output = proxy.output();
                Err(StartFailure {
                    port_in_use: output.to_ascii_lowercase().contains("in use"),
                    report: format!(
                        "amqpprox {:?} did not start: {why}\n{output}",
                        command.get_args().collect::<Vec<_>>()
                    ),
                })
            }
        }
    }
}

struct StartFailure {
    port_in_use: bool,
    report: String,
}

impl ProxyProcess {
    /// A builder for a simple-mode proxy sending every vhost to
    /// `dest_host:dest_port`.
    pub fn builder(dest_host: &str, dest_port: u16) -> ProxyBuilder {
        ProxyBuilder {
            dest_host: dest_host.to_string(),
            dest_port,
            extra_args: Vec::new(),
            simple_mode: true,
            proxied_handshake: false,
        }
    }

    /// A started simple-mode proxy with default options.
    pub fn simple(dest_host: &str, dest_port: u16) -> ProxyProcess {
        ProxyProcess::builder(dest_host, dest_port).start()
    }

    /// `amqp://user:pass@127.0.0.1:<port>/<vhost>`, percent-encoded.
    pub fn amqp_url(&self, user: &str, pass: &str, vhost: &str) -> String {
        super::amqp_url("127.0.0.1", self.port, user, pass, vhost)
    }

    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from((Ipv4Addr::LOCALHOST, self.port))
    }

    /// The temporary directory holding the socket, logs and captured output.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The exit status if the proxy has exited.
    pub fn try_exit_status(&mut self) -> Option<std::process::ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    /// What the proxy printed so far on stdout.
    pub fn stdout(&self) -> String {
        fs::read_to_string(&self.stdout_path).unwrap_or_default()
    }

    /// What the proxy printed so far on stderr.
    pub fn stderr(&self) -> String {
        fs::read_to_string(&self.stderr_path).unwrap_or_default()
    }

    /// The proxy's log files (`--logDirectory`), oldest first, concatenated.
    /// Waits up to `limit` for `needle` to appear in the log files (the
    /// proxy writes them in batches); returns whether it did.
    pub fn log_contains_within(&self, needle: &str, limit: Duration) -> bool {
        wait::wait_until(wait::deadline_in(limit), || {
            self.log_files().contains(needle)
        })
    }

    /// The log files once the proxy's log writer (which works in batches
    /// and signals no completion) has written everything logged so far:
    /// read until two reads 100 ms apart agree (or 30 s of steady logging
    /// pass, when the last read is returned).
    pub fn settled_log_files(&self) -> String {
        let deadline = wait::deadline_in(Duration::from_secs(30));
        wait::settle(deadline, Duration::from_millis(100), || self.log_files())
            .unwrap_or_else(|still_changing| still_changing)
    }

    pub fn log_files(&self) -> String {
        let mut paths: Vec<PathBuf> = fs::read_dir(&self.log_dir)
            .map(|entries| entries.filter_map(|e| e.ok().map(|e| e.path())).collect())
            .unwrap_or_default();
        paths.sort();
        paths
            .iter()
            .filter_map(|path| fs::read_to_string(path).ok())
            .collect::<Vec<_>>()
            .join("")
    }

    /// Both output streams and the log files, labelled and cut to their last
    /// lines, for failure messages.
    pub fn output(&self) -> String {
        format!(
            "--- amqpprox stdout ({}) ---\n{}\n--- amqpprox stderr ({}) ---\n{}\n--- amqpprox logs ({}) ---\n{}\n--- end of amqpprox output ---",
            self.stdout_path.display(),
            tail(&self.stdout(), 100),
            self.stderr_path.display(),
            tail(&self.stderr(), 100),
            self.log_dir.display(),
            tail(&self.log_files(), 200)
        )
    }

    fn wait_until_listening(&mut self) -> Result<(), String> {
        let mut last_error = None;
        let ready = wait::poll_until(wait::deadline_in(READY_TIMEOUT), || {
            if let Some(status) = self.try_exit_status() {
                return Some(Err(format!("it exited with {status} before listening")));
            }
            match TcpStream::connect_timeout(&self.addr(), Duration::from_millis(200)) {
                Ok(_) => Some(Ok(())),
                Err(err) => {
                    last_error = Some(err);
                    None
                }
            }
        });
        ready.unwrap_or_else(|| {
            Err(format!(
                "port {} did not accept within {READY_TIMEOUT:?} (last error: {last_error:?})",
                self.port
            ))
        })
    }

    /// The proxy answers on its control socket (without simple mode there
    /// is no AMQP port to wait for besides).
    fn wait_until_controllable(&mut self) -> Result<(), String> {
        let mut last_error = None;
        let ready = wait::poll_until(wait::deadline_in(READY_TIMEOUT), || {
            if let Some(status) = self.try_exit_status() {
                return Some(Err(format!(
                    "it exited with {status} before its control socket answered"
                )));
            }
            match std::os::unix::net::UnixStream::connect(&self.control_socket) {
                Ok(_) => Some(Ok(())),
                Err(err) => {
                    last_error = Some(err);
                    None
                }
            }
        });
        ready.unwrap_or_else(|| {
            Err(format!(
                "control socket {} did not accept within {READY_TIMEOUT:?} (last error: {last_error:?})",
                self.control_socket.display()
            ))
        })
    }

    fn stop(&mut self) {
        match self.child.kill() {
            Ok(()) => {}
            // Already exited: nothing to kill.
            Err(err) if err.kind() == ErrorKind::InvalidInput => {}
            Err(err) => eprintln!("cannot kill amqpprox (pid {}): {err}", self.child.id()),
        }
        let _ = self.child.wait();
    }
}

impl Drop for ProxyProcess {
    fn drop(&mut self) {
        self.stop();
        if thread::panicking() {
            eprintln!(
                "amqpprox on port {} (control socket {}):\n{}",
                self.port,
                self.control_socket.display(),
                self.output()
            );
        }
    }
}

pub use amqpprox_testkit::ports::free_port;

/// The last `lines` lines of `text`, so a chatty proxy does not bury the
/// failure.
fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    let skip = all.len().saturating_sub(lines);
    let mut out = String::new();
    if skip > 0 {
        out.push_str(&format!("[... {skip} earlier lines ...]\n"));
    }
    out.push_str(&all[skip..].join("\n"));
    out
}
