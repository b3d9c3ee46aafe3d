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

/// The policy lives with the configuration (it is set by `BACKEND HEALTH`
/// and printed by `CONFIG DUMP`), which never names this module.
pub use crate::config::HealthPolicy;
