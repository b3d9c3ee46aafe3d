//! How backends are health-checked: the `BACKEND HEALTH` settings as one
//! configuration value (see `docs/reliability.md#health-checks`). Plain
//! data; the checking itself is `crate::health`, which reads it.

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
