//! Connection limits and data-rate shaping for the whole process (see
//! `docs/commands.md#auth-and-limit` and `docs/differences.md#added`).
//!
//! Owns the limits' state and arithmetic, sans I/O: the settings as values
//! ([`settings`]), the connection-rate windows ([`window`]), the byte-rate
//! token buckets ([`bucket`]), the per-vhost registry every shard admits
//! sessions through ([`registry::Limits`], one behind an `Arc` for the whole
//! process, so a limit of N holds for all shards together), the data shaper a
//! session's pump asks before each read ([`shaper`]), and the texts of the
//! `LIMIT` replies and of the log lines operators grep for ([`render`]).
//!
//! Never imports glommio, never sleeps, never reads a clock (callers pass a
//! [`Stamp`]), never logs (outcomes carry their log text), never takes a lock
//! on the data path: the registry's map lock is taken at admission and by
//! control commands only; the pump touches atomics it already holds.

pub mod admission;
pub mod bucket;
pub mod registry;
pub mod render;
pub mod settings;
pub mod shaper;
pub mod window;

use std::sync::OnceLock;
use std::time::Instant;

pub use admission::{Admission, ConnRateAlarm, ConnectionSlot, LimitRefusal};
pub use bucket::{Allowance, TokenBucket};
pub use registry::Limits;
pub use settings::{
    LimitChange, LimitKind, LimitScope, LimitSettings, LimitSource, LimitValueError, PerVhost,
};
pub use shaper::{DataRateAlarm, DataShaper, Direction, SessionShaping};

/// A point in time as nanoseconds since a process-wide origin, so every
/// shard's limiters agree on one time line and stay plain atomics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Stamp(u64);

static ORIGIN: OnceLock<Instant> = OnceLock::new();

impl Stamp {
    /// The instant the limits' time line starts at. [`Limits::new`] fixes it,
    /// so it precedes every instant a session passes in.
    pub fn origin() -> Instant {
        *ORIGIN.get_or_init(Instant::now)
    }

    /// `at` on the process-wide time line; instants before the origin map
    /// to 0.
    pub fn from_instant(at: Instant) -> Stamp {
        let since = at.saturating_duration_since(Stamp::origin());
        Stamp(since.as_nanos().min(u128::from(u64::MAX)) as u64)
    }

    /// For tests and simulations: a stamp `nanos` after the origin.
    pub fn from_nanos(nanos: u64) -> Stamp {
        Stamp(nanos)
    }

    pub fn as_nanos(self) -> u64 {
        self.0
    }

    pub fn as_millis(self) -> u64 {
        self.0 / 1_000_000
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn stamps_share_one_origin() {
        let origin = Stamp::origin();
        assert_eq!(Stamp::from_instant(origin), Stamp::from_nanos(0));
        let later = Stamp::from_instant(origin + Duration::from_millis(1500));
        assert_eq!(later.as_millis(), 1500);
        assert_eq!(
            Stamp::from_instant(
                origin
                    .checked_sub(Duration::from_nanos(1))
                    .unwrap_or(origin)
            ),
            Stamp::from_nanos(0)
        );
    }
}
