//! Fuzz target: the AMQP 0-9-1 frame layer (spec §4.2.3) — `decode_frame`,
//! `whole_frame_len` and the pass-through `FrameScanner` over arbitrary
//! bytes, cut into chunks in several ways. Holds no logic of its own (never
//! diverges from the stable replay test): it only calls
//! `amqpprox::codec::fuzz_check::frame_decode`, which panics on a broken
//! invariant.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    amqpprox::codec::fuzz_check::frame_decode(data);
});
