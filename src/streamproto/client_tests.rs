//! Unit tests of the client-role replay: the requests the broker receives
//! at each step, Tune negotiation, and each refusal's code for the client.

use super::*;
use crate::streamproto::command::{
    property, MetadataResponse, OpenRequest, SaslHandshakeRequest, HEARTBEAT_FRAME,
};
use crate::streamproto::frame::split_frame;
use crate::streamproto::server::tests::hello;

fn additions() -> [(&'static str, &'static str); 1] {
    [("amqpprox_client", "10.0.0.1:4242")]
}

fn one_frame(bytes: &[u8]) -> (u16, Vec<u8>) {
    let (f, used) = split_frame(bytes, u32::MAX).unwrap().unwrap();
    assert_eq!(used, bytes.len(), "exactly one frame");
    (f.header.key, f.body.to_vec())
}

fn frames(mut bytes: &[u8]) -> Vec<(u16, Vec<u8>)> {
    let mut out = Vec::new();
    while let Some((f, used)) = split_frame(bytes, u32::MAX).unwrap() {
        out.push((f.header.key, f.body.to_vec()));
        bytes = &bytes[used..];
    }
    out
}

fn broker_peer_properties(corr: u32, code: u16) -> Vec<u8> {
    let mut out = Vec::new();
    PeerPropertiesResponse {
        correlation_id: corr,
        code,
        properties: vec![("product".into(), "RabbitMQ".into())],
    }
    .encode(&mut out);
    out
}

fn broker_mechanisms(corr: u32, mechs: &[&str]) -> Vec<u8> {
    let mut out = Vec::new();
    SaslHandshakeResponse {
        correlation_id: corr,
        code: response_code::OK,
        mechanisms: mechs.iter().map(|m| m.to_string()).collect(),
    }
    .encode(&mut out);
    out
}

fn broker_sasl(corr: u32, code: u16) -> Vec<u8> {
    let mut out = Vec::new();
    SaslAuthenticateResponse {
        correlation_id: corr,
        code,
        challenge: None,
    }
    .encode(&mut out);
    out
}

fn broker_tune(frame_max: u32, heartbeat: u32) -> Vec<u8> {
    let mut out = Vec::new();
    Tune {
        frame_max,
        heartbeat,
    }
    .encode_request(&mut out);
    out
}

fn broker_open(corr: u32, code: u16, props: &[(&str, &str)]) -> Vec<u8> {
    let mut out = Vec::new();
    OpenResponse {
        correlation_id: corr,
        code,
        properties: props
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
    }
    .encode(&mut out);
    out
}

/// Drives a replay through SaslAuthenticate; returns it ready for Tune.
fn authenticated() -> BrokerReplay {
    let h = hello("prod");
    let mut out = Vec::new();
    let mut r = BrokerReplay::start(&h, &additions(), &mut out);
    r.receive(&broker_peer_properties(1, 1), &mut out).unwrap();
    r.receive(&broker_mechanisms(2, &["AMQPLAIN", "PLAIN"]), &mut out)
        .unwrap();
    r.receive(&broker_sasl(3, 1), &mut out).unwrap();
    r
}

#[test]
fn the_broker_receives_the_clients_handshake_with_additions() {
    let h = hello("prod");
    let mut out = Vec::new();
    let mut r = BrokerReplay::start(&h, &additions(), &mut out);
    let (k, body) = one_frame(&out);
    assert_eq!(k, 0x11);
    let pp = PeerPropertiesRequest::decode(&body).unwrap();
    assert_eq!(pp.correlation_id, 1);
    assert_eq!(property(&pp.properties, "connection_name"), Some("app-1"));
    assert_eq!(
        pp.properties.last().unwrap(),
        &("amqpprox_client".to_string(), "10.0.0.1:4242".to_string())
    );

    out.clear();
    assert_eq!(
        r.receive(&broker_peer_properties(1, 1), &mut out).unwrap(),
        ReplayProgress::NeedMore
    );
    let (k, body) = one_frame(&out);
    assert_eq!(k, 0x12);
    assert_eq!(
        SaslHandshakeRequest::decode(&body).unwrap().correlation_id,
        2
    );

    out.clear();
    r.receive(&broker_mechanisms(2, &["PLAIN", "AMQPLAIN"]), &mut out)
        .unwrap();
    let (k, body) = one_frame(&out);
    assert_eq!(k, 0x13);
    assert_eq!(
        SaslAuthenticateRequest::decode(&body).unwrap(),
        h.sasl_authenticate
    );

    out.clear();
    r.receive(&broker_sasl(3, 1), &mut out).unwrap();
    assert!(out.is_empty(), "the broker speaks first after SASL");

    let mut tail = HEARTBEAT_FRAME.to_vec();
    tail.extend(broker_tune(131_072, 30));
    r.receive(&tail, &mut out).unwrap();
    let f = frames(&out);
    assert_eq!(f.len(), 2);
    assert_eq!(f[0].0, 0x8014);
    assert_eq!(
        Tune::decode(&f[0].1).unwrap(),
        Tune {
            frame_max: 131_072,
            heartbeat: 60
        }
    );
    assert_eq!(f[1].0, 0x15);
    assert_eq!(
        OpenRequest::decode(&f[1].1).unwrap(),
        OpenRequest {
            correlation_id: 4,
            vhost: "prod".into()
        }
    );

    out.clear();
    let mut reply = broker_open(
        4,
        1,
        &[("advertised_host", "node-a"), ("advertised_port", "5552")],
    );
    let mut md = Vec::new();
    MetadataResponse {
        correlation_id: 5,
        brokers: Vec::new(),
        streams: Vec::new(),
    }
    .encode(&mut md);
    reply.extend(&md);
    match r.receive(&reply, &mut out).unwrap() {
        ReplayProgress::Open {
            response,
            tune,
            from_broker,
        } => {
            assert_eq!(response.advertised(), Some(("node-a", 5552)));
            assert_eq!(tune.frame_max, 131_072);
            assert_eq!(from_broker, md);
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn an_addition_replaces_the_clients_property_of_that_name() {
    let mut h = hello("/");
    h.peer_properties
        .properties
        .push(("amqpprox_client".into(), "forged".into()));
    let mut out = Vec::new();
    BrokerReplay::start(&h, &additions(), &mut out);
    let pp = PeerPropertiesRequest::decode(&one_frame(&out).1).unwrap();
    let values: Vec<_> = pp
        .properties
        .iter()
        .filter(|(k, _)| k == "amqpprox_client")
        .collect();
    assert_eq!(values.len(), 1);
    assert_eq!(values[0].1, "10.0.0.1:4242");
}

#[test]
fn wrong_password_gives_the_brokers_code() {
    let h = hello("/");
    let mut out = Vec::new();
    let mut r = BrokerReplay::start(&h, &[], &mut out);
    r.receive(&broker_peer_properties(1, 1), &mut out).unwrap();
    r.receive(&broker_mechanisms(2, &["PLAIN"]), &mut out)
        .unwrap();
    let err = r
        .receive(
            &broker_sasl(3, response_code::AUTHENTICATION_FAILURE),
            &mut out,
        )
        .unwrap_err();
    assert_eq!(
        err,
        BrokerReplayError::Refused {
            step: ReplayStep::SaslAuthenticate,
            code: 8
        }
    );
    assert_eq!(err.client_code(), 8);
}

#[test]
fn unknown_vhost_gives_code_12_even_without_properties() {
    let mut r = authenticated();
    let mut out = Vec::new();
    r.receive(&broker_tune(1_048_576, 60), &mut out).unwrap();
    // The broker writes a refusal without the properties array.
    let refusal = [0, 0, 0, 10, 0x80, 0x15, 0, 1, 0, 0, 0, 4, 0, 0x0c];
    let err = r.receive(&refusal, &mut out).unwrap_err();
    assert_eq!(
        err.client_code(),
        response_code::VIRTUAL_HOST_ACCESS_FAILURE
    );
}

#[test]
fn broker_close_is_answered_and_reported() {
    let mut r = authenticated();
    let mut close = Vec::new();
    CloseRequest {
        correlation_id: 77,
        code: response_code::UNKNOWN_FRAME,
        reason: "unknown frame".into(),
    }
    .encode(&mut close);
    let mut out = Vec::new();
    let err = r.receive(&close, &mut out).unwrap_err();
    assert_eq!(err.client_code(), 0x0d);
    let (k, body) = one_frame(&out);
    assert_eq!(k, 0x8016);
    assert_eq!(CodeResponse::decode(k, &body).unwrap().correlation_id, 77);
}

#[test]
fn broker_without_plain_or_out_of_order_is_refused() {
    let h = hello("/");
    let mut out = Vec::new();
    let mut r = BrokerReplay::start(&h, &[], &mut out);
    r.receive(&broker_peer_properties(1, 1), &mut out).unwrap();
    let err = r
        .receive(&broker_mechanisms(2, &["EXTERNAL"]), &mut out)
        .unwrap_err();
    assert_eq!(
        err.client_code(),
        response_code::SASL_MECHANISM_NOT_SUPPORTED
    );

    let mut r = BrokerReplay::start(&h, &[], &mut out);
    let err = r.receive(&broker_tune(0, 0), &mut out).unwrap_err();
    assert_eq!(
        err.to_string(),
        "broker sent tune (key 0x0014) while a peer-properties response was expected"
    );
    assert_eq!(err.client_code(), response_code::INTERNAL_ERROR);
}

#[test]
fn tune_negotiation_keeps_the_clients_heartbeat_and_the_smaller_frame() {
    let t = |frame_max, heartbeat| Tune {
        frame_max,
        heartbeat,
    };
    assert_eq!(
        negotiate_tune(t(1_048_576, 60), t(131_072, 30)),
        t(131_072, 60)
    );
    assert_eq!(negotiate_tune(t(0, 60), t(131_072, 0)), t(131_072, 60));
    assert_eq!(negotiate_tune(t(0, 0), t(0, 60)), t(0, 0));
    assert_eq!(negotiate_tune(t(4096, 10), t(1_048_576, 60)), t(4096, 10));
}

mod arbitrary_input {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// Arbitrary broker bytes at any step: the replay answers, fails or
        /// waits, and never panics.
        #[test]
        fn never_panics(steps in 0usize..4,
                        chunks in proptest::collection::vec(
                            proptest::collection::vec(any::<u8>(), 0..48), 0..6)) {
            let valid = [
                broker_peer_properties(1, 1),
                broker_mechanisms(2, &["PLAIN"]),
                broker_sasl(3, 1),
                broker_tune(1_048_576, 60),
            ];
            let h = hello("/");
            let mut out = Vec::new();
            let mut r = BrokerReplay::start(&h, &[], &mut out);
            for step in valid.iter().take(steps) {
                r.receive(step, &mut out).unwrap();
            }
            for c in &chunks {
                match r.receive(c, &mut out) {
                    Ok(ReplayProgress::NeedMore) => {}
                    Ok(_) => break,
                    Err(e) => {
                        let _ = e.client_code();
                        break;
                    }
                }
            }
        }
    }
}
