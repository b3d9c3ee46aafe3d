//! The kit's own AMQP 0-9-1 encoder and decoder: frames, short and long
//! strings, field tables, the connection-class methods and a few channel
//! and basic methods, written from the spec, independent of the proxy's
//! codec (so golden transcripts stay honest). The tests' raw client, the
//! scripted broker, the load broker and the load clients all build their
//! bytes here.
//!
//! Owns byte layouts only: no I/O, no decisions about what is correct.

/// The AMQP 0-9-1 protocol header.
pub const PROTOCOL_HEADER: &[u8; 8] = b"AMQP\x00\x00\x09\x01";
/// The legacy header some old clients send (`AMQP 1 1 0 9`).
pub const LEGACY_HEADER: &[u8; 8] = b"AMQP\x01\x01\x00\x09";
/// A heartbeat frame: type 8, channel 0, size 0, frame end.
pub const HEARTBEAT: &[u8; 8] = b"\x08\x00\x00\x00\x00\x00\x00\xce";
/// The frame-end octet.
pub const FRAME_END: u8 = 0xce;

pub const FRAME_METHOD: u8 = 1;
pub const FRAME_HEADER: u8 = 2;
pub const FRAME_BODY: u8 = 3;
pub const FRAME_HEARTBEAT: u8 = 8;

/// The frame-max the kit's peers offer and accept: what RabbitMQ and the
/// proxy offer by default.
pub const FRAME_MAX: u32 = 131_072;

/// (class-id, method-id) pairs of the methods the kit's peers react to.
pub mod ids {
    pub const CONNECTION_START: (u16, u16) = (10, 10);
    pub const CONNECTION_START_OK: (u16, u16) = (10, 11);
    pub const CONNECTION_TUNE: (u16, u16) = (10, 30);
    pub const CONNECTION_TUNE_OK: (u16, u16) = (10, 31);
    pub const CONNECTION_OPEN: (u16, u16) = (10, 40);
    pub const CONNECTION_OPEN_OK: (u16, u16) = (10, 41);
    pub const CONNECTION_CLOSE: (u16, u16) = (10, 50);
    pub const CONNECTION_CLOSE_OK: (u16, u16) = (10, 51);
    pub const CHANNEL_OPEN: (u16, u16) = (20, 10);
    pub const CHANNEL_OPEN_OK: (u16, u16) = (20, 11);
    pub const CHANNEL_CLOSE: (u16, u16) = (20, 40);
    pub const CHANNEL_CLOSE_OK: (u16, u16) = (20, 41);
    pub const BASIC_PUBLISH: (u16, u16) = (60, 40);
}

/// The 7-byte frame header at the start of `bytes`: type, channel, payload
/// size. Panics if fewer than 7 bytes are given.
pub fn parse_header(bytes: &[u8]) -> (u8, u16, usize) {
    (
        bytes[0],
        u16::from_be_bytes([bytes[1], bytes[2]]),
        u32::from_be_bytes([bytes[3], bytes[4], bytes[5], bytes[6]]) as usize,
    )
}

/// Class and method ids at the start of a method frame's payload.
pub fn method_ids(payload: &[u8]) -> Option<(u16, u16)> {
    match payload {
        [c0, c1, m0, m1, ..] => Some((
            u16::from_be_bytes([*c0, *c1]),
            u16::from_be_bytes([*m0, *m1]),
        )),
        _ => None,
    }
}

// ---------------------------------------------------------------------------
// Frames
// ---------------------------------------------------------------------------

/// One AMQP frame as read off the wire.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Frame {
    pub kind: u8,
    pub channel: u16,
    pub payload: Vec<u8>,
    pub end: u8,
}

impl Frame {
    /// The frame's exact wire bytes.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.payload.len() + 8);
        out.push(self.kind);
        out.extend_from_slice(&self.channel.to_be_bytes());
        out.extend_from_slice(&(self.payload.len() as u32).to_be_bytes());
        out.extend_from_slice(&self.payload);
        out.push(self.end);
        out
    }

    /// `(class-id, method-id)` of a method frame.
    pub fn method_ids(&self) -> Option<(u16, u16)> {
        if self.kind != FRAME_METHOD {
            return None;
        }
        method_ids(&self.payload)
    }

    /// True for a method frame of `class.method` on `channel`.
    pub fn is_method(&self, channel: u16, class: u16, method: u16) -> bool {
        self.channel == channel && self.method_ids() == Some((class, method))
    }

    /// The method arguments (payload after class and method ids).
    pub fn args(&self) -> &[u8] {
        self.payload.get(4..).unwrap_or(&[])
    }

    /// A one-line description for assertion messages.
    pub fn describe(&self) -> String {
        match self.method_ids() {
            Some((c, m)) => format!(
                "method frame ch={} {}.{} size={} end={:#04x}",
                self.channel,
                c,
                m,
                self.payload.len(),
                self.end
            ),
            None => format!(
                "frame type={} ch={} size={} end={:#04x}",
                self.kind,
                self.channel,
                self.payload.len(),
                self.end
            ),
        }
    }
}

/// Splits a byte stream that holds whole frames (e.g. a fixture file without
/// its protocol header) into frames; panics on a truncated tail.
pub fn split_frames(mut bytes: &[u8]) -> Vec<Frame> {
    let mut frames = Vec::new();
    while !bytes.is_empty() {
        assert!(bytes.len() >= 8, "truncated frame header: {bytes:02x?}");
        let size = u32::from_be_bytes([bytes[3], bytes[4], bytes[5], bytes[6]]) as usize;
        assert!(bytes.len() >= size + 8, "truncated frame of size {size}");
        frames.push(Frame {
            kind: bytes[0],
            channel: u16::from_be_bytes([bytes[1], bytes[2]]),
            payload: bytes[7..7 + size].to_vec(),
            end: bytes[7 + size],
        });
        bytes = &bytes[size + 8..];
    }
    frames
}

// ---------------------------------------------------------------------------
// Mini encoder
// ---------------------------------------------------------------------------

/// A short string: length octet and bytes.
pub fn shortstr(s: &str) -> Vec<u8> {
    assert!(s.len() <= 255, "shortstr too long");
    let mut out = vec![s.len() as u8];
    out.extend_from_slice(s.as_bytes());
    out
}

/// A long string: 32-bit length and bytes.
pub fn longstr(bytes: &[u8]) -> Vec<u8> {
    let mut out = (bytes.len() as u32).to_be_bytes().to_vec();
    out.extend_from_slice(bytes);
    out
}

/// An order-preserving field table under construction.
#[derive(Clone, Debug, Default)]
pub struct Table {
    body: Vec<u8>,
}

impl Table {
    pub fn new() -> Table {
        Table::default()
    }

    /// `key` = long string (`S`).
    pub fn longstr(self, key: &str, value: &str) -> Table {
        self.raw(key, b'S', &longstr(value.as_bytes()))
    }

    /// `key` = boolean (`t`).
    pub fn bool(self, key: &str, value: bool) -> Table {
        self.raw(key, b't', &[value as u8])
    }

    /// `key` = nested table (`F`).
    pub fn table(self, key: &str, value: &Table) -> Table {
        self.raw(key, b'F', &value.encode())
    }

    /// `key` = a value with any type tag and already-encoded value bytes
    /// (used to build undecodable tables on purpose).
    pub fn raw(mut self, key: &str, tag: u8, value: &[u8]) -> Table {
        self.body.extend_from_slice(&shortstr(key));
        self.body.push(tag);
        self.body.extend_from_slice(value);
        self
    }

    /// The table's entries without the length prefix.
    pub fn body(&self) -> &[u8] {
        &self.body
    }

    /// The encoded table: 32-bit length and entries.
    pub fn encode(&self) -> Vec<u8> {
        longstr(&self.body)
    }
}

/// A whole frame of any type.
pub fn frame(kind: u8, channel: u16, payload: &[u8]) -> Vec<u8> {
    Frame {
        kind,
        channel,
        payload: payload.to_vec(),
        end: FRAME_END,
    }
    .to_bytes()
}

/// A method frame: class-id, method-id, then `args` as given.
pub fn method_frame(channel: u16, class: u16, method: u16, args: &[u8]) -> Vec<u8> {
    let mut payload = Vec::with_capacity(args.len() + 4);
    payload.extend_from_slice(&class.to_be_bytes());
    payload.extend_from_slice(&method.to_be_bytes());
    payload.extend_from_slice(args);
    frame(FRAME_METHOD, channel, &payload)
}

/// The client properties of a typical client, with a `connection_name`.
pub fn client_properties(connection_name: &str) -> Table {
    let capabilities = Table::new()
        .bool("authentication_failure_close", true)
        .bool("basic.nack", true)
        .bool("connection.blocked", true)
        .bool("consumer_cancel_notify", true)
        .bool("publisher_confirms", true);
    Table::new()
        .longstr("product", "raw-test-client")
        .longstr("platform", "Rust std::net")
        .table("capabilities", &capabilities)
        .longstr("connection_name", connection_name)
        .longstr("version", "0.0.1")
}

/// Connection.StartOk (10.11) from an encoded client-properties table.
pub fn start_ok(properties: &[u8], mechanism: &str, response: &[u8], locale: &str) -> Vec<u8> {
    let mut args = properties.to_vec();
    args.extend_from_slice(&shortstr(mechanism));
    args.extend_from_slice(&longstr(response));
    args.extend_from_slice(&shortstr(locale));
    method_frame(0, 10, 11, &args)
}

/// A StartOk with [`client_properties`] and PLAIN `\0guest\0guest`.
pub fn default_start_ok(connection_name: &str) -> Vec<u8> {
    start_ok(
        &client_properties(connection_name).encode(),
        "PLAIN",
        b"\x00guest\x00guest",
        "en_US",
    )
}

/// Connection.Start (10.10), as a broker sends it.
pub fn start(properties: &Table, mechanisms: &str, locales: &str) -> Vec<u8> {
    let mut args = vec![0u8, 9];
    args.extend_from_slice(&properties.encode());
    args.extend_from_slice(&longstr(mechanisms.as_bytes()));
    args.extend_from_slice(&longstr(locales.as_bytes()));
    method_frame(0, 10, 10, &args)
}

/// Connection.Tune (10.30).
pub fn tune(channel_max: u16, frame_max: u32, heartbeat: u16) -> Vec<u8> {
    let mut args = channel_max.to_be_bytes().to_vec();
    args.extend_from_slice(&frame_max.to_be_bytes());
    args.extend_from_slice(&heartbeat.to_be_bytes());
    method_frame(0, 10, 30, &args)
}

/// Connection.TuneOk (10.31).
pub fn tune_ok(channel_max: u16, frame_max: u32, heartbeat: u16) -> Vec<u8> {
    let mut args = channel_max.to_be_bytes().to_vec();
    args.extend_from_slice(&frame_max.to_be_bytes());
    args.extend_from_slice(&heartbeat.to_be_bytes());
    method_frame(0, 10, 31, &args)
}

/// Connection.Open (10.40) with explicit reserved fields.
pub fn open_with(vhost: &str, reserved_1: &str, insist: bool) -> Vec<u8> {
    let mut args = shortstr(vhost);
    args.extend_from_slice(&shortstr(reserved_1));
    args.push(insist as u8);
    method_frame(0, 10, 40, &args)
}

/// Connection.Open (10.40) as most clients send it.
pub fn open(vhost: &str) -> Vec<u8> {
    open_with(vhost, "", false)
}

/// Connection.OpenOk (10.41) with an empty known-hosts.
pub fn open_ok() -> Vec<u8> {
    method_frame(0, 10, 41, &[0])
}

/// Connection.Close (10.50).
pub fn close(code: u16, text: &str, class: u16, method: u16) -> Vec<u8> {
    let mut args = code.to_be_bytes().to_vec();
    args.extend_from_slice(&shortstr(text));
    args.extend_from_slice(&class.to_be_bytes());
    args.extend_from_slice(&method.to_be_bytes());
    method_frame(0, 10, 50, &args)
}

/// Connection.CloseOk (10.51).
pub fn close_ok() -> Vec<u8> {
    method_frame(0, 10, 51, &[])
}

/// Channel.Close (20.40) on `channel`.
pub fn channel_close(channel: u16, code: u16, text: &str, class: u16, method: u16) -> Vec<u8> {
    let mut args = code.to_be_bytes().to_vec();
    args.extend_from_slice(&shortstr(text));
    args.extend_from_slice(&class.to_be_bytes());
    args.extend_from_slice(&method.to_be_bytes());
    method_frame(channel, 20, 40, &args)
}

/// Channel.Open (20.10) on `channel`.
pub fn channel_open(channel: u16) -> Vec<u8> {
    method_frame(channel, 20, 10, &[0])
}

/// Channel.OpenOk (20.11) on `channel`.
pub fn channel_open_ok(channel: u16) -> Vec<u8> {
    method_frame(channel, 20, 11, &[0, 0, 0, 0])
}

/// Basic.Publish (60.40) on `channel` to the default exchange.
pub fn basic_publish(channel: u16, routing_key: &str) -> Vec<u8> {
    let mut args = vec![0, 0];
    args.extend_from_slice(&shortstr(""));
    args.extend_from_slice(&shortstr(routing_key));
    args.push(0);
    method_frame(channel, 60, 40, &args)
}

/// A content header (class 60, no properties) announcing `body_size` bytes.
pub fn content_header(channel: u16, body_size: u64) -> Vec<u8> {
    let mut payload = 60u16.to_be_bytes().to_vec();
    payload.extend_from_slice(&[0, 0]);
    payload.extend_from_slice(&body_size.to_be_bytes());
    payload.extend_from_slice(&[0, 0]);
    frame(FRAME_HEADER, channel, &payload)
}

/// Body frames carrying `body`, each payload at most `max_payload` bytes.
pub fn body_frames(channel: u16, body: &[u8], max_payload: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(body.len() + body.len() / max_payload * 8 + 8);
    for chunk in body.chunks(max_payload) {
        out.extend_from_slice(&frame(FRAME_BODY, channel, chunk));
    }
    out
}

/// Deterministic, position-dependent bytes (a corruption or reordering shows).
pub fn pattern(len: usize, seed: u32) -> Vec<u8> {
    let mut x = seed.wrapping_mul(2_654_435_761) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            (x >> 11) as u8
        })
        .collect()
}

// ---------------------------------------------------------------------------
// Mini decoder
// ---------------------------------------------------------------------------

/// A bounds-checked reader over a method's arguments.
pub struct Cursor<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Cursor<'a> {
    pub fn new(buf: &'a [u8]) -> Cursor<'a> {
        Cursor { buf, pos: 0 }
    }

    pub fn position(&self) -> usize {
        self.pos
    }

    pub fn rest(&self) -> &'a [u8] {
        &self.buf[self.pos..]
    }

    pub fn take(&mut self, n: usize) -> Result<&'a [u8], String> {
        if self.buf.len() - self.pos < n {
            return Err(format!(
                "need {n} bytes at offset {}, only {} left",
                self.pos,
                self.buf.len() - self.pos
            ));
        }
        let out = &self.buf[self.pos..self.pos + n];
        self.pos += n;
        Ok(out)
    }

    pub fn u8(&mut self) -> Result<u8, String> {
        Ok(self.take(1)?[0])
    }

    pub fn u16(&mut self) -> Result<u16, String> {
        let b = self.take(2)?;
        Ok(u16::from_be_bytes([b[0], b[1]]))
    }

    pub fn u32(&mut self) -> Result<u32, String> {
        let b = self.take(4)?;
        Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }

    pub fn shortstr(&mut self) -> Result<String, String> {
        let n = self.u8()? as usize;
        Ok(String::from_utf8_lossy(self.take(n)?).into_owned())
    }

    pub fn longstr(&mut self) -> Result<&'a [u8], String> {
        let n = self.u32()? as usize;
        self.take(n)
    }

    /// A field table: returns its entries and its raw bytes (length prefix
    /// included).
    pub fn table(&mut self) -> Result<(Vec<Field>, &'a [u8]), String> {
        let start = self.pos;
        let body = self.longstr()?;
        let raw = &self.buf[start..self.pos];
        Ok((parse_table_body(body)?, raw))
    }
}

/// One field-table entry: key, type tag and the raw value bytes after the tag.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Field {
    pub key: String,
    pub tag: u8,
    pub value: Vec<u8>,
}

impl Field {
    /// The value of a long-string (`S`) field.
    pub fn as_longstr(&self) -> Option<String> {
        if self.tag != b'S' || self.value.len() < 4 {
            return None;
        }
        Some(String::from_utf8_lossy(&self.value[4..]).into_owned())
    }
}

/// Parses a table body (entries, no length prefix) in RabbitMQ's dialect.
pub fn parse_table_body(body: &[u8]) -> Result<Vec<Field>, String> {
    let mut cur = Cursor::new(body);
    let mut fields = Vec::new();
    while !cur.rest().is_empty() {
        let key = cur.shortstr()?;
        let tag = cur.u8()?;
        let start = cur.position();
        skip_value(&mut cur, tag)?;
        fields.push(Field {
            key,
            tag,
            value: body[start..cur.position()].to_vec(),
        });
    }
    Ok(fields)
}

fn skip_value(cur: &mut Cursor<'_>, tag: u8) -> Result<(), String> {
    let fixed = match tag {
        b't' | b'b' | b'B' => 1,
        b's' | b'u' | b'U' => 2,
        b'I' | b'i' | b'f' => 4,
        b'l' | b'L' | b'd' | b'T' => 8,
        b'D' => 5,
        b'V' => 0,
        b'S' | b'x' | b'F' => {
            cur.longstr()?;
            return Ok(());
        }
        b'A' => {
            let body = cur.longstr()?;
            let mut inner = Cursor::new(body);
            while !inner.rest().is_empty() {
                let t = inner.u8()?;
                skip_value(&mut inner, t)?;
            }
            return Ok(());
        }
        other => return Err(format!("unknown field type tag {:?}", other as char)),
    };
    cur.take(fixed).map(|_| ())
}

/// A decoded Connection.Close.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CloseMethod {
    pub code: u16,
    pub text: String,
    pub class_id: u16,
    pub method_id: u16,
}

/// Decodes a Connection.Close frame (channel 0, 10.50).
pub fn parse_close(frame: &Frame) -> Result<CloseMethod, String> {
    if !frame.is_method(0, 10, 50) {
        return Err(format!("not a Connection.Close: {}", frame.describe()));
    }
    let mut cur = Cursor::new(frame.args());
    let close = CloseMethod {
        code: cur.u16()?,
        text: cur.shortstr()?,
        class_id: cur.u16()?,
        method_id: cur.u16()?,
    };
    if !cur.rest().is_empty() {
        return Err(format!("{} trailing bytes after Close", cur.rest().len()));
    }
    Ok(close)
}

/// A decoded Connection.StartOk.
#[derive(Clone, Debug)]
pub struct StartOkMethod {
    /// The client-properties table as sent, length prefix included.
    pub properties_raw: Vec<u8>,
    pub properties: Vec<Field>,
    pub mechanism: String,
    pub response: Vec<u8>,
    pub locale: String,
}

impl StartOkMethod {
    /// The first long-string property named `key`.
    pub fn property(&self, key: &str) -> Option<String> {
        self.properties
            .iter()
            .find(|f| f.key == key)
            .and_then(Field::as_longstr)
    }
}

/// Decodes a Connection.StartOk frame (channel 0, 10.11).
pub fn parse_start_ok(frame: &Frame) -> Result<StartOkMethod, String> {
    if !frame.is_method(0, 10, 11) {
        return Err(format!("not a Connection.StartOk: {}", frame.describe()));
    }
    let mut cur = Cursor::new(frame.args());
    let (properties, raw) = cur.table()?;
    let method = StartOkMethod {
        properties_raw: raw.to_vec(),
        properties,
        mechanism: cur.shortstr()?,
        response: cur.longstr()?.to_vec(),
        locale: cur.shortstr()?,
    };
    if !cur.rest().is_empty() {
        return Err(format!("{} trailing bytes after StartOk", cur.rest().len()));
    }
    Ok(method)
}

/// Decodes a Connection.Open frame into (vhost, reserved-1, reserved-2 bits).
pub fn parse_open(frame: &Frame) -> Result<(String, String, u8), String> {
    if !frame.is_method(0, 10, 40) {
        return Err(format!("not a Connection.Open: {}", frame.describe()));
    }
    let mut cur = Cursor::new(frame.args());
    Ok((cur.shortstr()?, cur.shortstr()?, cur.u8()?))
}
