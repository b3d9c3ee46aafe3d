//! Client-role Stream handshake: the proxy replays a client's handshake
//! toward the broker it picked, one step at a time (each request waits for
//! its response, as clients do), with the client's correlation ids so the
//! broker sees the client's own sequence.
//!
//! PeerProperties goes out with the client's properties plus the proxy's
//! additions (`amqpprox_client` and the like), SASL replays the captured
//! PLAIN response, the broker's Tune is answered with the client's
//! heartbeat and a frame size within both limits, and Open asks for the
//! client's vhost. A refusal at any step (wrong password: code 0x08 on
//! SaslAuthenticate; unknown vhost: 0x0c on Open) or a broker Close is
//! handed back with its code, which the session gives the client in its
//! Open response. After a successful Open the broker's response and
//! whatever followed it are returned for the client. Sans-I/O: no sockets,
//! no clock.

use super::command::{
    CloseRequest, CodeResponse, OpenResponse, PeerPropertiesRequest, PeerPropertiesResponse,
    Properties, SaslAuthenticateRequest, SaslAuthenticateResponse, SaslHandshakeResponse, Tune,
};
use super::frame::{split_frame, StreamFrameError, RESPONSE_FLAG};
use super::server::{ClientHello, PLAIN};
use super::{key, response_code, StreamDecodeError, HANDSHAKE_MAX_FRAME};

/// Where the replay stands after a read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReplayProgress {
    NeedMore,
    /// The broker accepted Open.
    Open {
        /// The broker's Open response (its advertised address is what the
        /// rewriter maps before the client sees it).
        response: OpenResponse,
        /// The Tune both sides of the session now run with.
        tune: Tune,
        /// Bytes the broker sent after its Open response, for the client.
        from_broker: Vec<u8>,
    },
}

/// A handshake step, for errors.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReplayStep {
    PeerProperties,
    SaslHandshake,
    SaslAuthenticate,
    Tune,
    Open,
}

impl ReplayStep {
    fn expected(self) -> &'static str {
        match self {
            ReplayStep::PeerProperties => "peer-properties response",
            ReplayStep::SaslHandshake => "sasl-handshake response",
            ReplayStep::SaslAuthenticate => "sasl-authenticate response",
            ReplayStep::Tune => "tune",
            ReplayStep::Open => "open response",
        }
    }
}

/// Why the replay failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BrokerReplayError {
    #[error("broker refused {step:?} with code 0x{code:02x}")]
    Refused { step: ReplayStep, code: u16 },
    #[error("broker closed the connection: code 0x{code:02x} {reason:?}")]
    Closed { code: u16, reason: String },
    #[error("broker does not offer PLAIN (offers {offered:?})")]
    PlainNotOffered { offered: Vec<String> },
    #[error("broker sent a bad frame: {0}")]
    Frame(StreamFrameError),
    #[error("broker sent an undecodable {command}: {error}")]
    Undecodable {
        command: &'static str,
        error: StreamDecodeError,
    },
    #[error("broker sent {received} (key 0x{key:04x}) while a {} was expected", .expected.expected())]
    Unexpected {
        expected: ReplayStep,
        received: &'static str,
        key: u16,
    },
}

impl BrokerReplayError {
    /// The code the client gets in its Open response: the broker's own for
    /// a refusal or a Close, else internal error (the broker misbehaved).
    pub fn client_code(&self) -> u16 {
        match self {
            BrokerReplayError::Refused { code, .. } | BrokerReplayError::Closed { code, .. } => {
                *code
            }
            BrokerReplayError::PlainNotOffered { .. } => {
                response_code::SASL_MECHANISM_NOT_SUPPORTED
            }
            BrokerReplayError::Frame(_)
            | BrokerReplayError::Undecodable { .. }
            | BrokerReplayError::Unexpected { .. } => response_code::INTERNAL_ERROR,
        }
    }
}

/// The smaller of two limits where 0 means none.
fn tighter(a: u32, b: u32) -> u32 {
    match (a, b) {
        (0, x) | (x, 0) => x,
        (a, b) => a.min(b),
    }
}

/// What the proxy answers the broker's Tune with. The heartbeat is the
/// client's own choice (made against the proxy's proposal): heartbeats pass
/// through end to end, so the broker must expect them at the interval the
/// client sends them. The frame size is held within the broker's limit.
pub fn negotiate_tune(client: Tune, broker: Tune) -> Tune {
    Tune {
        frame_max: tighter(client.frame_max, broker.frame_max),
        heartbeat: client.heartbeat,
    }
}

/// The replay of one client's handshake toward one broker.
#[derive(Debug)]
pub struct BrokerReplay {
    step: ReplayStep,
    input: Vec<u8>,
    sasl_handshake_correlation: u32,
    sasl_authenticate: SaslAuthenticateRequest,
    client_tune: Tune,
    open: super::command::OpenRequest,
    tune: Option<Tune>,
}

fn undecodable(command: &'static str) -> impl FnOnce(StreamDecodeError) -> BrokerReplayError {
    move |error| BrokerReplayError::Undecodable { command, error }
}

fn refused_unless_ok(step: ReplayStep, code: u16) -> Result<(), BrokerReplayError> {
    if code == response_code::OK {
        Ok(())
    } else {
        Err(BrokerReplayError::Refused { step, code })
    }
}

impl BrokerReplay {
    /// Prepares the replay of `hello` and writes its PeerProperties request,
    /// with `additions` replacing any client property of the same name and
    /// appended in order, to `out`.
    pub fn start(hello: &ClientHello, additions: &[(&str, &str)], out: &mut Vec<u8>) -> Self {
        let mut properties: Properties = hello
            .peer_properties
            .properties
            .iter()
            .filter(|(k, _)| !additions.iter().any(|(a, _)| a == k))
            .cloned()
            .collect();
        properties.extend(
            additions
                .iter()
                .map(|&(k, v)| (k.to_string(), v.to_string())),
        );
        PeerPropertiesRequest {
            correlation_id: hello.peer_properties.correlation_id,
            properties,
        }
        .encode(out);
        BrokerReplay {
            step: ReplayStep::PeerProperties,
            input: Vec::new(),
            sasl_handshake_correlation: hello.sasl_handshake.correlation_id,
            sasl_authenticate: hello.sasl_authenticate.clone(),
            client_tune: hello.tune,
            open: hello.open.clone(),
            tune: None,
        }
    }

    /// Feeds the next bytes read from the broker; appends what to send it
    /// to `out`.
    pub fn receive(
        &mut self,
        data: &[u8],
        out: &mut Vec<u8>,
    ) -> Result<ReplayProgress, BrokerReplayError> {
        self.input.extend_from_slice(data);
        let mut consumed = 0;
        let progress = loop {
            let (frame, used) = match split_frame(&self.input[consumed..], HANDSHAKE_MAX_FRAME) {
                Ok(Some(f)) => f,
                Ok(None) => break ReplayProgress::NeedMore,
                Err(e) => return Err(BrokerReplayError::Frame(e)),
            };
            consumed += used;
            let k = frame.header.key;
            let body = frame.body;
            const R: u16 = RESPONSE_FLAG;
            match (self.step, k) {
                (_, key::HEARTBEAT) => {}
                (_, key::CLOSE) => {
                    let close = CloseRequest::decode(body).map_err(undecodable("close"))?;
                    CodeResponse {
                        key: key::CLOSE,
                        correlation_id: close.correlation_id,
                        code: response_code::OK,
                    }
                    .encode(out);
                    return Err(BrokerReplayError::Closed {
                        code: close.code,
                        reason: close.reason,
                    });
                }
                (ReplayStep::PeerProperties, k) if k == key::PEER_PROPERTIES | R => {
                    let resp = PeerPropertiesResponse::decode(body)
                        .map_err(undecodable("peer-properties response"))?;
                    refused_unless_ok(self.step, resp.code)?;
                    super::command::SaslHandshakeRequest {
                        correlation_id: self.sasl_handshake_correlation,
                    }
                    .encode(out);
                    self.step = ReplayStep::SaslHandshake;
                }
                (ReplayStep::SaslHandshake, k) if k == key::SASL_HANDSHAKE | R => {
                    let resp = SaslHandshakeResponse::decode(body)
                        .map_err(undecodable("sasl-handshake response"))?;
                    refused_unless_ok(self.step, resp.code)?;
                    if !resp.mechanisms.iter().any(|m| m == PLAIN) {
                        return Err(BrokerReplayError::PlainNotOffered {
                            offered: resp.mechanisms,
                        });
                    }
                    self.sasl_authenticate.encode(out);
                    self.step = ReplayStep::SaslAuthenticate;
                }
                (ReplayStep::SaslAuthenticate, k) if k == key::SASL_AUTHENTICATE | R => {
                    let resp = SaslAuthenticateResponse::decode(body)
                        .map_err(undecodable("sasl-authenticate response"))?;
                    refused_unless_ok(self.step, resp.code)?;
                    self.step = ReplayStep::Tune;
                }
                (ReplayStep::Tune, key::TUNE) => {
                    let broker = Tune::decode(body).map_err(undecodable("tune"))?;
                    let tune = negotiate_tune(self.client_tune, broker);
                    tune.encode_response(out);
                    self.open.encode(out);
                    self.tune = Some(tune);
                    self.step = ReplayStep::Open;
                }
                (ReplayStep::Open, k) if k == key::OPEN | R => {
                    let response =
                        OpenResponse::decode(body).map_err(undecodable("open response"))?;
                    refused_unless_ok(self.step, response.code)?;
                    let tune = self.tune.unwrap_or(self.client_tune);
                    let from_broker = self.input.split_off(consumed);
                    self.input = Vec::new();
                    return Ok(ReplayProgress::Open {
                        response,
                        tune,
                        from_broker,
                    });
                }
                (step, k) => {
                    return Err(BrokerReplayError::Unexpected {
                        expected: step,
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
#[path = "client_tests.rs"]
mod tests;
