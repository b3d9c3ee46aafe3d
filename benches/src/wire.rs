//! The few AMQP 0-9-1 frames the load harness speaks, written by hand so
//! that the load side is fast and fully under our control: the client's
//! handshake and close (spec §4.2.3, §1.4.2), the dummy broker's answers,
//! and pre-encoded `Basic.Publish` messages (method, content header and body
//! frames split at the frame-max, §4.2.6).
//!
//! Owns byte layouts and a tiny blocking frame reader for the client side.
//! Never validates more than the harness needs (it talks only to the dummy
//! broker, the proxy and RabbitMQ), never allocates per message on the hot
//! path (messages are encoded once and written many times), and never uses
//! the proxy's own codec, so a codec bug cannot hide itself in the harness.

use anyhow::{bail, Context, Result};
use std::io::Read;

/// The AMQP 0-9-1 protocol header (§4.2.2).
pub const PROTOCOL_HEADER: &[u8; 8] = b"AMQP\x00\x00\x09\x01";
/// The frame-max the harness uses and the dummy broker offers; the proxy
/// offers the same (131072), as does RabbitMQ by default.
pub const FRAME_MAX: u32 = 131_072;
/// The largest body frame payload under [`FRAME_MAX`]: header 7 + end 1.
pub const BODY_CHUNK: usize = FRAME_MAX as usize - 8;
pub const FRAME_METHOD: u8 = 1;
pub const FRAME_HEADER: u8 = 2;
pub const FRAME_BODY: u8 = 3;
pub const FRAME_HEARTBEAT: u8 = 8;
pub const FRAME_END: u8 = 0xCE;

/// (class-id, method-id) pairs the harness reacts to.
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

/// Appends one frame: `type channel size payload 0xCE`.
pub fn frame(frame_type: u8, channel: u16, payload: &[u8], out: &mut Vec<u8>) {
    out.push(frame_type);
    out.extend_from_slice(&channel.to_be_bytes());
    out.extend_from_slice(&(payload.len() as u32).to_be_bytes());
    out.extend_from_slice(payload);
    out.push(FRAME_END);
}

/// Appends a method frame whose arguments are already encoded.
pub fn method(channel: u16, (class, id): (u16, u16), args: &[u8], out: &mut Vec<u8>) {
    let mut payload = Vec::with_capacity(4 + args.len());
    payload.extend_from_slice(&class.to_be_bytes());
    payload.extend_from_slice(&id.to_be_bytes());
    payload.extend_from_slice(args);
    frame(FRAME_METHOD, channel, &payload, out);
}

fn shortstr(s: &[u8], out: &mut Vec<u8>) {
    out.push(s.len() as u8);
    out.extend_from_slice(s);
}

fn longstr(s: &[u8], out: &mut Vec<u8>) {
    out.extend_from_slice(&(s.len() as u32).to_be_bytes());
    out.extend_from_slice(s);
}

/// A field table holding one string entry (`S` = long string).
fn table_with_string(key: &str, value: &str, out: &mut Vec<u8>) {
    let mut t = Vec::new();
    shortstr(key.as_bytes(), &mut t);
    t.push(b'S');
    longstr(value.as_bytes(), &mut t);
    longstr(&t, out);
}

fn close_args(out: &mut Vec<u8>) {
    out.extend_from_slice(&200u16.to_be_bytes());
    shortstr(b"bye", out);
    out.extend_from_slice(&[0, 0, 0, 0]);
}

/// `Connection.StartOk` with PLAIN guest/guest.
pub fn start_ok() -> Vec<u8> {
    let mut args = Vec::new();
    table_with_string("product", "amqpprox-bench", &mut args);
    shortstr(b"PLAIN", &mut args);
    longstr(b"\0guest\0guest", &mut args);
    shortstr(b"en_US", &mut args);
    let mut out = Vec::new();
    method(0, ids::CONNECTION_START_OK, &args, &mut out);
    out
}

fn tune_args(heartbeat: u16) -> Vec<u8> {
    let mut args = Vec::new();
    args.extend_from_slice(&2047u16.to_be_bytes());
    args.extend_from_slice(&FRAME_MAX.to_be_bytes());
    args.extend_from_slice(&heartbeat.to_be_bytes());
    args
}

/// `Connection.TuneOk` (no heartbeats: runs are bounded in time) followed by
/// `Connection.Open` on vhost "/", sent together as real clients do.
pub fn tune_ok_and_open() -> Vec<u8> {
    let mut out = Vec::new();
    method(0, ids::CONNECTION_TUNE_OK, &tune_args(0), &mut out);
    let mut args = Vec::new();
    shortstr(b"/", &mut args);
    shortstr(b"", &mut args);
    args.push(0);
    method(0, ids::CONNECTION_OPEN, &args, &mut out);
    out
}

/// `Channel.Open` on `channel`.
pub fn channel_open(channel: u16) -> Vec<u8> {
    let mut out = Vec::new();
    method(channel, ids::CHANNEL_OPEN, &[0], &mut out);
    out
}

/// `Channel.Close` on `channel` (if non-zero) then `Connection.Close`.
pub fn close(channel: u16) -> Vec<u8> {
    let mut out = Vec::new();
    let mut args = Vec::new();
    close_args(&mut args);
    if channel != 0 {
        method(channel, ids::CHANNEL_CLOSE, &args, &mut out);
    }
    method(0, ids::CONNECTION_CLOSE, &args, &mut out);
    out
}

/// One whole message: `Basic.Publish` to the default exchange, a content
/// header without properties, and the body split at [`BODY_CHUNK`].
pub fn message(channel: u16, routing_key: &str, body_len: usize, out: &mut Vec<u8>) {
    let mut args = Vec::new();
    args.extend_from_slice(&0u16.to_be_bytes());
    shortstr(b"", &mut args);
    shortstr(routing_key.as_bytes(), &mut args);
    args.push(0);
    method(channel, ids::BASIC_PUBLISH, &args, out);
    let mut header = Vec::with_capacity(14);
    header.extend_from_slice(&60u16.to_be_bytes());
    header.extend_from_slice(&0u16.to_be_bytes());
    header.extend_from_slice(&(body_len as u64).to_be_bytes());
    header.extend_from_slice(&0u16.to_be_bytes());
    frame(FRAME_HEADER, channel, &header, out);
    let chunk = vec![0xABu8; body_len.min(BODY_CHUNK)];
    let mut left = body_len;
    while left > 0 {
        let n = left.min(BODY_CHUNK);
        frame(FRAME_BODY, channel, &chunk[..n], out);
        left -= n;
    }
}

/// `count` copies of one message back to back, to be written in one call.
pub fn message_batch(body_len: usize, count: usize) -> (Vec<u8>, usize) {
    let mut one = Vec::new();
    message(1, "bench", body_len, &mut one);
    let mut batch = Vec::with_capacity(one.len() * count);
    for _ in 0..count {
        batch.extend_from_slice(&one);
    }
    (batch, one.len())
}

/// The dummy broker's `Connection.Start`: version 0-9, no properties.
pub fn broker_start() -> Vec<u8> {
    let mut args = vec![0, 9];
    args.extend_from_slice(&0u32.to_be_bytes());
    longstr(b"PLAIN", &mut args);
    longstr(b"en_US", &mut args);
    let mut out = Vec::new();
    method(0, ids::CONNECTION_START, &args, &mut out);
    out
}

/// The dummy broker's `Connection.Tune`.
pub fn broker_tune() -> Vec<u8> {
    let mut out = Vec::new();
    method(0, ids::CONNECTION_TUNE, &tune_args(0), &mut out);
    out
}

/// A method frame with no meaningful arguments beyond `args`, for the
/// dummy broker's `*Ok` replies.
pub fn reply(channel: u16, ids: (u16, u16), args: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    method(channel, ids, args, &mut out);
    out
}

/// The 7-byte frame header: type, channel, payload size.
pub fn parse_header(b: &[u8]) -> (u8, u16, usize) {
    (
        b[0],
        u16::from_be_bytes([b[1], b[2]]),
        u32::from_be_bytes([b[3], b[4], b[5], b[6]]) as usize,
    )
}

/// Class and method ids at the start of a method payload.
pub fn method_ids(payload: &[u8]) -> Option<(u16, u16)> {
    match payload {
        [c0, c1, m0, m1, ..] => Some((
            u16::from_be_bytes([*c0, *c1]),
            u16::from_be_bytes([*m0, *m1]),
        )),
        _ => None,
    }
}

/// Buffered reader of whole frames from a blocking stream (client side:
/// only small method frames are expected back, except in echo mode where
/// the caller reads raw bytes with [`FrameReader::read_exact`]).
pub struct FrameReader {
    buf: Vec<u8>,
    start: usize,
    end: usize,
}

impl Default for FrameReader {
    fn default() -> Self {
        Self::new()
    }
}

impl FrameReader {
    pub fn new() -> Self {
        FrameReader {
            buf: vec![0; 4096],
            start: 0,
            end: 0,
        }
    }

    fn fill(&mut self, r: &mut impl Read) -> Result<()> {
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
        } else if self.end == self.buf.len() {
            self.buf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
            if self.end == self.buf.len() {
                self.buf.resize(self.buf.len() * 2, 0);
            }
        }
        let n = r
            .read(&mut self.buf[self.end..])
            .context("read from peer")?;
        if n == 0 {
            bail!("peer closed the connection");
        }
        self.end += n;
        Ok(())
    }

    /// Reads the next whole frame; returns (type, channel, payload).
    pub fn next_frame(&mut self, r: &mut impl Read) -> Result<(u8, u16, &[u8])> {
        loop {
            let avail = self.end - self.start;
            if avail >= 7 {
                let (t, ch, size) = parse_header(&self.buf[self.start..]);
                if size > FRAME_MAX as usize * 16 {
                    bail!("frame of {size} bytes from peer: framing lost");
                }
                let total = size + 8;
                if avail >= total {
                    let at = self.start;
                    self.start += total;
                    if self.buf[at + total - 1] != FRAME_END {
                        bail!("bad frame end octet from peer");
                    }
                    return Ok((t, ch, &self.buf[at + 7..at + 7 + size]));
                }
                if total > self.buf.len() {
                    self.buf.resize(total, 0);
                }
            }
            self.fill(r)?;
        }
    }

    /// Reads frames until the method `want`; skips heartbeats and anything
    /// else, but turns a `Connection.Close` from the peer into an error that
    /// carries its reply code and text.
    pub fn expect(&mut self, r: &mut impl Read, want: (u16, u16)) -> Result<Vec<u8>> {
        loop {
            let (t, _ch, payload) = self.next_frame(r)?;
            if t != FRAME_METHOD {
                continue;
            }
            let got = method_ids(payload);
            if got == Some(want) {
                return Ok(payload[4..].to_vec());
            }
            if got == Some(ids::CONNECTION_CLOSE) && want != ids::CONNECTION_CLOSE {
                let code = payload
                    .get(4..6)
                    .map_or(0, |c| u16::from_be_bytes([c[0], c[1]]));
                let len = payload.get(6).map_or(0, |&l| usize::from(l));
                let text = payload
                    .get(7..7 + len)
                    .map(String::from_utf8_lossy)
                    .unwrap_or_default();
                bail!("peer closed the connection: {code} {text}");
            }
        }
    }

    /// Fills `dst` exactly, first from buffered bytes, then from `r`.
    pub fn read_exact(&mut self, r: &mut impl Read, dst: &mut [u8]) -> Result<()> {
        let buffered = (self.end - self.start).min(dst.len());
        dst[..buffered].copy_from_slice(&self.buf[self.start..self.start + buffered]);
        self.start += buffered;
        r.read_exact(&mut dst[buffered..])
            .context("read echoed bytes")?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn message_splits_body_at_frame_max() {
        let mut out = Vec::new();
        message(1, "k", BODY_CHUNK * 2 + 5, &mut out);
        let mut reader = FrameReader::new();
        let mut cursor = std::io::Cursor::new(out);
        let kinds: Vec<(u8, usize)> = (0..5)
            .map(|_| {
                let (t, _, p) = reader.next_frame(&mut cursor).unwrap();
                (t, p.len())
            })
            .collect();
        assert_eq!(kinds[0].0, FRAME_METHOD);
        assert_eq!(kinds[1], (FRAME_HEADER, 14));
        assert_eq!(
            &kinds[2..],
            &[
                (FRAME_BODY, BODY_CHUNK),
                (FRAME_BODY, BODY_CHUNK),
                (FRAME_BODY, 5)
            ]
        );
        assert!(reader.next_frame(&mut cursor).is_err());
    }

    #[test]
    fn expect_skips_to_method_and_reports_close() {
        let mut bytes = broker_start();
        bytes.extend(broker_tune());
        let mut cursor = std::io::Cursor::new(bytes);
        let mut reader = FrameReader::new();
        let args = reader.expect(&mut cursor, ids::CONNECTION_TUNE).unwrap();
        assert_eq!(args, tune_args(0));
        let mut cursor = std::io::Cursor::new(close(0));
        let err = reader
            .expect(&mut cursor, ids::CONNECTION_OPEN_OK)
            .unwrap_err();
        assert!(err.to_string().contains("200 bye"), "{err}");
    }
}
