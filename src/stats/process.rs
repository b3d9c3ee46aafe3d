//! Process statistics for `STAT ... process` and `/metrics`: CPU use as a
//! percentage of one core over the last second (user, system), CPU seconds
//! since start, the resident set size now, and the log records dropped.
//!
//! Reads `getrusage(RUSAGE_SELF)` and `/proc/self/statm`; runs on the
//! aggregator thread only, never on a shard.

use super::ProcessStats;
use std::time::{Duration, Instant};

/// Percentages are computed over windows of at least this long, so a short
/// `--cleanupIntervalMs` does not turn them into noise (the original
/// samples every second too).
const CPU_WINDOW: Duration = Duration::from_secs(1);

/// Keeps the previous CPU sample to compute the next percentage.
#[derive(Default)]
pub struct ProcessSampler {
    last: Option<(Instant, f64, f64)>,
    percent: (u64, u64),
}

impl ProcessSampler {
    /// The process's numbers now. Percentages are zero until two samples a
    /// second apart exist.
    pub fn sample(&mut self) -> ProcessStats {
        let now = Instant::now();
        let (user, system) = cpu_seconds();
        match self.last {
            None => self.last = Some((now, user, system)),
            Some((at, last_user, last_system)) => {
                let wall = now.duration_since(at);
                if wall >= CPU_WINDOW {
                    let secs = wall.as_secs_f64();
                    let pct = |d: f64| (d.max(0.0) / secs * 100.0).round() as u64;
                    self.percent = (pct(user - last_user), pct(system - last_system));
                    self.last = Some((now, user, system));
                }
            }
        }
        ProcessStats {
            cpu_user: self.percent.0,
            cpu_system: self.percent.1,
            cpu_user_seconds: user,
            cpu_system_seconds: system,
            rss_kb: rss_kb(),
            log_dropped: crate::logging::control().map_or(0, |c| c.dropped()),
        }
    }
}

/// User and system CPU seconds of the whole process.
fn cpu_seconds() -> (f64, f64) {
    // SAFETY: rusage is plain data that getrusage fills in.
    let usage = unsafe {
        let mut usage: libc::rusage = std::mem::zeroed();
        if libc::getrusage(libc::RUSAGE_SELF, &mut usage) != 0 {
            return (0.0, 0.0);
        }
        usage
    };
    let secs = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    (secs(usage.ru_utime), secs(usage.ru_stime))
}

/// Resident set size now, in KiB (the second field of `/proc/self/statm`,
/// in pages).
fn rss_kb() -> u64 {
    let Ok(statm) = std::fs::read_to_string("/proc/self/statm") else {
        return 0;
    };
    let pages: u64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|p| p.parse().ok())
        .unwrap_or(0);
    // SAFETY: sysconf has no preconditions.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    pages * u64::try_from(page).unwrap_or(4096) / 1024
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rss_and_cpu_time_are_read() {
        let mut sampler = ProcessSampler::default();
        let s = sampler.sample();
        assert!(s.rss_kb > 0);
        assert!(s.cpu_user_seconds + s.cpu_system_seconds > 0.0);
        assert_eq!((s.cpu_user, s.cpu_system), (0, 0));
    }
}
