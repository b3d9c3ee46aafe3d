//! `FARM ADD | PARTITION | DELETE | PRINT` (behaviour.md §2.8).
//!
//! Members keep the order they were given (the original's is hash order);
//! re-adding a farm replaces it, policies and markers included.

use super::subcommand;
use crate::config::{BackendSelector, Config, Farm, PartitionPolicy};
use crate::control::Reply;
use crate::routing::new_markers;
use std::sync::Arc;

pub fn run(config: &mut Config, args: &[&str]) -> Reply {
    match subcommand(args).as_str() {
        "ADD" | "ADD_MANUAL" => add(config, &args[1..]),
        "PARTITION" => partition(config, &args[1..]),
        "DELETE" => match args.get(1) {
            Some(name) => {
                config.farms.remove(*name);
                Reply::empty()
            }
            None => Reply::error("Farm name not provided."),
        },
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

fn add(config: &mut Config, args: &[&str]) -> Reply {
    let (Some(name), Some(selector)) = (args.first(), args.get(1)) else {
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
    if members.is_empty() {
        return Reply::error("Farm name and selector must be provided.\n");
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
