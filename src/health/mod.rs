//! Backend health: which backends sessions may be sent to (see
//! `docs/reliability.md`).
//!
//! Owns the per-backend state ([`state`]), the registry every shard reads
//! when it routes a session ([`registry`], with the pure routing helper
//! [`filter_up`]), and the active AMQP probe ([`probe`]) that runs on its
//! own std thread with blocking sockets and timeouts. It never runs on a
//! shard, never touches a session's sockets, and never decides a route by
//! itself: routing asks it which members to skip.

pub mod metrics;
pub mod probe;
pub mod registry;
pub mod state;

pub use probe::{probe_once, ProbeError, ProbeReport, ProbeTarget, Prober};
pub use registry::{filter_up, HealthRegistry, Named};
pub use state::{
    next_state, BackendHealth, Counters, HealthSnapshot, HealthState, LastError, Observer, Outcome,
    Recorded,
};

use std::time::Duration;

/// How backends are checked and when they change state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HealthPolicy {
    /// Time between two active probes of a backend; `None` when only
    /// sessions' outcomes are watched (passive checking).
    pub interval: Option<Duration>,
    /// The whole probe (resolve, connect, read `Connection.Start`) must
    /// finish within this.
    pub timeout: Duration,
    /// Consecutive probe successes that bring a down backend back up.
    pub rise: u32,
    /// Consecutive probe failures that mark a backend down (0: never).
    pub fall: u32,
    /// Consecutive failures, the last seen by a session, that mark a
    /// backend down (0: never).
    pub passive_fall: u32,
    /// Without a probe, how long after its last failure a down backend is
    /// tried again by a session (with a probe, the probe brings it back).
    pub down_hold: Duration,
}

impl Default for HealthPolicy {
    /// Passive checking only, as the proxy starts without health flags.
    fn default() -> Self {
        HealthPolicy {
            interval: None,
            timeout: Duration::from_secs(2),
            rise: 2,
            fall: 3,
            passive_fall: 3,
            down_hold: Duration::from_secs(10),
        }
    }
}

impl HealthPolicy {
    /// `BACKEND HEALTH OFF`: no probe and no passive mark; every member is
    /// always tried.
    pub fn off(self) -> HealthPolicy {
        HealthPolicy {
            interval: None,
            passive_fall: 0,
            ..self
        }
    }

    /// Whether nothing checks backends, so none is ever skipped.
    pub fn is_off(&self) -> bool {
        self.interval.is_none() && self.passive_fall == 0
    }

    /// `Some(down_hold)` when nothing else would bring a down backend back.
    pub fn down_hold_without_probe(&self) -> Option<Duration> {
        match self.interval {
            Some(_) => None,
            None => Some(self.down_hold),
        }
    }
}
