//! How a session ends before it reaches pass-through, as data: what the
//! client is sent, how loudly the log says it and why. The driver turns a
//! [`Refusal`] into the client's `Connection.Close`, the log line and the
//! disconnect cause (docs/sessions.md); nothing here does I/O.

use crate::handshake::{close_frame, ClientHandshakeError, HangUp};
use log::Level;
use std::io;
use std::time::Duration;

/// Why the proxy refused a client it is about to close.
#[derive(Debug, thiserror::Error)]
pub enum Reason {
    /// The proxy's own `Connection.Close`, with the code and text the
    /// client is sent.
    #[error("{code} {text}")]
    Close { code: u16, text: String },
    /// Nothing, or not a whole AMQP protocol header, within the handshake
    /// timeout.
    #[error("no protocol header within {} ms", .limit.as_millis())]
    NoProtocolHeader { limit: Duration },
    /// The client broke the handshake.
    #[error(transparent)]
    Client(#[from] ClientHandshakeError),
    /// The broker closed the handshake with its own code and text, which
    /// the client is sent.
    #[error("broker refused: {code} {text}")]
    BrokerRefused { code: u16, text: String },
    /// `SESSION ... FORCE_DISCONNECT` before the session was established.
    #[error("force disconnected by the operator")]
    Forced,
}

/// How the client left during the handshake.
#[derive(Debug, thiserror::Error)]
pub enum ClientGone {
    /// Its socket ended.
    #[error("connection closed")]
    Closed,
    /// Its socket failed.
    #[error("{0}")]
    Failed(io::Error),
    /// It closed the AMQP connection itself: a graceful end.
    #[error("client sent Connection.Close")]
    SentClose,
    /// Its socket ended while the broker's handshake was relayed.
    #[error("client left: connection closed")]
    ClosedDuringRelay,
    /// Its socket failed while the broker's handshake was relayed.
    #[error("client left: {0}")]
    FailedDuringRelay(io::Error),
    /// A relayed handshake frame could not be written to it.
    #[error("client write failed: {0}")]
    RelayWriteFailed(io::Error),
    /// The broker's `OpenOk` could not be written to it.
    #[error("write of OpenOk failed: {0}")]
    OpenOkWriteFailed(io::Error),
}

impl ClientGone {
    /// Whether the client ended the AMQP connection properly.
    pub fn graceful(&self) -> bool {
        matches!(self, ClientGone::SentClose)
    }
}

/// How a session ended before reaching pass-through.
#[derive(Debug, thiserror::Error)]
pub enum Refusal {
    /// Send `bytes` (maybe none) to the client, log `reason` at `level`,
    /// then close.
    #[error("{reason}")]
    Reply {
        bytes: Vec<u8>,
        level: Level,
        reason: Reason,
    },
    /// The client went away or closed itself; nothing to send.
    #[error("{0}")]
    ClientGone(ClientGone),
}

impl From<ClientGone> for Refusal {
    fn from(gone: ClientGone) -> Self {
        Refusal::ClientGone(gone)
    }
}

/// The proxy's refusal with `code` and `text`, logged at `level`.
pub fn refuse(code: u16, text: String, level: Level) -> Refusal {
    Refusal::Reply {
        bytes: close_frame(code, &text),
        level,
        reason: Reason::Close { code, text },
    }
}

/// The broker closed its socket mid-handshake: a probable refused login
/// after the `StartOk` (WARN, 403), else a broker failure (ERROR, 320).
pub fn hung_up(hang_up: HangUp, vhost: Option<&str>) -> Refusal {
    let (code, text) = hang_up.reply(vhost);
    refuse(code, text, hang_up.level())
}

/// A refusal for a client that broke its handshake: its own reply, if the
/// error has one, logged at `level`.
pub fn client_error(e: ClientHandshakeError, level: Level) -> Refusal {
    Refusal::Reply {
        bytes: e.reply(),
        level,
        reason: Reason::Client(e),
    }
}

/// The refusal of a client that did not finish its handshake in time.
pub fn handshake_timed_out(timeout: Duration) -> Refusal {
    refuse(
        crate::codec::reply_code::CONNECTION_FORCED,
        format!(
            "CONNECTION_FORCED - handshake not completed within {} ms",
            timeout.as_millis()
        ),
        Level::Warn,
    )
}

/// What a failed or empty read from the client means for the session.
pub fn client_read(read: io::Result<usize>) -> Result<usize, Refusal> {
    match read {
        Ok(0) => Err(ClientGone::Closed.into()),
        Ok(n) => Ok(n),
        Err(e) => Err(ClientGone::Failed(e).into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reasons_read_as_the_log_lines_say_them() {
        let r = refuse(320, "CONNECTION_FORCED - gone".into(), Level::Error);
        assert_eq!(r.to_string(), "320 CONNECTION_FORCED - gone");
        assert!(matches!(&r, Refusal::Reply { bytes, .. } if !bytes.is_empty()));
        assert_eq!(
            Refusal::from(ClientGone::ClosedDuringRelay).to_string(),
            "client left: connection closed"
        );
        assert!(ClientGone::SentClose.graceful());
        assert!(!ClientGone::Closed.graceful());
        let late = Reason::NoProtocolHeader {
            limit: Duration::from_millis(1500),
        };
        assert_eq!(late.to_string(), "no protocol header within 1500 ms");
        assert_eq!(
            handshake_timed_out(Duration::from_secs(2)).to_string(),
            "320 CONNECTION_FORCED - handshake not completed within 2000 ms"
        );
    }
}
