//! The accept trap of a hitless upgrade, exercised with glommio itself: one
//! listening socket held by two executors at once (a `dup`, the same open
//! socket `SCM_RIGHTS` gives a new process), the old holder stopped through
//! its `AcceptGate` with `complete_pending_accepts`, over and over, while
//! clients connect without pause. Every client must be greeted: a refused,
//! reset or silent connection fails the test.
//!
//! Covers `amqpprox::handoff::accept_stop` on io_uring; never starts the
//! proxy or needs RabbitMQ (the end-to-end upgrade is tests/upgrade_e2e.rs).

use amqpprox::handoff::{complete_pending_accepts, AcceptGate, DummyClients};
use futures_lite::AsyncWriteExt;
use glommio::{LocalExecutorBuilder, Placement};
use std::cell::Cell;
use std::io::Read;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::{FromRawFd, IntoRawFd, OwnedFd};
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::SeqCst};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Upgrades per run: the brief's bar for calling the mechanism reliable.
const UPGRADES: usize = 20;

/// Generous bound on anything a client waits for (a loaded 2-core box).
const CLIENT_TIMEOUT: Duration = Duration::from_secs(20);

fn wait_for(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// One executor accepting on its own descriptor of the shared socket, as a
/// shard of one process generation would.
struct Holder {
    gate: Arc<AcceptGate>,
    served: Arc<AtomicUsize>,
    thread: JoinHandle<()>,
}

/// Starts a holder whose clients read `id` as their greeting. Its accept
/// loop follows the gate's protocol: arm, accept, count the connection as
/// a session, disarm; and before the executor ends it waits for its
/// sessions, as a drain does.
fn start_holder(socket: OwnedFd, id: u8) -> Holder {
    let gate = Arc::new(AcceptGate::new());
    let served = Arc::new(AtomicUsize::new(0));
    let thread = std::thread::spawn({
        let gate = Arc::clone(&gate);
        let served = Arc::clone(&served);
        move || {
            let executor = LocalExecutorBuilder::new(Placement::Unbound)
                .name(&format!("holder-{id}"))
                .io_memory(256 * 1024)
                .ring_depth(128)
                .make()
                .expect("a glommio executor starts");
            executor.run(async move {
                // SAFETY: the descriptor is a listening TCP socket this
                // holder owns from now on.
                let listener =
                    unsafe { glommio::net::TcpListener::from_raw_fd(socket.into_raw_fd()) };
                let sessions = Rc::new(Cell::new(0usize));
                while gate.try_arm() {
                    let accepted = listener.accept().await;
                    if let Ok(mut stream) = accepted {
                        served.fetch_add(1, SeqCst);
                        sessions.set(sessions.get() + 1);
                        let sessions = Rc::clone(&sessions);
                        glommio::spawn_local(async move {
                            let _ = stream.write_all(&[id]).await;
                            let _ = stream.close().await;
                            sessions.set(sessions.get() - 1);
                        })
                        .detach();
                    }
                    gate.disarm();
                }
                while sessions.get() > 0 {
                    glommio::timer::sleep(Duration::from_millis(1)).await;
                }
            });
        }
    });
    Holder {
        gate,
        served,
        thread,
    }
}

/// Stops a holder the way the old process stops on `UPGRADE RELEASE`;
/// returns how many dummy clients that took.
fn stop_holder(holder: Holder, addr: SocketAddr) -> u32 {
    holder.gate.stop();
    let dummies =
        complete_pending_accepts(addr, || holder.gate.armed() == 0, &DummyClients::default())
            .expect("the holder's pending accept completes");
    holder
        .thread
        .join()
        .expect("the holder's thread ends cleanly");
    dummies
}

/// What the clients saw.
#[derive(Default)]
struct Tally {
    greeted: AtomicUsize,
    failures: Mutex<Vec<String>>,
}

/// Connects, reads the one-byte greeting, closes; again until `stop`.
fn client_loop(addr: SocketAddr, stop: Arc<AtomicBool>, tally: Arc<Tally>) -> JoinHandle<()> {
    std::thread::spawn(move || {
        while !stop.load(SeqCst) {
            let result = TcpStream::connect_timeout(&addr, CLIENT_TIMEOUT).and_then(|mut s| {
                s.set_read_timeout(Some(CLIENT_TIMEOUT))?;
                let mut greeting = [0u8];
                s.read_exact(&mut greeting)
            });
            match result {
                Ok(()) => {
                    tally.greeted.fetch_add(1, SeqCst);
                }
                Err(e) => tally.failures.lock().unwrap().push(e.to_string()),
            }
        }
    })
}

#[test]
fn clients_see_no_refused_or_reset_connection_through_repeated_handovers() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let socket = OwnedFd::from(listener);

    let stop = Arc::new(AtomicBool::new(false));
    let tally = Arc::new(Tally::default());
    let mut current = start_holder(socket.try_clone().unwrap(), 0);
    let clients: Vec<JoinHandle<()>> = (0..2)
        .map(|_| client_loop(addr, Arc::clone(&stop), Arc::clone(&tally)))
        .collect();

    let mut dummies = 0;
    for generation in 1..=UPGRADES {
        let next = start_holder(socket.try_clone().unwrap(), generation as u8);
        // Both generations serve before the old one is told to stop, as
        // both processes do between the handoff and the release.
        wait_for("the new holder to serve a client", || {
            next.served.load(SeqCst) > 0
        });
        let before = tally.greeted.load(SeqCst);
        dummies += stop_holder(current, addr);
        current = next;
        wait_for("clients to be served after the handover", || {
            tally.greeted.load(SeqCst) > before + 4
        });
    }
    stop.store(true, SeqCst);
    for client in clients {
        client.join().unwrap();
    }
    let dummies_last = stop_holder(current, addr);
    drop(socket);

    let failures = tally.failures.lock().unwrap();
    assert!(
        failures.is_empty(),
        "{} of {} connections failed across {UPGRADES} handovers: {failures:?}",
        failures.len(),
        failures.len() + tally.greeted.load(SeqCst)
    );
    eprintln!(
        "{} clients greeted through {UPGRADES} handovers; {dummies} dummy clients, \
         {dummies_last} to stop the last holder",
        tally.greeted.load(SeqCst)
    );
}
