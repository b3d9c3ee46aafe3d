//! Unit tests of the server-role stream handshake: the frames the proxy
//! answers with, the captured hello, and each refusal's code.

use super::*;
use crate::streamproto::command::{property, CodeResponse, HEARTBEAT_FRAME};
use crate::streamproto::frame::split_frame;

pub(crate) fn peer_properties(corr: u32) -> Vec<u8> {
    let mut out = Vec::new();
    PeerPropertiesRequest {
        correlation_id: corr,
        properties: vec![
            ("connection_name".into(), "app-1".into()),
            ("product".into(), "test".into()),
        ],
    }
    .encode(&mut out);
    out
}

pub(crate) fn sasl_handshake(corr: u32) -> Vec<u8> {
    let mut out = Vec::new();
    SaslHandshakeRequest {
        correlation_id: corr,
    }
    .encode(&mut out);
    out
}

pub(crate) fn sasl_plain(corr: u32, mechanism: &str, data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    SaslAuthenticateRequest {
        correlation_id: corr,
        mechanism: mechanism.into(),
        data: Some(data.to_vec()),
    }
    .encode(&mut out);
    out
}

pub(crate) fn tune_answer(key_with_flag: bool) -> Vec<u8> {
    let mut out = Vec::new();
    let t = Tune {
        frame_max: 1_048_576,
        heartbeat: 60,
    };
    if key_with_flag {
        t.encode_response(&mut out);
    } else {
        t.encode_request(&mut out);
    }
    out
}

pub(crate) fn open(corr: u32, vhost: &str) -> Vec<u8> {
    let mut out = Vec::new();
    OpenRequest {
        correlation_id: corr,
        vhost: vhost.into(),
    }
    .encode(&mut out);
    out
}

/// Every frame in `bytes`, as (key, body).
fn frames(mut bytes: &[u8]) -> Vec<(u16, Vec<u8>)> {
    let mut out = Vec::new();
    while let Some((f, used)) = split_frame(bytes, u32::MAX).unwrap() {
        out.push((f.header.key, f.body.to_vec()));
        bytes = &bytes[used..];
    }
    assert!(bytes.is_empty(), "partial frame left");
    out
}

/// Runs a client through to Open, one byte at a time when `bytewise`.
pub(crate) fn hello(vhost: &str) -> ClientHello {
    let mut hs = ServerHandshake::new(ServerConfig::default());
    let mut all = peer_properties(1);
    all.extend(sasl_handshake(2));
    all.extend(sasl_plain(3, PLAIN, b"\0guest\0guest"));
    all.extend(tune_answer(true));
    all.extend(open(4, vhost));
    match hs.receive(&all, &mut Vec::new()).unwrap() {
        ServerProgress::Opened(h) => *h,
        other => panic!("{other:?}"),
    }
}

#[test]
fn step_by_step_answers_like_a_broker() {
    let mut hs = ServerHandshake::new(ServerConfig::default());
    let mut out = Vec::new();
    assert!(!hs.started());
    assert_eq!(
        hs.receive(&peer_properties(7), &mut out).unwrap(),
        ServerProgress::NeedMore
    );
    let f = frames(&out);
    assert_eq!(f.len(), 1);
    assert_eq!(f[0].0, 0x8011);
    let resp = PeerPropertiesResponse::decode(&f[0].1).unwrap();
    assert_eq!((resp.correlation_id, resp.code), (7, response_code::OK));
    assert_eq!(property(&resp.properties, "product"), Some("amqpprox"));

    out.clear();
    hs.receive(&sasl_handshake(8), &mut out).unwrap();
    let f = frames(&out);
    let resp = SaslHandshakeResponse::decode(&f[0].1).unwrap();
    assert_eq!(resp.mechanisms, vec!["PLAIN".to_string()]);
    assert_eq!(resp.correlation_id, 8);

    out.clear();
    hs.receive(&sasl_plain(9, PLAIN, b"\0alice\0secret"), &mut out)
        .unwrap();
    let f = frames(&out);
    assert_eq!(f.len(), 2);
    assert_eq!(f[0].0, 0x8013);
    // No data field at all: some clients refuse an empty one.
    assert_eq!(f[0].1, vec![0, 0, 0, 9, 0, 1]);
    assert_eq!(f[1].0, 0x0014);
    assert_eq!(Tune::decode(&f[1].1).unwrap(), ServerConfig::default().tune);

    out.clear();
    let mut rest = tune_answer(false);
    rest.extend(HEARTBEAT_FRAME);
    rest.extend(open(10, "prod"));
    rest.extend([0, 0, 0, 4, 0, 0x0f]);
    match hs.receive(&rest, &mut out).unwrap() {
        ServerProgress::Opened(h) => {
            assert_eq!(h.open.vhost, "prod");
            assert_eq!(h.open.correlation_id, 10);
            assert_eq!(h.username().as_deref(), Some("alice"));
            assert_eq!(h.connection_name(), "app-1");
            assert_eq!(h.pipelined, vec![0, 0, 0, 4, 0, 0x0f]);
            assert_eq!(h.tune.heartbeat, 60);
        }
        other => panic!("{other:?}"),
    }
    assert!(out.is_empty(), "Open is answered by the session, not here");
}

#[test]
fn bytewise_feeding_reaches_the_same_hello() {
    let mut all = peer_properties(1);
    all.extend(sasl_handshake(2));
    all.extend(sasl_plain(3, PLAIN, b"\0guest\0guest"));
    all.extend(tune_answer(true));
    all.extend(open(4, "/"));
    let mut hs = ServerHandshake::new(ServerConfig::default());
    let mut out = Vec::new();
    let mut opened = None;
    for b in &all {
        if let ServerProgress::Opened(h) = hs.receive(&[*b], &mut out).unwrap() {
            opened = Some(*h);
        }
    }
    assert_eq!(opened, Some(hello("/")));
}

#[test]
fn other_mechanism_gets_code_7_on_its_response() {
    let mut hs = ServerHandshake::new(ServerConfig::default());
    let mut bytes = peer_properties(1);
    bytes.extend(sasl_handshake(2));
    bytes.extend(sasl_plain(3, "AMQPLAIN", b"x"));
    let err = hs.receive(&bytes, &mut Vec::new()).unwrap_err();
    assert_eq!(err.code(), response_code::SASL_MECHANISM_NOT_SUPPORTED);
    let f = frames(&err.reply());
    assert_eq!(f[0].0, 0x8013);
    let resp = SaslAuthenticateResponse::decode(&f[0].1).unwrap();
    assert_eq!((resp.correlation_id, resp.code), (3, 0x07));
}

#[test]
fn malformed_plain_is_a_sasl_error() {
    let mut hs = ServerHandshake::new(ServerConfig::default());
    let mut bytes = peer_properties(1);
    bytes.extend(sasl_handshake(2));
    bytes.extend(sasl_plain(3, PLAIN, b"no-nul"));
    let err = hs.receive(&bytes, &mut Vec::new()).unwrap_err();
    assert_eq!(
        err,
        ServerHandshakeError::MalformedPlain { correlation_id: 3 }
    );
    assert_eq!(err.code(), response_code::SASL_ERROR);
}

#[test]
fn out_of_order_is_closed_with_unknown_frame() {
    let mut hs = ServerHandshake::new(ServerConfig::default());
    let err = hs.receive(&open(1, "/"), &mut Vec::new()).unwrap_err();
    assert_eq!(
        err.to_string(),
        "expected peer-properties, received open (key 0x0015)"
    );
    let f = frames(&err.reply());
    assert_eq!(f[0].0, 0x0016);
    let close = CloseRequest::decode(&f[0].1).unwrap();
    assert_eq!(close.code, response_code::UNKNOWN_FRAME);
}

#[test]
fn oversized_frame_is_refused_before_its_body() {
    let mut hs = ServerHandshake::new(ServerConfig::default());
    let err = hs
        .receive(&(HANDSHAKE_MAX_FRAME).to_be_bytes(), &mut Vec::new())
        .unwrap_err();
    assert_eq!(err.code(), response_code::FRAME_TOO_LARGE);
}

#[test]
fn client_close_gets_its_response() {
    let mut hs = ServerHandshake::new(ServerConfig::default());
    let mut close = Vec::new();
    CloseRequest {
        correlation_id: 5,
        code: 1,
        reason: "bye".into(),
    }
    .encode(&mut close);
    let mut out = Vec::new();
    let mut bytes = peer_properties(1);
    bytes.extend(close);
    assert_eq!(
        hs.receive(&bytes, &mut out).unwrap(),
        ServerProgress::ClosedByClient
    );
    let f = frames(&out);
    assert_eq!(f.len(), 2);
    assert_eq!(
        CodeResponse::decode(f[1].0, &f[1].1).unwrap(),
        CodeResponse {
            key: 0x16,
            correlation_id: 5,
            code: 1
        }
    );
}

#[test]
fn open_response_for_the_client_always_has_properties() {
    let h = hello("/");
    let mut out = Vec::new();
    h.encode_open_response(
        response_code::VIRTUAL_HOST_ACCESS_FAILURE,
        Vec::new(),
        &mut out,
    );
    // size, key 0x8015, version, correlation 4, code 0x0c, empty array.
    assert_eq!(
        out,
        vec![0, 0, 0, 14, 0x80, 0x15, 0, 1, 0, 0, 0, 4, 0, 0x0c, 0, 0, 0, 0]
    );
}

mod arbitrary_input {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// Arbitrary bytes, in arbitrary chunks, after a valid start: the
        /// handshake answers, refuses or waits, and never panics.
        #[test]
        fn never_panics(prefix_steps in 0usize..5,
                        chunks in proptest::collection::vec(
                            proptest::collection::vec(any::<u8>(), 0..48), 0..6)) {
            let valid = [
                peer_properties(1),
                sasl_handshake(2),
                sasl_plain(3, PLAIN, b"\0u\0p"),
                tune_answer(true),
                open(4, "/"),
            ];
            let mut hs = ServerHandshake::new(ServerConfig::default());
            let mut out = Vec::new();
            for step in valid.iter().take(prefix_steps.min(4)) {
                hs.receive(step, &mut out).unwrap();
            }
            for c in &chunks {
                match hs.receive(c, &mut out) {
                    Ok(ServerProgress::NeedMore) => {}
                    Ok(_) => break,
                    Err(e) => {
                        let _ = e.reply();
                        break;
                    }
                }
            }
        }
    }
}
