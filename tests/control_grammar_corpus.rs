//! Replays the `control_grammar` fuzz corpus (`tests/fuzz/corpus/
//! control_grammar/`) and any crash artifacts (`tests/fuzz/artifacts/
//! control_grammar/`) through the check the fuzz target runs, so every
//! `cargo test` on stable re-proves the grammar's invariants on them: no
//! panic, and a printed command parses back to itself.
//!
//! Also owns the seed corpus: one control line a file, from [`SEEDS`];
//! `cargo test --test control_grammar_corpus -- --ignored` rewrites it. The
//! normal run only checks every seed is present; it never writes files and
//! never fails because a fuzzer added inputs. Needs no proxy and no broker.

use amqpprox::control::grammar::{fuzz_check, parse};
use std::path::{Path, PathBuf};

/// Valid and invalid lines of every verb, typos included.
const SEEDS: &[&str] = &[
    "HELP",
    "EXIT",
    "FROB x y",
    "",
    "   ",
    "BACKEND ADD b1 dc1 127.0.0.1 5672",
    "backend add b2 dc2 127.0.0.1 5673 tls send-proxy",
    "BACKEND ADD_DNS b3 dc1 rabbit.example 5672 SEND-PROXY-V2 TLS",
    "BACKEND ADD x dc host 5671 TSL",
    "BACKEND ADD x dc host 5671 SEND-PROXY-V3",
    "BACKEND ADD b dc h 0",
    "BACKEND ADD b dc h 65536",
    "BACKEND DELETE b1",
    "BACKEND DELETE",
    "BACKEND PRINT json",
    "BACKEND PRINT",
    "CONFIG DUMP",
    "CONFIG DUMP json",
    "CONN",
    "CONN json",
    "DATACENTER SET dc1",
    "DATACENTER SET",
    "DATACENTER PRINT JSON",
    "FARM ADD f round-robin b1 b2 b1",
    "FARM ADD_MANUAL f round-robin b1",
    "FARM ADD f bogus b1",
    "FARM PARTITION f datacenter-affinity",
    "FARM DELETE f",
    "FARM PRINT json",
    "LISTEN START 5672",
    "LISTEN START_SECURE 127.0.0.1:5671 PROXY",
    "LISTEN START [::1]:5672 proxy",
    "LISTEN START [fe80::1%2]:5672",
    "LISTEN STOP",
    "LISTEN STOP 5672",
    "LISTEN STOP 56x2",
    "LOG CONSOLE 3",
    "LOG FILE -7",
    "LOG CONSOLE 99999999999999999999",
    "MAP BACKEND / b1",
    "MAP FARM v1 f",
    "MAP UNMAP v1",
    "MAP DEFAULT f",
    "MAP REMOVE_DEFAULT",
    "MAP PRINT json",
    "MAPHOSTNAME DNS",
    "SESSION 1 PAUSE",
    "SESSION 18446744073709551615 FORCE_DISCONNECT",
    "SESSION +2 UNPAUSE",
    "SESSION 1 NAP",
    "STAT LISTEN json vhost=orders",
    "STAT LISTEN human all",
    "STAT LISTEN json frob=1",
    "STAT LISTEN json a=b=c",
    "STAT SEND 127.0.0.1 8125",
    "STAT STOP SEND",
    "STAT STOP send",
    "STAT ENABLE per-source",
    "STAT DISABLE PER-SOURCE",
    "TLS INGRESS KEY_FILE /etc/amqpprox/key.pem",
    "TLS EGRESS CA_CERT_FILE ca.pem",
    "TLS INGRESS VERIFY_MODE PEER FAIL_IF_NO_PEER_CERT CLIENT_ONCE",
    "TLS INGRESS VERIFY_MODE",
    "TLS EGRESS CIPHERS SET ECDHE-RSA-AES128-GCM-SHA256 !aNULL:@STRENGTH",
    "TLS EGRESS CIPHERS PRINT",
    "TLS SIDEWAYS KEY_FILE x",
    "TRACE VHOST /",
    "TRACE SOURCE ::1",
    "TRACE SESSION 12",
    "TRACE OFF",
    "TRACE PRINT",
    "VHOST PAUSE orders",
    "VHOST UNPAUSE orders",
    "VHOST FORCE_DISCONNECT orders",
    "VHOST PRINT",
    "AUTH PRINT",
    "LIMIT PRINT",
    "BACKEND\tPRINT",
    "BACKEND ADD b d\u{3000}h 1",
    "VHOST PAUSE caf\u{e9}\r\n",
    "BACKEND DRAIN b1",
    "BACKEND UNDRAIN",
    "backend undrain b1 extra",
];

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fuzz")
}

fn seed_name(i: usize) -> String {
    format!("seed-{i:03}")
}

fn replay_dir(dir: &Path) -> usize {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    let mut files: Vec<PathBuf> = entries
        .map(|e| e.expect("directory entry").path())
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    for file in &files {
        let data = std::fs::read(file).expect("corpus file");
        let outcome = std::panic::catch_unwind(|| fuzz_check(&data));
        assert!(outcome.is_ok(), "invariant broken by {}", file.display());
    }
    files.len()
}

#[test]
fn replay_corpus_and_artifacts() {
    let n = replay_dir(&root().join("corpus/control_grammar"));
    assert!(
        n >= SEEDS.len(),
        "only {n} corpus files for control_grammar"
    );
    replay_dir(&root().join("artifacts/control_grammar"));
}

#[test]
fn seed_corpus_is_committed() {
    let dir = root().join("corpus/control_grammar");
    for (i, line) in SEEDS.iter().enumerate() {
        let on_disk = std::fs::read(dir.join(seed_name(i))).unwrap_or_default();
        assert!(
            on_disk == line.as_bytes(),
            "seed {} ({line:?}) is missing or stale; run \
             `cargo test --test control_grammar_corpus -- --ignored` to regenerate",
            seed_name(i)
        );
    }
}

/// The seeds cover both outcomes, so the fuzzer starts from each.
#[test]
fn seeds_hold_commands_and_refusals() {
    let parsed = SEEDS.iter().filter(|l| parse(l).is_ok()).count();
    assert!(parsed >= 40, "{parsed} seeds parse");
    assert!(
        SEEDS.len() - parsed >= 12,
        "{} seeds are refused",
        SEEDS.len() - parsed
    );
}

/// Rewrites the seed files (fuzzer-found inputs in the same directory are
/// left alone).
#[test]
#[ignore = "writes tests/fuzz/corpus/control_grammar; run on purpose"]
fn regenerate_seed_corpus() {
    let dir = root().join("corpus/control_grammar");
    std::fs::create_dir_all(&dir).expect("create corpus dir");
    for (i, line) in SEEDS.iter().enumerate() {
        std::fs::write(dir.join(seed_name(i)), line).expect("write seed");
    }
}
