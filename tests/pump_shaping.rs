//! The pass-through pump under a data-rate limit, over real loopback
//! sockets on one glommio executor: a shaped direction moves its limit's
//! bytes per second and no more, the other direction is untouched, a limit
//! of 0 stops the reads (and the writer is held back by TCP, not by the
//! proxy's memory), and a live change reaches the running pump. Needs no
//! RabbitMQ: the two ends are the test's own sockets.

use std::cell::Cell;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use amqpprox::codec::FrameScanner;
use amqpprox::limits::{
    DataShaper, LimitChange, LimitKind, LimitScope, Limits, SessionShaping, Stamp,
};
use amqpprox::session::control::Ending;
use amqpprox::session::pool::BufferPool;
use amqpprox::session::pump::{Pump, SharedStream, PASS_THROUGH_MAX_FRAME};
use amqpprox::session::{SessionId, SessionInfo};
use futures_lite::{AsyncReadExt, AsyncWriteExt};
use glommio::net::TcpStream;
use glommio::{LocalExecutorBuilder, Placement};

#[path = "support/loopback.rs"]
mod loopback;
use loopback::{body_frame, pair};

const VHOST: &str = "shaped";

fn set(limits: &Limits, kind: LimitKind, value: Option<u64>) {
    let scope = LimitScope::Vhost(VHOST.into());
    let change = match value {
        Some(value) => LimitChange::Set { kind, scope, value },
        None => LimitChange::Disable { kind, scope },
    };
    limits.apply(&change).expect("a valid limit");
}

/// Runs `test` on a fresh executor with a pump between two socket pairs:
/// `test` gets the client's end, the broker's end, and the limits.
fn with_pump<F, Fut>(limits: Arc<Limits>, shaping: Arc<SessionShaping>, test: F)
where
    F: FnOnce(TcpStream, TcpStream, Arc<Limits>, Rc<SessionInfo>) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()> + 'static,
{
    LocalExecutorBuilder::new(Placement::Unbound)
        .spawn(move || async move {
            let (client, client_side) = pair().await;
            let (broker, broker_side) = pair().await;
            let slot = limits
                .admit(VHOST, Stamp::from_instant(Instant::now()))
                .outcome
                .expect("no connection limit is set");
            let shaper: DataShaper = slot.data_shaper(shaping);
            let session = Rc::new(SessionInfo::new(
                SessionId(1),
                "127.0.0.1:1".parse().unwrap(),
                "127.0.0.1:2".parse().unwrap(),
            ));
            let pump = Rc::new(
                Pump::new(
                    SharedStream::new(client_side),
                    SharedStream::new(broker_side),
                    BufferPool::new(),
                    Rc::clone(&session),
                    0,
                )
                .with_shaper(Some(shaper)),
            );
            let up = glommio::spawn_local({
                let pump = Rc::clone(&pump);
                async move {
                    let mut scanner = FrameScanner::new(PASS_THROUGH_MAX_FRAME);
                    pump.ingress(&mut scanner).await
                }
            });
            let down = glommio::spawn_local({
                let pump = Rc::clone(&pump);
                async move {
                    let mut scanner = FrameScanner::new(PASS_THROUGH_MAX_FRAME);
                    pump.egress(&mut scanner).await
                }
            });
            test(client, broker, limits, Rc::clone(&session)).await;
            // The pump's tasks end with the executor.
            session.control.end(Ending::Force);
            drop((up, down, slot));
        })
        .expect("start an executor")
        .join()
        .expect("the test ran to its end");
}

/// Writes frames to `to` without end; counts what was written.
fn flood<S: futures_lite::AsyncWrite + Unpin + 'static>(
    mut to: S,
    written: Rc<Cell<u64>>,
) -> glommio::task::JoinHandle<()> {
    glommio::spawn_local(async move {
        let frame = body_frame(16 * 1024, b'x');
        while to.write_all(&frame).await.is_ok() {
            written.set(written.get() + frame.len() as u64);
        }
    })
    .detach()
}

/// Reads from `from` until `deadline` (or its end); gives the bytes read.
async fn drain_until<S: futures_lite::AsyncRead + Unpin>(from: &mut S, deadline: Instant) -> u64 {
    let mut buf = vec![0u8; 64 * 1024];
    let mut total = 0u64;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return total;
        }
        match amqpprox::net::with_timeout(left, from.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) | Err(_) => return total,
            Ok(Ok(n)) => total += n as u64,
        }
    }
}

#[test]
fn each_direction_moves_its_vhosts_rate() {
    const RATE: u64 = 1_000_000;
    let limits = Arc::new(Limits::default());
    set(&limits, LimitKind::DataRate, Some(RATE));
    with_pump(
        limits,
        Arc::new(SessionShaping::default()),
        |client, broker, _limits, _session| async move {
            // Both ends flood and read at once: each direction has its own
            // budget of the vhost's rate.
            let (client_read, client_write) = futures_lite::io::split(client);
            let (broker_read, broker_write) = futures_lite::io::split(broker);
            let up_written = Rc::new(Cell::new(0));
            let down_written = Rc::new(Cell::new(0));
            let _up = flood(client_write, Rc::clone(&up_written));
            let _down = flood(broker_write, Rc::clone(&down_written));
            let at_broker = glommio::spawn_local(measure(broker_read));
            let at_client = glommio::spawn_local(measure(client_read));
            for (name, (warm, moved, secs), written) in [
                ("client to broker", at_broker.await, up_written),
                ("broker to client", at_client.await, down_written),
            ] {
                let rate = moved as f64 / secs;
                println!("{name}: {rate:.0} B/s over {secs:.2} s");
                assert!(
                    (0.9 * RATE as f64..=1.1 * RATE as f64).contains(&rate),
                    "{name}: measured {rate:.0} B/s over {secs:.2} s for a limit of {RATE}"
                );
                // TCP pushed back: the writer is not far ahead of the reader.
                assert!(
                    written.get() < warm + moved + (16 << 20),
                    "{name}: the writer got {} bytes ahead",
                    written.get() - warm - moved
                );
            }
        },
    );
}

/// Lets the first burst through, then measures over 5 s: (warm-up bytes,
/// measured bytes, measured seconds).
async fn measure(mut from: impl futures_lite::AsyncRead + Unpin) -> (u64, u64, f64) {
    let warm = drain_until(&mut from, Instant::now() + Duration::from_millis(500)).await;
    assert!(warm > 0, "nothing passed the pump in 500 ms");
    let start = Instant::now();
    let moved = drain_until(&mut from, start + Duration::from_secs(5)).await;
    (warm, moved, start.elapsed().as_secs_f64())
}

#[test]
fn rate_zero_stops_reading_and_a_live_change_resumes() {
    let limits = Arc::new(Limits::default());
    set(&limits, LimitKind::DataRate, Some(0));
    with_pump(
        limits,
        Arc::new(SessionShaping::default()),
        |mut client, mut broker, limits, _session| async move {
            let frame = body_frame(1000, b'x');
            client.write_all(&frame).await.expect("write a frame");
            // Polled for a second: nothing may pass at rate 0.
            let held = drain_until(&mut broker, Instant::now() + Duration::from_secs(1)).await;
            assert_eq!(held, 0, "bytes passed at rate 0");
            // Broker to client is shaped by the same vhost limit.
            broker.write_all(&frame).await.expect("broker writes");
            let held = drain_until(&mut client, Instant::now() + Duration::from_millis(500)).await;
            assert_eq!(held, 0, "bytes passed toward the client at rate 0");

            set(&limits, LimitKind::DataRate, None);
            let deadline = Instant::now() + Duration::from_secs(5);
            let mut got = 0;
            while got < frame.len() as u64 && Instant::now() < deadline {
                got += drain_until(&mut broker, Instant::now() + Duration::from_millis(100)).await;
            }
            assert_eq!(
                got,
                frame.len() as u64,
                "the held frame passed once unlimited"
            );
            let mut back = 0;
            while back < frame.len() as u64 && Instant::now() < deadline {
                back += drain_until(&mut client, Instant::now() + Duration::from_millis(100)).await;
            }
            assert_eq!(back, frame.len() as u64);
        },
    );
}

#[test]
fn a_sessions_own_limit_applies_live() {
    const RATE: u64 = 400_000;
    let shaping = Arc::new(SessionShaping::new(None));
    let limits = Arc::new(Limits::default());
    let handle = Arc::clone(&shaping);
    with_pump(
        limits,
        shaping,
        move |client, mut broker, _limits, _session| async move {
            let written = Rc::new(Cell::new(0));
            let _writer = flood(client, Rc::clone(&written));
            // Unlimited first: far more than the coming limit in 500 ms.
            let free = drain_until(&mut broker, Instant::now() + Duration::from_millis(500)).await;
            assert!(free > RATE, "only {free} bytes in 500 ms unlimited");
            handle.set_rate(Some(RATE));
            // What was in flight drains first; then the limit holds.
            drain_until(&mut broker, Instant::now() + Duration::from_millis(500)).await;
            let start = Instant::now();
            let moved = drain_until(&mut broker, start + Duration::from_secs(5)).await;
            let rate = moved as f64 / start.elapsed().as_secs_f64();
            assert!(
                (0.85 * RATE as f64..=1.15 * RATE as f64).contains(&rate),
                "measured {rate:.0} B/s for a session limit of {RATE}"
            );
        },
    );
}
