//! The pass-through pump's first writes queued on the ring: over real
//! loopback sockets on one glommio executor, a session's first few small
//! chunks go through the ring when another task is ready in the same turn
//! of the reactor and are written at once otherwise; later chunks are
//! always written at once; a queued write's buffer is let go once it is
//! sent, even if the session then idles; and a queued write the kernel
//! could not take yet (a broker that stopped reading) still reaches the
//! broker before the FIN that ends the session
//! (docs/sessions.md#pass-through). Needs no
//! RabbitMQ: the ends are the test's own sockets.

use std::os::fd::AsRawFd;
use std::rc::Rc;
use std::time::{Duration, Instant};

use amqpprox::codec::FrameScanner;
use amqpprox::net::with_timeout;
use amqpprox::session::control::Ending;
use amqpprox::session::pool::BufferPool;
use amqpprox::session::pump::{DirectionEnd, Pump, SharedStream, PASS_THROUGH_MAX_FRAME};
use amqpprox::session::{SessionId, SessionInfo};
use futures_lite::{AsyncReadExt, AsyncWriteExt};
use glommio::net::TcpStream;
use glommio::{LocalExecutorBuilder, Placement};

#[path = "support/loopback.rs"]
mod loopback;
use loopback::{body_frame, pair};

const DEADLINE: Duration = Duration::from_secs(10);

/// What a test gets: the client's and the broker's ends, the session, the
/// pump, a way to make another task ready in the pump's next turn, and
/// the ingress direction's task (which shuts the broker socket down when
/// it ends, as the session's end does).
struct Rig {
    client: TcpStream,
    broker: TcpStream,
    session: Rc<SessionInfo>,
    pump: Rc<Pump<TcpStream, TcpStream>>,
    neighbour: TcpStream,
    ingress: glommio::task::JoinHandle<DirectionEnd>,
}

impl Rig {
    async fn new(prepare_broker: impl FnOnce(&TcpStream, &TcpStream)) -> Rig {
        let (client, client_side) = pair().await;
        let (broker, broker_side) = pair().await;
        prepare_broker(&broker, &broker_side);
        let session = Rc::new(SessionInfo::new(
            SessionId(1),
            "127.0.0.1:1".parse().unwrap(),
            "127.0.0.1:2".parse().unwrap(),
        ));
        let pump = Rc::new(Pump::new(
            SharedStream::new(client_side),
            SharedStream::new(broker_side),
            BufferPool::new(),
            Rc::clone(&session),
            0,
        ));
        let ingress = glommio::spawn_local({
            let pump = Rc::clone(&pump);
            async move {
                let mut scanner = FrameScanner::new(PASS_THROUGH_MAX_FRAME);
                let end = pump.ingress(&mut scanner).await;
                pump.broker.with(amqpprox::net::shutdown);
                end
            }
        })
        .detach();
        // Another session's socket, as a busy shard has: a byte written to
        // it wakes its reader in the same turn as the pump's read, and the
        // reader yields once after each byte, so it is still ready to run
        // when the pump's turn comes.
        let (neighbour, mut neighbour_side) = pair().await;
        glommio::spawn_local(async move {
            let mut byte = [0u8; 1];
            while matches!(neighbour_side.read(&mut byte).await, Ok(1)) {
                glommio::executor().yield_now().await;
            }
        })
        .detach();
        Rig {
            client,
            broker,
            session,
            pump,
            neighbour,
            ingress,
        }
    }

    /// Sends `frame` from the client, in a busy turn or a quiet one, and
    /// waits until the broker has it.
    async fn forward(&mut self, frame: &[u8], busy: bool) {
        self.client.write_all(frame).await.unwrap();
        if busy {
            self.neighbour.write_all(b"x").await.unwrap();
        }
        let mut got = vec![0u8; frame.len()];
        with_timeout(DEADLINE, self.broker.read_exact(&mut got))
            .await
            .expect("the broker gets the frame in time")
            .unwrap();
        assert_eq!(got, frame);
    }

    /// How many of the ingress direction's writes were timed (written at
    /// once), and how many chunks it forwarded.
    fn ingress_writes(&self) -> (u64, u64) {
        (
            self.session.ingress.writes.get(),
            self.session.ingress.packets.get(),
        )
    }
}

/// Re-checks `condition` on the executor's own timer until it holds;
/// fails the test after [`DEADLINE`].
async fn wait_for(what: &str, condition: impl Fn() -> bool) {
    let deadline = Instant::now() + DEADLINE;
    while !condition() {
        assert!(Instant::now() < deadline, "waited {DEADLINE:?} for {what}");
        glommio::timer::sleep(Duration::from_millis(1)).await;
    }
}

fn on_executor<F, Fut>(test: F)
where
    F: FnOnce() -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()> + 'static,
{
    LocalExecutorBuilder::new(Placement::Unbound)
        .spawn(test)
        .expect("start an executor")
        .join()
        .expect("the test ran to its end");
}

#[test]
fn first_small_chunks_in_a_busy_turn_go_through_the_ring() {
    on_executor(|| async {
        let mut rig = Rig::new(|_, _| {}).await;
        let mut seen = Vec::new();
        for i in 0..6u8 {
            rig.forward(&body_frame(100, b'a' + i), true).await;
            seen.push(rig.ingress_writes());
        }
        // The first four were queued (not timed), the rest written at once.
        assert_eq!(
            seen,
            vec![(0, 1), (0, 2), (0, 3), (0, 4), (1, 5), (2, 6)],
            "(timed writes, chunks) after each chunk"
        );
        rig.session.control.end(Ending::Force);
    });
}

#[test]
fn a_session_idle_after_a_queued_chunk_keeps_no_send_buffer() {
    on_executor(|| async {
        let mut rig = Rig::new(|_, _| {}).await;
        rig.forward(&body_frame(100, b'i'), true).await;
        assert_eq!(rig.ingress_writes(), (0, 1), "queued");
        // Nothing more comes: the pump lets the completed send go anyway,
        // rather than at its next write, which may be days away.
        wait_for("the send buffer to be let go", || {
            !rig.pump.broker.with(|s| s.send_behind_held())
        })
        .await;
        rig.session.control.end(Ending::Force);
    });
}

#[test]
fn chunks_in_a_quiet_turn_or_too_large_are_written_at_once() {
    on_executor(|| async {
        let mut rig = Rig::new(|_, _| {}).await;
        rig.forward(&body_frame(100, b'q'), false).await;
        rig.forward(&body_frame(100, b'r'), false).await;
        assert_eq!(rig.ingress_writes(), (2, 2), "quiet turns");
        rig.forward(&body_frame(5000, b'l'), true).await;
        assert_eq!(rig.ingress_writes(), (3, 3), "a chunk above 4 KiB");
        rig.forward(&body_frame(100, b's'), true).await;
        assert_eq!(rig.ingress_writes(), (3, 4), "small, busy: queued");
        rig.session.control.end(Ending::Force);
    });
}

/// Fills the broker socket's way to the broker (small buffers, sends until
/// the kernel refuses more); gives how many bytes went in.
fn fill(broker: &TcpStream, broker_side: &TcpStream) -> usize {
    let fd = |s: &TcpStream| s.as_raw_fd();
    set_buffer(fd(broker), libc::SO_RCVBUF);
    set_buffer(fd(broker_side), libc::SO_SNDBUF);
    let chunk = body_frame(1000, b'f');
    let mut filled = 0;
    loop {
        // SAFETY: a send from a live buffer on a descriptor the stream owns.
        let sent = unsafe {
            libc::send(
                fd(broker_side),
                chunk.as_ptr().cast(),
                chunk.len(),
                libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL,
            )
        };
        match usize::try_from(sent) {
            Ok(n) if n == chunk.len() => filled += n,
            // A partial send would split a frame: keep whole frames only
            // by stopping at the first refusal or short count.
            Ok(n) => return filled + n,
            Err(_) => return filled,
        }
    }
}

fn set_buffer(fd: i32, option: libc::c_int) {
    let size: libc::c_int = 4096;
    // SAFETY: a socket option set from a live int on an open descriptor.
    let rc = unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            option,
            (&size as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    assert_eq!(rc, 0, "setsockopt");
}

#[test]
fn a_queued_write_the_broker_has_no_room_for_arrives_before_the_fin() {
    on_executor(|| async {
        let filled = std::rc::Rc::new(std::cell::Cell::new(0));
        let mut rig = Rig::new({
            let filled = Rc::clone(&filled);
            move |broker, broker_side| filled.set(fill(broker, broker_side))
        })
        .await;
        let filled = filled.get();
        assert!(filled > 0);
        // A partial frame may sit at the end of the fill: the scanner of
        // the pump never saw it, and the broker's end only compares bytes.
        let frame = body_frame(100, b'z');
        rig.client.write_all(&frame).await.unwrap();
        rig.neighbour.write_all(b"x").await.unwrap();
        // The pump queues the frame on the ring; the kernel cannot take it
        // while the broker is not reading.
        wait_for("the frame to be queued", || {
            rig.pump.broker.with(|s| s.send_behind_in_flight())
        })
        .await;
        // The client leaves: the ingress side reads the end of its stream
        // while its last write is still on its way.
        rig.client
            .shutdown(std::net::Shutdown::Write)
            .await
            .unwrap();
        wait_for("the pump to read the FIN", || {
            rig.pump.client.with(|s| s.peer_closed())
        })
        .await;
        // Only now does the broker read again.
        let mut got = Vec::new();
        with_timeout(DEADLINE, rig.broker.read_to_end(&mut got))
            .await
            .expect("the broker's stream ends in time")
            .unwrap();
        assert_eq!(got.len(), filled + frame.len(), "every byte, then the FIN");
        assert_eq!(&got[filled..], &frame[..]);
        assert_eq!(rig.ingress_writes(), (0, 1));
        let end = with_timeout(DEADLINE, rig.ingress)
            .await
            .expect("the ingress side ends");
        assert!(matches!(end, Some(DirectionEnd::Eof)), "{end:?}");
    });
}
