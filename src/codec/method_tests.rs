//! Unit tests for the connection-class method codec (AMQP 0-9-1 §1.4.2,
//! §4.2.4): known bytes from real clients, every method's round trip,
//! rejection of trailing bytes and foreign classes, and the guarantee that
//! `Debug` never prints a SASL response. Test code only; never shipped.

use super::*;
use crate::codec::field::tests::{arb_table, key};
use crate::codec::field::{str_field, FieldValue};
use crate::codec::frame::decode_frame;
use proptest::prelude::*;

const PIKA_CLIENT: &[u8] =
    include_bytes!("../../tests/fixtures/handshakes/pika-connect.client.bin");
const PIKA_WRONG_CLIENT: &[u8] =
    include_bytes!("../../tests/fixtures/handshakes/pika-wrong-password.client.bin");
const PIKA_WRONG_BROKER: &[u8] =
    include_bytes!("../../tests/fixtures/handshakes/pika-wrong-password.broker.bin");

/// The payload of the first frame after the 8-byte protocol header.
fn first_client_payload(stream: &[u8]) -> &[u8] {
    let (frame, _) = decode_frame(&stream[8..], 150_000).unwrap().unwrap();
    frame.payload
}

fn payload(m: &ConnectionMethod) -> Vec<u8> {
    let mut out = Vec::new();
    m.encode_payload(&mut out);
    out
}

#[test]
fn fixture_start_ok_decodes_and_round_trips() {
    let p = first_client_payload(PIKA_CLIENT);
    let m = ConnectionMethod::decode(p).unwrap();
    let ConnectionMethod::StartOk(s) = &m else {
        panic!("expected start-ok, got {}", m.name());
    };
    assert_eq!(s.mechanism, b"PLAIN");
    assert_eq!(s.response, b"\0guest\0guest");
    assert_eq!(s.locale, b"en_US");
    let caps = s
        .client_properties
        .get("capabilities")
        .and_then(FieldValue::as_table)
        .unwrap();
    assert_eq!(
        caps.get("authentication_failure_close")
            .and_then(FieldValue::as_bool),
        Some(true)
    );
    assert_eq!(
        s.client_properties
            .get("connection_name")
            .and_then(FieldValue::as_bytes),
        Some(&b"compat-pika"[..])
    );
    assert_eq!(payload(&m), p);
}

#[test]
fn debug_never_prints_the_sasl_response() {
    for stream in [PIKA_CLIENT, PIKA_WRONG_CLIENT] {
        let m = ConnectionMethod::decode(first_client_payload(stream)).unwrap();
        let ConnectionMethod::StartOk(s) = &m else {
            panic!("not a start-ok")
        };
        let secure_ok = ConnectionMethod::SecureOk {
            response: s.response.clone(),
        };
        let len = s.response.len();
        for text in [
            format!("{s:?}"),
            format!("{s:#?}"),
            format!("{m:?}"),
            format!("{m:#?}"),
            format!("{secure_ok:?}"),
            format!("{secure_ok:#?}"),
        ] {
            // The password is "guest" (or "guest-wrong") and the user is
            // "guest": no form of it may appear, neither as text nor as the
            // decimal byte list a derived Debug of Vec<u8> would print
            // (103, 117, 101, 115, 116 = "guest").
            assert!(!text.contains("guest"), "{text}");
            assert!(!text.contains("103, 117, 101"), "{text}");
            assert!(!text.contains("\\0g") && !text.contains("\\x00g"), "{text}");
            assert!(text.contains(&format!("<redacted, {len} bytes>")), "{text}");
        }
        // Everything else is still shown.
        assert!(format!("{s:?}").contains("compat-pika"));
    }
}

#[test]
fn broker_close_from_fixture() {
    // The 504-byte broker connection.start comes first, then the 403 close.
    let (start, used) = decode_frame(PIKA_WRONG_BROKER, 150_000).unwrap().unwrap();
    assert_eq!(used, 504);
    let start = ConnectionMethod::decode(start.payload).unwrap();
    let ConnectionMethod::Start(s) = &start else {
        panic!("not a start")
    };
    assert_eq!((s.version_major, s.version_minor), (0, 9));
    assert_eq!(s.mechanisms, b"AMQPLAIN PLAIN");
    assert_eq!(s.locales, b"en_US");
    assert_eq!(
        s.server_properties
            .get("cluster_name")
            .and_then(FieldValue::as_bytes),
        Some(&b"rabbit@vm"[..])
    );
    let (close, _) = decode_frame(&PIKA_WRONG_BROKER[used..], 150_000)
        .unwrap()
        .unwrap();
    let ConnectionMethod::Close(c) = ConnectionMethod::decode(close.payload).unwrap() else {
        panic!("not a close")
    };
    assert_eq!(c.reply_code, reply_code::ACCESS_REFUSED);
    assert!(c
        .reply_text_lossy()
        .starts_with("ACCESS_REFUSED - Login was refused"));
    assert_eq!((c.class_id, c.method_id), (0, 0));
}

#[test]
fn known_small_methods() {
    // tune-ok 2047/131072/60 as lapin sends it.
    let p = [0, 10, 0, 31, 0x07, 0xff, 0, 2, 0, 0, 0, 60];
    let m = ConnectionMethod::decode(&p).unwrap();
    assert_eq!(
        m,
        ConnectionMethod::TuneOk(Tune {
            channel_max: 2047,
            frame_max: 131072,
            heartbeat: 60
        })
    );
    assert_eq!(payload(&m), p);
    // open "/" with insist set (pika).
    let p = b"\x00\x0a\x00\x28\x01/\x00\x01";
    let m = ConnectionMethod::decode(p).unwrap();
    assert_eq!(
        m,
        ConnectionMethod::Open(Open {
            vhost: "/".into(),
            capabilities: vec![],
            insist: true
        })
    );
    assert_eq!(payload(&m), p);
    assert_eq!(
        ConnectionMethod::decode(&[0, 10, 0, 51]),
        Ok(ConnectionMethod::CloseOk)
    );
    assert_eq!(
        ConnectionMethod::decode(&[0, 10, 0, 61]),
        Ok(ConnectionMethod::Unblocked)
    );
}

#[test]
fn whole_frame_on_channel_zero() {
    let mut out = Vec::new();
    ConnectionMethod::CloseOk.encode_frame(&mut out);
    assert_eq!(out, [1, 0, 0, 0, 0, 0, 4, 0, 10, 0, 51, 0xce]);
    let close = ConnectionMethod::Close(Close::new(
        reply_code::RESOURCE_ERROR,
        "No known broker mapping for vhost x",
    ));
    let mut out = vec![0xaa]; // appends, keeps what was there
    close.encode_frame(&mut out);
    assert_eq!(out[0], 0xaa);
    let (frame, used) = decode_frame(&out[1..], 150_000).unwrap().unwrap();
    assert_eq!(
        (frame.frame_type, frame.channel, used),
        (1, 0, out.len() - 1)
    );
    assert_eq!(ConnectionMethod::decode(frame.payload), Ok(close));
}

#[test]
fn errors() {
    assert_eq!(
        ConnectionMethod::decode(&[0, 20, 0, 10, 0]),
        Err(DecodeError::NotConnectionMethod {
            class_id: 20,
            method_id: 10
        })
    );
    assert_eq!(
        ConnectionMethod::decode(&[0, 10, 0, 99]),
        Err(DecodeError::NotConnectionMethod {
            class_id: 10,
            method_id: 99
        })
    );
    assert_eq!(
        ConnectionMethod::decode(&[0, 10, 0]),
        Err(DecodeError::Truncated { needed: 1 })
    );
    assert_eq!(
        ConnectionMethod::decode(&[0, 10, 0, 51, 0]),
        Err(DecodeError::Malformed(
            "trailing bytes after method arguments"
        ))
    );
    assert_eq!(
        ConnectionMethod::decode(&[0, 10, 0, 31, 0, 1, 0, 0]),
        Err(DecodeError::Truncated { needed: 2 })
    );
    assert_eq!(
        ConnectionMethod::decode(b"\x00\x0a\x00\x28\x02\xff\xfe\x00\x00"),
        Err(DecodeError::InvalidUtf8 {
            field: "virtual-host"
        })
    );
    // A truncated start-ok from a real client, at every length.
    let p = first_client_payload(PIKA_CLIENT);
    for cut in 0..p.len() {
        assert!(ConnectionMethod::decode(&p[..cut]).is_err(), "cut {cut}");
    }
}

#[test]
fn close_new_truncates_on_char_boundary() {
    let c = Close::new(200, "OK");
    assert_eq!(
        (
            c.reply_code,
            c.reply_text.as_slice(),
            c.class_id,
            c.method_id
        ),
        (200, &b"OK"[..], 0, 0)
    );
    let long = "é".repeat(200); // 400 bytes, 2 per char
    let c = Close::new(403, &long);
    assert_eq!(c.reply_text.len(), 254);
    assert_eq!(c.reply_text_lossy(), "é".repeat(127));
    assert_eq!(Close::new(1, &"a".repeat(300)).reply_text.len(), 255);
}

#[test]
fn names() {
    assert_eq!(ConnectionMethod::CloseOk.name(), "connection.close-ok");
    assert_eq!(
        ConnectionMethod::SecureOk { response: vec![] }.name(),
        "connection.secure-ok"
    );
    assert_eq!(ConnectionMethod::Unblocked.name(), "connection.unblocked");
}

fn short() -> impl Strategy<Value = Vec<u8>> {
    key()
}

fn long() -> impl Strategy<Value = Vec<u8>> {
    proptest::collection::vec(any::<u8>(), 0..300)
}

fn arb_tune() -> impl Strategy<Value = Tune> {
    (any::<u16>(), any::<u32>(), any::<u16>()).prop_map(|(channel_max, frame_max, heartbeat)| {
        Tune {
            channel_max,
            frame_max,
            heartbeat,
        }
    })
}

fn arb_method() -> impl Strategy<Value = ConnectionMethod> {
    prop_oneof![
        (any::<u8>(), any::<u8>(), arb_table(), long(), long()).prop_map(|(a, b, t, m, l)| {
            ConnectionMethod::Start(Start {
                version_major: a,
                version_minor: b,
                server_properties: t,
                mechanisms: m,
                locales: l,
            })
        }),
        (arb_table(), short(), long(), short()).prop_map(|(t, m, r, l)| {
            ConnectionMethod::StartOk(StartOk {
                client_properties: t,
                mechanism: m,
                response: r,
                locale: l,
            })
        }),
        long().prop_map(|challenge| ConnectionMethod::Secure { challenge }),
        long().prop_map(|response| ConnectionMethod::SecureOk { response }),
        arb_tune().prop_map(ConnectionMethod::Tune),
        arb_tune().prop_map(ConnectionMethod::TuneOk),
        (
            ".{0,60}".prop_filter("shortstr", |s: &String| s.len() <= 255),
            short(),
            any::<bool>()
        )
            .prop_map(
                |(vhost, capabilities, insist)| ConnectionMethod::Open(Open {
                    vhost,
                    capabilities,
                    insist
                })
            ),
        short().prop_map(|known_hosts| ConnectionMethod::OpenOk { known_hosts }),
        (any::<u16>(), short(), any::<u16>(), any::<u16>()).prop_map(|(code, text, c, m)| {
            ConnectionMethod::Close(Close {
                reply_code: code,
                reply_text: text,
                class_id: c,
                method_id: m,
            })
        }),
        Just(ConnectionMethod::CloseOk),
        short().prop_map(|reason| ConnectionMethod::Blocked { reason }),
        Just(ConnectionMethod::Unblocked),
    ]
}

proptest! {
    #[test]
    fn method_round_trips(m in arb_method()) {
        let bytes = payload(&m);
        let back = ConnectionMethod::decode(&bytes).unwrap();
        // Compared as bytes because tables may hold NaN floats.
        prop_assert_eq!(payload(&back), bytes);
        prop_assert_eq!(back.name(), m.name());
        let mut frame = Vec::new();
        m.encode_frame(&mut frame);
        let (f, used) = decode_frame(&frame, u32::MAX).unwrap().unwrap();
        prop_assert_eq!(used, frame.len());
        prop_assert_eq!(f.payload, &payload(&m)[..]);
    }

    #[test]
    fn arbitrary_payloads_never_panic(tail in proptest::collection::vec(any::<u8>(), 0..96), id in 0u16..70) {
        let mut p = vec![0, 10];
        p.extend_from_slice(&id.to_be_bytes());
        p.extend_from_slice(&tail);
        crate::codec::fuzz_check::method_decode(&p);
        crate::codec::fuzz_check::method_decode(&tail);
    }

    #[test]
    fn debug_redacts_any_response(t in arb_table(), secret in "[a-z]{8,16}") {
        let mut t = t;
        t.push("k", str_field("visible"));
        let m = ConnectionMethod::StartOk(StartOk {
            client_properties: t,
            mechanism: b"PLAIN".to_vec(),
            response: format!("\0user\0{secret}").into_bytes(),
            locale: b"en_US".to_vec(),
        });
        let text = format!("{m:?}");
        prop_assert!(!text.contains(&secret));
        prop_assert!(text.contains("visible"));
    }
}

/// The StartOk `start_ok_with_entries` must produce: the client's own
/// decoded and re-encoded with the entries pushed at the end of its table.
fn start_ok_with_pushed(start_ok: &StartOk, entries: &[(&str, &str)]) -> Vec<u8> {
    let mut grown = start_ok.clone();
    for (key, value) in entries {
        grown
            .client_properties
            .push(key, FieldValue::LongString(value.as_bytes().to_vec()));
    }
    let mut out = Vec::new();
    ConnectionMethod::StartOk(grown).encode_frame(&mut out);
    out
}

#[test]
fn entries_are_spliced_into_a_real_clients_start_ok() {
    let (frame, used) = decode_frame(&PIKA_CLIENT[8..], 150_000).unwrap().unwrap();
    let raw = &PIKA_CLIENT[8..8 + used];
    let ConnectionMethod::StartOk(start_ok) = ConnectionMethod::decode(frame.payload).unwrap()
    else {
        panic!("pika's first frame is its StartOk")
    };
    let additions = [
        ("amqpprox_client", "10.0.0.1:4242"),
        ("amqpprox_host", "(:5672) h:1"),
    ];
    let mut entries = Vec::new();
    for (key, value) in additions {
        put_longstr_entry(&mut entries, key, value.as_bytes());
    }
    let mut out = vec![0xAA];
    start_ok_with_entries(raw, &entries, &mut out).unwrap();
    assert_eq!(out[0], 0xAA, "appends, never overwrites");
    assert_eq!(out[1..], start_ok_with_pushed(&start_ok, &additions)[..]);
}

#[test]
fn a_cut_start_ok_is_refused_and_nothing_is_written() {
    let (_, used) = decode_frame(&PIKA_CLIENT[8..], 150_000).unwrap().unwrap();
    let raw = &PIKA_CLIENT[8..8 + used];
    for cut in [0, 6, 7, 12, 20, used - 1] {
        let mut out = Vec::new();
        assert_eq!(
            start_ok_with_entries(&raw[..cut], b"", &mut out),
            None,
            "cut at {cut}"
        );
        assert!(out.is_empty());
    }
}

proptest! {
    #[test]
    fn splicing_entries_equals_pushing_them_and_encoding(
        props in arb_table(),
        mechanism in short(),
        response in long(),
        locale in short(),
        value in "[ -~]{0,40}",
    ) {
        let start_ok = StartOk { client_properties: props, mechanism, response, locale };
        let mut raw = Vec::new();
        ConnectionMethod::StartOk(start_ok.clone()).encode_frame(&mut raw);
        let additions = [("amqpprox_client", value.as_str()), ("amqpprox_host", "x")];
        let mut entries = Vec::new();
        for (key, value) in additions {
            put_longstr_entry(&mut entries, key, value.as_bytes());
        }
        let mut out = Vec::new();
        prop_assert!(start_ok_with_entries(&raw, &entries, &mut out).is_some());
        prop_assert_eq!(out, start_ok_with_pushed(&start_ok, &additions));
    }
}

/// What the transparent handshake learns from a `StartOk` through
/// [`StartOkRef`]: acceptance (or the error) and `connection_name`, as
/// decoding gives them.
fn check_agrees_with_decode(p: &[u8]) -> Result<(), TestCaseError> {
    let checked = StartOkRef::check(p);
    // A payload that names another method is refused for its ids alone,
    // whatever decoding it as that method would find (a StartOk whose
    // method id was bent into Start's is a truncated Start to `decode`).
    if let Some((class_id, method_id)) = crate::codec::frame::method_ids(p) {
        if (class_id, method_id) != (CONNECTION_CLASS, method_id::START_OK) {
            prop_assert_eq!(
                checked.err(),
                Some(DecodeError::NotConnectionMethod {
                    class_id,
                    method_id
                })
            );
            return Ok(());
        }
    }
    match ConnectionMethod::decode(p) {
        Ok(ConnectionMethod::StartOk(decoded)) => {
            let view = checked.map_err(|e| TestCaseError::fail(format!("refused: {e}")))?;
            prop_assert_eq!(view.payload(), p);
            for key in ["connection_name", "product", "capabilities", "absent"] {
                let expected = match decoded.client_properties.get(key) {
                    Some(FieldValue::LongString(s)) => Some(s.as_slice()),
                    _ => None,
                };
                prop_assert_eq!(view.longstr_property(key), expected);
            }
        }
        Ok(other) => prop_assert!(checked.is_err(), "accepted a {}", other.name()),
        Err(e) => prop_assert_eq!(checked.err(), Some(e)),
    }
    Ok(())
}

#[test]
fn start_ok_check_agrees_with_decode_on_every_clients_bytes_cut_and_flipped() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/handshakes");
    let mut clients = 0;
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if !path.to_string_lossy().ends_with("connect.client.bin") {
            continue;
        }
        clients += 1;
        let stream = std::fs::read(&path).unwrap();
        let p = first_client_payload(&stream);
        let view = StartOkRef::check(p).unwrap_or_else(|e| panic!("{path:?}: {e}"));
        assert_eq!(view.payload(), p);
        let again = StartOkRef::of_checked(p).unwrap();
        assert_eq!(
            again.longstr_property("connection_name"),
            view.longstr_property("connection_name")
        );
        // Every prefix, and every byte replaced by a few telling values
        // (a length's top byte, a tag, zero): the same verdict each time.
        for cut in 0..p.len() {
            check_agrees_with_decode(&p[..cut]).unwrap();
        }
        for at in 0..p.len() {
            for value in [0u8, 0xff, b'S', b'F', b'A', b'D', b'?'] {
                let mut bent = p.to_vec();
                bent[at] = value;
                check_agrees_with_decode(&bent).unwrap_or_else(|e| panic!("{path:?} @{at}: {e}"));
            }
        }
    }
    assert!(clients >= 10, "only {clients} client recordings found");
    let name = StartOkRef::check(first_client_payload(PIKA_CLIENT))
        .unwrap()
        .longstr_property("connection_name");
    assert_eq!(name, Some(&b"compat-pika"[..]));
}

proptest! {
    #[test]
    fn start_ok_check_agrees_with_decode(
        props in arb_table(),
        at in any::<prop::sample::Index>(),
        value in any::<u8>(),
        cut in any::<prop::sample::Index>(),
    ) {
        let m = ConnectionMethod::StartOk(StartOk {
            client_properties: props,
            mechanism: b"PLAIN".to_vec(),
            response: b"\0u\0p".to_vec(),
            locale: b"en_US".to_vec(),
        });
        let p = payload(&m);
        check_agrees_with_decode(&p)?;
        let mut bent = p.clone();
        bent[at.index(p.len())] = value;
        check_agrees_with_decode(&bent)?;
        check_agrees_with_decode(&p[..cut.index(p.len())])?;
    }
}
