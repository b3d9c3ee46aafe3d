//! Unit tests for the pass-through frame scanner (AMQP 0-9-1 §4.2.3): split
//! headers, split method ids and end octets, errors and poisoning, and a
//! property test against whole-buffer decoding. Test code only; never
//! shipped.

use super::*;
use crate::codec::frame::{encode_frame, FRAME_BODY, FRAME_HEADER, FRAME_HEARTBEAT};
use crate::codec::fuzz_check::{check_scanner, reference_walk, PROXY_MAX_TOTAL};
use proptest::prelude::*;

fn frame(frame_type: u8, channel: u16, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    encode_frame(frame_type, channel, payload, &mut out);
    out
}

fn scan_all(scanner: &mut FrameScanner, chunk: &[u8]) -> (Vec<FrameEvent>, Result<(), ScanError>) {
    let mut events = Vec::new();
    let r = scanner.scan(chunk, |e| events.push(e));
    (events, r)
}

#[test]
fn events_for_each_frame_type() {
    let mut stream = frame(FRAME_METHOD, 1, &[0, 60, 0, 40, 9, 9]);
    stream.extend(frame(FRAME_HEADER, 1, &[0; 14]));
    stream.extend(frame(FRAME_BODY, 1, b"body"));
    stream.extend(frame(FRAME_HEARTBEAT, 0, &[]));
    stream.extend(frame(FRAME_METHOD, 0, &[0, 10])); // too short for ids
    let mut s = FrameScanner::new(PROXY_MAX_TOTAL);
    let (events, r) = scan_all(&mut s, &stream);
    assert_eq!(r, Ok(()));
    let ev = |frame_type, channel, size, method| FrameEvent {
        frame_type,
        channel,
        size,
        method,
    };
    assert_eq!(
        events,
        [
            ev(1, 1, 6, Some((60, 40))),
            ev(2, 1, 14, None),
            ev(3, 1, 4, None),
            ev(8, 0, 0, None),
            ev(1, 0, 2, None),
        ]
    );
    assert!(s.at_frame_boundary());
    assert_eq!(s.remaining_in_frame(), Some(0));
}

#[test]
fn split_everywhere_one_byte_at_a_time() {
    let stream = frame(FRAME_METHOD, 0x0102, &[0, 10, 0, 50, 1, 2, 3]);
    let mut s = FrameScanner::new(PROXY_MAX_TOTAL);
    for (i, b) in stream.iter().enumerate() {
        assert_eq!(s.at_frame_boundary(), i == 0);
        let expected_remaining = if i == 0 {
            Some(0)
        } else if i < 7 {
            None
        } else {
            Some(stream.len() - i)
        };
        assert_eq!(
            s.remaining_in_frame(),
            expected_remaining,
            "before byte {i}"
        );
        let (events, r) = scan_all(&mut s, std::slice::from_ref(b));
        assert_eq!(r, Ok(()));
        if i + 1 == stream.len() {
            assert_eq!(events.len(), 1);
            assert_eq!(events[0].method, Some((10, 50)));
            assert_eq!(events[0].channel, 0x0102);
        } else {
            assert!(events.is_empty(), "event before the end octet");
        }
    }
    assert!(s.at_frame_boundary());
}

#[test]
fn empty_chunks_are_harmless() {
    let mut s = FrameScanner::new(PROXY_MAX_TOTAL);
    assert_eq!(scan_all(&mut s, &[]), (vec![], Ok(())));
    assert!(s.at_frame_boundary());
}

#[test]
fn bad_end_octet_poisons() {
    let mut stream = frame(FRAME_HEARTBEAT, 0, &[]);
    stream.extend(frame(FRAME_BODY, 1, b"xyz"));
    let last = stream.len() - 1;
    stream[last] = 0xcd;
    let mut s = FrameScanner::new(PROXY_MAX_TOTAL);
    let (events, r) = scan_all(&mut s, &stream);
    // The good frame before the bad one is still reported.
    assert_eq!(events.len(), 1);
    assert_eq!(r, Err(ScanError::BadFrameEnd { found: 0xcd }));
    assert_eq!(
        scan_all(&mut s, &HEARTBEAT),
        (vec![], Err(ScanError::BadFrameEnd { found: 0xcd }))
    );
    assert!(!s.at_frame_boundary());
    assert_eq!(s.remaining_in_frame(), None);
}

const HEARTBEAT: [u8; 8] = crate::codec::frame::HEARTBEAT_FRAME;

#[test]
fn oversized_header_fails_before_payload() {
    let max = 1000;
    let mut s = FrameScanner::new(max);
    // size 993 + 8 = 1001 > 1000; only the header has arrived.
    let header = [FRAME_BODY, 0, 1, 0, 0, 0x03, 0xe1];
    assert_eq!(scan_all(&mut s, &header[..6]), (vec![], Ok(())));
    assert_eq!(
        scan_all(&mut s, &header[6..]),
        (vec![], Err(ScanError::FrameTooLarge { size: 1001, max }))
    );
    // Exactly at the limit is fine.
    let mut s = FrameScanner::new(max);
    assert_eq!(
        scan_all(&mut s, &[FRAME_BODY, 0, 1, 0, 0, 0x03, 0xe0]),
        (vec![], Ok(()))
    );
    assert_eq!(s.remaining_in_frame(), Some(993));
    // A size near u32::MAX does not overflow.
    let mut s = FrameScanner::new(u32::MAX);
    assert_eq!(
        scan_all(&mut s, &[FRAME_BODY, 0, 1, 0xff, 0xff, 0xff, 0xff]),
        (
            vec![],
            Err(ScanError::FrameTooLarge {
                size: u32::MAX,
                max: u32::MAX
            })
        )
    );
}

#[test]
fn large_body_is_skipped_in_one_step() {
    // 16 MiB payload in one chunk, then one byte at a time at the end; the
    // payload is skipped by slicing, so this is instant even in debug builds.
    let payload = vec![0x5a; 16 << 20];
    let stream = frame(FRAME_BODY, 3, &payload);
    let mut s = FrameScanner::new(u32::MAX);
    let started = std::time::Instant::now();
    let (events, r) = scan_all(&mut s, &stream[..stream.len() - 1]);
    assert_eq!((events.len(), r), (0, Ok(())));
    assert_eq!(s.remaining_in_frame(), Some(1));
    let (events, r) = scan_all(&mut s, &stream[stream.len() - 1..]);
    assert_eq!(r, Ok(()));
    assert_eq!(events[0].size, 16 << 20);
    assert!(started.elapsed() < std::time::Duration::from_millis(500));
}

fn arb_frame() -> impl Strategy<Value = Vec<u8>> {
    (
        prop_oneof![
            Just(FRAME_METHOD),
            Just(FRAME_HEADER),
            Just(FRAME_BODY),
            Just(FRAME_HEARTBEAT),
            any::<u8>()
        ],
        any::<u16>(),
        proptest::collection::vec(any::<u8>(), 0..40),
    )
        .prop_map(|(t, c, p)| frame(t, c, &p))
}

proptest! {
    #[test]
    fn random_splits_match_whole_buffer_decoding(
        frames in proptest::collection::vec(arb_frame(), 0..12),
        cuts in proptest::collection::vec(0usize..30, 0..40),
        partial in 0usize..20,
    ) {
        let mut stream: Vec<u8> = frames.concat();
        // Sometimes end inside a frame, to check the partial-frame state.
        let extra = frame(FRAME_BODY, 9, &[1; 12]);
        stream.extend_from_slice(&extra[..partial.min(extra.len())]);
        let walk = reference_walk(&stream, PROXY_MAX_TOTAL);
        prop_assert_eq!(walk.events.len(), frames.len());
        prop_assert_eq!(walk.outcome, Ok(stream.len() - partial.min(extra.len())));
        check_scanner(&stream, PROXY_MAX_TOTAL, &walk, &cuts, true);
        check_scanner(&stream, PROXY_MAX_TOTAL, &walk, &vec![1; stream.len()], true);
    }

    #[test]
    fn corrupted_streams_match_whole_buffer_decoding(
        frames in proptest::collection::vec(arb_frame(), 1..8),
        flips in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..4),
        max in 8u32..200,
    ) {
        let mut stream: Vec<u8> = frames.concat();
        for (at, byte) in flips {
            let i = at.index(stream.len());
            stream[i] = byte;
        }
        crate::codec::fuzz_check::frame_decode(&stream);
        let walk = reference_walk(&stream, max);
        check_scanner(&stream, max, &walk, &[3, 0, 5, 1], true);
    }

    #[test]
    fn arbitrary_bytes_never_panic(data in proptest::collection::vec(any::<u8>(), 0..200)) {
        crate::codec::fuzz_check::frame_decode(&data);
    }
}
