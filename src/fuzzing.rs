//! Property checks for the cargo-fuzz targets (`tests/fuzz`) beyond the
//! codec's own (`codec::fuzz_check`): the frame scanner under
//! fuzzer-chosen read splits, field tables, both handshake state machines
//! (the client-side one, the broker-side replay and the transparent relay)
//! fed arbitrary bytes in arbitrary splits, and the PROXY header parser.
//! `tests/fuzz_corpus.rs` replays the corpora through the same functions on
//! stable, so every `cargo test` re-proves them.
//!
//! Test support, not part of the proxy: these functions allocate freely and
//! panic when an invariant is broken, which is how a fuzzer reports a bug.
//! They never panic for merely invalid input; the code under test must turn
//! that into an error value. The common invariant of the handshakes: how
//! the bytes were cut into reads never changes what the proxy sends or how
//! the handshake ends.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use crate::codec::fuzz_check::{check_scanner, reference_walk, PROXY_MAX_TOTAL};
use crate::codec::{str_field, whole_frame_len, FieldTable, Open, StartOk, Tune};
use crate::handshake::{
    BrokerHandshake, BrokerProgress, ClientHandshake, ClientHello, ClientProgress, Side,
    TransparentHandshake, TransparentProgress,
};
use crate::proxy_protocol;

/// Read sizes (1 to 32 bytes, then whatever is left) drawn from `seed`:
/// the fuzzer picks the split with one byte, not one byte per cut.
pub fn chunk_sizes(seed: u8, len: usize) -> Vec<usize> {
    let mut state = u32::from(seed).wrapping_mul(2_654_435_761) | 1;
    let mut sizes = Vec::new();
    let mut total = 0;
    while total < len {
        state ^= state << 13;
        state ^= state >> 17;
        state ^= state << 5;
        let n = (state % 32) as usize + 1;
        sizes.push(n);
        total += n;
    }
    sizes
}

/// The three ways every check cuts its input: one read, one byte per read,
/// and the fuzzer's split.
fn splits(seed: u8, len: usize) -> [Vec<usize>; 3] {
    [vec![len.max(1)], vec![1; len], chunk_sizes(seed, len)]
}

/// Cuts `data` by `sizes` (a last read takes what is left).
fn cut<'a>(data: &'a [u8], sizes: &[usize]) -> Vec<&'a [u8]> {
    let mut out = Vec::new();
    let mut off = 0;
    for &n in sizes {
        if off >= data.len() {
            break;
        }
        let end = (off + n).min(data.len());
        out.push(&data[off..end]);
        off = end;
    }
    if off < data.len() {
        out.push(&data[off..]);
    }
    out
}

/// Fuzz target `frame_scanner`: the first byte picks the read split, the
/// rest is the stream; the scanner must report what `decode_frame` does.
pub fn frame_scanner(data: &[u8]) {
    let Some((&seed, stream)) = data.split_first() else {
        return;
    };
    let chunks = chunk_sizes(seed, stream.len());
    for max_total in [PROXY_MAX_TOTAL, 64] {
        let walk = reference_walk(stream, max_total);
        check_scanner(stream, max_total, &walk, &chunks, true);
    }
}

/// Fuzz target `field_table`: a table that decodes re-encodes to the bytes
/// it used (up to boolean normalisation, as `codec::fuzz_check` checks),
/// and no shorter input decodes, since its length prefix says where it
/// ends.
pub fn field_table(data: &[u8]) {
    let Ok((table, used)) = FieldTable::decode(data) else {
        return;
    };
    assert!(
        (4..=data.len()).contains(&used),
        "used {used} of {}",
        data.len()
    );
    let mut enc = Vec::new();
    table.encode(&mut enc);
    assert_eq!(enc.len(), used, "re-encoding changed the length");
    let again = FieldTable::decode(&enc).expect("re-encoded table decodes");
    assert_eq!(again.1, used);
    // Prefixes: every cut is an error, never a shorter table (bounded so a
    // big input stays fast).
    let step = (used / 256).max(1);
    for end in (0..used).step_by(step) {
        assert!(
            FieldTable::decode(&data[..end]).is_err(),
            "a {end}-byte prefix of a {used}-byte table decoded"
        );
    }
    let _ = format!("{table:?}");
}

/// How a client-side handshake ended, with the bytes it left unread (for
/// `Opened`, the pipelined bytes and what was never fed).
#[derive(Debug, PartialEq)]
enum ClientEnd {
    Stalled,
    Opened(Box<ClientHello>),
    ClosedByClient,
    Refused(crate::handshake::ClientHandshakeError, Vec<u8>),
}

fn run_client(reads: &[&[u8]]) -> (ClientEnd, Vec<u8>) {
    let mut hs = ClientHandshake::new();
    let mut out = Vec::new();
    for (i, read) in reads.iter().enumerate() {
        match hs.receive(read, &mut out) {
            Ok(ClientProgress::NeedMore) => {}
            Ok(ClientProgress::Opened(mut hello)) => {
                for rest in &reads[i + 1..] {
                    hello.pipelined.extend_from_slice(rest);
                }
                return (ClientEnd::Opened(hello), out);
            }
            Ok(ClientProgress::ClosedByClient) => return (ClientEnd::ClosedByClient, out),
            Err(e) => {
                let reply = e.reply();
                return (ClientEnd::Refused(e, reply), out);
            }
        }
    }
    (ClientEnd::Stalled, out)
}

/// Fuzz target `client_handshake`: the first byte picks the split, the
/// rest is what a client sends. The protocol header (the first 8 bytes) is
/// always one read of its own when it is one, because the proxy refuses
/// bytes past the header before it has answered; everything after it is cut
/// three ways, which must give the same replies and the same ending.
pub fn client_handshake(data: &[u8]) {
    let Some((&seed, stream)) = data.split_first() else {
        return;
    };
    let (header, rest) = stream.split_at(stream.len().min(8));
    let mut ends = Vec::new();
    for sizes in splits(seed, rest.len()) {
        let mut reads = vec![header];
        reads.extend(cut(rest, &sizes));
        ends.push(run_client(&reads));
    }
    for other in &ends[1..] {
        assert_eq!(
            &ends[0], other,
            "the read split changed the client handshake"
        );
    }
    // A header fed together with more bytes is refused like the original.
    if header.len() == 8 && !rest.is_empty() {
        let (end, _) = run_client(&[stream]);
        assert!(matches!(end, ClientEnd::Refused(..)), "{end:?}");
    }
}

/// The `ClientHello` the broker-side handshake replays in the fuzz checks.
fn fuzz_hello() -> ClientHello {
    let mut props = FieldTable::new();
    props.push("connection_name", str_field("fuzz"));
    ClientHello {
        start_ok: StartOk {
            client_properties: props,
            mechanism: b"PLAIN".to_vec(),
            response: b"\0guest\0guest".to_vec(),
            locale: b"en_US".to_vec(),
        },
        tune_ok: Tune {
            channel_max: 2047,
            frame_max: 131_072,
            heartbeat: 60,
        },
        open: Open {
            vhost: "/".into(),
            capabilities: Vec::new(),
            insist: false,
        },
        pipelined: Vec::new(),
        legacy_header: false,
    }
}

#[derive(Debug, PartialEq)]
enum BrokerEnd {
    Stalled,
    Open(Vec<u8>),
    Failed(crate::handshake::BrokerHandshakeError),
}

/// Fuzz target `broker_handshake`: the first byte picks the split, the rest
/// is what a broker sends to the proxy's replay of a client handshake; the
/// proxy's output and the ending must not depend on the split, and after
/// `OpenOk` every remaining byte reaches the client.
pub fn broker_handshake(data: &[u8]) {
    let Some((&seed, stream)) = data.split_first() else {
        return;
    };
    let hello = fuzz_hello();
    let additions = [("amqpprox_client", "fuzz:1")];
    let mut ends = Vec::new();
    for sizes in splits(seed, stream.len()) {
        let mut out = Vec::new();
        let mut hs = BrokerHandshake::start(&hello, &additions, &mut out);
        let reads = cut(stream, &sizes);
        let mut end = BrokerEnd::Stalled;
        for (i, read) in reads.iter().enumerate() {
            match hs.receive(read, &mut out) {
                Ok(BrokerProgress::NeedMore) => {}
                Ok(BrokerProgress::Open { mut to_client }) => {
                    for rest in &reads[i + 1..] {
                        to_client.extend_from_slice(rest);
                    }
                    assert!(
                        stream.ends_with(&to_client),
                        "OpenOk and after go to the client"
                    );
                    end = BrokerEnd::Open(to_client);
                    break;
                }
                Err(e) => {
                    end = BrokerEnd::Failed(e);
                    break;
                }
            }
        }
        ends.push((end, out));
    }
    for other in &ends[1..] {
        assert_eq!(
            &ends[0], other,
            "the read split changed the broker handshake"
        );
    }
}

#[derive(Debug, PartialEq)]
enum RelayEnd {
    Stalled,
    Open,
    BrokerClosed(crate::codec::Close),
    ClientClosed,
    Failed(crate::handshake::TransparentError),
}

/// `stream` cut at its frame boundaries (what follows the first incomplete
/// or bad frame is one piece): a peer sends its next handshake frame only
/// after the other's answer, so a read never holds two of them.
fn frame_pieces(stream: &[u8]) -> Vec<&[u8]> {
    let mut pieces = Vec::new();
    let mut off = 0;
    while off < stream.len() {
        let end = match whole_frame_len(&stream[off..], u32::MAX) {
            Ok(Some(n)) => off + n,
            _ => stream.len(),
        };
        pieces.push(&stream[off..end]);
        off = end;
    }
    pieces
}

/// Feeds a transparent handshake the way the session driver does: reads
/// only from the side it waits for, one frame at most per read (cut further
/// by the split), and releases a held `Open` at once.
/// Returns the ending, what each peer was sent plus what was never read
/// from the other (a split only moves bytes between the two), and the
/// vhosts whose `Open` was held.
fn run_transparent<'a>(
    client: &'a [u8],
    broker: &'a [u8],
    seed: Option<u8>,
) -> (RelayEnd, Vec<u8>, Vec<u8>, Vec<String>) {
    let reads = |stream: &'a [u8]| -> Vec<&'a [u8]> {
        frame_pieces(stream)
            .into_iter()
            .flat_map(|piece| match seed {
                None => vec![piece],
                Some(0) => cut(piece, &vec![1; piece.len()]),
                Some(s) => cut(piece, &chunk_sizes(s, piece.len())),
            })
            .collect()
    };
    let client_reads = reads(client);
    let broker_reads = reads(broker);
    let (mut ci, mut bi) = (0, 0);
    let mut hs = TransparentHandshake::new(&[("amqpprox_client", "fuzz:1")]);
    let (mut to_client, mut to_broker) = (Vec::new(), Vec::new());
    let mut opens = Vec::new();
    // Each side may be asked once with nothing new, to process what it
    // already buffered.
    let mut idle = 0;
    let end = loop {
        let side = hs.waiting_for();
        let read: &[u8] = match side {
            Side::Client if ci < client_reads.len() => {
                ci += 1;
                client_reads[ci - 1]
            }
            Side::Broker if bi < broker_reads.len() => {
                bi += 1;
                broker_reads[bi - 1]
            }
            _ if idle < 2 => {
                idle += 1;
                &[]
            }
            _ => break RelayEnd::Stalled,
        };
        if !read.is_empty() {
            idle = 0;
        }
        match hs.receive(side, read, &mut to_client, &mut to_broker) {
            Ok(TransparentProgress::NeedMore) => {}
            Ok(TransparentProgress::OpenReceived { vhost }) => {
                opens.push(vhost);
                hs.release_open(&mut to_broker);
                idle = 0;
            }
            Ok(TransparentProgress::Open) => break RelayEnd::Open,
            Ok(TransparentProgress::BrokerClosed(close)) => break RelayEnd::BrokerClosed(close),
            Ok(TransparentProgress::ClientClosed) => break RelayEnd::ClientClosed,
            Err(e) => break RelayEnd::Failed(e),
        }
    };
    if end == RelayEnd::Open {
        for rest in &broker_reads[bi..] {
            to_client.extend_from_slice(rest);
        }
        for rest in &client_reads[ci..] {
            to_broker.extend_from_slice(rest);
        }
    }
    (end, to_client, to_broker, opens)
}

/// Fuzz target `transparent_handshake`: the first byte picks the split, the
/// next two the length of the client's bytes (big-endian), then the
/// client's bytes (after its protocol header) and the broker's. Each side's
/// frames are read one at a time (see [`frame_pieces`]); how each frame is
/// cut further must not change the relay's ending or (once open) what each
/// peer gets; whatever ending, the client's vhost is held at most once.
pub fn transparent_handshake(data: &[u8]) {
    if data.len() < 3 {
        return;
    }
    let seed = data[0];
    let client_len = usize::from(u16::from_be_bytes([data[1], data[2]])).min(data.len() - 3);
    let (client, broker) = data[3..].split_at(client_len);
    let whole = run_transparent(client, broker, None);
    assert!(whole.3.len() <= 1, "Open held twice: {:?}", whole.3);
    for other in [
        run_transparent(client, broker, Some(0)),
        run_transparent(client, broker, Some(seed.max(1))),
    ] {
        // Before the end, bytes may sit in the handshake's buffers or be
        // unread; only a relay that opened has handed everything over.
        assert_eq!(
            whole.0, other.0,
            "the read split changed how the relay ended"
        );
        assert_eq!(whole.3, other.3, "the read split changed the held Open");
        if whole.0 == RelayEnd::Open {
            assert_eq!(whole.1, other.1, "the client got other bytes");
            assert_eq!(whole.2, other.2, "the broker got other bytes");
        }
    }
}

/// How a `client_handshake` or `transparent_handshake` input ends when read
/// whole ("opened", "closed", "refused", "stalled"): lets the corpus test
/// show that the seeds reach the end of the handshake, so the checks above
/// are not vacuous.
pub fn handshake_ending(target: &str, data: &[u8]) -> &'static str {
    match target {
        "client_handshake" if !data.is_empty() => {
            let stream = &data[1..];
            let (header, rest) = stream.split_at(stream.len().min(8));
            match run_client(&[header, rest]).0 {
                ClientEnd::Opened(_) => "opened",
                ClientEnd::ClosedByClient => "closed",
                ClientEnd::Refused(..) => "refused",
                ClientEnd::Stalled => "stalled",
            }
        }
        "transparent_handshake" if data.len() >= 3 => {
            let client_len =
                usize::from(u16::from_be_bytes([data[1], data[2]])).min(data.len() - 3);
            let (client, broker) = data[3..].split_at(client_len);
            match run_transparent(client, broker, None).0 {
                RelayEnd::Open => "opened",
                RelayEnd::BrokerClosed(_) | RelayEnd::ClientClosed => "closed",
                RelayEnd::Failed(_) => "refused",
                RelayEnd::Stalled => "stalled",
            }
        }
        _ => "stalled",
    }
}

/// Fuzz target `proxy_header`: `proxy_protocol::parse` over the input and
/// its prefixes: a decision, once made, never changes as bytes arrive; the
/// first `PARSE_WINDOW` bytes always suffice; a v1 header ends within the
/// input. The input's first 37 bytes also make two addresses whose
/// written v1 and v2 headers must parse back to them.
pub fn proxy_header(data: &[u8]) {
    let full = proxy_protocol::parse(data);
    let window = &data[..data.len().min(proxy_protocol::PARSE_WINDOW)];
    assert_eq!(
        proxy_protocol::parse(window),
        full,
        "bytes past the window changed the result"
    );
    if let proxy_protocol::Parsed::Header(h) = &full {
        assert!(h.version == 1 || h.version == 2);
        if h.version == 1 {
            assert!(
                h.len <= data.len() && h.len <= 107,
                "v1 header of {}",
                h.len
            );
            assert_eq!(&data[h.len - 2..h.len], b"\r\n");
        } else {
            assert!(h.len >= 16);
        }
    }
    for end in 0..window.len() {
        match (proxy_protocol::parse(&data[..end]), &full) {
            (proxy_protocol::Parsed::NeedMore, _) => {}
            (proxy_protocol::Parsed::Header(h), proxy_protocol::Parsed::Header(f)) => {
                assert_eq!(&h, f, "a header changed as bytes arrived");
            }
            (proxy_protocol::Parsed::Invalid(_), proxy_protocol::Parsed::Invalid(_)) => {}
            (early, _) => panic!("prefix of {end} bytes said {early:?}, all of it {full:?}"),
        }
    }
    if data.len() >= 37 {
        let (src, dst) = addresses_from(&data[..37]);
        for (version, bytes) in [
            (1, proxy_protocol::v1(src, dst)),
            (2, proxy_protocol::v2(src, dst)),
        ] {
            match proxy_protocol::parse(&bytes) {
                proxy_protocol::Parsed::Header(h) => {
                    assert_eq!((h.version, h.len), (version, bytes.len()));
                    let (s, d) = h.addresses.expect("written headers carry addresses");
                    assert_eq!(
                        (unmap(s), unmap(d)),
                        (unmap(src), unmap(dst)),
                        "v{version} header did not round-trip"
                    );
                }
                other => panic!("written v{version} header parsed as {other:?}"),
            }
        }
    }
}

/// Two addresses from 37 bytes: a family bit each, 16 address bytes each
/// (the first 4 for IPv4), two ports.
fn addresses_from(b: &[u8]) -> (SocketAddr, SocketAddr) {
    let ip = |v6: bool, o: usize| -> IpAddr {
        if v6 {
            let mut octets = [0u8; 16];
            octets.copy_from_slice(&b[o..o + 16]);
            IpAddr::V6(Ipv6Addr::from(octets))
        } else {
            IpAddr::V4(Ipv4Addr::new(b[o], b[o + 1], b[o + 2], b[o + 3]))
        }
    };
    let port = |o: usize| u16::from_be_bytes([b[o], b[o + 1]]);
    (
        SocketAddr::new(ip(b[0] & 1 == 1, 1), port(33)),
        SocketAddr::new(ip(b[0] & 2 == 2, 17), port(35)),
    )
}

/// An IPv4-mapped IPv6 address as the IPv4 address (headers widen a mixed
/// pair to IPv6).
fn unmap(a: SocketAddr) -> SocketAddr {
    match a.ip() {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => SocketAddr::new(IpAddr::V4(v4), a.port()),
            None => a,
        },
        IpAddr::V4(_) => a,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::{ConnectionMethod, PROTOCOL_HEADER};

    fn frame(m: ConnectionMethod) -> Vec<u8> {
        let mut out = Vec::new();
        m.encode_frame(&mut out);
        out
    }

    #[test]
    fn chunk_sizes_cover_the_input() {
        for seed in [0, 1, 77, 255] {
            let sizes = chunk_sizes(seed, 100);
            assert!(sizes.iter().sum::<usize>() >= 100);
            assert!(sizes.iter().all(|&n| (1..=32).contains(&n)));
        }
        assert!(chunk_sizes(3, 0).is_empty());
    }

    #[test]
    fn tiny_inputs_pass_every_check() {
        for data in [
            &[][..],
            &[0],
            &[1, 2],
            &[9, 0, 0],
            b"\x05AMQP\x00\x00\x09\x01",
        ] {
            frame_scanner(data);
            field_table(data);
            client_handshake(data);
            broker_handshake(data);
            transparent_handshake(data);
            proxy_header(data);
        }
    }

    #[test]
    fn a_full_client_handshake_passes_in_any_split() {
        let mut data = vec![7u8];
        data.extend_from_slice(&PROTOCOL_HEADER);
        data.extend(frame(ConnectionMethod::StartOk(fuzz_hello().start_ok)));
        data.extend(frame(ConnectionMethod::TuneOk(fuzz_hello().tune_ok)));
        data.extend(frame(ConnectionMethod::Open(fuzz_hello().open)));
        data.extend_from_slice(&[8, 0, 0, 0, 0, 0, 0, 0xce]);
        client_handshake(&data);
        let (end, _) = run_client(&[&data[1..9], &data[9..]]);
        match end {
            ClientEnd::Opened(hello) => assert_eq!(hello.pipelined, [8, 0, 0, 0, 0, 0, 0, 0xce]),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn proxy_headers_round_trip() {
        let mut data = vec![3u8];
        data.extend(1..=36u8);
        proxy_header(&data);
        proxy_header(b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\r\nAMQP");
        proxy_header(b"\r\n\r\n\0\r\nQUIT\n\x20\x00\x00\x00");
    }
}
