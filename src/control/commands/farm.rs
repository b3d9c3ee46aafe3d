//! `FARM ADD | ADD_MANUAL | PARTITION | DELETE | PRINT [json]`
//! (behaviour.md §2.8, DECISIONS Keep 2, Add 10). Owns the grammar, texts
//! and JSON shape of farms; it never touches a session or a shard.
//!
//! * Members keep the order they were given, duplicates dropped (the
//!   original's order is hash order); that order is the round-robin order.
//! * A farm needs at least one backend: `FARM ADD f round-robin` answers
//!   `Farm name and selector must be provided.`, as the original does.
//! * Re-adding a farm replaces it: members, selector, policies and markers.
//! * `PRINT` lists farms sorted by name (the original's order is hash
//!   order): `<name>: <m1> <m2> ` (each member followed by a space).
//!   Members deleted with `BACKEND DELETE` are still listed; routing skips
//!   them until a backend of that name is added again.
//! * `PRINT json`: one document, sorted by name:
//!   `{"farms":[{"name","selector","members","policies","partitions"}]}`
//!   where `members` is the configured member list, `policies` the
//!   partition policies in the order applied, and `partitions` the
//!   priority partitions routing uses now (existing backends only, in the
//!   order tried before rotation).

use super::subcommand;
use crate::config::{BackendSelector, Config, Farm, PartitionPolicy};
use crate::control::Reply;
use crate::routing::{new_markers, partitions};
use serde::Serialize;
use std::sync::Arc;

pub fn run(config: &mut Config, args: &[&str]) -> Reply {
    match subcommand(args).as_str() {
        "ADD" | "ADD_MANUAL" => add(config, &args[1..]),
        "PARTITION" => partition(config, &args[1..]),
        "DELETE" => match args.get(1) {
            Some(name) => {
                // An unknown name is not an error in the original.
                config.farms.remove(*name);
                Reply::empty()
            }
            None => Reply::error("Farm name not provided."),
        },
        "PRINT" if super::config::wants_json(&args[1..]) => {
            Reply::ok(super::config::to_json_line(&json(config)))
        }
        "PRINT" => Reply::ok(print(config)),
        other => Reply::error(format!("Subcommand '{other}' not recognized.")),
    }
}

fn print(config: &Config) -> String {
    config
        .farms
        .values()
        .map(|f| {
            let members: String = f.members.iter().map(|m| format!("{m} ")).collect();
            format!("{}: {members}\n", f.name)
        })
        .collect()
}

/// The lines that recreate `farm` (for `CONFIG DUMP`): `FARM ADD` with the
/// members that still exist (a replayed `FARM ADD` naming a deleted backend
/// would fail), then one `FARM PARTITION` per policy, in order. `None` when
/// no member exists any more: such a farm cannot be expressed as commands.
pub fn add_commands(config: &Config, farm: &Farm) -> Option<Vec<String>> {
    let members: Vec<&str> = farm
        .members
        .iter()
        .filter(|m| config.backends.contains_key(*m))
        .map(String::as_str)
        .collect();
    if members.is_empty() {
        return None;
    }
    let mut lines = vec![format!(
        "FARM ADD {} {} {}",
        farm.name,
        farm.selector.name(),
        members.join(" ")
    )];
    lines.extend(
        farm.policies
            .iter()
            .map(|p| format!("FARM PARTITION {} {}", farm.name, p.name())),
    );
    Some(lines)
}

/// One farm in `FARM PRINT json`.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct FarmJson<'a> {
    name: &'a str,
    selector: &'static str,
    members: &'a [String],
    policies: Vec<&'static str>,
    partitions: Vec<Vec<String>>,
}

/// Every farm, sorted by name, in their JSON shape.
pub fn json_list(config: &Config) -> Vec<FarmJson<'_>> {
    config
        .farms
        .values()
        .map(|f| FarmJson {
            name: &f.name,
            selector: f.selector.name(),
            members: &f.members,
            policies: f.policies.iter().map(PartitionPolicy::name).collect(),
            partitions: partitions(config, f)
                .into_iter()
                .map(|p| {
                    p.into_iter()
                        .filter(|m| config.backends.contains_key(m))
                        .collect::<Vec<_>>()
                })
                .filter(|p| !p.is_empty())
                .collect(),
        })
        .collect()
}

/// The `FARM PRINT json` document.
#[derive(Serialize)]
struct FarmsDoc<'a> {
    farms: Vec<FarmJson<'a>>,
}

fn json(config: &Config) -> impl Serialize + '_ {
    FarmsDoc {
        farms: json_list(config),
    }
}

fn add(config: &mut Config, args: &[&str]) -> Reply {
    // The original reads name, selector and at least one backend before it
    // checks anything, so a farm without backends gets this text too.
    let (Some(name), Some(selector), true) = (args.first(), args.get(1), args.len() > 2) else {
        return Reply::error("Farm name and selector must be provided.\n");
    };
    let Some(selector) = BackendSelector::parse(selector) else {
        return Reply::error(format!("Selector '{selector}' not found\n"));
    };
    let mut members: Vec<String> = Vec::new();
    let mut missing = String::new();
    for member in &args[2..] {
        if !config.backends.contains_key(*member) {
            missing.push_str(&format!("Backend '{member}' not found\n"));
        } else if !members.iter().any(|m| m == member) {
            members.push(member.to_string());
        }
    }
    if !missing.is_empty() {
        return Reply::error(missing + "Farm not inserted due to at least one missing Backend\n");
    }
    let mut farm = Farm {
        name: name.to_string(),
        selector,
        members,
        policies: Vec::new(),
        markers: Arc::new(Vec::new()),
    };
    farm.markers = new_markers(config, &farm);
    config.farms.insert(name.to_string(), farm);
    Reply::empty()
}

fn partition(config: &mut Config, args: &[&str]) -> Reply {
    let (Some(name), Some(policy)) = (args.first(), args.get(1)) else {
        return Reply::error("Farm name and policy must be provided.\n");
    };
    let Some(policy) = PartitionPolicy::parse(policy) else {
        return Reply::error(format!("Partition policy '{policy}' not found\n"));
    };
    let Some(mut farm) = config.farms.get(*name).cloned() else {
        return Reply::error(format!("Farm '{name}' not found\n"));
    };
    farm.policies.push(policy);
    // New partitions need new markers; this resets rotation, as upstream.
    farm.markers = new_markers(config, &farm);
    config.farms.insert(name.to_string(), farm);
    Reply::empty()
}

/// Recomputes every farm's partitions (after `DATACENTER SET`), which
/// resets their round-robin markers as in the original.
pub fn repartition_all(config: &mut Config) {
    let names: Vec<String> = config.farms.keys().cloned().collect();
    for name in names {
        if let Some(mut farm) = config.farms.get(&name).cloned() {
            farm.markers = new_markers(config, &farm);
            config.farms.insert(name, farm);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run_line(config: &mut Config, line: &str) -> Reply {
        if let Some(rest) = line.strip_prefix("BACKEND ") {
            return super::super::run_tokens(super::super::backend::run, config, rest);
        }
        super::super::run_tokens(run, config, line)
    }

    fn with_backends() -> Config {
        let mut c = Config::default();
        for b in ["b1 dc1", "b2 dc2", "b3 dc1"] {
            run_line(&mut c, &format!("BACKEND ADD {b} 127.0.0.1 5672"));
        }
        c
    }

    #[test]
    fn add_keeps_order_and_drops_duplicates() {
        let mut c = with_backends();
        assert_eq!(
            run_line(&mut c, "ADD f round-robin b3 b1 b3 b2"),
            Reply::empty()
        );
        assert_eq!(
            run_line(&mut c, "ADD_MANUAL e round-robin b2"),
            Reply::empty()
        );
        assert_eq!(run_line(&mut c, "PRINT").text, "e: b2 \nf: b3 b1 b2 \n");
    }

    #[test]
    fn errors_keep_the_original_texts_and_change_nothing() {
        let mut c = with_backends();
        let e = |t: &str| Reply::error(t.to_string());
        assert_eq!(
            run_line(&mut c, "ADD f round-robin"),
            e("Farm name and selector must be provided.\n")
        );
        assert_eq!(
            run_line(&mut c, "ADD f bogus b1"),
            e("Selector 'bogus' not found\n")
        );
        assert_eq!(
            run_line(&mut c, "ADD f round-robin b1 x y"),
            e("Backend 'x' not found\nBackend 'y' not found\nFarm not inserted due to at least one missing Backend\n")
        );
        assert!(c.farms.is_empty());
        assert_eq!(
            run_line(&mut c, "PARTITION f"),
            e("Farm name and policy must be provided.\n")
        );
        assert_eq!(
            run_line(&mut c, "PARTITION f nope"),
            e("Partition policy 'nope' not found\n")
        );
        assert_eq!(
            run_line(&mut c, "PARTITION f datacenter-affinity"),
            e("Farm 'f' not found\n")
        );
        assert_eq!(run_line(&mut c, "DELETE"), e("Farm name not provided."));
        assert_eq!(run_line(&mut c, "DELETE unknown"), Reply::empty());
        assert_eq!(run_line(&mut c, "x"), e("Subcommand 'X' not recognized."));
    }

    #[test]
    fn dump_lines_skip_deleted_members() {
        let mut c = with_backends();
        run_line(&mut c, "ADD f round-robin b1 b2");
        run_line(&mut c, "PARTITION f datacenter-affinity");
        run_line(&mut c, "BACKEND DELETE b1");
        assert_eq!(
            add_commands(&c, &c.farms["f"]),
            Some(vec![
                "FARM ADD f round-robin b2".to_string(),
                "FARM PARTITION f datacenter-affinity".to_string()
            ])
        );
        run_line(&mut c, "BACKEND DELETE b2");
        assert_eq!(add_commands(&c, &c.farms["f"]), None);
    }
}
