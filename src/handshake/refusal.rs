//! What the client is told when the broker ends a proxied handshake: the
//! broker's own `Connection.Close` with every field it sent, or, when the
//! broker just closes its socket, a `Connection.Close` the proxy writes that
//! says what that most likely meant (docs/sessions.md#broker-handshake).
//!
//! RabbitMQ answers a wrong user name or password by closing the socket
//! right after the client's `StartOk`, unless the client advertised the
//! `authentication_failure_close` capability (then it sends Close 403). So a
//! hang-up while the broker owes its `Tune` is reported as a probable
//! refused login (WARN, 403), not as a broker failure (ERROR, 320).
//! Pure functions: no socket, no log; the session driver does both.

use crate::codec::{reply_code, Close, ConnectionMethod};
use log::Level;

/// The broker's `Connection.Close` as the client gets it: code, text and the
/// failing class and method ids the broker sent (clients show them, e.g.
/// 10/40 for a refused `Connection.Open`).
pub fn broker_close_frame(close: &Close) -> Vec<u8> {
    let mut out = Vec::with_capacity(32 + close.reply_text.len());
    ConnectionMethod::Close(close.clone()).encode_frame(&mut out);
    out
}

/// Where the handshake stood when the broker closed its socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HangUp {
    /// The broker had the client's credentials (`StartOk`, or the last
    /// `SecureOk`) and owed its `Tune`: most likely a refused login.
    AfterLogin,
    /// Any other point; `expected` names what the broker owed.
    Before { expected: &'static str },
}

impl HangUp {
    pub fn is_probable_refused_login(self) -> bool {
        self == HangUp::AfterLogin
    }

    /// A probable refused login is the client's problem, not the broker's.
    pub fn level(self) -> Level {
        match self {
            HangUp::AfterLogin => Level::Warn,
            HangUp::Before { .. } => Level::Error,
        }
    }

    /// The reply code and text of the `Connection.Close` the client gets;
    /// `vhost` is `None` when the client has not named it yet (transparent
    /// handshake).
    pub fn reply(self, vhost: Option<&str>) -> (u16, String) {
        let broker = match vhost {
            Some(v) => format!("broker for vhost {v}"),
            None => "broker".to_string(),
        };
        match self {
            HangUp::AfterLogin => (
                reply_code::ACCESS_REFUSED,
                format!(
                    "ACCESS_REFUSED - {broker} closed the connection right after the login: \
                     probably a refused login (check the user name and password)"
                ),
            ),
            HangUp::Before { expected } => (
                reply_code::CONNECTION_FORCED,
                format!(
                    "CONNECTION_FORCED - {broker} closed the connection during the handshake \
                     (while {expected} was expected)"
                ),
            ),
        }
    }
}

/// Whether a read error from the broker is its socket closing rather than
/// a fault: a reset, or a TLS stream ending without `close_notify`.
pub fn is_hang_up(error: &std::io::Error) -> bool {
    use std::io::ErrorKind::*;
    matches!(
        error.kind(),
        UnexpectedEof | ConnectionReset | ConnectionAborted | BrokenPipe
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::decode_frame;
    use crate::handshake::HANDSHAKE_MAX_FRAME;

    #[test]
    fn broker_close_keeps_class_and_method_ids() {
        let close = Close {
            reply_code: 530,
            reply_text: b"NOT_ALLOWED - vhost nope not found".to_vec(),
            class_id: 10,
            method_id: 40,
        };
        let bytes = broker_close_frame(&close);
        let (frame, used) = decode_frame(&bytes, HANDSHAKE_MAX_FRAME).unwrap().unwrap();
        assert_eq!(used, bytes.len());
        assert_eq!(
            ConnectionMethod::decode(frame.payload).unwrap(),
            ConnectionMethod::Close(close)
        );
    }

    #[test]
    fn hang_up_after_login_is_a_probable_refused_login() {
        let h = HangUp::AfterLogin;
        assert!(h.is_probable_refused_login());
        assert_eq!(h.level(), Level::Warn);
        let (code, text) = h.reply(Some("prod"));
        assert_eq!(code, 403);
        assert!(text.starts_with("ACCESS_REFUSED - broker for vhost prod closed"));
        assert!(text.contains("probably a refused login"));
        assert!(text.len() <= 255, "fits a shortstr: {}", text.len());
    }

    #[test]
    fn resets_and_truncated_tls_are_hang_ups() {
        use std::io::{Error, ErrorKind};
        assert!(is_hang_up(&Error::from(ErrorKind::ConnectionReset)));
        assert!(is_hang_up(&Error::from(ErrorKind::UnexpectedEof)));
        assert!(!is_hang_up(&Error::from(ErrorKind::TimedOut)));
        assert!(!is_hang_up(&Error::other("bad record mac")));
    }

    #[test]
    fn other_hang_ups_stay_broker_failures() {
        let h = HangUp::Before {
            expected: "connection.start",
        };
        assert!(!h.is_probable_refused_login());
        assert_eq!(h.level(), Level::Error);
        let (code, text) = h.reply(None);
        assert_eq!(code, 320);
        assert_eq!(
            text,
            "CONNECTION_FORCED - broker closed the connection during the handshake \
             (while connection.start was expected)"
        );
    }
}
