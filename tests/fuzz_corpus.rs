//! Replays the cargo-fuzz seed corpus (`tests/fuzz/corpus/<target>/`) and
//! any crash artifacts (`tests/fuzz/artifacts/<target>/`) through the same
//! checks the fuzz targets run, so every `cargo test` on stable re-proves
//! the codec's invariants (AMQP 0-9-1 §4.2.3-§4.2.5) on them.
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

const TARGETS: [&str; 2] = ["frame_decode", "method_decode"];

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests")
}

fn run_target(target: &str, data: &[u8]) {
    match target {
        "frame_decode" => frame_decode(data),
        "method_decode" => method_decode(data),
        // An artifact filed under an unknown name: run everything.
        _ => {
            frame_decode(data);
            method_decode(data);
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
    for target in TARGETS {
        let n = replay_dir(target, &root().join("fuzz/corpus").join(target));
        assert!(n >= 50, "only {n} corpus files for {target}");
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
    BTreeMap::from([("frame_decode", frames.0), ("method_decode", methods.0)])
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
