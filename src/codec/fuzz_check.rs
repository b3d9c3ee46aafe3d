//! Property checks shared by the cargo-fuzz targets (`tests/fuzz`), the
//! corpus replay test (`tests/fuzz_corpus.rs`) and the unit tests: each takes
//! arbitrary bytes, runs the codec over them and asserts the codec's
//! invariants (frame layer §4.2.3, methods §4.2.4, field tables §4.2.5.5).
//!
//! Test support, not part of the proxy's data path: these functions allocate
//! freely and deliberately panic when an invariant is broken, which is how a
//! fuzzer reports a bug. They never panic for merely invalid input; the
//! codec must turn that into an error value, and that is what is checked.

use super::field::FieldTable;
use super::frame::{
    decode_frame, encode_frame, method_ids, whole_frame_len, FrameHeader, FRAME_METHOD,
};
use super::method::ConnectionMethod;
use super::scanner::{FrameEvent, FrameScanner, ScanError};
use super::DecodeError;

/// The pass-through limit of the proxy (docs/sessions.md#pass-through).
pub const PROXY_MAX_TOTAL: u32 = 150_000;

/// What decoding a byte stream frame by frame with [`decode_frame`] gives:
/// the reference that the incremental [`FrameScanner`] must agree with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Walk {
    pub events: Vec<FrameEvent>,
    /// Offset just after each complete frame, in order.
    pub ends: Vec<usize>,
    /// `Ok(offset)` of the unconsumed (incomplete) tail, or the error that
    /// stopped the walk.
    pub outcome: Result<usize, ScanError>,
}

/// Decodes `data` as a sequence of whole frames with [`decode_frame`],
/// checking on the way that [`whole_frame_len`] agrees and that
/// [`encode_frame`] reproduces every frame's bytes.
pub fn reference_walk(data: &[u8], max_total: u32) -> Walk {
    let mut walk = Walk {
        events: Vec::new(),
        ends: Vec::new(),
        outcome: Ok(0),
    };
    let mut off = 0;
    loop {
        let buf = &data[off..];
        let cheap = whole_frame_len(buf, max_total);
        match decode_frame(buf, max_total) {
            Ok(None) => {
                assert_eq!(cheap, Ok(None));
                walk.outcome = Ok(off);
                return walk;
            }
            Ok(Some((frame, used))) => {
                assert_eq!(cheap, Ok(Some(used)));
                assert!(used >= 8 && used <= buf.len());
                let mut again = Vec::new();
                encode_frame(frame.frame_type, frame.channel, frame.payload, &mut again);
                assert_eq!(again, &buf[..used], "encode_frame must reproduce the frame");
                let size = u32::try_from(frame.payload.len()).expect("payload below max_total");
                walk.events.push(FrameEvent {
                    frame_type: frame.frame_type,
                    channel: frame.channel,
                    size,
                    method: if frame.frame_type == FRAME_METHOD {
                        method_ids(frame.payload)
                    } else {
                        None
                    },
                });
                off += used;
                walk.ends.push(off);
            }
            Err(DecodeError::BadFrameEnd { found }) => {
                let total = cheap.expect("size was fine").expect("frame was whole");
                assert_eq!(buf.get(total - 1), Some(&found));
                walk.outcome = Err(ScanError::BadFrameEnd { found });
                return walk;
            }
            Err(DecodeError::FrameTooLarge { size, max }) => {
                assert_eq!(cheap, Err(DecodeError::FrameTooLarge { size, max }));
                assert_eq!(max, max_total);
                // The size saturates at u32::MAX, so under that limit a
                // too-large frame reports a size equal to it (found by
                // fuzzing: a header announcing u32::MAX payload bytes).
                assert!(size > max || size == u32::MAX, "size {size}, max {max}");
                walk.outcome = Err(ScanError::FrameTooLarge { size, max });
                return walk;
            }
            Err(other) => panic!("decode_frame returned a non-frame error: {other:?}"),
        }
    }
}

/// Feeds `data` to a fresh scanner in chunks of the given sizes (the last
/// chunk takes whatever is left; zero-sized chunks are allowed) and asserts
/// it reports exactly what `walk` says, including the state at the end.
/// With `check_boundaries`, also asserts after every chunk that
/// `at_frame_boundary` is true exactly at the walk's frame ends.
pub fn check_scanner(
    data: &[u8],
    max_total: u32,
    walk: &Walk,
    chunks: &[usize],
    check_boundaries: bool,
) {
    let mut scanner = FrameScanner::new(max_total);
    let mut events = Vec::new();
    let mut result = Ok(());
    let mut off = 0;
    let mut sizes = chunks.iter().copied().chain(std::iter::once(usize::MAX));
    while result.is_ok() && (off < data.len() || off == 0) {
        let n = sizes.next().unwrap_or(usize::MAX).min(data.len() - off);
        result = scanner.scan(&data[off..off + n], |e| events.push(e));
        off += n;
        if check_boundaries && result.is_ok() {
            let boundary = off == 0 || walk.ends.binary_search(&off).is_ok();
            assert_eq!(scanner.at_frame_boundary(), boundary, "at offset {off}");
        }
        if data.is_empty() {
            break;
        }
    }
    assert_eq!(
        events, walk.events,
        "scanner events differ from decode_frame"
    );
    match walk.outcome {
        Ok(tail) => {
            assert_eq!(result, Ok(()));
            let partial = data.len() - tail;
            assert_eq!(scanner.at_frame_boundary(), partial == 0);
            let expected = match FrameHeader::parse(&data[tail..]) {
                Some(h) => Some(h.total_len() - partial),
                None if partial == 0 => Some(0),
                None => None,
            };
            assert_eq!(scanner.remaining_in_frame(), expected);
        }
        Err(err) => {
            assert_eq!(result, Err(err));
            // Poisoned: the same error again, no events, no progress.
            assert_eq!(scanner.scan(&[], |_| panic!("event after error")), Err(err));
            assert_eq!(
                scanner.scan(&[8, 0, 0, 0, 0, 0, 0, 0xce], |_| panic!(
                    "event after error"
                )),
                Err(err)
            );
            assert!(!scanner.at_frame_boundary());
        }
    }
}

/// Fuzz target `frame_decode`: [`decode_frame`], [`whole_frame_len`] and the
/// [`FrameScanner`] over `data`, under several size limits and chunkings.
pub fn frame_decode(data: &[u8]) {
    let fits_all = u32::try_from(data.len()).unwrap_or(u32::MAX);
    for max_total in [PROXY_MAX_TOTAL, 64, fits_all, u32::MAX] {
        let walk = reference_walk(data, max_total);
        check_scanner(data, max_total, &walk, &[], false);
        // Byte by byte: every header, id and end octet split.
        check_scanner(data, max_total, &walk, &vec![1; data.len()], true);
        // Irregular chunks taken from the input itself, including empty ones.
        let chunks: Vec<usize> = data.iter().map(|b| usize::from(b % 19)).collect();
        check_scanner(data, max_total, &walk, &chunks, true);
    }
    let _ = FrameHeader::parse(data);
}

/// Fuzz target `method_decode`: [`ConnectionMethod::decode`] and
/// [`FieldTable::decode`] over `data`; whenever decoding succeeds, the
/// re-encoding must decode again to the same bytes, and must equal the input
/// except where the codec normalises (boolean octets > 1 become 1; the
/// unused bits of `connection.open`'s bit octet become 0).
pub fn method_decode(data: &[u8]) {
    if let Ok(m) = ConnectionMethod::decode(data) {
        let mut enc = Vec::new();
        m.encode_payload(&mut enc);
        let open_bits = matches!(m, ConnectionMethod::Open(_)).then(|| data.len() - 1);
        assert_normalised_equal(data, &enc, open_bits);
        let again = ConnectionMethod::decode(&enc).expect("re-encoded method must decode");
        let mut enc2 = Vec::new();
        again.encode_payload(&mut enc2);
        assert_eq!(enc, enc2, "method re-encoding is not stable");
        assert_eq!(m.name(), again.name());
        let mut frame = Vec::new();
        m.encode_frame(&mut frame);
        let (f, used) = decode_frame(&frame, u32::MAX)
            .expect("valid frame")
            .expect("whole frame");
        assert_eq!(
            (f.frame_type, f.channel, f.payload, used),
            (FRAME_METHOD, 0, &enc[..], frame.len())
        );
        // Debug must work on anything that decodes, and never show secrets.
        let text = format!("{m:?}");
        if let ConnectionMethod::StartOk(s) = &m {
            assert!(text.contains(&format!("<redacted, {} bytes>", s.response.len())));
        }
    }
    if let Ok((t, used)) = FieldTable::decode(data) {
        assert!(used <= data.len());
        let mut enc = Vec::new();
        t.encode(&mut enc);
        assert_normalised_equal(&data[..used], &enc, None);
        let (again, used2) = FieldTable::decode(&enc).expect("re-encoded table must decode");
        assert_eq!(used2, enc.len());
        let mut enc2 = Vec::new();
        again.encode(&mut enc2);
        assert_eq!(enc, enc2, "table re-encoding is not stable");
        let _ = format!("{t:?}");
    }
}

/// `enc` must equal `orig` byte for byte, except boolean octets that were
/// > 1 (now 1) and, at `open_bits`, the reserved bits of the bit octet.
fn assert_normalised_equal(orig: &[u8], enc: &[u8], open_bits: Option<usize>) {
    assert_eq!(orig.len(), enc.len(), "re-encoding changed the length");
    for (i, (&o, &e)) in orig.iter().zip(enc).enumerate() {
        let ok = o == e || (e == 1 && o > 1) || (Some(i) == open_bits && e == o & 1);
        assert!(ok, "re-encoding changed byte {i}: {o:#04x} -> {e:#04x}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_and_tiny_inputs() {
        for data in [
            &[][..],
            &[1],
            &[1, 0, 0, 0, 0, 0, 0],
            &[8, 0, 0, 0, 0, 0, 0, 0xce],
            &[0, 10, 0, 51],
        ] {
            frame_decode(data);
            method_decode(data);
        }
    }

    #[test]
    fn normalisation_is_tolerated_but_nothing_else() {
        // Open "/" with bit octet 0x03 and a table with a 't' octet of 7.
        method_decode(b"\x00\x0a\x00\x28\x01/\x00\x03");
        method_decode(b"\x00\x00\x00\x04\x01at\x07");
        assert!(std::panic::catch_unwind(|| assert_normalised_equal(&[5], &[6], None)).is_err());
    }
}
