//! amqpprox: an AMQP 0.9.1 proxy for RabbitMQ, thread-per-core on io_uring.
//!
//! The library holds every part of the proxy; `src/main.rs` only wires them
//! together. Sans-I/O parts (codec, handshake, config, routing, control
//! grammar) never import glommio; the shard and session modules are where
//! sockets and tasks live. See docs/architecture.md.

pub mod auth;
pub mod cli;
pub mod codec;
pub mod config;
pub mod control;
pub mod dns_watch;
pub mod fdlimit;
pub mod fuzzing;
pub mod handoff;
pub mod handshake;
pub mod health;
pub mod hostnames;
pub mod limits;
pub mod logging;
pub mod net;
pub mod proxy_protocol;
pub mod routing;
pub mod session;
pub mod shard;
pub mod stats;
pub mod stream;
pub mod streamproto;
pub mod supervisor;
pub mod systemd;
pub mod tls;
