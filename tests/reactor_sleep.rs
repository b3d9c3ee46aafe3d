//! What a shard's reactor leaves in the kernel while it sleeps and wakes
//! on socket traffic: at most one poll linking its latency ring into its
//! main ring (vendor/glommio/PATCHES.md, "One poll at a time linking the
//! rings"), however many times it has slept. This file owns only that
//! check; it runs alone in its own test binary because it counts every
//! io_uring poll in the process, and it never touches a broker.

mod support;

use futures_lite::{AsyncReadExt, AsyncWriteExt};
use glommio::net::TcpListener;
use glommio::{LocalExecutorBuilder, Placement};
use support::reactor::{ring_fdinfo, slow_peer};

/// Poll requests pending in every io_uring instance of this process (the
/// `PollList` of each ring), or `None` when the kernel does not list them.
fn pending_polls() -> Option<usize> {
    let lists: Vec<usize> = ring_fdinfo()
        .iter()
        .filter_map(|info| info.split_once("PollList:\n"))
        .map(|(_, list)| {
            // IORING_OP_POLL_ADD is opcode 6.
            list.lines()
                .take_while(|line| line.starts_with("  "))
                .filter(|line| line.trim_start().starts_with("op=6,"))
                .count()
        })
        .collect();
    (!lists.is_empty()).then(|| lists.iter().sum())
}

#[test]
fn a_reactor_that_slept_many_times_keeps_one_link_poll() {
    const EXCHANGES: u64 = 150;
    let polls = LocalExecutorBuilder::new(Placement::Unbound)
        .name("reactor-sleep")
        .spawn(|| async {
            let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
            let addr = listener.local_addr().expect("local address");
            let peer = slow_peer(addr, EXCHANGES);
            let mut stream = listener.accept().await.expect("accept");
            let mut byte = [0u8; 1];
            for _ in 0..EXCHANGES {
                stream.read_exact(&mut byte).await.expect("read");
                stream.write_all(&byte).await.expect("write");
            }
            let polls = pending_polls();
            drop(stream);
            peer.join().expect("peer thread");
            polls
        })
        .expect("executor")
        .join()
        .expect("executor thread");
    let polls = polls.expect("this kernel lists io_uring polls in fdinfo (PollList)");
    // The stream's read poll and the link poll; one more is tolerated for
    // a link whose completion is queued but not yet consumed.
    assert!(
        polls <= 3,
        "{polls} polls pending after {EXCHANGES} sleeps: link polls pile up"
    );
}
