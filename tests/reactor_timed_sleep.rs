//! What a shard's reactor submits to the kernel while it sleeps with a
//! timer pending and wakes on socket traffic: where the kernel takes a
//! wait's time limit, nothing per sleep (vendor/glommio/PATCHES.md, "A
//! sleep with its own time limit"), where glommio as published armed a
//! timeout request for every such sleep and cancelled it on every wake.
//! Every session in its handshake holds such a timer. This file owns only
//! that check; it runs alone in its own test binary because it counts the
//! requests of every io_uring instance in the process, and it never
//! touches a broker.

mod support;

use std::time::{Duration, Instant};

use futures_lite::{AsyncReadExt, AsyncWriteExt};
use glommio::net::TcpListener;
use glommio::{LocalExecutorBuilder, Placement};
use support::reactor::{ring_fdinfo, slow_peer};

/// Requests submitted so far to every io_uring instance of this process:
/// the sum of their submission-queue tails (`SqTail`, a count that only
/// grows, modulo 2^32), or `None` when the kernel does not show them.
fn submitted_requests() -> Option<u64> {
    let tails: Vec<u64> = ring_fdinfo()
        .iter()
        .filter_map(|info| {
            info.lines()
                .find_map(|line| line.strip_prefix("SqTail:"))
                .and_then(|value| value.trim().parse::<u32>().ok())
        })
        .map(u64::from)
        .collect();
    (!tails.is_empty()).then(|| tails.iter().sum())
}

#[test]
fn a_reactor_sleeping_with_a_timer_pending_submits_nothing_per_sleep() {
    const EXCHANGES: u64 = 200;
    let (submitted, elapsed) = LocalExecutorBuilder::new(Placement::Unbound)
        .name("reactor-timed-sleep")
        .spawn(|| async {
            // A timer that stays pending throughout, as a session's
            // handshake timeout does.
            let pending = glommio::spawn_local(glommio::timer::sleep(Duration::from_secs(120)));
            glommio::yield_if_needed().await;
            let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
            let addr = listener.local_addr().expect("local address");
            // Each wait for the slow peer's byte puts the reactor to sleep
            // with the timer pending.
            let peer = slow_peer(addr, EXCHANGES);
            let mut stream = listener.accept().await.expect("accept");
            let mut byte = [0u8; 1];
            // Past the first exchange: the stream's read poll is armed.
            stream.read_exact(&mut byte).await.expect("read");
            stream.write_all(&byte).await.expect("write");
            let before = submitted_requests();
            let started = Instant::now();
            for _ in 1..EXCHANGES {
                stream.read_exact(&mut byte).await.expect("read");
                stream.write_all(&byte).await.expect("write");
            }
            let after = submitted_requests();
            let elapsed = started.elapsed();
            drop(stream);
            peer.join().expect("peer thread");
            drop(pending);
            (before.zip(after).map(|(b, a)| a - b), elapsed)
        })
        .expect("executor")
        .join()
        .expect("executor thread");
    let submitted =
        submitted.expect("this kernel shows io_uring submission tails in fdinfo (SqTail)");
    // The preemption timer kept through the sleeps fires at most every
    // 100 ms: a wake-up, then one request to arm it again and one to
    // cancel it before the next sleep. Allow those, and a few more.
    let allowed = 2 * (elapsed.as_millis() as u64 / 100 + 1) + 10;
    assert!(
        submitted <= allowed,
        "{submitted} requests submitted over {} sleeps with a timer pending \
         ({elapsed:?}; at most {allowed} expected): the sleeps arm timeouts",
        EXCHANGES - 1
    );
}
