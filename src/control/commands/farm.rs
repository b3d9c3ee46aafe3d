//! `FARM ADD | ADD_MANUAL | PARTITION | DELETE | PRINT [json]`, executed
//! (see `docs/commands.md#farm`). Owns what changing a farm does and its
//! texts; the grammar is `control::grammar`, the shapes `control::render`.
//! It never touches a session or a shard.
//!
//! * Members keep the order they were given, duplicates dropped (the
//!   original's order is hash order); that order is the round-robin order.
//! * Re-adding a farm replaces it: members, selector, policies and markers.
//! * `PRINT` lists farms sorted by name (the original's order is hash
//!   order): `<name>: <m1> <m2> ` (each member followed by a space).
//!   Members deleted with `BACKEND DELETE` are still listed; routing skips
//!   them until a backend of that name is added again.
//! * `PRINT json`: `{"farms":[{"name","selector","members","policies",
//!   "partitions"}]}` where `partitions` are the priority partitions
//!   routing uses now (existing backends only, in the order tried before
//!   rotation).

use crate::config::{Config, Farm};
use crate::control::grammar::FarmCommand;
use crate::control::render::{farms_json, to_json_line, FarmJson};
use crate::control::Reply;
use crate::routing::new_markers;
use serde::Serialize;
use std::sync::Arc;

pub fn run(config: &mut Config, command: FarmCommand) -> Reply {
    match command {
        FarmCommand::Add {
            name,
            selector,
            members,
            manual: _,
        } => {
            let mut kept: Vec<String> = Vec::new();
            let mut missing = String::new();
            for member in members {
                if !config.backends.contains_key(&member) {
                    missing.push_str(&format!("Backend '{member}' not found\n"));
                } else if !kept.contains(&member) {
                    kept.push(member);
                }
            }
            if !missing.is_empty() {
                return Reply::error(
                    missing + "Farm not inserted due to at least one missing Backend\n",
                );
            }
            let mut farm = Farm {
                name: name.clone(),
                selector,
                members: kept,
                policies: Vec::new(),
                markers: Arc::new(Vec::new()),
            };
            farm.markers = new_markers(config, &farm);
            config.farms.insert(name, farm);
            Reply::empty()
        }
        FarmCommand::Partition { name, policy } => {
            let Some(mut farm) = config.farms.get(&name).cloned() else {
                return Reply::error(format!("Farm '{name}' not found\n"));
            };
            farm.policies.push(policy);
            // New partitions need new markers; this resets rotation, as
            // upstream.
            farm.markers = new_markers(config, &farm);
            config.farms.insert(name, farm);
            Reply::empty()
        }
        FarmCommand::Delete { name } => {
            // An unknown name is not an error in the original.
            config.farms.remove(&name);
            Reply::empty()
        }
        FarmCommand::Print { json: true } => Reply::ok(to_json_line(&FarmsDoc {
            farms: farms_json(config),
        })),
        FarmCommand::Print { json: false } => Reply::ok(print(config)),
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

/// The `FARM PRINT json` document.
#[derive(Serialize)]
struct FarmsDoc<'a> {
    farms: Vec<FarmJson<'a>>,
}

#[cfg(test)]
mod tests {
    use super::super::run_line;
    use super::*;
    use crate::control::render::farm_commands;

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
            run_line(&mut c, "FARM ADD f round-robin b3 b1 b3 b2"),
            Reply::empty()
        );
        assert_eq!(
            run_line(&mut c, "FARM ADD_MANUAL e round-robin b2"),
            Reply::empty()
        );
        assert_eq!(
            run_line(&mut c, "FARM PRINT").text,
            "e: b2 \nf: b3 b1 b2 \n"
        );
    }

    #[test]
    fn errors_keep_the_original_texts_and_change_nothing() {
        let mut c = with_backends();
        let e = |t: &str| Reply::error(t.to_string());
        assert_eq!(
            run_line(&mut c, "FARM ADD f round-robin b1 x y"),
            e("Backend 'x' not found\nBackend 'y' not found\nFarm not inserted due to at least one missing Backend\n")
        );
        assert!(c.farms.is_empty());
        assert_eq!(
            run_line(&mut c, "FARM PARTITION f datacenter-affinity"),
            e("Farm 'f' not found\n")
        );
        assert_eq!(run_line(&mut c, "FARM DELETE unknown"), Reply::empty());
    }

    #[test]
    fn dump_lines_skip_deleted_members() {
        let mut c = with_backends();
        run_line(&mut c, "FARM ADD f round-robin b1 b2");
        run_line(&mut c, "FARM PARTITION f datacenter-affinity");
        run_line(&mut c, "BACKEND DELETE b1");
        let lines = |c: &Config| {
            farm_commands(c, &c.farms["f"])
                .map(|cs| cs.iter().map(ToString::to_string).collect::<Vec<_>>())
        };
        assert_eq!(
            lines(&c),
            Some(vec![
                "FARM ADD f round-robin b2".to_string(),
                "FARM PARTITION f datacenter-affinity".to_string()
            ])
        );
        run_line(&mut c, "BACKEND DELETE b2");
        assert_eq!(lines(&c), None);
    }
}
