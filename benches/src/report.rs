//! Results: every run's metrics, their medians per (scenario, target) and
//! how far the runs spread around them, the ratio of each target to direct,
//! the proxy's CPU per unit of work, the
//! issue's goals (#6) checked against the medians (that of
//! `connections-tls` against the `external` target, HAProxy in the issue,
//! not direct), each proxy target paired round by round with the external
//! one, the printed tables and the JSON file written for later comparison.
//!
//! Owns presentation and the goal thresholds. Never runs load, never starts
//! processes, and never drops a run: failed runs are recorded with their
//! error and left out of the medians.

use crate::scenarios::Metrics;
use anyhow::{Context, Result};
use serde::Serialize;
use std::collections::BTreeMap;
use std::path::Path;

/// The direct target's name; ratios are taken against it.
pub const DIRECT: &str = "direct";
/// The external target's name: the peer of the `connections-tls` goal.
pub const EXTERNAL: &str = "external";
/// `connections-tls`: amqpprox with all shards must reach this many times
/// the external proxy's connection rate.
const TLS_GOAL_VS_EXTERNAL: f64 = 1.3;

/// One measured run (or a failed one, with `error`).
#[derive(Debug, Clone, Serialize)]
pub struct RunRecord {
    pub scenario: String,
    pub target: String,
    pub repeat: usize,
    pub metrics: Metrics,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// One line of the summary table (and of the JSON summary).
#[derive(Debug, Clone, Serialize)]
pub struct Row {
    pub scenario: String,
    pub target: String,
    pub value: String,
    pub ratio: Option<f64>,
    pub cpu: String,
    pub goal: String,
    pub pass: Option<bool>,
    pub runs: usize,
    pub medians: Metrics,
    /// How far the runs spread around each median: half the range over
    /// the median (0.05 is +-5%); only with two runs or more.
    pub spreads: Metrics,
}

/// The median of each metric over the runs of one (scenario, target), and
/// how far the runs spread around it: half the range over the median, for
/// metrics with two runs or more (how far a median can be trusted on a
/// machine whose speed drifts between runs).
fn medians_and_spreads(runs: &[&RunRecord]) -> (Metrics, Metrics) {
    let mut values: BTreeMap<&str, Vec<f64>> = BTreeMap::new();
    for r in runs {
        for (k, v) in &r.metrics {
            values.entry(k).or_default().push(*v);
        }
    }
    let (mut medians, mut spreads) = (Metrics::new(), Metrics::new());
    for (k, mut v) in values {
        // `median` sorts, so the ends are the range.
        let mid = median(&mut v);
        let (lo, hi) = (v[0], v[v.len() - 1]);
        if v.len() >= 2 && mid.is_finite() && mid != 0.0 {
            spreads.insert(k.to_string(), (hi - lo) / 2.0 / mid.abs());
        }
        medians.insert(k.to_string(), mid);
    }
    (medians, spreads)
}

/// The metric a scenario's value is judged by, and its CPU per unit.
fn headline_keys(scenario: &str) -> (&'static str, &'static str) {
    match scenario {
        "large" => ("mb_per_s", "cpu_s_per_gb"),
        "small" => ("msgs_per_s", "cpu_s_per_gb"),
        "connections" | "connections-tls" | "connections-remote" => {
            ("conns_per_s", "cpu_us_per_conn")
        }
        "latency" => ("p99_us", "cpu_us_per_rt"),
        "idle" => ("kib_per_session", "cpu_us_per_session"),
        _ => ("msgs_per_s", "cpu_us_per_msg"),
    }
}

pub fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    match v.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

/// Medians and spreads per (scenario, target), in the order the runs
/// happened.
fn grouped(runs: &[RunRecord]) -> Vec<(String, String, usize, Metrics, Metrics)> {
    let mut keys: Vec<(String, String)> = Vec::new();
    for r in runs {
        let key = (r.scenario.clone(), r.target.clone());
        if !keys.contains(&key) {
            keys.push(key);
        }
    }
    keys.into_iter()
        .map(|(scenario, target)| {
            let ok: Vec<&RunRecord> = runs
                .iter()
                .filter(|r| r.scenario == scenario && r.target == target && r.error.is_none())
                .collect();
            let (m, spread) = medians_and_spreads(&ok);
            (scenario, target, ok.len(), m, spread)
        })
        .collect()
}

fn fmt_num(v: f64) -> String {
    match v.abs() {
        x if x >= 1000.0 => format!("{v:.0}"),
        x if x >= 10.0 => format!("{v:.1}"),
        _ => format!("{v:.2}"),
    }
}

fn get(m: &Metrics, key: &str) -> Option<f64> {
    m.get(key).copied().filter(|v| v.is_finite())
}

/// The shard count of a `proxy-<n>` target name.
fn proxy_shards(target: &str) -> Option<usize> {
    target.strip_prefix("proxy-")?.parse().ok()
}

/// Builds the table rows: one per (scenario, target), plus a peak-RSS row
/// per proxy target of `connections` and `connections-tls`.
pub fn rows(runs: &[RunRecord]) -> Vec<Row> {
    let groups = grouped(runs);
    let median_of = |scenario: &str, target: &str| {
        groups
            .iter()
            .find(|(s, t, n, _, _)| s == scenario && t == target && *n > 0)
            .map(|(_, _, _, m, _)| m.clone())
    };
    let direct_of = |scenario: &str| median_of(scenario, DIRECT);
    // "proxy-N": the proxy target with the most shards in the scenario.
    let widest_proxy = |scenario: &str| {
        groups
            .iter()
            .filter(|(s, _, _, _, _)| s == scenario)
            .filter_map(|(_, t, _, _, _)| Some((proxy_shards(t)?, t.as_str())))
            .max()
            .map(|(_, t)| t.to_string())
    };
    let mut out = Vec::new();
    for (scenario, target, n, m, spread) in &groups {
        let direct = direct_of(scenario);
        let is_direct = target == DIRECT;
        let mut row = Row {
            scenario: scenario.clone(),
            target: target.clone(),
            value: "-".into(),
            ratio: None,
            cpu: "-".into(),
            goal: "-".into(),
            pass: None,
            runs: *n,
            medians: m.clone(),
            spreads: spread.clone(),
        };
        if *n == 0 {
            row.value = "FAILED".into();
            out.push(row);
            continue;
        }
        let ratio_of = |key: &str| Some(get(m, key)? / get(direct.as_ref()?, key)?);
        let external = median_of(scenario, EXTERNAL);
        let vs_external = |key: &str| Some(get(m, key)? / get(external.as_ref()?, key)?);
        let cpu = |key: &str, unit: &str| {
            get(m, key).map_or("-".into(), |v| format!("{} {unit}", fmt_num(v)))
        };
        let min_ratio = |row: &mut Row, key: &str, goal: f64| {
            row.ratio = ratio_of(key);
            if !is_direct {
                row.pass = row.ratio.map(|r| r >= goal);
                row.goal = format!(">= {goal:.2}x");
            }
        };
        match scenario.as_str() {
            "large" | "small" | "rabbit-publish" | "rabbit-confirm" => {
                let (mbs, mps) = (
                    get(m, "mb_per_s").unwrap_or(f64::NAN),
                    get(m, "msgs_per_s").unwrap_or(f64::NAN),
                );
                if scenario == "large" {
                    row.value = format!("{} MB/s ({} msg/s)", fmt_num(mbs), fmt_num(mps));
                    min_ratio(&mut row, "mb_per_s", 0.75);
                    row.cpu = cpu("cpu_s_per_gb", "s/GB");
                } else if scenario == "small" {
                    row.value = format!("{} msg/s ({} MB/s)", fmt_num(mps), fmt_num(mbs));
                    min_ratio(&mut row, "msgs_per_s", 0.95);
                    row.cpu = cpu("cpu_s_per_gb", "s/GB");
                } else {
                    row.value = format!("{} msg/s", fmt_num(mps));
                    row.ratio = ratio_of("msgs_per_s");
                    row.cpu = cpu("cpu_us_per_msg", "us/msg");
                }
            }
            "stream" => {
                row.value = format!(
                    "publish {} msg/s, consume {} msg/s",
                    fmt_num(get(m, "msgs_per_s").unwrap_or(f64::NAN)),
                    fmt_num(get(m, "consume_msgs_per_s").unwrap_or(f64::NAN))
                );
                row.ratio = ratio_of("msgs_per_s");
                row.cpu = cpu("cpu_us_per_msg", "us/msg");
            }
            // pika writes each publish on its own: trickle from a real client.
            "trickle" | "trickle-confirm" | "rabbit-pika" | "rabbit-pika-confirm" => {
                let rate = get(m, "msgs_per_s").unwrap_or(f64::NAN);
                row.value = format!("{} msg/s", fmt_num(rate));
                row.ratio = ratio_of("msgs_per_s");
                row.cpu = cpu("cpu_us_per_msg", "us/msg");
                if proxy_shards(target).is_some() {
                    row.goal = match external {
                        Some(_) => {
                            let (r, c) = (vs_external("msgs_per_s"), vs_external("cpu_us_per_msg"));
                            if let (Some(r), Some(c)) = (r, c) {
                                row.pass = Some(r >= 1.0 && c <= 1.0);
                            }
                            let x = |v: Option<f64>| v.map_or("-".into(), |v| format!("{v:.2}x"));
                            format!("vs external: rate {} >= 1, CPU/msg {} <= 1", x(r), x(c))
                        }
                        None => "rate >= external, CPU/msg <= external: no external run".into(),
                    };
                }
            }
            "connections" => {
                row.value = format!(
                    "{} conn/s",
                    fmt_num(get(m, "conns_per_s").unwrap_or(f64::NAN))
                );
                min_ratio(&mut row, "conns_per_s", 0.90);
                row.cpu = cpu("cpu_us_per_conn", "us/conn");
            }
            // The link sets the pace: the rate is the parallel clients over
            // the time one takes to open and close.
            "connections-remote" => {
                let ms = |k: &str| fmt_num(get(m, k).unwrap_or(f64::NAN) / 1000.0);
                row.value = format!(
                    "{} conn/s, open p50 {} / p99 {} ms",
                    fmt_num(get(m, "conns_per_s").unwrap_or(f64::NAN)),
                    ms("open_p50_us"),
                    ms("open_p99_us")
                );
                row.ratio = ratio_of("conns_per_s");
                row.cpu = cpu("cpu_us_per_conn", "us/conn");
                if proxy_shards(target).is_some() {
                    row.goal = match vs_external("conns_per_s") {
                        Some(vs) => {
                            row.pass = Some(vs >= 1.0);
                            format!("vs external {vs:.2}x >= 1")
                        }
                        None => ">= external: no external run".into(),
                    };
                }
            }
            "connections-tls" => {
                let rate = get(m, "conns_per_s").unwrap_or(f64::NAN);
                row.value = format!("{} conn/s", fmt_num(rate));
                row.ratio = ratio_of("conns_per_s");
                row.cpu = cpu("cpu_us_per_conn", "us/conn");
                if proxy_shards(target).is_some() {
                    let vs = vs_external("conns_per_s");
                    let goal = TLS_GOAL_VS_EXTERNAL;
                    let widest = widest_proxy(scenario).as_deref() == Some(target.as_str());
                    row.goal = match (vs, widest) {
                        (Some(vs), true) => {
                            row.pass = Some(vs >= goal);
                            format!("vs external {vs:.2}x >= {goal:.2}x")
                        }
                        (Some(vs), false) => format!("vs external {vs:.2}x"),
                        (None, true) => format!(">= {goal:.2}x external: no external run"),
                        (None, false) => "-".into(),
                    };
                }
            }
            "latency" => {
                let us = |k: &str| fmt_num(get(m, k).unwrap_or(f64::NAN));
                row.value = format!(
                    "p50 {} / p99 {} / p99.9 {} us",
                    us("p50_us"),
                    us("p99_us"),
                    us("p999_us")
                );
                row.ratio = ratio_of("p99_us");
                row.cpu = cpu("cpu_us_per_rt", "us/rt");
                if !is_direct {
                    let added =
                        get(m, "p99_us").zip(direct.as_ref().and_then(|d| get(d, "p99_us")));
                    if let Some((p, d)) = added {
                        row.goal = format!("added p99 {:+.1} us <= 50", p - d);
                        row.pass = Some(p - d <= 50.0);
                    }
                }
            }
            "idle" => {
                let kib = get(m, "kib_per_session").unwrap_or(f64::NAN);
                row.value = format!("{} KiB/session", fmt_num(kib));
                row.cpu = cpu("cpu_us_per_session", "us/sess");
                row.goal = "<= 10 KiB".into();
                row.pass = Some(kib <= 10.0);
            }
            _ => {}
        }
        let peak = (matches!(scenario.as_str(), "connections" | "connections-tls") && !is_direct)
            .then(|| get(m, "peak_rss_mb"))
            .flatten();
        out.push(row.clone());
        if let Some(peak) = peak {
            // The 32 MB is for the plain run; TLS is shown as is.
            let plain = scenario == "connections";
            out.push(Row {
                scenario: if plain {
                    "conn-peak-rss"
                } else {
                    "tls-peak-rss"
                }
                .into(),
                value: format!("{} MB", fmt_num(peak)),
                ratio: None,
                cpu: "-".into(),
                goal: if plain { "<= 32 MB" } else { "-" }.into(),
                pass: plain.then_some(peak <= 32.0),
                ..row
            });
        }
    }
    out
}

/// The summary table as printed.
pub fn table(rows: &[Row]) -> String {
    let header = [
        "scenario",
        "target",
        "median value",
        "vs direct",
        "proxy CPU",
        "spread",
        "goal",
    ];
    let cells: Vec<Vec<String>> = rows
        .iter()
        .map(|r| {
            let (value_key, cpu_key) = headline_keys(&r.scenario);
            let pct = |k: &str| get(&r.spreads, k).map(|v| format!("+-{:.0}%", v * 100.0));
            let spread = match (pct(value_key), pct(cpu_key)) {
                (Some(v), Some(c)) => format!("{v} / {c}"),
                (Some(v), None) => v,
                _ => "-".into(),
            };
            let goal = match r.pass {
                Some(true) => format!("{}: PASS", r.goal),
                Some(false) => format!("{}: FAIL", r.goal),
                None => r.goal.clone(),
            };
            let ratio = r.ratio.map_or("-".into(), |x| format!("{x:.2}x"));
            vec![
                r.scenario.clone(),
                r.target.clone(),
                r.value.clone(),
                ratio,
                r.cpu.clone(),
                spread,
                goal,
            ]
        })
        .collect();
    render(&header, &cells)
}

/// Where the CPU went, per unit of work (medians): the harness's clients,
/// the dummy broker and the target, to tell a proxy that is slow from a
/// machine that is simply full; the target's user-space part, its own
/// code as against the kernel's TCP work that any proxy pays; how long the
/// target's threads waited for a core per unit, and the share of the
/// machine's core time left idle (a target whose threads wait while cores
/// idle is paced by the scheduler, not by its own cost); and the
/// machine's interrupts between CPUs per unit, each a wake-up or
/// preemption sent to another core (on a VM, an exit to the hypervisor).
pub fn cpu_table(rows: &[Row]) -> String {
    let header = [
        "scenario",
        "target",
        "CPU per",
        "harness",
        "broker",
        "target",
        "total",
        "target user",
        "target waited",
        "idle cores",
        "IPIs",
    ];
    let cells: Vec<Vec<String>> = rows
        .iter()
        .filter_map(|r| {
            let (suffix, unit) = match r.scenario.as_str() {
                "large" | "small" => ("s_per_gb", "s/GB"),
                "connections" | "connections-tls" | "connections-remote" => {
                    ("us_per_conn", "us/conn")
                }
                "latency" => ("us_per_rt", "us/rt"),
                "idle" => ("us_per_session", "us/sess"),
                "trickle"
                | "trickle-confirm"
                | "rabbit-publish"
                | "rabbit-confirm"
                | "rabbit-pika"
                | "rabbit-pika-confirm"
                | "stream" => ("us_per_msg", "us/msg"),
                _ => return None,
            };
            let parts =
                ["harness_", "broker_", ""].map(|p| get(&r.medians, &format!("{p}cpu_{suffix}")));
            if parts.iter().all(Option::is_none) {
                return None;
            }
            let total: f64 = parts.iter().flatten().sum();
            let mut row = vec![r.scenario.clone(), r.target.clone(), unit.to_string()];
            row.extend(parts.iter().map(|v| v.map_or("-".into(), fmt_num)));
            row.push(fmt_num(total));
            let user = get(&r.medians, &format!("user_cpu_{suffix}"));
            row.push(user.map_or("-".into(), fmt_num));
            let waited = get(&r.medians, &format!("wait_{suffix}"));
            row.push(waited.map_or("-".into(), fmt_num));
            let idle = get(&r.medians, "idle_share");
            row.push(idle.map_or("-".into(), |v| format!("{:.1}%", v * 100.0)));
            let ipis = crate::scenarios::ipis_key(suffix).and_then(|key| get(&r.medians, &key));
            row.push(ipis.map_or("-".into(), fmt_num));
            Some(row)
        })
        .collect();
    render(&header, &cells)
}

/// Left-aligned columns separated by " | ", with a rule under the header.
fn render(header: &[&str], cells: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for c in cells {
        for (w, s) in widths.iter_mut().zip(c) {
            *w = (*w).max(s.len());
        }
    }
    let line = |c: &[String]| {
        let parts: Vec<String> = c
            .iter()
            .zip(&widths)
            .map(|(s, &w)| format!("{s:<w$}"))
            .collect();
        parts.join(" | ").trim_end().to_string() + "\n"
    };
    let mut out = line(&header.iter().map(|h| h.to_string()).collect::<Vec<_>>());
    out += &(widths
        .iter()
        .map(|w| "-".repeat(*w))
        .collect::<Vec<_>>()
        .join("-+-")
        + "\n");
    for c in cells {
        out += &line(c);
    }
    out
}

/// One proxy target against `external`, round by round, in one scenario:
/// per round (the same `repeat`, both runs ok) the target's value and CPU
/// per unit over the external's, then the median of those ratios and their
/// range. On a machine whose speed drifts between rounds this is steadier
/// than the ratio of the two medians, and with an older build as the
/// external target it is the same-run A/B the README quotes.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Paired {
    pub scenario: String,
    pub target: String,
    pub rounds: usize,
    /// Median, lowest and highest per-round ratio of the headline value.
    pub value: [f64; 3],
    /// The same for CPU per unit of work, where both runs report it.
    pub cpu: Option<[f64; 3]>,
    /// Rounds in which the target did at least as well as the external
    /// one on the headline value (a rate at or above it; a p99 or a
    /// session's memory at or below it).
    pub ahead: usize,
}

/// Whether a smaller headline value is the better one (a p99, memory).
fn lower_is_better(scenario: &str) -> bool {
    matches!(scenario, "latency" | "idle")
}

/// Median, lowest and highest of the ratios.
fn ratio_summary(mut ratios: Vec<f64>) -> Option<[f64; 3]> {
    if ratios.is_empty() {
        return None;
    }
    let mid = median(&mut ratios);
    Some([mid, ratios[0], ratios[ratios.len() - 1]])
}

/// Every (scenario, proxy target) that ran beside `external`, paired round
/// by round.
pub fn paired(runs: &[RunRecord]) -> Vec<Paired> {
    let mut out = Vec::new();
    for (scenario, target, ..) in grouped(runs) {
        if proxy_shards(&target).is_none() {
            continue;
        }
        let (value_key, cpu_key) = headline_keys(&scenario);
        let of = |name: &str, repeat: usize| {
            runs.iter().find(|r| {
                r.scenario == scenario
                    && r.target == name
                    && r.repeat == repeat
                    && r.error.is_none()
            })
        };
        let (mut values, mut cpus) = (Vec::new(), Vec::new());
        for mine in runs
            .iter()
            .filter(|r| r.scenario == scenario && r.target == target && r.error.is_none())
        {
            let Some(theirs) = of(EXTERNAL, mine.repeat) else {
                continue;
            };
            let ratio = |key: &str| {
                let (a, b) = (get(&mine.metrics, key)?, get(&theirs.metrics, key)?);
                (b != 0.0).then(|| a / b)
            };
            let Some(value) = ratio(value_key) else {
                continue;
            };
            values.push(value);
            cpus.extend(ratio(cpu_key));
        }
        let rounds = values.len();
        let ahead = values
            .iter()
            .filter(|&&r| {
                if lower_is_better(&scenario) {
                    r <= 1.0
                } else {
                    r >= 1.0
                }
            })
            .count();
        if let Some(value) = ratio_summary(values) {
            out.push(Paired {
                scenario: scenario.clone(),
                target,
                rounds,
                value,
                cpu: ratio_summary(cpus),
                ahead,
            });
        }
    }
    out
}

/// The round-by-round comparison as a table; empty without an external
/// target.
pub fn paired_table(paired: &[Paired]) -> String {
    if paired.is_empty() {
        return String::new();
    }
    let range = |[mid, lo, hi]: [f64; 3]| format!("{mid:.2}x ({lo:.2}-{hi:.2})");
    let cells: Vec<Vec<String>> = paired
        .iter()
        .map(|p| {
            vec![
                p.scenario.clone(),
                p.target.clone(),
                p.rounds.to_string(),
                p.ahead.to_string(),
                range(p.value),
                p.cpu.map_or("-".into(), range),
            ]
        })
        .collect();
    render(
        &[
            "scenario",
            "target",
            "rounds",
            "ahead",
            "value / external",
            "CPU per unit / external",
        ],
        &cells,
    )
}

/// Writes the whole result set as JSON to `path` (parents created).
pub fn write_json(
    path: &Path,
    config: serde_json::Value,
    runs: &[RunRecord],
    rows: &[Row],
    paired: &[Paired],
) -> Result<()> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("create {}", dir.display()))?;
    }
    let unix = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let doc = serde_json::json!({
        "generated_unix": unix,
        "config": config,
        "summary": rows,
        "paired_with_external": paired,
        "runs": runs,
    });
    std::fs::write(path, serde_json::to_string_pretty(&doc)? + "\n")
        .with_context(|| format!("write {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(scenario: &str, target: &str, metrics: &[(&str, f64)]) -> RunRecord {
        RunRecord {
            scenario: scenario.into(),
            target: target.into(),
            repeat: 0,
            metrics: metrics.iter().map(|(k, v)| (k.to_string(), *v)).collect(),
            error: None,
        }
    }

    #[test]
    fn paired_ratios_are_taken_round_by_round_against_external() {
        let round = |target: &str, repeat: usize, rate: f64, cpu: f64| RunRecord {
            repeat,
            ..run(
                "connections",
                target,
                &[("conns_per_s", rate), ("cpu_us_per_conn", cpu)],
            )
        };
        let failed = RunRecord {
            error: Some("refused".into()),
            ..round("proxy-1", 3, 1.0, 1.0)
        };
        let runs = vec![
            // The machine slows down from round to round; the proxy is 0.9x
            // the external's rate in rounds 0 and 2, 0.5x in round 1.
            round(DIRECT, 0, 9000.0, 0.0),
            round("proxy-1", 0, 900.0, 110.0),
            round(EXTERNAL, 0, 1000.0, 100.0),
            round("proxy-1", 1, 250.0, 300.0),
            round(EXTERNAL, 1, 500.0, 200.0),
            round("proxy-1", 2, 90.0, 1200.0),
            round(EXTERNAL, 2, 100.0, 1000.0),
            // A failed round and one without an external run are left out.
            failed,
            round(EXTERNAL, 3, 100.0, 1000.0),
            round("proxy-1", 4, 1.0, 1.0),
        ];
        let paired = paired(&runs);
        assert_eq!(
            paired.len(),
            1,
            "direct and external are not paired: {paired:?}"
        );
        let p = &paired[0];
        assert_eq!(
            (p.scenario.as_str(), p.target.as_str()),
            ("connections", "proxy-1")
        );
        assert_eq!(p.rounds, 3);
        assert_eq!(p.ahead, 0, "no round reached the external's rate");
        assert_eq!(p.value, [0.9, 0.5, 0.9]);
        let [mid, lo, hi] = p.cpu.unwrap();
        assert!((mid - 1.2).abs() < 1e-9 && (lo - 1.1).abs() < 1e-9 && (hi - 1.5).abs() < 1e-9);
        let table = paired_table(&paired);
        assert!(table.contains("0.90x (0.50-0.90)"), "{table}");
        assert!(table.contains("1.20x (1.10-1.50)"), "{table}");
        assert_eq!(paired_table(&[]), "");
    }

    #[test]
    fn a_round_is_ahead_with_a_lower_p99_but_a_higher_rate() {
        let round = |scenario: &str, target: &str, repeat: usize, key: &str, v: f64| RunRecord {
            repeat,
            ..run(scenario, target, &[(key, v)])
        };
        let runs = vec![
            // p99 below the external's in rounds 0 and 1, above in 2.
            round("latency", "proxy-1", 0, "p99_us", 90.0),
            round("latency", EXTERNAL, 0, "p99_us", 100.0),
            round("latency", "proxy-1", 1, "p99_us", 100.0),
            round("latency", EXTERNAL, 1, "p99_us", 100.0),
            round("latency", "proxy-1", 2, "p99_us", 130.0),
            round("latency", EXTERNAL, 2, "p99_us", 100.0),
            // A rate below the external's in round 0, above in 1.
            round("trickle", "proxy-1", 0, "msgs_per_s", 90.0),
            round("trickle", EXTERNAL, 0, "msgs_per_s", 100.0),
            round("trickle", "proxy-1", 1, "msgs_per_s", 130.0),
            round("trickle", EXTERNAL, 1, "msgs_per_s", 100.0),
        ];
        let paired = paired(&runs);
        let ahead = |scenario: &str| {
            paired
                .iter()
                .find(|p| p.scenario == scenario)
                .unwrap()
                .ahead
        };
        assert_eq!(ahead("latency"), 2);
        assert_eq!(ahead("trickle"), 1);
    }

    #[test]
    fn medians_ratios_and_goals() {
        let runs = vec![
            run("large", DIRECT, &[("mb_per_s", 1000.0)]),
            run(
                "large",
                "proxy-1",
                &[("mb_per_s", 700.0), ("cpu_s_per_gb", 0.5)],
            ),
            run("large", DIRECT, &[("mb_per_s", 1200.0)]),
            run(
                "large",
                "proxy-1",
                &[("mb_per_s", 900.0), ("cpu_s_per_gb", 0.7)],
            ),
            run("large", DIRECT, &[("mb_per_s", 1100.0)]),
            run(
                "large",
                "proxy-1",
                &[("mb_per_s", 800.0), ("cpu_s_per_gb", 0.6)],
            ),
        ];
        let rows = rows(&runs);
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[1].ratio, Some(800.0 / 1100.0));
        assert_eq!(rows[1].pass, Some(false));
        assert_eq!(rows[1].cpu, "0.60 s/GB");
        assert!(table(&rows).contains(">= 0.75x: FAIL"));
    }

    #[test]
    fn latency_goal_is_added_p99_and_connections_add_peak_rss() {
        let runs = vec![
            run("latency", DIRECT, &[("p99_us", 40.0)]),
            run("latency", "proxy-2", &[("p99_us", 70.0)]),
            run("connections", DIRECT, &[("conns_per_s", 100.0)]),
            run(
                "connections",
                "proxy-2",
                &[("conns_per_s", 95.0), ("peak_rss_mb", 40.0)],
            ),
        ];
        let rows = rows(&runs);
        assert_eq!(rows[1].goal, "added p99 +30.0 us <= 50");
        assert_eq!(rows[1].pass, Some(true));
        assert_eq!(rows[3].pass, Some(true));
        assert_eq!(
            (rows[4].scenario.as_str(), rows[4].pass),
            ("conn-peak-rss", Some(false))
        );
    }

    #[test]
    fn tls_goal_is_the_widest_proxy_against_external() {
        let c = |t: &str, rate: f64| run("connections-tls", t, &[("conns_per_s", rate)]);
        let runs = vec![
            c(DIRECT, 4000.0),
            c("proxy-1", 1000.0),
            c("proxy-2", 1400.0),
            c(EXTERNAL, 1000.0),
        ];
        let rows = rows(&runs);
        assert_eq!(rows[0].pass, None);
        assert_eq!(
            (rows[1].goal.as_str(), rows[1].pass),
            ("vs external 1.00x", None)
        );
        assert_eq!(rows[2].goal, "vs external 1.40x >= 1.30x");
        assert_eq!((rows[2].ratio, rows[2].pass), (Some(0.35), Some(true)));
        assert_eq!((rows[3].goal.as_str(), rows[3].pass), ("-", None));
        let alone = super::rows(&[c("proxy-2", 1400.0)]);
        assert_eq!(alone[0].goal, ">= 1.30x external: no external run");
    }

    #[test]
    fn a_remote_brokers_connections_show_how_long_one_takes_to_open() {
        let c = |t: &str, rate: f64, p50: f64| {
            run(
                "connections-remote",
                t,
                &[
                    ("conns_per_s", rate),
                    ("open_p50_us", p50),
                    ("open_p99_us", 2.0 * p50),
                    ("peak_rss_mb", 9.0),
                ],
            )
        };
        let runs = vec![
            c(DIRECT, 1000.0, 16_000.0),
            c("proxy-1", 1600.0, 8_500.0),
            c(EXTERNAL, 900.0, 17_000.0),
        ];
        let rows = rows(&runs);
        // No peak-RSS row: that goal is the 20k connections' alone.
        assert_eq!(rows.len(), 3, "{rows:?}");
        assert_eq!(rows[1].value, "1600 conn/s, open p50 8.50 / p99 17.0 ms");
        assert_eq!(rows[1].ratio, Some(1.6));
        assert_eq!(
            (rows[1].goal.as_str(), rows[1].pass),
            ("vs external 1.78x >= 1", Some(true))
        );
        assert_eq!((rows[0].pass, rows[2].pass), (None, None));
    }

    #[test]
    fn trickle_goal_is_rate_and_cpu_against_external() {
        let t = |target: &str, rate: f64, cpu: f64| {
            run(
                "trickle",
                target,
                &[("msgs_per_s", rate), ("cpu_us_per_msg", cpu)],
            )
        };
        let runs = vec![
            t(DIRECT, 100.0, 0.0),
            t("proxy-1", 90.0, 9.0),
            t("proxy-2", 80.0, 11.0),
            t(EXTERNAL, 85.0, 10.0),
        ];
        let rows = rows(&runs);
        assert_eq!(
            rows[1].goal,
            "vs external: rate 1.06x >= 1, CPU/msg 0.90x <= 1"
        );
        assert_eq!(rows[1].pass, Some(true));
        assert_eq!(rows[2].pass, Some(false), "slower and dearer than external");
        assert_eq!((rows[3].goal.as_str(), rows[3].pass), ("-", None));
        assert!(cpu_table(&rows).contains("us/msg"));
    }

    #[test]
    fn cpu_table_shows_the_targets_user_space_part_its_wait_idle_cores_and_ipis() {
        let runs = vec![run(
            "connections",
            "proxy-1",
            &[
                ("conns_per_s", 4000.0),
                ("harness_cpu_us_per_conn", 130.0),
                ("broker_cpu_us_per_conn", 100.0),
                ("cpu_us_per_conn", 190.0),
                ("user_cpu_us_per_conn", 40.0),
                ("wait_us_per_conn", 35.0),
                ("idle_share", 0.062),
                ("ipis_per_conn", 21.5),
            ],
        )];
        let table = cpu_table(&rows(&runs));
        let line = table.lines().last().expect("a row");
        let cells: Vec<&str> = line.split('|').map(str::trim).collect();
        // harness, broker, target, total (which leaves the user part out:
        // it is inside the target's), the target's user part, its wait for
        // a core, the machine's idle share and interrupts between its CPUs.
        assert_eq!(
            cells[3..],
            ["130.0", "100.0", "190.0", "420.0", "40.0", "35.0", "6.2%", "21.5"]
        );
    }

    #[test]
    fn the_table_shows_how_far_the_runs_spread_around_each_median() {
        let c = |rate: f64, cpu: f64| {
            run(
                "connections",
                "proxy-1",
                &[("conns_per_s", rate), ("cpu_us_per_conn", cpu)],
            )
        };
        let runs = vec![
            c(3000.0, 250.0),
            c(2700.0, 300.0),
            c(3300.0, 200.0),
            run("connections", EXTERNAL, &[("conns_per_s", 3100.0)]),
        ];
        let rows = rows(&runs);
        // Rate 2700..3300 around 3000: +-10%; CPU 200..300 around 250: +-20%.
        assert_eq!(get(&rows[0].spreads, "conns_per_s"), Some(0.1));
        assert_eq!(get(&rows[0].spreads, "cpu_us_per_conn"), Some(0.2));
        let table = table(&rows);
        let cells = |target: &str| -> Vec<String> {
            let line = table
                .lines()
                .find(|l| l.starts_with("connections ") && l.contains(target))
                .expect("a row");
            line.split('|').map(|c| c.trim().to_string()).collect()
        };
        assert_eq!(cells("proxy-1")[5], "+-10% / +-20%");
        // One run says nothing about its spread.
        assert_eq!(cells(EXTERNAL)[5], "-");
    }

    #[test]
    fn even_median_is_the_mean_of_the_middle_two() {
        assert_eq!(median(&mut [4.0, 1.0, 3.0, 2.0]), 2.5);
    }
}
