//! StatsD output for `STAT SEND host port` (docs/statistics.md#statsd): one UDP
//! datagram per metric, `amqpprox.<metric>[,<tag>=<value>]*:<value>|<type>`,
//! with the original's metric names, tags and order, fire and forget.
//!
//! Tag values are sanitised (docs/statistics.md#what-a-session-counts): every
//! character that would break the line or a tag (`,` `:` `|` `=` `#` `@`,
//! whitespace, control characters) becomes `_`. `removedConnectionProxy`,
//! `log_records_dropped` and the per-shard `shard_cpu_percent` and
//! `shard_run_delay_percent` are this project's additions. Runs on the
//! aggregator thread; never on a shard.

use super::{Snapshot, Stats};
use std::net::{SocketAddr, UdpSocket};

/// A tag value that cannot break the line format.
pub fn sanitise(value: &str) -> String {
    value
        .chars()
        .map(|c| match c {
            ',' | ':' | '|' | '=' | '#' | '@' => '_',
            c if c.is_whitespace() || c.is_control() => '_',
            c => c,
        })
        .collect()
}

fn stats_lines(out: &mut Vec<String>, s: &Stats, tags: &str) {
    let gauges = [
        ("pausedConnectionCount", s.gauges.paused),
        ("activeConnectionCount", s.gauges.active),
        ("authDeniedConnectionCount", s.gauges.auth_denied),
        ("limitedConnectionCount", s.gauges.limited),
    ];
    for (name, v) in gauges {
        out.push(format!("amqpprox.{name},{tags}:{v}|g"));
    }
    let counters = [
        ("removedConnectionGraceful", s.removed.graceful),
        ("removedConnectionBrokerSnapped", s.removed.broker),
        ("removedConnectionClientSnapped", s.removed.client),
        ("removedConnectionProxy", s.removed.proxy),
        ("packetsReceived", s.received.packets),
        ("packetsSent", s.sent.packets),
        ("framesReceived", s.received.frames),
        ("framesSent", s.sent.frames),
        ("bytesReceived", s.received.bytes),
        ("bytesSent", s.sent.bytes),
    ];
    for (name, v) in counters {
        out.push(format!("amqpprox.{name},{tags}:{v}|c"));
    }
    // Distributions only when a write completed in the interval.
    for (name, latency) in [
        ("sendLatency", s.sent.avg_latency_ms()),
        ("receiveLatency", s.received.avg_latency_ms()),
    ] {
        if let Some(ms) = latency {
            out.push(format!("amqpprox.{name},{tags}:{ms:.6}|d"));
        }
    }
}

/// Every datagram of one snapshot, in the original's order.
pub fn lines(s: &Snapshot) -> Vec<String> {
    let mut out = Vec::with_capacity(64);
    stats_lines(&mut out, &s.overall, "rmqEndpointType=overall");
    let p = &s.process;
    for (name, v) in [
        ("cpu_percent_overall", p.cpu_user + p.cpu_system),
        ("cpu_percent_user", p.cpu_user),
        ("cpu_percent_system", p.cpu_system),
        ("mem_rss_kb", p.rss_kb),
        ("log_records_dropped", p.log_dropped),
    ] {
        out.push(format!("amqpprox.{name}:{v}|c"));
    }
    for (vhost, stats) in s.vhosts.iter().filter(|(v, _)| !v.is_empty()) {
        let tags = format!("rmqEndpointType=vhost,rmqVhostName={}", sanitise(vhost));
        stats_lines(&mut out, stats, &tags);
    }
    out.push(format!(
        "amqpprox.spill_to_heap_count:{}|c",
        s.pool.spill_to_heap
    ));
    for c in &s.pool.classes {
        out.push(format!("amqpprox.pools_{}_current:{}|c", c.size, c.current));
        out.push(format!("amqpprox.pools_{}_highest:{}|c", c.size, c.highest));
    }
    for (source, stats) in &s.sources {
        let tags = format!(
            "rmqEndpointType=sources,rmqEndpointHostname={}",
            sanitise(source)
        );
        stats_lines(&mut out, stats, &tags);
    }
    for (backend, stats) in &s.backends {
        let tags = format!(
            "rmqEndpointType=backends,rmqEndpointHostname={}",
            sanitise(backend)
        );
        stats_lines(&mut out, stats, &tags);
    }
    // This project's addition, after the original's lines: each shard's
    // share of a core over the interval, once two readings exist.
    for shard in &s.shards {
        if let Some(load) = &shard.thread_load {
            let i = shard.index;
            out.push(format!(
                "amqpprox.shard_cpu_percent,shard={i}:{}|g",
                load.cpu_percent
            ));
            out.push(format!(
                "amqpprox.shard_run_delay_percent,shard={i}:{}|g",
                load.run_delay_percent
            ));
        }
    }
    out
}

/// The sockets datagrams leave from (an ephemeral port per address family).
#[derive(Default)]
pub struct StatsdSender {
    v4: Option<UdpSocket>,
    v6: Option<UdpSocket>,
}

impl StatsdSender {
    fn socket(&mut self, to: SocketAddr) -> std::io::Result<&UdpSocket> {
        let (slot, bind) = if to.is_ipv4() {
            (&mut self.v4, "0.0.0.0:0")
        } else {
            (&mut self.v6, "[::]:0")
        };
        if slot.is_none() {
            let socket = UdpSocket::bind(bind)?;
            // Never wait on a full send buffer: statistics are best effort.
            socket.set_nonblocking(true)?;
            *slot = Some(socket);
        }
        Ok(slot.as_ref().expect("just set"))
    }

    /// Sends the snapshot to every target; failures are logged once per
    /// target and tick, and never stop the others.
    pub fn send(&mut self, s: &Snapshot, targets: &[SocketAddr]) {
        if targets.is_empty() {
            return;
        }
        let lines = lines(s);
        for &to in targets {
            let socket = match self.socket(to) {
                Ok(socket) => socket,
                Err(e) => {
                    log::warn!("Cannot open a UDP socket for StatsD to {to}: {e}");
                    continue;
                }
            };
            let mut failed = None;
            for line in &lines {
                if let Err(e) = socket.send_to(line.as_bytes(), to) {
                    failed = Some(e);
                }
            }
            if let Some(e) = failed {
                log::warn!("Sending stats to {to} failed: {e}");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_carry_the_original_names_and_tags() {
        let mut s = Snapshot::default();
        s.overall.gauges.active = 2;
        s.overall.sent.writes = 2;
        s.overall.sent.latency_ns = 3_000_000;
        s.vhosts.insert("".into(), Stats::default());
        s.vhosts.insert("a,b:c|d e=f".into(), s.overall);
        s.backends.insert("127.0.0.1_5672".into(), s.overall);
        s.shards = crate::stats::two_shards_one_loaded();
        let all = lines(&s);
        assert_eq!(
            all[0],
            "amqpprox.pausedConnectionCount,rmqEndpointType=overall:0|g"
        );
        assert!(all.contains(&"amqpprox.activeConnectionCount,rmqEndpointType=overall:2|g".into()));
        assert!(all.contains(&"amqpprox.sendLatency,rmqEndpointType=overall:1.500000|d".into()));
        assert!(!all.iter().any(|l| l.starts_with("amqpprox.receiveLatency")));
        assert!(all.contains(&"amqpprox.cpu_percent_overall:0|c".into()));
        assert!(all.contains(
            &"amqpprox.bytesReceived,rmqEndpointType=vhost,rmqVhostName=a_b_c_d_e_f:0|c".into()
        ));
        assert!(!all.iter().any(|l| l.contains("rmqVhostName=:")));
        assert!(all.contains(
            &"amqpprox.activeConnectionCount,rmqEndpointType=backends,rmqEndpointHostname=127.0.0.1_5672:2|g"
                .into()
        ));
        // The shards' loads come last; a shard without one sends nothing.
        let n = all.len();
        assert_eq!(
            all[n - 2..],
            [
                "amqpprox.shard_cpu_percent,shard=0:72|g".to_string(),
                "amqpprox.shard_run_delay_percent,shard=0:30|g".to_string()
            ]
        );
        assert!(!all.iter().any(|l| l.contains("shard=1")));
    }
}
