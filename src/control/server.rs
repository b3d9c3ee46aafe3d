//! The control socket: a Unix stream socket (stale file replaced, mode
//! 0600); one line in, the reply out, then the proxy closes the connection
//! (see `docs/commands.md`), so `socat` and `amqpprox_ctl` both work. A
//! streaming reply (`STAT LISTEN`) writes its chunks as they come until a
//! write fails.
//!
//! Each control client gets its own thread with a read timeout, so a slow or
//! silent client never blocks the proxy or other control clients; commands
//! themselves run one at a time under the state's lock. At most
//! [`MAX_CLIENTS`] are served at once: past that a client gets
//! [`TOO_MANY_CLIENTS`] and is closed.
//!
//! At the open-files limit the operator must still get in
//! (docs/reliability.md#resource-limits): the server holds a few spare
//! descriptors, gives one back to accept a client when `accept` fails for
//! lack of them and takes it again when that client is done; without a
//! spare it backs off (doubling, at most a second) and logs only some of
//! the failures.
//!
//! `amqpprox_ctl` opts in to a status trailer by sending the line
//! [`STATUS_HELLO`] first: the reply is then followed by a NUL byte and
//! `ok` or `error`, which it strips and turns into its exit code
//! (`docs/differences.md`). Other clients see exactly the original's replies.

use super::grammar::{self, Command, UpgradeStep};
use super::{upgrade, ControlState};
use crate::fdlimit::{
    is_descriptor_exhaustion, AcceptBackoff, ClientSlot, ClientSlots, DescriptorReserve,
};
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

/// Control clients served at once.
pub const MAX_CLIENTS: usize = 32;

/// The reply to a client past [`MAX_CLIENTS`].
pub const TOO_MANY_CLIENTS: &str =
    "Too many control clients at once (at most 32); try again when one has finished.\n";

/// Spare descriptors held for accepting control clients at the limit.
const RESERVED_DESCRIPTORS: usize = 4;

/// A bound control socket.
pub struct ControlServer {
    listener: UnixListener,
    path: PathBuf,
    /// Taken at bind, while descriptors are still to be had.
    reserve: DescriptorReserve,
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
            reserve: DescriptorReserve::new(RESERVED_DESCRIPTORS)?,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// What the supervisor hears from the control server, after the reply
/// that caused it has been written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ControlEvent {
    /// `EXIT`.
    Exit,
    /// `UPGRADE RELEASE`: this process stopped accepting; drain it.
    Released,
}

/// Accepts control clients for ever on the calling thread. `on_event` runs
/// after an `EXIT` or `UPGRADE RELEASE` reply has been written.
pub fn serve(
    server: ControlServer,
    state: Arc<Mutex<ControlState>>,
    on_event: impl Fn(ControlEvent) + Send + Sync + 'static,
) {
    let on_event = Arc::new(on_event);
    let reserve = Arc::new(Mutex::new(server.reserve));
    let slots = ClientSlots::new(MAX_CLIENTS);
    let refuser = start_refuser();
    let mut backoff = AcceptBackoff::default();
    // Refusals in a row, for logging only some of them.
    let mut refused = 0u32;
    loop {
        let stream = match accept(&server.listener, &reserve) {
            Ok(s) => {
                if let Some(failures) = backoff.on_success() {
                    log::info!("Control socket accepting again after {failures} failed accepts");
                }
                s
            }
            Err(e) => {
                let step = backoff.on_failure();
                if step.log {
                    log::warn!(
                        "Control socket accept failed: {e} ({} in a row; next try in {} ms)",
                        step.failures,
                        step.delay.as_millis()
                    );
                }
                std::thread::sleep(step.delay);
                continue;
            }
        };
        let Some(slot) = slots.try_acquire() else {
            refused = refused.saturating_add(1);
            if crate::fdlimit::should_log(refused) {
                log::warn!(
                    "Control client refused: {MAX_CLIENTS} clients are being served ({refused} refused in a row)"
                );
            }
            // A full queue means a flood: those are just closed.
            if let Some(refuser) = &refuser {
                let _ = refuser.try_send(stream);
            }
            continue;
        };
        refused = 0;
        let state = Arc::clone(&state);
        let on_event = Arc::clone(&on_event);
        let reserve = Arc::clone(&reserve);
        let spawned = std::thread::Builder::new()
            .name("control-client".into())
            .spawn(move || {
                if let Err(e) = handle(stream, &state, &*on_event, slot) {
                    log::debug!("Control client ended: {e}");
                }
                // Its descriptor is closed now: take back any spare given.
                reserve.lock().unwrap_or_else(|p| p.into_inner()).refill();
            });
        if let Err(e) = spawned {
            log::error!("Cannot start a control client thread: {e}");
        }
    }
}

/// Accepts one client; out of descriptors, gives back a spare and tries
/// once more.
fn accept(listener: &UnixListener, reserve: &Mutex<DescriptorReserve>) -> io::Result<UnixStream> {
    match listener.accept() {
        Ok((stream, _)) => Ok(stream),
        Err(e) if is_descriptor_exhaustion(&e) => {
            let mut reserve = reserve.lock().unwrap_or_else(|p| p.into_inner());
            if !reserve.release() {
                return Err(e);
            }
            listener.accept().map(|(stream, _)| stream)
        }
        Err(e) => Err(e),
    }
}

/// How long a refused client may take to send its request, which is read
/// before the refusal so that closing never resets the connection.
const REFUSAL_READ_TIMEOUT: Duration = Duration::from_millis(500);

/// Refused clients waiting for the refusing thread; more are just closed.
const REFUSAL_QUEUE: usize = 64;

/// Starts the thread that answers clients past the bound, one at a time,
/// so the accept loop never waits on them.
fn start_refuser() -> Option<flume::Sender<UnixStream>> {
    let (tx, rx) = flume::bounded::<UnixStream>(REFUSAL_QUEUE);
    let spawned = std::thread::Builder::new()
        .name("control-refuse".into())
        .spawn(move || {
            for stream in rx.iter() {
                refuse_busy(stream);
            }
        });
    match spawned {
        Ok(_) => Some(tx),
        Err(e) => {
            log::error!("Cannot start the control refusal thread: {e}");
            None
        }
    }
}

/// Reads the client's request (its hello and line, or what comes within
/// the timeout), then says why it is closed; the error trailer when it
/// asked for one.
fn refuse_busy(mut stream: UnixStream) {
    let _ = stream.set_read_timeout(Some(REFUSAL_READ_TIMEOUT));
    let _ = stream.set_write_timeout(Some(REFUSAL_READ_TIMEOUT));
    let mut request = Vec::new();
    let mut chunk = [0u8; 256];
    let wanted_lines = |request: &[u8]| {
        if request.starts_with(STATUS_HELLO.as_bytes()) {
            2
        } else {
            1
        }
    };
    while request.iter().filter(|b| **b == b'\n').count() < wanted_lines(&request)
        && (request.len() as u64) < MAX_LINE
    {
        match stream.read(&mut chunk) {
            Ok(0) | Err(_) => break,
            Ok(n) => request.extend_from_slice(&chunk[..n]),
        }
    }
    let mut reply = TOO_MANY_CLIENTS.as_bytes().to_vec();
    if request.starts_with(STATUS_HELLO.as_bytes()) {
        reply.extend_from_slice(b"\0error");
    }
    let _ = stream.write_all(&reply);
    let _ = stream.shutdown(std::net::Shutdown::Both);
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

/// Serves one client; its `slot` is given back just before the last write,
/// so a client that has read its whole reply is no longer counted.
fn handle(
    stream: UnixStream,
    state: &Mutex<ControlState>,
    on_event: &dyn Fn(ControlEvent),
    slot: ClientSlot,
) -> io::Result<()> {
    stream.set_read_timeout(Some(READ_TIMEOUT))?;
    // Reads through a borrow, not a dup: a client costs one descriptor,
    // which matters at the open-files limit.
    let mut reader = BufReader::new(&stream);
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
    // The takeover exchange needs the connection itself, not a reply text.
    match grammar::parse(&line) {
        Ok(Command::Upgrade(UpgradeStep::Handoff)) if !wants_status => {
            log::info!("Control '{line}': handing over to a new process");
            upgrade::serve_handoff(stream, state);
            return Ok(());
        }
        Ok(Command::Upgrade(UpgradeStep::Release)) if !wants_status => {
            let reply = upgrade::release(state);
            log::info!("Control '{line}' Output: {}", reply.text.trim_end());
            let mut out = &stream;
            out.write_all(reply.text.as_bytes())?;
            out.flush()?;
            let _ = stream.shutdown(std::net::Shutdown::Both);
            if !reply.error {
                on_event(ControlEvent::Released);
            }
            return Ok(());
        }
        _ => {}
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
    drop(slot);
    out.write_all(&text)?;
    out.flush()?;
    let _ = out.shutdown(std::net::Shutdown::Both);
    if reply.exit {
        on_event(ControlEvent::Exit);
    }
    Ok(())
}
