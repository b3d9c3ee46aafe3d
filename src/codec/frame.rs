//! AMQP 0-9-1 frame layer (spec §2.3.5 "Framing", §4.2.3 "General Frame
//! Format"): the protocol headers, the 7-byte frame header
//! `type(1) channel(2) size(4)`, the payload and the `0xCE` end octet.
//!
//! Owns: recognising where a whole frame ends in a buffer, checking the end
//! octet and the size limit, and writing frames. Never interprets payloads
//! beyond the class/method ids, never copies a payload while decoding (a
//! [`Frame`] borrows it), and never panics on input: a short buffer is
//! `Ok(None)` ("need more bytes"), a bad frame is a [`DecodeError`].

use super::DecodeError;

/// The AMQP 0-9-1 protocol header (§4.2.2).
pub const PROTOCOL_HEADER: [u8; 8] = *b"AMQP\x00\x00\x09\x01";
/// The header some old 0-9 clients send; upstream amqpprox accepts it too.
pub const LEGACY_PROTOCOL_HEADER: [u8; 8] = *b"AMQP\x01\x01\x00\x09";
/// `type(1) channel(2) size(4)`.
pub const FRAME_HEADER_SIZE: usize = 7;
/// The frame-end octet (§4.2.3).
pub const FRAME_END: u8 = 0xCE;
pub const FRAME_METHOD: u8 = 1;
pub const FRAME_HEADER: u8 = 2;
pub const FRAME_BODY: u8 = 3;
pub const FRAME_HEARTBEAT: u8 = 8;
/// A complete heartbeat frame (§4.2.7): type 8, channel 0, empty payload.
pub const HEARTBEAT_FRAME: [u8; 8] = [FRAME_HEARTBEAT, 0, 0, 0, 0, 0, 0, FRAME_END];

/// The fixed 7-byte header in front of every frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameHeader {
    pub frame_type: u8,
    pub channel: u16,
    /// Payload size, excluding header and end octet.
    pub size: u32,
}

impl FrameHeader {
    /// Parses the header at the start of `buf`; `None` if fewer than 7 bytes.
    pub fn parse(buf: &[u8]) -> Option<FrameHeader> {
        let h: &[u8; FRAME_HEADER_SIZE] = buf.get(..FRAME_HEADER_SIZE)?.try_into().ok()?;
        Some(FrameHeader {
            frame_type: h[0],
            channel: u16::from_be_bytes([h[1], h[2]]),
            size: u32::from_be_bytes([h[3], h[4], h[5], h[6]]),
        })
    }

    /// Whole frame length: header, payload and end octet.
    pub fn total_len(&self) -> usize {
        // u32 + 8 fits in usize on every target with at least 64-bit usize;
        // on 32-bit targets frames that large are rejected by the size limit
        // before anyone calls this, so saturating is only a guard.
        usize::try_from(u64::from(self.size) + FRAME_HEADER_SIZE as u64 + 1).unwrap_or(usize::MAX)
    }

    /// Checks the whole frame length against `max_total` (header + payload
    /// + end octet), as upstream does as soon as the header is readable.
    pub(crate) fn check_size(&self, max_total: u32) -> Result<(), DecodeError> {
        let total = u64::from(self.size) + FRAME_HEADER_SIZE as u64 + 1;
        if total > u64::from(max_total) {
            return Err(DecodeError::FrameTooLarge {
                size: u32::try_from(total).unwrap_or(u32::MAX),
                max: max_total,
            });
        }
        Ok(())
    }
}

/// Cheap check: `Ok(Some(total_len))` when a whole frame is buffered at the
/// start of `buf`, `Ok(None)` when more bytes are needed, and
/// `Err(FrameTooLarge)` as soon as the header is readable and the whole frame
/// (8 + size) would exceed `max_total`. Does not look at the end octet.
pub fn whole_frame_len(buf: &[u8], max_total: u32) -> Result<Option<usize>, DecodeError> {
    let Some(header) = FrameHeader::parse(buf) else {
        return Ok(None);
    };
    header.check_size(max_total)?;
    let total = header.total_len();
    Ok((buf.len() >= total).then_some(total))
}

/// One frame borrowed from the input buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Frame<'a> {
    pub frame_type: u8,
    pub channel: u16,
    pub payload: &'a [u8],
}

/// Decodes the frame at the start of `buf`. `Ok(None)` means more bytes are
/// needed. Checks the size limit and the end octet. Returns the frame and the
/// number of bytes it used.
pub fn decode_frame(buf: &[u8], max_total: u32) -> Result<Option<(Frame<'_>, usize)>, DecodeError> {
    let Some(total) = whole_frame_len(buf, max_total)? else {
        return Ok(None);
    };
    // whole_frame_len guarantees total >= 8 and buf.len() >= total; get()
    // keeps this panic-free even if that reasoning were ever wrong.
    let (Some(&end), Some(&frame_type), Some(channel), Some(payload)) = (
        buf.get(total - 1),
        buf.first(),
        buf.get(1..3),
        buf.get(FRAME_HEADER_SIZE..total - 1),
    ) else {
        return Ok(None);
    };
    if end != FRAME_END {
        return Err(DecodeError::BadFrameEnd { found: end });
    }
    let frame = Frame {
        frame_type,
        channel: u16::from_be_bytes([channel[0], channel[1]]),
        payload,
    };
    Ok(Some((frame, total)))
}

/// Appends one whole frame (header, payload, end octet) to `out`.
///
/// # Panics
/// If `payload` is 4 GiB or longer, which no AMQP frame can be; callers only
/// pass payloads bounded by the negotiated frame-max.
pub fn encode_frame(frame_type: u8, channel: u16, payload: &[u8], out: &mut Vec<u8>) {
    let size = u32::try_from(payload.len()).expect("AMQP frame payload exceeds 4 GiB");
    out.reserve(payload.len() + FRAME_HEADER_SIZE + 1);
    out.push(frame_type);
    out.extend_from_slice(&channel.to_be_bytes());
    out.extend_from_slice(&size.to_be_bytes());
    out.extend_from_slice(payload);
    out.push(FRAME_END);
}

/// The class-id and method-id at the start of a method frame payload
/// (§4.2.4), or `None` if the payload is shorter than 4 bytes.
pub fn method_ids(payload: &[u8]) -> Option<(u16, u16)> {
    match payload {
        [c0, c1, m0, m1, ..] => Some((
            u16::from_be_bytes([*c0, *c1]),
            u16::from_be_bytes([*m0, *m1]),
        )),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const MAX: u32 = 150_000;

    #[test]
    fn heartbeat_round_trip() {
        let mut out = Vec::new();
        encode_frame(FRAME_HEARTBEAT, 0, &[], &mut out);
        assert_eq!(out, HEARTBEAT_FRAME);
        let (frame, used) = decode_frame(&out, MAX).unwrap().unwrap();
        assert_eq!(used, 8);
        assert_eq!(
            frame,
            Frame {
                frame_type: FRAME_HEARTBEAT,
                channel: 0,
                payload: &[]
            }
        );
    }

    #[test]
    fn needs_more_bytes_until_whole() {
        let mut out = Vec::new();
        encode_frame(FRAME_BODY, 7, b"hello", &mut out);
        for cut in 0..out.len() {
            assert_eq!(whole_frame_len(&out[..cut], MAX), Ok(None), "cut {cut}");
            assert_eq!(decode_frame(&out[..cut], MAX), Ok(None), "cut {cut}");
        }
        assert_eq!(whole_frame_len(&out, MAX), Ok(Some(13)));
        out.extend_from_slice(b"trailing");
        let (frame, used) = decode_frame(&out, MAX).unwrap().unwrap();
        assert_eq!((frame.channel, frame.payload, used), (7, &b"hello"[..], 13));
    }

    #[test]
    fn bad_end_octet() {
        let mut out = Vec::new();
        encode_frame(FRAME_METHOD, 0, &[0, 10, 0, 51], &mut out);
        *out.last_mut().unwrap() = 0x00;
        assert_eq!(
            decode_frame(&out, MAX),
            Err(DecodeError::BadFrameEnd { found: 0 })
        );
        // The cheap check does not look at the end octet.
        assert_eq!(whole_frame_len(&out, MAX), Ok(Some(12)));
    }

    #[test]
    fn size_limit_counts_header_and_end() {
        let header = |size: u32| {
            let mut h = vec![FRAME_BODY, 0, 1];
            h.extend_from_slice(&size.to_be_bytes());
            h
        };
        // Exactly at the limit: accepted (needs more bytes).
        assert_eq!(whole_frame_len(&header(MAX - 8), MAX), Ok(None));
        // One over: rejected from the header alone.
        let err = DecodeError::FrameTooLarge {
            size: MAX + 1,
            max: MAX,
        };
        assert_eq!(whole_frame_len(&header(MAX - 7), MAX), Err(err.clone()));
        assert_eq!(decode_frame(&header(MAX - 7), MAX), Err(err));
        // A size near u32::MAX must not overflow.
        assert_eq!(
            whole_frame_len(&header(u32::MAX), MAX),
            Err(DecodeError::FrameTooLarge {
                size: u32::MAX,
                max: MAX
            })
        );
        assert_eq!(
            whole_frame_len(&header(u32::MAX - 8), u32::MAX),
            Ok(None),
            "the largest representable frame is within a u32::MAX limit"
        );
    }

    #[test]
    fn header_parse_and_method_ids() {
        assert_eq!(FrameHeader::parse(&[1, 0, 0, 0, 0, 0]), None);
        let h = FrameHeader::parse(&[1, 0x01, 0x02, 0, 0, 0x01, 0x00, 0xff]).unwrap();
        assert_eq!(
            h,
            FrameHeader {
                frame_type: 1,
                channel: 0x0102,
                size: 256
            }
        );
        assert_eq!(h.total_len(), 264);
        assert_eq!(method_ids(&[0, 10, 0, 11, 9]), Some((10, 11)));
        assert_eq!(method_ids(&[0, 10, 0]), None);
    }

    proptest! {
        #[test]
        fn encode_decode_round_trip(
            frame_type in any::<u8>(),
            channel in any::<u16>(),
            payload in proptest::collection::vec(any::<u8>(), 0..300),
            trailing in proptest::collection::vec(any::<u8>(), 0..20),
        ) {
            let mut out = Vec::new();
            encode_frame(frame_type, channel, &payload, &mut out);
            let len = out.len();
            out.extend_from_slice(&trailing);
            let (frame, used) = decode_frame(&out, MAX).unwrap().unwrap();
            prop_assert_eq!(used, len);
            prop_assert_eq!(frame, Frame { frame_type, channel, payload: &payload });
        }

        #[test]
        fn arbitrary_bytes_never_panic(data in proptest::collection::vec(any::<u8>(), 0..64), max in any::<u32>()) {
            let _ = whole_frame_len(&data, max);
            if let Ok(Some((frame, used))) = decode_frame(&data, max) {
                prop_assert!(used <= data.len());
                prop_assert_eq!(frame.payload.len() + 8, used);
            }
        }
    }
}
