//! The RabbitMQ Stream protocol (the binary protocol of the broker's
//! `rabbitmq_stream` plugin, port 5552), sans I/O: framing, the commands
//! the proxy reads or writes, the two connection handshakes and the
//! rewriting of broker addresses. See `docs/routing.md#rabbitmq-streams` for how stream
//! sessions are routed.
//!
//! * [`frame`]: the frame layout, a whole-frame splitter and a pass-through
//!   scanner for the data path.
//! * [`command`]: typed handshake commands, Close, Heartbeat, Metadata.
//! * [`server`]: the proxy plays the broker toward the client, up to Open.
//! * [`client`]: the proxy replays the client's handshake toward a broker.
//! * [`rewrite`]: maps the broker addresses in Open and Metadata responses
//!   to the proxy's endpoints.
//! * [`egress`]: the broker→client data path's walker, which passes every
//!   frame untouched except Metadata responses, rewritten.
//!
//! Nothing here touches a socket, a clock or a task, and nothing panics on
//! input: malformed bytes are a [`StreamDecodeError`] or a
//! [`StreamFrameError`]. The session layer feeds these machines.

pub mod client;
pub mod command;
pub mod egress;
pub mod frame;
pub mod rewrite;
pub mod server;
mod wire;

pub use client::{BrokerReplay, BrokerReplayError, ReplayProgress};
pub use command::*;
pub use egress::EgressFilter;
pub use frame::{
    split_frame, Frame, FrameHeader, HeaderEvent, StreamFrameError, StreamFrameScanner,
    FRAME_HEADER_SIZE, RESPONSE_FLAG,
};
pub use rewrite::{AddressMap, Endpoint, RewriteCount};
pub use server::{ClientHello, ServerHandshake, ServerHandshakeError, ServerProgress};

/// The largest frame either handshake accepts: the broker's default
/// frame_max, which is also what the proxy offers in its Tune.
pub const HANDSHAKE_MAX_FRAME: u32 = 1_048_576;

/// Command keys (requests; a response sets [`RESPONSE_FLAG`]).
pub mod key {
    pub const DECLARE_PUBLISHER: u16 = 0x01;
    pub const PUBLISH: u16 = 0x02;
    pub const PUBLISH_CONFIRM: u16 = 0x03;
    pub const PUBLISH_ERROR: u16 = 0x04;
    pub const QUERY_PUBLISHER_SEQUENCE: u16 = 0x05;
    pub const DELETE_PUBLISHER: u16 = 0x06;
    pub const SUBSCRIBE: u16 = 0x07;
    pub const DELIVER: u16 = 0x08;
    pub const CREDIT: u16 = 0x09;
    pub const STORE_OFFSET: u16 = 0x0a;
    pub const QUERY_OFFSET: u16 = 0x0b;
    pub const UNSUBSCRIBE: u16 = 0x0c;
    pub const CREATE: u16 = 0x0d;
    pub const DELETE: u16 = 0x0e;
    pub const METADATA: u16 = 0x0f;
    pub const METADATA_UPDATE: u16 = 0x10;
    pub const PEER_PROPERTIES: u16 = 0x11;
    pub const SASL_HANDSHAKE: u16 = 0x12;
    pub const SASL_AUTHENTICATE: u16 = 0x13;
    pub const TUNE: u16 = 0x14;
    pub const OPEN: u16 = 0x15;
    pub const CLOSE: u16 = 0x16;
    pub const HEARTBEAT: u16 = 0x17;

    /// A name for logs and errors.
    pub fn name(key: u16) -> &'static str {
        match key & !super::RESPONSE_FLAG {
            DECLARE_PUBLISHER => "declare-publisher",
            PUBLISH => "publish",
            PUBLISH_CONFIRM => "publish-confirm",
            PUBLISH_ERROR => "publish-error",
            QUERY_PUBLISHER_SEQUENCE => "query-publisher-sequence",
            DELETE_PUBLISHER => "delete-publisher",
            SUBSCRIBE => "subscribe",
            DELIVER => "deliver",
            CREDIT => "credit",
            STORE_OFFSET => "store-offset",
            QUERY_OFFSET => "query-offset",
            UNSUBSCRIBE => "unsubscribe",
            CREATE => "create",
            DELETE => "delete",
            METADATA => "metadata",
            METADATA_UPDATE => "metadata-update",
            PEER_PROPERTIES => "peer-properties",
            SASL_HANDSHAKE => "sasl-handshake",
            SASL_AUTHENTICATE => "sasl-authenticate",
            TUNE => "tune",
            OPEN => "open",
            CLOSE => "close",
            HEARTBEAT => "heartbeat",
            _ => "unknown",
        }
    }
}

/// Response codes, as the protocol document numbers them.
pub mod response_code {
    pub const OK: u16 = 0x01;
    pub const STREAM_DOES_NOT_EXIST: u16 = 0x02;
    pub const STREAM_NOT_AVAILABLE: u16 = 0x06;
    pub const SASL_MECHANISM_NOT_SUPPORTED: u16 = 0x07;
    pub const AUTHENTICATION_FAILURE: u16 = 0x08;
    pub const SASL_ERROR: u16 = 0x09;
    pub const SASL_CHALLENGE: u16 = 0x0a;
    pub const SASL_AUTHENTICATION_FAILURE_LOOPBACK: u16 = 0x0b;
    pub const VIRTUAL_HOST_ACCESS_FAILURE: u16 = 0x0c;
    pub const UNKNOWN_FRAME: u16 = 0x0d;
    pub const FRAME_TOO_LARGE: u16 = 0x0e;
    pub const INTERNAL_ERROR: u16 = 0x0f;
    pub const ACCESS_REFUSED: u16 = 0x10;
    pub const PRECONDITION_FAILED: u16 = 0x11;
}

/// Why a frame's body is not the command its key says.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StreamDecodeError {
    #[error("truncated: {needed} more bytes needed")]
    Truncated { needed: usize },
    #[error("negative length {0}")]
    NegativeLength(i32),
    #[error("{count} bytes after the last field")]
    TrailingBytes { count: usize },
    #[error("null string in {field}")]
    NullString { field: &'static str },
    #[error("invalid UTF-8 in {field}")]
    InvalidUtf8 { field: &'static str },
}
