//! Server-role Stream handshake: the proxy answers a client as a broker
//! would, from PeerProperties to Open, so that it learns the virtual host
//! (carried only by Open) before it picks a broker. See `docs/routing.md`.
//!
//! The client's PeerProperties are answered with the proxy's own, SASL offers
//! PLAIN only (the one mechanism the proxy can capture and replay; another
//! gets response code 0x07 on its SaslAuthenticate), the PLAIN response is
//! captured unchecked (the broker checks it during the replay), then the
//! proxy's Tune is sent and the client's answer read. Open is not answered
//! here: its response comes from the broker, rewritten, once the session has
//! a broker. Heartbeats are ignored, a client Close gets its response, and
//! anything out of order is refused with a Close carrying a protocol code.
//! Sans-I/O: no sockets, no clock.

use super::command::{
    CloseRequest, CodeResponse, OpenRequest, OpenResponse, PeerPropertiesRequest,
    PeerPropertiesResponse, Properties, SaslAuthenticateRequest, SaslAuthenticateResponse,
    SaslHandshakeRequest, SaslHandshakeResponse, Tune,
};
use super::frame::{split_frame, StreamFrameError};
use super::{key, response_code, StreamDecodeError, HANDSHAKE_MAX_FRAME};

/// The one SASL mechanism the proxy offers and replays.
pub const PLAIN: &str = "PLAIN";

/// What the proxy says about itself and proposes, before a broker is known.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerConfig {
    /// The PeerProperties response's properties.
    pub peer_properties: Properties,
    /// The Tune the proxy proposes.
    pub tune: Tune,
}

impl Default for ServerConfig {
    /// The broker's defaults for Tune (1 MiB frames, 60 s heartbeat). The
    /// version is the proxy's own: clients read a broker version >= 3.11 as
    /// leave to send commands a 3.10 broker closes the connection for.
    fn default() -> Self {
        let props = [
            ("cluster_name", "amqpprox_cloud"),
            ("product", "amqpprox"),
            ("version", env!("CARGO_PKG_VERSION")),
            ("platform", "Rust"),
        ];
        ServerConfig {
            peer_properties: props
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            tune: Tune {
                frame_max: HANDSHAKE_MAX_FRAME,
                heartbeat: 60,
            },
        }
    }
}

/// Everything the client said up to Open: what the replay needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientHello {
    pub peer_properties: PeerPropertiesRequest,
    pub sasl_handshake: SaslHandshakeRequest,
    pub sasl_authenticate: SaslAuthenticateRequest,
    /// The client's answer to the proxy's Tune.
    pub tune: Tune,
    pub open: OpenRequest,
    /// Bytes that followed Open in the same reads, held for the broker.
    pub pipelined: Vec<u8>,
}

impl ClientHello {
    /// The user name in the captured PLAIN response (`authzid NUL authcid
    /// NUL password`), for logs and CONN.
    pub fn username(&self) -> Option<String> {
        let (_, user, _) = split_plain(self.sasl_authenticate.data.as_deref()?)?;
        Some(String::from_utf8_lossy(user).into_owned())
    }

    /// The client's `connection_name` peer property, or "".
    pub fn connection_name(&self) -> &str {
        super::command::property(&self.peer_properties.properties, "connection_name").unwrap_or("")
    }

    /// Appends the Open response the client is waiting for: the broker's
    /// code, and properties (the rewritten advertised address on success).
    pub fn encode_open_response(&self, code: u16, properties: Properties, out: &mut Vec<u8>) {
        OpenResponse {
            correlation_id: self.open.correlation_id,
            code,
            properties,
        }
        .encode(out);
    }
}

/// A PLAIN response's three parts, if it has exactly two NULs.
fn split_plain(data: &[u8]) -> Option<(&[u8], &[u8], &[u8])> {
    let mut parts = data.splitn(3, |b| *b == 0);
    let authz = parts.next()?;
    let user = parts.next()?;
    let pass = parts.next()?;
    (!pass.contains(&0)).then_some((authz, user, pass))
}

/// Where the handshake stands after a read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ServerProgress {
    NeedMore,
    /// The client sent Open: route by its vhost and start the replay.
    Opened(Box<ClientHello>),
    /// The client closed; its Close response is in the output.
    ClosedByClient,
}

/// Why the client's handshake was refused. [`ServerHandshakeError::reply`]
/// is what the client is sent before the socket is closed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ServerHandshakeError {
    #[error("bad frame: {0}")]
    Frame(StreamFrameError),
    #[error("cannot decode {command}: {error}")]
    Undecodable {
        command: &'static str,
        error: StreamDecodeError,
    },
    #[error("expected {expected}, received {received} (key 0x{key:04x})")]
    Unexpected {
        expected: &'static str,
        received: &'static str,
        key: u16,
    },
    #[error("SASL mechanism {mechanism:?} is not supported")]
    UnsupportedMechanism {
        correlation_id: u32,
        mechanism: String,
    },
    #[error("malformed PLAIN response")]
    MalformedPlain { correlation_id: u32 },
}

/// The correlation id of the Close the proxy sends: it has no request of its
/// own outstanding, so any id is unambiguous.
const PROXY_CLOSE_CORRELATION: u32 = 1;

impl ServerHandshakeError {
    /// The protocol response code the client is given.
    pub fn code(&self) -> u16 {
        match self {
            ServerHandshakeError::Frame(StreamFrameError::TooLarge { .. }) => {
                response_code::FRAME_TOO_LARGE
            }
            ServerHandshakeError::Frame(StreamFrameError::TooSmall { .. })
            | ServerHandshakeError::Undecodable { .. }
            | ServerHandshakeError::Unexpected { .. } => response_code::UNKNOWN_FRAME,
            ServerHandshakeError::UnsupportedMechanism { .. } => {
                response_code::SASL_MECHANISM_NOT_SUPPORTED
            }
            ServerHandshakeError::MalformedPlain { .. } => response_code::SASL_ERROR,
        }
    }

    /// The bytes to send before closing: the SaslAuthenticate response for
    /// a SASL refusal (the client is waiting for it), else a Close.
    pub fn reply(&self) -> Vec<u8> {
        let mut out = Vec::new();
        match self {
            ServerHandshakeError::UnsupportedMechanism { correlation_id, .. }
            | ServerHandshakeError::MalformedPlain { correlation_id } => {
                SaslAuthenticateResponse {
                    correlation_id: *correlation_id,
                    code: self.code(),
                    challenge: None,
                }
                .encode(&mut out);
            }
            _ => CloseRequest {
                correlation_id: PROXY_CLOSE_CORRELATION,
                code: self.code(),
                reason: self.to_string(),
            }
            .encode(&mut out),
        }
        out
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    PeerProperties,
    SaslHandshake,
    SaslAuthenticate,
    Tune,
    Open,
    Done,
}

impl State {
    fn expected(self) -> &'static str {
        match self {
            State::PeerProperties => "peer-properties",
            State::SaslHandshake => "sasl-handshake",
            State::SaslAuthenticate => "sasl-authenticate",
            State::Tune => "tune",
            State::Open | State::Done => "open",
        }
    }
}

/// The server-role handshake of one stream session.
#[derive(Debug)]
pub struct ServerHandshake {
    config: ServerConfig,
    state: State,
    input: Vec<u8>,
    peer_properties: Option<PeerPropertiesRequest>,
    sasl_handshake: Option<SaslHandshakeRequest>,
    sasl_authenticate: Option<SaslAuthenticateRequest>,
    tune: Option<Tune>,
}

fn undecodable(command: &'static str) -> impl FnOnce(StreamDecodeError) -> ServerHandshakeError {
    move |error| ServerHandshakeError::Undecodable { command, error }
}

impl ServerHandshake {
    pub fn new(config: ServerConfig) -> Self {
        ServerHandshake {
            config,
            state: State::PeerProperties,
            input: Vec::new(),
            peer_properties: None,
            sasl_handshake: None,
            sasl_authenticate: None,
            tune: None,
        }
    }

    /// Whether the client has sent anything that parsed (a client silent
    /// from the start is likely not a stream client at all).
    pub fn started(&self) -> bool {
        self.state != State::PeerProperties
    }

    /// Feeds the next bytes read from the client; appends what to send back
    /// to `out`.
    pub fn receive(
        &mut self,
        data: &[u8],
        out: &mut Vec<u8>,
    ) -> Result<ServerProgress, ServerHandshakeError> {
        self.input.extend_from_slice(data);
        let mut consumed = 0;
        let progress = loop {
            let (frame, used) = match split_frame(&self.input[consumed..], HANDSHAKE_MAX_FRAME) {
                Ok(Some(f)) => f,
                Ok(None) => break ServerProgress::NeedMore,
                Err(e) => return Err(ServerHandshakeError::Frame(e)),
            };
            consumed += used;
            let k = frame.header.key;
            let body = frame.body;
            match (self.state, k) {
                (_, key::HEARTBEAT) => {}
                (_, key::CLOSE) => {
                    let close = CloseRequest::decode(body).map_err(undecodable("close"))?;
                    CodeResponse {
                        key: key::CLOSE,
                        correlation_id: close.correlation_id,
                        code: response_code::OK,
                    }
                    .encode(out);
                    self.state = State::Done;
                    break ServerProgress::ClosedByClient;
                }
                (State::PeerProperties, key::PEER_PROPERTIES) => {
                    let req = PeerPropertiesRequest::decode(body)
                        .map_err(undecodable("peer-properties"))?;
                    PeerPropertiesResponse {
                        correlation_id: req.correlation_id,
                        code: response_code::OK,
                        properties: self.config.peer_properties.clone(),
                    }
                    .encode(out);
                    self.peer_properties = Some(req);
                    self.state = State::SaslHandshake;
                }
                (State::SaslHandshake, key::SASL_HANDSHAKE) => {
                    let req = SaslHandshakeRequest::decode(body)
                        .map_err(undecodable("sasl-handshake"))?;
                    SaslHandshakeResponse {
                        correlation_id: req.correlation_id,
                        code: response_code::OK,
                        mechanisms: vec![PLAIN.to_string()],
                    }
                    .encode(out);
                    self.sasl_handshake = Some(req);
                    self.state = State::SaslAuthenticate;
                }
                (State::SaslAuthenticate, key::SASL_AUTHENTICATE) => {
                    let req = SaslAuthenticateRequest::decode(body)
                        .map_err(undecodable("sasl-authenticate"))?;
                    if req.mechanism != PLAIN {
                        return Err(ServerHandshakeError::UnsupportedMechanism {
                            correlation_id: req.correlation_id,
                            mechanism: req.mechanism,
                        });
                    }
                    if req.data.as_deref().and_then(split_plain).is_none() {
                        return Err(ServerHandshakeError::MalformedPlain {
                            correlation_id: req.correlation_id,
                        });
                    }
                    SaslAuthenticateResponse {
                        correlation_id: req.correlation_id,
                        code: response_code::OK,
                        challenge: None,
                    }
                    .encode(out);
                    self.config.tune.encode_request(out);
                    self.sasl_authenticate = Some(req);
                    self.state = State::Tune;
                }
                // Clients answer Tune with or without the response bit.
                (State::Tune, key::TUNE) | (State::Tune, 0x8014) => {
                    self.tune = Some(Tune::decode(body).map_err(undecodable("tune"))?);
                    self.state = State::Open;
                }
                (State::Open, key::OPEN) => {
                    let open = OpenRequest::decode(body).map_err(undecodable("open"))?;
                    let (
                        Some(peer_properties),
                        Some(sasl_handshake),
                        Some(sasl_authenticate),
                        Some(tune),
                    ) = (
                        self.peer_properties.take(),
                        self.sasl_handshake.take(),
                        self.sasl_authenticate.take(),
                        self.tune.take(),
                    )
                    else {
                        // Unreachable by the state order; refuse rather than panic.
                        return Err(ServerHandshakeError::Unexpected {
                            expected: self.state.expected(),
                            received: "open",
                            key: k,
                        });
                    };
                    self.state = State::Done;
                    let pipelined = self.input.split_off(consumed);
                    self.input = Vec::new();
                    return Ok(ServerProgress::Opened(Box::new(ClientHello {
                        peer_properties,
                        sasl_handshake,
                        sasl_authenticate,
                        tune,
                        open,
                        pipelined,
                    })));
                }
                (state, k) => {
                    return Err(ServerHandshakeError::Unexpected {
                        expected: state.expected(),
                        received: key::name(k),
                        key: k,
                    });
                }
            }
        };
        self.input.drain(..consumed);
        Ok(progress)
    }
}

#[cfg(test)]
#[path = "server_tests.rs"]
pub(crate) mod tests;
