//! Client-side handshake: the proxy answers the client as a broker would, from
//! the protocol header to `Connection.Open` (docs/sessions.md#client-handshake,
//! AMQP 0-9-1 §2.2.4 and §4.2.3).
//!
//! The proxy offers the original's `Connection.Start` (same server properties
//! and capabilities) and `Connection.Tune` (2047 / 131072 / 60), ignores
//! heartbeats, answers a client `Connection.Close` with `CloseOk`, and refuses
//! anything out of order with a `Connection.Close` carrying an AMQP reply code
//! and a text (docs/sessions.md#refusals). Bytes the client pipelines after
//! `Open` are handed over untouched, to be forwarded once the broker is open
//! (docs/sessions.md#client-handshake). Sans-I/O: no sockets, no clock.

use super::{close_frame, HANDSHAKE_MAX_FRAME};
use crate::codec::{
    decode_frame, method_ids, reply_code, str_field, ConnectionMethod, DecodeError, FieldTable,
    FieldValue, Open, Start, StartOk, Tune, CONNECTION_CLASS, FRAME_HEARTBEAT, FRAME_METHOD,
    LEGACY_PROTOCOL_HEADER, PROTOCOL_HEADER,
};
use std::sync::OnceLock;

/// The `Connection.Tune` the proxy offers: the original's values.
pub const PROXY_TUNE: Tune = Tune {
    channel_max: 2047,
    frame_max: 131_072,
    heartbeat: 60,
};

/// What the client said, once it has sent `Connection.Open`.
#[derive(Debug, Clone, PartialEq)]
pub struct ClientHello {
    pub start_ok: StartOk,
    pub tune_ok: Tune,
    pub open: Open,
    /// Bytes that followed `Open` in the same reads: frames the client sent
    /// before seeing `OpenOk`, held for the broker.
    pub pipelined: Vec<u8>,
    pub legacy_header: bool,
}

impl ClientHello {
    /// The client's `connection_name` property, or "" (for the log line
    /// operators grep for).
    pub fn connection_name(&self) -> String {
        match self.start_ok.client_properties.get("connection_name") {
            Some(FieldValue::LongString(s)) => String::from_utf8_lossy(s).into_owned(),
            _ => String::new(),
        }
    }

    /// Whether the client asked to be told about refused logins with a
    /// `Connection.Close` (capability `authentication_failure_close`).
    pub fn wants_auth_failure_close(&self) -> bool {
        match self.start_ok.client_properties.get("capabilities") {
            Some(FieldValue::Table(caps)) => caps
                .get("authentication_failure_close")
                .and_then(FieldValue::as_bool)
                .unwrap_or(false),
            _ => false,
        }
    }
}

/// Where the handshake stands after a read.
#[derive(Debug, Clone, PartialEq)]
pub enum ClientProgress {
    /// Keep reading.
    NeedMore,
    /// The client sent `Open`: connect to a broker.
    Opened(Box<ClientHello>),
    /// The client closed the connection itself; `CloseOk` is in the output.
    ClosedByClient,
}

/// Why the client's handshake was refused. [`ClientHandshakeError::reply`]
/// is what the client is sent before the socket is closed.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ClientHandshakeError {
    #[error("Incorrect header passed.")]
    BadProtocolHeader,
    #[error("frame error: {0}")]
    Frame(DecodeError),
    #[error("cannot decode {expected_context}: {error}")]
    UndecodableMethod {
        expected_context: &'static str,
        error: DecodeError,
    },
    #[error("expected {expected}, received {received}")]
    UnexpectedMethod {
        expected: &'static str,
        received: &'static str,
    },
    #[error("expected {expected}, received a frame of type {frame_type} on channel {channel}")]
    UnexpectedFrame {
        expected: &'static str,
        frame_type: u8,
        channel: u16,
    },
}

impl ClientHandshakeError {
    /// The AMQP reply code for the `Connection.Close`, if one is sent.
    pub fn reply_code(&self) -> Option<u16> {
        match self {
            ClientHandshakeError::BadProtocolHeader => None,
            ClientHandshakeError::Frame(_) => Some(reply_code::FRAME_ERROR),
            ClientHandshakeError::UndecodableMethod { .. } => Some(reply_code::SYNTAX_ERROR),
            ClientHandshakeError::UnexpectedMethod { .. } => Some(reply_code::COMMAND_INVALID),
            ClientHandshakeError::UnexpectedFrame { .. } => Some(reply_code::UNEXPECTED_FRAME),
        }
    }

    /// The bytes to send the client before closing: the protocol header we
    /// speak for a wrong header (AMQP 0-9-1 §4.2.2), else a `Connection.Close`.
    pub fn reply(&self) -> Vec<u8> {
        let name = match self {
            ClientHandshakeError::BadProtocolHeader => return PROTOCOL_HEADER.to_vec(),
            ClientHandshakeError::Frame(_) => "FRAME_ERROR",
            ClientHandshakeError::UndecodableMethod { .. } => "SYNTAX_ERROR",
            ClientHandshakeError::UnexpectedMethod { .. } => "COMMAND_INVALID",
            ClientHandshakeError::UnexpectedFrame { .. } => "UNEXPECTED_FRAME",
        };
        close_frame(
            self.reply_code().unwrap_or(reply_code::INTERNAL_ERROR),
            &format!("{name} - {self}"),
        )
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    AwaitingHeader,
    StartSent,
    TuneSent,
    AwaitingOpen,
    Done,
}

impl State {
    fn expected(self) -> &'static str {
        match self {
            State::AwaitingHeader => "the protocol header",
            State::StartSent => "connection.start-ok",
            State::TuneSent => "connection.tune-ok",
            State::AwaitingOpen | State::Done => "connection.open",
        }
    }
}

/// The client-side handshake of one session.
#[derive(Debug)]
pub struct ClientHandshake {
    state: State,
    input: Vec<u8>,
    start_ok: Option<StartOk>,
    tune_ok: Option<Tune>,
    legacy_header: bool,
}

impl Default for ClientHandshake {
    fn default() -> Self {
        Self::new()
    }
}

/// What the bytes received so far say about the client's protocol header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HeaderCheck {
    NeedMore,
    Accepted {
        legacy: bool,
    },
    /// Not a header we speak: answer with ours and close.
    Bad,
}

/// Checks the first bytes of a client connection. Refuses as soon as they
/// cannot become a header we speak, and (as the original does) when more
/// than the header arrives before it has been answered.
pub fn check_protocol_header(input: &[u8]) -> HeaderCheck {
    let n = input.len().min(8);
    let plausible = PROTOCOL_HEADER[..n] == input[..n] || LEGACY_PROTOCOL_HEADER[..n] == input[..n];
    if !plausible || input.len() > 8 {
        HeaderCheck::Bad
    } else if input.len() < 8 {
        HeaderCheck::NeedMore
    } else {
        HeaderCheck::Accepted {
            legacy: input == LEGACY_PROTOCOL_HEADER,
        }
    }
}

/// The original's `Connection.Start` frame, built once.
pub fn start_frame() -> &'static [u8] {
    static FRAME: OnceLock<Vec<u8>> = OnceLock::new();
    FRAME.get_or_init(|| {
        let mut caps = FieldTable::new();
        for cap in [
            "publisher_confirms",
            "exchange_exchange_bindings",
            "basic.nack",
            "consumer_cancel_notify",
            "connection.blocked",
            "consumer_priorities",
            "authentication_failure_close",
            "per_consumer_qos",
            "direct_reply_to",
        ] {
            caps.push(cap, FieldValue::Bool(true));
        }
        let mut props = FieldTable::new();
        props.push("capabilities", FieldValue::Table(caps));
        props.push("cluster_name", str_field("amqpprox_cloud"));
        props.push(
            "copyright",
            str_field("Copyright (C) Bloomberg Finance L.P. 2016."),
        );
        props.push("product", str_field("amqpprox"));
        props.push("version", str_field("0.1"));
        let start = Start {
            version_major: 0,
            version_minor: 9,
            server_properties: props,
            mechanisms: b"PLAIN".to_vec(),
            locales: b"en_US".to_vec(),
        };
        let mut out = Vec::new();
        ConnectionMethod::Start(start).encode_frame(&mut out);
        out
    })
}

/// The proxy's `Connection.Tune` frame.
pub fn tune_frame() -> Vec<u8> {
    let mut out = Vec::with_capacity(20);
    ConnectionMethod::Tune(PROXY_TUNE).encode_frame(&mut out);
    out
}

impl ClientHandshake {
    pub fn new() -> Self {
        ClientHandshake {
            state: State::AwaitingHeader,
            input: Vec::new(),
            start_ok: None,
            tune_ok: None,
            legacy_header: false,
        }
    }

    /// Whether the protocol header has been accepted (a stalled client after
    /// this point is told why it is closed).
    pub fn header_received(&self) -> bool {
        self.state != State::AwaitingHeader
    }

    /// Feeds the next bytes read from the client; appends what to send back
    /// to `out`.
    pub fn receive(
        &mut self,
        data: &[u8],
        out: &mut Vec<u8>,
    ) -> Result<ClientProgress, ClientHandshakeError> {
        self.input.extend_from_slice(data);
        if self.state == State::AwaitingHeader {
            match check_protocol_header(&self.input) {
                HeaderCheck::Bad => return Err(ClientHandshakeError::BadProtocolHeader),
                HeaderCheck::NeedMore => return Ok(ClientProgress::NeedMore),
                HeaderCheck::Accepted { legacy } => self.legacy_header = legacy,
            }
            self.input.clear();
            out.extend_from_slice(start_frame());
            self.state = State::StartSent;
            return Ok(ClientProgress::NeedMore);
        }

        let mut consumed = 0;
        let progress = loop {
            let (frame, used) = match decode_frame(&self.input[consumed..], HANDSHAKE_MAX_FRAME) {
                Ok(Some(f)) => f,
                Ok(None) => break ClientProgress::NeedMore,
                Err(e) => return Err(ClientHandshakeError::Frame(e)),
            };
            consumed += used;
            if frame.frame_type == FRAME_HEARTBEAT {
                continue;
            }
            let expected = self.state.expected();
            let is_connection_method = frame.frame_type == FRAME_METHOD
                && frame.channel == 0
                && method_ids(frame.payload).is_some_and(|(class, _)| class == CONNECTION_CLASS);
            if !is_connection_method {
                return Err(ClientHandshakeError::UnexpectedFrame {
                    expected,
                    frame_type: frame.frame_type,
                    channel: frame.channel,
                });
            }
            let method = ConnectionMethod::decode(frame.payload).map_err(|error| {
                ClientHandshakeError::UndecodableMethod {
                    expected_context: expected,
                    error,
                }
            })?;
            match (self.state, method) {
                (_, ConnectionMethod::Close(_)) => {
                    ConnectionMethod::CloseOk.encode_frame(out);
                    self.state = State::Done;
                    break ClientProgress::ClosedByClient;
                }
                (State::StartSent, ConnectionMethod::StartOk(start_ok)) => {
                    self.start_ok = Some(start_ok);
                    out.extend_from_slice(&tune_frame());
                    self.state = State::TuneSent;
                }
                (State::TuneSent, ConnectionMethod::TuneOk(tune_ok)) => {
                    self.tune_ok = Some(tune_ok);
                    self.state = State::AwaitingOpen;
                }
                (State::AwaitingOpen, ConnectionMethod::Open(open)) => {
                    self.state = State::Done;
                    let (Some(start_ok), Some(tune_ok)) =
                        (self.start_ok.take(), self.tune_ok.take())
                    else {
                        // Unreachable by the state order above; refuse rather than panic.
                        return Err(ClientHandshakeError::UnexpectedMethod {
                            expected,
                            received: "connection.open",
                        });
                    };
                    let pipelined = self.input.split_off(consumed);
                    self.input.clear();
                    return Ok(ClientProgress::Opened(Box::new(ClientHello {
                        start_ok,
                        tune_ok,
                        open,
                        pipelined,
                        legacy_header: self.legacy_header,
                    })));
                }
                (_, other) => {
                    return Err(ClientHandshakeError::UnexpectedMethod {
                        expected,
                        received: other.name(),
                    });
                }
            }
        };
        self.input.drain(..consumed);
        Ok(progress)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::Close;
    use crate::handshake::frame_of;

    fn start_ok() -> StartOk {
        let mut props = FieldTable::new();
        props.push("connection_name", str_field("app-1"));
        StartOk {
            client_properties: props,
            mechanism: b"PLAIN".to_vec(),
            response: b"\0guest\0guest".to_vec(),
            locale: b"en_US".to_vec(),
        }
    }

    fn open(vhost: &str) -> ConnectionMethod {
        ConnectionMethod::Open(Open {
            vhost: vhost.into(),
            capabilities: Vec::new(),
            insist: false,
        })
    }

    const TUNE_OK: Tune = Tune {
        channel_max: 2047,
        frame_max: 131_072,
        heartbeat: 60,
    };

    #[test]
    fn header_split_across_reads_then_start() {
        let mut hs = ClientHandshake::new();
        let mut out = Vec::new();
        for b in PROTOCOL_HEADER {
            assert_eq!(
                hs.receive(&[b], &mut out).unwrap(),
                ClientProgress::NeedMore
            );
        }
        assert_eq!(out, start_frame());
    }

    #[test]
    fn full_handshake_keeps_pipelined_frames() {
        let mut hs = ClientHandshake::new();
        let mut out = Vec::new();
        hs.receive(&LEGACY_PROTOCOL_HEADER, &mut out).unwrap();
        out.clear();
        let mut bytes = frame_of(ConnectionMethod::StartOk(start_ok()));
        bytes.extend_from_slice(&crate::codec::HEARTBEAT_FRAME);
        assert_eq!(
            hs.receive(&bytes, &mut out).unwrap(),
            ClientProgress::NeedMore
        );
        assert_eq!(out, tune_frame());
        let mut bytes = frame_of(ConnectionMethod::TuneOk(TUNE_OK));
        bytes.extend(frame_of(open("prod")));
        let channel_open = [1u8, 0, 1, 0, 0, 0, 5, 0, 20, 0, 10, 0, 0xCE];
        bytes.extend_from_slice(&channel_open);
        match hs.receive(&bytes, &mut out).unwrap() {
            ClientProgress::Opened(hello) => {
                assert_eq!(hello.open.vhost, "prod");
                assert_eq!(hello.tune_ok, TUNE_OK);
                assert_eq!(hello.pipelined, channel_open);
                assert!(hello.legacy_header);
                assert_eq!(hello.connection_name(), "app-1");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn wrong_header_is_answered_with_ours() {
        let mut hs = ClientHandshake::new();
        let err = hs.receive(b"GET / HT", &mut Vec::new()).unwrap_err();
        assert_eq!(err, ClientHandshakeError::BadProtocolHeader);
        assert_eq!(err.reply(), PROTOCOL_HEADER);
        let mut hs = ClientHandshake::new();
        assert!(hs
            .receive(b"AMQP\x00\x00\x09\x01extra", &mut Vec::new())
            .is_err());
    }

    #[test]
    fn out_of_order_method_is_503() {
        let mut hs = ClientHandshake::new();
        hs.receive(&PROTOCOL_HEADER, &mut Vec::new()).unwrap();
        let err = hs
            .receive(&frame_of(open("/")), &mut Vec::new())
            .unwrap_err();
        assert_eq!(err.reply_code(), Some(503));
        assert_eq!(
            err.to_string(),
            "expected connection.start-ok, received connection.open"
        );
    }

    #[test]
    fn channel_frame_before_open_is_505_and_bad_end_is_501() {
        let mut hs = ClientHandshake::new();
        hs.receive(&PROTOCOL_HEADER, &mut Vec::new()).unwrap();
        let err = hs
            .receive(
                &[1, 0, 1, 0, 0, 0, 5, 0, 20, 0, 10, 0, 0xCE],
                &mut Vec::new(),
            )
            .unwrap_err();
        assert_eq!(err.reply_code(), Some(505));
        let mut hs = ClientHandshake::new();
        hs.receive(&PROTOCOL_HEADER, &mut Vec::new()).unwrap();
        let err = hs
            .receive(&[8, 0, 0, 0, 0, 0, 0, 0xAB], &mut Vec::new())
            .unwrap_err();
        assert_eq!(err.reply_code(), Some(501));
    }

    #[test]
    fn client_close_gets_close_ok() {
        let mut hs = ClientHandshake::new();
        hs.receive(&PROTOCOL_HEADER, &mut Vec::new()).unwrap();
        let mut out = Vec::new();
        let close = frame_of(ConnectionMethod::Close(Close::new(200, "bye")));
        assert_eq!(
            hs.receive(&close, &mut out).unwrap(),
            ClientProgress::ClosedByClient
        );
        assert_eq!(out, frame_of(ConnectionMethod::CloseOk));
    }
}
