//! One backend's health: up, down or not yet known, the consecutive
//! successes and failures that move it between them, and the last error.
//!
//! The transition rules are a pure function ([`next_state`]) so they are
//! tested without sockets or clocks; [`BackendHealth`] stores the result in
//! atomics (read by every shard when it routes a session) and the last
//! error behind a mutex that only writers and `BACKEND PRINT` take. Nothing
//! here does I/O or reads a clock: callers pass the time in.

use std::fmt;
use std::sync::atomic::{AtomicU32, AtomicU64, AtomicU8, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use super::HealthPolicy;

/// Whether sessions may be sent to a backend (see `docs/reliability.md`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HealthState {
    /// Nothing seen yet: routed to, like an up backend.
    Unknown,
    Up,
    Down,
}

impl HealthState {
    fn to_u8(self) -> u8 {
        match self {
            HealthState::Unknown => 0,
            HealthState::Up => 1,
            HealthState::Down => 2,
        }
    }

    fn from_u8(v: u8) -> HealthState {
        match v {
            1 => HealthState::Up,
            2 => HealthState::Down,
            _ => HealthState::Unknown,
        }
    }

    /// The word shown by `BACKEND PRINT`, `CONN json` and the statistics.
    pub fn as_str(self) -> &'static str {
        match self {
            HealthState::Unknown => "unknown",
            HealthState::Up => "up",
            HealthState::Down => "down",
        }
    }
}

impl fmt::Display for HealthState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Who saw a backend succeed or fail.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Observer {
    /// The active AMQP probe.
    Probe,
    /// A client session connecting through the proxy (passive checking).
    Session,
}

impl fmt::Display for Observer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Observer::Probe => "probe",
            Observer::Session => "session",
        })
    }
}

/// One observation of a backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Outcome {
    pub observer: Observer,
    pub ok: bool,
}

/// The counters the transition rules read and write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Counters {
    pub state: HealthState,
    pub consecutive_successes: u32,
    pub consecutive_failures: u32,
}

impl Counters {
    pub const INITIAL: Counters = Counters {
        state: HealthState::Unknown,
        consecutive_successes: 0,
        consecutive_failures: 0,
    };
}

/// The transition rules: a success resets the failure count and a failure
/// the success count. A backend goes down after `fall` consecutive probe
/// failures, or `passive_fall` consecutive failures of any kind when the
/// last one was a session's; it comes back after `rise` consecutive probe
/// successes or one session that completed its handshake (the strongest
/// evidence there is). The first success of an unknown backend makes it up.
pub fn next_state(current: Counters, outcome: Outcome, policy: &HealthPolicy) -> Counters {
    let mut next = current;
    if outcome.ok {
        next.consecutive_successes = current.consecutive_successes.saturating_add(1);
        next.consecutive_failures = 0;
        let enough = match outcome.observer {
            Observer::Session => true,
            Observer::Probe => {
                current.state == HealthState::Unknown
                    || next.consecutive_successes >= policy.rise.max(1)
            }
        };
        if enough {
            next.state = HealthState::Up;
        }
    } else {
        next.consecutive_failures = current.consecutive_failures.saturating_add(1);
        next.consecutive_successes = 0;
        let threshold = match outcome.observer {
            Observer::Probe => policy.fall,
            Observer::Session => policy.passive_fall,
        };
        // A threshold of 0 turns that kind of marking off.
        if threshold > 0 && next.consecutive_failures >= threshold {
            next.state = HealthState::Down;
        }
    }
    next
}

/// The most recent failure seen for a backend.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LastError {
    pub observer: Observer,
    /// When, as time since the registry was created.
    pub at: Duration,
    /// The error's own text (a probe error or a session's connect failure).
    pub reason: String,
}

/// A consistent copy of one backend's health, for display.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthSnapshot {
    pub counters: Counters,
    pub last_error: Option<LastError>,
    /// When the state last changed, as time since the registry was created.
    pub since: Duration,
}

/// What [`BackendHealth::record`] did, so the caller can log a change once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Recorded {
    pub before: HealthState,
    pub after: HealthState,
}

impl Recorded {
    pub fn changed(&self) -> bool {
        self.before != self.after
    }
}

/// One backend's shared health. Reads are single atomic loads; writes (a
/// probe result, a session's failure, a success that moves a counter that
/// still decides something) are rare and serialised by `write`, so the
/// counters always move together.
#[derive(Debug)]
pub struct BackendHealth {
    state: AtomicU8,
    successes: AtomicU32,
    failures: AtomicU32,
    /// Milliseconds since the registry epoch of the last state change.
    since_ms: AtomicU64,
    /// Milliseconds since the registry epoch of the last failure, or 0.
    last_failure_ms: AtomicU64,
    write: Mutex<Option<LastError>>,
}

impl Default for BackendHealth {
    fn default() -> Self {
        Self::new()
    }
}

impl BackendHealth {
    pub fn new() -> BackendHealth {
        BackendHealth {
            state: AtomicU8::new(HealthState::Unknown.to_u8()),
            successes: AtomicU32::new(0),
            failures: AtomicU32::new(0),
            since_ms: AtomicU64::new(0),
            last_failure_ms: AtomicU64::new(0),
            write: Mutex::new(None),
        }
    }

    pub fn state(&self) -> HealthState {
        HealthState::from_u8(self.state.load(Ordering::Acquire))
    }

    /// Whether a session may be sent here at `now` (time since the registry
    /// epoch). A down backend is tried again once `policy.down_hold` has
    /// passed since its last failure when no probe will bring it back.
    pub fn routable(&self, now: Duration, policy: &HealthPolicy) -> bool {
        if policy.is_off() {
            return true;
        }
        match self.state() {
            HealthState::Unknown | HealthState::Up => true,
            HealthState::Down => match policy.down_hold_without_probe() {
                None => false,
                Some(hold) => {
                    let last = Duration::from_millis(self.last_failure_ms.load(Ordering::Acquire));
                    now.saturating_sub(last) >= hold
                }
            },
        }
    }

    /// Applies one observation made at `now`; `reason` is kept as the last
    /// error when the observation is a failure.
    pub fn record(
        &self,
        outcome: Outcome,
        reason: Option<&dyn fmt::Display>,
        now: Duration,
        policy: &HealthPolicy,
    ) -> Recorded {
        if self.settled_by(outcome, policy) {
            return Recorded {
                before: HealthState::Up,
                after: HealthState::Up,
            };
        }
        let mut last = self.write.lock().unwrap_or_else(|p| p.into_inner());
        let current = self.counters();
        let next = next_state(current, outcome, policy);
        let now_ms = u64::try_from(now.as_millis()).unwrap_or(u64::MAX);
        if !outcome.ok {
            // Never 0, which means "no failure yet".
            self.last_failure_ms.store(now_ms.max(1), Ordering::Release);
            *last = Some(LastError {
                observer: outcome.observer,
                at: now,
                reason: reason.map_or_else(|| "failed".to_string(), |r| r.to_string()),
            });
        }
        self.successes
            .store(next.consecutive_successes, Ordering::Release);
        self.failures
            .store(next.consecutive_failures, Ordering::Release);
        if next.state != current.state {
            self.since_ms.store(now_ms, Ordering::Release);
        }
        self.state.store(next.state.to_u8(), Ordering::Release);
        Recorded {
            before: current.state,
            after: next.state,
        }
    }

    /// Whether `outcome` changes nothing a route, a display or a later
    /// transition reads: a success while the backend is up, with no failure
    /// counted and `rise` successes in a row already (past that the count
    /// decides nothing; only a failure, which resets it, moves the backend).
    /// Every session that reaches `OpenOk` reports a success, from every
    /// shard: answered from three loads, it leaves the counters' cache line
    /// shared between the cores instead of moving it at each session.
    fn settled_by(&self, outcome: Outcome, policy: &HealthPolicy) -> bool {
        let current = self.counters();
        outcome.ok
            && current.state == HealthState::Up
            && current.consecutive_failures == 0
            && current.consecutive_successes >= policy.rise.max(1)
    }

    fn counters(&self) -> Counters {
        Counters {
            state: self.state(),
            consecutive_successes: self.successes.load(Ordering::Acquire),
            consecutive_failures: self.failures.load(Ordering::Acquire),
        }
    }

    pub fn snapshot(&self) -> HealthSnapshot {
        let last = self.write.lock().unwrap_or_else(|p| p.into_inner());
        HealthSnapshot {
            counters: self.counters(),
            last_error: last.clone(),
            since: Duration::from_millis(self.since_ms.load(Ordering::Acquire)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> HealthPolicy {
        HealthPolicy {
            rise: 2,
            fall: 3,
            passive_fall: 2,
            ..HealthPolicy::default()
        }
    }

    const PROBE_OK: Outcome = Outcome {
        observer: Observer::Probe,
        ok: true,
    };
    const PROBE_FAIL: Outcome = Outcome {
        observer: Observer::Probe,
        ok: false,
    };
    const SESSION_OK: Outcome = Outcome {
        observer: Observer::Session,
        ok: true,
    };
    const SESSION_FAIL: Outcome = Outcome {
        observer: Observer::Session,
        ok: false,
    };

    fn run(outcomes: &[Outcome]) -> Vec<HealthState> {
        let mut c = Counters::INITIAL;
        outcomes
            .iter()
            .map(|o| {
                c = next_state(c, *o, &policy());
                c.state
            })
            .collect()
    }

    use HealthState::{Down, Unknown, Up};

    #[test]
    fn first_probe_success_makes_an_unknown_backend_up() {
        assert_eq!(run(&[PROBE_OK]), [Up]);
    }

    #[test]
    fn fall_consecutive_probe_failures_mark_down_and_rise_successes_bring_back() {
        assert_eq!(
            run(&[PROBE_FAIL, PROBE_FAIL, PROBE_FAIL, PROBE_OK, PROBE_FAIL, PROBE_OK, PROBE_OK]),
            [Unknown, Unknown, Down, Down, Down, Down, Up]
        );
    }

    #[test]
    fn a_success_in_between_resets_the_failure_count() {
        assert_eq!(
            run(&[PROBE_FAIL, PROBE_FAIL, PROBE_OK, PROBE_FAIL, PROBE_FAIL]),
            [Unknown, Unknown, Up, Up, Up]
        );
    }

    #[test]
    fn passive_failures_mark_down_and_a_session_success_brings_back() {
        assert_eq!(
            run(&[SESSION_FAIL, SESSION_FAIL, SESSION_OK]),
            [Unknown, Down, Up]
        );
        // Probe and session failures add up; the last one's threshold counts.
        assert_eq!(run(&[PROBE_FAIL, SESSION_FAIL]), [Unknown, Down]);
    }

    #[test]
    fn a_success_on_a_settled_backend_stores_nothing() {
        let h = BackendHealth::new();
        let p = policy();
        let t = Duration::from_secs;
        // The first session success makes it up; the second reaches `rise`.
        for second in 1..=2 {
            h.record(SESSION_OK, None, t(second), &p);
        }
        let settled = h.snapshot();
        assert_eq!(settled.counters.consecutive_successes, 2);
        let r = h.record(SESSION_OK, None, t(3), &p);
        assert_eq!((r.before, r.after), (Up, Up));
        assert_eq!(h.snapshot(), settled, "a settled success moved a counter");
        // A failure still counts, and the next success is recorded again.
        h.record(PROBE_FAIL, Some(&"refused"), t(4), &p);
        assert_eq!(h.snapshot().counters.consecutive_failures, 1);
        h.record(SESSION_OK, None, t(5), &p);
        let after = h.snapshot().counters;
        assert_eq!(
            (
                after.state,
                after.consecutive_failures,
                after.consecutive_successes
            ),
            (Up, 0, 1)
        );
    }

    #[test]
    fn a_zero_threshold_turns_marking_off() {
        let off = HealthPolicy {
            fall: 0,
            passive_fall: 0,
            ..policy()
        };
        let mut c = Counters::INITIAL;
        for o in [PROBE_FAIL, SESSION_FAIL].repeat(10) {
            c = next_state(c, o, &off);
        }
        assert_eq!(c.state, Unknown);
        assert_eq!(c.consecutive_failures, 20);
    }

    #[test]
    fn record_keeps_the_last_error_and_the_time_of_change() {
        let h = BackendHealth::new();
        let p = policy();
        let t = Duration::from_secs;
        assert!(!h
            .record(SESSION_FAIL, Some(&"connection refused"), t(5), &p)
            .changed());
        let r = h.record(SESSION_FAIL, Some(&"no Connection.Start"), t(6), &p);
        assert_eq!((r.before, r.after), (Unknown, Down));
        let snap = h.snapshot();
        assert_eq!(snap.counters.consecutive_failures, 2);
        assert_eq!(snap.since, t(6));
        let last = snap.last_error.unwrap();
        assert_eq!(
            (last.observer, last.at, last.reason.as_str()),
            (Observer::Session, t(6), "no Connection.Start")
        );
        // A success keeps the last error for the operator to read.
        h.record(SESSION_OK, None, t(7), &p);
        assert_eq!(h.state(), Up);
        assert!(h.snapshot().last_error.is_some());
    }

    #[test]
    fn a_down_backend_is_retried_after_the_hold_only_without_a_probe() {
        let h = BackendHealth::new();
        let passive_only = HealthPolicy {
            interval: None,
            down_hold: Duration::from_secs(10),
            ..policy()
        };
        let t = Duration::from_secs;
        h.record(SESSION_FAIL, None, t(100), &passive_only);
        h.record(SESSION_FAIL, None, t(101), &passive_only);
        assert!(!h.routable(t(105), &passive_only));
        assert!(h.routable(t(111), &passive_only));
        let probing = HealthPolicy {
            interval: Some(Duration::from_secs(5)),
            ..passive_only
        };
        assert!(!h.routable(t(1000), &probing));
    }
}
