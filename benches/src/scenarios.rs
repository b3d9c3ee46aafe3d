//! The load scenarios against one running target: throughput (`large`,
//! `small`), `trickle` (one write per publish, with or without waiting for
//! each confirm), `connections` (also `connections-tls`, whose clients speak TLS
//! only when they go straight to the TLS broker), `latency` and `idle`,
//! each returning its
//! metrics, with the target process's CPU time and memory read around the
//! measured interval.
//!
//! Owns the load threads (plain std threads with blocking sockets: the load
//! side shares two cores with the proxy, so it does no more than write
//! pre-encoded buffers and wait for replies). Never starts or stops
//! processes (see `procs`), never prints tables (see `report`), and never
//! measures set-up: handshakes happen before the clock starts, except in
//! `connections`, where they are the work.

use crate::client::Session;
use crate::procs;
use amqpprox_testkit::load::frames;
use anyhow::{bail, Context, Result};
use rustls::ClientConfig;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicI32, AtomicUsize, Ordering};
use std::sync::{Arc, Barrier, Mutex};
use std::thread;
use std::time::{Duration, Instant};

/// Named values of one run, e.g. `"mb_per_s" -> 1234.5`.
pub type Metrics = BTreeMap<String, f64>;

/// Write batches of small messages up to about this many bytes.
const BATCH_BYTES: usize = 256 * 1024;
/// Stack of a load thread: it only holds a session and a few locals.
const LOAD_STACK: usize = 256 * 1024;

#[derive(Debug, Clone, Copy, serde::Serialize)]
pub struct Throughput {
    pub clients: usize,
    pub messages: usize,
    pub size: usize,
}

#[derive(Debug, Clone, Copy, serde::Serialize)]
pub struct Connections {
    pub total: usize,
    pub parallel: usize,
}

#[derive(Debug, Clone, Copy, serde::Serialize)]
pub struct Latency {
    pub round_trips: usize,
    pub size: usize,
}

/// The processes whose CPU and memory are read around a run: the target
/// (`None` for direct: there is no proxy) and the dummy broker (`None` with
/// RabbitMQ); the harness itself is always read.
#[derive(Debug, Clone, Copy)]
pub struct Probe {
    pub pid: Option<u32>,
    pub broker: Option<u32>,
}

/// CPU seconds used so far (or, after [`CpuSample::since`], during a run).
#[derive(Debug, Clone)]
pub struct CpuSample {
    pub target: Option<f64>,
    /// The part of `target` spent in user space.
    pub target_user: Option<f64>,
    /// Seconds the target's threads were ready to run but had no core
    /// (only over a run: from `schedstat`).
    pub target_waited: Option<f64>,
    pub broker: Option<f64>,
    pub harness: Option<f64>,
    /// The share of the machine's core time idle (only over a run): above
    /// a few percent, the load and the target were waiting on each other
    /// rather than filling the cores.
    pub idle_share: Option<f64>,
    /// Interrupts between the machine's CPUs ([`procs::wakeup_ipis`]): a
    /// count so far, or over a run after [`CpuSample::since`].
    pub ipis: Option<f64>,
    /// Exact run times of the target's and the broker's threads, which
    /// replace the tick counts of `target` and `broker` in a difference
    /// when the same threads lived through it (both keep their threads for
    /// their whole life). The harness's load threads come and go with each
    /// round, so its own figure stays in ticks.
    target_threads: Option<procs::ThreadRuntimes>,
    broker_threads: Option<procs::ThreadRuntimes>,
    machine: Option<procs::MachineTicks>,
}

impl CpuSample {
    pub fn since(&self, before: &CpuSample) -> CpuSample {
        let d = |a: Option<f64>, b: Option<f64>| Some(a? - b?);
        let exact = |a: &Option<procs::ThreadRuntimes>, b: &Option<procs::ThreadRuntimes>| {
            a.as_ref()?.since(b.as_ref()?)
        };
        let target_threads = exact(&self.target_threads, &before.target_threads);
        CpuSample {
            target: target_threads
                .map(|t| t.run)
                .or_else(|| d(self.target, before.target)),
            target_user: d(self.target_user, before.target_user),
            target_waited: target_threads.map(|t| t.waited),
            broker: exact(&self.broker_threads, &before.broker_threads)
                .map(|t| t.run)
                .or_else(|| d(self.broker, before.broker)),
            harness: d(self.harness, before.harness),
            idle_share: self
                .machine
                .as_ref()
                .zip(before.machine.as_ref())
                .and_then(|(now, then)| now.idle_share_since(then)),
            ipis: d(self.ipis, before.ipis),
            target_threads: None,
            broker_threads: None,
            machine: None,
        }
    }

    /// Records the three CPU times (`cpu_s` is the target's), the target's
    /// wait for a core and the machine's idle share.
    pub fn record(&self, m: &mut Metrics) {
        for (key, v) in [
            ("cpu_s", self.target),
            ("user_cpu_s", self.target_user),
            ("wait_s", self.target_waited),
            ("broker_cpu_s", self.broker),
            ("harness_cpu_s", self.harness),
            ("idle_share", self.idle_share),
            ("wakeup_ipis", self.ipis),
        ] {
            if let Some(v) = v {
                put(m, key, v);
            }
        }
    }

    /// Records CPU per unit of work for each process: `cpu_{suffix}`,
    /// `user_cpu_{suffix}` (the target's user space), `broker_cpu_{suffix}`,
    /// `harness_cpu_{suffix}` = seconds / `units`; and the target's wait
    /// for a core, `wait_{suffix}`; for a per-unit suffix (`us_per_msg`),
    /// the machine's interrupts between CPUs per unit (`ipis_per_msg`).
    pub fn record_per(&self, m: &mut Metrics, suffix: &str, units: f64) {
        if let (Some(key), Some(ipis)) = (ipis_key(suffix), self.ipis) {
            put(m, &key, ipis / (units * 1e6));
        }
        for (key, v) in [
            (format!("cpu_{suffix}"), self.target),
            (format!("user_cpu_{suffix}"), self.target_user),
            (format!("broker_cpu_{suffix}"), self.broker),
            (format!("harness_cpu_{suffix}"), self.harness),
            (format!("wait_{suffix}"), self.target_waited),
        ] {
            if let Some(v) = v {
                put(m, &key, v / units);
            }
        }
    }
}

impl Probe {
    pub fn cpu(&self) -> CpuSample {
        let read = |pid: Option<u32>| pid.and_then(|p| procs::cpu_seconds(p).ok());
        let threads = |pid: Option<u32>| pid.and_then(|p| procs::thread_runtimes(p).ok());
        let target = self.pid.and_then(|p| procs::cpu_times(p).ok());
        CpuSample {
            target: target.map(|(user, system)| user + system),
            target_user: target.map(|(user, _)| user),
            target_waited: None,
            broker: read(self.broker),
            harness: read(Some(std::process::id())),
            idle_share: None,
            ipis: procs::wakeup_ipis().ok().map(|n| n as f64),
            target_threads: threads(self.pid),
            broker_threads: threads(self.broker),
            machine: procs::machine_ticks().ok(),
        }
    }

    fn kib(&self, field: &str) -> Option<u64> {
        self.pid.and_then(|pid| procs::status_kib(pid, field).ok())
    }
}

/// The metric of interrupts between CPUs per unit of work that goes with
/// a CPU-per-unit suffix (`us_per_msg` → `ipis_per_msg`); `None` for a
/// suffix that is not per unit (`s_per_gb`).
pub fn ipis_key(suffix: &str) -> Option<String> {
    suffix
        .strip_prefix("us_")
        .map(|unit| format!("ipis_{unit}"))
}

fn put(m: &mut Metrics, key: &str, value: f64) {
    m.insert(key.to_string(), value);
}

fn spawn_load<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> thread::JoinHandle<T> {
    let nice = LOAD_NICE.load(Ordering::Relaxed);
    thread::Builder::new()
        .stack_size(LOAD_STACK)
        .spawn(move || {
            procs::lower_priority(nice).expect("lower a load thread's priority");
            f()
        })
        .expect("spawn a load thread")
}

/// The niceness of load threads (`--load-nice`): set per thread, so that
/// the targets this process starts keep the default priority.
static LOAD_NICE: AtomicI32 = AtomicI32::new(0);

/// Sets the niceness of the load threads spawned from now on.
pub fn set_load_nice(nice: i32) {
    LOAD_NICE.store(nice, Ordering::Relaxed);
}

/// C clients publish N messages of S bytes each; the clock runs from the
/// moment all are connected until the last `CloseOk`.
pub fn throughput(addr: SocketAddr, t: Throughput, probe: Probe) -> Result<Metrics> {
    // Framing adds well under 100 bytes to a small message.
    let per_batch = (BATCH_BYTES / (t.size + 100)).clamp(1, t.messages.max(1));
    let (batch, one_len) = frames::message_batch(t.size, per_batch);
    let batch = Arc::new(batch);
    let ready = Arc::new(Barrier::new(t.clients + 1));
    let go = Arc::new(Barrier::new(t.clients + 1));
    let handles: Vec<_> = (0..t.clients)
        .map(|_| {
            let (batch, ready, go) = (batch.clone(), ready.clone(), go.clone());
            spawn_load(move || -> Result<()> {
                // Always reach both barriers, even on error, so that the
                // other threads are not left waiting.
                let session = Session::open(addr);
                ready.wait();
                go.wait();
                let mut session = session?;
                let mut left = t.messages;
                while left > 0 {
                    let n = left.min(per_batch);
                    session.write(&batch[..n * one_len])?;
                    left -= n;
                }
                session.close()
            })
        })
        .collect();
    ready.wait();
    let cpu0 = probe.cpu();
    let t0 = Instant::now();
    go.wait();
    let results: Vec<Result<()>> = handles
        .into_iter()
        .map(|h| h.join().expect("load thread panicked"))
        .collect();
    let secs = t0.elapsed().as_secs_f64();
    let used = probe.cpu().since(&cpu0);
    for r in results {
        r.context("publisher")?;
    }
    let messages = (t.clients * t.messages) as f64;
    let bytes = messages * t.size as f64;
    let mut m = Metrics::new();
    put(&mut m, "secs", secs);
    put(&mut m, "mb_per_s", bytes / 1e6 / secs);
    put(&mut m, "msgs_per_s", messages / secs);
    used.record(&mut m);
    used.record_per(&mut m, "s_per_gb", bytes / 1e9);
    used.record_per(&mut m, "us_per_msg", messages / 1e6);
    Ok(m)
}

/// Trickle traffic: C clients each publish N messages of S bytes with one
/// `write` per message, as pika, the Java and the Go clients do (each
/// publish leaves as its own small segment, so the target wakes for each
/// rather than reading a batch). With `confirm`, channel 1 is in confirm
/// mode and each client waits for every message's `Basic.Ack` before the
/// next (pika's `BlockingConnection`: one confirm in flight). The clock runs
/// from the moment all are connected until the last `CloseOk`.
pub fn trickle(addr: SocketAddr, t: Throughput, confirm: bool, probe: Probe) -> Result<Metrics> {
    let (one, _) = frames::message_batch(t.size, 1);
    let one = Arc::new(one);
    let ready = Arc::new(Barrier::new(t.clients + 1));
    let go = Arc::new(Barrier::new(t.clients + 1));
    let handles: Vec<_> = (0..t.clients)
        .map(|_| {
            let (one, ready, go) = (one.clone(), ready.clone(), go.clone());
            spawn_load(move || -> Result<()> {
                // Both barriers are always reached, as in `throughput`.
                let session = Session::open(addr).and_then(|mut s| {
                    if confirm {
                        s.select_confirms()?;
                    }
                    Ok(s)
                });
                ready.wait();
                go.wait();
                let mut session = session?;
                for _ in 0..t.messages {
                    if confirm {
                        session.publish_confirmed(&one)?;
                    } else {
                        session.write(&one)?;
                    }
                }
                session.close()
            })
        })
        .collect();
    ready.wait();
    let cpu0 = probe.cpu();
    let t0 = Instant::now();
    go.wait();
    let results: Vec<Result<()>> = handles
        .into_iter()
        .map(|h| h.join().expect("load thread panicked"))
        .collect();
    let secs = t0.elapsed().as_secs_f64();
    let used = probe.cpu().since(&cpu0);
    for r in results {
        r.context("trickle publisher")?;
    }
    let messages = (t.clients * t.messages) as f64;
    let mut m = Metrics::new();
    put(&mut m, "secs", secs);
    put(&mut m, "msgs_per_s", messages / secs);
    put(&mut m, "mb_per_s", messages * t.size as f64 / 1e6 / secs);
    used.record(&mut m);
    used.record_per(&mut m, "us_per_msg", messages / 1e6);
    Ok(m)
}

/// K connections, P at a time, each: handshake, channel, one tiny message,
/// close; over TLS with `tls`. Also how long each took to open (p50 and
/// p99, connect to `OpenOk`) and the target's peak RSS (VmHWM) at the end.
pub fn connections(
    addr: SocketAddr,
    c: Connections,
    tls: Option<Arc<ClientConfig>>,
    probe: Probe,
) -> Result<Metrics> {
    let (tiny, _) = frames::message_batch(16, 1);
    let tiny = Arc::new(tiny);
    let next = Arc::new(AtomicUsize::new(0));
    let first_error: Arc<Mutex<Option<String>>> = Arc::default();
    let cpu0 = probe.cpu();
    let t0 = Instant::now();
    let handles: Vec<_> = (0..c.parallel.min(c.total))
        .map(|_| {
            let (tiny, next, first_error) = (tiny.clone(), next.clone(), first_error.clone());
            let tls = tls.clone();
            spawn_load(move || {
                let (mut opened, mut failed) = (Vec::new(), 0usize);
                while next.fetch_add(1, Ordering::Relaxed) < c.total {
                    let start = Instant::now();
                    let session = Session::open_with(addr, tls.as_ref());
                    // From the connect to the OpenOk: what a client waits
                    // before it can publish.
                    let open_ns = start.elapsed().as_nanos() as u64;
                    match session.and_then(|mut s| s.close_with(&tiny)) {
                        Ok(()) => opened.push(open_ns),
                        Err(e) => {
                            failed += 1;
                            first_error
                                .lock()
                                .expect("error slot")
                                .get_or_insert_with(|| format!("{e:#}"));
                        }
                    }
                }
                (opened, failed)
            })
        })
        .collect();
    let (mut opened, mut failed) = (Vec::with_capacity(c.total), 0);
    for handle in handles {
        let (times, fails) = handle.join().expect("load thread panicked");
        opened.extend(times);
        failed += fails;
    }
    let ok = opened.len();
    let secs = t0.elapsed().as_secs_f64();
    let used = probe.cpu().since(&cpu0);
    if let Some(e) = first_error.lock().expect("error slot").take() {
        eprintln!(
            "  warning: {failed} of {} connections failed; first: {e}",
            c.total
        );
        if ok == 0 {
            bail!("every connection failed: {e}");
        }
    }
    let mut m = Metrics::new();
    put(&mut m, "secs", secs);
    put(&mut m, "conns_per_s", ok as f64 / secs);
    put(&mut m, "errors", failed as f64);
    opened.sort_unstable();
    put(
        &mut m,
        "open_p50_us",
        percentile(&opened, 0.50) as f64 / 1e3,
    );
    put(
        &mut m,
        "open_p99_us",
        percentile(&opened, 0.99) as f64 / 1e3,
    );
    used.record(&mut m);
    used.record_per(&mut m, "us_per_conn", ok as f64 / 1e6);
    if let Some(hwm) = probe.kib("VmHWM") {
        put(&mut m, "peak_rss_mb", hwm as f64 / 1024.0);
    }
    Ok(m)
}

/// One message at a time through the echo broker.
pub fn latency(addr: SocketAddr, l: Latency, probe: Probe) -> Result<Metrics> {
    let mut session = Session::open(addr)?;
    let (msg, _) = frames::message_batch(l.size, 1);
    let mut scratch = vec![0u8; msg.len()];
    for _ in 0..(l.round_trips / 10).clamp(10, 1000) {
        session.round_trip(&msg, &mut scratch)?;
    }
    let mut samples: Vec<u64> = Vec::with_capacity(l.round_trips);
    let cpu0 = probe.cpu();
    let t0 = Instant::now();
    for _ in 0..l.round_trips {
        let start = Instant::now();
        session.round_trip(&msg, &mut scratch)?;
        samples.push(start.elapsed().as_nanos() as u64);
    }
    let secs = t0.elapsed().as_secs_f64();
    let used = probe.cpu().since(&cpu0);
    session.close()?;
    samples.sort_unstable();
    let us = |p: f64| percentile(&samples, p) as f64 / 1e3;
    let mut m = Metrics::new();
    put(&mut m, "secs", secs);
    put(&mut m, "p50_us", us(0.50));
    put(&mut m, "p99_us", us(0.99));
    put(&mut m, "p999_us", us(0.999));
    put(&mut m, "mean_us", secs * 1e6 / l.round_trips as f64);
    used.record(&mut m);
    used.record_per(&mut m, "us_per_rt", l.round_trips as f64 / 1e6);
    Ok(m)
}

/// The value at quantile `p` of sorted `samples` (nearest rank).
pub fn percentile(samples: &[u64], p: f64) -> u64 {
    if samples.is_empty() {
        return 0;
    }
    let rank = (p * samples.len() as f64).ceil() as usize;
    samples[rank.clamp(1, samples.len()) - 1]
}

/// M established sessions held open: the target's VmRSS before and after,
/// per session.
pub fn idle(addr: SocketAddr, sessions: usize, probe: Probe) -> Result<Metrics> {
    let Some(rss0) = probe.kib("VmRSS") else {
        bail!("idle needs a target process to measure");
    };
    let threads = sessions.clamp(1, 16);
    let opened = Arc::new(Barrier::new(threads + 1));
    let release = Arc::new(Barrier::new(threads + 1));
    let cpu0 = probe.cpu();
    let t0 = Instant::now();
    let handles: Vec<_> = (0..threads)
        .map(|i| {
            let share = sessions / threads + usize::from(i < sessions % threads);
            let (opened, release) = (opened.clone(), release.clone());
            spawn_load(move || -> Result<usize> {
                let mut held = Vec::with_capacity(share);
                let mut result = Ok(());
                for _ in 0..share {
                    match Session::open(addr) {
                        Ok(s) => held.push(s),
                        Err(e) => {
                            result = Err(e);
                            break;
                        }
                    }
                }
                opened.wait();
                release.wait();
                result.map(|()| held.len())
            })
        })
        .collect();
    opened.wait();
    let open_secs = t0.elapsed().as_secs_f64();
    let used = probe.cpu().since(&cpu0);
    // Let the target finish any work the last handshakes left behind.
    thread::sleep(Duration::from_millis(500));
    let rss1 = probe.kib("VmRSS");
    release.wait();
    let mut held = 0;
    for h in handles {
        held += h
            .join()
            .expect("load thread panicked")
            .context("idle session")?;
    }
    let rss1 = rss1.context("target exited while holding sessions")?;
    let mut m = Metrics::new();
    put(&mut m, "open_secs", open_secs);
    put(&mut m, "sessions", held as f64);
    put(&mut m, "rss_before_kib", rss0 as f64);
    put(&mut m, "rss_after_kib", rss1 as f64);
    put(
        &mut m,
        "kib_per_session",
        (rss1 as f64 - rss0 as f64) / held as f64,
    );
    used.record(&mut m);
    used.record_per(&mut m, "us_per_session", held as f64 / 1e6);
    Ok(m)
}

#[cfg(test)]
mod tests {
    use super::percentile;

    #[test]
    fn nearest_rank_percentiles() {
        let s: Vec<u64> = (1..=1000).collect();
        assert_eq!(percentile(&s, 0.5), 500);
        assert_eq!(percentile(&s, 0.99), 990);
        assert_eq!(percentile(&s, 0.999), 999);
        assert_eq!(percentile(&[7], 0.999), 7);
        assert_eq!(percentile(&[], 0.5), 0);
    }
}

/// The load side against the dummy broker, in-process: proves the client
/// and the broker agree on every byte (handshake, publish, echo, close).
#[cfg(test)]
mod end_to_end {
    use super::*;
    use amqpprox_testkit::load::broker::Mode;

    fn broker(mode: Mode) -> SocketAddr {
        broker_with(mode, None, Duration::ZERO)
    }

    fn broker_with(
        mode: Mode,
        tls_dir: Option<std::path::PathBuf>,
        link_delay: Duration,
    ) -> SocketAddr {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        thread::spawn(move || crate::run_broker(port, mode, 1, tls_dir.as_deref(), link_delay));
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        amqpprox_testkit::wait::wait_for(
            Duration::from_secs(10),
            "the dummy broker to listen",
            || std::net::TcpStream::connect(addr).is_ok(),
        );
        addr
    }

    const NO_PROBE: Probe = Probe {
        pid: None,
        broker: None,
    };

    #[test]
    fn interrupts_between_cpus_are_counted_per_unit_of_work() {
        let so_far = |ipis: f64| CpuSample {
            target: None,
            target_user: None,
            target_waited: None,
            broker: None,
            harness: None,
            idle_share: None,
            ipis: Some(ipis),
            target_threads: None,
            broker_threads: None,
            machine: None,
        };
        let run = so_far(1_500.0).since(&so_far(500.0));
        let mut m = Metrics::new();
        run.record(&mut m);
        // 500 messages (units are millions), and the same run per GB.
        run.record_per(&mut m, "us_per_msg", 500.0 / 1e6);
        run.record_per(&mut m, "s_per_gb", 0.5);
        assert_eq!(m["wakeup_ipis"], 1000.0);
        assert!((m["ipis_per_msg"] - 2.0).abs() < 1e-9, "{m:?}");
        let per_unit: Vec<&String> = m.keys().filter(|k| k.starts_with("ipis_")).collect();
        assert_eq!(per_unit, ["ipis_per_msg"], "none per GB");
    }

    #[test]
    fn publish_connect_idle_and_ping_pong() {
        let sink = broker(Mode::Discard);
        let t = Throughput {
            clients: 3,
            messages: 500,
            size: 300_000,
        };
        let m = throughput(sink, t, NO_PROBE).unwrap();
        assert!(m["msgs_per_s"] > 0.0);
        let m = connections(
            sink,
            Connections {
                total: 50,
                parallel: 5,
            },
            None,
            NO_PROBE,
        )
        .unwrap();
        assert_eq!(m["errors"], 0.0);
        // Read from /proc/interrupts around the run, with or without a target.
        assert!(m.get("ipis_per_conn").is_some_and(|v| *v >= 0.0), "{m:?}");
        assert!(
            idle(sink, 3, NO_PROBE).is_err(),
            "idle needs a process to weigh"
        );

        let t = Throughput {
            clients: 2,
            messages: 300,
            size: 1024,
        };
        let m = trickle(sink, t, false, NO_PROBE).unwrap();
        assert!(m["msgs_per_s"] > 0.0);
        let confirming = broker(Mode::Confirm);
        let m = trickle(confirming, t, true, NO_PROBE).unwrap();
        assert!(m["msgs_per_s"] > 0.0);

        let echo = broker(Mode::Echo);
        let m = latency(
            echo,
            Latency {
                round_trips: 200,
                size: 200_000,
            },
            NO_PROBE,
        )
        .unwrap();
        assert!(m["p50_us"] > 0.0 && m["p50_us"] <= m["p999_us"]);
    }

    #[test]
    fn a_remote_brokers_connections_take_three_round_trips_of_its_link_to_open() {
        let one_way = Duration::from_millis(25);
        let addr = broker_with(Mode::Discard, None, one_way);
        let c = Connections {
            total: 6,
            parallel: 2,
        };
        let m = connections(addr, c, None, NO_PROBE).unwrap();
        assert_eq!(m["errors"], 0.0);
        // Header, StartOk and TuneOk + Open each wait for the answer.
        let floor_us = 6.0 * one_way.as_micros() as f64;
        assert!(m["open_p50_us"] >= floor_us, "{m:?}");
        assert!(m["open_p50_us"] <= m["open_p99_us"], "{m:?}");
    }

    #[test]
    fn a_delayed_link_is_refused_in_front_of_a_tls_broker() {
        let dir = std::env::temp_dir().join(format!("amqpprox-bench-link-{}", std::process::id()));
        let delay = Duration::from_millis(1);
        // Refused before the broker binds its port.
        let err = crate::run_broker(1, Mode::Discard, 1, Some(&dir), delay).unwrap_err();
        assert!(format!("{err:#}").contains("plain broker"), "{err:#}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn connections_over_tls_to_the_broker() {
        let dir = std::env::temp_dir().join(format!("amqpprox-bench-e2e-{}", std::process::id()));
        let addr = broker_with(Mode::Discard, Some(dir.clone()), Duration::ZERO);
        let config = crate::tls::client_config(&crate::tls::ca_file(&dir)).unwrap();
        let c = Connections {
            total: 20,
            parallel: 4,
        };
        let m = connections(addr, c, Some(config), NO_PROBE).unwrap();
        assert_eq!(m["errors"], 0.0);
        assert!(
            connections(addr, c, None, NO_PROBE).is_err(),
            "plain AMQP must not pass a TLS broker"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
