//! Round trips of every typed command (encode, split, decode gives the
//! value back), the broker's byte layouts, and decoders fed arbitrary bytes.

use super::*;
use crate::streamproto::frame::split_frame;
use proptest::prelude::*;

/// Encodes with `encode`, checks the frame's key and that it is whole, and
/// returns its body.
fn body_of(expected_key: u16, encode: impl FnOnce(&mut Vec<u8>)) -> Vec<u8> {
    let mut out = Vec::new();
    encode(&mut out);
    let (f, used) = split_frame(&out, u32::MAX).unwrap().unwrap();
    assert_eq!(used, out.len());
    assert_eq!(f.header.key, expected_key);
    assert_eq!(f.header.version, VERSION_1);
    f.body.to_vec()
}

fn text() -> impl Strategy<Value = String> {
    "[ -~é]{0,12}"
}

fn props() -> impl Strategy<Value = Properties> {
    proptest::collection::vec((text(), text()), 0..5)
}

#[test]
fn layouts_match_the_broker() {
    // SaslHandshake request: correlation id only.
    let mut out = Vec::new();
    SaslHandshakeRequest { correlation_id: 2 }.encode(&mut out);
    assert_eq!(out, [0, 0, 0, 8, 0, 0x12, 0, 1, 0, 0, 0, 2]);
    // Tune: no correlation id.
    out.clear();
    Tune {
        frame_max: 1_048_576,
        heartbeat: 60,
    }
    .encode_request(&mut out);
    assert_eq!(
        out,
        [0, 0, 0, 12, 0, 0x14, 0, 1, 0, 0x10, 0, 0, 0, 0, 0, 60]
    );
    // A null SASL payload is length -1.
    out.clear();
    SaslAuthenticateRequest {
        correlation_id: 3,
        mechanism: "PLAIN".into(),
        data: None,
    }
    .encode(&mut out);
    assert_eq!(&out[out.len() - 4..], &[0xff; 4]);
    assert_eq!(HEARTBEAT_FRAME, [0, 0, 0, 4, 0, 0x17, 0, 1]);
}

#[test]
fn decoders_refuse_trailing_and_short_bodies() {
    assert_eq!(
        OpenRequest::decode(&[0, 0, 0, 1, 0, 1, b'/', 9]),
        Err(StreamDecodeError::TrailingBytes { count: 1 })
    );
    assert_eq!(
        OpenRequest::decode(&[0, 0, 0, 1, 0, 5, b'/']),
        Err(StreamDecodeError::Truncated { needed: 4 })
    );
    assert_eq!(
        OpenRequest::decode(&[0, 0, 0, 1, 0xff, 0xff]),
        Err(StreamDecodeError::NullString {
            field: "virtual host"
        })
    );
    // A count larger than the bytes left is refused before allocating.
    assert!(matches!(
        PeerPropertiesRequest::decode(&[0, 0, 0, 1, 0x7f, 0xff, 0xff, 0xff]),
        Err(StreamDecodeError::Truncated { .. })
    ));
    assert_eq!(
        PeerPropertiesRequest::decode(&[0, 0, 0, 1, 0xff, 0xff, 0xff, 0xfe]),
        Err(StreamDecodeError::NegativeLength(-2))
    );
}

#[test]
fn open_response_reads_the_advertised_address() {
    let r = OpenResponse {
        correlation_id: 1,
        code: 1,
        properties: vec![
            (ADVERTISED_HOST.into(), "h".into()),
            (ADVERTISED_PORT.into(), "5552".into()),
        ],
    };
    assert_eq!(r.advertised(), Some(("h", 5552)));
    let none = OpenResponse {
        properties: Vec::new(),
        ..r
    };
    assert_eq!(none.advertised(), None);
}

proptest! {
    #[test]
    fn peer_properties_round_trip(corr in any::<u32>(), code in any::<u16>(), p in props()) {
        let req = PeerPropertiesRequest { correlation_id: corr, properties: p.clone() };
        prop_assert_eq!(PeerPropertiesRequest::decode(&body_of(0x11, |o| req.encode(o))).unwrap(), req);
        let resp = PeerPropertiesResponse { correlation_id: corr, code, properties: p };
        prop_assert_eq!(PeerPropertiesResponse::decode(&body_of(0x8011, |o| resp.encode(o))).unwrap(), resp);
    }

    #[test]
    fn sasl_round_trip(corr in any::<u32>(), code in any::<u16>(), mech in text(),
                       mechs in proptest::collection::vec(text(), 0..4),
                       data in proptest::option::of(proptest::collection::vec(any::<u8>(), 0..20))) {
        let hs = SaslHandshakeRequest { correlation_id: corr };
        prop_assert_eq!(SaslHandshakeRequest::decode(&body_of(0x12, |o| hs.encode(o))).unwrap(), hs);
        let hr = SaslHandshakeResponse { correlation_id: corr, code, mechanisms: mechs };
        prop_assert_eq!(SaslHandshakeResponse::decode(&body_of(0x8012, |o| hr.encode(o))).unwrap(), hr);
        let ar = SaslAuthenticateRequest { correlation_id: corr, mechanism: mech, data: data.clone() };
        prop_assert_eq!(SaslAuthenticateRequest::decode(&body_of(0x13, |o| ar.encode(o))).unwrap(), ar);
        let resp = SaslAuthenticateResponse { correlation_id: corr, code, challenge: data };
        prop_assert_eq!(SaslAuthenticateResponse::decode(&body_of(0x8013, |o| resp.encode(o))).unwrap(), resp);
    }

    #[test]
    fn tune_open_close_round_trip(corr in any::<u32>(), code in any::<u16>(), fm in any::<u32>(),
                                  hb in any::<u32>(), vhost in text(), p in props()) {
        let t = Tune { frame_max: fm, heartbeat: hb };
        prop_assert_eq!(Tune::decode(&body_of(0x14, |o| t.encode_request(o))).unwrap(), t);
        prop_assert_eq!(Tune::decode(&body_of(0x8014, |o| t.encode_response(o))).unwrap(), t);
        let open = OpenRequest { correlation_id: corr, vhost: vhost.clone() };
        prop_assert_eq!(OpenRequest::decode(&body_of(0x15, |o| open.encode(o))).unwrap(), open);
        let resp = OpenResponse { correlation_id: corr, code, properties: p };
        prop_assert_eq!(OpenResponse::decode(&body_of(0x8015, |o| resp.encode(o))).unwrap(), resp);
        let close = CloseRequest { correlation_id: corr, code, reason: vhost };
        prop_assert_eq!(CloseRequest::decode(&body_of(0x16, |o| close.encode(o))).unwrap(), close);
        let cr = CodeResponse { key: 0x16, correlation_id: corr, code };
        prop_assert_eq!(CodeResponse::decode(0x8016, &body_of(0x8016, |o| cr.encode(o))).unwrap(), cr);
    }

    #[test]
    fn metadata_round_trip(corr in any::<u32>(),
                           brokers in proptest::collection::vec((any::<u16>(), text(), any::<u32>()), 0..4),
                           streams in proptest::collection::vec(
                               (text(), any::<u16>(), any::<u16>(), proptest::collection::vec(any::<u16>(), 0..4)), 0..4)) {
        let md = MetadataResponse {
            correlation_id: corr,
            brokers: brokers.into_iter().map(|(reference, host, port)| MetadataBroker { reference, host, port }).collect(),
            streams: streams.into_iter().map(|(name, code, leader, replicas)| StreamMetadata { name, code, leader, replicas }).collect(),
        };
        prop_assert_eq!(MetadataResponse::decode(&body_of(0x800f, |o| md.encode(o))).unwrap(), md);
    }

    /// No decoder panics on arbitrary bodies.
    #[test]
    fn decoders_never_panic(body in proptest::collection::vec(any::<u8>(), 0..64)) {
        let _ = PeerPropertiesRequest::decode(&body);
        let _ = PeerPropertiesResponse::decode(&body);
        let _ = SaslHandshakeRequest::decode(&body);
        let _ = SaslHandshakeResponse::decode(&body);
        let _ = SaslAuthenticateRequest::decode(&body);
        let _ = SaslAuthenticateResponse::decode(&body);
        let _ = Tune::decode(&body);
        let _ = OpenRequest::decode(&body);
        let _ = OpenResponse::decode(&body);
        let _ = CloseRequest::decode(&body);
        let _ = MetadataResponse::decode(&body);
    }
}
