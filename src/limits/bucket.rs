//! Byte-rate token buckets for data shaping, shared across shards (see
//! `docs/commands.md#auth-and-limit`).
//!
//! Owns the arithmetic of one bucket, kept as a generic cell rate algorithm
//! (GCRA): a single atomic "theoretical arrival time" moves forward by the
//! cost of every byte charged, so all shards can meter one vhost's budget
//! without a lock, and the rate itself is an atomic that a control command
//! changes under live sessions. A reader asks [`TokenBucket::allowance`]
//! how many bytes it may read now, or how long to wait before asking again;
//! it reads at most that, then [`TokenBucket::charge`]s what it really read.
//! Concurrent readers may overshoot by a burst each, which the debt then
//! repays, so the long-run rate is exact. Never sleeps, never reads a clock,
//! never allocates.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use super::Stamp;

const NANOS_PER_SEC: u128 = 1_000_000_000;
/// `rate` value meaning "no limit".
const UNLIMITED: u64 = u64::MAX;

/// How much a shaping bucket lets through at once: 100 ms of its rate.
/// Small enough that a measured rate is close to the limit after a second,
/// large enough that reads are not tiny.
pub const SHAPING_BURST: Duration = Duration::from_millis(100);
/// An alarm bucket tolerates a second's worth, as the original's one-second
/// quota does.
pub const ALARM_BURST: Duration = Duration::from_secs(1);
/// A shaped reader waits until at least this much of the rate has built up,
/// so it reads in chunks rather than byte by byte.
pub const READ_QUANTUM: Duration = Duration::from_millis(25);
/// The shortest wait handed out, so a timer is never armed for nothing.
pub const MIN_WAIT: Duration = Duration::from_millis(1);
/// The longest wait handed out: a reader asks again at least this often, so
/// a raised or removed limit takes effect soon even at rate 0.
pub const MAX_WAIT: Duration = Duration::from_millis(250);

/// What a reader may do now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Allowance {
    /// Read at most this many bytes (never 0), then charge what was read.
    Read(usize),
    /// Read nothing; ask again after this long.
    Wait(Duration),
}

impl Allowance {
    /// The stricter of two allowances: the shorter read, or the longer wait.
    pub fn min(self, other: Allowance) -> Allowance {
        match (self, other) {
            (Allowance::Read(a), Allowance::Read(b)) => Allowance::Read(a.min(b)),
            (Allowance::Wait(a), Allowance::Wait(b)) => Allowance::Wait(a.max(b)),
            (w @ Allowance::Wait(_), Allowance::Read(_))
            | (Allowance::Read(_), w @ Allowance::Wait(_)) => w,
        }
    }
}

/// One rate, in bytes per second, metered with GCRA.
#[derive(Debug)]
pub struct TokenBucket {
    rate: AtomicU64,
    /// When the bucket would be full again, in nanoseconds on the [`Stamp`]
    /// scale; a value in the past means it is full.
    tat: AtomicU64,
    burst_ns: u64,
}

impl TokenBucket {
    /// A bucket with `rate` bytes per second (`None`: unlimited) that lets
    /// `burst` worth of the rate through at once.
    pub fn new(rate: Option<u64>, burst: Duration) -> TokenBucket {
        TokenBucket {
            rate: AtomicU64::new(rate.unwrap_or(UNLIMITED)),
            tat: AtomicU64::new(0),
            burst_ns: burst.as_nanos().min(u128::from(u64::MAX)) as u64,
        }
    }

    pub fn shaping(rate: Option<u64>) -> TokenBucket {
        TokenBucket::new(rate, SHAPING_BURST)
    }

    /// Changes the rate; readers see it at their next question. A new rate
    /// starts from a full bucket: debt run up under a low rate would
    /// otherwise hold readers for as long as it took at the old rate.
    /// Setting the rate it already has changes nothing.
    pub fn set_rate(&self, rate: Option<u64>) {
        let rate = rate.unwrap_or(UNLIMITED);
        if self.rate.swap(rate, Ordering::Relaxed) != rate {
            self.tat.store(0, Ordering::Release);
        }
    }

    pub fn rate(&self) -> Option<u64> {
        let rate = self.rate.load(Ordering::Relaxed);
        (rate != UNLIMITED).then_some(rate)
    }

    pub fn is_limited(&self) -> bool {
        self.rate.load(Ordering::Relaxed) != UNLIMITED
    }

    /// How many of `want` bytes may be read now, or how long to wait. A
    /// `want` of 0 is taken as 1.
    pub fn allowance(&self, now: Stamp, want: usize) -> Allowance {
        let rate = self.rate.load(Ordering::Relaxed);
        if rate == UNLIMITED {
            return Allowance::Read(want.max(1));
        }
        if rate == 0 {
            return Allowance::Wait(MAX_WAIT);
        }
        let now = now.as_nanos();
        let tat = self.tat.load(Ordering::Acquire).max(now);
        let room_ns = (now + self.burst_ns).saturating_sub(tat);
        let room = bytes_for(room_ns, rate);
        let quantum = bytes_for(READ_QUANTUM.as_nanos() as u64, rate)
            .max(1)
            .min(want.max(1) as u64);
        if room >= quantum {
            return Allowance::Read(room.min(want.max(1) as u64) as usize);
        }
        // Time at which `quantum` bytes of room will have built up.
        let ready = tat + cost_ns(quantum, rate);
        let wait = Duration::from_nanos(ready.saturating_sub(now + self.burst_ns));
        Allowance::Wait(wait.clamp(MIN_WAIT, MAX_WAIT))
    }

    /// Counts `bytes` as passed at `now`. Returns true when the bucket is
    /// now over its rate (more than its burst ahead), which is what an alarm
    /// reports.
    pub fn charge(&self, now: Stamp, bytes: usize) -> bool {
        self.charge_capped(now, bytes, u64::MAX)
    }

    /// [`charge`](Self::charge), with the debt kept within `max_debt_ns`
    /// beyond the burst. Shaping never caps (so the long-run rate holds
    /// however many readers overshoot together); an alarm does, so one huge
    /// read is not reported again for minutes after the traffic calmed.
    fn charge_capped(&self, now: Stamp, bytes: usize, max_debt_ns: u64) -> bool {
        let rate = self.rate.load(Ordering::Relaxed);
        if rate == UNLIMITED || bytes == 0 {
            return false;
        }
        let now = now.as_nanos();
        let over = now.saturating_add(self.burst_ns);
        let cap = over.saturating_add(max_debt_ns);
        let mut after = 0;
        // The closure never returns None, so this cannot fail.
        let _ = self
            .tat
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |tat| {
                after = if rate == 0 {
                    // Anything passing at rate 0 is over; say so without
                    // running up a debt.
                    tat.max(over + 1)
                } else {
                    tat.max(now)
                        .saturating_add(cost_ns(bytes as u64, rate))
                        .min(cap.max(tat))
                };
                Some(after)
            });
        after > over
    }
}

/// Bytes that `ns` nanoseconds of `rate` are worth, rounded down.
fn bytes_for(ns: u64, rate: u64) -> u64 {
    (u128::from(ns) * u128::from(rate) / NANOS_PER_SEC).min(u128::from(u64::MAX)) as u64
}

/// Nanoseconds that `bytes` cost at `rate`, rounded up so that many small
/// reads never add up to more than the rate.
fn cost_ns(bytes: u64, rate: u64) -> u64 {
    let rate = u128::from(rate);
    ((u128::from(bytes) * NANOS_PER_SEC).div_ceil(rate)).min(u128::from(u64::MAX)) as u64
}

/// An alarm-only bucket: it never delays anyone; when it is over its rate it
/// says so at most once per second, whichever shard notices first.
#[derive(Debug)]
pub struct AlarmBucket {
    bucket: TokenBucket,
    /// When the last alarm was reported (ns on the [`Stamp`] scale, + 1 so
    /// 0 means "never").
    last_alarm: AtomicU64,
}

impl AlarmBucket {
    pub fn new(rate: Option<u64>) -> AlarmBucket {
        AlarmBucket {
            bucket: TokenBucket::new(rate, ALARM_BURST),
            last_alarm: AtomicU64::new(0),
        }
    }

    pub fn set_rate(&self, rate: Option<u64>) {
        self.bucket.set_rate(rate);
    }

    pub fn rate(&self) -> Option<u64> {
        self.bucket.rate()
    }

    pub fn is_limited(&self) -> bool {
        self.bucket.is_limited()
    }

    /// Counts `bytes`; returns the rate to report if this charge raises the
    /// alarm (at most once per second across all callers).
    pub fn charge(&self, now: Stamp, bytes: usize) -> Option<u64> {
        let max_debt = self.bucket.burst_ns;
        if !self.bucket.charge_capped(now, bytes, max_debt) {
            return None;
        }
        let now_ns = now.as_nanos();
        let last = self.last_alarm.load(Ordering::Acquire);
        let due = last == 0 || now_ns + 1 >= last + 1_000_000_000;
        if due
            && self
                .last_alarm
                .compare_exchange(last, now_ns + 1, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
        {
            return self.bucket.rate();
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(ms: u64) -> Stamp {
        Stamp::from_nanos(ms * 1_000_000)
    }

    /// Reads as fast as allowed for `secs` seconds, waking when told, and
    /// returns the bytes read and the number of waits.
    fn drive(bucket: &TokenBucket, secs: u64, want: usize) -> (u64, u64) {
        let mut now = 1_000_000_000u64; // start at 1 s
        let end = now + secs * 1_000_000_000;
        let (mut total, mut waits) = (0u64, 0u64);
        while now < end {
            match bucket.allowance(Stamp::from_nanos(now), want) {
                Allowance::Read(n) => {
                    assert!(n > 0 && n <= want);
                    bucket.charge(Stamp::from_nanos(now), n);
                    total += n as u64;
                    now += 10_000; // a read takes 10 µs
                }
                Allowance::Wait(d) => {
                    assert!((MIN_WAIT..=MAX_WAIT).contains(&d), "{d:?}");
                    waits += 1;
                    now += d.as_nanos() as u64;
                }
            }
        }
        (total, waits)
    }

    #[test]
    fn unlimited_reads_everything_and_charges_nothing() {
        let b = TokenBucket::shaping(None);
        assert!(!b.is_limited());
        assert_eq!(b.allowance(ms(0), 65536), Allowance::Read(65536));
        assert!(!b.charge(ms(0), usize::MAX));
        assert_eq!(b.allowance(ms(0), 65536), Allowance::Read(65536));
    }

    #[test]
    fn long_run_rate_is_the_limit_within_the_burst() {
        for rate in [1_000u64, 1_000_000, 50_000_000] {
            let b = TokenBucket::shaping(Some(rate));
            let (total, _) = drive(&b, 10, 65536);
            let expected = rate * 10;
            let burst = rate / 10;
            assert!(
                total >= expected && total <= expected + burst + 65536,
                "rate {rate}: {total} bytes in 10 s"
            );
        }
    }

    #[test]
    fn a_shaped_reader_waits_instead_of_spinning() {
        // 1 MB/s in 64 KiB reads: about 15 reads a second, and waits of
        // several ms, not thousands of 1 ms polls.
        let b = TokenBucket::shaping(Some(1_000_000));
        let (_, waits) = drive(&b, 10, 65536);
        assert!(waits < 10 * 60, "{waits} waits in 10 s");
    }

    #[test]
    fn first_read_gets_the_burst_then_must_wait() {
        let b = TokenBucket::shaping(Some(1_000_000));
        assert_eq!(b.allowance(ms(1000), 1 << 20), Allowance::Read(100_000));
        b.charge(ms(1000), 100_000);
        // 25 ms of rate (the read quantum) must build up first.
        assert_eq!(
            b.allowance(ms(1000), 1 << 20),
            Allowance::Wait(Duration::from_millis(25))
        );
        assert_eq!(b.allowance(ms(1025), 1 << 20), Allowance::Read(25_000));
    }

    #[test]
    fn a_small_buffer_is_served_without_waiting_for_a_full_quantum() {
        let b = TokenBucket::shaping(Some(1_000_000));
        b.charge(ms(1000), 100_000);
        assert_eq!(b.allowance(ms(1001), 1000), Allowance::Read(1000));
    }

    #[test]
    fn overshoot_by_concurrent_readers_is_repaid_as_debt() {
        let b = TokenBucket::shaping(Some(1_000_000));
        // Two shards both saw the full burst and both read it.
        assert!(!b.charge(ms(1000), 100_000));
        assert!(b.charge(ms(1000), 100_000), "now over the rate");
        // The second burst is repaid before anything more is allowed.
        assert!(matches!(b.allowance(ms(1100), 65536), Allowance::Wait(_)));
        assert_eq!(b.allowance(ms(1125), 65536), Allowance::Read(25_000));
    }

    #[test]
    fn a_new_rate_forgives_debt_from_the_old_one() {
        let b = TokenBucket::shaping(Some(10));
        // Readers overshot a tiny rate: hours of debt.
        b.charge(ms(1000), 65536);
        assert!(matches!(b.allowance(ms(2000), 4096), Allowance::Wait(_)));
        b.set_rate(Some(10));
        assert!(
            matches!(b.allowance(ms(2000), 4096), Allowance::Wait(_)),
            "same rate: nothing changes"
        );
        b.set_rate(Some(1_000_000));
        assert_eq!(b.allowance(ms(2000), 4096), Allowance::Read(4096));
    }

    #[test]
    fn alarm_debt_is_capped() {
        let a = AlarmBucket::new(Some(1000));
        // 1 MB at 1000 B/s would be 1000 s of debt; the alarm forgets it
        // within two seconds of the traffic calming down.
        assert_eq!(a.charge(ms(1000), 1_000_000), Some(1000));
        assert_eq!(a.charge(ms(4000), 10), None);
    }

    #[test]
    fn rate_zero_blocks_and_waits_the_longest() {
        let b = TokenBucket::shaping(Some(0));
        assert_eq!(b.allowance(ms(5), 10), Allowance::Wait(MAX_WAIT));
        assert!(b.charge(ms(5), 1));
        // No debt builds up at rate 0, however much passed.
        for _ in 0..1000 {
            b.charge(ms(5), 1 << 20);
        }
        assert!(b.tat.load(Ordering::Acquire) <= ms(5).as_nanos() + b.burst_ns + 1);
    }

    #[test]
    fn live_rate_change_applies_at_the_next_question() {
        let b = TokenBucket::shaping(Some(0));
        assert!(matches!(b.allowance(ms(0), 10), Allowance::Wait(_)));
        b.set_rate(None);
        assert_eq!(b.allowance(ms(0), 10), Allowance::Read(10));
        b.set_rate(Some(1000));
        assert_eq!(b.rate(), Some(1000));
        assert_eq!(b.allowance(ms(10_000), 1000), Allowance::Read(100));
    }

    #[test]
    fn tiny_rates_still_make_progress() {
        let b = TokenBucket::shaping(Some(10));
        let (total, _) = drive(&b, 10, 4096);
        assert!((100..=102).contains(&total), "{total}");
    }

    #[test]
    fn huge_rates_do_not_overflow() {
        let b = TokenBucket::shaping(Some(u64::MAX - 1));
        assert_eq!(b.allowance(ms(0), 1 << 20), Allowance::Read(1 << 20));
        assert!(!b.charge(ms(0), 1 << 20));
    }

    #[test]
    fn stricter_allowance_wins() {
        let w = |ms| Allowance::Wait(Duration::from_millis(ms));
        assert_eq!(
            Allowance::Read(5).min(Allowance::Read(3)),
            Allowance::Read(3)
        );
        assert_eq!(Allowance::Read(5).min(w(2)), w(2));
        assert_eq!(w(2).min(w(7)), w(7));
    }

    #[test]
    fn alarm_reports_at_most_once_a_second() {
        let a = AlarmBucket::new(Some(1000));
        assert_eq!(a.charge(ms(1000), 1000), None, "within the burst");
        assert_eq!(a.charge(ms(1000), 1001), Some(1000));
        assert_eq!(a.charge(ms(1500), 5000), None, "already reported");
        assert_eq!(a.charge(ms(2000), 5000), Some(1000));
        a.set_rate(None);
        assert_eq!(a.charge(ms(9000), 1 << 30), None);
    }

    #[test]
    fn threads_sharing_a_bucket_keep_its_rate() {
        use std::sync::Arc;
        let b = Arc::new(TokenBucket::shaping(Some(1_000_000)));
        let threads: Vec<_> = (0..2)
            .map(|_| {
                let b = b.clone();
                std::thread::spawn(move || drive(&b, 10, 16384).0)
            })
            .collect();
        let total: u64 = threads.into_iter().map(|t| t.join().unwrap()).sum();
        // Each thread runs its own simulated clock over the same 10 s, so
        // they are not in step; together they still get one budget, plus
        // at most a burst and a read each.
        assert!(
            (9_000_000..=10_000_000 + 2 * (100_000 + 16384)).contains(&total),
            "{total}"
        );
    }

    mod properties {
        use super::*;
        use proptest::prelude::*;

        proptest! {
            /// One reader that reads at most what it is allowed (sometimes
            /// less) never gets more than the rate over the elapsed time
            /// plus one burst, and is never told to wait outside the bounds.
            #[test]
            fn a_single_reader_never_exceeds_rate_plus_burst(
                rate in 1u64..50_000_000,
                steps in proptest::collection::vec((0u64..50_000_000, 1usize..200_000, 0u8..=100), 1..300),
            ) {
                let b = TokenBucket::shaping(Some(rate));
                let start = 1_000_000_000u64;
                let mut now = start;
                let mut total = 0u64;
                for (advance, want, percent) in steps {
                    now += advance;
                    match b.allowance(Stamp::from_nanos(now), want) {
                        Allowance::Read(n) => {
                            prop_assert!(n >= 1 && n <= want);
                            let read = (n as u64 * u64::from(percent) / 100) as usize;
                            b.charge(Stamp::from_nanos(now), read);
                            total += read as u64;
                        }
                        Allowance::Wait(d) => prop_assert!((MIN_WAIT..=MAX_WAIT).contains(&d)),
                    }
                    let elapsed = u128::from(now - start);
                    let limit = (elapsed + u128::from(b.burst_ns)) * u128::from(rate) / NANOS_PER_SEC;
                    prop_assert!(u128::from(total) <= limit + 1, "{} > {}", total, limit);
                }
            }
        }
    }
}
