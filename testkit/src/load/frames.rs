//! The frames the load harness's clients send and its load broker
//! answers, encoded once with [`crate::wire`]: the client's handshake and
//! close, the broker's Start/Tune, and pre-encoded `Basic.Publish` messages
//! (method, content header and body frames split at the frame-max) written
//! many times; plus a tiny blocking frame reader for the client side.
//!
//! Never validates more than the harness needs (it talks only to the load
//! broker, the proxy and RabbitMQ) and never allocates per message on the
//! hot path: messages are encoded once and written many times.

use anyhow::{bail, Context, Result};
use std::io::Read;

use crate::wire::{self, Table};
pub use crate::wire::{
    ids, method_ids, parse_header, FRAME_BODY, FRAME_END, FRAME_HEADER, FRAME_HEARTBEAT, FRAME_MAX,
    FRAME_METHOD, PROTOCOL_HEADER,
};

/// The largest body frame payload under [`FRAME_MAX`]: header 7 + end 1.
pub const BODY_CHUNK: usize = FRAME_MAX as usize - 8;

/// The heartbeat both load peers negotiate: none, runs are bounded in time.
const NO_HEARTBEAT: u16 = 0;

/// `Connection.StartOk` with PLAIN guest/guest and only a `product`
/// client property.
pub fn start_ok() -> Vec<u8> {
    let properties = Table::new().longstr("product", "amqpprox-bench");
    wire::start_ok(&properties.encode(), "PLAIN", b"\0guest\0guest", "en_US")
}

/// `Connection.TuneOk` (no heartbeats) followed by `Connection.Open` on
/// vhost "/", sent together as real clients do.
pub fn tune_ok_and_open() -> Vec<u8> {
    let mut out = wire::tune_ok(2047, FRAME_MAX, NO_HEARTBEAT);
    out.extend_from_slice(&wire::open("/"));
    out
}

/// `Channel.Open` on `channel`.
pub fn channel_open(channel: u16) -> Vec<u8> {
    wire::channel_open(channel)
}

/// `Confirm.Select` and its answer (class 85), and `Basic.Ack`, the
/// publisher confirm.
pub const CONFIRM_SELECT: (u16, u16) = (85, 10);
pub const CONFIRM_SELECT_OK: (u16, u16) = (85, 11);
pub const BASIC_ACK: (u16, u16) = (60, 80);

/// `Confirm.Select` (no-wait off) on `channel`.
pub fn confirm_select(channel: u16) -> Vec<u8> {
    reply(channel, CONFIRM_SELECT, &[0])
}

/// `Channel.Close` on `channel` (if non-zero) then `Connection.Close`, both
/// 200 "bye".
pub fn close(channel: u16) -> Vec<u8> {
    let mut out = Vec::new();
    if channel != 0 {
        out.extend_from_slice(&wire::channel_close(channel, 200, "bye", 0, 0));
    }
    out.extend_from_slice(&wire::close(200, "bye", 0, 0));
    out
}

/// Appends one whole message: `Basic.Publish` to the default exchange, a
/// content header without properties, and the body split at
/// [`BODY_CHUNK`].
pub fn message(channel: u16, routing_key: &str, body_len: usize, out: &mut Vec<u8>) {
    out.extend_from_slice(&wire::basic_publish(channel, routing_key));
    out.extend_from_slice(&wire::content_header(channel, body_len as u64));
    let chunk = vec![0xABu8; body_len.min(BODY_CHUNK)];
    let mut left = body_len;
    while left > 0 {
        let n = left.min(BODY_CHUNK);
        out.extend_from_slice(&wire::frame(FRAME_BODY, channel, &chunk[..n]));
        left -= n;
    }
}

/// `count` copies of one message back to back, to be written in one call,
/// and the length of one.
pub fn message_batch(body_len: usize, count: usize) -> (Vec<u8>, usize) {
    let mut one = Vec::new();
    message(1, "bench", body_len, &mut one);
    let mut batch = Vec::with_capacity(one.len() * count);
    for _ in 0..count {
        batch.extend_from_slice(&one);
    }
    (batch, one.len())
}

/// The load broker's `Connection.Start`: version 0-9, no properties.
pub fn broker_start() -> Vec<u8> {
    wire::start(&Table::new(), "PLAIN", "en_US")
}

/// The load broker's `Connection.Tune`.
pub fn broker_tune() -> Vec<u8> {
    wire::tune(2047, FRAME_MAX, NO_HEARTBEAT)
}

/// A method frame on `channel` whose arguments are already encoded, for
/// the load broker's `*Ok` replies.
pub fn reply(channel: u16, (class, method): (u16, u16), args: &[u8]) -> Vec<u8> {
    wire::method_frame(channel, class, method, args)
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
        // The arguments follow the 7-byte header and the 4 bytes of ids.
        let tune = broker_tune();
        assert_eq!(args, &tune[11..tune.len() - 1]);
        let mut cursor = std::io::Cursor::new(close(0));
        let err = reader
            .expect(&mut cursor, ids::CONNECTION_OPEN_OK)
            .unwrap_err();
        assert!(err.to_string().contains("200 bye"), "{err}");
    }
}
