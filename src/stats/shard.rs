//! The shard side of the statistics: what a shard keeps between two
//! collections (the sessions that ended meanwhile) and how it answers a
//! collection: per (vhost, backend address, client IP), the gauges now and
//! what moved since its previous answer.
//!
//! The shard hands each session in as a [`SessionSample`], plain values it
//! read from its own session table; this module never sees a session.
//! Runs only on its shard, from the session's end hook and from the
//! collection command; never on the data path, never blocks, and allocates
//! per session or per collection, never per frame.

use super::{DirectionTotals, Stats};
use std::cell::RefCell;
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::rc::Rc;

/// The grouping a shard reports by; the aggregator turns addresses into
/// the keys operators see (host names, `host_port`).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct GroupKey {
    /// Empty before the client's `Connection.Open`.
    pub vhost: String,
    /// `None` before the broker connection exists.
    pub backend: Option<SocketAddr>,
    pub source: IpAddr,
}

/// One shard's answer to a collection.
#[derive(Debug, Clone, Default)]
pub struct ShardReport {
    pub shard: usize,
    pub groups: Vec<(GroupKey, Stats)>,
    pub buffers_in_use: u64,
    /// The most buffers lent out at once during the interval.
    pub buffers_peak: u64,
    pub buffers_allocated: u64,
    /// The shard's thread (its kernel thread id), whose scheduler times the
    /// aggregator reads.
    pub thread: i32,
}

/// Why a session was removed, as the statistics count it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Removal {
    /// An AMQP close exchange completed.
    Graceful,
    /// The broker's socket ended or failed first.
    Broker,
    /// The client's socket ended or failed first.
    Client,
    /// The proxy ended it.
    Proxy,
}

/// What one session contributes to a collection, read by its shard.
#[derive(Debug, Clone)]
pub struct SessionSample {
    pub key: GroupKey,
    /// What each direction moved since the session was last sampled.
    pub received: DirectionTotals,
    pub sent: DirectionTotals,
    /// Still a live connection.
    pub active: bool,
    pub paused: bool,
    /// Refused by the auth service / by a connection limit.
    pub auth_denied: bool,
    pub limited: bool,
}

impl SessionSample {
    fn stats(&self) -> Stats {
        Stats {
            received: self.received,
            sent: self.sent,
            gauges: super::Gauges {
                auth_denied: u64::from(self.auth_denied),
                limited: u64::from(self.limited),
                ..Default::default()
            },
            ..Default::default()
        }
    }
}

/// Per-shard statistics state, owned by the shard.
pub struct ShardStats {
    /// Sessions that ended since the last collection, already grouped, so
    /// the backlog is bounded by distinct keys, not by sessions.
    ended: RefCell<HashMap<GroupKey, Stats>>,
    /// The `TRACE` filter new sessions are checked against.
    pub trace: RefCell<Option<super::trace::TraceFilter>>,
    /// The shard's bound on trace lines.
    pub tracer: Rc<super::trace::TraceLimiter>,
    /// The thread that built this, the shard's own (see [`ShardReport::thread`]).
    thread: i32,
}

impl Default for ShardStats {
    fn default() -> Self {
        ShardStats {
            ended: RefCell::new(HashMap::new()),
            trace: RefCell::new(None),
            tracer: Rc::new(super::trace::TraceLimiter::default()),
            thread: super::process::current_thread(),
        }
    }
}

impl ShardStats {
    /// Counts a session that has just left the shard's table: what it
    /// moved since the last collection and why it ended.
    pub fn session_ended(&self, session: SessionSample, cause: Removal) {
        // The original keeps refused sessions in its table for one more
        // tick, so they show in the auth/limit gauges once; so do they
        // here. A session that ended is no longer active nor paused.
        let mut stats = session.stats();
        match cause {
            Removal::Graceful => stats.removed.graceful = 1,
            Removal::Broker => stats.removed.broker = 1,
            Removal::Client => stats.removed.client = 1,
            Removal::Proxy => stats.removed.proxy = 1,
        }
        self.ended
            .borrow_mut()
            .entry(session.key)
            .or_default()
            .add(&stats);
    }

    /// Answers a collection: the ended sessions' totals plus, for every
    /// live session, its gauges and what it moved since the last
    /// collection. The buffer figures are the shard's pool's.
    pub fn collect(
        &self,
        shard: usize,
        live: impl IntoIterator<Item = SessionSample>,
        buffers: BufferFigures,
    ) -> ShardReport {
        let mut groups = std::mem::take(&mut *self.ended.borrow_mut());
        for session in live {
            let mut stats = session.stats();
            stats.gauges.active = u64::from(session.active);
            stats.gauges.paused = u64::from(session.active && session.paused);
            groups.entry(session.key).or_default().add(&stats);
        }
        // A quiet traced session still gets its suppressed-lines note.
        self.tracer.roll();
        ShardReport {
            shard,
            groups: groups.into_iter().collect(),
            buffers_in_use: buffers.in_use,
            buffers_peak: buffers.peak,
            buffers_allocated: buffers.allocated,
            thread: self.thread,
        }
    }
}

/// A shard's buffer pool at a collection.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BufferFigures {
    pub in_use: u64,
    /// The most lent out at once since the previous collection.
    pub peak: u64,
    pub allocated: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(bytes: u64) -> SessionSample {
        SessionSample {
            key: GroupKey {
                vhost: "v".into(),
                backend: None,
                source: "10.0.0.1".parse().unwrap(),
            },
            received: DirectionTotals {
                bytes,
                ..Default::default()
            },
            sent: DirectionTotals::default(),
            active: true,
            paused: true,
            auth_denied: false,
            limited: true,
        }
    }

    #[test]
    fn ended_sessions_count_their_cause_and_no_live_gauges() {
        let stats = ShardStats::default();
        stats.session_ended(sample(30), Removal::Client);
        let ended = stats.ended.borrow();
        let got = ended.values().next().unwrap();
        assert_eq!(got.received.bytes, 30);
        assert_eq!(got.removed.client, 1);
        assert_eq!(got.gauges.active, 0);
        assert_eq!(got.gauges.limited, 1);
    }

    #[test]
    fn a_collection_adds_live_sessions_to_the_ended_ones() {
        let stats = ShardStats::default();
        stats.session_ended(sample(5), Removal::Proxy);
        let report = stats.collect(3, [sample(7)], BufferFigures::default());
        assert_eq!(report.shard, 3);
        let (_, got) = &report.groups[0];
        assert_eq!(got.received.bytes, 12);
        assert_eq!((got.gauges.active, got.gauges.paused), (1, 1));
        assert_eq!(got.removed.proxy, 1);
        assert!(stats.ended.borrow().is_empty());
    }
}
