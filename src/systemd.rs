//! systemd service notification (`Type=notify`): tells the service manager
//! when the proxy is ready (listeners up), when it starts stopping (drain),
//! and how many sessions it carries, as datagrams on `$NOTIFY_SOCKET`.
//! See docs/deployment.md#systemd for the unit file that uses it.
//!
//! The protocol is newline-separated `KEY=value` assignments in one datagram
//! to a Unix socket whose path is in `$NOTIFY_SOCKET`; a path starting with
//! `@` names a socket in the abstract namespace. Without the variable (not
//! run by systemd, or `Type=simple`) every call does nothing. This module
//! never touches a shard or a session: the supervisor calls it from its own
//! threads (main, SIGHUP) and it runs one thread of its own for `STATUS=`
//! updates; a failed send is logged, never fatal.

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::time::Duration;

/// The variable systemd sets for `Type=notify` services.
pub const NOTIFY_SOCKET: &str = "NOTIFY_SOCKET";

/// One state change the service manager is told about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Notice {
    /// Start-up finished: the listeners accept connections.
    Ready,
    /// A drain started; the process will exit when it ends.
    Stopping,
    /// SIGHUP: the configuration is being re-applied. systemd (253 and
    /// later) wants the `CLOCK_MONOTONIC` time of the reload with it, in
    /// microseconds, to tell this reload from an earlier one.
    Reloading { monotonic_usec: u64 },
    /// Free text shown by `systemctl status`.
    Status(String),
}

/// Why a notification could not be sent.
#[derive(Debug, thiserror::Error)]
pub enum NotifyError {
    #[error("NOTIFY_SOCKET is empty")]
    Empty,
    #[error("NOTIFY_SOCKET '{path}' is not a usable socket address: {error}")]
    Address { path: String, error: std::io::Error },
    #[error("cannot create a datagram socket: {0}")]
    Socket(std::io::Error),
    #[error("cannot send to NOTIFY_SOCKET '{path}': {error}")]
    Send { path: String, error: std::io::Error },
}

/// The `STATUS=` text for a session count.
pub fn session_status(sessions: usize) -> Notice {
    let noun = if sessions == 1 { "session" } else { "sessions" };
    Notice::Status(format!("{sessions} {noun}"))
}

/// The datagram for `notices`: one assignment a line. Newlines inside a
/// status text would start a new assignment, so they become spaces.
pub fn datagram(notices: &[Notice]) -> String {
    let mut out = String::new();
    for notice in notices {
        match notice {
            Notice::Ready => out.push_str("READY=1"),
            Notice::Stopping => out.push_str("STOPPING=1"),
            Notice::Reloading { monotonic_usec } => {
                out.push_str("RELOADING=1\nMONOTONIC_USEC=");
                out.push_str(&monotonic_usec.to_string());
            }
            Notice::Status(text) => {
                out.push_str("STATUS=");
                out.extend(text.chars().map(|c| if c == '\n' { ' ' } else { c }));
            }
        }
        out.push('\n');
    }
    out
}

/// A connection to the service manager's notification socket.
#[derive(Debug)]
pub struct Notifier {
    socket: UnixDatagram,
    addr: SocketAddr,
    path: String,
}

impl Notifier {
    /// The notifier `$NOTIFY_SOCKET` names, or `None` when it is unset (the
    /// process was not started by systemd as `Type=notify`).
    pub fn from_env() -> Result<Option<Notifier>, NotifyError> {
        match std::env::var_os(NOTIFY_SOCKET) {
            None => Ok(None),
            Some(path) => Notifier::new(&path).map(Some),
        }
    }

    /// A notifier sending to `path`: a filesystem path, or `@name` for the
    /// abstract namespace.
    pub fn new(path: &OsStr) -> Result<Notifier, NotifyError> {
        let bytes = path.as_bytes();
        let shown = path.to_string_lossy().into_owned();
        let addr = match bytes.first() {
            None => return Err(NotifyError::Empty),
            Some(b'@') => abstract_address(&bytes[1..]),
            Some(_) => SocketAddr::from_pathname(path),
        }
        .map_err(|error| NotifyError::Address {
            path: shown.clone(),
            error,
        })?;
        let socket = UnixDatagram::unbound().map_err(NotifyError::Socket)?;
        Ok(Notifier {
            socket,
            addr,
            path: shown,
        })
    }

    /// Sends `notices` in one datagram. Never blocks for long: the service
    /// manager's socket is a local datagram socket.
    pub fn send(&self, notices: &[Notice]) -> Result<(), NotifyError> {
        self.socket
            .send_to_addr(datagram(notices).as_bytes(), &self.addr)
            .map(|_| ())
            .map_err(|error| NotifyError::Send {
                path: self.path.clone(),
                error,
            })
    }
}

#[cfg(target_os = "linux")]
fn abstract_address(name: &[u8]) -> std::io::Result<SocketAddr> {
    use std::os::linux::net::SocketAddrExt;
    SocketAddr::from_abstract_name(name)
}

#[cfg(not(target_os = "linux"))]
fn abstract_address(_name: &[u8]) -> std::io::Result<SocketAddr> {
    Err(std::io::Error::new(
        std::io::ErrorKind::Unsupported,
        "abstract socket addresses exist on Linux only",
    ))
}

/// Sends `notices` to `$NOTIFY_SOCKET` if it is set, logging (never
/// failing on) a send error: the proxy serves whether or not systemd hears.
/// This is the one call the supervisor makes: `READY=1` plus the status
/// once the listeners are up, `STOPPING=1` when a drain starts,
/// `RELOADING=1` on SIGHUP followed by `READY=1` when it is done.
pub fn notify(notices: &[Notice]) {
    let result = Notifier::from_env().and_then(|n| match n {
        Some(n) => n.send(notices),
        None => Ok(()),
    });
    if let Err(e) = result {
        log::warn!("systemd notification failed: {e}");
    }
}

/// Listeners up: `READY=1` and the session count. The supervisor calls it
/// once `--config` and simple mode are applied, and again after a SIGHUP
/// reload.
pub fn ready(sessions: usize) {
    notify(&[Notice::Ready, session_status(sessions)]);
}

/// A drain started (SIGTERM/SIGINT or `EXIT`).
pub fn stopping(sessions: usize) {
    notify(&[Notice::Stopping, session_status(sessions)]);
}

/// SIGHUP received: re-applying the configuration; [`ready`] follows.
pub fn reloading() {
    notify(&[Notice::Reloading {
        monotonic_usec: monotonic_usec(),
    }]);
}

/// `CLOCK_MONOTONIC` now, in microseconds (the clock systemd compares).
fn monotonic_usec() -> u64 {
    let mut now = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime only writes the timespec it is given.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut now) };
    if rc != 0 {
        return 0;
    }
    u64::try_from(now.tv_sec).unwrap_or(0) * 1_000_000
        + u64::try_from(now.tv_nsec).unwrap_or(0) / 1_000
}

/// While `$NOTIFY_SOCKET` is set, starts a thread that reads the session
/// count every `period` and sends `STATUS=` whenever it changed, so
/// `systemctl status` follows the load without a datagram per tick. Does
/// nothing (and starts no thread) when the variable is unset. `sessions`
/// must be cheap: it runs once a period for the life of the process.
pub fn report_status_every(
    period: Duration,
    sessions: impl Fn() -> usize + Send + 'static,
) -> std::io::Result<()> {
    let notifier = match Notifier::from_env() {
        Ok(Some(n)) => n,
        Ok(None) => return Ok(()),
        Err(e) => {
            log::warn!("systemd status reports are off: {e}");
            return Ok(());
        }
    };
    std::thread::Builder::new()
        .name("systemd-status".into())
        .spawn(move || {
            let mut last = None;
            loop {
                std::thread::sleep(period);
                let now = sessions();
                if last != Some(now) {
                    match notifier.send(&[session_status(now)]) {
                        Ok(()) => last = Some(now),
                        Err(e) => log::debug!("systemd status not sent: {e}"),
                    }
                }
            }
        })
        .map(|_| ())
}

/// The session count, for `systemctl status` (once a statistics period).
pub fn status(sessions: usize) {
    notify(&[session_status(sessions)]);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn receive(socket: &UnixDatagram) -> String {
        socket
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        let mut buf = [0u8; 512];
        let n = socket.recv(&mut buf).unwrap();
        String::from_utf8(buf[..n].to_vec()).unwrap()
    }

    #[test]
    fn datagram_has_one_assignment_a_line() {
        assert_eq!(
            datagram(&[Notice::Ready, session_status(3)]),
            "READY=1\nSTATUS=3 sessions\n"
        );
        assert_eq!(
            datagram(&[Notice::Stopping, session_status(1)]),
            "STOPPING=1\nSTATUS=1 session\n"
        );
        assert_eq!(
            datagram(&[Notice::Reloading { monotonic_usec: 42 }]),
            "RELOADING=1\nMONOTONIC_USEC=42\n"
        );
    }

    #[test]
    fn status_text_cannot_inject_an_assignment() {
        assert_eq!(
            datagram(&[Notice::Status("a\nREADY=1".into())]),
            "STATUS=a READY=1\n"
        );
    }

    #[test]
    fn sends_to_a_filesystem_socket() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify");
        let listener = UnixDatagram::bind(&path).unwrap();
        let notifier = Notifier::new(path.as_os_str()).unwrap();
        notifier.send(&[Notice::Ready, session_status(0)]).unwrap();
        assert_eq!(receive(&listener), "READY=1\nSTATUS=0 sessions\n");
        notifier.send(&[Notice::Stopping]).unwrap();
        assert_eq!(receive(&listener), "STOPPING=1\n");
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn sends_to_an_abstract_socket() {
        use std::os::linux::net::SocketAddrExt;
        // Unique per process and test so parallel runs never collide.
        let name = format!("amqpprox-notify-test-{}", std::process::id());
        let listener =
            UnixDatagram::bind_addr(&SocketAddr::from_abstract_name(name.as_bytes()).unwrap())
                .unwrap();
        let notifier = Notifier::new(OsStr::new(&format!("@{name}"))).unwrap();
        notifier.send(&[Notice::Ready]).unwrap();
        assert_eq!(receive(&listener), "READY=1\n");
    }

    #[test]
    fn the_monotonic_clock_moves_forward() {
        let first = monotonic_usec();
        std::thread::sleep(Duration::from_millis(2));
        assert!(monotonic_usec() > first);
    }

    /// The only test that sets `NOTIFY_SOCKET` (the environment is the
    /// process's): the calls the supervisor makes reach it.
    #[test]
    fn supervisor_calls_reach_the_socket_named_by_the_environment() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify");
        let listener = UnixDatagram::bind(&path).unwrap();
        std::env::set_var(NOTIFY_SOCKET, &path);
        ready(2);
        status(1);
        reloading();
        stopping(0);
        std::env::remove_var(NOTIFY_SOCKET);
        assert_eq!(receive(&listener), "READY=1\nSTATUS=2 sessions\n");
        assert_eq!(receive(&listener), "STATUS=1 session\n");
        let reload = receive(&listener);
        assert!(
            reload.starts_with("RELOADING=1\nMONOTONIC_USEC=") && reload.ends_with('\n'),
            "{reload:?}"
        );
        let usec: u64 = reload["RELOADING=1\nMONOTONIC_USEC=".len()..reload.len() - 1]
            .parse()
            .unwrap();
        assert!(usec > 0);
        assert_eq!(receive(&listener), "STOPPING=1\nSTATUS=0 sessions\n");
        // Unset: nothing is sent and nothing fails.
        ready(0);
    }

    #[test]
    fn an_empty_path_is_refused() {
        assert!(matches!(
            Notifier::new(OsStr::new("")),
            Err(NotifyError::Empty)
        ));
    }

    #[test]
    fn a_missing_socket_is_a_send_error() {
        let dir = tempfile::tempdir().unwrap();
        let notifier = Notifier::new(dir.path().join("absent").as_os_str()).unwrap();
        assert!(matches!(
            notifier.send(&[Notice::Ready]),
            Err(NotifyError::Send { .. })
        ));
    }
}
