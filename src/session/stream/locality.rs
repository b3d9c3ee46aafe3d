//! Which proxy endpoint stands for which broker node
//! (docs/routing.md#one-endpoint-per-node): the address map a stream session rewrites Open and
//! Metadata responses through, so that clients reach every node through
//! the proxy and still land on the node they want (a stream's leader for
//! a publisher, a member for a consumer).
//!
//! The operator declares one stream listener per node
//! (`LISTEN START_STREAM port BACKEND=node [ADVERTISE=host]`). A node is
//! known by the address it advertises; the map takes the backend's host
//! and address with its stream port, and what a node advertised in the
//! Open responses this shard has seen (a node advertising its host name,
//! not the address the backend was declared with, is learnt from the first
//! session that reaches it). What a session's own node advertised, when no
//! listener stands for that node, maps to the endpoint the client used:
//! a single node behind one stream listener needs no declaration at all.
//!
//! Pure apart from the shard's learnt table (one per shard thread, no
//! locks); never does I/O.

use crate::config::{Backend, Config, Listener};
use crate::streamproto::{AddressMap, Endpoint};
use std::cell::RefCell;
use std::net::{IpAddr, SocketAddr};

thread_local! {
    /// Advertised endpoint → backend name, learnt from Open responses on
    /// this shard. Kept by name so a later configuration decides the
    /// endpoint.
    static LEARNT: RefCell<Vec<(Endpoint, String)>> = const { RefCell::new(Vec::new()) };
}

/// The host a listener is advertised as: its `ADVERTISE=`, else the
/// address it listens on, else (every address) the proxy's host name.
pub fn advertised_host(listener: &Listener, hostname: &str) -> String {
    if let Some(host) = listener.stream.as_ref().and_then(|s| s.advertise.clone()) {
        return host;
    }
    if listener.addr.ip().is_unspecified() {
        hostname.to_string()
    } else {
        listener.addr.ip().to_string()
    }
}

/// The proxy endpoint a client is given for the listener.
pub fn listener_endpoint(listener: &Listener, hostname: &str) -> Endpoint {
    Endpoint::new(advertised_host(listener, hostname), listener.addr.port())
}

/// The stream listener that stands for `backend`, if any (the lowest port
/// when several do).
pub fn node_listener<'a>(config: &'a Config, backend: &str) -> Option<&'a Listener> {
    config.listeners.values().find(|l| {
        l.stream
            .as_ref()
            .and_then(|s| s.backend.as_deref())
            .is_some_and(|b| b == backend)
    })
}

/// The names a node is reached by: its declared host and address, each
/// with its stream port.
fn node_names(backend: &Backend) -> Vec<Endpoint> {
    let mut names = vec![Endpoint::new(backend.host.clone(), backend.stream_port)];
    if let Some(ip) = backend.address {
        names.push(Endpoint::new(ip.to_string(), backend.stream_port));
    }
    names
}

/// Every node with a listener of its own, by every name it is known by.
pub fn address_map(config: &Config, hostname: &str) -> AddressMap {
    let mut map = AddressMap::new();
    for listener in config.listeners.values().rev() {
        let Some(name) = listener.stream.as_ref().and_then(|s| s.backend.as_ref()) else {
            continue;
        };
        let Some(backend) = config.backends.get(name) else {
            continue;
        };
        let proxy = listener_endpoint(listener, hostname);
        for broker in node_names(backend) {
            map.insert(broker, proxy.clone());
        }
    }
    LEARNT.with(|learnt| {
        for (advertised, name) in learnt.borrow().iter() {
            if map.lookup(&advertised.host, advertised.port).is_some() {
                continue;
            }
            if let Some(listener) = node_listener(config, name) {
                map.insert(advertised.clone(), listener_endpoint(listener, hostname));
            }
        }
    });
    map
}

/// Remembers that `backend` advertises itself as `advertised`.
pub fn learn(advertised: Endpoint, backend: &str) {
    LEARNT.with(|learnt| {
        let mut learnt = learnt.borrow_mut();
        match learnt.iter_mut().find(|(a, _)| *a == advertised) {
            Some(entry) => backend.clone_into(&mut entry.1),
            None => learnt.push((advertised, backend.to_string())),
        }
    });
}

/// The endpoint the client reached: its listener's advertised form, or
/// the local address it connected to.
pub fn entry_endpoint(
    config: &Config,
    hostname: &str,
    listen_port: u16,
    local: SocketAddr,
) -> Endpoint {
    match config.listeners.get(&listen_port) {
        Some(l) if l.stream.as_ref().is_some_and(|s| s.advertise.is_some()) => {
            listener_endpoint(l, hostname)
        }
        _ => Endpoint::new(host_text(local.ip()), listen_port),
    }
}

fn host_text(ip: IpAddr) -> String {
    match ip {
        // An IPv4 client on a dual-stack socket.
        IpAddr::V6(v6) => v6
            .to_ipv4_mapped()
            .map_or_else(|| v6.to_string(), |v4| v4.to_string()),
        IpAddr::V4(v4) => v4.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{ProxyHeader, StreamEndpoint};

    fn backend(name: &str, host: &str, ip: Option<&str>) -> Backend {
        Backend {
            name: name.into(),
            datacenter: "dc".into(),
            host: host.into(),
            address: ip.map(|i| i.parse().unwrap()),
            port: 5672,
            proxy_header: ProxyHeader::None,
            tls: false,
            stream_port: 5552,
        }
    }

    fn stream_listener(addr: &str, backend: Option<&str>, advertise: Option<&str>) -> Listener {
        Listener {
            addr: addr.parse().unwrap(),
            tls: false,
            proxy: false,
            stream: Some(StreamEndpoint {
                backend: backend.map(Into::into),
                advertise: advertise.map(Into::into),
            }),
        }
    }

    fn config() -> Config {
        let mut c = Config::default();
        for b in [
            backend("n1", "rabbit-1", Some("10.0.0.1")),
            backend("n2", "rabbit-2.example", None),
        ] {
            c.backends.insert(b.name.clone(), b);
        }
        for (port, l) in [
            (5552, stream_listener("[::]:5552", None, None)),
            (15001, stream_listener("10.9.9.9:15001", Some("n1"), None)),
            (
                15002,
                stream_listener("[::]:15002", Some("n2"), Some("proxy.example")),
            ),
        ] {
            c.listeners.insert(port, l);
        }
        c
    }

    #[test]
    fn each_node_maps_by_every_name_to_its_own_listener() {
        let map = address_map(&config(), "proxyhost");
        let at = |h: &str, p| map.lookup(h, p).cloned();
        assert_eq!(at("rabbit-1", 5552), Some(Endpoint::new("10.9.9.9", 15001)));
        assert_eq!(at("10.0.0.1", 5552), Some(Endpoint::new("10.9.9.9", 15001)));
        assert_eq!(
            at("RABBIT-2.example", 5552),
            Some(Endpoint::new("proxy.example", 15002))
        );
        // Another port is another listener of the node, not this one.
        assert_eq!(at("rabbit-1", 5551), None);
    }

    #[test]
    fn a_listener_on_every_address_is_advertised_by_host_name() {
        let mut c = config();
        c.listeners
            .insert(15003, stream_listener("[::]:15003", Some("n1"), None));
        c.listeners.remove(&15001);
        let map = address_map(&c, "proxyhost");
        assert_eq!(
            map.lookup("10.0.0.1", 5552),
            Some(&Endpoint::new("proxyhost", 15003))
        );
    }

    #[test]
    fn a_learnt_advertised_name_follows_the_nodes_listener() {
        learn(Endpoint::new("rabbit@node1-advertised", 5552), "n1");
        let map = address_map(&config(), "proxyhost");
        assert_eq!(
            map.lookup("rabbit@node1-advertised", 5552),
            Some(&Endpoint::new("10.9.9.9", 15001))
        );
        // Without a listener for the node, a learnt name maps nowhere.
        let mut c = config();
        c.listeners.remove(&15001);
        assert_eq!(
            address_map(&c, "h").lookup("rabbit@node1-advertised", 5552),
            None
        );
    }

    #[test]
    fn the_entry_endpoint_is_what_the_client_reached() {
        let c = config();
        assert_eq!(
            entry_endpoint(&c, "h", 5552, "[::ffff:127.0.0.1]:5552".parse().unwrap()),
            Endpoint::new("127.0.0.1", 5552)
        );
        assert_eq!(
            entry_endpoint(&c, "h", 15002, "10.1.1.1:15002".parse().unwrap()),
            Endpoint::new("proxy.example", 15002)
        );
    }
}
