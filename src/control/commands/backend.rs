//! `BACKEND ADD | ADD_DNS | DELETE | PRINT [json]`, executed (see
//! `docs/commands.md#backend`). Owns what adding and deleting a backend
//! does and its texts; the grammar is `control::grammar`, the shapes are
//! `control::render`. It never touches a session or a shard.
//!
//! * `ADD` resolves the host once, when the command runs, with the system
//!   resolver on the control thread (never on a shard) and keeps the first
//!   address, as the original does. A failed lookup answers
//!   `Failed to resolve '<host>', error code: <category>:<value>` with the
//!   original's Boost.Asio category names (`asio.netdb:1` for an unknown
//!   host), so operators' scripts see the same text. `ADD_DNS` keeps the
//!   name, resolved for every connection.
//! * Deleting a backend that a farm lists leaves the farm skipping it (the
//!   original keeps a dangling reference); re-adding the name brings it back.
//! * `DRAIN name` / `UNDRAIN name` (our addition, see
//!   `docs/routing.md#draining-a-backend`): a drained backend is left out
//!   of routing while its farm has a member that is not drained, and its
//!   sessions are moved once the change is published (`ControlState`'s
//!   commit asks the shards).
//!   Draining a drained backend, or undraining one that is not, changes
//!   nothing and is no error; a backend that does not exist is. Deleting a
//!   backend forgets that it was drained.
//! * `PRINT` lists backends sorted by name (the original's order is hash
//!   order), a drained one with ` DRAINED` at the end. `PRINT json`:
//!   `{"backends":[{"name","datacenter","host","ip","port","dns",
//!   "proxyProtocol","tls","streamPort","drained"}]}` where `ip` is `null`
//!   for `ADD_DNS` backends and `proxyProtocol` is `null`, `"v1"` or `"v2"`;
//!   `"health"` follows (see below).
//! * `STREAM-PORT=<port>` sets the node's RabbitMQ Stream port (default
//!   5552), where stream sessions routed to the backend connect.
//! * `PRINT` shows each backend's health once a check has seen it (` HEALTH
//!   UP`, ` HEALTH DOWN`, and the last error) at the end of its line, so it
//!   reads as the original's until then; `PRINT json` has `"health"`:
//!   `{"state","sinceMs","consecutiveFailures","lastError"}` (see
//!   `control::render::health_json`).
//! * `HEALTH` changes the health-check policy (a configuration setting, so
//!   `CONFIG DUMP` prints it); `HEALTH PRINT` shows it as the line that
//!   sets it.

use crate::config::{Backend, Config};
use crate::control::grammar::{BackendCommand, HealthCommand, HealthSettings, NewBackend};
use crate::control::render::{
    backends_json, describe, describe_health, health_command, to_json_line, BackendJson,
};
use crate::control::Reply;
use crate::health::{HealthPolicy, HealthRegistry};
use dns_lookup::{AddrInfoHints, LookupErrorKind};
use serde::Serialize;
use std::net::IpAddr;
use std::time::Duration;

pub fn run(config: &mut Config, command: BackendCommand, health: &HealthRegistry) -> Reply {
    match command {
        BackendCommand::Add(new) => add(config, new),
        BackendCommand::Delete { name } => {
            if config.backends.remove(&name).is_none() {
                return Reply::error(format!("Delete failed to remove '{name}', rcode 1"));
            }
            config.drained.remove(&name);
            Reply::empty()
        }
        BackendCommand::Drain { name } | BackendCommand::Undrain { name }
            if !config.backends.contains_key(&name) =>
        {
            Reply::error(format!("Backend '{name}' not found."))
        }
        BackendCommand::Drain { name } => {
            config.drained.insert(name);
            Reply::empty()
        }
        BackendCommand::Undrain { name } => {
            config.drained.remove(&name);
            Reply::empty()
        }
        BackendCommand::Print { json: true } => Reply::ok(to_json_line(&BackendsDoc {
            backends: backends_json(config, Some(health)),
        })),
        BackendCommand::Print { json: false } => Reply::ok(
            config
                .backends
                .values()
                .map(|b| {
                    let drained = if config.drained.contains(&b.name) {
                        " DRAINED"
                    } else {
                        ""
                    };
                    describe(b) + drained + &describe_health(health, &b.name) + "\n"
                })
                .collect::<String>(),
        ),
        BackendCommand::Health(HealthCommand::Print) => {
            Reply::ok(health_command(&config.health).to_string())
        }
        BackendCommand::Health(HealthCommand::Off) => {
            config.health = config.health.off();
            Reply::empty()
        }
        BackendCommand::Health(HealthCommand::Set(settings)) => {
            config.health = apply(config.health, settings);
            Reply::empty()
        }
    }
}

/// The policy with the given settings changed; `INTERVAL 0` stops the probe.
fn apply(policy: HealthPolicy, s: HealthSettings) -> HealthPolicy {
    let ms = Duration::from_millis;
    HealthPolicy {
        interval: match s.interval_ms {
            None => policy.interval,
            Some(0) => None,
            Some(i) => Some(ms(i)),
        },
        timeout: s.timeout_ms.map_or(policy.timeout, ms),
        rise: s.rise.unwrap_or(policy.rise),
        fall: s.fall.unwrap_or(policy.fall),
        passive_fall: s.passive_fall.unwrap_or(policy.passive_fall),
        down_hold: s.down_hold_ms.map_or(policy.down_hold, ms),
    }
}

/// The `BACKEND PRINT json` document.
#[derive(Serialize)]
struct BackendsDoc<'a> {
    backends: Vec<BackendJson<'a>>,
}

fn add(config: &mut Config, new: NewBackend) -> Reply {
    // Resolve before the duplicate check: the original's duplicate error
    // prints the new backend, resolved address included.
    let address = if new.dns {
        None
    } else {
        match resolve_first(&new.host, new.port) {
            Ok(ip) => Some(ip),
            Err(code) => {
                return Reply::error(format!(
                    "Failed to resolve '{}', error code: {code}",
                    new.host
                ))
            }
        }
    };
    let backend = Backend {
        name: new.name,
        datacenter: new.datacenter,
        host: new.host,
        address,
        port: new.port,
        proxy_header: new.proxy_header,
        tls: new.tls,
        stream_port: new.stream_port,
    };
    if config.backends.contains_key(&backend.name) {
        return Reply::error(format!(
            "Failed to insert backend: '{}', error code: 1",
            describe(&backend)
        ));
    }
    config.backends.insert(backend.name.clone(), backend);
    Reply::empty()
}

/// The first address `host` resolves to, or the error as the original
/// printed it (`<Boost.Asio category>:<value>`). Blocks on the system
/// resolver: runs on the control thread only.
fn resolve_first(host: &str, port: u16) -> Result<IpAddr, String> {
    let hints = AddrInfoHints {
        socktype: libc::SOCK_STREAM,
        protocol: libc::IPPROTO_TCP,
        ..AddrInfoHints::default()
    };
    let service = port.to_string();
    let mut list = dns_lookup::getaddrinfo(Some(host), Some(&service), Some(hints))
        .map_err(|e| asio_error(e.kind(), e.error_num(), &std::io::Error::from(e)))?;
    // An entry that cannot be read is skipped, as the original's iterator.
    list.find_map(|entry| entry.ok().map(|ai| ai.sockaddr.ip()))
        .ok_or_else(|| "asio.netdb:1".to_string())
}

/// Maps a getaddrinfo failure to the error code Boost.Asio reports for it
/// (its `translate_addrinfo_error`), printed as `<category>:<value>`.
fn asio_error(kind: LookupErrorKind, code: i32, io: &std::io::Error) -> String {
    match kind {
        LookupErrorKind::Again => "asio.netdb:2".into(),
        LookupErrorKind::Fail => "asio.netdb:3".into(),
        LookupErrorKind::NoName | LookupErrorKind::NoData => "asio.netdb:1".into(),
        // glibc's EAI_ADDRFAMILY (-9), which the crate does not name: no
        // address of the asked family is the same as no such host.
        LookupErrorKind::Unknown if code == -9 => "asio.netdb:1".into(),
        LookupErrorKind::Service => format!("asio.addrinfo:{}", libc::EAI_SERVICE),
        LookupErrorKind::Socktype => format!("asio.addrinfo:{}", libc::EAI_SOCKTYPE),
        LookupErrorKind::Badflags => format!("system:{}", libc::EINVAL),
        LookupErrorKind::Family => format!("system:{}", libc::EAFNOSUPPORT),
        LookupErrorKind::Memory => format!("system:{}", libc::ENOMEM),
        // A NUL inside the name never reaches getaddrinfo: no host at all.
        LookupErrorKind::IO if io.kind() == std::io::ErrorKind::InvalidInput => {
            "asio.netdb:1".into()
        }
        // EAI_SYSTEM and anything unknown: the errno, as Boost does.
        _ => format!("system:{}", io.raw_os_error().unwrap_or(0)),
    }
}

#[cfg(test)]
mod tests {
    use super::super::run_line;
    use super::*;
    use crate::control::render::backend_command;
    use crate::control::Reply;

    #[test]
    fn add_print_and_flags() {
        let mut c = Config::default();
        for line in [
            "BACKEND ADD b2 dc2 127.0.0.1 5673 tls send-proxy-v2",
            "BACKEND ADD b1 dc1 127.0.0.1 5672 TLS SEND-PROXY",
            "BACKEND ADD_DNS b3 dc1 rabbit.example 5672",
        ] {
            assert_eq!(run_line(&mut c, line), Reply::empty(), "{line}");
        }
        assert_eq!(
            run_line(&mut c, "BACKEND PRINT").text,
            "b1 (dc1): 127.0.0.1 127.0.0.1:5672 PROXY PROTOCOL V1 ENABLED TLS\n\
             b2 (dc2): 127.0.0.1 127.0.0.1:5673 PROXY PROTOCOL V2 ENABLED TLS\n\
             b3 (dc1): rabbit.example :5672\n"
        );
        assert_eq!(
            backend_command(&c.backends["b2"]).to_string(),
            "BACKEND ADD b2 dc2 127.0.0.1 5673 SEND-PROXY-V2 TLS"
        );
        assert_eq!(
            backend_command(&c.backends["b3"]).to_string(),
            "BACKEND ADD_DNS b3 dc1 rabbit.example 5672"
        );
    }

    #[test]
    fn errors_keep_the_original_texts_and_change_nothing() {
        let mut c = Config::default();
        run_line(&mut c, "BACKEND ADD b1 dc1 127.0.0.1 5672");
        assert_eq!(
            run_line(&mut c, "BACKEND ADD b1 dc9 127.0.0.1 1"),
            Reply::error(
                "Failed to insert backend: 'b1 (dc9): 127.0.0.1 127.0.0.1:1', error code: 1\n"
            )
        );
        assert_eq!(
            run_line(&mut c, "BACKEND DELETE nope"),
            Reply::error("Delete failed to remove 'nope', rcode 1\n")
        );
        assert_eq!(
            run_line(&mut c, "BACKEND ADD x dc 127.0.0.1 5671 TSL"),
            Reply::error(
                "Unknown backend option 'TSL': expected SEND-PROXY, SEND-PROXY-V2, TLS or STREAM-PORT=<port>.\n"
            )
        );
        assert_eq!(c.backends.len(), 1);
    }

    #[test]
    fn health_settings_change_only_what_they_name_and_dump_replays() {
        let mut c = Config::default();
        assert_eq!(
            run_line(&mut c, "BACKEND HEALTH PRINT").text,
            "BACKEND HEALTH INTERVAL 0 TIMEOUT 2000 RISE 2 FALL 3 PASSIVE_FALL 3 DOWN_HOLD 10000\n"
        );
        assert_eq!(
            run_line(&mut c, "CONFIG DUMP").text,
            "",
            "the default is not dumped"
        );
        run_line(&mut c, "BACKEND ADD b1 dc1 127.0.0.1 5672");
        assert_eq!(
            run_line(&mut c, "backend health interval 500 FALL 2"),
            Reply::empty()
        );
        assert_eq!(
            c.health.interval,
            Some(std::time::Duration::from_millis(500))
        );
        assert_eq!((c.health.fall, c.health.rise), (2, 2));
        let dump = run_line(&mut c, "CONFIG DUMP").text;
        assert_eq!(
            dump,
            "BACKEND ADD b1 dc1 127.0.0.1 5672\n\
             BACKEND HEALTH INTERVAL 500 TIMEOUT 2000 RISE 2 FALL 2 PASSIVE_FALL 3 DOWN_HOLD 10000\n"
        );
        let mut again = Config::default();
        for line in dump.lines() {
            assert!(!run_line(&mut again, line).error, "{line}");
        }
        assert_eq!(again, c);
        assert_eq!(run_line(&mut c, "BACKEND HEALTH OFF"), Reply::empty());
        assert!(c.health.is_off());
        let before = c.clone();
        assert_eq!(
            run_line(&mut c, "BACKEND HEALTH RISE 2 FALL x"),
            Reply::error("Invalid value 'x' for FALL: expected a count (0 or more).\n")
        );
        assert_eq!(c, before, "a refused line changes nothing");
    }

    #[test]
    fn drain_and_undrain_show_in_print_and_the_dump() {
        let mut c = Config::default();
        run_line(&mut c, "BACKEND ADD b1 dc1 127.0.0.1 5672");
        run_line(&mut c, "BACKEND ADD b2 dc1 127.0.0.1 5673");
        assert_eq!(run_line(&mut c, "BACKEND DRAIN b1"), Reply::empty());
        assert_eq!(run_line(&mut c, "BACKEND DRAIN b1"), Reply::empty());
        assert_eq!(
            run_line(&mut c, "BACKEND PRINT").text,
            "b1 (dc1): 127.0.0.1 127.0.0.1:5672 DRAINED\n\
             b2 (dc1): 127.0.0.1 127.0.0.1:5673\n"
        );
        let json = run_line(&mut c, "BACKEND PRINT json").text;
        assert!(
            json.contains(r#""name":"b1","#)
                && json.contains(r#""streamPort":5552,"drained":true,"health":"#),
            "{json}"
        );
        assert!(
            crate::control::render::dump(&c)
                .contains("BACKEND ADD b2 dc1 127.0.0.1 5673\nBACKEND DRAIN b1\n"),
            "{}",
            crate::control::render::dump(&c)
        );
        assert_eq!(
            run_line(&mut c, "BACKEND DRAIN nope"),
            Reply::error("Backend 'nope' not found.\n")
        );
        assert_eq!(
            run_line(&mut c, "BACKEND UNDRAIN"),
            Reply::error("UNDRAIN requires a name argument\n")
        );
        assert_eq!(run_line(&mut c, "BACKEND UNDRAIN b1"), Reply::empty());
        assert!(c.drained.is_empty());
        run_line(&mut c, "BACKEND DRAIN b2");
        run_line(&mut c, "BACKEND DELETE b2");
        assert!(c.drained.is_empty(), "a deleted backend is forgotten");
    }

    #[test]
    fn resolution_uses_asio_codes() {
        assert_eq!(resolve_first("127.0.0.1", 1), Ok([127, 0, 0, 1].into()));
        assert_eq!(resolve_first("a\0b", 1), Err("asio.netdb:1".to_string()));
        let none = std::io::Error::from_raw_os_error(0);
        assert_eq!(
            asio_error(LookupErrorKind::NoName, libc::EAI_NONAME, &none),
            "asio.netdb:1"
        );
        assert_eq!(
            asio_error(LookupErrorKind::Again, libc::EAI_AGAIN, &none),
            "asio.netdb:2"
        );
    }
}
