//! Fuzz target `frame_scanner`: see `amqpprox::fuzzing::frame_scanner` for the input layout
//! and the invariants. Holds no logic of its own (never diverges from the
//! stable replay in tests/fuzz_corpus.rs): it only calls that function,
//! which panics on a broken invariant.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    amqpprox::fuzzing::frame_scanner(data);
});
