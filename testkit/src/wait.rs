//! Waiting on a condition with a deadline, the one way tests wait: a test
//! never sleeps a fixed time hoping that something has happened by then; it
//! re-checks the condition until it holds or the deadline passes, so it is
//! as fast as the machine allows and still steady on a loaded one.
//!
//! `wait_until`/`poll_until` return what they saw and leave the verdict to
//! the caller; `wait_for`/`poll_for` panic with a description of what did
//! not happen. The `_async` twins use tokio's timer so they never block a
//! runtime thread. Nothing waits without a deadline; the pause between
//! checks grows to [`MAX_POLL_INTERVAL`], or is given (`_every`) when a
//! check is itself expensive (`rabbitmqctl`).
//!
//! Two waits are not on a condition, and say so in their names: [`settle`]
//! (a producer with no completion signal, such as a batching log writer,
//! has gone quiet) and [`idle_for`] (time passing *is* the behaviour under
//! test: an idle connection that must survive, a client that stays silent).

use std::future::Future;
use std::thread;
use std::time::{Duration, Instant};

/// The first pause between two checks; doubled after each failed check.
pub const FIRST_POLL_INTERVAL: Duration = Duration::from_millis(2);

/// The longest pause between two checks: a condition that becomes true is
/// seen at most this late.
pub const MAX_POLL_INTERVAL: Duration = Duration::from_millis(25);

/// The instant `within` from now.
pub fn deadline_in(within: Duration) -> Instant {
    Instant::now() + within
}

/// The pauses between checks: short at first (most conditions hold
/// quickly), then capped so a slow one costs little CPU.
struct Backoff(Duration);

impl Backoff {
    fn new() -> Backoff {
        Backoff(FIRST_POLL_INTERVAL)
    }

    /// The next pause, never past `deadline`; `None` once it has passed.
    fn next(&mut self, deadline: Instant) -> Option<Duration> {
        let left = deadline.checked_duration_since(Instant::now())?;
        if left.is_zero() {
            return None;
        }
        let pause = self.0.min(left);
        self.0 = (self.0 * 2).min(MAX_POLL_INTERVAL);
        Some(pause)
    }
}

/// A deadline with the kit's backoff, for a wait loop that keeps state
/// across checks (and so fits no closure): check, and if the check failed,
/// `if !deadline.pause() { panic!(..) }`. The pause is never longer than
/// what is left, so the check after the last pause falls on the deadline.
pub struct Deadline {
    at: Instant,
    backoff: Backoff,
}

impl Deadline {
    /// The deadline `within` from now.
    pub fn within(within: Duration) -> Deadline {
        Deadline::at(deadline_in(within))
    }

    pub fn at(at: Instant) -> Deadline {
        Deadline {
            at,
            backoff: Backoff::new(),
        }
    }

    /// True once the deadline has passed.
    pub fn passed(&self) -> bool {
        Instant::now() >= self.at
    }

    /// Pauses before the next check and returns true; returns false at
    /// once if the deadline has passed (the last check was the last one).
    pub fn pause(&mut self) -> bool {
        match self.backoff.next(self.at) {
            Some(pause) => {
                thread::sleep(pause);
                true
            }
            None => false,
        }
    }

    /// [`Deadline::pause`] on tokio's timer.
    pub async fn pause_async(&mut self) -> bool {
        match self.backoff.next(self.at) {
            Some(pause) => {
                tokio::time::sleep(pause).await;
                true
            }
            None => false,
        }
    }
}

/// Re-checks `condition` until it holds (true) or `deadline` passes
/// (false). The condition is always checked at least once, and once more
/// at the deadline.
pub fn wait_until(deadline: Instant, mut condition: impl FnMut() -> bool) -> bool {
    poll_until(deadline, || condition().then_some(())).is_some()
}

/// Calls `probe` until it returns a value or `deadline` passes (`None`).
pub fn poll_until<T>(deadline: Instant, mut probe: impl FnMut() -> Option<T>) -> Option<T> {
    let mut deadline = Deadline::at(deadline);
    loop {
        if let Some(value) = probe() {
            return Some(value);
        }
        if !deadline.pause() {
            return None;
        }
    }
}

/// [`poll_until`] with a fixed pause `every` between checks, for probes
/// that are expensive themselves (a `rabbitmqctl` call costs a second of
/// CPU; checking back to back would load the machine it measures).
pub fn poll_until_every<T>(
    deadline: Instant,
    every: Duration,
    mut probe: impl FnMut() -> Option<T>,
) -> Option<T> {
    loop {
        if let Some(value) = probe() {
            return Some(value);
        }
        let left = deadline.checked_duration_since(Instant::now())?;
        thread::sleep(every.min(left));
    }
}

/// Reads `read` until two reads `quiet` apart agree, or `deadline` passes:
/// `Ok(value)` once settled, `Err(last value)` if it kept changing. For a
/// producer that works in batches and gives no completion signal (the
/// proxy's log writer): it has settled when a whole quiet period changed
/// nothing. A fixed pause by nature; prefer a condition whenever one exists.
pub fn settle<T: PartialEq>(
    deadline: Instant,
    quiet: Duration,
    mut read: impl FnMut() -> T,
) -> Result<T, T> {
    let mut last = read();
    loop {
        thread::sleep(quiet);
        let now = read();
        if now == last {
            return Ok(now);
        }
        if Instant::now() >= deadline {
            return Err(now);
        }
        last = now;
    }
}

/// Lets `period` pass on purpose. Only for tests where elapsed time is the
/// behaviour under test (a session that must outlive a timeout, a client
/// that stays silent, a publisher's pace); never to wait for something to
/// happen, which is what [`wait_until`] is for.
pub fn idle_for(period: Duration) {
    thread::sleep(period)
}

/// [`idle_for`] on tokio's timer.
pub async fn idle_for_async(period: Duration) {
    tokio::time::sleep(period).await
}

/// Waits up to `within` for `condition`; panics naming `what` otherwise.
pub fn wait_for(within: Duration, what: &str, condition: impl FnMut() -> bool) {
    if !wait_until(deadline_in(within), condition) {
        panic!("timed out after {within:?} waiting for {what}");
    }
}

/// Waits up to `within` for `probe` to give a value; panics naming `what`
/// otherwise.
pub fn poll_for<T>(within: Duration, what: &str, probe: impl FnMut() -> Option<T>) -> T {
    poll_until(deadline_in(within), probe)
        .unwrap_or_else(|| panic!("timed out after {within:?} waiting for {what}"))
}

/// [`wait_until`] for a condition that is itself async.
pub async fn wait_until_async<F, Fut>(deadline: Instant, mut condition: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    poll_until_async(deadline, || {
        let check = condition();
        async move { check.await.then_some(()) }
    })
    .await
    .is_some()
}

/// [`poll_until`] for a probe that is itself async; sleeps on tokio's timer.
pub async fn poll_until_async<T, F, Fut>(deadline: Instant, mut probe: F) -> Option<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let mut deadline = Deadline::at(deadline);
    loop {
        if let Some(value) = probe().await {
            return Some(value);
        }
        if !deadline.pause_async().await {
            return None;
        }
    }
}

/// [`poll_until_every`] for a probe that is itself async.
pub async fn poll_until_every_async<T, F, Fut>(
    deadline: Instant,
    every: Duration,
    mut probe: F,
) -> Option<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    loop {
        if let Some(value) = probe().await {
            return Some(value);
        }
        let left = deadline.checked_duration_since(Instant::now())?;
        tokio::time::sleep(every.min(left)).await;
    }
}

/// [`wait_for`] for an async condition.
pub async fn wait_for_async<F, Fut>(within: Duration, what: &str, condition: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    if !wait_until_async(deadline_in(within), condition).await {
        panic!("timed out after {within:?} waiting for {what}");
    }
}

/// [`poll_for`] for an async probe.
pub async fn poll_for_async<T, F, Fut>(within: Duration, what: &str, probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    poll_until_async(deadline_in(within), probe)
        .await
        .unwrap_or_else(|| panic!("timed out after {within:?} waiting for {what}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::Cell;

    #[test]
    fn a_condition_that_comes_true_is_seen() {
        let calls = Cell::new(0);
        let held = wait_until(deadline_in(Duration::from_secs(30)), || {
            calls.set(calls.get() + 1);
            calls.get() == 3
        });
        assert!(held);
        assert_eq!(calls.get(), 3);
    }

    #[test]
    fn a_condition_that_never_holds_times_out_after_a_last_look() {
        let calls = Cell::new(0);
        let started = Instant::now();
        let held = wait_until(deadline_in(Duration::from_millis(60)), || {
            calls.set(calls.get() + 1);
            false
        });
        assert!(!held);
        assert!(started.elapsed() >= Duration::from_millis(60));
        assert!(calls.get() >= 2, "checked {} times", calls.get());
    }

    #[test]
    fn a_past_deadline_still_checks_once() {
        assert_eq!(poll_until(Instant::now(), || Some(7)), Some(7));
    }

    #[test]
    fn poll_every_checks_at_its_own_pace() {
        let calls = Cell::new(0);
        let started = Instant::now();
        let got = poll_until_every(
            deadline_in(Duration::from_secs(30)),
            Duration::from_millis(20),
            || {
                calls.set(calls.get() + 1);
                (calls.get() == 3).then_some("third")
            },
        );
        assert_eq!(got, Some("third"));
        assert!(started.elapsed() >= Duration::from_millis(40));
    }

    #[test]
    fn settle_returns_once_a_quiet_period_changed_nothing() {
        let reads = Cell::new(0);
        let settled = settle(
            deadline_in(Duration::from_secs(30)),
            Duration::from_millis(5),
            || {
                reads.set(reads.get() + 1);
                reads.get().min(3)
            },
        );
        assert_eq!(settled, Ok(3));
    }

    #[test]
    fn settle_gives_up_on_a_value_that_keeps_changing() {
        let reads = Cell::new(0);
        let settled = settle(
            deadline_in(Duration::from_millis(30)),
            Duration::from_millis(5),
            || {
                reads.set(reads.get() + 1);
                reads.get()
            },
        );
        assert!(settled.is_err());
    }

    #[test]
    #[should_panic(expected = "waiting for the impossible")]
    fn wait_for_names_what_did_not_happen() {
        wait_for(Duration::from_millis(10), "the impossible", || false);
    }

    #[test]
    fn the_async_twin_polls_an_async_probe() {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .unwrap();
        let calls = Cell::new(0);
        let got = runtime.block_on(poll_for_async(Duration::from_secs(30), "a value", || {
            calls.set(calls.get() + 1);
            let n = calls.get();
            async move { (n >= 4).then_some(n) }
        }));
        assert_eq!(got, 4);
    }
}
