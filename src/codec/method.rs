//! The connection-class methods (class 10) of AMQP 0-9-1: spec §1.4.2
//! ("Connection class") and the argument lists of amqp0-9-1.xml, encoded as
//! in §4.2.4 (method payload = class-id, method-id, arguments) with the data
//! types of §4.2.5.
//!
//! Owns: decoding every connection method from a method frame payload and
//! encoding it back, byte for byte, so the proxy can replay a client's
//! StartOk/TuneOk to the broker. Never decodes other classes (they are
//! `NotConnectionMethod`), never accepts trailing bytes, never panics on
//! input, and never prints SASL responses (credentials) in `Debug` output.

use std::fmt;

use super::field::FieldTable;
use super::frame::{decode_frame, FRAME_END, FRAME_METHOD};
use super::wire::{begin_len32, end_len32, put_len32, put_longstr, put_shortstr, ByteStr, Reader};
use super::DecodeError;

pub const CONNECTION_CLASS: u16 = 10;

/// Method ids within the connection class.
pub mod method_id {
    pub const START: u16 = 10;
    pub const START_OK: u16 = 11;
    pub const SECURE: u16 = 20;
    pub const SECURE_OK: u16 = 21;
    pub const TUNE: u16 = 30;
    pub const TUNE_OK: u16 = 31;
    pub const OPEN: u16 = 40;
    pub const OPEN_OK: u16 = 41;
    pub const CLOSE: u16 = 50;
    pub const CLOSE_OK: u16 = 51;
    pub const BLOCKED: u16 = 60;
    pub const UNBLOCKED: u16 = 61;
}

/// Reply codes (amqp0-9-1.xml constants) used in `Connection.Close`.
pub mod reply_code {
    pub const REPLY_SUCCESS: u16 = 200;
    pub const CONNECTION_FORCED: u16 = 320;
    pub const INVALID_PATH: u16 = 402;
    pub const ACCESS_REFUSED: u16 = 403;
    pub const NOT_FOUND: u16 = 404;
    pub const FRAME_ERROR: u16 = 501;
    pub const SYNTAX_ERROR: u16 = 502;
    pub const COMMAND_INVALID: u16 = 503;
    pub const CHANNEL_ERROR: u16 = 504;
    pub const UNEXPECTED_FRAME: u16 = 505;
    pub const RESOURCE_ERROR: u16 = 506;
    pub const NOT_ALLOWED: u16 = 530;
    pub const NOT_IMPLEMENTED: u16 = 540;
    pub const INTERNAL_ERROR: u16 = 541;
}

/// `connection.start` (server → client).
#[derive(Clone, PartialEq)]
pub struct Start {
    pub version_major: u8,
    pub version_minor: u8,
    pub server_properties: FieldTable,
    /// longstr, space-separated SASL mechanism names.
    pub mechanisms: Vec<u8>,
    /// longstr, space-separated locales.
    pub locales: Vec<u8>,
}

/// `connection.start-ok` (client → server).
#[derive(Clone, PartialEq)]
pub struct StartOk {
    pub client_properties: FieldTable,
    /// shortstr.
    pub mechanism: Vec<u8>,
    /// longstr: the SASL response, i.e. the credentials. Never printed.
    pub response: Vec<u8>,
    /// shortstr.
    pub locale: Vec<u8>,
}

/// Arguments of `connection.tune` and `connection.tune-ok` (same layout).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tune {
    pub channel_max: u16,
    pub frame_max: u32,
    pub heartbeat: u16,
}

/// `connection.open`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Open {
    pub vhost: String,
    /// reserved-1 (shortstr), "capabilities" in 0-8.
    pub capabilities: Vec<u8>,
    /// reserved-2 (bit), "insist" in 0-8. Only bit 0 of the octet carries
    /// it; the other bits are unused by the spec and are written as 0.
    pub insist: bool,
}

/// `connection.close`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Close {
    pub reply_code: u16,
    /// shortstr; brokers send ASCII but nothing guarantees UTF-8.
    pub reply_text: Vec<u8>,
    pub class_id: u16,
    pub method_id: u16,
}

impl Close {
    /// A close with failing class/method 0. The text is cut to the 255
    /// bytes a shortstr can hold, on a char boundary so it stays UTF-8.
    pub fn new(reply_code: u16, reply_text: &str) -> Close {
        let mut end = reply_text.len().min(255);
        while !reply_text.is_char_boundary(end) {
            end -= 1;
        }
        Close {
            reply_code,
            reply_text: reply_text.as_bytes()[..end].to_vec(),
            class_id: 0,
            method_id: 0,
        }
    }

    pub fn reply_text_lossy(&self) -> String {
        String::from_utf8_lossy(&self.reply_text).into_owned()
    }
}

/// Any method of the connection class.
#[derive(Clone, PartialEq)]
pub enum ConnectionMethod {
    Start(Start),
    StartOk(StartOk),
    Secure { challenge: Vec<u8> },
    SecureOk { response: Vec<u8> },
    Tune(Tune),
    TuneOk(Tune),
    Open(Open),
    OpenOk { known_hosts: Vec<u8> },
    Close(Close),
    CloseOk,
    Blocked { reason: Vec<u8> },
    Unblocked,
}

impl ConnectionMethod {
    /// Decodes a method frame payload (starting with class-id, method-id).
    /// Rejects other classes and unknown method ids (`NotConnectionMethod`)
    /// and trailing bytes after the arguments (`Malformed`).
    pub fn decode(payload: &[u8]) -> Result<ConnectionMethod, DecodeError> {
        use method_id::*;
        let mut r = Reader::new(payload);
        let class_id = r.u16()?;
        let method_id = r.u16()?;
        if class_id != CONNECTION_CLASS {
            return Err(DecodeError::NotConnectionMethod {
                class_id,
                method_id,
            });
        }
        let method = match method_id {
            START => ConnectionMethod::Start(Start {
                version_major: r.u8()?,
                version_minor: r.u8()?,
                server_properties: FieldTable::decode_from(&mut r)?,
                mechanisms: r.longstr()?.to_vec(),
                locales: r.longstr()?.to_vec(),
            }),
            START_OK => ConnectionMethod::StartOk(StartOk {
                client_properties: FieldTable::decode_from(&mut r)?,
                mechanism: r.shortstr()?.to_vec(),
                response: r.longstr()?.to_vec(),
                locale: r.shortstr()?.to_vec(),
            }),
            SECURE => ConnectionMethod::Secure {
                challenge: r.longstr()?.to_vec(),
            },
            SECURE_OK => ConnectionMethod::SecureOk {
                response: r.longstr()?.to_vec(),
            },
            TUNE => ConnectionMethod::Tune(decode_tune(&mut r)?),
            TUNE_OK => ConnectionMethod::TuneOk(decode_tune(&mut r)?),
            OPEN => {
                let vhost = std::str::from_utf8(r.shortstr()?)
                    .map_err(|_| DecodeError::InvalidUtf8 {
                        field: "virtual-host",
                    })?
                    .to_owned();
                ConnectionMethod::Open(Open {
                    vhost,
                    capabilities: r.shortstr()?.to_vec(),
                    insist: r.u8()? & 1 != 0,
                })
            }
            OPEN_OK => ConnectionMethod::OpenOk {
                known_hosts: r.shortstr()?.to_vec(),
            },
            CLOSE => ConnectionMethod::Close(Close {
                reply_code: r.u16()?,
                reply_text: r.shortstr()?.to_vec(),
                class_id: r.u16()?,
                method_id: r.u16()?,
            }),
            CLOSE_OK => ConnectionMethod::CloseOk,
            BLOCKED => ConnectionMethod::Blocked {
                reason: r.shortstr()?.to_vec(),
            },
            UNBLOCKED => ConnectionMethod::Unblocked,
            _ => {
                return Err(DecodeError::NotConnectionMethod {
                    class_id,
                    method_id,
                })
            }
        };
        if !r.is_empty() {
            return Err(DecodeError::Malformed(
                "trailing bytes after method arguments",
            ));
        }
        Ok(method)
    }

    /// The method-id within class 10.
    pub fn method_id(&self) -> u16 {
        use method_id::*;
        match self {
            ConnectionMethod::Start(_) => START,
            ConnectionMethod::StartOk(_) => START_OK,
            ConnectionMethod::Secure { .. } => SECURE,
            ConnectionMethod::SecureOk { .. } => SECURE_OK,
            ConnectionMethod::Tune(_) => TUNE,
            ConnectionMethod::TuneOk(_) => TUNE_OK,
            ConnectionMethod::Open(_) => OPEN,
            ConnectionMethod::OpenOk { .. } => OPEN_OK,
            ConnectionMethod::Close(_) => CLOSE,
            ConnectionMethod::CloseOk => CLOSE_OK,
            ConnectionMethod::Blocked { .. } => BLOCKED,
            ConnectionMethod::Unblocked => UNBLOCKED,
        }
    }

    /// Appends the method payload (class-id, method-id, arguments).
    pub fn encode_payload(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&CONNECTION_CLASS.to_be_bytes());
        out.extend_from_slice(&self.method_id().to_be_bytes());
        match self {
            ConnectionMethod::Start(s) => {
                out.push(s.version_major);
                out.push(s.version_minor);
                s.server_properties.encode(out);
                put_longstr(out, &s.mechanisms);
                put_longstr(out, &s.locales);
            }
            ConnectionMethod::StartOk(s) => {
                s.client_properties.encode(out);
                put_shortstr(out, &s.mechanism);
                put_longstr(out, &s.response);
                put_shortstr(out, &s.locale);
            }
            ConnectionMethod::Secure { challenge: b }
            | ConnectionMethod::SecureOk { response: b } => put_longstr(out, b),
            ConnectionMethod::Tune(t) | ConnectionMethod::TuneOk(t) => {
                out.extend_from_slice(&t.channel_max.to_be_bytes());
                out.extend_from_slice(&t.frame_max.to_be_bytes());
                out.extend_from_slice(&t.heartbeat.to_be_bytes());
            }
            ConnectionMethod::Open(o) => {
                put_shortstr(out, o.vhost.as_bytes());
                put_shortstr(out, &o.capabilities);
                out.push(u8::from(o.insist));
            }
            ConnectionMethod::OpenOk { known_hosts: b }
            | ConnectionMethod::Blocked { reason: b } => put_shortstr(out, b),
            ConnectionMethod::Close(c) => {
                out.extend_from_slice(&c.reply_code.to_be_bytes());
                put_shortstr(out, &c.reply_text);
                out.extend_from_slice(&c.class_id.to_be_bytes());
                out.extend_from_slice(&c.method_id.to_be_bytes());
            }
            ConnectionMethod::CloseOk | ConnectionMethod::Unblocked => {}
        }
    }

    /// Appends the whole method frame on channel 0 (header, payload, 0xCE).
    pub fn encode_frame(&self, out: &mut Vec<u8>) {
        out.push(FRAME_METHOD);
        out.extend_from_slice(&0u16.to_be_bytes());
        // The frame size is a u32 right after type and channel, so the
        // length-slot helpers used for tables fit it exactly.
        let at = begin_len32(out);
        self.encode_payload(out);
        end_len32(out, at);
        out.push(FRAME_END);
    }

    /// The spec name, e.g. `"connection.start-ok"`.
    pub fn name(&self) -> &'static str {
        method_name(self.method_id()).unwrap_or("connection.unknown")
    }
}

/// A `Connection.StartOk` payload checked as [`ConnectionMethod::decode`]
/// checks it, borrowed rather than decoded: the transparent handshake
/// forwards the client's own bytes and reads one property, so it keeps the
/// payload and decodes it only when a replay needs the method.
#[derive(Clone, Copy)]
pub struct StartOkRef<'a> {
    payload: &'a [u8],
    client_properties: &'a [u8],
}

impl<'a> StartOkRef<'a> {
    /// Accepts `payload` when `ConnectionMethod::decode` would decode it as
    /// a `StartOk`, and fails with the error it would give otherwise.
    pub fn check(payload: &'a [u8]) -> Result<StartOkRef<'a>, DecodeError> {
        let mut r = Reader::new(payload);
        let class_id = r.u16()?;
        let method_id = r.u16()?;
        if (class_id, method_id) != (CONNECTION_CLASS, method_id::START_OK) {
            return Err(DecodeError::NotConnectionMethod {
                class_id,
                method_id,
            });
        }
        let client_properties = super::field::check_table_from(&mut r)?;
        r.shortstr()?;
        r.longstr()?;
        r.shortstr()?;
        if !r.is_empty() {
            return Err(DecodeError::Malformed(
                "trailing bytes after method arguments",
            ));
        }
        Ok(StartOkRef {
            payload,
            client_properties,
        })
    }

    /// The view of a payload that [`StartOkRef::check`] accepted before,
    /// without walking its table again; `None` if it is too short to be one.
    pub fn of_checked(payload: &'a [u8]) -> Option<StartOkRef<'a>> {
        let mut r = Reader::new(payload);
        r.take(4).ok()?;
        let client_properties = r.longstr().ok()?;
        Some(StartOkRef {
            payload,
            client_properties,
        })
    }

    /// The whole method payload.
    pub fn payload(&self) -> &'a [u8] {
        self.payload
    }

    /// A long-string client property (the first entry of that name, when
    /// it is a long string), as `client_properties.get(key)` would find it.
    pub fn longstr_property(&self, key: &str) -> Option<&'a [u8]> {
        super::field::checked_longstr_entry(self.client_properties, key.as_bytes())
    }
}

/// Appends a long-string entry (`key`, type `S`, `value`) as it is encoded
/// inside a field table, for [`start_ok_with_entries`].
pub fn put_longstr_entry(out: &mut Vec<u8>, key: &str, value: &[u8]) {
    put_shortstr(out, key.as_bytes());
    out.push(b'S');
    put_longstr(out, value);
}

/// Appends to `out` the `Connection.StartOk` frame `raw` with `entries`
/// (encoded table entries, from [`put_longstr_entry`]) added at the end of
/// its client-properties table; every other byte is the client's own.
/// `raw` must be one whole frame whose payload [`ConnectionMethod::decode`]
/// accepted as a `StartOk`; `None` (and nothing written) otherwise.
pub fn start_ok_with_entries(raw: &[u8], entries: &[u8], out: &mut Vec<u8>) -> Option<()> {
    let (frame, _) = decode_frame(raw, u32::MAX).ok()??;
    let mut r = Reader::new(frame.payload);
    let ids = r.take(4).ok()?;
    let table_len = r.u32().ok()? as usize;
    let table = r.take(table_len).ok()?;
    let tail = r.take(r.remaining()).ok()?;
    out.push(frame.frame_type);
    out.extend_from_slice(&frame.channel.to_be_bytes());
    let size_at = begin_len32(out);
    out.extend_from_slice(ids);
    put_len32(out, table_len + entries.len());
    out.extend_from_slice(table);
    out.extend_from_slice(entries);
    out.extend_from_slice(tail);
    end_len32(out, size_at);
    out.push(FRAME_END);
    Some(())
}

/// The name of method `id` of the connection class, as the specification
/// spells it; `None` for an id it does not define.
pub fn method_name(id: u16) -> Option<&'static str> {
    use method_id::*;
    Some(match id {
        START => "connection.start",
        START_OK => "connection.start-ok",
        SECURE => "connection.secure",
        SECURE_OK => "connection.secure-ok",
        TUNE => "connection.tune",
        TUNE_OK => "connection.tune-ok",
        OPEN => "connection.open",
        OPEN_OK => "connection.open-ok",
        CLOSE => "connection.close",
        CLOSE_OK => "connection.close-ok",
        BLOCKED => "connection.blocked",
        UNBLOCKED => "connection.unblocked",
        _ => return None,
    })
}

fn decode_tune(r: &mut Reader<'_>) -> Result<Tune, DecodeError> {
    Ok(Tune {
        channel_max: r.u16()?,
        frame_max: r.u32()?,
        heartbeat: r.u16()?,
    })
}

/// Stands in for a secret: only its length is shown, never any byte of it,
/// in any encoding, so logs cannot leak even a prefix of a password.
struct Redacted(usize);

impl fmt::Debug for Redacted {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "<redacted, {} bytes>", self.0)
    }
}

impl fmt::Debug for Start {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Start")
            .field("version_major", &self.version_major)
            .field("version_minor", &self.version_minor)
            .field("server_properties", &self.server_properties)
            .field("mechanisms", &ByteStr(&self.mechanisms))
            .field("locales", &ByteStr(&self.locales))
            .finish()
    }
}

impl fmt::Debug for StartOk {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StartOk")
            .field("client_properties", &self.client_properties)
            .field("mechanism", &ByteStr(&self.mechanism))
            .field("response", &Redacted(self.response.len()))
            .field("locale", &ByteStr(&self.locale))
            .finish()
    }
}

impl fmt::Debug for ConnectionMethod {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConnectionMethod::Start(s) => f.debug_tuple("Start").field(s).finish(),
            ConnectionMethod::StartOk(s) => f.debug_tuple("StartOk").field(s).finish(),
            ConnectionMethod::Secure { challenge } => f
                .debug_struct("Secure")
                .field("challenge", &ByteStr(challenge))
                .finish(),
            ConnectionMethod::SecureOk { response } => f
                .debug_struct("SecureOk")
                .field("response", &Redacted(response.len()))
                .finish(),
            ConnectionMethod::Tune(t) => f.debug_tuple("Tune").field(t).finish(),
            ConnectionMethod::TuneOk(t) => f.debug_tuple("TuneOk").field(t).finish(),
            ConnectionMethod::Open(o) => f.debug_tuple("Open").field(o).finish(),
            ConnectionMethod::OpenOk { known_hosts } => f
                .debug_struct("OpenOk")
                .field("known_hosts", &ByteStr(known_hosts))
                .finish(),
            ConnectionMethod::Close(c) => f.debug_tuple("Close").field(c).finish(),
            ConnectionMethod::CloseOk => f.write_str("CloseOk"),
            ConnectionMethod::Blocked { reason } => f
                .debug_struct("Blocked")
                .field("reason", &ByteStr(reason))
                .finish(),
            ConnectionMethod::Unblocked => f.write_str("Unblocked"),
        }
    }
}

#[cfg(test)]
#[path = "method_tests.rs"]
mod tests;
