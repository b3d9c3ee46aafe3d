//! Typed encode and decode of the Stream protocol commands the proxy itself
//! reads or writes: the connection handshake (PeerProperties, SaslHandshake,
//! SaslAuthenticate, Tune, Open and their responses), Close, Heartbeat, and
//! the Metadata response whose broker list is rewritten.
//!
//! Decoders take a frame body (after key and version) and refuse trailing
//! bytes; encoders append one whole frame, size field included, to a
//! `Vec<u8>`. Layouts follow RabbitMQ's broker where it is stricter or
//! looser than the protocol document (each such place says so). Every other
//! command passes through the proxy as bytes and has no type here.

use super::wire::{put_bytes, put_count, put_properties, put_string, put_u16, put_u32, Reader};
use super::{key, StreamDecodeError, RESPONSE_FLAG};

/// Protocol version 1, the only one the handshake commands have.
pub const VERSION_1: u16 = 1;

/// Appends a frame: size, `key`, version 1, then what `body` writes.
pub fn encode_frame(out: &mut Vec<u8>, key: u16, body: impl FnOnce(&mut Vec<u8>)) {
    let start = out.len();
    put_u32(out, 0);
    put_u16(out, key);
    put_u16(out, VERSION_1);
    body(out);
    let size = u32::try_from(out.len() - start - 4).unwrap_or(u32::MAX);
    out[start..start + 4].copy_from_slice(&size.to_be_bytes());
}

/// The head every request with a correlation id starts with.
fn request(out: &mut Vec<u8>, k: u16, correlation_id: u32, body: impl FnOnce(&mut Vec<u8>)) {
    encode_frame(out, k, |o| {
        put_u32(o, correlation_id);
        body(o);
    });
}

/// The head of a response: correlation id and response code.
fn response(
    out: &mut Vec<u8>,
    k: u16,
    correlation_id: u32,
    code: u16,
    body: impl FnOnce(&mut Vec<u8>),
) {
    encode_frame(out, k | RESPONSE_FLAG, |o| {
        put_u32(o, correlation_id);
        put_u16(o, code);
        body(o);
    });
}

/// Key/value pairs in wire order (the broker's are maps; order is kept so
/// that a re-encoded frame matches its source).
pub type Properties = Vec<(String, String)>;

/// The value of `key` in `props`, first occurrence.
pub fn property<'a>(props: &'a [(String, String)], key: &str) -> Option<&'a str> {
    props
        .iter()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.as_str())
}

/// `PeerProperties` request (key 0x11).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerPropertiesRequest {
    pub correlation_id: u32,
    pub properties: Properties,
}

impl PeerPropertiesRequest {
    pub fn decode(body: &[u8]) -> Result<Self, StreamDecodeError> {
        let mut r = Reader::new(body);
        let correlation_id = r.u32()?;
        let properties = r.properties()?;
        r.finish()?;
        Ok(PeerPropertiesRequest {
            correlation_id,
            properties,
        })
    }

    pub fn encode(&self, out: &mut Vec<u8>) {
        request(out, key::PEER_PROPERTIES, self.correlation_id, |o| {
            put_properties(o, &self.properties)
        });
    }
}

/// `PeerProperties` response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerPropertiesResponse {
    pub correlation_id: u32,
    pub code: u16,
    pub properties: Properties,
}

impl PeerPropertiesResponse {
    pub fn decode(body: &[u8]) -> Result<Self, StreamDecodeError> {
        let mut r = Reader::new(body);
        let correlation_id = r.u32()?;
        let code = r.u16()?;
        // An error response may stop after its code.
        let properties = if r.is_empty() {
            Vec::new()
        } else {
            r.properties()?
        };
        r.finish()?;
        Ok(PeerPropertiesResponse {
            correlation_id,
            code,
            properties,
        })
    }

    pub fn encode(&self, out: &mut Vec<u8>) {
        response(
            out,
            key::PEER_PROPERTIES,
            self.correlation_id,
            self.code,
            |o| put_properties(o, &self.properties),
        );
    }
}

/// `SaslHandshake` request. The protocol document gives it a mechanism
/// field; the broker and the clients send only the correlation id, and the
/// broker refuses anything more. Decoding tolerates a trailing string.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SaslHandshakeRequest {
    pub correlation_id: u32,
}

impl SaslHandshakeRequest {
    pub fn decode(body: &[u8]) -> Result<Self, StreamDecodeError> {
        let mut r = Reader::new(body);
        let correlation_id = r.u32()?;
        if !r.is_empty() {
            r.string()?;
        }
        r.finish()?;
        Ok(SaslHandshakeRequest { correlation_id })
    }

    pub fn encode(&self, out: &mut Vec<u8>) {
        request(out, key::SASL_HANDSHAKE, self.correlation_id, |_| {});
    }
}

/// `SaslHandshake` response: the mechanisms the server offers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SaslHandshakeResponse {
    pub correlation_id: u32,
    pub code: u16,
    pub mechanisms: Vec<String>,
}

impl SaslHandshakeResponse {
    pub fn decode(body: &[u8]) -> Result<Self, StreamDecodeError> {
        let mut r = Reader::new(body);
        let correlation_id = r.u32()?;
        let code = r.u16()?;
        let mut mechanisms = Vec::new();
        if !r.is_empty() {
            let n = r.count(2)?;
            mechanisms.reserve(n);
            for _ in 0..n {
                mechanisms.push(r.text("mechanism")?);
            }
        }
        r.finish()?;
        Ok(SaslHandshakeResponse {
            correlation_id,
            code,
            mechanisms,
        })
    }

    pub fn encode(&self, out: &mut Vec<u8>) {
        response(
            out,
            key::SASL_HANDSHAKE,
            self.correlation_id,
            self.code,
            |o| {
                put_count(o, self.mechanisms.len());
                for m in &self.mechanisms {
                    put_string(o, m.as_bytes());
                }
            },
        );
    }
}

/// `SaslAuthenticate` request: a mechanism and its opaque data (`None` is
/// the protocol's null, which the broker reads as empty).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SaslAuthenticateRequest {
    pub correlation_id: u32,
    pub mechanism: String,
    pub data: Option<Vec<u8>>,
}

impl SaslAuthenticateRequest {
    pub fn decode(body: &[u8]) -> Result<Self, StreamDecodeError> {
        let mut r = Reader::new(body);
        let correlation_id = r.u32()?;
        let mechanism = r.text("mechanism")?;
        let data = r.bytes()?.map(<[u8]>::to_vec);
        r.finish()?;
        Ok(SaslAuthenticateRequest {
            correlation_id,
            mechanism,
            data,
        })
    }

    pub fn encode(&self, out: &mut Vec<u8>) {
        request(out, key::SASL_AUTHENTICATE, self.correlation_id, |o| {
            put_string(o, self.mechanism.as_bytes());
            put_bytes(o, self.data.as_deref());
        });
    }
}

/// `SaslAuthenticate` response. The broker writes no data field at all
/// when there is no challenge, and some clients refuse one that is there
/// but empty; `None` encodes that way.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SaslAuthenticateResponse {
    pub correlation_id: u32,
    pub code: u16,
    pub challenge: Option<Vec<u8>>,
}

impl SaslAuthenticateResponse {
    pub fn decode(body: &[u8]) -> Result<Self, StreamDecodeError> {
        let mut r = Reader::new(body);
        let correlation_id = r.u32()?;
        let code = r.u16()?;
        let challenge = if r.is_empty() {
            None
        } else {
            r.bytes()?.map(<[u8]>::to_vec)
        };
        r.finish()?;
        Ok(SaslAuthenticateResponse {
            correlation_id,
            code,
            challenge,
        })
    }

    pub fn encode(&self, out: &mut Vec<u8>) {
        response(
            out,
            key::SASL_AUTHENTICATE,
            self.correlation_id,
            self.code,
            |o| {
                if let Some(c) = &self.challenge {
                    put_bytes(o, Some(c));
                }
            },
        );
    }
}

/// `Tune`: sent by the server as a request (key 0x14) and echoed by the
/// client with its choice, which clients send with or without the response
/// bit. No correlation id either way.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tune {
    /// Bytes; 0 means no limit.
    pub frame_max: u32,
    /// Seconds; 0 means no heartbeats.
    pub heartbeat: u32,
}

impl Tune {
    pub fn decode(body: &[u8]) -> Result<Self, StreamDecodeError> {
        let mut r = Reader::new(body);
        let frame_max = r.u32()?;
        let heartbeat = r.u32()?;
        r.finish()?;
        Ok(Tune {
            frame_max,
            heartbeat,
        })
    }

    /// The server's proposal.
    pub fn encode_request(&self, out: &mut Vec<u8>) {
        self.encode_with_key(out, key::TUNE);
    }

    /// The client's answer.
    pub fn encode_response(&self, out: &mut Vec<u8>) {
        self.encode_with_key(out, key::TUNE | RESPONSE_FLAG);
    }

    fn encode_with_key(&self, out: &mut Vec<u8>, k: u16) {
        encode_frame(out, k, |o| {
            put_u32(o, self.frame_max);
            put_u32(o, self.heartbeat);
        });
    }
}

/// `Open` request: the virtual host, the only routing input.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpenRequest {
    pub correlation_id: u32,
    pub vhost: String,
}

impl OpenRequest {
    pub fn decode(body: &[u8]) -> Result<Self, StreamDecodeError> {
        let mut r = Reader::new(body);
        let correlation_id = r.u32()?;
        let vhost = r.text("virtual host")?;
        r.finish()?;
        Ok(OpenRequest {
            correlation_id,
            vhost,
        })
    }

    pub fn encode(&self, out: &mut Vec<u8>) {
        request(out, key::OPEN, self.correlation_id, |o| {
            put_string(o, self.vhost.as_bytes())
        });
    }
}

/// `Open` response. The broker omits the properties array when it has no
/// properties (refusals); some clients cannot decode an Open response
/// without it, so the proxy always writes it, empty if need be.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpenResponse {
    pub correlation_id: u32,
    pub code: u16,
    pub properties: Properties,
}

/// Open response properties naming the node clients should reach.
pub const ADVERTISED_HOST: &str = "advertised_host";
/// Its port, as decimal text.
pub const ADVERTISED_PORT: &str = "advertised_port";

impl OpenResponse {
    pub fn decode(body: &[u8]) -> Result<Self, StreamDecodeError> {
        let mut r = Reader::new(body);
        let correlation_id = r.u32()?;
        let code = r.u16()?;
        let properties = if r.is_empty() {
            Vec::new()
        } else {
            r.properties()?
        };
        r.finish()?;
        Ok(OpenResponse {
            correlation_id,
            code,
            properties,
        })
    }

    pub fn encode(&self, out: &mut Vec<u8>) {
        response(out, key::OPEN, self.correlation_id, self.code, |o| {
            put_properties(o, &self.properties)
        });
    }

    /// The advertised host and port, when both are there and the port is a
    /// number.
    pub fn advertised(&self) -> Option<(&str, u16)> {
        let host = property(&self.properties, ADVERTISED_HOST)?;
        let port = property(&self.properties, ADVERTISED_PORT)?.parse().ok()?;
        Some((host, port))
    }
}

/// `Close` request, from either side.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CloseRequest {
    pub correlation_id: u32,
    pub code: u16,
    pub reason: String,
}

impl CloseRequest {
    pub fn decode(body: &[u8]) -> Result<Self, StreamDecodeError> {
        let mut r = Reader::new(body);
        let correlation_id = r.u32()?;
        let code = r.u16()?;
        // A reason that is not UTF-8 is still a close: keep what can be read.
        let reason = r
            .string()?
            .map(|b| String::from_utf8_lossy(b).into_owned())
            .unwrap_or_default();
        r.finish()?;
        Ok(CloseRequest {
            correlation_id,
            code,
            reason,
        })
    }

    pub fn encode(&self, out: &mut Vec<u8>) {
        request(out, key::CLOSE, self.correlation_id, |o| {
            put_u16(o, self.code);
            put_string(o, self.reason.as_bytes());
        });
    }
}

/// A response that carries nothing but its code (the Close response, and
/// any refusal the proxy writes for a request it will not serve).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CodeResponse {
    pub key: u16,
    pub correlation_id: u32,
    pub code: u16,
}

impl CodeResponse {
    pub fn decode(k: u16, body: &[u8]) -> Result<Self, StreamDecodeError> {
        let mut r = Reader::new(body);
        let correlation_id = r.u32()?;
        let code = r.u16()?;
        r.finish()?;
        Ok(CodeResponse {
            key: k & !RESPONSE_FLAG,
            correlation_id,
            code,
        })
    }

    pub fn encode(&self, out: &mut Vec<u8>) {
        response(out, self.key, self.correlation_id, self.code, |_| {});
    }
}

/// The whole `Heartbeat` frame.
pub const HEARTBEAT_FRAME: [u8; 8] = [0, 0, 0, 4, 0, key::HEARTBEAT as u8, 0, 1];

/// One entry of a Metadata response's broker list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MetadataBroker {
    pub reference: u16,
    pub host: String,
    pub port: u32,
}

/// One stream of a Metadata response. A stream that does not exist has a
/// code other than OK and leader reference 0xFFFF.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamMetadata {
    pub name: String,
    pub code: u16,
    pub leader: u16,
    pub replicas: Vec<u16>,
}

/// `Metadata` response (key 0x800f): the brokers hosting the streams asked
/// about, then each stream's leader and replicas by broker reference.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MetadataResponse {
    pub correlation_id: u32,
    pub brokers: Vec<MetadataBroker>,
    pub streams: Vec<StreamMetadata>,
}

impl MetadataResponse {
    pub fn decode(body: &[u8]) -> Result<Self, StreamDecodeError> {
        let mut r = Reader::new(body);
        let correlation_id = r.u32()?;
        let n = r.count(8)?;
        let mut brokers = Vec::with_capacity(n);
        for _ in 0..n {
            let reference = r.u16()?;
            let host = r.text("broker host")?;
            let port = r.u32()?;
            brokers.push(MetadataBroker {
                reference,
                host,
                port,
            });
        }
        let n = r.count(10)?;
        let mut streams = Vec::with_capacity(n);
        for _ in 0..n {
            let name = r.text("stream name")?;
            let code = r.u16()?;
            let leader = r.u16()?;
            let m = r.count(2)?;
            let mut replicas = Vec::with_capacity(m);
            for _ in 0..m {
                replicas.push(r.u16()?);
            }
            streams.push(StreamMetadata {
                name,
                code,
                leader,
                replicas,
            });
        }
        r.finish()?;
        Ok(MetadataResponse {
            correlation_id,
            brokers,
            streams,
        })
    }

    pub fn encode(&self, out: &mut Vec<u8>) {
        encode_frame(out, key::METADATA | RESPONSE_FLAG, |o| {
            put_u32(o, self.correlation_id);
            put_count(o, self.brokers.len());
            for b in &self.brokers {
                put_u16(o, b.reference);
                put_string(o, b.host.as_bytes());
                put_u32(o, b.port);
            }
            put_count(o, self.streams.len());
            for s in &self.streams {
                put_string(o, s.name.as_bytes());
                put_u16(o, s.code);
                put_u16(o, s.leader);
                put_count(o, s.replicas.len());
                for r in &s.replicas {
                    put_u16(o, *r);
                }
            }
        });
    }
}

/// `Metadata` query (key 0x0f): the streams asked about. The proxy never
/// needs it decoded; encoding serves the tests that play a client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MetadataQuery {
    pub correlation_id: u32,
    pub streams: Vec<String>,
}

impl MetadataQuery {
    pub fn encode(&self, out: &mut Vec<u8>) {
        request(out, key::METADATA, self.correlation_id, |o| {
            put_count(o, self.streams.len());
            for s in &self.streams {
                put_string(o, s.as_bytes());
            }
        });
    }
}

#[cfg(test)]
#[path = "command_tests.rs"]
mod tests;
