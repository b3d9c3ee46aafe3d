//! Fuzz target: the control-line grammar (`amqpprox::control::grammar`)
//! over arbitrary bytes taken as text. Parsing must never panic, and a
//! parsed command must print as a line that parses back to the same
//! command. Holds no logic of its own (never diverges from the stable
//! replay test `tests/control_grammar_corpus.rs`): it only calls
//! `amqpprox::control::grammar::fuzz_check`, which panics on a broken
//! invariant.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    amqpprox::control::grammar::fuzz_check(data);
});
