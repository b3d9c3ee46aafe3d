//! `LISTEN START [addr:]port [PROXY] | START_SECURE [addr:]port [PROXY] |
//! STOP [port]`, executed (see `docs/commands.md#listen`): every shard
//! opens its own SO_REUSEPORT listener, and the reply comes only once all
//! have (or with the reason one could not). A port held by another process
//! is an error reply, never a crash. What is listened on is recorded in
//! the configuration (`Config::listeners`).
//!
//! `START_SECURE` serves AMQPS with the TLS INGRESS context, and is refused
//! while that context has no key and certificate (the original listened and
//! then failed every handshake). `PROXY` makes the listener expect a PROXY
//! protocol v1 or v2 header from a load balancer first (`tls::ingress`).
//!
//! `START_STREAM` / `START_STREAM_SECURE [addr:]port [PROXY]
//! [BACKEND=name] [ADVERTISE=host]` listen for the RabbitMQ Stream protocol
//! (`session::stream`, docs/routing.md#rabbitmq-streams): without `BACKEND` the listener
//! routes by vhost like an AMQP one; with it, it is that node's endpoint,
//! the address clients are given for the node. The backend must exist
//! (a typo would otherwise only show when a client connects).

use crate::config::{Config, Listener, StreamEndpoint};
use crate::control::grammar::ListenCommand;
use crate::control::{ControlState, Reply};
use crate::shard::{ListenerKind, ShardCommand};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

pub fn run(state: &mut ControlState, draft: &mut Config, command: ListenCommand) -> Reply {
    match command {
        ListenCommand::Start { addr, kind } => {
            if kind.tls && state.shared.tls.load().ingress.is_none() {
                let why = crate::tls::build_reason(&draft.tls.ingress);
                return Reply::error(format!(
                    "Cannot listen securely on port {}: TLS INGRESS is not ready ({why}).\n",
                    addr.port()
                ));
            }
            start(state, draft, addr, kind, None)
        }
        ListenCommand::StartStream {
            addr,
            kind,
            endpoint,
        } => {
            if kind.tls && state.shared.tls.load().ingress.is_none() {
                let why = crate::tls::build_reason(&draft.tls.ingress);
                return Reply::error(format!(
                    "Cannot listen securely on port {}: TLS INGRESS is not ready ({why}).\n",
                    addr.port()
                ));
            }
            if let Some(name) = &endpoint.backend {
                if !draft.backends.contains_key(name) {
                    return Reply::error(format!(
                        "Cannot listen for streams on port {}: no backend '{name}'.\n",
                        addr.port()
                    ));
                }
            }
            start(state, draft, addr, kind, Some(endpoint))
        }
        ListenCommand::Stop { port } => {
            let _ = state.ask_shards(|reply| ShardCommand::StopListening { port, reply });
            match port {
                Some(p) => {
                    draft.listeners.remove(&p);
                }
                None => draft.listeners.clear(),
            }
            Reply::empty()
        }
    }
}

/// `LISTEN START` of a handed-over port: each shard adopts the sockets the
/// plan gives it. A failure is an error reply; no socket is shut down (the
/// old process still serves on them).
fn adopt(
    state: &mut ControlState,
    draft: &mut Config,
    addr: SocketAddr,
    kind: ListenerKind,
    stream: Option<StreamEndpoint>,
    per_shard: Vec<Vec<std::os::fd::OwnedFd>>,
) -> Reply {
    // Asked in shard order, so the n-th list goes to shard n.
    let per_shard = std::cell::RefCell::new(per_shard.into_iter());
    let replies = state.ask_shards(|reply| ShardCommand::Adopt {
        addr,
        kind,
        sockets: per_shard.borrow_mut().next().unwrap_or_default(),
        reply,
    });
    let failure = replies.iter().enumerate().find_map(|(i, r)| match r {
        Some(Ok(())) => None,
        Some(Err(e)) => Some(format!("shard {i}: {e}")),
        None => Some(format!("shard {i} did not answer")),
    });
    if let Some(reason) = failure {
        return Reply::error(format!("Cannot take over port {}: {reason}\n", addr.port()));
    }
    draft.listeners.insert(
        addr.port(),
        Listener {
            addr,
            tls: kind.tls,
            proxy: kind.proxy,
            stream,
        },
    );
    log::info!(
        "Took over the listening sockets of port {} on {}",
        addr.port(),
        crate::shard::count_phrase(state.shards.len())
    );
    Reply::empty()
}

fn start(
    state: &mut ControlState,
    draft: &mut Config,
    mut addr: SocketAddr,
    kind: ListenerKind,
    stream: Option<StreamEndpoint>,
) -> Reply {
    let asked = addr;
    if draft.listeners.contains_key(&addr.port()) {
        log::error!("Already listening on port: {}", addr.port());
        return Reply::empty();
    }
    // A new process replaying its predecessor's configuration serves the
    // handed-over sockets of the port and never binds it afresh
    // (docs/deployment.md#upgrading-without-refusing-connections).
    if let Some(per_shard) = state
        .adoption
        .as_mut()
        .and_then(|a| a.take_port(addr.port()))
    {
        return adopt(state, draft, asked, kind, stream, per_shard);
    }
    // Checked here, once, so that a port held elsewhere is refused before
    // any shard opens it, and a host without IPv6 falls back to IPv4.
    if let Err(e) = crate::net::probe_port_free(addr) {
        let v6_missing = addr.ip() == IpAddr::V6(Ipv6Addr::UNSPECIFIED)
            && e.kind() != std::io::ErrorKind::AddrInUse;
        if !v6_missing {
            return Reply::error(format!("Cannot listen on port {}: {e}\n", addr.port()));
        }
        addr = SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), addr.port());
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
    draft.listeners.insert(
        addr.port(),
        Listener {
            addr: asked,
            tls: kind.tls,
            proxy: kind.proxy,
            stream,
        },
    );
    log::info!(
        "Listening on {addr}{}{}{} on {}",
        if kind.stream {
            " (RabbitMQ Stream)"
        } else {
            ""
        },
        if kind.tls { " (TLS)" } else { "" },
        if kind.proxy { " (PROXY protocol)" } else { "" },
        crate::shard::count_phrase(state.shards.len())
    );
    Reply::empty()
}
