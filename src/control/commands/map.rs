//! `MAP BACKEND | FARM | UNMAP | DEFAULT | REMOVE_DEFAULT | PRINT`
//! (behaviour.md §2.12). Names are looked up when a session routes, not
//! here, as in the original; changes affect new sessions only.

use super::subcommand;
use crate::config::{Config, Mapping};
use crate::control::Reply;

pub fn run(config: &mut Config, args: &[&str]) -> Reply {
    match subcommand(args).as_str() {
        "BACKEND" => match (args.get(1), args.get(2)) {
            (Some(vhost), Some(backend)) => {
                config
                    .mappings
                    .insert(vhost.to_string(), Mapping::Backend(backend.to_string()));
                Reply::empty()
            }
            _ => Reply::error("Vhost and backend must be provided"),
        },
        "FARM" => match (args.get(1), args.get(2)) {
            (Some(vhost), Some(farm)) => {
                config
                    .mappings
                    .insert(vhost.to_string(), Mapping::Farm(farm.to_string()));
                Reply::empty()
            }
            _ => Reply::error("Vhost and farm name must be provided"),
        },
        "UNMAP" => match args.get(1) {
            Some(vhost) => {
                config.mappings.remove(*vhost);
                Reply::empty()
            }
            None => Reply::error("Vhost not provided."),
        },
        "DEFAULT" => match args.get(1) {
            Some(farm) => {
                config.default_farm = Some(farm.to_string());
                Reply::empty()
            }
            None => Reply::error("Farm name for default must be provided"),
        },
        "REMOVE_DEFAULT" => {
            config.default_farm = None;
            Reply::empty()
        }
        "PRINT" => Reply::ok(print(config)),
        _ => Reply::error("Unrecognized subcommand."),
    }
}

fn print(config: &Config) -> String {
    config
        .mappings
        .iter()
        .map(|(vhost, m)| match m {
            Mapping::Farm(f) => format!("\"{vhost}\" => Farm:{f}\n"),
            Mapping::Backend(b) => format!("\"{vhost}\" => Backend:{b}\n"),
        })
        .collect()
}
