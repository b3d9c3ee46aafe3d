//! A session: one client connection and, once its vhost is known, one broker
//! connection, driven from accept to cleanup (docs/sessions.md).
//!
//! accept → client handshake (bounded by `--handshakeTimeoutMs`) → route the
//! vhost → connect with failover (each address bounded by
//! `--connectTimeoutMs`) → broker handshake → pump until either side ends →
//! close both. Every refusal reaches the client as a `Connection.Close` with
//! a code and a text, and the log says why. Runs on its shard only; never
//! blocks; never logs credentials.
//!
//! The module sits below the shard: what a session needs from its shard is
//! the [`ShardContext`] defined here, which the shard holds.

mod context;
pub mod control;
mod driver;
pub mod establish;
pub mod moving;
mod passthrough;
pub mod pool;
pub mod pump;
pub mod stream;
mod transparent;

pub use context::{ShardContext, Shared};

pub use crate::stats::{Direction, SessionId};

use crate::codec::FrameEvent;
use crate::stats::DirectionTotals;
use crate::tls::ingress::{Incoming, ListenerKind};
use std::cell::{Cell, RefCell};
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::Instant;

/// Counters of one direction, written only by the session's own shard.
#[derive(Debug)]
pub struct DirectionStats {
    pub bytes: Cell<u64>,
    pub frames: Cell<u64>,
    /// Reads that carried data (the original's "packets").
    pub packets: Cell<u64>,
    pub last_activity: Cell<Instant>,
    /// When the first channel-0 `Connection.Close` passed this way: which side
    /// started an AMQP close decides its removal cause
    /// (docs/statistics.md#removal-causes).
    pub close_seen_at: Cell<Option<Instant>>,
    /// Time spent in completed pass-through writes of this direction's bytes
    /// to the other socket, and how many there were (`CONN`, `STAT`): the
    /// writes sent at once, not the first chunks queued on the ring
    /// (docs/sessions.md#pass-through).
    pub write_latency_ns_total: Cell<u64>,
    pub writes: Cell<u64>,
    /// Whether `TRACE` logs this direction's methods: the one branch the
    /// data path pays while tracing is off.
    pub traced: Cell<bool>,
    /// Who is traced and the shard's rate bound; read only when `traced`.
    pub trace: RefCell<Option<std::rc::Rc<crate::stats::trace::TraceTarget>>>,
}

impl Default for DirectionStats {
    fn default() -> Self {
        DirectionStats::active_since(Instant::now())
    }
}

impl DirectionStats {
    /// Counters at zero, last active `at`.
    fn active_since(at: Instant) -> Self {
        DirectionStats {
            bytes: Cell::new(0),
            frames: Cell::new(0),
            packets: Cell::new(0),
            last_activity: Cell::new(at),
            close_seen_at: Cell::new(None),
            write_latency_ns_total: Cell::new(0),
            writes: Cell::new(0),
            traced: Cell::new(false),
            trace: RefCell::new(None),
        }
    }

    fn on_frame(&self, ev: &FrameEvent) {
        self.frames.set(self.frames.get() + 1);
        if pump::is_connection_close(ev) && self.close_seen_at.get().is_none() {
            self.close_seen_at.set(Some(Instant::now()));
        }
        if self.traced.get() {
            if let Some(target) = self.trace.borrow().as_ref() {
                crate::stats::trace::frame(target, ev);
            }
        }
    }

    /// The direction's counters now.
    pub fn totals(&self) -> DirectionTotals {
        DirectionTotals {
            bytes: self.bytes.get(),
            frames: self.frames.get(),
            packets: self.packets.get(),
            writes: self.writes.get(),
            latency_ns: self.write_latency_ns_total.get(),
        }
    }

    /// Accounts one completed pass-through write that took `ns`.
    pub fn record_write(&self, ns: u64) {
        self.write_latency_ns_total
            .set(self.write_latency_ns_total.get().wrapping_add(ns));
        self.writes.set(self.writes.get() + 1);
    }

    /// Counts a chunk read at `read_at` (the side's last activity).
    fn on_chunk(&self, n: usize, read_at: Instant) {
        self.bytes.set(self.bytes.get() + n as u64);
        self.packets.set(self.packets.get() + 1);
        self.last_activity.set(read_at);
    }
}

/// Where a session is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    ClientHandshake,
    Connecting,
    BrokerHandshake,
    Open,
    /// The broker side was cut by the operator; the client side stays until it
    /// closes (docs/sessions.md#operator-actions).
    BrokerDisconnected,
    Closed,
}

/// Which handshake a session used (docs/routing.md#handshake-modes).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HandshakeKind {
    /// The proxy answered the client up to `Open`, then replayed to the
    /// broker.
    Proxied,
    /// The broker answered the client through the proxy.
    Transparent,
}

impl HandshakeKind {
    pub fn name(self) -> &'static str {
        match self {
            HandshakeKind::Proxied => "proxied",
            HandshakeKind::Transparent => "transparent",
        }
    }
}

/// Which protocol a session speaks (`CONN`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    Amqp,
    /// RabbitMQ Stream (`LISTEN START_STREAM`; [`stream`]).
    Stream,
}

impl Protocol {
    pub fn name(self) -> &'static str {
        match self {
            Protocol::Amqp => "amqp",
            Protocol::Stream => "stream",
        }
    }
}

/// Why a session ended (docs/statistics.md).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Disconnect {
    NotDisconnected,
    /// An AMQP close exchange (client- or operator-initiated) completed.
    Graceful,
    /// The client's socket ended or failed first.
    Client,
    /// The broker's socket ended or failed first.
    Broker,
    /// The proxy ended it: refusal, protocol error, timeout, operator force.
    Proxy,
}

/// What the shard (and later `CONN`) knows about a live session.
#[derive(Debug)]
pub struct SessionInfo {
    pub id: SessionId,
    pub vhost: RefCell<String>,
    pub ingress_remote: SocketAddr,
    pub ingress_local: SocketAddr,
    pub egress_local: Cell<Option<SocketAddr>>,
    pub egress_remote: Cell<Option<SocketAddr>>,
    pub backend: RefCell<String>,
    /// The farm or direct mapping that chose the backend: whether a live
    /// session must move after a change depends on it (`routing::misplaced`).
    pub via: RefCell<Option<crate::config::Mapping>>,
    pub phase: Cell<Phase>,
    pub handshake: Cell<HandshakeKind>,
    pub protocol: Cell<Protocol>,
    pub disconnect: Cell<Disconnect>,
    /// Refused by the auth service / by a connection limit (the `STAT`
    /// gauges `authDeniedConnectionCount`, `limitedConnectionCount`).
    pub auth_denied: Cell<bool>,
    pub limited: Cell<bool>,
    /// Counter values already handed to the statistics (ingress, egress):
    /// each collection reports only what moved since.
    pub stats_reported: Cell<[DirectionTotals; 2]>,
    /// Held in place, not behind `Rc`s of their own: the pump reaches them
    /// through the session, one object where it touches four.
    pub ingress: DirectionStats,
    pub egress: DirectionStats,
    pub control: control::SessionControl,
    /// The session's place in the limits and its auth interceptor.
    pub admission: SessionAdmission,
}

/// What the limits and the auth service hold of one session
/// (docs/commands.md#auth-and-limit).
#[derive(Debug, Default)]
pub struct SessionAdmission {
    /// The auth interceptor in force when the session was accepted: a
    /// later `AUTH` changes only sessions accepted after it.
    /// `None` until accepted, and for sessions that were never accepted
    /// (the tests'): no interceptor.
    pub auth: RefCell<Option<context::Local<crate::auth::AuthSettings>>>,
    /// Its vhost's concurrent count and data budget, once admitted at
    /// `Open`; dropped when the session ends.
    pub slot: RefCell<Option<crate::limits::ConnectionSlot>>,
    /// Its own data-rate limit (`SESSION id LIMIT`), which the pump obeys
    /// beside the vhost's.
    pub shaping: std::sync::Arc<crate::limits::SessionShaping>,
}

impl SessionAdmission {
    /// Whether the pump shapes either direction of the session now (`CONN`).
    pub fn is_shaped(&self) -> bool {
        self.slot
            .borrow()
            .as_ref()
            .is_some_and(|slot| slot.is_shaped(&self.shaping))
    }

    /// The data shaper for the pump, if the session was admitted.
    pub fn data_shaper(&self) -> Option<crate::limits::DataShaper> {
        self.slot
            .borrow()
            .as_ref()
            .map(|slot| slot.data_shaper(self.shaping.clone()))
    }
}

impl SessionInfo {
    pub fn new(
        id: SessionId,
        ingress_remote: SocketAddr,
        ingress_local: SocketAddr,
    ) -> SessionInfo {
        // One clock reading for both directions' start.
        let now = Instant::now();
        SessionInfo {
            id,
            vhost: RefCell::new(String::new()),
            ingress_remote,
            ingress_local,
            egress_local: Cell::new(None),
            egress_remote: Cell::new(None),
            backend: RefCell::new(String::new()),
            via: RefCell::new(None),
            phase: Cell::new(Phase::ClientHandshake),
            handshake: Cell::new(HandshakeKind::Proxied),
            protocol: Cell::new(Protocol::Amqp),
            disconnect: Cell::new(Disconnect::NotDisconnected),
            auth_denied: Cell::new(false),
            limited: Cell::new(false),
            stats_reported: Cell::new(Default::default()),
            ingress: DirectionStats::active_since(now),
            egress: DirectionStats::active_since(now),
            control: Default::default(),
            admission: Default::default(),
        }
    }
}

/// The established phase of a session, boxed where it is made.
type EstablishedPhase = std::pin::Pin<Box<dyn std::future::Future<Output = ()>>>;

/// Runs a session from accept to close, an AMQP or a Stream-protocol one
/// as the listener says, in two phases with a box each: the accept and
/// the handshakes (a few KiB, freed the moment the session is
/// established), which end with the established phase to run (`None`
/// when the session ended before, already closed and counted), and that
/// phase (the pump's state), so a session that idles for days holds only
/// the second. The future returned is a few words: the two boxes and
/// where it is.
pub fn run(
    shard: Rc<ShardContext>,
    client: Incoming,
    listen_port: u16,
    kind: ListenerKind,
) -> impl std::future::Future<Output = ()> {
    let starting: std::pin::Pin<Box<dyn std::future::Future<Output = Option<EstablishedPhase>>>> =
        if kind.stream {
            boxed_in_place(|| stream::start(shard, client, listen_port, kind))
        } else {
            boxed_in_place(|| driver::start(shard, client, listen_port, kind))
        };
    async move {
        if let Some(mut established) = starting.await {
            established.as_mut().await;
        }
    }
}

/// The first step of every session: the ingress PROXY header and TLS when
/// the listener asks for them (they log their own refusals, and a
/// connection refused there never becomes a session), then the session's
/// entry in the shard's table. `None` when the connection was refused.
async fn admit(
    shard: &ShardContext,
    client: Incoming,
    listen_port: u16,
    kind: ListenerKind,
    protocol: Protocol,
) -> Option<(crate::stream::Stream, Rc<SessionInfo>)> {
    let crate::tls::ingress::Accepted {
        stream,
        remote,
        local,
    } = crate::tls::ingress::accept(
        &shard.shared.tls,
        shard.shared.handshake_timeout,
        client,
        listen_port,
        kind,
    )
    .await?;
    let info = Rc::new(SessionInfo::new(
        shard.shared.next_session_id(),
        remote,
        local,
    ));
    info.protocol.set(protocol);
    shard
        .sessions
        .borrow_mut()
        .insert(info.id, Rc::clone(&info));
    let what = match protocol {
        Protocol::Amqp => "connection",
        Protocol::Stream => "stream connection",
    };
    crate::session_log!(
        log::Level::Debug,
        &info,
        "Accepted {what} from {remote} on port {listen_port}"
    );
    Some((stream, info))
}

/// The last step of every session, whichever phase it ended in.
fn finish(shard: &ShardContext, info: &SessionInfo) {
    info.phase.set(Phase::Closed);
    // Its place in the vhost's concurrent count ends with it.
    info.admission.slot.borrow_mut().take();
    shard.sessions.borrow_mut().remove(&info.id);
    // Counted now, in the interval it ended in: it has left the table.
    shard.session_ended(info);
}

/// A future boxed where it is built: the allocation comes first and the
/// future's initial state is written into it. `Box::pin(f())` builds the
/// future on the stack and then copies all of it, a session's few KiB of
/// which the initial state uses a few words, once per connection.
pub fn boxed_in_place<F: std::future::Future>(make: impl FnOnce() -> F) -> std::pin::Pin<Box<F>> {
    let mut slot = Box::<F>::new_uninit();
    slot.write(make());
    // SAFETY: written just above.
    Box::into_pin(unsafe { slot.assume_init() })
}

/// Logs with the session's vhost and id attached, in the original's shape
/// (`INFO [vhost] 42: ...`).
#[macro_export]
macro_rules! session_log {
    ($lvl:expr, $info:expr, $($arg:tt)+) => {{
        let info: &$crate::session::SessionInfo = $info;
        let vhost = info.vhost.borrow();
        ::log::log!($lvl, vhost = vhost.as_str(), conn = info.id.0; $($arg)+)
    }};
}

#[cfg(test)]
mod tests {
    use super::boxed_in_place;
    use std::cell::Cell;

    #[test]
    fn a_future_boxed_in_place_is_built_once_and_runs_when_awaited() {
        let built = Cell::new(0);
        let ran = Cell::new(false);
        let future = boxed_in_place(|| {
            built.set(built.get() + 1);
            async {
                ran.set(true);
                41 + 1
            }
        });
        assert_eq!(built.get(), 1);
        assert!(!ran.get(), "building must not poll it");
        assert_eq!(futures_lite::future::block_on(future), 42);
        assert!(ran.get());
    }
}
