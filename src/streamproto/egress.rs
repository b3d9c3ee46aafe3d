//! The broker→client direction of an established stream session, sans
//! I/O: walks the frames as chunks arrive and says, piece by piece, what
//! to write to the client. Every frame passes as the broker wrote it, as
//! slices of the chunk just read (never copied, never held whole: a
//! Deliver of a megabyte goes out as it arrives), except Metadata
//! responses, the one frame after Open that names broker addresses: that
//! frame alone is collected whole, rewritten through the [`AddressMap`]
//! and handed back as one piece.
//!
//! A frame header split across two reads is held (8 bytes at most) until
//! it is complete, since whether the frame passes depends on its key.
//! Counts frames and the broker's Close requests for the session's
//! statistics. Never touches a socket; never panics on input.

use super::frame::{check_size, FrameHeader, StreamFrameError, FRAME_HEADER_SIZE, RESPONSE_FLAG};
use super::key;
use super::rewrite::{rewrite_metadata_frame, AddressMap, RewriteCount};

/// The largest Metadata response collected for rewriting (the only frame
/// held whole): far above any real one, which lists a few brokers and
/// streams.
pub const METADATA_MAX: u32 = 16 * 1024 * 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Between frames, or inside a header (`header_len` bytes of it held).
    Header,
    /// Inside a passing frame: this many body bytes to go.
    Body {
        left: u32,
    },
    /// Inside a Metadata response being collected: this many to go.
    Collect {
        left: u32,
    },
    Poisoned(StreamFrameError),
}

/// One direction's walker; see the module documentation.
#[derive(Debug)]
pub struct EgressFilter {
    max: u32,
    state: State,
    header: [u8; FRAME_HEADER_SIZE],
    header_len: usize,
    /// The Metadata response being collected (header included).
    collected: Vec<u8>,
    /// The rewritten Metadata response owed to the client.
    rewritten: Vec<u8>,
    /// Frames whose header has been seen.
    pub frames: u64,
    /// Close requests the broker sent (it started a close).
    pub closes: u64,
    /// Metadata responses rewritten, and the addresses changed or left.
    pub metadata_frames: u64,
    pub rewrites: RewriteCount,
    /// Metadata responses that could not be decoded, passed unchanged.
    pub undecodable: u64,
}

/// What kind of frame a header starts, for the walker.
enum Kind {
    Pass,
    Metadata,
}

impl EgressFilter {
    /// `max` bounds each whole frame on the wire, size field included (a
    /// Metadata response also by [`METADATA_MAX`]). The broker's Deliver
    /// frames are not bound by the negotiated frame size: a chunk goes out
    /// whole, however large (1052729 bytes was seen with a 1048576 limit).
    pub fn new(max: u32) -> Self {
        EgressFilter {
            max,
            state: State::Header,
            header: [0; FRAME_HEADER_SIZE],
            header_len: 0,
            collected: Vec::new(),
            rewritten: Vec::new(),
            frames: 0,
            closes: 0,
            metadata_frames: 0,
            rewrites: RewriteCount::default(),
            undecodable: 0,
        }
    }

    /// True between frames (where a proxy-made frame may be inserted).
    pub fn at_frame_boundary(&self) -> bool {
        self.state == State::Header && self.header_len == 0
    }

    /// Body bytes of the current frame still to come; `None` inside a
    /// header or once poisoned.
    pub fn remaining_in_frame(&self) -> Option<u32> {
        match self.state {
            State::Header if self.header_len == 0 => Some(0),
            State::Body { left } | State::Collect { left } => Some(left),
            State::Header | State::Poisoned(_) => None,
        }
    }

    fn poison(&mut self, e: StreamFrameError) -> StreamFrameError {
        self.state = State::Poisoned(e);
        e
    }

    /// Accounts a completed header and says whether its frame passes.
    fn classify(
        &mut self,
        raw: [u8; FRAME_HEADER_SIZE],
    ) -> Result<(FrameHeader, Kind), StreamFrameError> {
        let header = FrameHeader::parse(raw, self.max).map_err(|e| self.poison(e))?;
        self.frames += 1;
        if header.key == key::CLOSE {
            self.closes += 1;
        }
        let kind = if header.key == key::METADATA | RESPONSE_FLAG {
            Kind::Metadata
        } else {
            Kind::Pass
        };
        Ok((header, kind))
    }

    fn start_collecting(
        &mut self,
        raw: &[u8],
        header: FrameHeader,
    ) -> Result<(), StreamFrameError> {
        check_size(header.size, self.max.min(METADATA_MAX)).map_err(|e| self.poison(e))?;
        self.collected.clear();
        self.collected.extend_from_slice(raw);
        self.state = State::Collect {
            left: header.body_len(),
        };
        Ok(())
    }

    /// The next piece of `chunk` (from `*pos` on) to write to the client,
    /// advancing `*pos`; `Ok(None)` once the chunk is used up (a held
    /// header or a Metadata response being collected waits for the next
    /// chunk). Consecutive passing frames come as one slice.
    pub fn next<'a>(
        &'a mut self,
        chunk: &'a [u8],
        pos: &mut usize,
        map: &AddressMap,
    ) -> Result<Option<&'a [u8]>, StreamFrameError> {
        loop {
            match self.state {
                State::Poisoned(e) => return Err(e),
                State::Collect { left } => {
                    let take = remaining(chunk, *pos).min(to_usize(left));
                    self.collected.extend_from_slice(&chunk[*pos..*pos + take]);
                    *pos += take;
                    // take <= left, a u32.
                    let left = left - take as u32;
                    if left > 0 {
                        self.state = State::Collect { left };
                        return Ok(None);
                    }
                    self.state = State::Header;
                    return Ok(Some(self.finish_metadata(map)));
                }
                State::Header
                    if self.header_len > 0 || remaining(chunk, *pos) < FRAME_HEADER_SIZE =>
                {
                    if remaining(chunk, *pos) == 0 {
                        return Ok(None);
                    }
                    // A header split across reads: hold it until whole.
                    let take = (FRAME_HEADER_SIZE - self.header_len).min(remaining(chunk, *pos));
                    self.header[self.header_len..self.header_len + take]
                        .copy_from_slice(&chunk[*pos..*pos + take]);
                    self.header_len += take;
                    *pos += take;
                    if self.header_len >= 4 {
                        // The size field alone decides the limit.
                        let h = &self.header;
                        let size = u32::from_be_bytes([h[0], h[1], h[2], h[3]]);
                        check_size(size, self.max).map_err(|e| self.poison(e))?;
                    }
                    if self.header_len < FRAME_HEADER_SIZE {
                        return Ok(None);
                    }
                    self.header_len = 0;
                    let raw = self.header;
                    let (header, kind) = self.classify(raw)?;
                    match kind {
                        Kind::Metadata => self.start_collecting(&raw, header)?,
                        Kind::Pass => {
                            self.state = body_state(header.body_len());
                            // None of the header went out yet.
                            return Ok(Some(&self.header[..]));
                        }
                    }
                }
                State::Header | State::Body { .. } => {
                    let start = *pos;
                    let end = self.pass(chunk, pos)?;
                    if end > start {
                        return Ok(Some(&chunk[start..end]));
                    }
                    if remaining(chunk, *pos) == 0 {
                        return Ok(None);
                    }
                }
            }
        }
    }

    /// Advances `*pos` over passing bytes: the current body, then whole
    /// passing frames, stopping before a partial header (left for the
    /// holding path) or after a Metadata header, which it starts
    /// collecting. Returns where the passing bytes end.
    fn pass(&mut self, chunk: &[u8], pos: &mut usize) -> Result<usize, StreamFrameError> {
        loop {
            match self.state {
                State::Body { left } => {
                    let take = remaining(chunk, *pos).min(to_usize(left));
                    *pos += take;
                    let left = left - take as u32;
                    self.state = body_state(left);
                    if left > 0 {
                        return Ok(*pos);
                    }
                }
                State::Header if self.header_len == 0 => {
                    if remaining(chunk, *pos) < FRAME_HEADER_SIZE {
                        return Ok(*pos);
                    }
                    let mut raw = [0u8; FRAME_HEADER_SIZE];
                    raw.copy_from_slice(&chunk[*pos..*pos + FRAME_HEADER_SIZE]);
                    let (header, kind) = self.classify(raw)?;
                    let end = *pos;
                    *pos += FRAME_HEADER_SIZE;
                    match kind {
                        Kind::Pass => self.state = body_state(header.body_len()),
                        Kind::Metadata => {
                            self.start_collecting(&raw, header)?;
                            return Ok(end);
                        }
                    }
                }
                _ => return Ok(*pos),
            }
        }
    }

    /// Rewrites the collected Metadata response; an undecodable one goes
    /// out as it came.
    fn finish_metadata(&mut self, map: &AddressMap) -> &[u8] {
        self.metadata_frames += 1;
        self.rewritten.clear();
        let body = &self.collected[FRAME_HEADER_SIZE..];
        match rewrite_metadata_frame(body, map, &mut self.rewritten) {
            Ok(count) => {
                self.rewrites.rewritten += count.rewritten;
                self.rewrites.unmapped += count.unmapped;
                &self.rewritten
            }
            Err(_) => {
                self.undecodable += 1;
                &self.collected
            }
        }
    }
}

fn remaining(chunk: &[u8], pos: usize) -> usize {
    chunk.len() - pos
}

fn to_usize(n: u32) -> usize {
    usize::try_from(n).unwrap_or(usize::MAX)
}

fn body_state(left: u32) -> State {
    if left == 0 {
        State::Header
    } else {
        State::Body { left }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::streamproto::command::{MetadataBroker, MetadataResponse, StreamMetadata};
    use crate::streamproto::rewrite::Endpoint;
    use proptest::prelude::*;

    fn frame(key: u16, body: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        out.extend_from_slice(&(4 + body.len() as u32).to_be_bytes());
        out.extend_from_slice(&key.to_be_bytes());
        out.extend_from_slice(&1u16.to_be_bytes());
        out.extend_from_slice(body);
        out
    }

    fn metadata(host: &str, port: u32) -> MetadataResponse {
        MetadataResponse {
            correlation_id: 7,
            brokers: vec![MetadataBroker {
                reference: 0,
                host: host.into(),
                port,
            }],
            streams: vec![StreamMetadata {
                name: "s".into(),
                code: 1,
                leader: 0,
                replicas: vec![],
            }],
        }
    }

    fn encoded(m: &MetadataResponse) -> Vec<u8> {
        let mut out = Vec::new();
        m.encode(&mut out);
        out
    }

    fn map() -> AddressMap {
        let mut m = AddressMap::new();
        m.insert(Endpoint::new("node-a", 5552), Endpoint::new("proxy", 15001));
        m
    }

    /// Feeds `chunks` and returns what the client would receive, and the
    /// pieces' count.
    fn run(filter: &mut EgressFilter, chunks: &[&[u8]]) -> (Vec<u8>, usize) {
        let (mut out, mut pieces) = (Vec::new(), 0);
        for chunk in chunks {
            let mut pos = 0;
            while let Some(piece) = filter.next(chunk, &mut pos, &map()).unwrap() {
                out.extend_from_slice(piece);
                pieces += 1;
            }
            assert_eq!(pos, chunk.len());
        }
        (out, pieces)
    }

    #[test]
    fn passing_frames_go_out_as_one_slice_of_the_chunk() {
        let mut stream = frame(key::DELIVER, &[1; 100]);
        stream.extend(frame(key::PUBLISH_CONFIRM, &[2; 12]));
        stream.extend(frame(key::HEARTBEAT, &[]));
        let mut f = EgressFilter::new(1 << 20);
        let mut pos = 0;
        let piece = f.next(&stream, &mut pos, &map()).unwrap().unwrap();
        // The very bytes of the chunk: nothing was copied.
        assert_eq!(piece.as_ptr(), stream.as_ptr());
        assert_eq!(piece.len(), stream.len());
        assert_eq!(f.next(&stream, &mut pos, &map()).unwrap(), None);
        assert_eq!(f.frames, 3);
        assert!(f.at_frame_boundary());
    }

    #[test]
    fn a_large_deliver_is_streamed_not_held() {
        let big = frame(key::DELIVER, &vec![9; 500_000]);
        let mut f = EgressFilter::new(1 << 20);
        let (first, rest) = big.split_at(1000);
        let mut pos = 0;
        let piece = f.next(first, &mut pos, &map()).unwrap().unwrap();
        assert_eq!(piece, first, "the first read goes out at once");
        assert_eq!(f.remaining_in_frame(), Some(500_000 + 8 - 1000));
        let (out, _) = run(&mut f, &[rest]);
        assert_eq!(out, rest);
        assert!(f.at_frame_boundary());
    }

    #[test]
    fn a_metadata_response_is_rewritten_between_passing_frames() {
        let md = metadata("node-a", 5552);
        let mut stream = frame(key::DELIVER, &[1; 10]);
        stream.extend(encoded(&md));
        stream.extend(frame(key::CLOSE, &[0; 6]));
        let mut f = EgressFilter::new(1 << 20);
        let (out, pieces) = run(&mut f, &[&stream]);
        let mut expected = frame(key::DELIVER, &[1; 10]);
        expected.extend(encoded(&metadata("proxy", 15001)));
        expected.extend(frame(key::CLOSE, &[0; 6]));
        assert_eq!(out, expected);
        assert_eq!(pieces, 3);
        assert_eq!((f.frames, f.closes, f.metadata_frames), (3, 1, 1));
        assert_eq!(
            f.rewrites,
            RewriteCount {
                rewritten: 1,
                unmapped: 0
            }
        );
    }

    #[test]
    fn a_metadata_response_beyond_its_own_limit_is_refused_before_its_body() {
        let mut f = EgressFilter::new(u32::MAX);
        let mut header = Vec::new();
        header.extend_from_slice(&(METADATA_MAX + 100).to_be_bytes());
        header.extend_from_slice(&(key::METADATA | RESPONSE_FLAG).to_be_bytes());
        header.extend_from_slice(&1u16.to_be_bytes());
        header.extend_from_slice(&[0; 16]);
        let mut pos = 0;
        assert!(matches!(
            f.next(&header, &mut pos, &map()),
            Err(StreamFrameError::TooLarge { .. })
        ));
        // A Deliver of the same size passes.
        let mut f = EgressFilter::new(u32::MAX);
        header[4..6].copy_from_slice(&key::DELIVER.to_be_bytes());
        let mut pos = 0;
        assert_eq!(f.next(&header, &mut pos, &map()), Ok(Some(&header[..])));
    }

    #[test]
    fn an_oversized_frame_poisons_the_walker() {
        let mut f = EgressFilter::new(100);
        let big = frame(key::DELIVER, &[0; 200]);
        let mut pos = 0;
        assert!(matches!(
            f.next(&big[..5], &mut pos, &map()),
            Err(StreamFrameError::TooLarge { .. })
        ));
        let mut pos = 0;
        assert!(f.next(&big, &mut pos, &map()).is_err());
    }

    fn any_frame() -> impl Strategy<Value = (Vec<u8>, Vec<u8>)> {
        prop_oneof![
            (
                prop_oneof![
                    Just(key::DELIVER),
                    Just(key::CLOSE),
                    Just(key::HEARTBEAT),
                    Just(key::METADATA),
                    Just(key::PUBLISH_CONFIRM)
                ],
                proptest::collection::vec(any::<u8>(), 0..300)
            )
                .prop_map(|(k, body)| {
                    let f = frame(k, &body);
                    (f.clone(), f)
                }),
            (any::<bool>(), 1u32..70000).prop_map(|(mapped, port)| {
                let host = if mapped { "node-a" } else { "node-b" };
                let port = if mapped { 5552 } else { port };
                let expected = if mapped {
                    encoded(&metadata("proxy", 15001))
                } else {
                    encoded(&metadata(host, port))
                };
                (encoded(&metadata(host, port)), expected)
            }),
        ]
    }

    proptest! {
        /// Whatever the reads' boundaries, the client receives every frame
        /// as the broker sent it, Metadata responses rewritten.
        #[test]
        fn any_split_gives_the_rewritten_stream(
            frames in proptest::collection::vec(any_frame(), 0..12),
            cuts in proptest::collection::vec(any::<prop::sample::Index>(), 0..10),
        ) {
            let input: Vec<u8> = frames.iter().flat_map(|(i, _)| i.clone()).collect();
            let expected: Vec<u8> = frames.iter().flat_map(|(_, e)| e.clone()).collect();
            let mut points: Vec<usize> = cuts.iter().map(|c| c.index(input.len() + 1)).collect();
            points.push(0);
            points.push(input.len());
            points.sort_unstable();
            let chunks: Vec<&[u8]> = points.windows(2).map(|w| &input[w[0]..w[1]]).collect();
            let mut f = EgressFilter::new(1 << 20);
            let (out, _) = run(&mut f, &chunks);
            prop_assert_eq!(out, expected);
            prop_assert_eq!(f.frames, frames.len() as u64);
            prop_assert!(f.at_frame_boundary());
        }

        /// Arbitrary bytes never panic the walker.
        #[test]
        fn arbitrary_bytes_never_panic(data in proptest::collection::vec(any::<u8>(), 0..2000), cut in 0usize..2000) {
            let cut = cut.min(data.len());
            let mut f = EgressFilter::new(4096);
            for chunk in [&data[..cut], &data[cut..]] {
                let mut pos = 0;
                while let Ok(Some(_)) = f.next(chunk, &mut pos, &map()) {}
            }
        }
    }
}
