//! The two AMQP connection handshakes the proxy runs for every session, as
//! sans-I/O state machines: bytes in, bytes to send out, a result.
//!
//! * [`client`]: the proxy plays the broker toward the client, up to
//!   `Connection.Open` (docs/sessions.md#client-handshake).
//! * [`broker`]: the proxy replays the client's handshake toward the chosen
//!   broker (docs/sessions.md#broker-handshake).
//! * [`transparent`]: when the route does not depend on the vhost, the
//!   broker answers the client itself and the proxy relays.
//!
//! Neither touches a socket, a clock or a task; the session driver feeds them.

pub mod broker;
pub mod client;
pub mod refusal;
pub mod transparent;

pub use broker::{BrokerHandshake, BrokerHandshakeError, BrokerProgress};
pub use client::{
    check_protocol_header, ClientHandshake, ClientHandshakeError, ClientHello, ClientProgress,
    HeaderCheck,
};
pub use refusal::{broker_close_frame, is_hang_up, HangUp};
pub use transparent::{Side, TransparentError, TransparentHandshake, TransparentProgress};

use crate::codec::{Close, ConnectionMethod};

/// The largest frame accepted during either handshake: the frame-max the
/// proxy offers in its `Connection.Tune`, plus header and end octet.
pub const HANDSHAKE_MAX_FRAME: u32 = 131_072 + 8;

/// A whole `Connection.Close` frame on channel 0.
pub fn close_frame(reply_code: u16, reply_text: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(32 + reply_text.len());
    ConnectionMethod::Close(Close::new(reply_code, reply_text)).encode_frame(&mut out);
    out
}

/// A whole method frame on channel 0, for the handshake tests.
#[cfg(test)]
pub(crate) fn frame_of(m: ConnectionMethod) -> Vec<u8> {
    let mut out = Vec::new();
    m.encode_frame(&mut out);
    out
}
