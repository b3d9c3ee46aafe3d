//! The control socket: a Unix stream socket (stale file replaced, mode
//! 0600); one line in, the reply out, then the proxy closes the connection
//! (see `docs/commands.md`), so `socat` and `amqpprox_ctl` both work. A
//! streaming reply (`STAT LISTEN`) writes its chunks as they come until a
//! write fails.
//!
//! Each control client gets its own thread with a read timeout, so a slow or
//! silent client never blocks the proxy or other control clients; commands
//! themselves run one at a time under the state's lock.
//!
//! `amqpprox_ctl` opts in to a status trailer by sending the line
//! [`STATUS_HELLO`] first: the reply is then followed by a NUL byte and
//! `ok` or `error`, which it strips and turns into its exit code
//! (`docs/differences.md`). Other clients see exactly the original's replies.

use super::ControlState;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// The opt-in line of `amqpprox_ctl` (starts with NUL: nobody types it).
pub const STATUS_HELLO: &str = "\0amqpprox_ctl status";

/// Longest control line accepted.
const MAX_LINE: u64 = 64 * 1024;

/// How long a control client may take to send its line.
const READ_TIMEOUT: Duration = Duration::from_secs(30);

/// A bound control socket.
pub struct ControlServer {
    listener: UnixListener,
    path: PathBuf,
}

impl ControlServer {
    /// Replaces any stale file at `path` and binds the socket, mode 0600.
    pub fn bind(path: &Path) -> io::Result<ControlServer> {
        match std::fs::remove_file(path) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        let listener = UnixListener::bind(path)?;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
        Ok(ControlServer {
            listener,
            path: path.to_path_buf(),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// Accepts control clients for ever on the calling thread. `on_exit` runs
/// after an `EXIT` reply has been written.
pub fn serve(
    server: ControlServer,
    state: Arc<Mutex<ControlState>>,
    on_exit: impl Fn() + Send + Sync + 'static,
) {
    let on_exit = Arc::new(on_exit);
    for stream in server.listener.incoming() {
        let stream = match stream {
            Ok(s) => s,
            Err(e) => {
                log::warn!("Control socket accept failed: {e}");
                std::thread::sleep(Duration::from_millis(50));
                continue;
            }
        };
        let state = Arc::clone(&state);
        let on_exit = Arc::clone(&on_exit);
        let spawned = std::thread::Builder::new()
            .name("control-client".into())
            .spawn(move || {
                if let Err(e) = handle(stream, &state, &*on_exit) {
                    log::debug!("Control client ended: {e}");
                }
            });
        if let Err(e) = spawned {
            log::error!("Cannot start a control client thread: {e}");
        }
    }
}

fn read_line(reader: &mut impl BufRead) -> io::Result<Option<String>> {
    let mut line = Vec::new();
    reader.take(MAX_LINE).read_until(b'\n', &mut line)?;
    if line.last() != Some(&b'\n') {
        // EOF before a newline: the original executes nothing.
        return Ok(None);
    }
    line.pop();
    Ok(Some(String::from_utf8_lossy(&line).into_owned()))
}

fn handle(stream: UnixStream, state: &Mutex<ControlState>, on_exit: &dyn Fn()) -> io::Result<()> {
    stream.set_read_timeout(Some(READ_TIMEOUT))?;
    let mut reader = BufReader::new(stream.try_clone()?);
    let Some(mut line) = read_line(&mut reader)? else {
        return Ok(());
    };
    let wants_status = line == STATUS_HELLO;
    if wants_status {
        let Some(next) = read_line(&mut reader)? else {
            return Ok(());
        };
        line = next;
    }
    let reply = {
        let mut state = state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        state.execute(&line)
    };
    let mut out = stream;
    let mut text = reply.text.into_bytes();
    if let Some(stream) = reply.stream {
        out.write_all(&text)?;
        out.flush()?;
        text.clear();
        // A streaming reply (`STAT LISTEN`) ends when its source does or
        // when a write fails because the client went away; dropping the
        // receiver then tells the source to stop.
        for chunk in stream.0.iter() {
            out.write_all(chunk.as_bytes())?;
            out.flush()?;
        }
    }
    if wants_status {
        text.push(0);
        text.extend_from_slice(if reply.error { b"error" } else { b"ok" });
    }
    out.write_all(&text)?;
    out.flush()?;
    let _ = out.shutdown(std::net::Shutdown::Both);
    if reply.exit {
        on_exit();
    }
    Ok(())
}
