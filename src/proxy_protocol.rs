//! The PROXY protocol both ways
//! (docs/tls-and-proxy-protocol.md#proxy-protocol-toward-brokers,
//! docs/tls-and-proxy-protocol.md#proxy-protocol-from-a-load-balancer; the
//! protocol is haproxy's proxy-protocol.txt, v1 §2.1 and v2 §2.2).
//!
//! Egress: the header written to a `SEND-PROXY`/`SEND-PROXY-V2` backend
//! before anything else, so the broker sees the client's real address;
//! source is the client's address as the proxy sees it, destination the
//! backend address actually connected. Ingress: [`parse`] reads the header a
//! load balancer in front of a `LISTEN ... PROXY` listener sends, v1 or v2,
//! from the bytes received so far. Pure functions over addresses and bytes:
//! no I/O (the socket side is `tls::ingress`).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// Both addresses in one family: an IPv4 address next to an IPv6 one is
/// written as its IPv4-mapped IPv6 form.
fn same_family(src: SocketAddr, dst: SocketAddr) -> (SocketAddr, SocketAddr) {
    let widen = |a: SocketAddr| match a.ip() {
        IpAddr::V4(v4) => SocketAddr::new(IpAddr::V6(v4.to_ipv6_mapped()), a.port()),
        IpAddr::V6(_) => a,
    };
    if src.is_ipv4() == dst.is_ipv4() {
        (src, dst)
    } else {
        (widen(src), widen(dst))
    }
}

/// `PROXY TCP4|TCP6 <src ip> <dst ip> <src port> <dst port>\r\n`
pub fn v1(src: SocketAddr, dst: SocketAddr) -> Vec<u8> {
    let (src, dst) = same_family(src, dst);
    let family = if src.is_ipv4() { "TCP4" } else { "TCP6" };
    format!(
        "PROXY {family} {} {} {} {}\r\n",
        src.ip(),
        dst.ip(),
        src.port(),
        dst.port()
    )
    .into_bytes()
}

/// The v2 binary signature.
const V2_SIGNATURE: [u8; 12] = *b"\r\n\r\n\0\r\nQUIT\n";

/// The binary v2 header: version 2, command PROXY, TCP over IPv4 or IPv6.
pub fn v2(src: SocketAddr, dst: SocketAddr) -> Vec<u8> {
    let (src, dst) = same_family(src, dst);
    let mut out = Vec::with_capacity(16 + 36);
    out.extend_from_slice(&V2_SIGNATURE);
    out.push(0x21); // version 2, PROXY
    match (src.ip(), dst.ip()) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            out.push(0x11); // AF_INET, STREAM
            out.extend_from_slice(&12u16.to_be_bytes());
            out.extend_from_slice(&s.octets());
            out.extend_from_slice(&d.octets());
        }
        (IpAddr::V6(s), IpAddr::V6(d)) => {
            out.push(0x21); // AF_INET6, STREAM
            out.extend_from_slice(&36u16.to_be_bytes());
            out.extend_from_slice(&s.octets());
            out.extend_from_slice(&d.octets());
        }
        // same_family made the families equal.
        _ => unreachable!("address families were aligned above"),
    }
    out.extend_from_slice(&src.port().to_be_bytes());
    out.extend_from_slice(&dst.port().to_be_bytes());
    out
}

/// The longest v1 line, `\r\n` included (proxy-protocol.txt §2.1).
const V1_MAX: usize = 107;

/// Enough bytes to parse any header's addresses: the v2 fixed part and the
/// largest address block (AF_UNIX, 216 bytes). TLVs after the addresses are
/// skipped, not parsed.
pub const PARSE_WINDOW: usize = 16 + 216;

/// A complete ingress header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// 1 or 2.
    pub version: u8,
    /// Bytes the header takes on the wire (v2 TLVs included): consume
    /// exactly these, the client's own bytes follow.
    pub len: usize,
    /// The client's (source) and the address it connected to (destination),
    /// or `None` when the sender says it has none to give (v1 `UNKNOWN`,
    /// v2 `LOCAL`, or an address family other than TCP over IPv4/IPv6):
    /// then the connection's own addresses stand.
    pub addresses: Option<(SocketAddr, SocketAddr)>,
}

/// What the bytes received so far say.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Parsed {
    /// A valid beginning; wait for more bytes.
    NeedMore,
    Header(Header),
    /// Not a PROXY header; its `Display` reads as the end of a log line.
    Invalid(Invalid),
}

/// Why the first bytes of a connection are not a PROXY header.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Invalid {
    /// Neither signature: `start` holds the first bytes (at most 8).
    #[error("no PROXY protocol header: the connection starts with {}", describe_start(.start))]
    NoHeader { start: Vec<u8> },
    #[error("PROXY v1 line longer than {V1_MAX} bytes")]
    V1TooLong,
    #[error("PROXY v1 line is not ASCII")]
    V1NotAscii,
    /// `line` is what followed `PROXY `.
    #[error("malformed PROXY v1 line 'PROXY {line}'")]
    V1Malformed { line: String },
    #[error("PROXY v2 header with version {0}")]
    V2Version(u8),
    #[error("PROXY v2 header with unknown command {0}")]
    V2Command(u8),
    #[error("PROXY v2 header for a datagram stream")]
    V2Datagram,
    #[error("PROXY v2 header with unknown family {0}")]
    V2Family(u8),
    #[error("PROXY v2 address block of {body} bytes, {wanted} needed")]
    V2ShortAddresses { body: usize, wanted: usize },
}

/// Parses the header at the start of `buf` (the first bytes of a
/// connection). Only the first [`PARSE_WINDOW`] bytes are ever needed.
pub fn parse(buf: &[u8]) -> Parsed {
    if is_prefix_of(buf, &V2_SIGNATURE) {
        return if buf.len() < 16 {
            Parsed::NeedMore
        } else {
            parse_v2(buf)
        };
    }
    if is_prefix_of(buf, b"PROXY ") {
        return if buf.len() < 6 {
            Parsed::NeedMore
        } else {
            parse_v1(buf)
        };
    }
    Parsed::Invalid(Invalid::NoHeader {
        start: buf[..buf.len().min(8)].to_vec(),
    })
}

/// Whether `buf` and `signature` agree on their common length.
fn is_prefix_of(buf: &[u8], signature: &[u8]) -> bool {
    let n = buf.len().min(signature.len());
    buf[..n] == signature[..n]
}

/// Names what a client sent instead of a header: the usual mistake is a
/// client that reached the port directly, not through the load balancer.
fn describe_start(buf: &[u8]) -> String {
    let shown: String = buf
        .iter()
        .take(8)
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(" ");
    let what = if buf.starts_with(b"AMQP") {
        " (an AMQP protocol header: the client did not come through the load balancer)"
    } else if buf.first() == Some(&0x16) {
        " (a TLS ClientHello: the client did not come through the load balancer)"
    } else {
        ""
    };
    format!("bytes {shown}{what}")
}

fn parse_v1(buf: &[u8]) -> Parsed {
    let window = &buf[..buf.len().min(V1_MAX)];
    let Some(end) = window.windows(2).position(|w| w == b"\r\n") else {
        return if buf.len() >= V1_MAX {
            Parsed::Invalid(Invalid::V1TooLong)
        } else {
            Parsed::NeedMore
        };
    };
    let Ok(line) = std::str::from_utf8(&buf[6..end]) else {
        return Parsed::Invalid(Invalid::V1NotAscii);
    };
    let len = end + 2;
    let fields: Vec<&str> = line.split(' ').collect();
    let addresses = match fields.as_slice() {
        ["UNKNOWN", ..] => None,
        [family @ ("TCP4" | "TCP6"), src, dst, sport, dport] => {
            match v1_addresses(family == &"TCP4", src, dst, sport, dport) {
                Some(pair) => Some(pair),
                None => return Parsed::Invalid(Invalid::V1Malformed { line: line.into() }),
            }
        }
        _ => return Parsed::Invalid(Invalid::V1Malformed { line: line.into() }),
    };
    Parsed::Header(Header {
        version: 1,
        len,
        addresses,
    })
}

fn v1_addresses(
    v4: bool,
    src: &str,
    dst: &str,
    sport: &str,
    dport: &str,
) -> Option<(SocketAddr, SocketAddr)> {
    let ip = |s: &str| -> Option<IpAddr> {
        if v4 {
            s.parse::<Ipv4Addr>().ok().map(IpAddr::V4)
        } else {
            s.parse::<Ipv6Addr>().ok().map(IpAddr::V6)
        }
    };
    // Ports are plain decimal: no sign, no leading zero (§2.1).
    let port = |s: &str| -> Option<u16> {
        let plain = !s.is_empty()
            && s.bytes().all(|b| b.is_ascii_digit())
            && (s == "0" || !s.starts_with('0'));
        plain.then(|| s.parse().ok()).flatten()
    };
    Some((
        SocketAddr::new(ip(src)?, port(sport)?),
        SocketAddr::new(ip(dst)?, port(dport)?),
    ))
}

fn parse_v2(buf: &[u8]) -> Parsed {
    let version = buf[12] >> 4;
    let command = buf[12] & 0x0f;
    if version != 2 {
        return Parsed::Invalid(Invalid::V2Version(version));
    }
    if command > 1 {
        return Parsed::Invalid(Invalid::V2Command(command));
    }
    let family = buf[13] >> 4;
    let transport = buf[13] & 0x0f;
    let body = u16::from_be_bytes([buf[14], buf[15]]) as usize;
    let len = 16 + body;
    // LOCAL (a health check of the balancer itself), UNSPEC and AF_UNIX
    // carry no client address to use; UDP makes no sense for AMQP.
    let wanted = match (command, family, transport) {
        (0, _, _) => 0,
        (1, 1, 1) => 12,
        (1, 2, 1) => 36,
        (1, 0 | 3, _) => 0,
        (1, 1 | 2, _) => return Parsed::Invalid(Invalid::V2Datagram),
        _ => return Parsed::Invalid(Invalid::V2Family(family)),
    };
    if body < wanted {
        return Parsed::Invalid(Invalid::V2ShortAddresses { body, wanted });
    }
    if buf.len() < 16 + wanted {
        return Parsed::NeedMore;
    }
    let a = &buf[16..16 + wanted];
    let addresses = match wanted {
        12 => {
            let ip = |o: usize| IpAddr::V4(Ipv4Addr::new(a[o], a[o + 1], a[o + 2], a[o + 3]));
            let port = |o: usize| u16::from_be_bytes([a[o], a[o + 1]]);
            Some((
                SocketAddr::new(ip(0), port(8)),
                SocketAddr::new(ip(4), port(10)),
            ))
        }
        36 => {
            let ip = |o: usize| {
                let mut octets = [0u8; 16];
                octets.copy_from_slice(&a[o..o + 16]);
                IpAddr::V6(Ipv6Addr::from(octets))
            };
            let port = |o: usize| u16::from_be_bytes([a[o], a[o + 1]]);
            Some((
                SocketAddr::new(ip(0), port(32)),
                SocketAddr::new(ip(16), port(34)),
            ))
        }
        _ => None,
    };
    Parsed::Header(Header {
        version: 2,
        len,
        addresses,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn v1_uses_the_real_families() {
        let c: SocketAddr = "10.1.2.3:54012".parse().unwrap();
        let b: SocketAddr = "10.9.9.9:5672".parse().unwrap();
        assert_eq!(v1(c, b), b"PROXY TCP4 10.1.2.3 10.9.9.9 54012 5672\r\n");
        let b6: SocketAddr = "[2001:db8::1]:5672".parse().unwrap();
        assert_eq!(
            v1(c, b6),
            b"PROXY TCP6 ::ffff:10.1.2.3 2001:db8::1 54012 5672\r\n"
        );
    }

    #[test]
    fn v2_ipv4_bytes() {
        let c: SocketAddr = "127.0.0.1:1000".parse().unwrap();
        let b: SocketAddr = "127.0.0.2:5672".parse().unwrap();
        let mut expected = b"\r\n\r\n\0\r\nQUIT\n".to_vec();
        expected.extend_from_slice(&[
            0x21, 0x11, 0, 12, 127, 0, 0, 1, 127, 0, 0, 2, 0x03, 0xE8, 0x16, 0x28,
        ]);
        assert_eq!(v2(c, b), expected);
    }

    #[test]
    fn v2_ipv6_length_is_36() {
        let c: SocketAddr = "[::1]:1".parse().unwrap();
        let h = v2(c, c);
        assert_eq!(
            (h[13], u16::from_be_bytes([h[14], h[15]]), h.len()),
            (0x21, 36, 16 + 36)
        );
    }

    fn header(version: u8, len: usize, src: &str, dst: &str) -> Parsed {
        Parsed::Header(Header {
            version,
            len,
            addresses: Some((src.parse().unwrap(), dst.parse().unwrap())),
        })
    }

    #[test]
    fn ingress_v1_tcp4_tcp6_unknown() {
        let line = b"PROXY TCP4 192.0.2.1 198.51.100.2 40000 5672\r\nAMQP";
        assert_eq!(
            parse(line),
            header(1, line.len() - 4, "192.0.2.1:40000", "198.51.100.2:5672")
        );
        let line = b"PROXY TCP6 2001:db8::1 2001:db8::2 1 65535\r\n";
        assert_eq!(
            parse(line),
            header(1, line.len(), "[2001:db8::1]:1", "[2001:db8::2]:65535")
        );
        let line = b"PROXY UNKNOWN ffff::1 ffff::2 1 2\r\n";
        assert_eq!(
            parse(line),
            Parsed::Header(Header {
                version: 1,
                len: line.len(),
                addresses: None
            })
        );
    }

    #[test]
    fn ingress_v1_round_trips_the_encoder() {
        let c: SocketAddr = "10.1.2.3:54012".parse().unwrap();
        let b: SocketAddr = "[2001:db8::1]:5672".parse().unwrap();
        for (src, dst) in [(c, c), (b, b), (c, b)] {
            let bytes = v1(src, dst);
            let Parsed::Header(h) = parse(&bytes) else {
                panic!("{bytes:?}")
            };
            assert_eq!(h.len, bytes.len());
            let (s, d) = h.addresses.unwrap();
            assert_eq!((s.port(), d.port()), (src.port(), dst.port()));
        }
    }

    #[test]
    fn ingress_v1_needs_more_then_rejects() {
        for cut in 1..20 {
            assert_eq!(
                parse(&b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\r\n"[..cut]),
                Parsed::NeedMore
            );
        }
        for bad in [
            &b"PROXY TCP4 1.2.3.4 5.6.7.8 1\r\n"[..],
            b"PROXY TCP4 ::1 5.6.7.8 1 2\r\n",
            b"PROXY TCP6 1.2.3.4 ::1 1 2\r\n",
            b"PROXY TCP4 1.2.3.4 5.6.7.8 01 2\r\n",
            b"PROXY TCP4 1.2.3.4 5.6.7.8 1 65536\r\n",
            b"PROXY TCP4  1.2.3.4 5.6.7.8 1 2\r\n",
            b"PROXY UDP4 1.2.3.4 5.6.7.8 1 2\r\n",
        ] {
            assert!(matches!(parse(bad), Parsed::Invalid(_)), "{bad:?}");
        }
        let long = [b"PROXY ".as_slice(), &[b'x'; 120]].concat();
        assert!(matches!(parse(&long), Parsed::Invalid(r) if r.to_string().contains("longer")));
    }

    #[test]
    fn ingress_v2_round_trips_the_encoder() {
        let c: SocketAddr = "127.0.0.1:1000".parse().unwrap();
        let b: SocketAddr = "127.0.0.2:5672".parse().unwrap();
        let bytes = v2(c, b);
        assert_eq!(
            parse(&bytes),
            header(2, 28, "127.0.0.1:1000", "127.0.0.2:5672")
        );
        assert_eq!(parse(&bytes[..27]), Parsed::NeedMore);
        let c6: SocketAddr = "[2001:db8::7]:4".parse().unwrap();
        let bytes = v2(c6, b);
        assert_eq!(
            parse(&bytes),
            header(2, 52, "[2001:db8::7]:4", "[::ffff:127.0.0.2]:5672")
        );
    }

    #[test]
    fn ingress_v2_local_tlvs_and_garbage() {
        // LOCAL with a TLV: no addresses, the whole header is consumed.
        let mut local = V2_SIGNATURE.to_vec();
        local.extend_from_slice(&[0x20, 0x00, 0, 3, 0x04, 0, 0]);
        assert_eq!(
            parse(&local),
            Parsed::Header(Header {
                version: 2,
                len: 19,
                addresses: None
            })
        );
        // PROXY over IPv4 with 5 bytes of TLVs after the addresses.
        let mut tlv = v2("1.2.3.4:5".parse().unwrap(), "6.7.8.9:10".parse().unwrap());
        tlv[15] = 12 + 5;
        tlv.extend_from_slice(&[0x01, 0, 2, b'h', b'2']);
        assert_eq!(parse(&tlv), header(2, 33, "1.2.3.4:5", "6.7.8.9:10"));
        let mut bad = v2("1.2.3.4:5".parse().unwrap(), "6.7.8.9:10".parse().unwrap());
        bad[12] = 0x31;
        assert!(matches!(parse(&bad), Parsed::Invalid(r) if r.to_string().contains("version 3")));
        bad[12] = 0x21;
        bad[15] = 4;
        assert!(matches!(parse(&bad), Parsed::Invalid(r) if r.to_string().contains("12 needed")));
        assert!(
            matches!(parse(b"AMQP\0\0\x09\x01"), Parsed::Invalid(r) if r.to_string().contains("AMQP protocol header"))
        );
        assert!(
            matches!(parse(b"\x16\x03\x01\x02"), Parsed::Invalid(r) if r.to_string().contains("ClientHello"))
        );
        assert!(matches!(parse(b"GET / HTTP/1.1\r\n"), Parsed::Invalid(_)));
        assert_eq!(parse(b"\r\n\r\n\0"), Parsed::NeedMore);
        assert_eq!(parse(b""), Parsed::NeedMore);
    }
}
