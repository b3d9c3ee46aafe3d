//! The load side of the benchmark harness: the load-sink broker
//! ([`broker`]) and the frames the load clients send, pre-encoded once
//! ([`frames`]).
//!
//! Both are built on [`crate::wire`], the same encoder the byte-level
//! tests use. Nothing here measures or reports; that stays in `benches/`.

pub mod broker;
pub mod frames;
