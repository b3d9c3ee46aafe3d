//! The kit the integration tests (`tests/`) and the load harness
//! (`benches/`) share: fake brokers, a raw AMQP 0-9-1 client with its own
//! hand-written encoder and decoder, and helpers that wait on a condition
//! with a deadline instead of sleeping a fixed time.
//!
//! - [`wire`]: frames and the connection/channel/basic methods, encoded and
//!   decoded from the spec, no I/O.
//! - [`raw`]: a blocking client connection whose every read has a deadline,
//!   and a client handshake built from [`wire`].
//! - [`broker`]: the scripted fake broker of the byte-level tests (exact
//!   handshake bytes, recording, and misbehaving peers).
//! - [`load`]: the load-sink broker and the pre-encoded frames of the
//!   benchmark harness.
//! - [`wait`]: `wait_until`, `poll_until` and their async twins.
//! - [`ports`]: free ports, never the same one twice in a process.
//!
//! It never imports the crate under test (so a codec bug cannot hide in
//! both the proxy and its tests) and never decides whether the proxy is
//! right: it plays peers, records, and leaves the verdict to the test.

pub mod broker;
pub mod load;
pub mod ports;
pub mod raw;
pub mod wait;
pub mod wire;
