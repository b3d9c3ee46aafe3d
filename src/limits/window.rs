//! The connection-rate limiter: a fixed one-second window, as the original
//! amqpprox counts (see `docs/commands.md#auth-and-limit`).
//!
//! Owns one window's state in a single atomic word, so every shard admits
//! against the same window without a lock: two shards together admit N per
//! second, not N each. The window opens at the first request after the
//! previous one expired (not on wall-clock seconds); within it the first N
//! requests are admitted and counted, later ones are refused and not
//! counted; N = 0 refuses everything. Never reads a clock: the caller passes
//! the time.

use std::sync::atomic::{AtomicU64, Ordering};

use super::Stamp;

/// The window's length.
pub const WINDOW_MS: u64 = 1000;

// Layout of the word: (window start in ms + 1) << 24 | admitted count.
// 0 means "no window yet". 40 bits of milliseconds last 34 years of uptime.
const COUNT_BITS: u32 = 24;
const COUNT_MASK: u64 = (1 << COUNT_BITS) - 1;

/// One fixed-window counter, shared by every shard.
#[derive(Debug, Default)]
pub struct RateWindow {
    state: AtomicU64,
}

impl RateWindow {
    pub fn new() -> RateWindow {
        RateWindow::default()
    }

    /// Admits and counts one request if fewer than `limit` were admitted in
    /// the current window. The count saturates at 2^24 - 1, so a limit above
    /// that (16 million connections a second) admits everything.
    pub fn try_admit(&self, limit: u32, now: Stamp) -> bool {
        if limit == 0 {
            return false;
        }
        let now_ms = now.as_millis();
        let mut current = self.state.load(Ordering::Acquire);
        loop {
            let (start, count) = match unpack(current) {
                Some((start, count)) if now_ms < start + WINDOW_MS => (start, count),
                _ => (now_ms, 0),
            };
            if count >= u64::from(limit) {
                return false;
            }
            let next = pack(start, (count + 1).min(COUNT_MASK));
            match self.state.compare_exchange_weak(
                current,
                next,
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) => return true,
                Err(seen) => current = seen,
            }
        }
    }

    /// Starts afresh, as a newly made limiter does.
    pub fn reset(&self) {
        self.state.store(0, Ordering::Release);
    }

    /// Whether no window is open at `now` (a fresh window would behave the
    /// same as this one).
    pub fn is_idle(&self, now: Stamp) -> bool {
        match unpack(self.state.load(Ordering::Acquire)) {
            Some((start, _)) => now.as_millis() >= start + WINDOW_MS,
            None => true,
        }
    }
}

fn pack(start_ms: u64, count: u64) -> u64 {
    ((start_ms + 1) << COUNT_BITS) | count
}

fn unpack(word: u64) -> Option<(u64, u64)> {
    (word != 0).then(|| ((word >> COUNT_BITS) - 1, word & COUNT_MASK))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(ms: u64) -> Stamp {
        Stamp::from_nanos(ms * 1_000_000)
    }

    #[test]
    fn admits_n_per_window_and_refused_requests_are_not_counted() {
        let w = RateWindow::new();
        assert!(w.try_admit(2, at(500)));
        assert!(w.try_admit(2, at(600)));
        assert!(!w.try_admit(2, at(700)));
        assert!(!w.try_admit(2, at(1499)));
        // The window opened at 500 ms, not at a wall-clock second.
        assert!(w.try_admit(2, at(1500)));
        assert!(w.try_admit(2, at(1501)));
        assert!(!w.try_admit(2, at(1502)));
    }

    #[test]
    fn window_opens_at_the_first_request_after_expiry() {
        let w = RateWindow::new();
        assert!(w.try_admit(1, at(0)));
        assert!(w.is_idle(at(1000)));
        assert!(w.try_admit(1, at(5300)));
        assert!(!w.try_admit(1, at(6299)));
        assert!(w.try_admit(1, at(6300)));
    }

    #[test]
    fn zero_refuses_everything() {
        let w = RateWindow::new();
        assert!(!w.try_admit(0, at(0)));
        assert!(!w.try_admit(0, at(10_000)));
        assert!(w.is_idle(at(0)));
    }

    #[test]
    fn reset_gives_a_fresh_window() {
        let w = RateWindow::new();
        assert!(w.try_admit(1, at(10)));
        assert!(!w.try_admit(1, at(20)));
        w.reset();
        assert!(w.try_admit(1, at(30)));
    }

    #[test]
    fn huge_limits_saturate_instead_of_wrapping() {
        let w = RateWindow::new();
        w.state.store(pack(0, COUNT_MASK), Ordering::Release);
        assert!(w.try_admit(u32::MAX, at(1)));
        assert_eq!(w.state.load(Ordering::Acquire) & COUNT_MASK, COUNT_MASK);
    }

    #[test]
    fn threads_together_admit_exactly_the_limit() {
        let w = std::sync::Arc::new(RateWindow::new());
        let admitted: usize = (0..4)
            .map(|_| {
                let w = w.clone();
                std::thread::spawn(move || (0..1000).filter(|_| w.try_admit(100, at(7))).count())
            })
            .collect::<Vec<_>>()
            .into_iter()
            .map(|t| t.join().unwrap())
            .sum();
        assert_eq!(admitted, 100);
    }

    mod properties {
        use super::*;
        use proptest::prelude::*;

        proptest! {
            /// The atomic window decides exactly as a plain fixed-window
            /// counter does.
            #[test]
            fn matches_a_plain_fixed_window(
                limit in 0u32..20,
                gaps in proptest::collection::vec(0u64..700, 1..200),
            ) {
                let w = RateWindow::new();
                let mut model: Option<(u64, u32)> = None;
                let mut now = 0u64;
                for gap in gaps {
                    now += gap;
                    let expected = if limit == 0 {
                        false
                    } else {
                        let (start, count) = match model {
                            Some((start, count)) if now < start + WINDOW_MS => (start, count),
                            _ => (now, 0),
                        };
                        let ok = count < limit;
                        model = Some((start, count + u32::from(ok)));
                        ok
                    };
                    prop_assert_eq!(w.try_admit(limit, at(now)), expected, "at {} ms", now);
                }
            }
        }
    }
}
