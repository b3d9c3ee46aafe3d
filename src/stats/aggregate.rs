//! The aggregator: one std thread that, every `--cleanupIntervalMs`, asks every
//! shard for what moved since its last answer, and builds the [`Snapshot`] the
//! outputs read (docs/statistics.md#aggregation).
//!
//! Shards answer with deltas (they remember what they reported), so a
//! session that reconnects or ends never produces a negative or doubled
//! count. A shard that is slow to answer is not waited for beyond a short
//! bound: its answer is merged at the next tick (nothing is lost), and its
//! last gauges stand in meanwhile. Also keeps the running totals per
//! (vhost, backend, source) that `/metrics` exposes; a series without any
//! session for [`SERIES_EXPIRY`] is forgotten so that client addresses
//! cannot grow it without bound. Never runs on a shard and never blocks one.

use super::process::{ProcessSampler, ThreadLoad};
use super::shard::ShardReport;
use super::statsd::StatsdSender;
use super::{Collector, Gauges, PoolClass, Series, ShardSummary, Snapshot, Stats, StatsHub};
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// A Prometheus series with no session for this long is dropped (its
/// counters restart from zero if it comes back, which `rate()` handles).
pub const SERIES_EXPIRY: Duration = Duration::from_secs(300);

/// (vhost, backend, source) as operators see them.
type SeriesKey = (String, String, String);

struct SeriesState {
    stats: Stats,
    last_seen: Instant,
}

/// The stats thread's state.
pub struct Aggregator {
    hub: Arc<StatsHub>,
    /// How each shard is asked, by index.
    shards_asked: Vec<Collector>,
    /// Size of one pump buffer (the pool's only size class).
    buffer_size: usize,
    /// A request a shard has not answered yet; no new one is sent until it
    /// does, and its answer counts whenever it comes.
    pending: Vec<Option<flume::Receiver<ShardReport>>>,
    /// Each shard's gauges at its last answer, for ticks it misses.
    last_gauges: Vec<Vec<(SeriesKey, Gauges)>>,
    shards: Vec<ShardSummary>,
    /// Each shard's thread id, from its first answer.
    threads: Vec<Option<i32>>,
    series: HashMap<SeriesKey, SeriesState>,
    pool_highest: u64,
    process: ProcessSampler,
    last_tick: Instant,
}

/// The backend key of the original: `<host-or-IP>_<port>`, `0.0.0.0_0`
/// before the broker connection exists (`_` because StatsD uses `:`).
pub fn backend_key(addr: Option<SocketAddr>) -> String {
    match addr {
        None => "0.0.0.0_0".to_string(),
        Some(a) => format!("{}_{}", host(a.ip()), a.port()),
    }
}

/// The host name once `MAPHOSTNAME DNS` resolved it, else the IP.
fn host(ip: IpAddr) -> String {
    crate::hostnames::hostname_for(ip).unwrap_or_else(|| ip.to_canonical().to_string())
}

impl Aggregator {
    pub fn new(hub: Arc<StatsHub>, shards_asked: Vec<Collector>, buffer_size: usize) -> Aggregator {
        let n = shards_asked.len();
        Aggregator {
            hub,
            shards_asked,
            buffer_size,
            pending: (0..n).map(|_| None).collect(),
            last_gauges: vec![Vec::new(); n],
            threads: vec![None; n],
            shards: (0..n)
                .map(|index| ShardSummary {
                    index,
                    ..Default::default()
                })
                .collect(),
            series: HashMap::new(),
            pool_highest: 0,
            process: ProcessSampler::default(),
            last_tick: Instant::now(),
        }
    }

    /// Asks every shard without a pending request, then waits up to `wait`
    /// for the answers.
    fn collect(&mut self, wait: Duration) -> Vec<ShardReport> {
        for (slot, ask) in self.pending.iter_mut().zip(&self.shards_asked) {
            if slot.is_none() {
                let (tx, rx) = flume::bounded(1);
                if ask(tx) {
                    *slot = Some(rx);
                }
            }
        }
        let deadline = Instant::now() + wait;
        let mut reports = Vec::with_capacity(self.pending.len());
        for slot in &mut self.pending {
            let Some(rx) = slot else { continue };
            match rx.recv_deadline(deadline) {
                Ok(report) => {
                    reports.push(report);
                    *slot = None;
                }
                Err(flume::RecvTimeoutError::Timeout) => {}
                // The shard is gone (the process is exiting).
                Err(flume::RecvTimeoutError::Disconnected) => *slot = None,
            }
        }
        reports
    }

    /// One tick: collect, group, roll up, keep the running totals.
    pub fn tick(&mut self, wait: Duration) -> Snapshot {
        let reports = self.collect(wait);
        let now = Instant::now();
        let interval = now.duration_since(self.last_tick);
        self.last_tick = now;
        let per_source = self.hub.per_source();

        let mut current: HashMap<SeriesKey, Stats> = HashMap::new();
        let mut answered = vec![false; self.shards.len()];
        for report in reports {
            let Some(summary) = self.shards.get_mut(report.shard) else {
                continue;
            };
            answered[report.shard] = true;
            summary.active = 0;
            summary.buffers_in_use = report.buffers_in_use;
            summary.buffers_peak = report.buffers_peak;
            summary.buffers_allocated = report.buffers_allocated;
            self.threads[report.shard] = Some(report.thread);
            let gauges = &mut self.last_gauges[report.shard];
            gauges.clear();
            for (key, stats) in report.groups {
                summary.active += stats.gauges.active;
                summary.received.add(&stats.received);
                summary.sent.add(&stats.sent);
                let source = if per_source {
                    host(key.source)
                } else {
                    String::new()
                };
                let key = (key.vhost, backend_key(key.backend), source);
                gauges.push((key.clone(), stats.gauges));
                current.entry(key).or_default().add(&stats);
            }
        }
        // Shards that did not answer in time keep their last gauges.
        for (shard, gauges) in self.last_gauges.iter().enumerate() {
            if answered[shard] {
                continue;
            }
            for (key, g) in gauges {
                let stats = Stats {
                    gauges: *g,
                    ..Default::default()
                };
                current.entry(key.clone()).or_default().add(&stats);
            }
        }

        let mut snapshot = Snapshot {
            interval,
            ..Default::default()
        };
        for ((vhost, backend, source), stats) in &current {
            snapshot.overall.add(stats);
            snapshot.vhosts.entry(vhost.clone()).or_default().add(stats);
            snapshot
                .backends
                .entry(backend.clone())
                .or_default()
                .add(stats);
            if per_source {
                snapshot
                    .sources
                    .entry(source.clone())
                    .or_default()
                    .add(stats);
            }
        }
        self.keep_totals(current, now);
        if let Some(registry) = self.hub.health() {
            snapshot.backend_health = registry
                .snapshot()
                .into_iter()
                .map(|(name, health)| super::BackendHealthView {
                    name,
                    state: health.counters.state.as_str(),
                    consecutive_failures: health.counters.consecutive_failures,
                    last_error: health
                        .last_error
                        .map(|e| format!("{} by {}", e.reason, e.observer)),
                })
                .collect();
        }
        snapshot.series = self.series();
        for (summary, thread) in self.shards.iter_mut().zip(&self.threads) {
            let times = thread.and_then(super::process::thread_times);
            summary.thread_load = match (summary.thread_times, times) {
                (Some(before), Some(after)) => Some(ThreadLoad::between(before, after, interval)),
                _ => None,
            };
            summary.thread_times = times;
        }
        snapshot.shards = self.shards.clone();
        let in_use: u64 = self.shards.iter().map(|s| s.buffers_in_use).sum();
        // Each shard's own high-water mark within the interval: a bound on
        // the process's (the shards' peaks need not coincide).
        let peak: u64 = self.shards.iter().map(|s| s.buffers_peak).sum();
        self.pool_highest = self.pool_highest.max(in_use).max(peak);
        snapshot.pool.classes = vec![PoolClass {
            size: self.buffer_size,
            current: in_use,
            highest: self.pool_highest,
        }];
        snapshot.process = self.process.sample();
        snapshot
    }

    /// Adds this tick's deltas to the running totals; gauges are replaced.
    fn keep_totals(&mut self, current: HashMap<SeriesKey, Stats>, now: Instant) {
        for state in self.series.values_mut() {
            state.stats.gauges = Gauges::default();
        }
        for (key, stats) in current {
            let state = self.series.entry(key).or_insert_with(|| SeriesState {
                stats: Stats::default(),
                last_seen: now,
            });
            state.last_seen = now;
            let gauges = stats.gauges;
            state.stats.add(&stats);
            state.stats.gauges = gauges;
        }
        self.series
            .retain(|_, s| now.duration_since(s.last_seen) < SERIES_EXPIRY);
    }

    fn series(&self) -> Vec<Series> {
        let mut all: Vec<Series> = self
            .series
            .iter()
            .map(|((vhost, backend, source), s)| Series {
                vhost: vhost.clone(),
                backend: backend.clone(),
                source: source.clone(),
                stats: s.stats,
            })
            .collect();
        all.sort_by(|a, b| {
            (&a.vhost, &a.backend, &a.source).cmp(&(&b.vhost, &b.backend, &b.source))
        });
        all
    }
}

/// Starts the stats thread: a tick every `interval`, each snapshot handed
/// to the StatsD publishers, the `STAT LISTEN` streams and `/metrics`.
pub fn spawn(
    hub: Arc<StatsHub>,
    shards_asked: Vec<Collector>,
    buffer_size: usize,
    interval: Duration,
) -> std::io::Result<()> {
    // Long enough for a busy shard to get to its inbox, short enough that
    // a stuck one does not stall the others' numbers.
    let wait = interval.clamp(Duration::from_millis(20), Duration::from_millis(500));
    std::thread::Builder::new()
        .name("stats".into())
        .spawn(move || {
            let mut aggregator = Aggregator::new(Arc::clone(&hub), shards_asked, buffer_size);
            let mut statsd = StatsdSender::default();
            let mut next = Instant::now() + interval;
            loop {
                let now = Instant::now();
                if next > now {
                    std::thread::sleep(next - now);
                }
                let snapshot = Arc::new(aggregator.tick(wait));
                statsd.send(&snapshot, &hub.publishers());
                hub.publish(snapshot);
                next += interval;
                let now = Instant::now();
                if next < now {
                    // Fell behind (a slow tick): start again from now rather
                    // than firing a burst of catch-up ticks.
                    next = now + interval;
                }
            }
        })?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stats::shard::GroupKey;

    fn report(shard: usize, vhost: &str, bytes: u64, active: u64) -> ShardReport {
        let mut stats = Stats::default();
        stats.received.bytes = bytes;
        stats.gauges.active = active;
        ShardReport {
            shard,
            groups: vec![(
                GroupKey {
                    vhost: vhost.into(),
                    backend: Some("192.0.2.7:5672".parse().unwrap()),
                    source: "192.0.2.9".parse().unwrap(),
                },
                stats,
            )],
            buffers_in_use: 1,
            buffers_peak: 1,
            buffers_allocated: 3,
            // No such thread: its times are unknown.
            thread: -1,
        }
    }

    /// An aggregator whose "shards" are answered by the test.
    fn aggregator(shards: usize) -> (Aggregator, Vec<flume::Receiver<flume::Sender<ShardReport>>>) {
        let (txs, rxs): (Vec<_>, Vec<_>) = (0..shards).map(|_| flume::unbounded()).unzip();
        let asked = txs
            .into_iter()
            .map(
                |tx: flume::Sender<flume::Sender<ShardReport>>| -> Collector {
                    Box::new(move |reply| tx.send(reply).is_ok())
                },
            )
            .collect();
        (
            Aggregator::new(Arc::new(StatsHub::default()), asked, 256 * 1024),
            rxs,
        )
    }

    fn answer(rx: &flume::Receiver<flume::Sender<ShardReport>>, r: ShardReport) {
        match rx.recv_timeout(Duration::from_secs(5)) {
            Ok(reply) => reply.send(r).unwrap(),
            _ => panic!("no collection request"),
        }
    }

    #[test]
    fn groups_roll_up_and_totals_run_on() {
        let (mut agg, rxs) = aggregator(2);
        let shard1 = rxs[1].clone();
        let t = std::thread::spawn(move || {
            // Answer shard 1 only after shard 0 is asked.
            std::thread::sleep(Duration::from_millis(5));
            answer(&shard1, report(1, "b", 7, 1));
        });
        // Shard 0 answers at once.
        let shard0 = rxs[0].clone();
        std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(1));
            answer(&shard0, report(0, "a", 10, 2));
        });
        let s = agg.tick(Duration::from_secs(2));
        t.join().unwrap();
        assert_eq!(s.overall.received.bytes, 17);
        assert_eq!(s.overall.gauges.active, 3);
        assert_eq!(s.vhosts["a"].received.bytes, 10);
        assert_eq!(s.backends["192.0.2.7_5672"].received.bytes, 17);
        // TEST-NET addresses: no reverse name even if another test enabled
        // MAPHOSTNAME in this process.
        assert_eq!(s.sources["192.0.2.9"].gauges.active, 3);
        assert_eq!(s.pool.classes[0].current, 2);
        assert_eq!(s.shards[1].active, 1);

        // Next tick: shard 0 moves 5 more, shard 1 is late.
        let shard0 = rxs[0].clone();
        std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(1));
            answer(&shard0, report(0, "a", 5, 2));
        });
        let s = agg.tick(Duration::from_millis(200));
        assert_eq!(s.overall.received.bytes, 5);
        // Shard 1's gauges stand in while it is late.
        assert_eq!(s.overall.gauges.active, 3);
        let a = s.series.iter().find(|x| x.vhost == "a").unwrap();
        assert_eq!(a.stats.received.bytes, 15);

        // Its late answer counts at the tick after, without a new request.
        answer(&rxs[1], report(1, "b", 4, 0));
        agg.hub.set_per_source(false);
        std::thread::spawn({
            let shard0 = rxs[0].clone();
            move || {
                std::thread::sleep(Duration::from_millis(1));
                answer(&shard0, report(0, "a", 0, 2));
            }
        });
        let s = agg.tick(Duration::from_millis(200));
        assert_eq!(s.vhosts["b"].received.bytes, 4);
        assert!(s.sources.is_empty());
        assert!(rxs[1].is_empty());
    }

    #[test]
    fn each_answering_shards_thread_times_are_read() {
        let (mut agg, rxs) = aggregator(2);
        let this_thread = crate::stats::process::current_thread();
        let shard0 = rxs[0].clone();
        std::thread::spawn(move || {
            let mut r = report(0, "a", 1, 1);
            r.thread = this_thread;
            answer(&shard0, r);
        });
        let s = agg.tick(Duration::from_millis(500));
        let times = s.shards[0]
            .thread_times
            .expect("shard 0's thread is this one");
        assert!(times.on_cpu_ns > 0);
        // One reading: no share of an interval yet.
        assert_eq!(s.shards[0].thread_load, None);
        // Shard 1 never answered: nothing is known of its thread.
        assert_eq!(s.shards[1].thread_times, None);
        // The next tick has two readings. This thread waited for shard 1
        // (asleep, not running) for most of the interval.
        let s = agg.tick(Duration::from_millis(500));
        let load = s.shards[0].thread_load.expect("two readings");
        assert!(load.cpu_percent < 50, "{load:?}");
        assert_eq!(s.shards[1].thread_load, None);
    }

    #[test]
    fn backend_keys_use_underscores() {
        assert_eq!(backend_key(None), "0.0.0.0_0");
        assert_eq!(
            backend_key(Some("10.0.0.1:5672".parse().unwrap())),
            "10.0.0.1_5672"
        );
    }
}
