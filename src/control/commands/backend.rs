//! `BACKEND ADD | ADD_DNS | DELETE | PRINT [json]` (behaviour.md §2.4,
//! DECISIONS Keep 2, Add 6, Add 10). Owns the grammar, texts and JSON shape
//! of backends; it never touches a session or a shard.
//!
//! * `ADD` resolves the host once, when the command runs, with the system
//!   resolver on the control thread (never on a shard) and keeps the first
//!   address, as the original does. A failed lookup answers
//!   `Failed to resolve '<host>', error code: <category>:<value>` with the
//!   original's Boost.Asio category names (`asio.netdb:1` for an unknown
//!   host), so operators' scripts see the same text. `ADD_DNS` keeps the
//!   name, resolved for every connection.
//! * Flags, in any order and any case: `SEND-PROXY` (PROXY v1),
//!   `SEND-PROXY-V2` (PROXY v2, our addition; the last PROXY flag given
//!   wins) and `TLS`. Other extra tokens are ignored, as in the original.
//! * Ports must be 1..=65535 (the original only rejects 0 and non-numbers).
//! * Deleting a backend that a farm lists leaves the farm skipping it (the
//!   original keeps a dangling reference); re-adding the name brings it back.
//! * `PRINT` lists backends sorted by name (the original's order is hash
//!   order): `<name> (<dc>): <host> <ip>:<port>[ PROXY PROTOCOL V1 ENABLED |
//!   PROXY PROTOCOL V2 ENABLED][ TLS]`.
//! * `PRINT json`: one document, sorted by name:
//!   `{"backends":[{"name","datacenter","host","ip","port","dns",
//!   "proxyProtocol","tls"}]}` where `ip` is the resolved address or `null`
//!   for `ADD_DNS` backends, `dns` is true for `ADD_DNS`, and
//!   `proxyProtocol` is `null`, `"v1"` or `"v2"`.

use super::subcommand;
use crate::config::{Backend, Config, ProxyHeader};
use crate::control::Reply;
use serde::Serialize;
use std::ffi::CString;
use std::net::{IpAddr, Ipv4Addr};

pub fn run(config: &mut Config, args: &[&str]) -> Reply {
    match subcommand(args).as_str() {
        "ADD" => add(config, &args[1..], false),
        "ADD_DNS" => add(config, &args[1..], true),
        "DELETE" => delete(config, &args[1..]),
        "PRINT" if super::config::wants_json(&args[1..]) => {
            Reply::ok(super::config::to_json_line(&json(config)))
        }
        "PRINT" => Reply::ok(print(config)),
        other => Reply::error(format!("Subcommand '{other}' not recognized.")),
    }
}

/// The PRINT line of one backend (also used in the duplicate-name error).
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

/// The `BACKEND ADD`/`ADD_DNS` line that recreates `b` (for `CONFIG DUMP`).
/// The host is written as the operator gave it, so a replay resolves it
/// again rather than pinning the address it had when it was dumped.
pub fn add_command(b: &Backend) -> String {
    let verb = if b.is_dns() { "ADD_DNS" } else { "ADD" };
    let mut line = format!(
        "BACKEND {verb} {} {} {} {}",
        b.name, b.datacenter, b.host, b.port
    );
    match b.proxy_header {
        ProxyHeader::None => {}
        ProxyHeader::V1 => line.push_str(" SEND-PROXY"),
        ProxyHeader::V2 => line.push_str(" SEND-PROXY-V2"),
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

/// One backend in `BACKEND PRINT json`.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct BackendJson<'a> {
    name: &'a str,
    datacenter: &'a str,
    host: &'a str,
    ip: Option<String>,
    port: u16,
    dns: bool,
    proxy_protocol: Option<&'static str>,
    tls: bool,
}

/// Every backend, sorted by name, in their JSON shape.
pub fn json_list(config: &Config) -> Vec<BackendJson<'_>> {
    config
        .backends
        .values()
        .map(|b| BackendJson {
            name: &b.name,
            datacenter: &b.datacenter,
            host: &b.host,
            ip: b.address.map(|a| a.to_string()),
            port: b.port,
            dns: b.is_dns(),
            proxy_protocol: match b.proxy_header {
                ProxyHeader::None => None,
                ProxyHeader::V1 => Some("v1"),
                ProxyHeader::V2 => Some("v2"),
            },
            tls: b.tls,
        })
        .collect()
}

/// The `BACKEND PRINT json` document.
#[derive(Serialize)]
struct BackendsDoc<'a> {
    backends: Vec<BackendJson<'a>>,
}

fn json(config: &Config) -> impl Serialize + '_ {
    BackendsDoc {
        backends: json_list(config),
    }
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
    // Resolve before the duplicate check: the original's duplicate error
    // prints the new backend, resolved address included.
    let address = if dns {
        None
    } else {
        match resolve_first(host, port) {
            Ok(ip) => Some(ip),
            Err(code) => {
                return Reply::error(format!("Failed to resolve '{host}', error code: {code}"))
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

/// The first address `host` resolves to, or the error as the original
/// printed it (`<Boost.Asio category>:<value>`). Blocks on the system
/// resolver: runs on the control thread only.
fn resolve_first(host: &str, port: u16) -> Result<IpAddr, String> {
    // A NUL inside the name cannot reach getaddrinfo; it is no host at all.
    let node = CString::new(host).map_err(|_| "asio.netdb:1".to_string())?;
    let service = CString::new(port.to_string()).expect("digits contain no NUL");
    // SAFETY: an all-zero addrinfo is the documented "no hints" value; the
    // fields set below are plain integers.
    let mut hints: libc::addrinfo = unsafe { std::mem::zeroed() };
    hints.ai_family = libc::AF_UNSPEC;
    hints.ai_socktype = libc::SOCK_STREAM;
    hints.ai_protocol = libc::IPPROTO_TCP;
    let mut list: *mut libc::addrinfo = std::ptr::null_mut();
    // SAFETY: node, service and hints outlive the call; on success `list`
    // is freed below with freeaddrinfo and not used afterwards.
    let rc = unsafe { libc::getaddrinfo(node.as_ptr(), service.as_ptr(), &hints, &mut list) };
    if rc != 0 {
        return Err(asio_error(rc, std::io::Error::last_os_error()));
    }
    let mut first = None;
    let mut entry = list;
    while !entry.is_null() && first.is_none() {
        // SAFETY: `entry` is a node of the list getaddrinfo returned.
        let ai = unsafe { &*entry };
        first = sockaddr_ip(ai);
        entry = ai.ai_next;
    }
    // SAFETY: `list` came from a successful getaddrinfo and is freed once.
    unsafe { libc::freeaddrinfo(list) };
    first.ok_or_else(|| "asio.netdb:1".to_string())
}

/// The IP of one addrinfo entry, if it is IPv4 or IPv6.
fn sockaddr_ip(ai: &libc::addrinfo) -> Option<IpAddr> {
    if ai.ai_addr.is_null() {
        return None;
    }
    // SAFETY: getaddrinfo sets ai_addr to a sockaddr of the family and
    // length it reports; each arm reads only that type.
    unsafe {
        match ai.ai_family {
            libc::AF_INET => {
                let sin = &*(ai.ai_addr as *const libc::sockaddr_in);
                Some(IpAddr::V4(Ipv4Addr::from(u32::from_be(
                    sin.sin_addr.s_addr,
                ))))
            }
            libc::AF_INET6 => {
                let sin6 = &*(ai.ai_addr as *const libc::sockaddr_in6);
                Some(IpAddr::from(sin6.sin6_addr.s6_addr))
            }
            _ => None,
        }
    }
}

/// glibc's value (a GNU extension the libc crate does not export; musl
/// leaves it unused).
const EAI_ADDRFAMILY: i32 = -9;

/// Maps a getaddrinfo failure to the error code Boost.Asio reports for it
/// (its `translate_addrinfo_error`), printed as `<category>:<value>`.
fn asio_error(rc: i32, os: std::io::Error) -> String {
    match rc {
        libc::EAI_AGAIN => "asio.netdb:2".into(),
        libc::EAI_FAIL => "asio.netdb:3".into(),
        libc::EAI_NONAME | libc::EAI_NODATA | EAI_ADDRFAMILY => "asio.netdb:1".into(),
        libc::EAI_SERVICE => format!("asio.addrinfo:{}", libc::EAI_SERVICE),
        libc::EAI_SOCKTYPE => format!("asio.addrinfo:{}", libc::EAI_SOCKTYPE),
        libc::EAI_BADFLAGS => format!("system:{}", libc::EINVAL),
        libc::EAI_FAMILY => format!("system:{}", libc::EAFNOSUPPORT),
        libc::EAI_MEMORY => format!("system:{}", libc::ENOMEM),
        // EAI_SYSTEM and anything unknown: the errno, as Boost does.
        _ => format!("system:{}", os.raw_os_error().unwrap_or(0)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run_line(config: &mut Config, line: &str) -> Reply {
        super::super::run_tokens(run, config, line)
    }

    #[test]
    fn add_print_and_flags() {
        let mut c = Config::default();
        assert_eq!(
            run_line(&mut c, "ADD b2 dc2 127.0.0.1 5673 tls send-proxy-v2"),
            Reply::empty()
        );
        assert_eq!(
            run_line(&mut c, "ADD b1 dc1 127.0.0.1 5672 TLS SEND-PROXY x"),
            Reply::empty()
        );
        assert_eq!(
            run_line(&mut c, "ADD_DNS b3 dc1 rabbit.example 5672"),
            Reply::empty()
        );
        assert_eq!(
            run_line(&mut c, "PRINT").text,
            "b1 (dc1): 127.0.0.1 127.0.0.1:5672 PROXY PROTOCOL V1 ENABLED TLS\n\
             b2 (dc2): 127.0.0.1 127.0.0.1:5673 PROXY PROTOCOL V2 ENABLED TLS\n\
             b3 (dc1): rabbit.example :5672\n"
        );
        assert_eq!(
            add_command(&c.backends["b2"]),
            "BACKEND ADD b2 dc2 127.0.0.1 5673 SEND-PROXY-V2 TLS"
        );
        assert_eq!(
            add_command(&c.backends["b3"]),
            "BACKEND ADD_DNS b3 dc1 rabbit.example 5672"
        );
    }

    #[test]
    fn errors_keep_the_original_texts() {
        let mut c = Config::default();
        for line in [
            "ADD b1 dc1 127.0.0.1",
            "ADD b1 dc1 127.0.0.1 0",
            "ADD b1 dc1 h x",
        ] {
            assert_eq!(
                run_line(&mut c, line),
                Reply::error("Arguments not correctly provided")
            );
        }
        run_line(&mut c, "ADD b1 dc1 127.0.0.1 5672");
        assert_eq!(
            run_line(&mut c, "ADD b1 dc9 127.0.0.1 1"),
            Reply::error(
                "Failed to insert backend: 'b1 (dc9): 127.0.0.1 127.0.0.1:1', error code: 1"
            )
        );
        assert_eq!(
            run_line(&mut c, "DELETE nope"),
            Reply::error("Delete failed to remove 'nope', rcode 1")
        );
        assert_eq!(
            run_line(&mut c, "DELETE"),
            Reply::error("DELETE requires a name argument")
        );
        assert_eq!(
            run_line(&mut c, "FOO"),
            Reply::error("Subcommand 'FOO' not recognized.")
        );
        assert_eq!(
            run_line(&mut c, ""),
            Reply::error("Subcommand '' not recognized.")
        );
    }

    #[test]
    fn resolution_failure_uses_asio_codes() {
        let text = asio_error(libc::EAI_NONAME, std::io::Error::from_raw_os_error(0));
        assert_eq!(text, "asio.netdb:1");
        assert_eq!(resolve_first("127.0.0.1", 1), Ok([127, 0, 0, 1].into()));
    }
}
