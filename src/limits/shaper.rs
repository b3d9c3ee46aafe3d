//! Data-rate shaping of one session's two directions: what the pump asks
//! before each read (see `docs/commands.md#auth-and-limit` and
//! `docs/architecture.md#data-path-from-accept-to-close`).
//!
//! Owns the combination of a vhost's shared budget (all its sessions on all
//! shards, per direction) with the session's own budget, and the alarm
//! metering. A shaped direction reads at most what [`DataShaper::allowance`]
//! grants, or waits as long as it says and does not read at all: the
//! client's or broker's TCP window then fills and pushes back, so nothing is
//! buffered beyond one read. Both budgets are plain atomics, so a `LIMIT` or
//! `SESSION ... LIMIT` change reaches live sessions at their next read.
//! Never sleeps, never reads a clock, never allocates on the data path.

use std::fmt;
use std::sync::Arc;

use super::bucket::{Allowance, TokenBucket};
use super::registry::{DirectionLimits, VhostLimiter};
use super::Stamp;

/// A direction of a session's traffic.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Direction {
    /// Bytes read from the client, written to the broker.
    ClientToBroker,
    /// Bytes read from the broker, written to the client.
    BrokerToClient,
}

impl Direction {
    pub fn describe(self) -> &'static str {
        match self {
            Direction::ClientToBroker => "client to broker",
            Direction::BrokerToClient => "broker to client",
        }
    }
}

/// A session's own byte-rate limit, one bucket per direction. The shard
/// keeps an `Arc` of it beside the session so `SESSION id LIMIT` can change
/// it; the pump holds another through its [`DataShaper`].
#[derive(Debug)]
pub struct SessionShaping {
    to_broker: TokenBucket,
    to_client: TokenBucket,
}

impl Default for SessionShaping {
    fn default() -> Self {
        SessionShaping::new(None)
    }
}

impl SessionShaping {
    /// `rate` bytes per second in each direction; `None`: no limit of its own.
    pub fn new(rate: Option<u64>) -> SessionShaping {
        SessionShaping {
            to_broker: TokenBucket::shaping(rate),
            to_client: TokenBucket::shaping(rate),
        }
    }

    pub fn set_rate(&self, rate: Option<u64>) {
        self.to_broker.set_rate(rate);
        self.to_client.set_rate(rate);
    }

    pub fn rate(&self) -> Option<u64> {
        self.to_broker.rate()
    }

    fn bucket(&self, direction: Direction) -> &TokenBucket {
        match direction {
            Direction::ClientToBroker => &self.to_broker,
            Direction::BrokerToClient => &self.to_client,
        }
    }
}

/// A data-rate alarm was raised (at most once a second per vhost and
/// direction). Display is the INFO line: the original's text, then which
/// vhost and direction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DataRateAlarm {
    pub vhost: Arc<str>,
    pub direction: Direction,
    pub rate: u64,
}

impl fmt::Display for DataRateAlarm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "Data Rate Alarm: Hit {} bytes/s (vhost {}, {})",
            self.rate,
            self.vhost,
            self.direction.describe()
        )
    }
}

/// The data limits one session's pump obeys.
#[derive(Debug)]
pub struct DataShaper {
    vhost: Arc<VhostLimiter>,
    session: Arc<SessionShaping>,
}

impl DataShaper {
    pub(crate) fn new(vhost: Arc<VhostLimiter>, session: Arc<SessionShaping>) -> DataShaper {
        DataShaper { vhost, session }
    }

    fn vhost_limits(&self, direction: Direction) -> &DirectionLimits {
        match direction {
            Direction::ClientToBroker => &self.vhost.to_broker,
            Direction::BrokerToClient => &self.vhost.to_client,
        }
    }

    /// Whether reads in `direction` may have to wait: the pump's cheap test
    /// (two relaxed loads) before asking for an allowance.
    pub fn is_shaped(&self, direction: Direction) -> bool {
        self.vhost_limits(direction).shaping.is_limited()
            || self.session.bucket(direction).is_limited()
    }

    /// Whether reads in `direction` must be charged (shaped or alarmed).
    pub fn is_metered(&self, direction: Direction) -> bool {
        self.is_shaped(direction) || self.vhost_limits(direction).alarm.is_limited()
    }

    /// Whether either direction is shaped now (`CONN` shows it).
    pub fn is_shaped_any(&self) -> bool {
        self.is_shaped(Direction::ClientToBroker) || self.is_shaped(Direction::BrokerToClient)
    }

    /// How many of `want` bytes may be read in `direction` now, or how long
    /// to wait before asking again: the stricter of the vhost's and the
    /// session's budgets.
    pub fn allowance(&self, direction: Direction, now: Stamp, want: usize) -> Allowance {
        let vhost = self.vhost_limits(direction).shaping.allowance(now, want);
        let session = self.session.bucket(direction).allowance(now, want);
        vhost.min(session)
    }

    /// Counts `bytes` read in `direction` at `now` against every budget;
    /// returns an alarm to log and count, if one is due.
    pub fn charge(&self, direction: Direction, now: Stamp, bytes: usize) -> Option<DataRateAlarm> {
        let limits = self.vhost_limits(direction);
        limits.shaping.charge(now, bytes);
        self.session.bucket(direction).charge(now, bytes);
        limits.alarm.charge(now, bytes).map(|rate| DataRateAlarm {
            vhost: self.vhost.vhost().clone(),
            direction,
            rate,
        })
    }
}
