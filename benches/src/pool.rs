//! Pooling saved results: the runs of several results files written by
//! earlier runs of this harness, read back and merged into one set whose
//! tables are printed as a run's are. Each file's rounds are numbered after
//! those of the files before it, so the report pairs a proxy target with
//! the external one only within the run they shared (a round of one day is
//! never compared with a round of another). Figures the README quotes over
//! several runs ("12 rounds pooled") come from here.
//!
//! Owns reading results files back. Never runs load and never changes a
//! measured value: a metric saved as `null` (JSON has no NaN) is left out,
//! as the report leaves out non-finite values.

use crate::report::RunRecord;
use crate::scenarios::Metrics;
use anyhow::{Context, Result};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::Path;

/// A run as `report::write_json` saved it.
#[derive(Deserialize)]
struct SavedRun {
    scenario: String,
    target: String,
    repeat: usize,
    metrics: BTreeMap<String, Option<f64>>,
    #[serde(default)]
    error: Option<String>,
}

/// The part of a results file pooling needs.
#[derive(Deserialize)]
struct SavedResults {
    runs: Vec<SavedRun>,
}

/// The runs of one results document.
pub fn runs_of(text: &str) -> Result<Vec<RunRecord>> {
    let saved: SavedResults = serde_json::from_str(text)?;
    Ok(saved
        .runs
        .into_iter()
        .map(|r| RunRecord {
            scenario: r.scenario,
            target: r.target,
            repeat: r.repeat,
            metrics: r
                .metrics
                .into_iter()
                .filter_map(|(k, v)| Some((k, v?)))
                .collect::<Metrics>(),
            error: r.error,
        })
        .collect())
}

/// The runs of one results file.
pub fn read_runs(path: &Path) -> Result<Vec<RunRecord>> {
    let text = std::fs::read_to_string(path).with_context(|| format!("read {}", path.display()))?;
    runs_of(&text)
        .with_context(|| format!("{} is not a results file of amqpprox-bench", path.display()))
}

/// One set of runs from several files' sets: the rounds of each set
/// renumbered after those of the sets before it.
pub fn pooled(sets: Vec<Vec<RunRecord>>) -> Vec<RunRecord> {
    let mut out = Vec::new();
    let mut first_round = 0;
    for runs in sets {
        let rounds = runs.iter().map(|r| r.repeat + 1).max().unwrap_or(0);
        out.extend(runs.into_iter().map(|r| RunRecord {
            repeat: first_round + r.repeat,
            ..r
        }));
        first_round += rounds;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::{self, EXTERNAL};

    /// A results document of one round per target, as `write_json` saves
    /// it (`null` where a metric was not a number).
    fn document(proxy_rate: f64, external_rate: f64) -> String {
        let run = |target: &str, rate: f64| {
            serde_json::json!({
                "scenario": "connections",
                "target": target,
                "repeat": 0,
                "metrics": {"conns_per_s": rate, "cpu_us_per_conn": null},
            })
        };
        serde_json::json!({
            "generated_unix": 0,
            "summary": [],
            "runs": [run("direct", 9000.0), run("proxy-1", proxy_rate), run(EXTERNAL, external_rate)],
        })
        .to_string()
    }

    #[test]
    fn a_saved_run_reads_back_without_its_null_metrics() {
        let runs = runs_of(&document(900.0, 1000.0)).unwrap();
        assert_eq!(runs.len(), 3);
        assert_eq!(runs[1].target, "proxy-1");
        assert_eq!(runs[1].metrics.get("conns_per_s"), Some(&900.0));
        assert!(!runs[1].metrics.contains_key("cpu_us_per_conn"));
        assert!(runs_of("{\"runs\": 3}").is_err());
    }

    #[test]
    fn pooled_rounds_pair_only_within_their_own_run() {
        // Day one: the proxy at 0.9x the external's rate on a fast machine;
        // day two: 1.2x on a machine ten times slower. Paired across days
        // (both files' round 0) they would read 9x and 0.12x.
        let day_one = runs_of(&document(900.0, 1000.0)).unwrap();
        let day_two = runs_of(&document(120.0, 100.0)).unwrap();
        let runs = pooled(vec![day_one, day_two]);
        let repeats: Vec<usize> = runs.iter().map(|r| r.repeat).collect();
        assert_eq!(repeats, [0, 0, 0, 1, 1, 1]);
        let paired = report::paired(&runs);
        assert_eq!(paired.len(), 1, "{paired:?}");
        let p = &paired[0];
        assert_eq!(p.rounds, 2);
        assert_eq!(p.ahead, 1);
        let [mid, lo, hi] = p.value;
        assert!((lo - 0.9).abs() < 1e-9 && (hi - 1.2).abs() < 1e-9, "{p:?}");
        assert!((mid - 1.05).abs() < 1e-9, "{p:?}");
        // The medians are over both days' rounds.
        let rows = report::rows(&runs);
        let proxy = rows.iter().find(|r| r.target == "proxy-1").unwrap();
        assert_eq!(proxy.runs, 2);
        assert_eq!(proxy.medians.get("conns_per_s"), Some(&510.0));
    }
}
