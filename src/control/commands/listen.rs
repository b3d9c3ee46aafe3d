//! `LISTEN START port | START_SECURE port | STOP [port]` (behaviour.md
//! §2.10, DECISIONS Fix 9 and §14.4): every shard opens its own
//! SO_REUSEPORT listener, and the reply comes only once all have (or with
//! the reason one could not). A port held by another process is an error
//! reply, never a crash.

use super::subcommand;
use crate::control::{ControlState, Reply};
use crate::shard::ShardCommand;
use std::net::{IpAddr, Ipv6Addr, SocketAddr};

pub fn run(state: &mut ControlState, args: &[&str]) -> Reply {
    match subcommand(args).as_str() {
        "START" => match args.get(1).and_then(|p| parse_listen_addr(p)) {
            Some(addr) => start(state, addr),
            None => Reply::error("Invalid port provided.\n"),
        },
        "START_SECURE" => {
            Reply::error("TLS is not configured: START_SECURE is not available yet.\n")
        }
        "STOP" => {
            let port = args.get(1).and_then(|p| p.parse::<u16>().ok());
            stop(state, port);
            Reply::empty()
        }
        "" => Reply::error("No subcommand provided.\n"),
        _ => Reply::error("Unknown subcommand.\n"),
    }
}

/// `port`, `addr:port` or `[v6addr]:port`. A bare port listens on every
/// address, IPv4 and IPv6.
pub fn parse_listen_addr(s: &str) -> Option<SocketAddr> {
    if let Ok(port) = s.parse::<u16>() {
        return (port != 0).then(|| SocketAddr::new(IpAddr::V6(Ipv6Addr::UNSPECIFIED), port));
    }
    s.parse::<SocketAddr>().ok().filter(|a| a.port() != 0)
}

fn start(state: &mut ControlState, mut addr: SocketAddr) -> Reply {
    if state.listening.contains_key(&addr.port()) {
        log::error!("Already listening on port: {}", addr.port());
        return Reply::empty();
    }
    if let Err(e) = crate::net::probe_port_free(addr) {
        let v6_missing = addr.ip() == IpAddr::V6(Ipv6Addr::UNSPECIFIED)
            && e.kind() != std::io::ErrorKind::AddrInUse;
        if !v6_missing {
            return Reply::error(format!("Cannot listen on port {}: {e}\n", addr.port()));
        }
        // A host without IPv6: serve IPv4 only.
        addr = SocketAddr::new(IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED), addr.port());
        if let Err(e) = crate::net::probe_port_free(addr) {
            return Reply::error(format!("Cannot listen on port {}: {e}\n", addr.port()));
        }
    }
    let replies = state.ask_shards(|reply| ShardCommand::Listen { addr, reply });
    let failure = replies.iter().enumerate().find_map(|(i, r)| match r {
        Some(Ok(())) => None,
        Some(Err(e)) => Some(format!("shard {i}: {e}")),
        None => Some(format!("shard {i} did not answer")),
    });
    if let Some(reason) = failure {
        // All or nothing: close whatever the other shards opened.
        let _ = state.ask_shards(|reply| ShardCommand::StopListening {
            port: Some(addr.port()),
            reply,
        });
        return Reply::error(format!("Cannot listen on port {}: {reason}\n", addr.port()));
    }
    state.listening.insert(addr.port(), addr);
    log::info!("Listening on {addr} on {} shards", state.shards.len());
    Reply::empty()
}

fn stop(state: &mut ControlState, port: Option<u16>) {
    let _ = state.ask_shards(|reply| ShardCommand::StopListening { port, reply });
    match port {
        Some(p) => {
            state.listening.remove(&p);
        }
        None => state.listening.clear(),
    }
}
