//! The `STAT LISTEN` outputs: the filter grammar (`all`, `overall`, `process`,
//! `bufferpool`, `vhost=`, `backend=`, `source=`) and the JSON and human
//! renderings of a snapshot, with the original's field names and shapes
//! (docs/statistics.md#stat-listen-json, docs/statistics.md#stat-listen-human).
//!
//! Differences from the original, on purpose
//! (docs/statistics.md#removal-causes,
//! docs/statistics.md#what-a-session-counts): JSON strings are escaped; a
//! `removedConnectionProxy` field counts sessions the proxy ended;
//! `receiveLatency`/`sendLatency` (mean write latency in ms over the interval,
//! 0 without writes) are in the JSON; human "/s" rates are per second whatever
//! the interval. Pure functions; no I/O.

use super::{PoolStats, ProcessStats, Snapshot, Stats};
use std::collections::BTreeMap;
use std::fmt::Write as _;

/// `json` or `human`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Json,
    Human,
}

impl Format {
    /// Case-insensitive, as in the original.
    pub fn parse(word: &str) -> Option<Format> {
        match word.to_ascii_lowercase().as_str() {
            "json" => Some(Format::Json),
            "human" => Some(Format::Human),
            _ => None,
        }
    }
}

/// A filter term that is neither a keyword nor one `type=value`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("Filter specified incorrectly.")]
pub struct BadFilter;

/// What one listener wants to see.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Filter {
    All,
    Overall,
    Process,
    BufferPool,
    Vhost(String),
    Backend(String),
    Source(String),
    /// A `type=value` with a type the original does not know: accepted,
    /// and each tick says so instead of printing stats.
    Unknown(String),
}

impl Filter {
    /// Parses the optional filter term (`None` is `all`).
    pub fn parse(term: Option<&str>) -> Result<Filter, BadFilter> {
        let Some(term) = term else {
            return Ok(Filter::All);
        };
        match term.split_once('=') {
            None => match term.to_ascii_lowercase().as_str() {
                "all" => Ok(Filter::All),
                "overall" => Ok(Filter::Overall),
                "process" => Ok(Filter::Process),
                "bufferpool" => Ok(Filter::BufferPool),
                _ => Err(BadFilter),
            },
            Some((_, value)) if value.contains('=') => Err(BadFilter),
            Some((kind, value)) => Ok(match kind.to_ascii_lowercase().as_str() {
                "vhost" => Filter::Vhost(value.to_string()),
                "backend" => Filter::Backend(value.to_string()),
                "source" => Filter::Source(value.to_string()),
                _ => Filter::Unknown(kind.to_ascii_uppercase()),
            }),
        }
    }
}

/// One record for a listener, ending with a newline.
pub fn render(s: &Snapshot, format: Format, filter: &Filter) -> String {
    let mut out = String::with_capacity(512);
    let one = |map: &BTreeMap<String, Stats>, key: &str| map.get(key).copied().unwrap_or_default();
    match (format, filter) {
        (_, Filter::Unknown(kind)) => {
            let _ = write!(out, "Unknown filter type: '{kind}'");
        }
        (Format::Json, Filter::All) => json_all(&mut out, s),
        (Format::Json, Filter::Overall) => json_stats(&mut out, &s.overall),
        (Format::Json, Filter::Process) => json_process(&mut out, &s.process),
        (Format::Json, Filter::BufferPool) => json_pool(&mut out, &s.pool),
        (Format::Json, Filter::Vhost(v)) => json_stats(&mut out, &one(&s.vhosts, v)),
        (Format::Json, Filter::Backend(b)) => json_stats(&mut out, &one(&s.backends, b)),
        (Format::Json, Filter::Source(src)) => json_stats(&mut out, &one(&s.sources, src)),
        (Format::Human, Filter::All) => human_all(&mut out, s),
        (Format::Human, Filter::Overall) => human_stats(&mut out, &s.overall, rate_secs(s)),
        (Format::Human, Filter::Process) => human_process(&mut out, &s.process),
        (Format::Human, Filter::BufferPool) => human_pool(&mut out, &s.pool),
        (Format::Human, Filter::Vhost(v)) => {
            human_stats(&mut out, &one(&s.vhosts, v), rate_secs(s))
        }
        (Format::Human, Filter::Backend(b)) => {
            human_stats(&mut out, &one(&s.backends, b), rate_secs(s))
        }
        (Format::Human, Filter::Source(src)) => {
            human_stats(&mut out, &one(&s.sources, src), rate_secs(s))
        }
    }
    out.push('\n');
    out
}

/// Seconds the snapshot's deltas cover (never zero).
fn rate_secs(s: &Snapshot) -> f64 {
    let secs = s.interval.as_secs_f64();
    if secs > 0.0 {
        secs
    } else {
        1.0
    }
}

/// A JSON string literal: quotes, backslashes and control characters
/// escaped (the original wrote names verbatim).
pub fn json_string(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

/// The thirteen fields of the original, `removedConnectionProxy`, and the
/// two latencies.
pub fn json_stats(out: &mut String, s: &Stats) {
    let _ = write!(
        out,
        "{{\"pausedConnectionCount\": {}, \"activeConnectionCount\": {}, \"authDeniedConnectionCount\": {}, \
         \"limitedConnectionCount\": {}, \"removedConnectionGraceful\": {}, \"removedConnectionBrokerSnapped\": {}, \
         \"removedConnectionClientSnapped\": {}, \"removedConnectionProxy\": {}, \"packetsReceived\": {}, \
         \"packetsSent\": {}, \"framesReceived\": {}, \"framesSent\": {}, \"bytesReceived\": {}, \"bytesSent\": {}, \
         \"receiveLatency\": {:.6}, \"sendLatency\": {:.6}}}",
        s.gauges.paused,
        s.gauges.active,
        s.gauges.auth_denied,
        s.gauges.limited,
        s.removed.graceful,
        s.removed.broker,
        s.removed.client,
        s.removed.proxy,
        s.received.packets,
        s.sent.packets,
        s.received.frames,
        s.sent.frames,
        s.received.bytes,
        s.sent.bytes,
        s.received.avg_latency_ms().unwrap_or(0.0),
        s.sent.avg_latency_ms().unwrap_or(0.0),
    );
}

fn json_process(out: &mut String, p: &ProcessStats) {
    let _ = write!(
        out,
        "{{\"cpu_percent_overall\": {}, \"cpu_percent_user\": {}, \"cpu_percent_system\": {}, \"mem_rss_kb\": {}, \
         \"log_records_dropped\": {}}}",
        p.cpu_user + p.cpu_system,
        p.cpu_user,
        p.cpu_system,
        p.rss_kb,
        p.log_dropped
    );
}

fn json_pool(out: &mut String, p: &PoolStats) {
    let _ = write!(
        out,
        "{{\"spill_to_heap_count\": {}, \"pools\": {{",
        p.spill_to_heap
    );
    for (i, c) in p.classes.iter().enumerate() {
        if i > 0 {
            out.push_str(", ");
        }
        // The original's spacing: a space after `{`, none before `}`.
        let _ = write!(
            out,
            "\"{}\": {{ \"current\": {}, \"highest\": {}}}",
            c.size, c.current, c.highest
        );
    }
    out.push_str("}}");
}

fn json_map(out: &mut String, map: &BTreeMap<String, Stats>) {
    out.push('{');
    for (i, (key, stats)) in map.iter().enumerate() {
        if i > 0 {
            out.push_str(", ");
        }
        json_string(out, key);
        out.push_str(": ");
        json_stats(out, stats);
    }
    out.push('}');
}

fn json_all(out: &mut String, s: &Snapshot) {
    out.push_str("{\"overall\": ");
    json_stats(out, &s.overall);
    out.push_str(", \"process\": ");
    json_process(out, &s.process);
    out.push_str(", \"bufferpool\": ");
    json_pool(out, &s.pool);
    out.push_str(", \"vhosts\": ");
    json_map(out, &s.vhosts);
    out.push_str(", \"sources\": ");
    json_map(out, &s.sources);
    out.push_str(", \"backends\": ");
    json_map(out, &s.backends);
    out.push_str(", \"backendHealth\": {");
    for (i, h) in s.backend_health.iter().enumerate() {
        if i > 0 {
            out.push_str(", ");
        }
        let _ = write!(
            out,
            "{}: {{\"state\": \"{}\", \"consecutiveFailures\": {}, \"lastError\": {}}}",
            serde_json::Value::from(h.name.as_str()),
            h.state,
            h.consecutive_failures,
            h.last_error
                .as_deref()
                .map_or(serde_json::Value::Null, serde_json::Value::from)
        );
    }
    out.push_str("}, \"shards\": {");
    for (i, shard) in s.shards.iter().enumerate() {
        if i > 0 {
            out.push_str(", ");
        }
        let percent = |f: fn(&super::process::ThreadLoad) -> u64| {
            shard
                .thread_load
                .as_ref()
                .map_or(serde_json::Value::Null, |l| f(l).into())
        };
        let _ = write!(
            out,
            "\"{}\": {{\"activeConnectionCount\": {}, \"cpuPercent\": {}, \"runDelayPercent\": {}}}",
            shard.index,
            shard.active,
            percent(|l| l.cpu_percent),
            percent(|l| l.run_delay_percent)
        );
    }
    out.push_str("}}");
}

/// A number with six significant digits, trailing zeros dropped (the C++
/// stream default the original's byte sizes use: `1.46484 KB`).
fn g6(x: f64) -> String {
    let digits = if x >= 1.0 {
        x.log10().floor() as i32 + 1
    } else {
        1
    };
    let decimals = (6 - digits).max(0) as usize;
    let text = format!("{x:.decimals$}");
    if text.contains('.') {
        text.trim_end_matches('0').trim_end_matches('.').to_string()
    } else {
        text
    }
}

/// `512 B`, `1.46484 KB`, `3 MB`; 1 TiB and more fall back to bytes, as in
/// the original.
pub fn human_bytes(bytes: f64) -> String {
    const UNITS: [&str; 3] = ["KB", "MB", "GB"];
    if bytes < 1024.0 {
        return format!("{} B", bytes.round() as u64);
    }
    let mut value = bytes;
    for unit in UNITS {
        value /= 1024.0;
        if value < 1024.0 {
            return format!("{} {unit}", g6(value));
        }
    }
    format!("{} B", bytes.round() as u64)
}

fn human_stats(out: &mut String, s: &Stats, secs: f64) {
    let rate = |n: u64| (n as f64 / secs).round() as u64;
    let _ = write!(
        out,
        "Paused: {} Active: {} Auth denied: {} Limited connections: {} Removed(Clean): {} Removed(Broker): {} \
         Removed(Client): {} Removed(Proxy): {} IN: {}/s {} pkt/s {} frames/s OUT: {}/s {} pkt/s {} frames/s",
        s.gauges.paused,
        s.gauges.active,
        s.gauges.auth_denied,
        s.gauges.limited,
        s.removed.graceful,
        s.removed.broker,
        s.removed.client,
        s.removed.proxy,
        human_bytes(s.received.bytes as f64 / secs),
        rate(s.received.packets),
        rate(s.received.frames),
        human_bytes(s.sent.bytes as f64 / secs),
        rate(s.sent.packets),
        rate(s.sent.frames),
    );
}

fn human_process(out: &mut String, p: &ProcessStats) {
    let _ = write!(
        out,
        "CPU%: {} USR%: {} SYS%: {} RSS: {} Dropped log records: {}",
        p.cpu_user + p.cpu_system,
        p.cpu_user,
        p.cpu_system,
        human_bytes(p.rss_kb as f64 * 1024.0),
        p.log_dropped
    );
}

fn human_pool(out: &mut String, p: &PoolStats) {
    let _ = write!(
        out,
        "Spilt to heap: {}, Pools (Current/Peak): ",
        p.spill_to_heap
    );
    for (i, c) in p.classes.iter().enumerate() {
        if i > 0 {
            out.push_str(", ");
        }
        let _ = write!(out, "{}={}/{}", c.size, c.current, c.highest);
    }
}

fn human_all(out: &mut String, s: &Snapshot) {
    let secs = rate_secs(s);
    out.push_str("Overall:\n");
    human_stats(out, &s.overall, secs);
    out.push_str("\nProcess:\n");
    human_process(out, &s.process);
    out.push_str("\nBufferPool:\n");
    human_pool(out, &s.pool);
    for (title, map) in [
        ("Vhosts", &s.vhosts),
        ("Sources", &s.sources),
        ("Backends", &s.backends),
    ] {
        let _ = write!(out, "\n{title}:");
        for (key, stats) in map {
            let _ = write!(out, "\n{key}: ");
            human_stats(out, stats, secs);
        }
    }
    // Every block ends with an empty line (the caller adds the newline
    // that ends the last line).
    out.push('\n');
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stats::{BackendHealthView, PoolClass, Stats};
    use std::time::Duration;

    fn snapshot() -> Snapshot {
        let mut s = Snapshot {
            interval: Duration::from_millis(500),
            ..Default::default()
        };
        s.overall.gauges.active = 2;
        s.overall.received.bytes = 1500;
        s.overall.received.frames = 10;
        s.overall.removed.broker = 1;
        s.vhosts.insert("we\"ird\\".into(), s.overall);
        s.backends.insert("127.0.0.1_5672".into(), s.overall);
        s.pool.classes.push(PoolClass {
            size: 131072,
            current: 1,
            highest: 4,
        });
        s
    }

    #[test]
    fn json_all_shows_each_backends_health() {
        let mut s = snapshot();
        s.backend_health = vec![
            BackendHealthView {
                name: "b\"1".into(),
                state: "down",
                consecutive_failures: 3,
                last_error: Some("connect refused by probe".into()),
            },
            BackendHealthView {
                name: "b2".into(),
                state: "up",
                consecutive_failures: 0,
                last_error: None,
            },
        ];
        let json = render(&s, Format::Json, &Filter::All);
        let v: serde_json::Value = serde_json::from_str(&json).unwrap();
        assert_eq!(v["backendHealth"]["b\"1"]["state"], "down");
        assert_eq!(v["backendHealth"]["b\"1"]["consecutiveFailures"], 3);
        assert_eq!(
            v["backendHealth"]["b\"1"]["lastError"],
            "connect refused by probe"
        );
        assert_eq!(
            v["backendHealth"]["b2"]["lastError"],
            serde_json::Value::Null
        );
        // The human blocks keep the original's shape: health is in JSON only.
        let human = render(&s, Format::Human, &Filter::All);
        assert!(!human.contains("b2"), "{human}");
    }

    #[test]
    fn json_all_shows_each_shards_load() {
        let mut s = snapshot();
        s.shards = crate::stats::two_shards_one_loaded();
        let json = render(&s, Format::Json, &Filter::All);
        let v: serde_json::Value = serde_json::from_str(&json).unwrap();
        assert_eq!(v["shards"]["0"]["activeConnectionCount"], 3);
        assert_eq!(v["shards"]["0"]["cpuPercent"], 72);
        assert_eq!(v["shards"]["0"]["runDelayPercent"], 30);
        assert_eq!(v["shards"]["1"]["cpuPercent"], serde_json::Value::Null);
        assert_eq!(v["shards"]["1"]["runDelayPercent"], serde_json::Value::Null);
        // The human blocks keep the original's shape.
        let human = render(&s, Format::Human, &Filter::All);
        assert!(!human.to_lowercase().contains("shard"), "{human}");
    }

    #[test]
    fn filters_parse_as_in_the_original() {
        assert_eq!(Filter::parse(None), Ok(Filter::All));
        assert_eq!(Filter::parse(Some("OVERALL")), Ok(Filter::Overall));
        assert_eq!(Filter::parse(Some("BufferPool")), Ok(Filter::BufferPool));
        assert_eq!(
            Filter::parse(Some("VHOST=Prod")),
            Ok(Filter::Vhost("Prod".into()))
        );
        assert_eq!(
            Filter::parse(Some("colour=red")),
            Ok(Filter::Unknown("COLOUR".into()))
        );
        assert_eq!(Filter::parse(Some("nonsense")), Err(BadFilter));
        assert_eq!(Filter::parse(Some("vhost=a=b")), Err(BadFilter));
    }

    #[test]
    fn json_is_valid_escaped_and_has_every_field() {
        let s = snapshot();
        let text = render(&s, Format::Json, &Filter::All);
        assert!(text.ends_with("}\n"));
        let v: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(v["vhosts"]["we\"ird\\"]["bytesReceived"], 1500);
        assert_eq!(v["overall"]["removedConnectionBrokerSnapped"], 1);
        assert_eq!(v["bufferpool"]["pools"]["131072"]["highest"], 4);
        assert_eq!(v["process"]["cpu_percent_overall"], 0);
        assert_eq!(v["overall"].as_object().unwrap().len(), 16);
        let zero = render(&s, Format::Json, &Filter::Source("nobody".into()));
        let v: serde_json::Value = serde_json::from_str(&zero).unwrap();
        assert_eq!(v["activeConnectionCount"], 0);
    }

    #[test]
    fn human_rates_are_per_second() {
        let s = snapshot();
        let text = render(&s, Format::Human, &Filter::Overall);
        // 1500 bytes and 10 frames in half a second.
        assert!(
            text.contains("IN: 2.92969 KB/s 0 pkt/s 20 frames/s"),
            "{text}"
        );
        assert!(text.starts_with("Paused: 0 Active: 2 Auth denied: 0 Limited connections: 0 Removed(Clean): 0 Removed(Broker): 1"));
        let all = render(&s, Format::Human, &Filter::All);
        assert!(all.starts_with("Overall:\nPaused: 0"), "{all}");
        assert!(all.contains("\nBufferPool:\nSpilt to heap: 0, Pools (Current/Peak): 131072=1/4\nVhosts:\nwe\"ird\\: Paused"));
        assert!(all.ends_with("frames/s\n\n"), "{all:?}");
        assert_eq!(
            render(&s, Format::Human, &Filter::Unknown("X".into())),
            "Unknown filter type: 'X'\n"
        );
    }

    #[test]
    fn byte_sizes_read_like_the_original() {
        assert_eq!(human_bytes(512.0), "512 B");
        assert_eq!(human_bytes(1500.0), "1.46484 KB");
        assert_eq!(human_bytes(10.0 * 1024.0 * 1024.0), "10 MB");
        assert_eq!(human_bytes(2.0 * 1024f64.powi(4)), "2199023255552 B");
        let _ = Stats::default();
    }
}
