//! The shard side of the statistics: what a shard keeps between two
//! collections (the sessions that ended meanwhile) and how it answers a
//! collection: per (vhost, backend address, client IP), the gauges now and
//! what moved since its previous answer.
//!
//! Runs only on its shard, from the session's end hook and from the
//! `CollectStats` command; never on the data path, never blocks, and
//! allocates per session or per collection, never per frame.

use super::{DirectionTotals, Stats};
use crate::session::{Disconnect, Phase, SessionInfo};
use crate::shard::Shard;
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
}

impl Default for ShardStats {
    fn default() -> Self {
        ShardStats {
            ended: RefCell::new(HashMap::new()),
            trace: RefCell::new(None),
            tracer: Rc::new(super::trace::TraceLimiter::default()),
        }
    }
}

impl ShardStats {
    /// Counts a session that has just left the shard's table: what it
    /// moved since the last collection and why it ended. Also settles its
    /// final cause (see [`final_cause`]).
    pub fn session_ended(&self, info: &SessionInfo) {
        let cause = final_cause(info);
        info.disconnect.set(cause);
        let mut stats = Stats::default();
        let (received, sent) = unreported(info);
        stats.received = received;
        stats.sent = sent;
        match cause {
            Disconnect::Graceful => stats.removed.graceful = 1,
            Disconnect::Broker => stats.removed.broker = 1,
            Disconnect::Client => stats.removed.client = 1,
            Disconnect::Proxy | Disconnect::NotDisconnected => stats.removed.proxy = 1,
        }
        // The original keeps refused sessions in its table for one more
        // tick, so they show in these gauges once; so do they here.
        stats.gauges.auth_denied = u64::from(info.auth_denied.get());
        stats.gauges.limited = u64::from(info.limited.get());
        self.ended
            .borrow_mut()
            .entry(key_of(info))
            .or_default()
            .add(&stats);
    }
}

/// The removal cause to count: the session's own, and a session still
/// marked connected here was ended by the proxy.
pub fn final_cause(info: &SessionInfo) -> Disconnect {
    match info.disconnect.get() {
        Disconnect::NotDisconnected => Disconnect::Proxy,
        other => other,
    }
}

fn key_of(info: &SessionInfo) -> GroupKey {
    GroupKey {
        vhost: info.vhost.borrow().clone(),
        backend: info.egress_remote.get(),
        source: info.ingress_remote.ip(),
    }
}

/// What the session moved since it was last reported; marks it reported.
fn unreported(info: &SessionInfo) -> (DirectionTotals, DirectionTotals) {
    let now = [
        DirectionTotals::of(&info.ingress),
        DirectionTotals::of(&info.egress),
    ];
    let before = info.stats_reported.replace(now);
    (now[0].since(before[0]), now[1].since(before[1]))
}

/// Whether the session still counts as a live connection.
pub fn is_active(info: &SessionInfo) -> bool {
    info.disconnect.get() == Disconnect::NotDisconnected
        && !matches!(info.phase.get(), Phase::BrokerDisconnected | Phase::Closed)
}

/// Answers a collection: the ended sessions' totals plus, for every live
/// session, its gauges and what it moved since the last collection.
pub fn collect(shard: &Shard) -> ShardReport {
    let mut groups = std::mem::take(&mut *shard.stats.ended.borrow_mut());
    for info in shard.sessions.borrow().values() {
        let mut stats = Stats::default();
        let (received, sent) = unreported(info);
        stats.received = received;
        stats.sent = sent;
        let active = is_active(info);
        stats.gauges.active = u64::from(active);
        stats.gauges.paused = u64::from(active && info.control.paused());
        stats.gauges.auth_denied = u64::from(info.auth_denied.get());
        stats.gauges.limited = u64::from(info.limited.get());
        groups.entry(key_of(info)).or_default().add(&stats);
    }
    // A quiet traced session still gets its suppressed-lines note.
    shard.stats.tracer.roll();
    ShardReport {
        shard: shard.index,
        groups: groups.into_iter().collect(),
        buffers_in_use: shard.pool.in_use(),
        buffers_peak: shard.pool.take_peak_in_use(),
        buffers_allocated: shard.pool.allocated(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn session() -> SessionInfo {
        SessionInfo::new(
            7,
            "10.0.0.1:5000".parse().unwrap(),
            "10.0.0.2:5672".parse().unwrap(),
        )
    }

    #[test]
    fn a_session_never_marked_ended_counts_as_the_proxys() {
        let s = session();
        assert_eq!(final_cause(&s), Disconnect::Proxy);
        s.disconnect.set(Disconnect::Broker);
        assert_eq!(final_cause(&s), Disconnect::Broker);
    }

    #[test]
    fn ended_sessions_count_what_was_not_reported_yet() {
        let stats = ShardStats::default();
        let s = session();
        s.ingress.bytes.set(100);
        s.ingress.frames.set(2);
        let _ = unreported(&s); // a collection happened here
        s.ingress.bytes.set(130);
        s.disconnect.set(Disconnect::Client);
        stats.session_ended(&s);
        let ended = stats.ended.borrow();
        let got = ended.values().next().unwrap();
        assert_eq!(got.received.bytes, 30);
        assert_eq!(got.received.frames, 0);
        assert_eq!(got.removed.client, 1);
        assert_eq!(got.gauges.active, 0);
    }
}
