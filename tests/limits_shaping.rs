//! Data shaping as shards run it, with real clocks and timers: two glommio
//! executors (two shards) pump an endless source for one vhost through the
//! shared limits, asking for an allowance before each "read" and sleeping
//! as told. Together they stay within the vhost's rate, and neither spins.
//! A live change of the limit reaches them mid-run. Needs no RabbitMQ.

use std::sync::Arc;
use std::time::{Duration, Instant};

use amqpprox::limits::{
    Allowance, DataShaper, Direction, LimitChange, LimitKind, LimitScope, Limits, SessionShaping,
    Stamp,
};
use glommio::{LocalExecutorBuilder, Placement};

const READ_BUFFER: usize = 64 * 1024;

/// What one shard moved, and how often it woke.
struct Run {
    bytes: u64,
    wakeups: u64,
}

/// Pumps for `length` on a new executor thread, as a shaped session's
/// ingress would: allowance, read (here: take the bytes), charge.
fn shard(limits: Arc<Limits>, length: Duration) -> std::thread::JoinHandle<Run> {
    std::thread::spawn(move || {
        LocalExecutorBuilder::new(Placement::Unbound)
            .io_memory(256 << 10)
            .ring_depth(64)
            .spawn(move || async move {
                let slot = limits
                    .admit("shaped", Stamp::from_instant(Instant::now()))
                    .outcome
                    .expect("no connection limit set");
                let shaper: DataShaper = slot.data_shaper(Arc::new(SessionShaping::default()));
                let end = Instant::now() + length;
                let mut run = Run {
                    bytes: 0,
                    wakeups: 0,
                };
                while Instant::now() < end {
                    run.wakeups += 1;
                    let now = Stamp::from_instant(Instant::now());
                    match shaper.allowance(Direction::ClientToBroker, now, READ_BUFFER) {
                        Allowance::Read(n) => {
                            shaper.charge(Direction::ClientToBroker, now, n);
                            run.bytes += n as u64;
                            glommio::yield_if_needed().await;
                        }
                        Allowance::Wait(d) => glommio::timer::sleep(d).await,
                    }
                }
                run
            })
            .expect("start an executor")
            .join()
            .expect("executor finished")
    })
}

fn set_rate(limits: &Limits, rate: u64) {
    limits
        .apply(&LimitChange::Set {
            kind: LimitKind::DataRate,
            scope: LimitScope::Vhost("shaped".into()),
            value: rate,
        })
        .unwrap();
}

#[test]
fn two_shards_share_one_vhost_rate_without_spinning() {
    let rate = 1_000_000u64;
    let limits = Arc::new(Limits::default());
    set_rate(&limits, rate);
    let length = Duration::from_secs(2);
    let started = Instant::now();
    let runs: Vec<Run> = [shard(limits.clone(), length), shard(limits.clone(), length)]
        .into_iter()
        .map(|t| t.join().unwrap())
        .collect();
    let elapsed = started.elapsed().as_secs_f64();
    let total: u64 = runs.iter().map(|r| r.bytes).sum();
    eprintln!(
        "shaped: {total} bytes in {elapsed:.3} s, wakeups {:?}",
        runs.iter().map(|r| r.wakeups).collect::<Vec<_>>()
    );
    // Never more than the rate over the run, plus one burst (100 ms) and
    // one read per shard.
    let ceiling = rate as f64 * (elapsed + 0.1) + 2.0 * READ_BUFFER as f64;
    assert!((total as f64) <= ceiling, "{total} bytes in {elapsed:.2} s");
    // And not starved: a loaded machine wakes late, so only 30% is asked
    // (about 100% is usual).
    assert!(
        total as f64 >= rate as f64 * length.as_secs_f64() * 0.3,
        "{total} bytes in {elapsed:.2} s"
    );
    for run in &runs {
        // 2 s of 25 ms read quanta is ~80 reads and as many waits per
        // shard; a spinning loop would wake millions of times.
        assert!(run.wakeups < 2_000, "{} wakeups", run.wakeups);
    }
}

#[test]
fn a_live_change_reaches_running_shards() {
    let limits = Arc::new(Limits::default());
    set_rate(&limits, 0);
    let runner = shard(limits.clone(), Duration::from_secs(2));
    // Rate 0 moves nothing; let the shard start waiting, then lift it.
    let deadline = Instant::now() + Duration::from_secs(30);
    while limits.live_connections("shaped") == 0 {
        assert!(
            Instant::now() < deadline,
            "the shard never admitted its session"
        );
        std::thread::sleep(Duration::from_millis(1));
    }
    set_rate(&limits, 10_000_000);
    let run = runner.join().unwrap();
    assert!(run.bytes > 0, "the raised rate never reached the shard");
    assert!(
        run.bytes as f64 <= 10_000_000.0 * 2.2 + READ_BUFFER as f64,
        "{} bytes",
        run.bytes
    );
}
