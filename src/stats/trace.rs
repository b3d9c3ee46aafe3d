//! Selective tracing (docs/logging.md#tracing): `TRACE vhost|source|session
//! ...` logs every AMQP method of the matching sessions at INFO, with the
//! direction, channel, `class.method` name and payload size, bounded to
//! [`MAX_LINES_PER_SECOND`] lines per second per shard (the rest are counted
//! and the count logged).
//!
//! Owns the filter grammar, the per-shard rate bound and the method names.
//! It never logs a frame's payload (no bodies, no arguments, hence no
//! credentials), and costs the data path one `Cell<bool>` test per frame
//! while a session is not traced. Runs on the shards (the hooks) and the
//! control thread (parsing).

use super::{Direction, SessionId};
use crate::codec::FrameEvent;
use std::cell::Cell;
use std::fmt;
use std::net::IpAddr;
use std::rc::Rc;
use std::time::{Duration, Instant};

/// At most this many trace lines per second per shard.
pub const MAX_LINES_PER_SECOND: u32 = 200;

/// Which sessions are traced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TraceFilter {
    Vhost(String),
    Source(IpAddr),
    Session(SessionId),
}

impl TraceFilter {
    /// Whether the session `id` of `vhost` from `source` is traced.
    pub fn matches(&self, id: SessionId, vhost: &str, source: IpAddr) -> bool {
        match self {
            TraceFilter::Vhost(v) => vhost == v,
            TraceFilter::Source(ip) => source == *ip,
            TraceFilter::Session(s) => id == *s,
        }
    }
}

impl fmt::Display for TraceFilter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TraceFilter::Vhost(v) => write!(f, "vhost {v}"),
            TraceFilter::Source(ip) => write!(f, "source {ip}"),
            TraceFilter::Session(id) => write!(f, "session {id}"),
        }
    }
}

/// A shard's bound on trace lines: a one-second window and the lines
/// suppressed in it.
#[derive(Debug)]
pub struct TraceLimiter {
    window_start: Cell<Instant>,
    lines: Cell<u32>,
    suppressed: Cell<u64>,
}

impl Default for TraceLimiter {
    fn default() -> Self {
        TraceLimiter {
            window_start: Cell::new(Instant::now()),
            lines: Cell::new(0),
            suppressed: Cell::new(0),
        }
    }
}

impl TraceLimiter {
    /// Whether one more line fits in the current second.
    fn admit(&self) -> bool {
        self.roll();
        if self.lines.get() < MAX_LINES_PER_SECOND {
            self.lines.set(self.lines.get() + 1);
            true
        } else {
            self.suppressed.set(self.suppressed.get() + 1);
            false
        }
    }

    /// Starts a new window once a second has passed, saying how many lines
    /// the previous one suppressed.
    pub fn roll(&self) {
        let now = Instant::now();
        if now.duration_since(self.window_start.get()) < Duration::from_secs(1) {
            return;
        }
        let suppressed = self.suppressed.replace(0);
        if suppressed > 0 {
            log::info!(
                "Trace: {suppressed} lines suppressed in the last second (at most {MAX_LINES_PER_SECOND} per second per shard)"
            );
        }
        self.window_start.set(now);
        self.lines.set(0);
    }
}

/// Who one traced direction belongs to.
#[derive(Debug)]
pub struct TraceTarget {
    session: SessionId,
    vhost: String,
    direction: Direction,
    limiter: Rc<TraceLimiter>,
}

impl TraceTarget {
    /// One direction of session `session` (of `vhost`), bounded by the
    /// shard's `limiter`.
    pub fn new(
        session: SessionId,
        vhost: String,
        direction: Direction,
        limiter: Rc<TraceLimiter>,
    ) -> TraceTarget {
        TraceTarget {
            session,
            vhost,
            direction,
            limiter,
        }
    }
}

/// Logs one frame of a traced direction (methods only: content and
/// heartbeat frames carry no method to show).
#[cold]
#[inline(never)]
pub fn frame(t: &TraceTarget, ev: &FrameEvent) {
    let Some((class, method)) = ev.method else {
        return;
    };
    if !t.limiter.admit() {
        return;
    }
    let arrow = match t.direction {
        Direction::Ingress => "client->broker",
        Direction::Egress => "broker->client",
    };
    log::info!(
        vhost = t.vhost.as_str(), conn = t.session.0;
        "Trace: {arrow} channel={} {} size={}",
        ev.channel,
        MethodName(class, method),
        ev.size
    );
}

/// `class.method` as in the AMQP 0-9-1 specification, or the numbers.
pub struct MethodName(pub u16, pub u16);

impl fmt::Display for MethodName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match method_name(self.0, self.1) {
            Some((class, method)) => write!(f, "{class}.{method}"),
            None => write!(f, "class={} method={}", self.0, self.1),
        }
    }
}

/// The names of AMQP 0-9-1 methods (amqp0-9-1.xml, plus RabbitMQ's
/// extensions: confirm, basic.nack, connection.blocked and update-secret).
pub fn method_name(class: u16, method: u16) -> Option<(&'static str, &'static str)> {
    let (class_name, methods): (&str, &[(u16, &str)]) = match class {
        10 => (
            "connection",
            &[
                (10, "start"),
                (11, "start-ok"),
                (20, "secure"),
                (21, "secure-ok"),
                (30, "tune"),
                (31, "tune-ok"),
                (40, "open"),
                (41, "open-ok"),
                (50, "close"),
                (51, "close-ok"),
                (60, "blocked"),
                (61, "unblocked"),
                (70, "update-secret"),
                (71, "update-secret-ok"),
            ],
        ),
        20 => (
            "channel",
            &[
                (10, "open"),
                (11, "open-ok"),
                (20, "flow"),
                (21, "flow-ok"),
                (40, "close"),
                (41, "close-ok"),
            ],
        ),
        30 => ("access", &[(10, "request"), (11, "request-ok")]),
        40 => (
            "exchange",
            &[
                (10, "declare"),
                (11, "declare-ok"),
                (20, "delete"),
                (21, "delete-ok"),
                (30, "bind"),
                (31, "bind-ok"),
                (40, "unbind"),
                (51, "unbind-ok"),
            ],
        ),
        50 => (
            "queue",
            &[
                (10, "declare"),
                (11, "declare-ok"),
                (20, "bind"),
                (21, "bind-ok"),
                (30, "purge"),
                (31, "purge-ok"),
                (40, "delete"),
                (41, "delete-ok"),
                (50, "unbind"),
                (51, "unbind-ok"),
            ],
        ),
        60 => (
            "basic",
            &[
                (10, "qos"),
                (11, "qos-ok"),
                (20, "consume"),
                (21, "consume-ok"),
                (30, "cancel"),
                (31, "cancel-ok"),
                (40, "publish"),
                (50, "return"),
                (60, "deliver"),
                (70, "get"),
                (71, "get-ok"),
                (72, "get-empty"),
                (80, "ack"),
                (90, "reject"),
                (100, "recover-async"),
                (110, "recover"),
                (111, "recover-ok"),
                (120, "nack"),
            ],
        ),
        85 => ("confirm", &[(10, "select"), (11, "select-ok")]),
        90 => (
            "tx",
            &[
                (10, "select"),
                (11, "select-ok"),
                (20, "commit"),
                (21, "commit-ok"),
                (30, "rollback"),
                (31, "rollback-ok"),
            ],
        ),
        _ => return None,
    };
    methods
        .iter()
        .find(|(id, _)| *id == method)
        .map(|(_, name)| (class_name, *name))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_come_from_the_spec_and_unknown_ids_stay_numbers() {
        assert_eq!(MethodName(60, 40).to_string(), "basic.publish");
        assert_eq!(MethodName(85, 10).to_string(), "confirm.select");
        assert_eq!(MethodName(10, 50).to_string(), "connection.close");
        assert_eq!(MethodName(60, 999).to_string(), "class=60 method=999");
        assert_eq!(MethodName(7, 1).to_string(), "class=7 method=1");
    }

    #[test]
    fn the_limiter_admits_a_bounded_number_per_second() {
        let l = TraceLimiter::default();
        let admitted = (0..MAX_LINES_PER_SECOND + 50).filter(|_| l.admit()).count();
        assert_eq!(admitted, MAX_LINES_PER_SECOND as usize);
        assert_eq!(l.suppressed.get(), 50);
        l.window_start
            .set(Instant::now() - Duration::from_millis(1500));
        assert!(l.admit());
        assert_eq!(l.suppressed.get(), 0);
    }

    #[test]
    fn filters_match_by_vhost_source_or_session() {
        let source: IpAddr = "10.0.0.1".parse().unwrap();
        assert!(TraceFilter::Vhost("orders".into()).matches(SessionId(3), "orders", source));
        assert!(!TraceFilter::Session(SessionId(4)).matches(SessionId(3), "orders", source));
        assert!(TraceFilter::Source(source).matches(SessionId(3), "", source));
        assert_eq!(TraceFilter::Session(SessionId(4)).to_string(), "session 4");
    }
}
