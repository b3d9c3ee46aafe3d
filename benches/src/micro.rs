//! Micro-benchmarks of the proxy's sans-I/O hot code (`--micro`): the
//! pass-through `FrameScanner` over many 1 KB publish messages and over
//! 10 MB messages of full-size body frames (GB/s), and whole handshakes
//! through `ClientHandshake` alone and followed by the `BrokerHandshake`
//! replay (handshakes/s).
//!
//! Owns the inputs (built once, outside the timed loops) and the timing:
//! `Instant` around many iterations, results through `black_box` so the
//! optimiser cannot drop the work. Never does I/O in a timed loop and never
//! uses the network.

use amqpprox::codec::FrameScanner;
use amqpprox::handshake::{BrokerHandshake, BrokerProgress, ClientHandshake, ClientProgress};
use amqpprox_testkit::load::frames;
use anyhow::{bail, Result};
use std::hint::black_box;
use std::time::{Duration, Instant};

/// The proxy's frame limit on the data path: frame-max plus header and end.
const SCAN_MAX: u32 = frames::FRAME_MAX + 8;
/// The read size the scanner sees per call on the data path.
const CHUNK: usize = 64 * 1024;

/// One measured result.
#[derive(Debug, serde::Serialize)]
pub struct MicroResult {
    pub name: String,
    pub value: f64,
    pub unit: &'static str,
    pub iterations: u64,
}

/// Runs `f` repeatedly for at least `budget` (and at least 3 times);
/// returns (iterations, seconds).
fn time(budget: Duration, mut f: impl FnMut()) -> (u64, f64) {
    f(); // warm caches and lazily built statics
    let start = Instant::now();
    let mut n = 0u64;
    while n < 3 || start.elapsed() < budget {
        f();
        n += 1;
    }
    (n, start.elapsed().as_secs_f64())
}

/// Scans `buf` in `chunk`-sized pieces; returns the frame count.
fn scan(buf: &[u8], chunk: usize) -> Result<u64> {
    let mut scanner = FrameScanner::new(SCAN_MAX);
    let mut frames = 0u64;
    for piece in buf.chunks(chunk) {
        if let Err(e) = scanner.scan(black_box(piece), |ev| {
            frames += 1;
            black_box(ev);
        }) {
            bail!("scanner rejected the benchmark input: {e}");
        }
    }
    Ok(frames)
}

fn scan_bench(name: &str, buf: &[u8], chunk: usize, budget: Duration) -> Result<MicroResult> {
    let expected = scan(buf, chunk)?;
    let mut bad = false;
    let (n, secs) = time(budget, || bad |= scan(buf, chunk).ok() != Some(expected));
    if bad {
        bail!("{name}: frame count changed between iterations");
    }
    Ok(MicroResult {
        name: name.into(),
        value: buf.len() as f64 * n as f64 / secs / 1e9,
        unit: "GB/s",
        iterations: n,
    })
}

/// The client's bytes of one handshake, in the reads a client would cause.
fn client_reads() -> [Vec<u8>; 3] {
    [
        frames::PROTOCOL_HEADER.to_vec(),
        frames::start_ok(),
        frames::tune_ok_and_open(),
    ]
}

/// One whole client-side handshake; true when it reached `Opened`.
fn client_handshake(
    reads: &[Vec<u8>; 3],
    out: &mut Vec<u8>,
) -> Option<Box<amqpprox::handshake::ClientHello>> {
    let mut hs = ClientHandshake::new();
    out.clear();
    hs.receive(&reads[0], out).ok()?;
    hs.receive(&reads[1], out).ok()?;
    match hs.receive(&reads[2], out) {
        Ok(ClientProgress::Opened(hello)) => Some(hello),
        _ => None,
    }
}

fn handshake_benches(budget: Duration) -> Result<Vec<MicroResult>> {
    let reads = client_reads();
    let mut out = Vec::with_capacity(1024);
    let Some(hello) = client_handshake(&reads, &mut out) else {
        bail!("ClientHandshake did not reach Opened on the harness's handshake bytes");
    };
    let mut failed = false;
    let (n, secs) = time(budget, || {
        failed |= black_box(client_handshake(black_box(&reads), &mut out)).is_none()
    });
    let client = MicroResult {
        name: "client handshake".into(),
        value: n as f64 / secs,
        unit: "handshakes/s",
        iterations: n,
    };

    let broker_reads = [
        frames::broker_start(),
        frames::broker_tune(),
        frames::reply(0, frames::ids::CONNECTION_OPEN_OK, &[0]),
    ];
    let additions = [
        ("amqpprox_client", "127.0.0.1:40000"),
        ("amqpprox_host", "bench"),
    ];
    let replay = |hello: &amqpprox::handshake::ClientHello, out: &mut Vec<u8>| -> bool {
        out.clear();
        let mut hs = BrokerHandshake::start(hello, &additions, out);
        let mut opened = false;
        for read in &broker_reads {
            match hs.receive(read, out) {
                Ok(BrokerProgress::Open { to_client }) => opened = !black_box(to_client).is_empty(),
                Ok(BrokerProgress::NeedMore) => {}
                Err(_) => return false,
            }
        }
        opened
    };
    if !replay(&hello, &mut out) {
        bail!("BrokerHandshake did not reach Open on the dummy broker's bytes");
    }
    let mut out2 = Vec::with_capacity(1024);
    let (m, secs2) = time(budget, || match client_handshake(&reads, &mut out) {
        Some(hello) => failed |= !replay(&hello, &mut out2),
        None => failed = true,
    });
    if failed {
        bail!("a handshake failed during the timed loop");
    }
    let both = MicroResult {
        name: "client + broker handshake".into(),
        value: m as f64 / secs2,
        unit: "handshakes/s",
        iterations: m,
    };
    Ok(vec![client, both])
}

/// Runs every micro-benchmark; `quick` shortens each to ~0.2 s.
pub fn run(quick: bool) -> Result<Vec<MicroResult>> {
    let budget = Duration::from_millis(if quick { 200 } else { 2000 });
    let (small, _) = frames::message_batch(1024, 10_000);
    let (large, _) = frames::message_batch(10 * 1024 * 1024, 2);
    let mut results = vec![
        scan_bench("scan 1 KB publishes, 64 KiB reads", &small, CHUNK, budget)?,
        scan_bench(
            "scan 1 KB publishes, one slice",
            &small,
            small.len(),
            budget,
        )?,
        scan_bench("scan 10 MB bodies, 64 KiB reads", &large, CHUNK, budget)?,
    ];
    results.extend(handshake_benches(budget)?);
    Ok(results)
}

/// The results as printed.
pub fn table(results: &[MicroResult]) -> String {
    let width = results.iter().map(|r| r.name.len()).max().unwrap_or(0);
    let mut out: String = results
        .iter()
        .map(|r| {
            format!(
                "{:<width$}  {:>12.3} {:<13} ({} iterations)\n",
                r.name, r.value, r.unit, r.iterations
            )
        })
        .collect();
    out += "(the scanner skips payload bytes without reading them, so its GB/s\n\
            grows with frame size: it measures per-frame and per-read cost)\n";
    out
}
