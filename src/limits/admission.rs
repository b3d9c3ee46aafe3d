//! What admitting a session through the limits returns: a slot that counts
//! the session while it lives, or a refusal that knows its AMQP reply, its
//! delay and its log line (see `docs/commands.md#auth-and-limit` and
//! `docs/sessions.md#refusals`).
//!
//! Owns the outcome types and their texts. Never sends, sleeps or logs: the
//! session's establishment does, with these values.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use super::registry::VhostLimiter;
use super::settings::LimitSource;
use super::shaper::{DataShaper, SessionShaping};

/// AMQP reply code of a limit's `Connection.Close` (RESOURCE_ERROR).
pub const LIMITED_REPLY_CODE: u16 = 506;

/// How long a limited client waits for its Close, as in the original: it
/// slows a client that reconnects in a loop.
pub const LIMITED_CLOSE_DELAY: Duration = Duration::from_millis(750);

/// The result of [`super::Limits::admit`].
#[derive(Debug)]
pub struct Admission {
    /// An alarm-only rate limit was exceeded: log it at WARN and count it,
    /// whatever the outcome.
    pub alarm: Option<ConnRateAlarm>,
    pub outcome: Result<ConnectionSlot, LimitRefusal>,
}

/// `[default ]` in the original's limiter log lines.
fn default_prefix(origin: LimitSource) -> &'static str {
    match origin {
        LimitSource::Default => "default ",
        LimitSource::Vhost => "",
    }
}

/// An alarm-only connection-rate limit was exceeded; the session goes on.
/// Display is the WARN line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnRateAlarm {
    pub vhost: Arc<str>,
    pub limit: u32,
    pub origin: LimitSource,
}

impl fmt::Display for ConnRateAlarm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "AMQPPROX_CONNECTION_LIMIT: The connection request for {} should be limited by {}{}",
            self.vhost,
            default_prefix(self.origin),
            rate_description(self.limit)
        )
    }
}

/// The original's description of a connection-rate limiter.
pub fn rate_description(limit: u32) -> String {
    format!("Allow average {limit} number of connections per 1 seconds")
}

/// Why a session was refused. Display is the DEBUG line (with the
/// `AMQPPROX_CONNECTION_LIMIT` substring operators grep for).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LimitRefusal {
    #[error(
        "AMQPPROX_CONNECTION_LIMIT: The connection request for {vhost} is limited by {}{}",
        default_prefix(*origin),
        rate_description(*limit)
    )]
    ConnRate {
        vhost: Arc<str>,
        limit: u32,
        origin: LimitSource,
    },
    #[error(
        "AMQPPROX_CONNECTION_LIMIT: The connection request for {vhost} is limited by {}Allow at most {cap} concurrent connections",
        default_prefix(*origin)
    )]
    ConnCount {
        vhost: Arc<str>,
        cap: u32,
        origin: LimitSource,
    },
}

impl LimitRefusal {
    pub fn vhost(&self) -> &str {
        match self {
            LimitRefusal::ConnRate { vhost, .. } | LimitRefusal::ConnCount { vhost, .. } => vhost,
        }
    }

    pub fn reply_code(&self) -> u16 {
        LIMITED_REPLY_CODE
    }

    /// The `Connection.Close` text the client gets. The rate limit's is the
    /// original's; the cap's names the cap too.
    pub fn close_text(&self) -> String {
        match self {
            LimitRefusal::ConnRate { vhost, .. } => {
                format!("The connection for {vhost}, is limited by proxy.")
            }
            LimitRefusal::ConnCount { vhost, cap, .. } => format!(
                "The connection for {vhost}, is limited by proxy: at most {cap} concurrent connections."
            ),
        }
    }

    /// How long to hold the client before the Close. The cap waits as the
    /// rate limit does, so a client retrying in a loop is slowed either way.
    pub fn close_delay(&self) -> Duration {
        LIMITED_CLOSE_DELAY
    }
}

/// One admitted session's place in its vhost's concurrent count, and its
/// way to the vhost's data limits. Dropping it ends the session's count.
#[derive(Debug)]
pub struct ConnectionSlot {
    limiter: Arc<VhostLimiter>,
}

impl ConnectionSlot {
    pub(crate) fn new(limiter: Arc<VhostLimiter>) -> ConnectionSlot {
        ConnectionSlot { limiter }
    }

    pub fn vhost(&self) -> &str {
        self.limiter.vhost()
    }

    /// The data shaper for this session's pump: the vhost's shared budget
    /// and the session's own (`session`, which the shard keeps so a control
    /// command can change it).
    pub fn data_shaper(&self, session: Arc<SessionShaping>) -> DataShaper {
        DataShaper::new(self.limiter.clone(), session)
    }

    /// Whether a pump with this slot and `session`'s own limit shapes
    /// either direction now.
    pub fn is_shaped(&self, session: &SessionShaping) -> bool {
        self.limiter.to_broker.shaping.is_limited()
            || self.limiter.to_client.shaping.is_limited()
            || session.rate().is_some()
    }
}

impl Drop for ConnectionSlot {
    fn drop(&mut self) {
        self.limiter.release();
    }
}
