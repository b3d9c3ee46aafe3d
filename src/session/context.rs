//! What the sessions of one shard share, and what every shard shares with
//! the control thread ([`Shared`]). The shard owns a [`ShardContext`] and
//! hands it to each session it accepts; defining it here keeps the session
//! module below the shard (a session never reaches into the shard's
//! listeners or inbox).
//!
//! Also the session side of the statistics and of `TRACE`: reading a
//! session's cells into the plain values `crate::stats` takes. Runs on the
//! shard only; never blocks.

use super::pool::BufferPool;
use super::{Direction, Disconnect, Phase, SessionId, SessionInfo};
use crate::auth::{AuthSettings, AuthTimeouts};
use crate::config::ConfigSnapshot;
use crate::limits::Limits;
use crate::net::Resolver;
use crate::stats::shard::{BufferFigures, GroupKey, Removal, SessionSample};
use crate::stats::trace::{TraceFilter, TraceTarget};
use crate::stats::{DirectionTotals, ShardReport, ShardStats};
use arc_swap::ArcSwap;
use std::cell::RefCell;
use std::collections::BTreeMap;
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// `--drainTimeoutMs` when not given.
pub const DEFAULT_MOVE_GRACE: Duration = Duration::from_secs(30);

/// `--brokerHandshakeTimeoutMs` when not given.
pub const DEFAULT_BROKER_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);

/// What every shard shares with the control thread.
pub struct Shared {
    /// The configuration new sessions route by.
    pub config: ArcSwap<ConfigSnapshot>,
    pub handshake_timeout: Duration,
    pub connect_timeout: Duration,
    /// How long a connected broker may take to start its handshake
    /// (transparent: its `Connection.Start`) or to finish it (proxied: its
    /// `OpenOk`) before the next member of the farm is tried.
    pub broker_handshake_timeout: Duration,
    /// This host's name, for `amqpprox_host` (resolved once at start).
    pub hostname: String,
    /// The TLS configurations new connections use (`TLS` command, SIGHUP).
    pub tls: ArcSwap<crate::tls::Contexts>,
    /// Connection limits and data shaping, for all shards together
    /// (`LIMIT`): a limit of N holds for the process, not per shard.
    pub limits: Limits,
    /// The auth interceptor new sessions use (`AUTH`); a session keeps the
    /// one it loaded at `Open`.
    pub auth: ArcSwap<AuthSettings>,
    /// `--authConnectTimeoutMs`, `--authResponseTimeoutMs`.
    pub auth_timeouts: AuthTimeouts,
    /// Every backend's health: routing skips the down ones; the control
    /// thread keeps it in step with the configuration.
    pub health: Arc<crate::health::HealthRegistry>,
    /// How long a session told to leave its backend (`BACKEND DRAIN`) may
    /// take to answer before both its sides are closed (`--drainTimeoutMs`).
    pub move_grace: Duration,
    /// The options every session socket gets, with `--windowClampBytes`.
    pub session_sockets: crate::net::SessionSockets,
    next_session: AtomicU64,
}

impl Shared {
    pub fn new(
        config: Arc<ConfigSnapshot>,
        handshake_timeout: Duration,
        connect_timeout: Duration,
    ) -> Shared {
        Shared {
            config: ArcSwap::new(config),
            handshake_timeout,
            connect_timeout,
            broker_handshake_timeout: DEFAULT_BROKER_HANDSHAKE_TIMEOUT,
            hostname: local_hostname(),
            tls: ArcSwap::from_pointee(crate::tls::Contexts::default()),
            limits: Limits::default(),
            auth: ArcSwap::from_pointee(AuthSettings::default()),
            auth_timeouts: AuthTimeouts::default(),
            health: Arc::new(crate::health::HealthRegistry::new(Default::default())),
            move_grace: DEFAULT_MOVE_GRACE,
            session_sockets: crate::net::SessionSockets::default(),
            next_session: AtomicU64::new(1),
        }
    }

    /// The same, with `--windowClampBytes` on every session socket.
    pub fn with_window_clamp(mut self, bytes: u32) -> Shared {
        self.session_sockets = crate::net::SessionSockets::new(bytes);
        self
    }

    /// The same, with `--drainTimeoutMs` as the grace of a moved session.
    pub fn with_move_grace(mut self, grace: Duration) -> Shared {
        self.move_grace = grace;
        self
    }

    /// The same, with `--brokerHandshakeTimeoutMs`.
    pub fn with_broker_handshake_timeout(mut self, limit: Duration) -> Shared {
        self.broker_handshake_timeout = limit;
        self
    }

    /// The same, with the auth service's timeouts.
    pub fn with_auth_timeouts(mut self, timeouts: AuthTimeouts) -> Shared {
        self.auth_timeouts = timeouts;
        self
    }

    /// Whether a session must name its vhost before a broker is chosen
    /// for it: a limit or an auth service may refuse it at `Open`, and the
    /// transparent handshake would already have connected it to a broker.
    pub fn admission_needs_vhost(&self) -> bool {
        self.limits.is_configured() || matches!(**self.auth.load(), AuthSettings::Service(_))
    }

    /// The next process-wide session id (starts at 1, never reused).
    pub fn next_session_id(&self) -> SessionId {
        SessionId(self.next_session.fetch_add(1, Ordering::Relaxed))
    }
}

fn local_hostname() -> String {
    let mut buf = [0u8; 256];
    // SAFETY: the buffer is valid for its length; gethostname NUL-terminates
    // or truncates within it.
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    if rc != 0 {
        return "localhost".into();
    }
    let end = buf.iter().position(|b| *b == 0).unwrap_or(buf.len());
    String::from_utf8_lossy(&buf[..end]).into_owned()
}

/// One shard's state as its sessions see it, owned by the shard's thread.
pub struct ShardContext {
    pub index: usize,
    pub shared: Arc<Shared>,
    pub pool: Rc<BufferPool>,
    /// Read buffers for the handshakes (`establish::HANDSHAKE_READ` bytes).
    pub handshake_buffers: Rc<BufferPool>,
    pub resolver: Resolver,
    pub sessions: RefCell<BTreeMap<SessionId, Rc<SessionInfo>>>,
    /// Sessions ended since the last statistics collection, and `TRACE`.
    pub stats: ShardStats,
    /// This shard's references to the configuration and the auth settings
    /// in force (see [`LocalCopy`]).
    config_copy: LocalCopy<ConfigSnapshot>,
    auth_copy: LocalCopy<AuthSettings>,
}

/// A shard's own reference to a value the control thread publishes in an
/// `ArcSwap`, refreshed when the published one changes. Handed out as an
/// `Rc`: a session that keeps the value then writes no reference count the
/// other cores write too, as an `Arc` clone of the published value would at
/// every session, from every shard.
#[derive(Default)]
struct LocalCopy<T>(RefCell<Option<Local<T>>>);

/// A published value as a session holds it: the `Rc` is the point (its
/// count is this shard's alone), not an extra allocation by mistake.
#[allow(clippy::redundant_allocation)]
pub type Local<T> = Rc<Arc<T>>;

impl<T> LocalCopy<T> {
    fn get(&self, published: &ArcSwap<T>) -> Local<T> {
        let current = published.load();
        let mut copy = self.0.borrow_mut();
        match &*copy {
            Some(held) if Arc::ptr_eq(held, &current) => Rc::clone(held),
            _ => {
                let fresh = Rc::new(arc_swap::Guard::into_inner(current));
                *copy = Some(Rc::clone(&fresh));
                fresh
            }
        }
    }
}

impl ShardContext {
    pub fn new(index: usize, shared: Arc<Shared>) -> ShardContext {
        ShardContext {
            index,
            shared,
            pool: BufferPool::new(),
            handshake_buffers: BufferPool::of(
                super::establish::HANDSHAKE_READ,
                super::pool::HANDSHAKE_KEEP,
            ),
            resolver: Resolver::default(),
            sessions: RefCell::new(BTreeMap::new()),
            stats: Default::default(),
            config_copy: LocalCopy::default(),
            auth_copy: LocalCopy::default(),
        }
    }

    /// The configuration in force, for a session to route by and keep.
    pub fn config(&self) -> Local<ConfigSnapshot> {
        self.config_copy.get(&self.shared.config)
    }

    /// The auth settings in force, which a session accepted now keeps.
    pub fn auth(&self) -> Local<AuthSettings> {
        self.auth_copy.get(&self.shared.auth)
    }

    /// Counts a session that has just left the table, settling its final
    /// cause (see [`final_cause`]).
    pub fn session_ended(&self, info: &SessionInfo) {
        let cause = final_cause(info);
        info.disconnect.set(cause);
        let removal = match cause {
            Disconnect::Graceful => Removal::Graceful,
            Disconnect::Broker => Removal::Broker,
            Disconnect::Client => Removal::Client,
            Disconnect::Proxy | Disconnect::NotDisconnected => Removal::Proxy,
        };
        self.stats.session_ended(sample(info), removal);
    }

    /// Answers a statistics collection for this shard.
    pub fn collect_stats(&self) -> ShardReport {
        let live: Vec<SessionSample> = self.sessions.borrow().values().map(|s| sample(s)).collect();
        let buffers = BufferFigures {
            in_use: self.pool.in_use(),
            peak: self.pool.take_peak_in_use(),
            allocated: self.pool.allocated(),
        };
        self.stats.collect(self.index, live, buffers)
    }

    /// The shard's side of `TRACE`: installs the filter for sessions to
    /// come and applies it to the sessions it has. Returns how many are
    /// traced now.
    pub fn set_trace(&self, filter: Option<TraceFilter>) -> usize {
        let mut traced = 0;
        for info in self.sessions.borrow().values() {
            let on = filter.as_ref().is_some_and(|f| traced_by(f, info));
            apply_trace(info, on.then_some(&self.stats.tracer));
            traced += usize::from(on);
        }
        *self.stats.trace.borrow_mut() = filter;
        traced
    }

    /// Checks a session against the shard's filter when it enters
    /// pass-through (its vhost is known from then on).
    pub fn trace_on_open(&self, info: &SessionInfo) {
        let on = self
            .stats
            .trace
            .borrow()
            .as_ref()
            .is_some_and(|f| traced_by(f, info));
        if on {
            apply_trace(info, Some(&self.stats.tracer));
        }
    }
}

fn traced_by(filter: &TraceFilter, info: &SessionInfo) -> bool {
    filter.matches(info.id, &info.vhost.borrow(), info.ingress_remote.ip())
}

/// Turns tracing of `info` on (with the shard's limiter) or off.
fn apply_trace(info: &SessionInfo, limiter: Option<&Rc<crate::stats::trace::TraceLimiter>>) {
    for (stats, direction) in [
        (&info.ingress, Direction::Ingress),
        (&info.egress, Direction::Egress),
    ] {
        let target = limiter.map(|l| {
            Rc::new(TraceTarget::new(
                info.id,
                info.vhost.borrow().clone(),
                direction,
                Rc::clone(l),
            ))
        });
        stats.traced.set(target.is_some());
        *stats.trace.borrow_mut() = target;
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

/// Whether the session still counts as a live connection.
pub fn is_active(info: &SessionInfo) -> bool {
    info.disconnect.get() == Disconnect::NotDisconnected
        && !matches!(info.phase.get(), Phase::BrokerDisconnected | Phase::Closed)
}

/// The session as the statistics see it; what it moved is counted as
/// reported from here on.
fn sample(info: &SessionInfo) -> SessionSample {
    let (received, sent) = unreported(info);
    SessionSample {
        key: GroupKey {
            vhost: info.vhost.borrow().clone(),
            backend: info.egress_remote.get(),
            source: info.ingress_remote.ip(),
        },
        received,
        sent,
        active: is_active(info),
        paused: info.control.paused(),
        auth_denied: info.auth_denied.get(),
        limited: info.limited.get(),
    }
}

/// What the session moved since it was last reported; marks it reported.
fn unreported(info: &SessionInfo) -> (DirectionTotals, DirectionTotals) {
    let now = [info.ingress.totals(), info.egress.totals()];
    let before = info.stats_reported.replace(now);
    (now[0].since(before[0]), now[1].since(before[1]))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn session() -> SessionInfo {
        SessionInfo::new(
            SessionId(7),
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
    fn samples_carry_what_was_not_reported_yet() {
        let s = session();
        s.ingress.bytes.set(100);
        s.ingress.frames.set(2);
        let _ = sample(&s); // a collection happened here
        s.ingress.bytes.set(130);
        let got = sample(&s);
        assert_eq!(got.received.bytes, 30);
        assert_eq!(got.received.frames, 0);
        assert!(got.active);
        s.disconnect.set(Disconnect::Client);
        assert!(!sample(&s).active);
    }

    #[test]
    fn tracing_is_switched_per_direction() {
        let info = session();
        *info.vhost.borrow_mut() = "orders".into();
        assert!(traced_by(&TraceFilter::Vhost("orders".into()), &info));
        assert!(!traced_by(&TraceFilter::Session(SessionId(4)), &info));
        let limiter = Rc::new(crate::stats::trace::TraceLimiter::default());
        apply_trace(&info, Some(&limiter));
        assert!(info.ingress.traced.get() && info.egress.traced.get());
        apply_trace(&info, None);
        assert!(!info.ingress.traced.get() && info.egress.trace.borrow().is_none());
    }
}
