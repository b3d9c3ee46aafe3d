//! Replays the handshake captures of real AMQP 0-9-1 clients against
//! RabbitMQ (tests/fixtures/handshakes, described in its README.md) through
//! the codec: frames (spec §4.2.3), connection methods (§1.4.2, §4.2.4) and
//! field tables (§4.2.5.5) must decode and re-encode byte for byte, and the
//! pass-through scanner must see the same frames however the stream is cut.
//!
//! Reads only files inside the repository; never touches the network.

use std::path::PathBuf;

use amqpprox::codec::fuzz_check::{check_scanner, reference_walk, PROXY_MAX_TOTAL};
use amqpprox::codec::{
    decode_frame, encode_frame, method_ids, reply_code, ConnectionMethod, DecodeError, FieldValue,
    Open, Tune, CONNECTION_CLASS, FRAME_METHOD, PROTOCOL_HEADER,
};

fn fixture_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/handshakes")
}

/// Every `*.bin` fixture as (file name, bytes), sorted by name.
fn fixtures() -> Vec<(String, Vec<u8>)> {
    let mut out: Vec<(String, Vec<u8>)> = std::fs::read_dir(fixture_dir())
        .expect("fixture directory")
        .map(|e| e.expect("directory entry").path())
        .filter(|p| p.extension().is_some_and(|x| x == "bin"))
        .map(|p| {
            let name = p.file_name().unwrap().to_string_lossy().into_owned();
            (name, std::fs::read(&p).expect("fixture file"))
        })
        .collect();
    out.sort();
    assert_eq!(out.len(), 28, "the README lists 28 fixture files");
    out
}

/// The frame stream of a fixture: client files start with the protocol
/// header, broker files with the first frame.
fn frame_stream<'a>(name: &str, data: &'a [u8]) -> &'a [u8] {
    if name.ends_with(".client.bin") {
        assert_eq!(&data[..8], &PROTOCOL_HEADER, "{name}");
        &data[8..]
    } else {
        data
    }
}

/// Decodes all frames; re-encodes each one (and each connection method)
/// and checks the bytes are identical. Returns the connection methods with
/// their channel.
fn decode_all(name: &str, stream: &[u8]) -> Vec<(u16, ConnectionMethod)> {
    let mut methods = Vec::new();
    let mut off = 0;
    while off < stream.len() {
        let (frame, used) = decode_frame(&stream[off..], PROXY_MAX_TOTAL)
            .unwrap_or_else(|e| panic!("{name} @{off}: {e}"))
            .unwrap_or_else(|| panic!("{name} @{off}: file does not end on a frame boundary"));
        let original = &stream[off..off + used];
        let mut again = Vec::new();
        encode_frame(frame.frame_type, frame.channel, frame.payload, &mut again);
        assert_eq!(again, original, "{name} @{off}: frame re-encoding");
        assert_eq!(
            frame.frame_type, FRAME_METHOD,
            "{name}: only method frames were captured"
        );
        let (class_id, method_id) = method_ids(frame.payload).expect("method ids");
        match ConnectionMethod::decode(frame.payload) {
            Ok(m) => {
                assert_eq!(class_id, CONNECTION_CLASS);
                assert_eq!(
                    frame.channel, 0,
                    "{name}: connection methods live on channel 0"
                );
                let mut enc = Vec::new();
                m.encode_frame(&mut enc);
                assert_eq!(enc, original, "{name} @{off}: {} re-encoding", m.name());
                methods.push((frame.channel, m));
            }
            Err(e) => {
                assert_ne!(class_id, CONNECTION_CLASS, "{name} @{off}: {e}");
                assert_eq!(
                    e,
                    DecodeError::NotConnectionMethod {
                        class_id,
                        method_id
                    }
                );
            }
        }
        off += used;
    }
    methods
}

fn names(methods: &[(u16, ConnectionMethod)]) -> Vec<&'static str> {
    methods.iter().map(|(_, m)| m.name()).collect()
}

#[test]
fn every_frame_and_method_round_trips() {
    for (name, data) in fixtures() {
        let methods = decode_all(&name, frame_stream(&name, &data));
        assert!(!methods.is_empty(), "{name}");
        // Debug output of anything decoded never shows the credentials.
        for (_, m) in &methods {
            let text = format!("{m:?} {m:#?}");
            assert!(!text.contains("guest"), "{name}: {text}");
        }
    }
}

#[test]
fn broker_files() {
    let files = fixtures();
    let start_frame = &files
        .iter()
        .find(|(n, _)| n.ends_with(".broker.bin"))
        .unwrap()
        .1[..504];
    for (name, data) in files.iter().filter(|(n, _)| n.ends_with(".broker.bin")) {
        assert_eq!(
            &data[..504],
            start_frame,
            "{name}: broker start is identical everywhere"
        );
        let methods = decode_all(name, data);
        let ConnectionMethod::Start(start) = &methods[0].1 else {
            panic!("{name}: first broker method is {}", methods[0].1.name())
        };
        assert_eq!((start.version_major, start.version_minor), (0, 9));
        assert_eq!(start.mechanisms, b"AMQPLAIN PLAIN");
        assert_eq!(start.locales, b"en_US");
        let props = &start.server_properties;
        let keys: Vec<&[u8]> = props.iter().map(|(k, _)| k).collect();
        let expected: [&[u8]; 7] = [
            b"capabilities",
            b"cluster_name",
            b"copyright",
            b"information",
            b"platform",
            b"product",
            b"version",
        ];
        assert_eq!(keys, expected, "{name}");
        assert_eq!(
            props.get("cluster_name").and_then(FieldValue::as_bytes),
            Some(&b"rabbit@vm"[..])
        );
        let caps = props
            .get("capabilities")
            .and_then(FieldValue::as_table)
            .unwrap();
        assert_eq!(caps.len(), 9);
        assert!(caps.iter().all(|(_, v)| v.as_bool() == Some(true)));

        if name.contains("wrong-password") {
            if name.starts_with("pika") {
                // pika advertises authentication_failure_close: the broker
                // answers the StartOk with a 403 close.
                assert_eq!(names(&methods), ["connection.start", "connection.close"]);
                let ConnectionMethod::Close(c) = &methods[1].1 else {
                    unreachable!()
                };
                assert_eq!(c.reply_code, reply_code::ACCESS_REFUSED);
                assert_eq!(
                    c.reply_text_lossy(),
                    "ACCESS_REFUSED - Login was refused using authentication mechanism PLAIN. \
                     For details see the broker logfile."
                );
                assert_eq!((c.class_id, c.method_id), (0, 0));
            } else {
                assert_eq!(names(&methods), ["connection.start"], "{name}");
            }
            continue;
        }
        assert_eq!(
            names(&methods),
            [
                "connection.start",
                "connection.tune",
                "connection.open-ok",
                "connection.close-ok"
            ],
            "{name}"
        );
        let tune = Tune {
            channel_max: 2047,
            frame_max: 131072,
            heartbeat: 60,
        };
        assert_eq!(methods[1].1, ConnectionMethod::Tune(tune));
        assert_eq!(
            methods[2].1,
            ConnectionMethod::OpenOk {
                known_hosts: vec![]
            }
        );
    }
}

/// What the README says about each client's connection methods.
struct Client {
    file: &'static str,
    keys: &'static [&'static str],
    locale: &'static str,
    heartbeat: u16,
    vhost: &'static str,
    insist: bool,
    close: (u16, &'static str),
}

const CLIENTS: &[Client] = &[
    Client {
        file: "aiopika-connect",
        keys: &[
            "capabilities",
            "connection_name",
            "information",
            "platform",
            "product",
            "version",
        ],
        locale: "en_US",
        heartbeat: 60,
        vhost: "/",
        insist: false,
        close: (200, "normally closed"),
    },
    Client {
        file: "amqp091go-connect",
        keys: &["connection_name", "capabilities"],
        locale: "",
        heartbeat: 10,
        vhost: "/",
        insist: false,
        close: (200, "kthxbai"),
    },
    Client {
        file: "amqplib-connect",
        keys: &[
            "connection_name",
            "product",
            "version",
            "platform",
            "information",
            "capabilities",
        ],
        locale: "en_US",
        heartbeat: 60,
        vhost: "/",
        insist: false,
        close: (200, "Cheers, thanks"),
    },
    Client {
        file: "amqprs-connect",
        keys: &[
            "version",
            "capabilities",
            "product",
            "connection_name",
            "platform",
        ],
        locale: "en_US",
        heartbeat: 10,
        vhost: "/",
        insist: false,
        close: (200, ""),
    },
    Client {
        file: "amqptools-connect",
        keys: &[
            "product",
            "version",
            "platform",
            "copyright",
            "information",
            "capabilities",
        ],
        locale: "en_US",
        heartbeat: 0,
        vhost: "/",
        insist: true,
        close: (200, "200"),
    },
    Client {
        file: "java-connect",
        keys: &[
            "connection_name",
            "product",
            "copyright",
            "capabilities",
            "information",
            "version",
            "platform",
        ],
        locale: "en_US",
        heartbeat: 60,
        vhost: "/",
        insist: false,
        close: (200, "OK"),
    },
    Client {
        file: "kombu-connect",
        keys: &[
            "product",
            "product_version",
            "connection_name",
            "capabilities",
        ],
        locale: "en_US",
        heartbeat: 0,
        vhost: "/",
        insist: false,
        close: (0, ""),
    },
    Client {
        file: "lapin-connect",
        keys: &[
            "capabilities",
            "connection_name",
            "platform",
            "product",
            "version",
        ],
        locale: "en_US",
        heartbeat: 60,
        vhost: "/",
        insist: false,
        close: (200, "OK"),
    },
    Client {
        file: "lapin-vhost-compat-a",
        keys: &[
            "capabilities",
            "connection_name",
            "platform",
            "product",
            "version",
        ],
        locale: "en_US",
        heartbeat: 60,
        vhost: "compat-a",
        insist: false,
        close: (200, "OK"),
    },
    Client {
        file: "pika-connect",
        keys: &[
            "product",
            "platform",
            "capabilities",
            "information",
            "version",
            "connection_name",
        ],
        locale: "en_US",
        heartbeat: 60,
        vhost: "/",
        insist: true,
        close: (200, "Normal shutdown"),
    },
    Client {
        file: "pika-vhost-compat-a",
        keys: &[
            "product",
            "platform",
            "capabilities",
            "information",
            "version",
            "connection_name",
        ],
        locale: "en_US",
        heartbeat: 60,
        vhost: "compat-a",
        insist: true,
        close: (200, "Normal shutdown"),
    },
    Client {
        file: "rabbitmqc-connect",
        keys: &[
            "product",
            "version",
            "platform",
            "copyright",
            "information",
            "capabilities",
            "connection_name",
        ],
        locale: "en_US",
        heartbeat: 60,
        vhost: "/",
        insist: true,
        close: (200, "200"),
    },
];

fn read(file: &str) -> Vec<u8> {
    std::fs::read(fixture_dir().join(file)).expect("fixture")
}

#[test]
fn client_files() {
    for c in CLIENTS {
        let file = format!("{}.client.bin", c.file);
        let data = read(&file);
        let methods = decode_all(&file, frame_stream(&file, &data));
        assert_eq!(
            names(&methods),
            [
                "connection.start-ok",
                "connection.tune-ok",
                "connection.open",
                "connection.close"
            ],
            "{file}"
        );
        let ConnectionMethod::StartOk(s) = &methods[0].1 else {
            unreachable!()
        };
        let keys: Vec<String> = s
            .client_properties
            .iter()
            .map(|(k, _)| String::from_utf8_lossy(k).into_owned())
            .collect();
        assert_eq!(keys, c.keys, "{file}: client-properties key order");
        assert_eq!(s.mechanism, b"PLAIN", "{file}");
        assert_eq!(s.response, b"\0guest\0guest", "{file}");
        assert_eq!(s.locale, c.locale.as_bytes(), "{file}");
        let client = c.file.split('-').next().unwrap();
        let connection_name = s
            .client_properties
            .get("connection_name")
            .and_then(FieldValue::as_bytes);
        if client == "amqptools" {
            assert_eq!(connection_name, None);
        } else {
            assert_eq!(
                connection_name,
                Some(format!("compat-{client}").as_bytes()),
                "{file}"
            );
        }
        assert_eq!(
            methods[1].1,
            ConnectionMethod::TuneOk(Tune {
                channel_max: 2047,
                frame_max: 131072,
                heartbeat: c.heartbeat
            }),
            "{file}"
        );
        assert_eq!(
            methods[2].1,
            ConnectionMethod::Open(Open {
                vhost: c.vhost.into(),
                capabilities: vec![],
                insist: c.insist
            }),
            "{file}"
        );
        let ConnectionMethod::Close(close) = &methods[3].1 else {
            unreachable!()
        };
        assert_eq!(
            (close.reply_code, close.reply_text_lossy().as_str()),
            c.close,
            "{file}"
        );
        assert_eq!((close.class_id, close.method_id), (0, 0));
    }
}

#[test]
fn wrong_password_clients() {
    for file in [
        "pika-wrong-password.client.bin",
        "amqprs-wrong-password.client.bin",
    ] {
        let data = read(file);
        let methods = decode_all(file, frame_stream(file, &data));
        assert_eq!(names(&methods), ["connection.start-ok"], "{file}");
        let ConnectionMethod::StartOk(s) = &methods[0].1 else {
            unreachable!()
        };
        assert_eq!(s.response, b"\0guest\0guest-wrong");
        let text = format!("{s:?}");
        assert!(
            text.contains("<redacted, 18 bytes>") && !text.contains("guest"),
            "{text}"
        );
    }
    // amqprs uses a hash map: its key order differs between the two runs,
    // and each is kept as sent.
    let file = "amqprs-wrong-password.client.bin";
    let data = read(file);
    let methods = decode_all(file, frame_stream(file, &data));
    let ConnectionMethod::StartOk(s) = &methods[0].1 else {
        unreachable!()
    };
    let keys: Vec<&[u8]> = s.client_properties.iter().map(|(k, _)| k).collect();
    let expected: [&[u8]; 5] = [
        b"capabilities",
        b"platform",
        b"product",
        b"connection_name",
        b"version",
    ];
    assert_eq!(keys, expected);
}

#[test]
fn scanner_agrees_at_every_split_point() {
    for (name, data) in fixtures() {
        let stream = frame_stream(&name, &data);
        let walk = reference_walk(stream, PROXY_MAX_TOTAL);
        assert_eq!(walk.outcome, Ok(stream.len()), "{name}");
        for split in 0..=stream.len() {
            check_scanner(stream, PROXY_MAX_TOTAL, &walk, &[split], false);
        }
        // Three pieces, a sample of cut pairs, boundaries checked.
        for a in (0..stream.len()).step_by(7) {
            check_scanner(stream, PROXY_MAX_TOTAL, &walk, &[a, 13], true);
        }
        check_scanner(stream, PROXY_MAX_TOTAL, &walk, &vec![1; stream.len()], true);
    }
}
