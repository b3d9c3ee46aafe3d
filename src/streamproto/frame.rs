//! Stream protocol framing: `uint32 size` (the bytes that follow it), then
//! `uint16 key` (top bit set on responses) and `uint16 version`, then the
//! command's fields.
//!
//! Two readers of the same layout: [`split_frame`] cuts one whole frame out
//! of a buffer, for the handshakes, which decode every frame; and
//! [`StreamFrameScanner`] walks a byte stream in arbitrary chunks for the
//! established data path, reporting each frame header as soon as its 8 bytes
//! are known and skipping bodies in O(1), never allocating or copying them.
//! Both bound the frame size and never panic on input.

/// Bytes of `size`, `key` and `version` at the start of every frame.
pub const FRAME_HEADER_SIZE: usize = 8;

/// The top bit of a key marks a response.
pub const RESPONSE_FLAG: u16 = 0x8000;

/// Why a byte stream is not a sequence of Stream protocol frames. Fatal for
/// a connection: framing is lost.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum StreamFrameError {
    /// `size` is the whole frame on the wire (the 4 size bytes included),
    /// saturated at `u32::MAX`, so it compares directly with `max`.
    #[error("frame of {size} bytes exceeds the limit of {max}")]
    TooLarge { size: u32, max: u32 },
    /// A frame must hold at least its key and version.
    #[error("frame size {size} is too small to hold a key and a version")]
    TooSmall { size: u32 },
}

/// The fixed start of a frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameHeader {
    /// The size field: the bytes after it (key, version and body).
    pub size: u32,
    pub key: u16,
    pub version: u16,
}

impl FrameHeader {
    /// The command key without the response bit.
    pub fn command(&self) -> u16 {
        self.key & !RESPONSE_FLAG
    }

    pub fn is_response(&self) -> bool {
        self.key & RESPONSE_FLAG != 0
    }

    /// The body's length: what follows key and version.
    pub fn body_len(&self) -> u32 {
        self.size - 4
    }

    /// The whole frame on the wire, size field included.
    pub fn wire_len(&self) -> u64 {
        u64::from(self.size) + 4
    }

    pub(super) fn parse(h: [u8; FRAME_HEADER_SIZE], max: u32) -> Result<Self, StreamFrameError> {
        let size = u32::from_be_bytes([h[0], h[1], h[2], h[3]]);
        check_size(size, max)?;
        Ok(FrameHeader {
            size,
            key: u16::from_be_bytes([h[4], h[5]]),
            version: u16::from_be_bytes([h[6], h[7]]),
        })
    }
}

pub(super) fn check_size(size: u32, max: u32) -> Result<(), StreamFrameError> {
    if size < 4 {
        return Err(StreamFrameError::TooSmall { size });
    }
    let wire = u64::from(size) + 4;
    if wire > u64::from(max) {
        return Err(StreamFrameError::TooLarge {
            size: u32::try_from(wire).unwrap_or(u32::MAX),
            max,
        });
    }
    Ok(())
}

/// One whole frame, borrowed from the buffer it was cut from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Frame<'a> {
    pub header: FrameHeader,
    /// The bytes after key and version.
    pub body: &'a [u8],
}

/// Cuts the first frame out of `buf`: `Ok(None)` until all of it is there,
/// else the frame and the bytes it took. `max` bounds the whole frame on the
/// wire and is checked as soon as the size field is in, before waiting for
/// the rest.
pub fn split_frame(buf: &[u8], max: u32) -> Result<Option<(Frame<'_>, usize)>, StreamFrameError> {
    let Some(size_bytes) = buf.get(..4) else {
        return Ok(None);
    };
    let size = u32::from_be_bytes([size_bytes[0], size_bytes[1], size_bytes[2], size_bytes[3]]);
    check_size(size, max)?;
    let Ok(total) = usize::try_from(u64::from(size) + 4) else {
        return Ok(None);
    };
    let Some(whole) = buf.get(..total) else {
        return Ok(None);
    };
    let mut h = [0u8; FRAME_HEADER_SIZE];
    h.copy_from_slice(&whole[..FRAME_HEADER_SIZE]);
    let header = FrameHeader::parse(h, max)?;
    Ok(Some((
        Frame {
            header,
            body: &whole[FRAME_HEADER_SIZE..],
        },
        total,
    )))
}

/// A frame header the scanner has just completed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HeaderEvent {
    pub header: FrameHeader,
    /// The 8 header bytes as they were on the wire (they may have arrived
    /// in an earlier chunk), for a caller that holds this frame back whole.
    pub raw: [u8; FRAME_HEADER_SIZE],
    /// Where the body starts in the chunk being scanned.
    pub body_offset: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ScanState {
    Header,
    Body,
    Poisoned(StreamFrameError),
}

/// Incremental frame walker for the established data path: the caller
/// forwards the bytes untouched and learns where each frame starts and what
/// command it is. Owns 8 bytes of header and two counters.
#[derive(Debug, Clone)]
pub struct StreamFrameScanner {
    max: u32,
    state: ScanState,
    header: [u8; FRAME_HEADER_SIZE],
    header_len: usize,
    body_left: u32,
}

impl StreamFrameScanner {
    /// `max` bounds each whole frame on the wire, size field included.
    pub fn new(max: u32) -> Self {
        StreamFrameScanner {
            max,
            state: ScanState::Header,
            header: [0; FRAME_HEADER_SIZE],
            header_len: 0,
            body_left: 0,
        }
    }

    /// Walks the next `chunk`, calling `on_header` for each header completed
    /// in it. Returns the first error; the scanner is then poisoned and
    /// returns it again on every call. An oversized frame is reported as
    /// soon as its size field is known, before any of its body.
    pub fn scan(
        &mut self,
        chunk: &[u8],
        mut on_header: impl FnMut(HeaderEvent),
    ) -> Result<(), StreamFrameError> {
        let mut pos = 0;
        loop {
            match self.state {
                ScanState::Poisoned(e) => return Err(e),
                ScanState::Header => {
                    let n = (FRAME_HEADER_SIZE - self.header_len).min(chunk.len() - pos);
                    self.header[self.header_len..self.header_len + n]
                        .copy_from_slice(&chunk[pos..pos + n]);
                    self.header_len += n;
                    pos += n;
                    // The size field alone decides the limit: check it as
                    // soon as its 4 bytes are in.
                    if self.header_len >= 4 {
                        let h = &self.header;
                        let size = u32::from_be_bytes([h[0], h[1], h[2], h[3]]);
                        if let Err(e) = check_size(size, self.max) {
                            self.state = ScanState::Poisoned(e);
                            return Err(e);
                        }
                    }
                    if self.header_len < FRAME_HEADER_SIZE {
                        return Ok(());
                    }
                    let header = match FrameHeader::parse(self.header, self.max) {
                        Ok(h) => h,
                        Err(e) => {
                            self.state = ScanState::Poisoned(e);
                            return Err(e);
                        }
                    };
                    on_header(HeaderEvent {
                        header,
                        raw: self.header,
                        body_offset: pos,
                    });
                    self.header_len = 0;
                    self.body_left = header.body_len();
                    self.state = ScanState::Body;
                }
                ScanState::Body => {
                    if self.body_left > 0 {
                        let avail = chunk.len() - pos;
                        if avail == 0 {
                            return Ok(());
                        }
                        let n = usize::try_from(self.body_left).map_or(avail, |l| l.min(avail));
                        pos += n;
                        // n <= body_left, a u32.
                        self.body_left -= n as u32;
                        if self.body_left > 0 {
                            return Ok(());
                        }
                    }
                    self.state = ScanState::Header;
                    if pos == chunk.len() {
                        return Ok(());
                    }
                }
            }
        }
    }

    /// True when no frame is partly seen (false once poisoned).
    pub fn at_frame_boundary(&self) -> bool {
        self.state == ScanState::Header && self.header_len == 0
    }

    /// Body bytes of the current frame still to come: `Some(0)` at a
    /// boundary, `None` while a header is incomplete or once poisoned.
    pub fn remaining_in_frame(&self) -> Option<u32> {
        match self.state {
            ScanState::Header if self.header_len == 0 => Some(0),
            ScanState::Header | ScanState::Poisoned(_) => None,
            ScanState::Body => Some(self.body_left),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn frame(key: u16, body: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        out.extend_from_slice(&(4 + body.len() as u32).to_be_bytes());
        out.extend_from_slice(&key.to_be_bytes());
        out.extend_from_slice(&1u16.to_be_bytes());
        out.extend_from_slice(body);
        out
    }

    #[test]
    fn split_waits_for_the_whole_frame() {
        let f = frame(0x8015, &[0, 0, 0, 7, 0, 1]);
        for n in 0..f.len() {
            assert_eq!(split_frame(&f[..n], 1024).unwrap(), None, "prefix {n}");
        }
        let mut two = f.clone();
        two.extend_from_slice(&frame(0x17, &[]));
        let (fr, used) = split_frame(&two, 1024).unwrap().unwrap();
        assert_eq!(used, f.len());
        assert_eq!(fr.header.command(), 0x15);
        assert!(fr.header.is_response());
        assert_eq!(fr.body, &[0, 0, 0, 7, 0, 1]);
    }

    #[test]
    fn split_refuses_sizes_before_the_body_arrives() {
        let big = 2000u32.to_be_bytes();
        assert_eq!(
            split_frame(&big, 1024),
            Err(StreamFrameError::TooLarge {
                size: 2004,
                max: 1024
            })
        );
        assert_eq!(
            split_frame(&[0, 0, 0, 3, 0], 1024),
            Err(StreamFrameError::TooSmall { size: 3 })
        );
        assert_eq!(
            split_frame(&[0xff; 4], u32::MAX),
            Err(StreamFrameError::TooLarge {
                size: u32::MAX,
                max: u32::MAX
            })
        );
    }

    #[test]
    fn scanner_reports_headers_and_poisons_on_oversize() {
        let mut bytes = frame(0x8, &[9; 100]);
        bytes.extend(frame(0x800f, &[1, 2, 3]));
        let mut s = StreamFrameScanner::new(1024);
        let mut seen = Vec::new();
        s.scan(&bytes, |e| seen.push((e.header.key, e.body_offset)))
            .unwrap();
        assert_eq!(seen, vec![(0x8, 8), (0x800f, 116)]);
        assert!(s.at_frame_boundary());
        let err = s.scan(&[0, 0, 8, 0], |_| {}).unwrap_err();
        assert_eq!(
            err,
            StreamFrameError::TooLarge {
                size: 2052,
                max: 1024
            }
        );
        assert_eq!(s.scan(&[], |_| {}), Err(err));
        assert!(!s.at_frame_boundary());
    }

    proptest! {
        /// Any cut of a frame sequence into chunks gives the same headers,
        /// at the right places, as a whole-buffer walk.
        #[test]
        fn scanner_agrees_with_split(
            bodies in proptest::collection::vec(
                (any::<u16>(), proptest::collection::vec(any::<u8>(), 0..40)), 0..8),
            cuts in proptest::collection::vec(any::<prop::sample::Index>(), 0..6),
        ) {
            let mut stream = Vec::new();
            let mut expected = Vec::new();
            for (key, body) in &bodies {
                let f = frame(*key, body);
                expected.push((*key, stream.len() + FRAME_HEADER_SIZE));
                stream.extend(f);
            }
            let mut offsets: Vec<usize> = cuts.iter().map(|i| i.index(stream.len() + 1)).collect();
            offsets.push(0);
            offsets.push(stream.len());
            offsets.sort_unstable();
            let mut s = StreamFrameScanner::new(1024);
            let mut seen = Vec::new();
            for w in offsets.windows(2) {
                let base = w[0];
                s.scan(&stream[w[0]..w[1]], |e| seen.push((e.header.key, base + e.body_offset))).unwrap();
            }
            prop_assert_eq!(seen, expected);
            prop_assert!(s.at_frame_boundary());
            let mut rest = &stream[..];
            while let Some((_, used)) = split_frame(rest, 1024).unwrap() {
                rest = &rest[used..];
            }
            prop_assert!(rest.is_empty());
        }

        #[test]
        fn scanner_never_panics(chunks in proptest::collection::vec(
            proptest::collection::vec(any::<u8>(), 0..64), 0..8)) {
            let mut s = StreamFrameScanner::new(256);
            for c in &chunks {
                if s.scan(c, |_| {}).is_err() {
                    break;
                }
            }
        }
    }
}
