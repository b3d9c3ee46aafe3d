//! `BACKEND ADD | ADD_DNS | DELETE | PRINT` (behaviour.md §2.4).
//!
//! `ADD` resolves the host once, when the command runs (on the control
//! thread, never on a shard); `ADD_DNS` stores the name, resolved for every
//! connection. Deleting a backend that a farm lists leaves the farm skipping
//! it (the original leaves a dangling reference).

use super::subcommand;
use crate::config::{Backend, Config, ProxyHeader};
use crate::control::Reply;
use std::net::ToSocketAddrs;

pub fn run(config: &mut Config, args: &[&str]) -> Reply {
    match subcommand(args).as_str() {
        "ADD" => add(config, &args[1..], false),
        "ADD_DNS" => add(config, &args[1..], true),
        "DELETE" => delete(config, &args[1..]),
        "PRINT" => Reply::ok(print(config)),
        other => Reply::error(format!("Subcommand '{other}' not recognized.")),
    }
}

/// The PRINT line of one backend.
pub fn describe(b: &Backend) -> String {
    let ip = b.address.map(|a| a.to_string()).unwrap_or_default();
    let mut line = format!(
        "{} ({}): {} {}:{}",
        b.name, b.datacenter, b.host, ip, b.port
    );
    match b.proxy_header {
        ProxyHeader::None => {}
        ProxyHeader::V1 => line.push_str(" PROXY PROTOCOL V1 ENABLED"),
        ProxyHeader::V2 => line.push_str(" PROXY PROTOCOL V2 ENABLED"),
    }
    if b.tls {
        line.push_str(" TLS");
    }
    line
}

fn print(config: &Config) -> String {
    config
        .backends
        .values()
        .map(|b| describe(b) + "\n")
        .collect()
}

fn add(config: &mut Config, args: &[&str], dns: bool) -> Reply {
    let (Some(name), Some(datacenter), Some(host), Some(port)) =
        (args.first(), args.get(1), args.get(2), args.get(3))
    else {
        return Reply::error("Arguments not correctly provided");
    };
    let port = match port.parse::<u16>() {
        Ok(p) if p != 0 => p,
        _ => return Reply::error("Arguments not correctly provided"),
    };
    let mut proxy_header = ProxyHeader::None;
    let mut tls = false;
    for flag in &args[4..] {
        match flag.to_ascii_uppercase().as_str() {
            "SEND-PROXY" => proxy_header = ProxyHeader::V1,
            "SEND-PROXY-V2" => proxy_header = ProxyHeader::V2,
            "TLS" => tls = true,
            _ => {} // the original ignores other tokens
        }
    }
    let address = if dns {
        None
    } else {
        match (*host, port).to_socket_addrs().map(|mut a| a.next()) {
            Ok(Some(addr)) => Some(addr.ip()),
            Ok(None) => {
                return Reply::error(format!(
                    "Failed to resolve '{host}', error code: resolver:no addresses"
                ))
            }
            Err(e) => {
                return Reply::error(format!(
                    "Failed to resolve '{host}', error code: resolver:{e}"
                ))
            }
        }
    };
    let backend = Backend {
        name: name.to_string(),
        datacenter: datacenter.to_string(),
        host: host.to_string(),
        address,
        port,
        proxy_header,
        tls,
    };
    if config.backends.contains_key(*name) {
        return Reply::error(format!(
            "Failed to insert backend: '{}', error code: 1",
            describe(&backend)
        ));
    }
    config.backends.insert(name.to_string(), backend);
    Reply::empty()
}

fn delete(config: &mut Config, args: &[&str]) -> Reply {
    let Some(name) = args.first() else {
        return Reply::error("DELETE requires a name argument");
    };
    if config.backends.remove(*name).is_none() {
        return Reply::error(format!("Delete failed to remove '{name}', rcode 1"));
    }
    Reply::empty()
}
