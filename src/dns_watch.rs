//! The periodic re-resolution of DNS backends (`BACKEND ADD_DNS`): every
//! `--dnsRecheckMs` a std thread looks up each DNS backend's host and hands
//! the answer to every shard, which moves the sessions connected to an
//! address that has left it (docs/routing.md#name-resolution). New
//! sessions need none of this: they resolve the host when they connect.
//!
//! Runs on its own thread with the blocking system resolver, never on a
//! shard. A lookup that fails or comes back empty moves nothing: a
//! resolver outage must not empty a broker.

use crate::config::Config;
use crate::session::moving::DnsAnswer;
use crate::session::Shared;
use crate::shard::ShardCommand;
use std::net::{IpAddr, ToSocketAddrs};
use std::sync::Arc;
use std::time::Duration;

/// The lookups one round makes: each DNS backend's name, host and port.
fn dns_backends(config: &Config) -> Vec<(String, String, u16)> {
    config
        .backends
        .values()
        .filter(|b| b.is_dns())
        .map(|b| (b.name.clone(), b.host.clone(), b.port))
        .collect()
}

/// Every address `host` resolves to now, or `None` when the lookup failed
/// or found nothing.
fn lookup(host: &str, port: u16) -> Option<Vec<IpAddr>> {
    let mut addresses: Vec<IpAddr> = (host, port)
        .to_socket_addrs()
        .ok()?
        .map(|a| a.ip())
        .collect();
    addresses.sort();
    addresses.dedup();
    (!addresses.is_empty()).then_some(addresses)
}

/// Starts the thread; `every` zero means never.
pub fn start(
    shared: Arc<Shared>,
    inboxes: Vec<flume::Sender<ShardCommand>>,
    every: Duration,
) -> std::io::Result<()> {
    if every.is_zero() {
        return Ok(());
    }
    std::thread::Builder::new()
        .name("dns-recheck".into())
        .spawn(move || loop {
            std::thread::sleep(every);
            let backends = dns_backends(&shared.config.load().config);
            for (backend, host, port) in backends {
                let Some(addresses) = lookup(&host, port) else {
                    log::debug!(
                        "DNS recheck of '{host}' for backend '{backend}' found nothing; \
                         no session moves"
                    );
                    continue;
                };
                let answer = DnsAnswer {
                    backend,
                    host,
                    port,
                    addresses,
                };
                for inbox in &inboxes {
                    // The shard replies with a count nobody needs here.
                    let (reply, _) = flume::bounded(1);
                    if inbox
                        .send(ShardCommand::MoveLeftResolution {
                            answer: answer.clone(),
                            reply,
                        })
                        .is_err()
                    {
                        // The shards are gone: the process is exiting.
                        return;
                    }
                }
            }
        })?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Backend, ProxyHeader};

    #[test]
    fn only_dns_backends_are_rechecked() {
        let mut config = Config::default();
        for (name, address) in [("fixed", Some([127, 0, 0, 1].into())), ("named", None)] {
            config.backends.insert(
                name.into(),
                Backend {
                    name: name.into(),
                    datacenter: String::new(),
                    host: "localhost".into(),
                    address,
                    port: 5672,
                    proxy_header: ProxyHeader::None,
                    tls: false,
                },
            );
        }
        assert_eq!(
            dns_backends(&config),
            [("named".to_string(), "localhost".to_string(), 5672)]
        );
    }

    #[test]
    fn a_failed_lookup_is_no_answer() {
        assert_eq!(lookup("127.0.0.1", 1), Some(vec![[127, 0, 0, 1].into()]));
        assert_eq!(lookup("no-such-host.invalid", 1), None);
    }
}
