//! Fuzz target: connection-class methods (AMQP 0-9-1 §1.4.2, §4.2.4) and
//! field tables (§4.2.5.5) over arbitrary bytes; whatever decodes must
//! re-encode to the same bytes and decode again. Holds no logic of its own
//! (never diverges from the stable replay test): it only calls
//! `amqpprox::codec::fuzz_check::method_decode`, which panics on a broken
//! invariant.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    amqpprox::codec::fuzz_check::method_decode(data);
});
