//! The control protocol from a test's side: a plain Unix-socket client that
//! speaks the original protocol (one line in, the reply until the proxy
//! closes; no status trailer), and a runner for the built `amqpprox_ctl`
//! binary that returns its stdout, stderr and exit code.
//!
//! For tests about the control socket's file itself (a stale file at its
//! path, `--config` failures) it can also spawn the binary bare on a path
//! the test chose; every other test uses `proxy.rs`. It owns no
//! expectations: tests compare the replies. Every read is bounded, so a proxy that never closes
//! the connection fails the test instead of hanging it.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, SystemTime};

use super::proxy::ProxyProcess;
use super::wait;

/// How long one control reply may take.
const REPLY_TIMEOUT: Duration = Duration::from_secs(30);

/// Sends `line` plus `\n` the way `socat` would and returns the whole reply
/// (everything until the proxy closes the connection).
pub fn ctl(socket: &Path, line: &str) -> String {
    let reply = ctl_bytes(socket, format!("{line}\n").as_bytes());
    String::from_utf8(reply).unwrap_or_else(|e| panic!("reply to {line:?} is not UTF-8: {e}"))
}

/// Sends raw bytes, half-closes, and returns the reply bytes.
pub fn ctl_bytes(socket: &Path, request: &[u8]) -> Vec<u8> {
    let mut stream = UnixStream::connect(socket)
        .unwrap_or_else(|e| panic!("connect to control socket {}: {e}", socket.display()));
    stream
        .set_read_timeout(Some(REPLY_TIMEOUT))
        .expect("set a read timeout");
    stream.write_all(request).expect("write the control line");
    // Half-close: a request without a newline then reaches EOF at the proxy.
    let _ = stream.shutdown(std::net::Shutdown::Write);
    let mut reply = Vec::new();
    stream.read_to_end(&mut reply).unwrap_or_else(|e| {
        panic!(
            "reading the reply to {:?}: {e} (got so far: {:?})",
            String::from_utf8_lossy(request),
            String::from_utf8_lossy(&reply)
        )
    });
    reply
}

/// What one run of `amqpprox_ctl` gave.
#[derive(Debug)]
pub struct CtlRun {
    pub stdout: String,
    pub stderr: String,
    /// `None` if it was killed by a signal.
    pub code: Option<i32>,
}

/// Runs `amqpprox_ctl <socket> <line split on whitespace>`: its stdout and
/// exit code.
pub fn ctl_bin(socket: &Path, line: &str) -> (String, i32) {
    let mut args = vec![socket.to_str().expect("UTF-8 socket path")];
    args.extend(line.split_whitespace());
    let run = amqpprox_ctl(&args);
    let code = run
        .code
        .unwrap_or_else(|| panic!("amqpprox_ctl {line:?} was killed: {run:?}"));
    (run.stdout, code)
}

/// Runs `amqpprox_ctl ARGS` as given.
pub fn amqpprox_ctl(args: &[&str]) -> CtlRun {
    let output = Command::new(ctl_binary())
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run amqpprox_ctl: {e}"));
    CtlRun {
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        code: output.status.code(),
    }
}

/// The `amqpprox_ctl` binary: the one `cargo build --workspace` put beside
/// `amqpprox` when it is newer than its source, else one built now into a
/// target directory of its own (`cargo test` without `--workspace` does not
/// build it, and the main target directory is locked while tests run).
pub fn ctl_binary() -> PathBuf {
    static BINARY: OnceLock<PathBuf> = OnceLock::new();
    BINARY.get_or_init(find_or_build).clone()
}

fn find_or_build() -> PathBuf {
    let proxy = PathBuf::from(env!("CARGO_BIN_EXE_amqpprox"));
    let beside = proxy.with_file_name("amqpprox_ctl");
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR"));
    let source = workspace.join("control/src/main.rs");
    if modified(&beside).is_some_and(|built| modified(&source).is_some_and(|src| built >= src)) {
        return beside;
    }
    // target/debug/amqpprox -> target/amqpprox_ctl-for-tests
    let target_dir = proxy
        .parent()
        .and_then(Path::parent)
        .expect("the amqpprox binary lives in <target>/<profile>/")
        .join("amqpprox_ctl-for-tests");
    let cargo = std::env::var_os("CARGO")
        .or_else(|| option_env!("CARGO").map(Into::into))
        .unwrap_or_else(|| "cargo".into());
    let status = Command::new(&cargo)
        .args(["build", "--quiet", "-p", "amqpprox_ctl", "--target-dir"])
        .arg(&target_dir)
        .current_dir(workspace)
        .status()
        .unwrap_or_else(|e| panic!("cannot run {cargo:?} to build amqpprox_ctl: {e}"));
    let built = target_dir.join("debug/amqpprox_ctl");
    assert!(
        status.success() && built.exists(),
        "amqpprox_ctl is missing or older than its source at {} and building it failed \
         ({status}); run `cargo build --workspace` first",
        beside.display()
    );
    built
}

fn modified(path: &Path) -> Option<SystemTime> {
    std::fs::metadata(path).and_then(|m| m.modified()).ok()
}

/// Spawns `amqpprox` without simple mode on `socket`, with a log
/// directory beside it.
pub fn spawn_proxy(socket: &Path, extra: &[&str]) -> Child {
    let dir = socket.parent().unwrap();
    Command::new(env!("CARGO_BIN_EXE_amqpprox"))
        .arg("--controlSocket")
        .arg(socket)
        .arg("--logDirectory")
        .arg(dir.join("logs"))
        .args(["--shards", "1"])
        .args(extra)
        .current_dir(dir)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn amqpprox")
}

/// Waits until `socket` answers a connection; false if the child exited
/// or 15 s passed.
pub fn wait_for_control(socket: &Path, child: &mut Child) -> bool {
    let answered = wait::poll_until(wait::deadline_in(Duration::from_secs(15)), || {
        if matches!(child.try_wait(), Ok(Some(_))) {
            return Some(false);
        }
        UnixStream::connect(socket).is_ok().then_some(true)
    });
    answered.unwrap_or(false)
}

/// Waits for `child` to exit (killing it at the deadline): exit code,
/// stdout, stderr.
pub fn wait_for_exit(mut child: Child, limit: Duration) -> (Option<i32>, String, String) {
    wait::wait_until(wait::deadline_in(limit), || {
        matches!(child.try_wait(), Ok(Some(_)))
    });
    let _ = child.kill();
    let output = child
        .wait_with_output()
        .expect("collect the proxy's output");
    (
        output.status.code(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// A proxy with no configuration and one shard (enough for the control
/// plane, and quick to start).
pub fn bare() -> ProxyProcess {
    ProxyProcess::builder("unused", 1)
        .without_simple_mode()
        .shards(1)
        .start()
}

/// Runs a golden transcript. Each command line starts with `> ` (it must
/// succeed: `amqpprox_ctl` exits 0) or `! ` (an error reply: exit 3); the
/// `= ` lines after it are its exact reply, one line each (each reply line
/// ends with a newline; `=` alone is an empty line; a `$` at the end marks
/// where trailing spaces end, as `cat -A` does). No `= ` line means an
/// empty reply. Commands that only read (PRINT, CONFIG) are also sent over
/// the plain protocol, which must give the same bytes.
pub fn transcript(proxy: &ProxyProcess, script: &str) {
    let mut steps: Vec<(&str, bool, String)> = Vec::new();
    for line in script
        .lines()
        .map(str::trim_start)
        .filter(|l| !l.is_empty())
    {
        if let Some(command) = line.strip_prefix("> ") {
            steps.push((command, true, String::new()));
        } else if let Some(command) = line.strip_prefix("! ") {
            steps.push((command, false, String::new()));
        } else if let Some(reply) = line.strip_prefix('=') {
            let reply = reply.strip_prefix(' ').unwrap_or(reply);
            let step = steps.last_mut().expect("a reply line follows a command");
            step.2.push_str(reply.strip_suffix('$').unwrap_or(reply));
            step.2.push('\n');
        } else {
            panic!("transcript line {line:?} starts with neither '> ', '! ' nor '='");
        }
    }
    for (command, success, expected) in steps {
        check(proxy, command, &expected, success);
        let upper = command.to_ascii_uppercase();
        if upper.contains("PRINT") || upper.starts_with("CONFIG") {
            let plain = ctl(&proxy.control_socket, command);
            assert_eq!(plain, expected, "plain reply to {command:?}");
        }
    }
}

/// Sends `line` with `amqpprox_ctl` and checks the exact reply and the
/// exit code (0 for a success, 3 for an error reply).
pub fn check(proxy: &ProxyProcess, line: &str, expected: &str, success: bool) {
    let (reply, code) = ctl_bin(&proxy.control_socket, line);
    assert_eq!(reply, expected, "reply to {line:?}");
    let want = if success { 0 } else { 3 };
    assert_eq!(
        code, want,
        "amqpprox_ctl exit code for {line:?} (reply {reply:?})"
    );
}
