//! Prometheus text exposition (format 0.0.4) of the last snapshot, for
//! `--metricsPort` (docs/statistics.md#prometheus).
//!
//! Names are prefixed `amqpprox_`; counters end in `_total` and run from
//! the start of their series (not per interval, unlike StatsD). Traffic and
//! session series carry `vhost`, `backend` and `source` labels (one series
//! per combination seen, so any grouping is a `sum by`); `source` is empty
//! while per-source collection is disabled. Per-shard series (`shard`
//! label) show imbalance between cores. Pure rendering; no I/O.

use super::{BackendState, Series, Snapshot};
use std::fmt::Write as _;

/// A label value with `\`, `"` and newlines escaped.
fn escape(out: &mut String, value: &str) {
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
}

fn header(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

fn sample(out: &mut String, name: &str, labels: &[(&str, &str)], value: impl std::fmt::Display) {
    out.push_str(name);
    if !labels.is_empty() {
        out.push('{');
        for (i, (k, v)) in labels.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            let _ = write!(out, "{k}=\"");
            escape(out, v);
            out.push('"');
        }
        out.push('}');
    }
    let _ = writeln!(out, " {value}");
}

/// A value of a series, with an extra label pair (`cause`, `direction`)
/// when the family has one.
type Labelled<'a> = (Option<(&'a str, &'a str)>, fn(&Series) -> f64);

/// One family over every (vhost, backend, source) series.
fn per_series(
    out: &mut String,
    series: &[Series],
    name: &str,
    kind: &str,
    help: &str,
    values: &[Labelled<'_>],
) {
    header(out, name, kind, help);
    for s in series {
        for (extra, value) in values {
            let mut labels = vec![
                ("vhost", s.vhost.as_str()),
                ("backend", s.backend.as_str()),
                ("source", s.source.as_str()),
            ];
            if let Some(pair) = extra {
                labels.insert(0, *pair);
            }
            sample(out, name, &labels, value(s));
        }
    }
}

/// The exposition of `snapshot` (families without samples before the
/// first tick).
/// `buffer_size`: one pump buffer's size, shown before the first tick too;
/// `backends`: the configured backends, whose state shows at once.
pub fn render(
    snapshot: Option<&Snapshot>,
    buffer_size: usize,
    backends: &[BackendState],
) -> String {
    let empty = Snapshot::default();
    let s = snapshot.unwrap_or(&empty);
    let mut out = String::with_capacity(4096 + s.series.len() * 1024);
    let series = &s.series;
    type V = fn(&Series) -> f64;
    let gauges: [(&str, &str, V); 4] = [
        (
            "amqpprox_active_connections",
            "Sessions not yet disconnected (handshaking, paused or passing traffic).",
            |s| s.stats.gauges.active as f64,
        ),
        (
            "amqpprox_paused_connections",
            "Sessions paused by the operator.",
            |s| s.stats.gauges.paused as f64,
        ),
        (
            "amqpprox_auth_denied_connections",
            "Sessions refused by the auth service in the last interval.",
            |s| s.stats.gauges.auth_denied as f64,
        ),
        (
            "amqpprox_limited_connections",
            "Sessions refused by a connection limit in the last interval.",
            |s| s.stats.gauges.limited as f64,
        ),
    ];
    for (name, help, value) in gauges {
        per_series(&mut out, series, name, "gauge", help, &[(None, value)]);
    }
    per_series(
        &mut out,
        series,
        "amqpprox_removed_connections_total",
        "counter",
        "Sessions removed, by cause: graceful (AMQP close by the client or the operator), broker, client (socket ended without a close), proxy (forced, refused, protocol error).",
        &[
            (Some(("cause", "graceful")), |s| s.stats.removed.graceful as f64),
            (Some(("cause", "broker")), |s| s.stats.removed.broker as f64),
            (Some(("cause", "client")), |s| s.stats.removed.client as f64),
            (Some(("cause", "proxy")), |s| s.stats.removed.proxy as f64),
        ],
    );
    let counters: [(&str, &str, V); 6] = [
        (
            "amqpprox_bytes_received_total",
            "Bytes from clients to brokers after the handshake.",
            |s| s.stats.received.bytes as f64,
        ),
        (
            "amqpprox_bytes_sent_total",
            "Bytes from brokers to clients after the handshake.",
            |s| s.stats.sent.bytes as f64,
        ),
        (
            "amqpprox_frames_received_total",
            "AMQP frames from clients to brokers after the handshake.",
            |s| s.stats.received.frames as f64,
        ),
        (
            "amqpprox_frames_sent_total",
            "AMQP frames from brokers to clients after the handshake.",
            |s| s.stats.sent.frames as f64,
        ),
        (
            "amqpprox_packets_received_total",
            "Socket reads that carried client data after the handshake.",
            |s| s.stats.received.packets as f64,
        ),
        (
            "amqpprox_packets_sent_total",
            "Socket reads that carried broker data after the handshake.",
            |s| s.stats.sent.packets as f64,
        ),
    ];
    for (name, help, value) in counters {
        per_series(&mut out, series, name, "counter", help, &[(None, value)]);
    }
    per_series(
        &mut out,
        series,
        "amqpprox_writes_total",
        "counter",
        "Completed pass-through writes: ingress toward brokers, egress toward clients.",
        &[
            (Some(("direction", "ingress")), |s| {
                s.stats.received.writes as f64
            }),
            (Some(("direction", "egress")), |s| {
                s.stats.sent.writes as f64
            }),
        ],
    );
    per_series(
        &mut out,
        series,
        "amqpprox_write_latency_seconds_total",
        "counter",
        "Time spent in completed pass-through writes; divide by amqpprox_writes_total for the mean.",
        &[
            (Some(("direction", "ingress")), |s| s.stats.received.latency_ns as f64 / 1e9),
            (Some(("direction", "egress")), |s| s.stats.sent.latency_ns as f64 / 1e9),
        ],
    );
    shards(&mut out, s, buffer_size);
    backend_states(&mut out, backends);
    process(&mut out, s);
    out
}

/// One sample per configured backend, labelled by its name (the traffic
/// series' `backend` label is the address a session connected to).
fn backend_states(out: &mut String, backends: &[BackendState]) {
    let name = "amqpprox_backend_drained";
    header(
        out,
        name,
        "gauge",
        "1 while BACKEND DRAIN keeps new sessions away from the backend and moves its sessions to other members.",
    );
    for b in backends {
        sample(out, name, &[("name", &b.name)], u8::from(b.drained));
    }
}

fn shards(out: &mut String, s: &Snapshot, buffer_size: usize) {
    type V = fn(&super::ShardSummary) -> u64;
    let families: [(&str, &str, &str, V); 5] = [
        (
            "amqpprox_shard_active_connections",
            "gauge",
            "Sessions not yet disconnected, per shard.",
            |x| x.active,
        ),
        (
            "amqpprox_shard_bytes_received_total",
            "counter",
            "Bytes from clients to brokers, per shard.",
            |x| x.received.bytes,
        ),
        (
            "amqpprox_shard_bytes_sent_total",
            "counter",
            "Bytes from brokers to clients, per shard.",
            |x| x.sent.bytes,
        ),
        (
            "amqpprox_buffer_pool_buffers_in_use",
            "gauge",
            "Pump buffers lent out, per shard.",
            |x| x.buffers_in_use,
        ),
        (
            "amqpprox_buffer_pool_buffers_allocated_total",
            "counter",
            "Pump buffers ever allocated, per shard.",
            |x| x.buffers_allocated,
        ),
    ];
    for (name, kind, help, value) in families {
        header(out, name, kind, help);
        for shard in &s.shards {
            let index = shard.index.to_string();
            sample(out, name, &[("shard", &index)], value(shard));
        }
    }
    type T = fn(&super::process::ThreadTimes) -> u64;
    let thread_families: [(&str, &str, T); 2] = [
        (
            "amqpprox_shard_cpu_seconds_total",
            "Time the shard's thread ran on a CPU.",
            |t| t.on_cpu_ns,
        ),
        (
            "amqpprox_shard_run_delay_seconds_total",
            "Time the shard's thread was ready to run and waited for a CPU.",
            |t| t.run_delay_ns,
        ),
    ];
    for (name, help, nanos) in thread_families {
        header(out, name, "counter", help);
        for shard in &s.shards {
            if let Some(times) = &shard.thread_times {
                let index = shard.index.to_string();
                sample(out, name, &[("shard", &index)], nanos(times) as f64 / 1e9);
            }
        }
    }
    header(
        out,
        "amqpprox_buffer_pool_buffer_size_bytes",
        "gauge",
        "Size of one pump buffer.",
    );
    sample(
        out,
        "amqpprox_buffer_pool_buffer_size_bytes",
        &[],
        buffer_size,
    );
}

fn process(out: &mut String, s: &Snapshot) {
    let p = &s.process;
    header(
        out,
        "amqpprox_process_cpu_seconds_total",
        "counter",
        "CPU time of the process, by mode.",
    );
    sample(
        out,
        "amqpprox_process_cpu_seconds_total",
        &[("mode", "user")],
        p.cpu_user_seconds,
    );
    sample(
        out,
        "amqpprox_process_cpu_seconds_total",
        &[("mode", "system")],
        p.cpu_system_seconds,
    );
    header(
        out,
        "amqpprox_process_resident_memory_bytes",
        "gauge",
        "Resident set size of the process.",
    );
    sample(
        out,
        "amqpprox_process_resident_memory_bytes",
        &[],
        p.rss_kb * 1024,
    );
    header(
        out,
        "amqpprox_log_records_dropped_total",
        "counter",
        "Log records dropped because the log writer could not keep up.",
    );
    sample(
        out,
        "amqpprox_log_records_dropped_total",
        &[],
        p.log_dropped,
    );
    header(
        out,
        "amqpprox_stats_interval_seconds",
        "gauge",
        "Time covered by the last statistics tick (--cleanupIntervalMs).",
    );
    sample(
        out,
        "amqpprox_stats_interval_seconds",
        &[],
        s.interval.as_secs_f64(),
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stats::{Series, Stats};

    #[test]
    fn exposition_has_help_type_and_escaped_labels() {
        let mut stats = Stats::default();
        stats.gauges.active = 1;
        stats.received.bytes = 42;
        stats.removed.broker = 2;
        let s = Snapshot {
            series: vec![Series {
                vhost: "a\"b".into(),
                backend: "127.0.0.1_5672".into(),
                source: "10.0.0.1".into(),
                stats,
            }],
            shards: crate::stats::two_shards_one_loaded(),
            ..Default::default()
        };
        let drained = [BackendState {
            name: "b1".into(),
            drained: true,
        }];
        let text = render(Some(&s), 4096, &drained);
        assert!(text.contains("# TYPE amqpprox_backend_drained gauge\n"));
        assert!(text.contains("amqpprox_backend_drained{name=\"b1\"} 1\n"));
        assert!(text.contains("# TYPE amqpprox_bytes_received_total counter\n"));
        assert!(text.contains(
            "amqpprox_bytes_received_total{vhost=\"a\\\"b\",backend=\"127.0.0.1_5672\",source=\"10.0.0.1\"} 42\n"
        ));
        assert!(text.contains(
            "amqpprox_removed_connections_total{cause=\"broker\",vhost=\"a\\\"b\",backend=\"127.0.0.1_5672\",source=\"10.0.0.1\"} 2\n"
        ));
        assert!(text.contains("amqpprox_shard_active_connections{shard=\"0\"} 3\n"));
        assert!(text.contains("# TYPE amqpprox_shard_cpu_seconds_total counter\n"));
        assert!(text.contains("amqpprox_shard_cpu_seconds_total{shard=\"0\"} 1.5\n"));
        assert!(text.contains("amqpprox_shard_run_delay_seconds_total{shard=\"0\"} 0.25\n"));
        assert!(!text.contains("amqpprox_shard_cpu_seconds_total{shard=\"1\"}"));
        let before = render(None, 4096, &[]);
        assert!(before.contains("# HELP amqpprox_active_connections "));
    }
}
