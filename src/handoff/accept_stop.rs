//! Stopping an accept loop on a listening socket that another process now
//! shares, without losing a connection.
//!
//! The trap: glommio's `TcpListener::accept` keeps an io_uring accept in
//! flight. Dropping that future (to stop accepting) or exiting with it armed
//! leaves a request the kernel may still complete with a connection whose
//! descriptor nobody reads; that client is reset when the process exits.
//! So an accept loop on a handed-over socket is never cancelled: told to
//! stop ([`AcceptGate::stop`]), it lets its current accept complete, serves
//! that connection, and does not arm another. If no client comes, the
//! accept is completed on purpose with [`complete_pending_accepts`], which
//! connects short-lived dummy clients to the port until the gate reports no
//! accept armed. A dummy that the other process accepts instead is just a
//! client that leaves during the handshake.
//!
//! Owns the gate's bookkeeping and the dummy clients; never accepts, never
//! touches the listener's descriptor, never runs on a shard (the dummies
//! connect with blocking calls, from the control or supervisor thread).
//! See docs/deployment.md#upgrading-without-refusing-connections.

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::SeqCst};
use std::time::{Duration, Instant};

/// Shared by the accept loops of one port (one per shard) and whoever
/// stops them. The loops call [`try_arm`](AcceptGate::try_arm) before each
/// accept and [`disarm`](AcceptGate::disarm) after it returns.
#[derive(Debug, Default)]
pub struct AcceptGate {
    stop: AtomicBool,
    armed: AtomicUsize,
}

impl AcceptGate {
    pub fn new() -> AcceptGate {
        AcceptGate::default()
    }

    /// Before arming an accept: `false` once [`stop`](Self::stop) was
    /// called, and the loop must end without accepting again.
    ///
    /// The loop counts itself armed before it looks at the flag, and the
    /// stopper sets the flag before it looks at the count (both SeqCst):
    /// either the loop sees the stop, or the stopper sees it armed and
    /// completes its accept. Never neither.
    pub fn try_arm(&self) -> bool {
        self.armed.fetch_add(1, SeqCst);
        if self.stop.load(SeqCst) {
            self.armed.fetch_sub(1, SeqCst);
            return false;
        }
        true
    }

    /// After an armed accept returned (a connection or an error). Call it
    /// only once an accepted connection is counted where the drain counts
    /// sessions, so the process never sees "no accept armed, no session"
    /// while a connection is in between.
    pub fn disarm(&self) {
        self.armed.fetch_sub(1, SeqCst);
    }

    /// Asks every loop on this gate to stop after its current accept.
    pub fn stop(&self) {
        self.stop.store(true, SeqCst);
    }

    pub fn is_stopping(&self) -> bool {
        self.stop.load(SeqCst)
    }

    /// Accepts in flight now.
    pub fn armed(&self) -> usize {
        self.armed.load(SeqCst)
    }

    /// Stopped, and no accept left in flight: the listener may be closed
    /// here and the process may exit.
    pub fn is_settled(&self) -> bool {
        self.is_stopping() && self.armed() == 0
    }
}

/// How hard [`complete_pending_accepts`] tries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DummyClients {
    /// Dummy connections made before giving up. Each lands on one socket
    /// of the port's SO_REUSEPORT group, chosen by the kernel's hash, so a
    /// port served by many shards needs several tries per shard.
    pub max_tries: u32,
    /// Bound on one connect (a full backlog drops SYNs silently).
    pub connect_timeout: Duration,
    /// How long to watch for the accept completing after each dummy before
    /// sending the next; a shard on a loaded machine reacts within it.
    pub pause: Duration,
}

impl Default for DummyClients {
    fn default() -> DummyClients {
        DummyClients {
            max_tries: 1000,
            connect_timeout: Duration::from_secs(1),
            pause: Duration::from_millis(5),
        }
    }
}

/// Why the pending accepts could not all be completed.
#[derive(Debug, thiserror::Error)]
pub enum AcceptStopError {
    #[error(
        "{tries} dummy connections to port {port} ({sent} connected) left an accept in flight; \
         giving up (last connect error: {last_error:?})"
    )]
    GaveUp {
        port: u16,
        tries: u32,
        sent: u32,
        last_error: Option<io::ErrorKind>,
    },
}

/// Where a dummy client connects to reach `listener`: its own address, or
/// for a wildcard the loopback of its family (IPv6 first, then IPv4, for
/// `[::]` listeners on hosts without IPv6 loopback).
pub fn dummy_targets(listener: SocketAddr) -> Vec<SocketAddr> {
    let port = listener.port();
    match listener.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => {
            vec![SocketAddr::new(Ipv4Addr::LOCALHOST.into(), port)]
        }
        IpAddr::V6(ip) if ip.is_unspecified() => vec![
            SocketAddr::new(Ipv6Addr::LOCALHOST.into(), port),
            SocketAddr::new(Ipv4Addr::LOCALHOST.into(), port),
        ],
        _ => vec![listener],
    }
}

/// Completes the accepts still in flight on `listener`'s port: until
/// `accept_completed` says so, connects a dummy client (and closes it at
/// once), then watches for up to `dummies.pause`. Returns how many dummies
/// connected. Blocks the calling thread; never call it on a shard.
///
/// Call it after [`AcceptGate::stop`], with a predicate such as
/// `|| gate.armed() == 0`.
pub fn complete_pending_accepts(
    listener: SocketAddr,
    mut accept_completed: impl FnMut() -> bool,
    dummies: &DummyClients,
) -> Result<u32, AcceptStopError> {
    let targets = dummy_targets(listener);
    let mut target = 0;
    let mut sent = 0;
    let mut last_error = None;
    for _ in 0..dummies.max_tries {
        if accept_completed() {
            return Ok(sent);
        }
        match TcpStream::connect_timeout(&targets[target], dummies.connect_timeout) {
            // Closed at once: whoever accepts it sees a client leave
            // before its handshake.
            Ok(stream) => {
                sent += 1;
                drop(stream);
            }
            Err(e) => {
                last_error = Some(e.kind());
                target = (target + 1) % targets.len();
            }
        }
        let watch_until = Instant::now() + dummies.pause;
        while Instant::now() < watch_until {
            if accept_completed() {
                return Ok(sent);
            }
            std::thread::sleep(Duration::from_micros(200));
        }
    }
    if accept_completed() {
        return Ok(sent);
    }
    Err(AcceptStopError::GaveUp {
        port: listener.port(),
        tries: dummies.max_tries,
        sent,
        last_error,
    })
}

/// The old process's side of `UPGRADE RELEASE` for all its handed-over
/// ports: stops every gate first (so no loop on any port arms again while
/// another port is being completed), then completes each port's pending
/// accepts in turn. Returns each port's outcome; a port given up on is
/// logged by the caller and does not stop the others.
pub fn release_listeners(
    ports: &[(SocketAddr, std::sync::Arc<AcceptGate>)],
    dummies: &DummyClients,
) -> Vec<(u16, Result<u32, AcceptStopError>)> {
    for (_, gate) in ports {
        gate.stop();
    }
    ports
        .iter()
        .map(|(addr, gate)| {
            let outcome = complete_pending_accepts(*addr, || gate.armed() == 0, dummies);
            (addr.port(), outcome)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::net::TcpListener;
    use std::sync::Arc;

    /// Waits for `cond` with a generous deadline (the machine is loaded).
    fn wait_for(what: &str, mut cond: impl FnMut() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while !cond() {
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    #[test]
    fn a_stopped_gate_refuses_to_arm() {
        let gate = AcceptGate::new();
        assert!(gate.try_arm());
        assert_eq!(gate.armed(), 1);
        gate.stop();
        assert!(!gate.is_settled(), "an accept is still in flight");
        assert!(!gate.try_arm());
        assert_eq!(gate.armed(), 1, "a refused arm leaves the count alone");
        gate.disarm();
        assert!(gate.is_settled());
    }

    #[test]
    fn wildcard_listeners_are_reached_over_loopback() {
        assert_eq!(
            dummy_targets("0.0.0.0:5672".parse().unwrap()),
            ["127.0.0.1:5672".parse::<SocketAddr>().unwrap()]
        );
        assert_eq!(
            dummy_targets("[::]:5672".parse().unwrap()),
            [
                "[::1]:5672".parse::<SocketAddr>().unwrap(),
                "127.0.0.1:5672".parse().unwrap()
            ]
        );
        assert_eq!(
            dummy_targets("10.0.0.1:5672".parse().unwrap()),
            ["10.0.0.1:5672".parse::<SocketAddr>().unwrap()]
        );
    }

    #[test]
    fn nothing_in_flight_sends_no_dummy() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let sent =
            complete_pending_accepts(listener.local_addr().unwrap(), || true, &Default::default())
                .unwrap();
        assert_eq!(sent, 0);
        listener.set_nonblocking(true).unwrap();
        let nothing = listener.accept().unwrap_err();
        assert_eq!(nothing.kind(), io::ErrorKind::WouldBlock);
    }

    #[test]
    fn an_accept_that_never_completes_is_given_up_on() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let limits = DummyClients {
            max_tries: 3,
            connect_timeout: Duration::from_secs(5),
            pause: Duration::from_millis(1),
        };
        match complete_pending_accepts(listener.local_addr().unwrap(), || false, &limits) {
            Err(AcceptStopError::GaveUp {
                tries: 3, sent: 3, ..
            }) => {}
            other => panic!("expected GaveUp after 3 dummies, got {other:?}"),
        }
    }

    #[test]
    fn a_wildcard_listener_is_completed_over_loopback() {
        let listener = TcpListener::bind("0.0.0.0:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let gate = Arc::new(AcceptGate::new());
        let old = std::thread::spawn({
            let gate = Arc::clone(&gate);
            move || {
                while gate.try_arm() {
                    let _ = listener.accept();
                    gate.disarm();
                }
            }
        });
        wait_for("the holder to arm", || gate.armed() == 1);
        gate.stop();
        let sent = complete_pending_accepts(addr, || gate.armed() == 0, &Default::default())
            .expect("a dummy reaches 0.0.0.0 over 127.0.0.1");
        // More than one only if the holder took longer than a pause to
        // wake (a loaded machine); the first one is its.
        assert!(sent >= 1);
        old.join().unwrap();
    }

    #[test]
    fn releasing_stops_every_port_and_completes_each() {
        let mut ports = Vec::new();
        let mut holders = Vec::new();
        for _ in 0..3 {
            let listener = TcpListener::bind("127.0.0.1:0").unwrap();
            let gate = Arc::new(AcceptGate::new());
            ports.push((listener.local_addr().unwrap(), Arc::clone(&gate)));
            holders.push(std::thread::spawn(move || {
                let mut accepted = 0;
                while gate.try_arm() {
                    accepted += usize::from(listener.accept().is_ok());
                    gate.disarm();
                }
                accepted
            }));
        }
        for (_, gate) in &ports {
            wait_for("every holder to arm", || gate.armed() == 1);
        }
        let outcomes = release_listeners(&ports, &Default::default());
        assert_eq!(outcomes.len(), 3);
        for ((addr, gate), (port, outcome)) in ports.iter().zip(outcomes) {
            assert_eq!(port, addr.port());
            assert!(outcome.unwrap() >= 1);
            assert!(gate.is_settled());
        }
        for holder in holders {
            assert_eq!(holder.join().unwrap(), 1);
        }
    }

    /// The handover in miniature: two holders of one listening socket (a
    /// `dup`, as `SCM_RIGHTS` makes), each blocked in accept. The old one
    /// is stopped through its gate; the dummies complete its accept; the
    /// new one keeps serving throughout.
    #[test]
    fn the_old_holders_accept_completes_and_the_new_one_keeps_serving() {
        let old_listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = old_listener.local_addr().unwrap();
        let new_listener = old_listener.try_clone().unwrap();
        let gate = Arc::new(AcceptGate::new());

        let old = std::thread::spawn({
            let gate = Arc::clone(&gate);
            move || {
                let mut accepted = 0;
                while gate.try_arm() {
                    let result = old_listener.accept();
                    accepted += usize::from(result.is_ok());
                    gate.disarm();
                }
                accepted
            }
        });
        // The new holder greets each client and ends on a client that says
        // 'q'; a dummy says nothing and is dropped.
        let new = std::thread::spawn(move || loop {
            let (mut stream, _) = new_listener.accept().unwrap();
            let _ = stream.write_all(b"n");
            let mut byte = [0u8];
            if matches!(stream.read(&mut byte), Ok(1) if byte[0] == b'q') {
                return;
            }
        });

        wait_for("the old holder to arm", || gate.armed() == 1);
        gate.stop();
        let sent = complete_pending_accepts(addr, || gate.armed() == 0, &Default::default())
            .expect("the old holder's accept completes");
        assert!(sent >= 1, "an accept was in flight, so a dummy was needed");
        assert_eq!(old.join().unwrap(), 1, "the old holder took exactly one");
        assert!(gate.is_settled());

        // Only the new holder is left, and it serves.
        let mut client = TcpStream::connect(addr).unwrap();
        client
            .set_read_timeout(Some(Duration::from_secs(30)))
            .unwrap();
        let mut greeting = [0u8];
        client.read_exact(&mut greeting).unwrap();
        assert_eq!(&greeting, b"n");
        client.write_all(b"q").unwrap();
        new.join().unwrap();
    }
}
