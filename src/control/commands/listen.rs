//! `LISTEN START [addr:]port [PROXY] | START_SECURE [addr:]port [PROXY] |
//! STOP [port]` (behaviour.md §2.10, DECISIONS Fix 9, Add 6, Add 9 and
//! §14.4): every shard opens its own SO_REUSEPORT listener, and the reply
//! comes only once all have (or with the reason one could not). A port held
//! by another process is an error reply, never a crash.
//!
//! `START_SECURE` serves AMQPS with the TLS INGRESS context, and is refused
//! while that context has no key and certificate (the original listened and
//! then failed every handshake). `PROXY` makes the listener expect a PROXY
//! protocol v1 or v2 header from a load balancer first (`tls::ingress`).

use super::subcommand;
use crate::control::{ControlState, Reply};
use crate::shard::{ListenerKind, ShardCommand};
use std::net::{IpAddr, Ipv6Addr, SocketAddr};

pub fn run(state: &mut ControlState, args: &[&str]) -> Reply {
    match subcommand(args).as_str() {
        verb @ ("START" | "START_SECURE") => {
            let Some(addr) = args.get(1).and_then(|p| parse_listen_addr(p)) else {
                return Reply::error("Invalid port provided.\n");
            };
            let mut kind = ListenerKind {
                tls: verb == "START_SECURE",
                proxy: false,
            };
            for option in &args[2..] {
                if option.eq_ignore_ascii_case("PROXY") {
                    kind.proxy = true;
                } else {
                    return Reply::error(format!(
                        "Unknown listener option '{option}': expected PROXY.\n"
                    ));
                }
            }
            if kind.tls && state.shared.tls.load().ingress.is_none() {
                let why = crate::tls::build_reason(&state.tls.ingress);
                return Reply::error(format!(
                    "Cannot listen securely on port {}: TLS INGRESS is not ready ({why}).\n",
                    addr.port()
                ));
            }
            start(state, addr, kind)
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

fn start(state: &mut ControlState, mut addr: SocketAddr, kind: ListenerKind) -> Reply {
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
    let replies = state.ask_shards(|reply| ShardCommand::Listen { addr, kind, reply });
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
    state.listener_kinds.insert(addr.port(), kind);
    log::info!(
        "Listening on {addr}{}{} on {} shards",
        if kind.tls { " (TLS)" } else { "" },
        if kind.proxy { " (PROXY protocol)" } else { "" },
        state.shards.len()
    );
    Reply::empty()
}

fn stop(state: &mut ControlState, port: Option<u16>) {
    let _ = state.ask_shards(|reply| ShardCommand::StopListening { port, reply });
    match port {
        Some(p) => {
            state.listening.remove(&p);
            state.listener_kinds.remove(&p);
        }
        None => {
            state.listening.clear();
            state.listener_kinds.clear();
        }
    }
}
