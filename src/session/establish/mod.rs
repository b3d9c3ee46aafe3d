//! Session establishment shared by both handshakes: everything between a
//! client whose protocol header arrived and a session ready for
//! pass-through that does not depend on who answered the client (the proxy
//! itself, or the broker through the transparent relay; docs/sessions.md).
//!
//! Owns: the typed refusals ([`refusal`]), connecting with failover
//! ([`connect::Candidates`]), the replay of a client's handshake to a broker
//! ([`replay`]), the client properties the proxy adds to `StartOk`, the
//! "Starting connection" log line, and the paused-vhost hold at `Open`.
//! The two handshake paths (`session::driver`, `session::transparent`) call
//! into this module; it never calls back into them. The limits and the auth
//! service ([`admission`]) run before [`connect::Candidates::next`]; a
//! per-backend outcome hook belongs beside its skip log. Runs on the
//! session's shard; never blocks.

pub mod admission;
pub mod connect;
pub mod refusal;
pub mod replay;

pub use connect::Candidates;
pub use refusal::{handshake_timed_out, hung_up, refuse, ClientGone, Reason, Refusal};

use super::control::Ending;
use super::{HandshakeKind, SessionInfo, ShardContext};
use crate::codec::reply_code;
use crate::session_log;
use crate::stream::Stream;
use log::Level;

/// Size of the reads during the handshakes (small: these are a few frames).
pub const HANDSHAKE_READ: usize = 4096;

/// A session whose broker said `OpenOk`.
pub struct Established {
    pub broker: Stream,
    /// Client bytes that followed its `Open`, still to go to the broker.
    pub pipelined: Vec<u8>,
    /// The heartbeat and frame-max the client agreed.
    pub heartbeat: u16,
    pub frame_max: u32,
    /// The broker's `OpenOk` and whatever followed it, already sent to the
    /// client: the pump's egress scanner must walk it to stay in step.
    pub sent_to_client: Vec<u8>,
}

/// The client properties the proxy adds to the `StartOk` it sends a
/// broker: who the client is, and which proxy listener and egress port
/// carry it. Taken once the broker connection exists (the egress port).
pub fn start_ok_additions(
    shard: &ShardContext,
    info: &SessionInfo,
    client: &Stream,
    listen_port: u16,
) -> [(&'static str, String); 2] {
    let egress_local = info.egress_local.get().map_or(0, |a| a.port());
    [
        (
            "amqpprox_client",
            client_endpoint(info.ingress_remote, client.is_tls()),
        ),
        (
            "amqpprox_host",
            format!("(:{listen_port}) {}:{egress_local}", shard.shared.hostname),
        ),
    ]
}

/// `host:port` of the client for `amqpprox_client`: its name once
/// `MAPHOSTNAME DNS` has resolved it (never waiting for that), else its IP;
/// then ` TLS` for a client on a `START_SECURE` listener, as the original.
fn client_endpoint(addr: std::net::SocketAddr, tls: bool) -> String {
    let endpoint = match crate::hostnames::hostname_for(addr.ip()) {
        Some(host) => format!("{host}:{}", addr.port()),
        None => addr.to_string(),
    };
    if tls {
        endpoint + " TLS"
    } else {
        endpoint
    }
}

/// Logs that the session's broker handshake starts, once the client's
/// connection name and the broker are both known.
pub fn log_starting(
    info: &SessionInfo,
    connection_name: &str,
    client: &Stream,
    kind: HandshakeKind,
) {
    session_log!(
        Level::Info,
        info,
        "Starting connection for: connectionName=\"{}\" tlsEnabled={} backend={} egress={} handshake={}",
        connection_name,
        if client.is_tls() { "secured" } else { "insecure" },
        info.backend.borrow(),
        MaybeAddr(info.egress_remote.get()),
        kind.name()
    );
}

/// An address, or nothing when there is none: formatted in place, so the
/// log line costs no string of its own.
struct MaybeAddr(Option<std::net::SocketAddr>);

impl std::fmt::Display for MaybeAddr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0 {
            Some(addr) => addr.fmt(f),
            None => Ok(()),
        }
    }
}

/// Whether the operator paused `vhost` (`VHOST PAUSE`), in the
/// configuration in force now.
pub fn vhost_paused(shard: &ShardContext, vhost: &str) -> bool {
    shard
        .shared
        .config
        .load()
        .config
        .paused_vhosts
        .contains(vhost)
}

/// Holds a session at `Open` while it or its vhost is paused, so that it is
/// routed by the mapping in force when it is unpaused (docs/sessions.md).
pub async fn hold_at_open(info: &SessionInfo, vhost_paused: bool) -> Result<(), Refusal> {
    if vhost_paused {
        info.control.set_paused(true);
    }
    loop {
        let generation = info.control.generation();
        match info.control.ending() {
            Some(Ending::Graceful) => {
                return Err(refuse(reply_code::REPLY_SUCCESS, "OK".into(), Level::Info));
            }
            // Force is handled by the driver; a backend cut does not
            // concern a session that has no broker yet.
            _ if !info.control.paused() => return Ok(()),
            _ => {}
        }
        session_log!(
            Level::Info,
            info,
            "Session paused at Open; waiting for UNPAUSE"
        );
        info.control.changed_since(generation).await;
    }
}
