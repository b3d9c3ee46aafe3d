//! The open-files limit (see `docs/reliability.md`): raising the soft
//! `RLIMIT_NOFILE` to the hard limit at start, a small reserve of open
//! descriptors that is given back when `accept` fails with "too many open
//! files" (so the control socket and the log file keep working at the
//! limit), the backoff of accept retries after such a failure, and a bound
//! on concurrent clients (the control socket serves each on a thread).
//!
//! It never accepts, logs or sleeps itself: the supervisor logs what
//! [`raise_to_hard`] did, and the accept loops ask [`AcceptBackoff`] how
//! long to wait and whether to log. The limit arithmetic and the backoff
//! are pure functions.

use std::fmt;
use std::fs::File;
use std::io;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// `RLIMIT_NOFILE` as the kernel reports it; `None` is "unlimited".
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NofileLimit {
    pub soft: Option<u64>,
    pub hard: Option<u64>,
}

/// What [`raise_to_hard`] did, for the log at `-v 3`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Raise {
    /// The soft limit already was as high as it can go.
    Unchanged {
        soft: u64,
    },
    Raised {
        from: u64,
        to: u64,
    },
}

impl fmt::Display for Raise {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Raise::Unchanged { soft } => {
                write!(f, "open-files limit is {soft} (already the hard limit)")
            }
            Raise::Raised { from, to } => {
                write!(f, "raised the open-files limit from {from} to {to}")
            }
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum FdLimitError {
    #[error("cannot read the open-files limit: {0}")]
    Get(io::Error),
    #[error("cannot raise the open-files limit from {from} to {to}: {source}")]
    Set {
        from: u64,
        to: u64,
        source: io::Error,
    },
}

fn from_rlim(v: libc::rlim_t) -> Option<u64> {
    (v != libc::RLIM_INFINITY).then_some(v)
}

/// The current limits of this process.
pub fn current() -> Result<NofileLimit, FdLimitError> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes one rlimit into the struct we own.
    let rc = unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) };
    if rc != 0 {
        return Err(FdLimitError::Get(io::Error::last_os_error()));
    }
    Ok(NofileLimit {
        soft: from_rlim(lim.rlim_cur),
        hard: from_rlim(lim.rlim_max),
    })
}

/// The kernel's ceiling for any process's descriptors (`fs.nr_open`): an
/// unlimited hard limit cannot be used as a soft limit above it.
fn nr_open() -> Option<u64> {
    std::fs::read_to_string("/proc/sys/fs/nr_open")
        .ok()?
        .trim()
        .parse()
        .ok()
}

/// The soft limit to ask for, or `None` when the current one stays: the
/// hard limit, capped by `ceiling` (an unlimited hard limit with no known
/// ceiling leaves the soft limit alone), never lower than now.
pub fn target_soft(limit: NofileLimit, ceiling: Option<u64>) -> Option<u64> {
    let soft = limit.soft?; // already unlimited
    let top = match (limit.hard, ceiling) {
        (Some(h), Some(c)) => h.min(c),
        (Some(h), None) => h,
        (None, Some(c)) => c,
        (None, None) => return None,
    };
    (top > soft).then_some(top)
}

/// Raises the soft limit to the hard limit (see [`target_soft`]).
pub fn raise_to_hard() -> Result<Raise, FdLimitError> {
    let limit = current()?;
    let soft = limit.soft.unwrap_or(u64::MAX);
    let Some(to) = target_soft(limit, nr_open()) else {
        return Ok(Raise::Unchanged { soft });
    };
    let lim = libc::rlimit {
        rlim_cur: to as libc::rlim_t,
        rlim_max: limit
            .hard
            .map_or(libc::RLIM_INFINITY, |h| h as libc::rlim_t),
    };
    // SAFETY: setrlimit reads one rlimit from the struct we own.
    let rc = unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &lim) };
    if rc != 0 {
        return Err(FdLimitError::Set {
            from: soft,
            to,
            source: io::Error::last_os_error(),
        });
    }
    Ok(Raise::Raised { from: soft, to })
}

/// A few descriptors held open on `/dev/null` so that, when the process
/// runs out, one can be given back for the control socket's `accept` or the
/// log file's reopen, and taken again afterwards. Share it behind a mutex
/// between the threads that need it; shards never take it.
#[derive(Debug)]
pub struct DescriptorReserve {
    held: Vec<File>,
    wanted: usize,
}

impl DescriptorReserve {
    /// Opens `wanted` descriptors now; fails if even that is impossible.
    pub fn new(wanted: usize) -> io::Result<DescriptorReserve> {
        let mut reserve = DescriptorReserve {
            held: Vec::with_capacity(wanted),
            wanted,
        };
        while reserve.held.len() < wanted {
            reserve.held.push(File::open("/dev/null")?);
        }
        Ok(reserve)
    }

    pub fn held(&self) -> usize {
        self.held.len()
    }

    /// Closes one reserved descriptor; false when none is left.
    pub fn release(&mut self) -> bool {
        self.held.pop().is_some()
    }

    /// Reopens descriptors up to the wanted count, as far as the limit
    /// allows; returns how many are held.
    pub fn refill(&mut self) -> usize {
        while self.held.len() < self.wanted {
            match File::open("/dev/null") {
                Ok(f) => self.held.push(f),
                Err(_) => break,
            }
        }
        self.held.len()
    }

    /// Runs `op` with one reserved descriptor given back to the process,
    /// then refills. Use it to retry an operation that failed with
    /// [`is_descriptor_exhaustion`].
    pub fn with_released<T>(&mut self, op: impl FnOnce() -> T) -> T {
        self.release();
        let out = op();
        self.refill();
        out
    }
}

/// Whether an error means the process (EMFILE) or the system (ENFILE) is
/// out of descriptors, or the kernel out of socket memory: retrying at once
/// fails the same way, so accept loops back off.
pub fn is_descriptor_exhaustion(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM)
    )
}

/// The wait before the next accept after `failures` consecutive
/// exhaustion failures (1 for the first): `base` doubled each time, at most
/// `max`.
pub fn backoff_delay(failures: u32, base: Duration, max: Duration) -> Duration {
    let shift = failures.saturating_sub(1).min(20);
    base.saturating_mul(1u32 << shift).min(max)
}

/// Whether the `failures`-th consecutive failure is logged: the 1st, 2nd,
/// 4th, ... up to the 64th, then every 64th (about once a minute at a
/// one-second backoff), instead of every one.
pub fn should_log(failures: u32) -> bool {
    failures != 0 && ((failures <= 64 && failures.is_power_of_two()) || failures.is_multiple_of(64))
}

/// What to do after an accept failed for lack of descriptors.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BackoffStep {
    pub delay: Duration,
    /// Log this failure (with `failures` in the line); the others are
    /// counted, not logged.
    pub log: bool,
    pub failures: u32,
}

/// The accept-retry state of one accept loop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AcceptBackoff {
    base: Duration,
    max: Duration,
    failures: u32,
}

impl Default for AcceptBackoff {
    /// 10 ms doubling to 1 s.
    fn default() -> Self {
        AcceptBackoff::new(Duration::from_millis(10), Duration::from_secs(1))
    }
}

impl AcceptBackoff {
    pub fn new(base: Duration, max: Duration) -> AcceptBackoff {
        AcceptBackoff {
            base,
            max,
            failures: 0,
        }
    }

    /// Another consecutive failure.
    pub fn on_failure(&mut self) -> BackoffStep {
        self.failures = self.failures.saturating_add(1);
        BackoffStep {
            delay: backoff_delay(self.failures, self.base, self.max),
            log: should_log(self.failures),
            failures: self.failures,
        }
    }

    /// An accept worked: returns how many failures preceded it (to log
    /// "accepting again after N failures"), or `None` if there were none.
    pub fn on_success(&mut self) -> Option<u32> {
        let failures = std::mem::take(&mut self.failures);
        (failures > 0).then_some(failures)
    }
}

/// A bound on clients served at once: [`ClientSlots::try_acquire`] gives a
/// slot while fewer than the bound are taken, and the slot is given back
/// when dropped (when the client's thread ends).
#[derive(Debug, Clone)]
pub struct ClientSlots {
    taken: Arc<AtomicUsize>,
    max: usize,
}

/// One client's slot; dropping it frees the slot.
#[derive(Debug)]
pub struct ClientSlot {
    taken: Arc<AtomicUsize>,
}

impl Drop for ClientSlot {
    fn drop(&mut self) {
        self.taken.fetch_sub(1, Ordering::AcqRel);
    }
}

impl ClientSlots {
    pub fn new(max: usize) -> ClientSlots {
        ClientSlots {
            taken: Default::default(),
            max,
        }
    }

    pub fn max(&self) -> usize {
        self.max
    }

    pub fn in_use(&self) -> usize {
        self.taken.load(Ordering::Acquire)
    }

    /// A slot, or `None` when all are taken: refuse the client with a
    /// reply that says so.
    pub fn try_acquire(&self) -> Option<ClientSlot> {
        self.taken
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < self.max).then_some(n + 1)
            })
            .ok()
            .map(|_| ClientSlot {
                taken: Arc::clone(&self.taken),
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: fn(u64) -> Duration = Duration::from_millis;

    #[test]
    fn target_soft_is_the_hard_limit_capped_by_the_ceiling() {
        let lim = |soft, hard| NofileLimit { soft, hard };
        assert_eq!(target_soft(lim(Some(1024), Some(4096)), None), Some(4096));
        assert_eq!(
            target_soft(lim(Some(1024), Some(4096)), Some(2048)),
            Some(2048)
        );
        assert_eq!(
            target_soft(lim(Some(1024), None), Some(1 << 20)),
            Some(1 << 20)
        );
        assert_eq!(target_soft(lim(Some(1024), None), None), None);
        assert_eq!(target_soft(lim(Some(4096), Some(4096)), None), None);
        assert_eq!(target_soft(lim(None, None), Some(10)), None);
        // Never lowered.
        assert_eq!(target_soft(lim(Some(4096), Some(8192)), Some(1024)), None);
    }

    #[test]
    fn raising_reaches_the_hard_limit_and_is_idempotent() {
        let first = raise_to_hard().expect("raise");
        let now = current().unwrap();
        match first {
            Raise::Raised { to, .. } => assert_eq!(now.soft, Some(to)),
            Raise::Unchanged { soft } => assert_eq!(now.soft.unwrap_or(u64::MAX), soft),
        }
        assert!(matches!(raise_to_hard().unwrap(), Raise::Unchanged { .. }));
        assert!(first.to_string().contains("open-files limit"));
    }

    #[test]
    fn the_reserve_gives_back_and_takes_again() {
        let mut r = DescriptorReserve::new(3).unwrap();
        assert_eq!(r.held(), 3);
        assert!(r.release());
        assert_eq!(r.held(), 2);
        let inside = r.with_released(|| 7);
        assert_eq!(inside, 7);
        assert_eq!(r.refill(), 3);
        let mut empty = DescriptorReserve::new(0).unwrap();
        assert!(!empty.release());
    }

    #[test]
    fn exhaustion_errors_are_recognised() {
        for code in [libc::EMFILE, libc::ENFILE, libc::ENOBUFS, libc::ENOMEM] {
            assert!(is_descriptor_exhaustion(&io::Error::from_raw_os_error(
                code
            )));
        }
        assert!(!is_descriptor_exhaustion(&io::Error::from_raw_os_error(
            libc::ECONNABORTED
        )));
        assert!(!is_descriptor_exhaustion(&io::Error::other("x")));
    }

    #[test]
    fn backoff_doubles_to_the_cap_and_resets_on_success() {
        let mut b = AcceptBackoff::new(MS(10), MS(1000));
        let delays: Vec<u64> = (0..9)
            .map(|_| b.on_failure().delay.as_millis() as u64)
            .collect();
        assert_eq!(delays, [10, 20, 40, 80, 160, 320, 640, 1000, 1000]);
        assert_eq!(b.on_success(), Some(9));
        assert_eq!(b.on_success(), None);
        assert_eq!(b.on_failure().delay, MS(10));
        assert_eq!(backoff_delay(u32::MAX, MS(10), MS(1000)), MS(1000));
    }

    #[test]
    fn client_slots_bound_and_free_on_drop() {
        let slots = ClientSlots::new(2);
        let a = slots.try_acquire().expect("first");
        let b = slots
            .clone()
            .try_acquire()
            .expect("second, through a clone");
        assert!(slots.try_acquire().is_none());
        assert_eq!(slots.in_use(), 2);
        drop(a);
        let c = slots.try_acquire().expect("freed by drop");
        drop((b, c));
        assert_eq!(slots.in_use(), 0);
        assert!(ClientSlots::new(0).try_acquire().is_none());
    }

    #[test]
    fn only_some_failures_are_logged() {
        let logged: Vec<u32> = (0..=300).filter(|&n| should_log(n)).collect();
        assert_eq!(logged, [1, 2, 4, 8, 16, 32, 64, 128, 192, 256]);
    }
}
