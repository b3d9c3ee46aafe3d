//! Replays the cargo-fuzz seed corpus (`tests/fuzz/corpus/<target>/`) and
//! any crash artifacts (`tests/fuzz/artifacts/<target>/`) through the same
//! checks the fuzz targets run, so every `cargo test` on stable re-proves
//! the codec's invariants (AMQP 0-9-1 §4.2.3-§4.2.5), the handshakes'
//! independence from how reads are split, and the PROXY header parser's
//! (`amqpprox::fuzzing`) on them.
//!
//! Also owns the seed corpus itself: it is derived from the handshake
//! fixtures by `seed_corpus()` below; `cargo test --test fuzz_corpus --
//! --ignored` rewrites it. The normal run only checks every seed is present;
//! it never writes files and never fails because a fuzzer added inputs.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use amqpprox::codec::fuzz_check::{frame_decode, method_decode};
use amqpprox::codec::{
    decode_frame, str_field, ConnectionMethod, FieldTable, FieldValue, Open, FRAME_BODY,
    FRAME_HEARTBEAT, HEARTBEAT_FRAME,
};
use amqpprox::fuzzing;

/// A fuzz target's check: panics when an invariant is broken.
type Check = fn(&[u8]);

/// Every target and the check it runs.
const CHECKS: [(&str, Check); 9] = [
    ("frame_decode", frame_decode),
    ("method_decode", method_decode),
    ("frame_scanner", fuzzing::frame_scanner),
    ("field_table", fuzzing::field_table),
    ("client_handshake", fuzzing::client_handshake),
    ("broker_handshake", fuzzing::broker_handshake),
    ("transparent_handshake", fuzzing::transparent_handshake),
    ("proxy_header", fuzzing::proxy_header),
    ("control_grammar", amqpprox::control::grammar::fuzz_check),
];

/// The fewest seeds a target's corpus must hold: the codec's two have many
/// frames per fixture; the others one or a few inputs per fixture.
fn min_corpus(target: &str) -> usize {
    match target {
        "frame_decode" | "method_decode" => 50,
        _ => 10,
    }
}

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests")
}

fn run_target(target: &str, data: &[u8]) {
    match CHECKS.iter().find(|(name, _)| *name == target) {
        Some((_, check)) => check(data),
        // An artifact filed under an unknown name: run everything.
        None => {
            for (_, check) in CHECKS {
                check(data);
            }
        }
    }
}

fn files_in(dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut files: Vec<PathBuf> = entries
        .map(|e| e.expect("directory entry").path())
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    files
}

fn replay_dir(target: &str, dir: &Path) -> usize {
    let files = files_in(dir);
    for file in &files {
        let data = std::fs::read(file).expect("corpus file");
        let outcome = std::panic::catch_unwind(|| run_target(target, &data));
        assert!(outcome.is_ok(), "invariant broken by {}", file.display());
    }
    files.len()
}

#[test]
fn replay_corpus_and_artifacts() {
    for (target, _) in CHECKS {
        let n = replay_dir(target, &root().join("fuzz/corpus").join(target));
        let min = min_corpus(target);
        assert!(n >= min, "only {n} corpus files for {target}, {min} wanted");
    }
    // cargo-fuzz files crashes under artifacts/<target>/; absent normally.
    if let Ok(dirs) = std::fs::read_dir(root().join("fuzz/artifacts")) {
        for dir in dirs {
            let dir = dir.expect("directory entry").path();
            let target = dir.file_name().unwrap().to_string_lossy().into_owned();
            replay_dir(&target, &dir);
        }
    }
}

/// The handshake seeds from successful captures reach `Open` and those from
/// refused logins the broker's close: the split checks run over whole
/// handshakes, not only over inputs that stop early.
#[test]
fn handshake_seeds_reach_the_end_of_the_handshake() {
    let seeds = seed_corpus();
    for target in ["client_handshake", "transparent_handshake"] {
        for (name, data) in &seeds[target] {
            let ending = fuzzing::handshake_ending(target, data);
            // A refused login's client stops after StartOk; relayed, the
            // broker's Close ends it (pika asks for one; amqprs does not, and
            // RabbitMQ only drops its socket).
            let expected = match name.as_str() {
                n if n.starts_with("cut-") => "stalled",
                n if n.contains("wrong-password") && target == "client_handshake" => "stalled",
                "pika-wrong-password" => "closed",
                "amqprs-wrong-password" => "stalled",
                _ => "opened",
            };
            assert_eq!(ending, expected, "{target}/{name}");
        }
    }
}

#[test]
fn seed_corpus_is_committed() {
    for (target, seeds) in seed_corpus() {
        let dir = root().join("fuzz/corpus").join(target);
        for (name, data) in seeds {
            let on_disk = std::fs::read(dir.join(&name)).unwrap_or_default();
            assert!(
                on_disk == data,
                "seed {target}/{name} is missing or stale; run \
                 `cargo test --test fuzz_corpus -- --ignored` to regenerate"
            );
        }
    }
}

/// Rewrites the seed files (fuzzer-found inputs in the same directories
/// are left alone).
#[test]
#[ignore = "writes tests/fuzz/corpus; run on purpose"]
fn regenerate_seed_corpus() {
    for (target, seeds) in seed_corpus() {
        let dir = root().join("fuzz/corpus").join(target);
        std::fs::create_dir_all(&dir).expect("create corpus dir");
        for (name, data) in seeds {
            std::fs::write(dir.join(name), data).expect("write seed");
        }
    }
}

/// Seeds per target, as name -> bytes, each content only once.
fn seed_corpus() -> BTreeMap<&'static str, BTreeMap<String, Vec<u8>>> {
    let mut frames = Seeds::default();
    let mut methods = Seeds::default();
    let fixtures = root().join("fixtures/handshakes");
    for path in files_in(&fixtures)
        .into_iter()
        .filter(|p| p.extension().is_some_and(|e| e == "bin"))
    {
        let stem = path
            .file_stem()
            .unwrap()
            .to_string_lossy()
            .replace(".bin", "");
        let data = std::fs::read(&path).expect("fixture");
        let stream = if stem.ends_with(".client") {
            &data[8..]
        } else {
            &data[..]
        };
        frames.add(format!("stream-{stem}"), stream);
        let mut off = 0;
        let mut n = 0;
        while let Ok(Some((frame, used))) = decode_frame(&stream[off..], 150_000) {
            let bytes = &stream[off..off + used];
            n += 1;
            frames.add(format!("frame-{stem}-{n}"), bytes);
            methods.add(format!("payload-{stem}-{n}"), frame.payload);
            if n == 1 {
                // A frame cut short, a bad end octet, and payloads cut short.
                frames.add(format!("cut-{stem}"), &bytes[..used / 2]);
                let mut bad = bytes.to_vec();
                bad[used - 1] = 0x00;
                frames.add(format!("badend-{stem}"), &bad);
                methods.add(
                    format!("cut-{stem}"),
                    &frame.payload[..frame.payload.len() / 2],
                );
                methods.add(format!("extra-{stem}"), &[frame.payload, b"\x00"].concat());
            }
            match ConnectionMethod::decode(frame.payload) {
                // The bare field tables, for FieldTable::decode.
                Ok(ConnectionMethod::StartOk(_)) => {
                    methods.add(format!("table-{stem}"), &frame.payload[4..])
                }
                Ok(ConnectionMethod::Start(_)) => {
                    methods.add(format!("table-{stem}"), &frame.payload[6..])
                }
                _ => {}
            }
            off += used;
        }
    }
    // Synthetic frames: heartbeat, oversized header, empty, garbage.
    frames.add("heartbeat".into(), &HEARTBEAT_FRAME);
    frames.add("oversize".into(), &[FRAME_BODY, 0, 1, 0, 2, 0x49, 0xf0]);
    frames.add("empty".into(), &[]);
    frames.add("http".into(), b"GET / HTTP/1.1\r\n\r\n");
    // Found by fuzzing: a header announcing u32::MAX payload bytes, whose
    // saturated size equals a u32::MAX limit.
    frames.add(
        "size-u32-max".into(),
        &[FRAME_BODY, 0, 0, 0xff, 0xff, 0xff, 0xff, 0xff],
    );
    let mut two = HEARTBEAT_FRAME.to_vec();
    amqpprox::codec::encode_frame(FRAME_HEARTBEAT, 0, &[], &mut two);
    two.extend_from_slice(&[FRAME_BODY, 0, 1, 0, 0]);
    frames.add("two-heartbeats-and-partial".into(), &two);
    // Synthetic methods and tables: every field type, quirks.
    let mut all = FieldTable::new();
    for (k, v) in [
        ("t", FieldValue::Bool(true)),
        ("b", FieldValue::I8(-1)),
        ("B", FieldValue::U8(255)),
        ("s", FieldValue::I16(-2)),
        ("U", FieldValue::I16U(-3)),
        ("u", FieldValue::U16(4)),
        ("I", FieldValue::I32(-5)),
        ("i", FieldValue::U32(6)),
        ("l", FieldValue::I64(-7)),
        ("L", FieldValue::U64(8)),
        ("f", FieldValue::F32(f32::NAN)),
        ("d", FieldValue::F64(0.5)),
        (
            "D",
            FieldValue::Decimal {
                scale: 2,
                value: 314,
            },
        ),
        ("S", str_field("long string")),
        (
            "A",
            FieldValue::Array(vec![FieldValue::Void, FieldValue::U8(1)]),
        ),
        ("T", FieldValue::Timestamp(1_700_000_000)),
        ("F", FieldValue::Table(FieldTable::new())),
        ("V", FieldValue::Void),
        ("x", FieldValue::Bytes(vec![0, 1, 2])),
    ] {
        all.push(k, v);
    }
    let mut bytes = Vec::new();
    all.encode(&mut bytes);
    methods.add("table-all-types".into(), &bytes);
    methods.add("table-bool-7".into(), b"\x00\x00\x00\x04\x01at\x07");
    methods.add("table-unknown-tag".into(), b"\x00\x00\x00\x03\x01aQ");
    methods.add("open-bits-3".into(), b"\x00\x0a\x00\x28\x01/\x00\x03");
    methods.add(
        "open-bad-utf8".into(),
        b"\x00\x0a\x00\x28\x02\xff\xfe\x00\x00",
    );
    for m in [
        ConnectionMethod::Secure {
            challenge: b"challenge".to_vec(),
        },
        ConnectionMethod::SecureOk {
            response: b"\0user\0pass".to_vec(),
        },
        ConnectionMethod::Blocked {
            reason: b"low on memory".to_vec(),
        },
        ConnectionMethod::Unblocked,
        ConnectionMethod::Open(Open {
            vhost: "vh".into(),
            capabilities: vec![],
            insist: false,
        }),
    ] {
        let mut p = Vec::new();
        m.encode_payload(&mut p);
        methods.add(format!("method-{}", m.name().replace('.', "-")), &p);
    }
    let mut all = BTreeMap::from([("frame_decode", frames.0), ("method_decode", methods.0)]);
    all.extend(new_target_seeds(&fixtures, &all["method_decode"]));
    all
}

/// Seeds for the targets of `amqpprox::fuzzing`, from the handshake
/// fixtures (each client's stream, each broker's, and the pairs) and a few
/// synthetic inputs. The first byte of most inputs picks the read split.
fn new_target_seeds(
    fixtures: &Path,
    methods: &BTreeMap<String, Vec<u8>>,
) -> BTreeMap<&'static str, BTreeMap<String, Vec<u8>>> {
    let (mut scanner, mut tables, mut client, mut broker, mut relay, mut proxy) = (
        Seeds::default(),
        Seeds::default(),
        Seeds::default(),
        Seeds::default(),
        Seeds::default(),
        Seeds::default(),
    );
    let with_seed = |seed: u8, parts: &[&[u8]]| -> Vec<u8> {
        let mut v = vec![seed];
        for p in parts {
            v.extend_from_slice(p);
        }
        v
    };
    for (i, path) in files_in(fixtures)
        .into_iter()
        .filter(|p| p.to_string_lossy().ends_with(".client.bin"))
        .enumerate()
    {
        let name = path
            .file_name()
            .unwrap()
            .to_string_lossy()
            .replace(".client.bin", "");
        let from_client = std::fs::read(&path).expect("fixture");
        let from_broker =
            std::fs::read(path.with_file_name(format!("{name}.broker.bin"))).expect("fixture pair");
        let seed = 1 + i as u8 * 17;
        scanner.add(
            format!("client-{name}"),
            &with_seed(seed, &[&from_client[8..]]),
        );
        scanner.add(format!("broker-{name}"), &with_seed(seed, &[&from_broker]));
        client.add(name.clone(), &with_seed(seed, &[&from_client]));
        // A client cut short in the middle of its handshake.
        client.add(
            format!("cut-{name}"),
            &with_seed(seed, &[&from_client[..from_client.len() / 3]]),
        );
        broker.add(name.clone(), &with_seed(seed, &[&from_broker]));
        let client_part = &from_client[8..];
        let len = u16::try_from(client_part.len()).expect("small fixture");
        relay.add(
            name.clone(),
            &with_seed(seed, &[&len.to_be_bytes(), client_part, &from_broker]),
        );
    }
    for (name, bytes) in methods.iter().filter(|(n, _)| n.starts_with("table-")) {
        tables.add(name.clone(), bytes);
    }
    let v4 = |a: [u8; 4], p: u16| std::net::SocketAddr::from((a, p));
    let v6: std::net::SocketAddr = "[2001:db8::1]:5672".parse().unwrap();
    for (name, bytes) in [
        (
            "v1-tcp4",
            amqpprox::proxy_protocol::v1(v4([10, 0, 0, 1], 40000), v4([10, 0, 0, 2], 5672)),
        ),
        (
            "v2-tcp4",
            amqpprox::proxy_protocol::v2(v4([10, 0, 0, 1], 40000), v4([10, 0, 0, 2], 5672)),
        ),
        ("v1-tcp6", amqpprox::proxy_protocol::v1(v6, v6)),
        (
            "v2-mixed",
            amqpprox::proxy_protocol::v2(v4([192, 168, 1, 1], 1), v6),
        ),
        ("v1-unknown", b"PROXY UNKNOWN\r\n".to_vec()),
        ("v2-local", b"\r\n\r\n\0\r\nQUIT\n\x20\x00\x00\x00".to_vec()),
        (
            "v1-then-amqp",
            b"PROXY TCP4 1.2.3.4 5.6.7.8 1000 5672\r\nAMQP\x00\x00\x09\x01".to_vec(),
        ),
        (
            "v1-leading-zero-port",
            b"PROXY TCP4 1.2.3.4 5.6.7.8 01 2\r\n".to_vec(),
        ),
        ("v2-tlv", {
            let mut h = amqpprox::proxy_protocol::v2(v4([1, 1, 1, 1], 1), v4([2, 2, 2, 2], 2));
            h[15] += 3;
            h.extend_from_slice(&[0x04, 0x00, 0x00]);
            h
        }),
        ("amqp-header", b"AMQP\x00\x00\x09\x01".to_vec()),
        ("tls-hello", vec![0x16, 0x03, 0x01, 0x00, 0xa5, 0x01]),
        ("addresses-37", (0u8..40).collect()),
    ] {
        proxy.add(name.to_string(), &bytes);
    }
    BTreeMap::from([
        ("frame_scanner", scanner.0),
        ("field_table", tables.0),
        ("client_handshake", client.0),
        ("broker_handshake", broker.0),
        ("transparent_handshake", relay.0),
        ("proxy_header", proxy.0),
    ])
}

#[derive(Default)]
struct Seeds(BTreeMap<String, Vec<u8>>);

impl Seeds {
    /// Adds a seed unless the same bytes are already there (the broker's
    /// frames are identical in most fixtures).
    fn add(&mut self, name: String, data: &[u8]) {
        if !self.0.values().any(|v| v == data) {
            self.0.insert(name, data.to_vec());
        }
    }
}
