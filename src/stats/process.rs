//! Process statistics for `STAT ... process` and `/metrics`: CPU use as a
//! percentage of one core over the last second (user, system), CPU seconds
//! since start, the resident set size now, and the log records dropped;
//! and each shard thread's time on a CPU and time spent ready but waiting
//! for one (docs/statistics.md#shard-threads).
//!
//! Reads `getrusage(RUSAGE_SELF)`, `/proc/self/statm` and the shard
//! threads' `/proc/self/task/TID/schedstat`; runs on the aggregator thread
//! only, never on a shard.

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

/// A thread's scheduler times since it started, from its `schedstat`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ThreadTimes {
    /// Time on a CPU, in nanoseconds.
    pub on_cpu_ns: u64,
    /// Time runnable on a run queue, waiting for a CPU, in nanoseconds.
    pub run_delay_ns: u64,
}

/// A thread's share of one core over an interval: running, and ready but
/// waiting for a core (percent, rounded; both can exceed 100 only through
/// clock skew between the reads, and are capped there).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ThreadLoad {
    pub cpu_percent: u64,
    pub run_delay_percent: u64,
}

impl ThreadLoad {
    /// The load between two readings of the same thread `interval` apart.
    pub fn between(before: ThreadTimes, after: ThreadTimes, interval: Duration) -> ThreadLoad {
        let nanos = interval.as_nanos().max(1) as f64;
        let pct = |from: u64, to: u64| {
            ((to.saturating_sub(from) as f64 / nanos * 100.0).round() as u64).min(100)
        };
        ThreadLoad {
            cpu_percent: pct(before.on_cpu_ns, after.on_cpu_ns),
            run_delay_percent: pct(before.run_delay_ns, after.run_delay_ns),
        }
    }
}

/// Parses a `schedstat` line: time on a CPU, time waiting on a run queue
/// (both in nanoseconds) and the number of time slices. `None` when the
/// line does not have that shape.
pub fn parse_schedstat(line: &str) -> Option<ThreadTimes> {
    let mut fields = line.split_ascii_whitespace().map(str::parse::<u64>);
    let on_cpu_ns = fields.next()?.ok()?;
    let run_delay_ns = fields.next()?.ok()?;
    fields.next()?.ok()?;
    Some(ThreadTimes {
        on_cpu_ns,
        run_delay_ns,
    })
}

/// The kernel's id of the calling thread, the `TID` of its `schedstat`.
pub fn current_thread() -> i32 {
    // SAFETY: gettid has no preconditions.
    unsafe { libc::gettid() }
}

/// The scheduler times of thread `tid` of this process, or `None` when
/// the kernel does not keep them (built without `CONFIG_SCHED_INFO`) or
/// the thread is gone.
pub fn thread_times(tid: i32) -> Option<ThreadTimes> {
    let line = std::fs::read_to_string(format!("/proc/self/task/{tid}/schedstat")).ok()?;
    parse_schedstat(&line)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schedstat_lines_parse_and_malformed_ones_do_not() {
        assert_eq!(
            parse_schedstat("82390074 8234118 212\n"),
            Some(ThreadTimes {
                on_cpu_ns: 82_390_074,
                run_delay_ns: 8_234_118
            })
        );
        assert_eq!(parse_schedstat(""), None);
        assert_eq!(parse_schedstat("82390074 8234118"), None);
        assert_eq!(parse_schedstat("82390074 -1 3"), None);
        assert_eq!(parse_schedstat("a b c"), None);
    }

    #[test]
    fn load_is_the_share_of_the_interval() {
        let before = ThreadTimes {
            on_cpu_ns: 1_000_000_000,
            run_delay_ns: 500_000_000,
        };
        let after = ThreadTimes {
            on_cpu_ns: 1_720_000_000,
            run_delay_ns: 800_000_000,
        };
        let load = ThreadLoad::between(before, after, Duration::from_secs(1));
        assert_eq!(
            load,
            ThreadLoad {
                cpu_percent: 72,
                run_delay_percent: 30
            }
        );
        // Over two seconds the same work is half the share.
        assert_eq!(
            ThreadLoad::between(before, after, Duration::from_secs(2)).cpu_percent,
            36
        );
        // Counters that went backwards (a different thread) give zero, and
        // a read later than the interval says is capped at a whole core.
        assert_eq!(
            ThreadLoad::between(after, before, Duration::from_secs(1)),
            ThreadLoad::default()
        );
        assert_eq!(
            ThreadLoad::between(before, after, Duration::from_millis(500)).cpu_percent,
            100
        );
    }

    #[test]
    fn this_threads_times_are_read() {
        let tid = current_thread();
        let before = thread_times(tid).expect("this kernel keeps schedstat");
        // Busy until the thread has run 5 ms more, whatever else the
        // machine does meanwhile; the deadline bounds a counter that never
        // moves.
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        let mut after = before;
        while after.on_cpu_ns < before.on_cpu_ns + 5_000_000 && std::time::Instant::now() < deadline
        {
            std::hint::black_box((0..1000u64).sum::<u64>());
            after = thread_times(tid).expect("this kernel keeps schedstat");
        }
        assert!(
            after.on_cpu_ns >= before.on_cpu_ns + 5_000_000,
            "{before:?} {after:?}"
        );
        assert_eq!(thread_times(-1), None);
    }

    #[test]
    fn rss_and_cpu_time_are_read() {
        let mut sampler = ProcessSampler::default();
        let s = sampler.sample();
        assert!(s.rss_kb > 0);
        assert!(s.cpu_user_seconds + s.cpu_system_seconds > 0.0);
        assert_eq!((s.cpu_user, s.cpu_system), (0, 0));
    }
}
