//! Pass-through frame scanner for the established (`OPEN`) data path: walks
//! an AMQP 0-9-1 byte stream frame by frame (spec §2.3.5, §4.2.3), checking
//! each frame's size limit and `0xCE` end octet and reporting the
//! class/method ids of method frames (§4.2.4), while the caller forwards the
//! bytes untouched.
//!
//! The stream arrives in arbitrary chunks; a header, the method ids or the
//! end octet may be split across chunks. Owns only a few bytes of fixed
//! state. Never allocates, never copies or inspects payload beyond the first
//! four bytes of a method frame, skips each payload in O(1), and never
//! panics on input: a violation is a [`ScanError`] that poisons the scanner.

use super::frame::{FRAME_END, FRAME_HEADER_SIZE, FRAME_METHOD};

/// Why the stream is not a valid frame sequence. Both are fatal for a
/// session: framing is lost.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ScanError {
    #[error("bad frame end octet 0x{found:02x}")]
    BadFrameEnd { found: u8 },
    /// `size` is the whole frame length (header + payload + end octet),
    /// saturated at `u32::MAX`, as in [`super::DecodeError::FrameTooLarge`].
    #[error("frame of {size} bytes exceeds the limit of {max}")]
    FrameTooLarge { size: u32, max: u32 },
}

/// One complete, verified frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameEvent {
    pub frame_type: u8,
    pub channel: u16,
    /// Payload size (excluding header and end octet).
    pub size: u32,
    /// For method frames: (class-id, method-id), the first 4 payload bytes.
    /// `None` for other frame types and for a method frame whose payload is
    /// shorter than 4 bytes (malformed, but framing is intact).
    pub method: Option<(u16, u16)>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Collecting the 7 header bytes; `header_len` of them are in.
    Header,
    /// `payload_pos` of `size` payload bytes seen; then the end octet.
    Body,
    Poisoned(ScanError),
}

/// Incremental frame walker; see the module docs.
#[derive(Debug, Clone)]
pub struct FrameScanner {
    max_total: u32,
    state: State,
    header: [u8; FRAME_HEADER_SIZE],
    header_len: usize,
    frame_type: u8,
    channel: u16,
    size: u32,
    payload_pos: u32,
    method_bytes: [u8; 4],
}

impl FrameScanner {
    /// `max_total` bounds header + payload + end octet, as in
    /// [`super::whole_frame_len`].
    pub fn new(max_total: u32) -> Self {
        FrameScanner {
            max_total,
            state: State::Header,
            header: [0; FRAME_HEADER_SIZE],
            header_len: 0,
            frame_type: 0,
            channel: 0,
            size: 0,
            payload_pos: 0,
            method_bytes: [0; 4],
        }
    }

    /// Walks the next `chunk` of the stream. Calls `on_frame` once per frame
    /// whose end octet was seen and verified in this call. Returns the first
    /// error; the scanner is then poisoned and every later call returns the
    /// same error. An oversized frame is reported as soon as its 7 header
    /// bytes are known, before any of its payload.
    pub fn scan(
        &mut self,
        chunk: &[u8],
        mut on_frame: impl FnMut(FrameEvent),
    ) -> Result<(), ScanError> {
        let mut rest = chunk;
        loop {
            match self.state {
                State::Poisoned(err) => return Err(err),
                State::Header => {
                    let want = FRAME_HEADER_SIZE - self.header_len;
                    let n = want.min(rest.len());
                    let (head, tail) = rest.split_at(n);
                    self.header[self.header_len..self.header_len + n].copy_from_slice(head);
                    self.header_len += n;
                    rest = tail;
                    if self.header_len < FRAME_HEADER_SIZE {
                        return Ok(());
                    }
                    self.start_body()?;
                }
                State::Body => {
                    let left = self.size - self.payload_pos;
                    if left > 0 {
                        if rest.is_empty() {
                            return Ok(());
                        }
                        // min() with a u32 keeps the skip length a u32.
                        let n = usize::try_from(left).map_or(rest.len(), |l| l.min(rest.len()));
                        let (head, tail) = rest.split_at(n);
                        self.collect_method_bytes(head);
                        // n <= left, which is a u32.
                        self.payload_pos += n as u32;
                        rest = tail;
                        continue;
                    }
                    let Some((&end, tail)) = rest.split_first() else {
                        return Ok(());
                    };
                    rest = tail;
                    if end != FRAME_END {
                        return Err(self.poison(ScanError::BadFrameEnd { found: end }));
                    }
                    on_frame(self.event());
                    self.state = State::Header;
                    self.header_len = 0;
                }
            }
        }
    }

    /// The 7 header bytes are in: check the size and enter the body.
    fn start_body(&mut self) -> Result<(), ScanError> {
        let h = self.header;
        self.frame_type = h[0];
        self.channel = u16::from_be_bytes([h[1], h[2]]);
        self.size = u32::from_be_bytes([h[3], h[4], h[5], h[6]]);
        let total = u64::from(self.size) + FRAME_HEADER_SIZE as u64 + 1;
        if total > u64::from(self.max_total) {
            return Err(self.poison(ScanError::FrameTooLarge {
                size: u32::try_from(total).unwrap_or(u32::MAX),
                max: self.max_total,
            }));
        }
        self.payload_pos = 0;
        self.state = State::Body;
        Ok(())
    }

    /// Keeps payload bytes 0..4 of a method frame; `head` starts at
    /// `payload_pos`. Touches at most 4 bytes, so skipping stays O(1).
    fn collect_method_bytes(&mut self, head: &[u8]) {
        if self.frame_type != FRAME_METHOD || self.payload_pos >= 4 {
            return;
        }
        let pos = self.payload_pos as usize; // < 4
        let n = (4 - pos).min(head.len());
        self.method_bytes[pos..pos + n].copy_from_slice(&head[..n]);
    }

    fn event(&self) -> FrameEvent {
        let m = self.method_bytes;
        FrameEvent {
            frame_type: self.frame_type,
            channel: self.channel,
            size: self.size,
            method: (self.frame_type == FRAME_METHOD && self.size >= 4).then(|| {
                (
                    u16::from_be_bytes([m[0], m[1]]),
                    u16::from_be_bytes([m[2], m[3]]),
                )
            }),
        }
    }

    fn poison(&mut self, err: ScanError) -> ScanError {
        self.state = State::Poisoned(err);
        err
    }

    /// True when no frame is partially seen (false once poisoned: the
    /// stream's framing is lost).
    pub fn at_frame_boundary(&self) -> bool {
        self.state == State::Header && self.header_len == 0
    }

    /// Bytes of the current partial frame still to come before the next
    /// frame boundary: `Some(0)` at a boundary, `None` while the header
    /// itself is incomplete (its size is not yet known) or once poisoned.
    pub fn remaining_in_frame(&self) -> Option<usize> {
        match self.state {
            State::Header if self.header_len == 0 => Some(0),
            State::Header | State::Poisoned(_) => None,
            State::Body => usize::try_from(u64::from(self.size - self.payload_pos) + 1).ok(),
        }
    }
}

#[cfg(test)]
#[path = "scanner_tests.rs"]
mod tests;
