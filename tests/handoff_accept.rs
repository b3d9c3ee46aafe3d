//! The accept trap of a hitless upgrade, exercised with glommio itself:
//! listening sockets held by two generations of executors at once (`dup`s,
//! the same open sockets `SCM_RIGHTS` gives a new process), the old
//! generation stopped through its `AcceptGate` with
//! `complete_pending_accepts`, over and over, while clients connect without
//! pause. Every client must be greeted: a refused, reset or silent
//! connection fails the test.
//!
//! Covers `amqpprox::handoff::{accept_stop, plan}` on io_uring; never starts
//! the proxy and never needs RabbitMQ.

use amqpprox::handoff::{complete_pending_accepts, plan, AcceptGate, DummyClients, HandedListener};
use amqpprox::shard::ListenerKind;
use futures_lite::AsyncWriteExt;
use glommio::{LocalExecutorBuilder, Placement};
use socket2::{Domain, Protocol, Socket, Type};
use std::cell::Cell;
use std::io::Read;
use std::net::{SocketAddr, TcpStream};
use std::os::fd::{FromRawFd, IntoRawFd, OwnedFd};
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::SeqCst};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Upgrades per run: the bar for calling the mechanism reliable.
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

/// `count` SO_REUSEPORT listeners on one loopback port, as the proxy's
/// shards open them.
fn reuseport_group(count: usize) -> (SocketAddr, Vec<OwnedFd>) {
    let mut addr: SocketAddr = "127.0.0.1:0".parse().unwrap();
    let sockets = (0..count)
        .map(|_| {
            let socket = Socket::new(Domain::IPV4, Type::STREAM, Some(Protocol::TCP)).unwrap();
            socket.set_reuse_port(true).unwrap();
            socket.bind(&addr.into()).unwrap();
            socket.listen(1024).unwrap();
            addr = socket.local_addr().unwrap().as_socket().unwrap();
            OwnedFd::from(socket)
        })
        .collect();
    (addr, sockets)
}

/// One process generation: its executors ("shards"), the gate their accept
/// loops share for the port, and how many clients it served.
struct Generation {
    gate: Arc<AcceptGate>,
    served: Arc<AtomicUsize>,
    shards: Vec<JoinHandle<()>>,
}

/// Starts a generation of `shards` executors on `sockets`, each socket
/// served by exactly one executor as `plan::assign` says. Clients read the
/// generation's `id` as their greeting. Each accept loop follows the gate's
/// protocol: arm, accept, count the connection as a session, disarm; an
/// executor ends once its loops have and its sessions are done, as a drain
/// waits for sessions.
fn start_generation(sockets: &[OwnedFd], port: u16, shards: usize, id: u8) -> Generation {
    let gate = Arc::new(AcceptGate::new());
    let served = Arc::new(AtomicUsize::new(0));
    let described: Vec<HandedListener> = (0..sockets.len())
        .map(|shard| HandedListener {
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
            kind: ListenerKind::default(),
            shard,
        })
        .collect();
    let shards = plan::assign(&described, shards)
        .into_iter()
        .enumerate()
        .map(|(shard, held)| {
            let mine: Vec<OwnedFd> = held
                .iter()
                .map(|&i| sockets[i].try_clone().unwrap())
                .collect();
            let gate = Arc::clone(&gate);
            let served = Arc::clone(&served);
            std::thread::spawn(move || run_shard(mine, gate, served, id, shard))
        })
        .collect();
    Generation {
        gate,
        served,
        shards,
    }
}

fn run_shard(
    sockets: Vec<OwnedFd>,
    gate: Arc<AcceptGate>,
    served: Arc<AtomicUsize>,
    id: u8,
    index: usize,
) {
    let executor = LocalExecutorBuilder::new(Placement::Unbound)
        .name(&format!("gen{id}-shard{index}"))
        .io_memory(256 * 1024)
        .ring_depth(128)
        .make()
        .expect("a glommio executor starts");
    executor.run(async move {
        let sessions = Rc::new(Cell::new(0usize));
        let loops: Vec<_> = sockets
            .into_iter()
            .map(|socket| {
                // SAFETY: the descriptor is a listening TCP socket this
                // shard owns from now on.
                let listener =
                    unsafe { glommio::net::TcpListener::from_raw_fd(socket.into_raw_fd()) };
                let (gate, served, sessions) =
                    (Arc::clone(&gate), Arc::clone(&served), Rc::clone(&sessions));
                glommio::spawn_local(async move {
                    while gate.try_arm() {
                        if let Ok(mut stream) = listener.accept().await {
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
                })
            })
            .collect();
        for accept_loop in loops {
            accept_loop.await;
        }
        while sessions.get() > 0 {
            glommio::timer::sleep(Duration::from_millis(1)).await;
        }
    });
}

/// Stops a generation the way the old process stops on `UPGRADE RELEASE`;
/// returns how many dummy clients that took.
fn stop_generation(generation: Generation, addr: SocketAddr) -> u32 {
    generation.gate.stop();
    let dummies = complete_pending_accepts(
        addr,
        || generation.gate.armed() == 0,
        &DummyClients::default(),
    )
    .expect("the generation's pending accepts complete");
    for shard in generation.shards {
        shard.join().expect("a shard's thread ends cleanly");
    }
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

/// `UPGRADES` handovers of a group of `sockets` listeners, generation `g`
/// running `shards_of(g)` executors, under two client loops.
fn handovers(sockets: usize, shards_of: impl Fn(usize) -> usize) {
    let (addr, group) = reuseport_group(sockets);
    let stop = Arc::new(AtomicBool::new(false));
    let tally = Arc::new(Tally::default());
    let mut current = start_generation(&group, addr.port(), shards_of(0), 0);
    let clients: Vec<JoinHandle<()>> = (0..2)
        .map(|_| client_loop(addr, Arc::clone(&stop), Arc::clone(&tally)))
        .collect();

    let mut dummies = 0;
    for g in 1..=UPGRADES {
        let next = start_generation(&group, addr.port(), shards_of(g), g as u8);
        // Both generations serve before the old one is released, as both
        // processes do between the handoff and the release.
        wait_for("the new generation to serve a client", || {
            next.served.load(SeqCst) > 0
        });
        let before = tally.greeted.load(SeqCst);
        dummies += stop_generation(current, addr);
        current = next;
        wait_for("clients to be served after the handover", || {
            tally.greeted.load(SeqCst) > before + 4
        });
    }
    stop.store(true, SeqCst);
    for client in clients {
        client.join().unwrap();
    }
    let dummies_last = stop_generation(current, addr);
    drop(group);

    let failures = tally.failures.lock().unwrap();
    assert!(
        failures.is_empty(),
        "{} of {} connections failed across {UPGRADES} handovers: {failures:?}",
        failures.len(),
        failures.len() + tally.greeted.load(SeqCst)
    );
    eprintln!(
        "{sockets} sockets: {} clients greeted through {UPGRADES} handovers; \
         {dummies} dummy clients, {dummies_last} to stop the last generation",
        tally.greeted.load(SeqCst)
    );
}

#[test]
fn one_socket_handed_over_loses_no_client() {
    handovers(1, |_| 1);
}

#[test]
fn a_reuseport_group_handed_between_shard_counts_loses_no_client() {
    // 3 sockets (an old process of 3 shards) served by 1, 2, 3 or 4
    // executors in turn: fewer shards hold several sockets, more leave
    // some shards without one.
    handovers(3, |g| 1 + g % 4);
}
