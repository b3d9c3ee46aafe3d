//! PROXY protocol headers written to a backend before anything else, so the
//! broker sees the client's real address (behaviour.md §6.3, DECISIONS Fix
//! 13, Add 6; the protocol is haproxy's proxy-protocol.txt, v1 §2.1 and v2
//! §2.2).
//!
//! Source is the client's address as the proxy sees it, destination the
//! backend address actually connected. Pure functions over addresses: no
//! I/O.

use std::net::{IpAddr, SocketAddr};

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
}
