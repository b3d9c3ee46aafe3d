//! Hitless upgrade: a new process takes over a running one's listening
//! sockets and configuration over its control socket, then the old one
//! stops accepting without losing a connection and drains.
//!
//! - [`wire`]: the exchange's text and marker bytes, pure;
//! - [`fds`]: passing descriptors with `SCM_RIGHTS`;
//! - [`exchange`]: both ends of the exchange on a Unix stream;
//! - [`plan`]: which new shard accepts on which handed-over socket;
//! - [`accept_stop`]: stopping an accept loop on a shared socket without
//!   cancelling an accept in flight.
//!
//! This module never starts shards, applies configuration or runs a drain:
//! the supervisor, control server and shards call into it. See
//! docs/deployment.md#upgrading-without-refusing-connections.

pub mod accept_stop;
pub mod exchange;
pub mod fds;
pub mod plan;
pub mod wire;

pub use accept_stop::{
    complete_pending_accepts, release_listeners, AcceptGate, AcceptStopError, DummyClients,
};
pub use exchange::{
    receive_handoff, release, request_handoff, send_handoff, HandoffError, Received,
};
pub use wire::{HandedListener, Handoff};
