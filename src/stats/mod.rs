//! Statistics and observability: what sessions count, how one snapshot per
//! `--cleanupIntervalMs` is built from every shard, and the outputs that read
//! it (`STAT LISTEN` JSON and human, StatsD, Prometheus), plus the selective
//! `TRACE` of AMQP methods (docs/statistics.md#removal-causes,
//! docs/statistics.md#what-a-session-counts, docs/statistics.md#prometheus,
//! docs/logging.md#tracing).
//!
//! Flow: sessions count into `Cell`s written only by their shard; each tick
//! the aggregator thread asks every shard through a [`Collector`] (the
//! shard's inbox, wired by the supervisor); the shard answers with
//! what moved since its previous answer, grouped by (vhost, backend,
//! source), including the sessions that ended meanwhile (counted at their
//! end, since a finished session leaves the table at once). The aggregator
//! turns the answers into one immutable [`Snapshot`] that the listeners, the
//! StatsD publishers and `/metrics` read. Pulling (rather than shards
//! pushing) keeps one clock for every shard and costs an idle shard nothing
//! between ticks.
//!
//! Nothing here runs on the data path except the shard-side hooks in
//! [`shard`] and [`trace`], which only read and write shard-local cells; no
//! lock and no allocation per frame. This module never imports the shard or
//! session modules: they hand it plain values ([`shard::SessionSample`],
//! [`ShardReport`]) that it owns.

pub mod aggregate;
pub mod format;
pub mod http;
pub mod process;
pub mod prometheus;
pub mod shard;
pub mod statsd;
pub mod trace;

use arc_swap::ArcSwapOption;
use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

pub use format::{Filter, Format};
pub use shard::{ShardReport, ShardStats};

/// Process-wide id of a session, unique across shards, never reused; shown
/// as its number in log lines, `CONN` and `TRACE`. Defined here, below the
/// session module, because statistics and traces name sessions too.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, serde::Serialize)]
#[serde(transparent)]
pub struct SessionId(pub u64);

impl fmt::Display for SessionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, f)
    }
}

impl std::str::FromStr for SessionId {
    type Err = std::num::ParseIntError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        s.parse().map(SessionId)
    }
}

/// Which way bytes move.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// Client → broker.
    Ingress,
    /// Broker → client.
    Egress,
}

/// How the aggregator asks one shard for its [`ShardReport`]: hands it the
/// reply channel; `false` once the shard is gone.
pub type Collector = Box<dyn Fn(flume::Sender<ShardReport>) -> bool + Send>;

/// What one direction of traffic moved: cumulative on a session, a delta
/// per interval in a snapshot, a running total in a Prometheus series.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct DirectionTotals {
    pub bytes: u64,
    pub frames: u64,
    /// Reads that carried data (the original's "packets").
    pub packets: u64,
    /// Completed pass-through writes and the time they took.
    pub writes: u64,
    pub latency_ns: u64,
}

impl DirectionTotals {
    /// What moved between `earlier` and `self` (never negative).
    pub fn since(self, earlier: DirectionTotals) -> DirectionTotals {
        DirectionTotals {
            bytes: self.bytes.saturating_sub(earlier.bytes),
            frames: self.frames.saturating_sub(earlier.frames),
            packets: self.packets.saturating_sub(earlier.packets),
            writes: self.writes.saturating_sub(earlier.writes),
            latency_ns: self.latency_ns.wrapping_sub(earlier.latency_ns),
        }
    }

    pub fn add(&mut self, o: &DirectionTotals) {
        self.bytes += o.bytes;
        self.frames += o.frames;
        self.packets += o.packets;
        self.writes += o.writes;
        self.latency_ns = self.latency_ns.wrapping_add(o.latency_ns);
    }

    /// Mean write latency in milliseconds, if any write completed.
    pub fn avg_latency_ms(&self) -> Option<f64> {
        (self.writes > 0).then(|| self.latency_ns as f64 / self.writes as f64 / 1e6)
    }
}

/// Point-in-time counts of sessions.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Gauges {
    pub paused: u64,
    pub active: u64,
    pub auth_denied: u64,
    pub limited: u64,
}

/// Sessions removed, by cause (docs/statistics.md#removal-causes).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Removed {
    /// An AMQP close the client or the operator started completed.
    pub graceful: u64,
    /// The broker closed (its socket ended first, or it sent the Close).
    pub broker: u64,
    /// The client's socket ended first, without an AMQP close.
    pub client: u64,
    /// The proxy ended it: forced disconnect, refusal, protocol error.
    pub proxy: u64,
}

impl Removed {
    pub fn add(&mut self, o: &Removed) {
        self.graceful += o.graceful;
        self.broker += o.broker;
        self.client += o.client;
        self.proxy += o.proxy;
    }
}

/// One stats object (docs/statistics.md#aggregation): gauges now, the rest per
/// interval in a snapshot's groupings or since start in a Prometheus series.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Stats {
    pub gauges: Gauges,
    pub removed: Removed,
    /// Client → broker (ingress).
    pub received: DirectionTotals,
    /// Broker → client (egress).
    pub sent: DirectionTotals,
}

impl Stats {
    pub fn add(&mut self, o: &Stats) {
        self.gauges.paused += o.gauges.paused;
        self.gauges.active += o.gauges.active;
        self.gauges.auth_denied += o.gauges.auth_denied;
        self.gauges.limited += o.gauges.limited;
        self.removed.add(&o.removed);
        self.received.add(&o.received);
        self.sent.add(&o.sent);
    }
}

/// CPU and memory of the process.
#[derive(Debug, Default, Clone, Copy, PartialEq)]
pub struct ProcessStats {
    /// Percent of one core over the last second (rounded).
    pub cpu_user: u64,
    pub cpu_system: u64,
    /// CPU time since start.
    pub cpu_user_seconds: f64,
    pub cpu_system_seconds: f64,
    /// Resident set size now, in KiB.
    pub rss_kb: u64,
    /// Log records dropped because the log writer could not keep up.
    pub log_dropped: u64,
}

/// One size class of the buffer pools, summed over shards.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct PoolClass {
    pub size: usize,
    /// Buffers lent out now.
    pub current: u64,
    /// The most lent out at any tick so far.
    pub highest: u64,
}

#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct PoolStats {
    /// Allocations that bypassed the pool (this pool never does).
    pub spill_to_heap: u64,
    pub classes: Vec<PoolClass>,
}

/// One shard's share, to see imbalance.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct ShardSummary {
    pub index: usize,
    /// Sessions in the shard's table that are not disconnected.
    pub active: u64,
    /// Traffic since start.
    pub received: DirectionTotals,
    pub sent: DirectionTotals,
    pub buffers_in_use: u64,
    /// The most buffers lent out at once during the last interval.
    pub buffers_peak: u64,
    pub buffers_allocated: u64,
    /// The shard thread's time on a CPU and waiting for one, since it
    /// started; `None` until it answered or where the kernel keeps no
    /// `schedstat`.
    pub thread_times: Option<process::ThreadTimes>,
    /// The shard thread's share of one core since the previous tick;
    /// `None` until two readings exist.
    pub thread_load: Option<process::ThreadLoad>,
}

/// A Prometheus series: one (vhost, backend, source) with its gauges now
/// and its counters since the series appeared.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Series {
    pub vhost: String,
    pub backend: String,
    /// Empty while per-source collection is disabled.
    pub source: String,
    pub stats: Stats,
}

/// Everything one tick produced; immutable once built.
#[derive(Debug, Default, Clone)]
pub struct Snapshot {
    /// Time since the previous tick: "/s" rates divide by it (Fix 7).
    pub interval: Duration,
    pub overall: Stats,
    pub vhosts: BTreeMap<String, Stats>,
    pub backends: BTreeMap<String, Stats>,
    /// Empty while per-source collection is disabled.
    pub sources: BTreeMap<String, Stats>,
    pub process: ProcessStats,
    pub pool: PoolStats,
    pub shards: Vec<ShardSummary>,
    pub series: Vec<Series>,
    /// Each configured backend's health, by name (docs/reliability.md#health-checks).
    pub backend_health: Vec<BackendHealthView>,
}

/// One backend's health as `STAT` shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackendHealthView {
    pub name: String,
    /// `unknown`, `up` or `down`.
    pub state: &'static str,
    pub consecutive_failures: u32,
    /// The last failure's text and who saw it (`probe` or `session`).
    pub last_error: Option<String>,
}

/// One `STAT LISTEN` stream.
struct Listener {
    format: Format,
    filter: Filter,
    tx: flume::Sender<String>,
}

/// Records a listener may lag behind before it misses some: a control
/// client that stops reading must not make the aggregator hold memory.
const LISTENER_BACKLOG: usize = 64;

/// One configured backend's operator state, for `/metrics`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackendState {
    pub name: String,
    /// `BACKEND DRAIN`: new sessions avoid it, its sessions were moved.
    pub drained: bool,
}

/// What the control thread, the aggregator and the metrics server share.
pub struct StatsHub {
    listeners: Mutex<Vec<Listener>>,
    publishers: Mutex<Vec<SocketAddr>>,
    per_source: AtomicBool,
    latest: ArcSwapOption<Snapshot>,
    /// The `TRACE` filter in force, for `TRACE PRINT`.
    pub trace: Mutex<Option<trace::TraceFilter>>,
    /// Size of one pump buffer, for `/metrics` (set at start).
    buffer_size: AtomicUsize,
    /// Backends' health, appended to `/metrics` (set at start).
    health: std::sync::OnceLock<std::sync::Arc<crate::health::HealthRegistry>>,
    /// Every configured backend, set by the control thread on each change.
    backends: Mutex<Vec<BackendState>>,
}

impl Default for StatsHub {
    fn default() -> Self {
        StatsHub {
            listeners: Mutex::new(Vec::new()),
            publishers: Mutex::new(Vec::new()),
            // Per-source collection is on at start, as in the original.
            per_source: AtomicBool::new(true),
            latest: ArcSwapOption::empty(),
            trace: Mutex::new(None),
            buffer_size: AtomicUsize::new(0),
            health: std::sync::OnceLock::new(),
            backends: Mutex::new(Vec::new()),
        }
    }
}

impl StatsHub {
    /// Gives `/metrics` the backends' health (once, at start).
    pub fn set_health(&self, registry: std::sync::Arc<crate::health::HealthRegistry>) {
        let _ = self.health.set(registry);
    }

    pub fn health(&self) -> Option<&crate::health::HealthRegistry> {
        self.health.get().map(|r| &**r)
    }

    /// A new stream of rendered records, one per tick, until the receiver
    /// is dropped.
    pub fn listen(&self, format: Format, filter: Filter) -> flume::Receiver<String> {
        let (tx, rx) = flume::bounded(LISTENER_BACKLOG);
        lock(&self.listeners).push(Listener { format, filter, tx });
        rx
    }

    pub fn add_publisher(&self, addr: SocketAddr) {
        lock(&self.publishers).push(addr);
    }

    pub fn stop_publishers(&self) {
        lock(&self.publishers).clear();
    }

    pub fn publishers(&self) -> Vec<SocketAddr> {
        lock(&self.publishers).clone()
    }

    pub fn set_per_source(&self, on: bool) {
        self.per_source.store(on, Ordering::Relaxed);
    }

    /// Size of one pump buffer, as given to [`start`].
    pub fn buffer_size(&self) -> usize {
        self.buffer_size.load(Ordering::Relaxed)
    }

    pub fn per_source(&self) -> bool {
        self.per_source.load(Ordering::Relaxed)
    }

    /// Records the configured backends and their states (the control
    /// thread, after a change).
    pub fn set_backends(&self, backends: Vec<BackendState>) {
        *lock(&self.backends) = backends;
    }

    pub fn backends(&self) -> Vec<BackendState> {
        lock(&self.backends).clone()
    }

    /// The last snapshot, if a tick has happened.
    pub fn latest(&self) -> Option<Arc<Snapshot>> {
        self.latest.load_full()
    }

    /// Hands a new snapshot to every listener and keeps it for `/metrics`.
    /// Listeners whose client went away are dropped; one that lags misses
    /// records rather than growing a queue.
    pub fn publish(&self, snapshot: Arc<Snapshot>) {
        lock(&self.listeners).retain(|l| {
            let text = format::render(&snapshot, l.format, &l.filter);
            !matches!(
                l.tx.try_send(text),
                Err(flume::TrySendError::Disconnected(_))
            )
        });
        self.latest.store(Some(snapshot));
    }

    /// Listeners still subscribed (for tests and logs).
    pub fn listener_count(&self) -> usize {
        lock(&self.listeners).len()
    }
}

/// A poisoned lock only means a panic elsewhere; the data is still usable.
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Starts the aggregator thread (and the metrics server when a port is
/// given). Fails only when the metrics port cannot be bound.
/// `buffer_size` is the size of one pump buffer (the pool's only class).
pub fn start(
    hub: Arc<StatsHub>,
    shards: Vec<Collector>,
    buffer_size: usize,
    interval: Duration,
    metrics_port: Option<u16>,
) -> std::io::Result<()> {
    hub.buffer_size.store(buffer_size, Ordering::Relaxed);
    if let Some(port) = metrics_port {
        http::serve(port, Arc::clone(&hub))?;
    }
    aggregate::spawn(hub, shards, buffer_size, interval)
}

/// Two shards for the outputs' tests: shard 0 with 3 sessions, 1.5 s on a
/// CPU and 0.25 s waiting since start, 72% of a core and 30% waiting over
/// the last interval; shard 1 before any reading of its thread.
#[cfg(test)]
pub(crate) fn two_shards_one_loaded() -> Vec<ShardSummary> {
    vec![
        ShardSummary {
            index: 0,
            active: 3,
            thread_times: Some(process::ThreadTimes {
                on_cpu_ns: 1_500_000_000,
                run_delay_ns: 250_000_000,
            }),
            thread_load: Some(process::ThreadLoad {
                cpu_percent: 72,
                run_delay_percent: 30,
            }),
            ..Default::default()
        },
        ShardSummary {
            index: 1,
            ..Default::default()
        },
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn totals_subtract_without_going_negative() {
        let a = DirectionTotals {
            bytes: 10,
            frames: 2,
            packets: 1,
            writes: 1,
            latency_ns: 500,
        };
        let b = DirectionTotals {
            bytes: 25,
            frames: 3,
            packets: 2,
            writes: 3,
            latency_ns: 1500,
        };
        assert_eq!(b.since(a).bytes, 15);
        assert_eq!(a.since(b).bytes, 0);
        assert_eq!(b.since(a).avg_latency_ms(), Some(0.0005));
    }

    #[test]
    fn gone_listeners_are_dropped_at_the_next_tick() {
        let hub = StatsHub::default();
        let rx = hub.listen(Format::Json, Filter::Overall);
        let _kept = hub.listen(Format::Human, Filter::All);
        hub.publish(Arc::new(Snapshot::default()));
        assert!(rx
            .try_recv()
            .unwrap()
            .starts_with("{\"pausedConnectionCount\": 0"));
        drop(rx);
        hub.publish(Arc::new(Snapshot::default()));
        assert_eq!(hub.listener_count(), 1);
    }
}
