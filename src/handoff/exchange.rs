//! Both ends of the takeover exchange over a control-socket connection: the
//! old process sends its listening sockets and the description
//! ([`send_handoff`]); the new one asks for them and checks what came
//! ([`request_handoff`], [`receive_handoff`]), then tells the old one to
//! let go ([`release`]).
//!
//! Runs on plain threads with blocking sockets (the control thread, or the
//! new process before its shards start), never on a shard. Never opens,
//! binds or accepts on a listener itself: the caller decides what to do
//! with the sockets. The order of the bytes is in `super::wire`.

use super::fds::{self, RecvFdsError};
use super::wire::{
    DescriptionError, HandedListener, Handoff, BATCH_LAST, BATCH_MORE, MAX_FDS_PER_BATCH, RELEASE,
    REQUEST,
};
use socket2::SockRef;
use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Largest description accepted: a configuration dump is text of a few
/// kilobytes; this bounds memory if the peer is not what it claims.
pub const MAX_DESCRIPTION: u64 = 64 * 1024 * 1024;

/// Why a takeover exchange failed. The new process reports it and exits
/// without touching the old one, which keeps serving.
#[derive(Debug, thiserror::Error)]
pub enum HandoffError {
    #[error("cannot reach the running proxy's control socket {path}: {source}")]
    Connect { path: PathBuf, source: io::Error },
    #[error("the takeover exchange failed: {0}")]
    Io(#[from] io::Error),
    #[error(transparent)]
    Sockets(#[from] RecvFdsError),
    #[error("the running proxy cannot hand over its listeners; it answered: {reply}")]
    NotSupported { reply: String },
    #[error(transparent)]
    Description(#[from] DescriptionError),
    #[error("the description names {described} listeners but {received} sockets came")]
    SocketCount { described: usize, received: usize },
    #[error("handed-over socket {index} is not a TCP socket listening on port {port}: {reason}")]
    NotListening {
        index: usize,
        port: u16,
        reason: String,
    },
    #[error("the handoff description is longer than {MAX_DESCRIPTION} bytes")]
    TooLong,
}

/// What a new process takes over: each listening socket with its
/// description, in the order sent, and the configuration to replay.
#[derive(Debug)]
pub struct Received {
    pub listeners: Vec<(OwnedFd, HandedListener)>,
    pub config: String,
    /// The exchange's connection ([`request_handoff`] only). The old
    /// process watches it: closed before [`release`], the handover is
    /// abandoned and the old process carries on alone. Drop it only after
    /// the release was answered.
    pub connection: Option<UnixStream>,
}

/// Old side, after reading [`REQUEST`]: sends `fds` (the `i`-th described
/// by `handoff.listeners[i]`) in batches, then the description, then shuts
/// the connection down. The sockets stay open and served here; the old
/// process stops accepting only on [`RELEASE`].
pub fn send_handoff(
    stream: &UnixStream,
    handoff: &Handoff,
    fds: &[BorrowedFd<'_>],
) -> Result<(), HandoffError> {
    if fds.len() != handoff.listeners.len() {
        return Err(HandoffError::SocketCount {
            described: handoff.listeners.len(),
            received: fds.len(),
        });
    }
    if fds.is_empty() {
        fds::send_batch(stream, BATCH_LAST, &[])?;
    }
    let batches = fds.len().div_ceil(MAX_FDS_PER_BATCH);
    for (i, batch) in fds.chunks(MAX_FDS_PER_BATCH).enumerate() {
        let marker = if i + 1 == batches {
            BATCH_LAST
        } else {
            BATCH_MORE
        };
        fds::send_batch(stream, marker, batch)?;
    }
    let mut out = stream;
    out.write_all(handoff.to_text().as_bytes())?;
    out.flush()?;
    stream.shutdown(std::net::Shutdown::Write)?;
    Ok(())
}

/// New side: connects to the running proxy's control socket, asks for its
/// listeners and configuration, and checks what came. `timeout` bounds
/// each read and write, so a wedged old process cannot hang the start.
pub fn request_handoff(control_socket: &Path, timeout: Duration) -> Result<Received, HandoffError> {
    let stream = connect(control_socket, timeout)?;
    (&stream).write_all(format!("{REQUEST}\n").as_bytes())?;
    let mut received = receive_handoff(&stream)?;
    received.connection = Some(stream);
    Ok(received)
}

/// New side, once serving: tells the old process to stop accepting and
/// drain. Returns its reply text.
pub fn release(control_socket: &Path, timeout: Duration) -> Result<String, HandoffError> {
    let stream = connect(control_socket, timeout)?;
    (&stream).write_all(format!("{RELEASE}\n").as_bytes())?;
    let mut reply = String::new();
    (&stream).take(MAX_DESCRIPTION).read_to_string(&mut reply)?;
    Ok(reply)
}

fn connect(control_socket: &Path, timeout: Duration) -> Result<UnixStream, HandoffError> {
    let stream = UnixStream::connect(control_socket).map_err(|source| HandoffError::Connect {
        path: control_socket.to_path_buf(),
        source,
    })?;
    stream.set_read_timeout(Some(timeout))?;
    stream.set_write_timeout(Some(timeout))?;
    Ok(stream)
}

/// New side, after sending [`REQUEST`]: the socket batches, then the
/// description; each socket is checked to be a listening TCP socket on the
/// described port before it is returned.
pub fn receive_handoff(stream: &UnixStream) -> Result<Received, HandoffError> {
    let mut sockets: Vec<OwnedFd> = Vec::new();
    loop {
        let batch = fds::recv_batch(stream)?;
        sockets.extend(batch.fds);
        match batch.marker {
            BATCH_MORE => {}
            BATCH_LAST => break,
            first => {
                // Not a batch: a proxy that does not know the request
                // answered with text. Report what it said.
                let mut reply = vec![first];
                stream.take(64 * 1024).read_to_end(&mut reply)?;
                return Err(HandoffError::NotSupported {
                    reply: String::from_utf8_lossy(&reply).trim_end().to_string(),
                });
            }
        }
    }
    let mut text = String::new();
    stream.take(MAX_DESCRIPTION + 1).read_to_string(&mut text)?;
    if text.len() as u64 > MAX_DESCRIPTION {
        return Err(HandoffError::TooLong);
    }
    let handoff = Handoff::parse(&text)?;
    if handoff.listeners.len() != sockets.len() {
        return Err(HandoffError::SocketCount {
            described: handoff.listeners.len(),
            received: sockets.len(),
        });
    }
    for (index, (fd, listener)) in sockets.iter().zip(&handoff.listeners).enumerate() {
        check_listening(fd.as_fd(), listener.addr).map_err(|reason| {
            HandoffError::NotListening {
                index,
                port: listener.addr.port(),
                reason,
            }
        })?;
    }
    Ok(Received {
        listeners: sockets.into_iter().zip(handoff.listeners).collect(),
        config: handoff.config,
        connection: None,
    })
}

/// A handed-over socket must be a listening TCP stream socket bound to the
/// described port: anything else would make the new process accept on the
/// wrong thing.
fn check_listening(fd: BorrowedFd<'_>, described: SocketAddr) -> Result<(), String> {
    let socket = SockRef::from(&fd);
    let kind = socket.r#type().map_err(|e| e.to_string())?;
    if kind != socket2::Type::STREAM {
        return Err("not a stream socket".into());
    }
    if !socket.is_listener().map_err(|e| e.to_string())? {
        return Err("not listening".into());
    }
    let local = socket
        .local_addr()
        .map_err(|e| e.to_string())?
        .as_socket()
        .ok_or("not an IP socket")?;
    if local.port() != described.port() {
        return Err(format!("bound to port {}", local.port()));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tls::ingress::ListenerKind;
    use std::net::TcpListener;

    fn described(listener: &TcpListener, shard: usize) -> HandedListener {
        HandedListener {
            addr: listener.local_addr().unwrap(),
            kind: ListenerKind {
                tls: shard % 2 == 1,
                proxy: false,
            },
            shard,
        }
    }

    /// Runs the old side on a thread, the new side here.
    fn exchange(listeners: &[TcpListener], config: &str) -> Result<Received, HandoffError> {
        let handoff = Handoff {
            listeners: listeners
                .iter()
                .enumerate()
                .map(|(i, l)| described(l, i))
                .collect(),
            config: config.to_string(),
        };
        let (old, new) = UnixStream::pair().unwrap();
        std::thread::scope(|scope| {
            scope.spawn(|| {
                let fds: Vec<BorrowedFd<'_>> = listeners.iter().map(|l| l.as_fd()).collect();
                send_handoff(&old, &handoff, &fds).unwrap();
            });
            receive_handoff(&new)
        })
    }

    #[test]
    fn listeners_and_configuration_arrive_and_accept() {
        let listeners: Vec<TcpListener> = (0..3)
            .map(|_| TcpListener::bind("127.0.0.1:0").unwrap())
            .collect();
        let received = exchange(&listeners, "LISTEN START 5672\n").unwrap();
        assert_eq!(received.config, "LISTEN START 5672\n");
        assert_eq!(received.listeners.len(), 3);
        for (i, (fd, description)) in received.listeners.into_iter().enumerate() {
            assert_eq!(description, described(&listeners[i], i));
            // The received socket is the same listener: a connection to
            // the old one's port is accepted through it.
            let taken = TcpListener::from(fd);
            let port = listeners[i].local_addr().unwrap().port();
            let _client = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
            taken.accept().unwrap();
        }
    }

    #[test]
    fn more_listeners_than_one_batch_arrive_in_order() {
        let listeners: Vec<TcpListener> = (0..MAX_FDS_PER_BATCH * 2 + 3)
            .map(|_| TcpListener::bind("127.0.0.1:0").unwrap())
            .collect();
        let received = exchange(&listeners, "").unwrap();
        let ports: Vec<u16> = received
            .listeners
            .iter()
            .map(|(fd, _)| {
                SockRef::from(fd)
                    .local_addr()
                    .unwrap()
                    .as_socket()
                    .unwrap()
                    .port()
            })
            .collect();
        let expected: Vec<u16> = listeners
            .iter()
            .map(|l| l.local_addr().unwrap().port())
            .collect();
        assert_eq!(ports, expected);
    }

    #[test]
    fn no_listeners_still_hands_over_the_configuration() {
        let received = exchange(&[], "VHOST PAUSE /\n").unwrap();
        assert!(received.listeners.is_empty());
        assert_eq!(received.config, "VHOST PAUSE /\n");
    }

    #[test]
    fn a_proxy_without_takeover_is_reported_with_its_answer() {
        let (mut old, new) = UnixStream::pair().unwrap();
        old.write_all(b"Unknown command.\n").unwrap();
        drop(old);
        match receive_handoff(&new) {
            Err(HandoffError::NotSupported { reply }) => assert_eq!(reply, "Unknown command."),
            other => panic!("expected NotSupported, got {other:?}"),
        }
    }

    #[test]
    fn a_socket_that_is_not_listening_is_refused() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let client = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let handoff = Handoff {
            listeners: vec![described(&listener, 0)],
            config: String::new(),
        };
        let (old, new) = UnixStream::pair().unwrap();
        // A connected socket sent where a listener belongs.
        fds::send_batch(&old, BATCH_LAST, &[client.as_fd()]).unwrap();
        (&old).write_all(handoff.to_text().as_bytes()).unwrap();
        drop(old);
        assert!(matches!(
            receive_handoff(&new),
            Err(HandoffError::NotListening { index: 0, .. })
        ));
    }

    #[test]
    fn a_socket_on_another_port_is_refused() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let other = TcpListener::bind("127.0.0.1:0").unwrap();
        let handoff = Handoff {
            listeners: vec![described(&listener, 0)],
            config: String::new(),
        };
        let (old, new) = UnixStream::pair().unwrap();
        send_handoff(&old, &handoff, &[other.as_fd()]).unwrap();
        match receive_handoff(&new) {
            Err(HandoffError::NotListening { reason, .. }) => {
                assert!(reason.starts_with("bound to port"), "{reason}")
            }
            other => panic!("expected NotListening, got {other:?}"),
        }
    }

    #[test]
    fn a_count_mismatch_is_refused_on_both_sides() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let two = Handoff {
            listeners: vec![described(&listener, 0), described(&listener, 1)],
            config: String::new(),
        };
        let (old, new) = UnixStream::pair().unwrap();
        assert!(matches!(
            send_handoff(&old, &two, &[listener.as_fd()]),
            Err(HandoffError::SocketCount {
                described: 2,
                received: 1
            })
        ));
        // A sender that lies anyway is caught by the receiver.
        fds::send_batch(&old, BATCH_LAST, &[listener.as_fd()]).unwrap();
        (&old).write_all(two.to_text().as_bytes()).unwrap();
        drop(old);
        assert!(matches!(
            receive_handoff(&new),
            Err(HandoffError::SocketCount {
                described: 2,
                received: 1
            })
        ));
    }

    #[test]
    fn request_and_release_speak_over_a_control_socket_path() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("control.sock");
        let server = std::os::unix::net::UnixListener::bind(&path).unwrap();
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let handoff = Handoff {
            listeners: vec![described(&listener, 0)],
            config: "LISTEN START 1\n".into(),
        };
        std::thread::scope(|scope| {
            scope.spawn(|| {
                let mut lines = Vec::new();
                for reply_with_sockets in [true, false] {
                    let (stream, _) = server.accept().unwrap();
                    let mut line = String::new();
                    let mut reader = io::BufReader::new(&stream);
                    io::BufRead::read_line(&mut reader, &mut line).unwrap();
                    lines.push(line);
                    if reply_with_sockets {
                        send_handoff(&stream, &handoff, &[listener.as_fd()]).unwrap();
                    } else {
                        (&stream).write_all(b"Draining.\n").unwrap();
                    }
                }
                assert_eq!(lines, [format!("{REQUEST}\n"), format!("{RELEASE}\n")]);
            });
            let timeout = Duration::from_secs(30);
            let received = request_handoff(&path, timeout).unwrap();
            assert_eq!(received.config, "LISTEN START 1\n");
            assert_eq!(release(&path, timeout).unwrap(), "Draining.\n");
        });
    }

    #[test]
    fn a_missing_control_socket_names_its_path() {
        let error = request_handoff(
            Path::new("/nonexistent/amqpprox.sock"),
            Duration::from_secs(1),
        )
        .unwrap_err();
        assert!(
            error.to_string().contains("/nonexistent/amqpprox.sock"),
            "{error}"
        );
    }
}
