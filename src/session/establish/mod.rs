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
/// carry it. Both values live in one buffer, written without the
/// formatting machinery (`itoa` for the numbers): this runs once per
/// connection.
pub struct StartOkAdditions {
    text: String,
    /// Where `amqpprox_host`'s value starts in `text`.
    host_at: usize,
}

impl StartOkAdditions {
    /// Taken once the broker connection exists (the egress port).
    pub fn new(
        shard: &ShardContext,
        info: &SessionInfo,
        client: &Stream,
        listen_port: u16,
    ) -> Self {
        let egress_local = info.egress_local.get().map_or(0, |a| a.port());
        Self::of(
            info.ingress_remote,
            client.is_tls(),
            listen_port,
            &shard.shared.hostname,
            egress_local,
        )
    }

    fn of(
        client: std::net::SocketAddr,
        tls: bool,
        listen_port: u16,
        hostname: &str,
        egress_local: u16,
    ) -> Self {
        let mut text = String::with_capacity(64 + hostname.len());
        push_client_endpoint(&mut text, client, tls);
        let host_at = text.len();
        text.push_str("(:");
        push_decimal(&mut text, listen_port);
        text.push_str(") ");
        text.push_str(hostname);
        text.push(':');
        push_decimal(&mut text, egress_local);
        StartOkAdditions { text, host_at }
    }

    /// The properties, in the order they are appended.
    pub fn entries(&self) -> [(&'static str, &str); 2] {
        let (client, host) = self.text.split_at(self.host_at);
        [("amqpprox_client", client), ("amqpprox_host", host)]
    }
}

/// `host:port` of the client for `amqpprox_client`: its name once
/// `MAPHOSTNAME DNS` has resolved it (never waiting for that), else its IP;
/// then ` TLS` for a client on a `START_SECURE` listener, as the original.
fn push_client_endpoint(out: &mut String, addr: std::net::SocketAddr, tls: bool) {
    match (crate::hostnames::hostname_for(addr.ip()), addr) {
        (Some(host), _) => {
            out.push_str(&host);
            out.push(':');
            push_decimal(out, addr.port());
        }
        (None, std::net::SocketAddr::V4(v4)) => {
            for (i, octet) in v4.ip().octets().into_iter().enumerate() {
                if i > 0 {
                    out.push('.');
                }
                push_decimal(out, u16::from(octet));
            }
            out.push(':');
            push_decimal(out, addr.port());
        }
        // Rare enough for the formatting machinery (and its scope id).
        (None, std::net::SocketAddr::V6(v6)) => {
            use std::fmt::Write;
            let _ = write!(out, "{v6}");
        }
    }
    if tls {
        out.push_str(" TLS");
    }
}

/// Appends `n` in decimal.
fn push_decimal(out: &mut String, n: u16) {
    out.push_str(itoa::Buffer::new().format(n));
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

#[cfg(test)]
mod tests {
    use super::StartOkAdditions;

    fn values(client: &str, tls: bool, listen: u16, egress: u16) -> [String; 2] {
        let additions =
            StartOkAdditions::of(client.parse().unwrap(), tls, listen, "proxyhost", egress);
        let [(client_key, client), (host_key, host)] = additions.entries();
        assert_eq!((client_key, host_key), ("amqpprox_client", "amqpprox_host"));
        [client.to_string(), host.to_string()]
    }

    #[test]
    fn start_ok_additions_name_the_client_and_the_proxy_leg() {
        assert_eq!(
            values("10.1.2.3:45678", false, 5672, 61000),
            ["10.1.2.3:45678", "(:5672) proxyhost:61000"]
        );
        assert_eq!(
            values("0.0.0.0:0", true, 1, 0),
            ["0.0.0.0:0 TLS", "(:1) proxyhost:0"]
        );
        assert_eq!(
            values("255.255.255.255:65535", false, 65535, 65535),
            ["255.255.255.255:65535", "(:65535) proxyhost:65535"]
        );
    }

    #[test]
    fn start_ok_additions_write_an_ipv6_client_as_the_standard_library_does() {
        for addr in [
            "[::1]:5672",
            "[fe80::1%3]:40000",
            "[2001:db8::8:800:200c:417a]:1",
        ] {
            let parsed: std::net::SocketAddr = addr.parse().unwrap();
            let [client, _] = values(addr, true, 5672, 1);
            assert_eq!(client, format!("{parsed} TLS"));
        }
    }
}
