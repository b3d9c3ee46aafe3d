//! `MAP BACKEND | FARM | UNMAP | DEFAULT | REMOVE_DEFAULT | PRINT [json]`
//! (behaviour.md §2.12, DECISIONS Keep 2, Add 10). Owns the grammar, texts
//! and JSON shape of vhost mappings; it never touches a session or a shard.
//!
//! Names are looked up when a session routes, not here, as in the original
//! (a mapping may name a farm or backend that does not exist yet); changes
//! affect new sessions only.
//!
//! * `PRINT` lists mappings sorted by vhost, `"<vhost>" => Farm:<name>` or
//!   `"<vhost>" => Backend:<name>`; the default farm is not printed, as in
//!   the original.
//! * `PRINT json`: one document,
//!   `{"mappings":[{"vhost","type","name"}],"defaultFarm"}` with `type`
//!   `"farm"` or `"backend"`, sorted by vhost, and `defaultFarm` the
//!   default farm's name or `null`.

use super::subcommand;
use crate::config::{Config, Mapping};
use crate::control::Reply;
use serde::Serialize;

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
                // Unmapping an unknown vhost is a no-op in the original.
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
        "PRINT" if super::config::wants_json(&args[1..]) => {
            Reply::ok(super::config::to_json_line(&json(config)))
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

/// The lines that recreate the mappings and the default farm (for
/// `CONFIG DUMP`), sorted by vhost, the default last.
pub fn commands(config: &Config) -> Vec<String> {
    let mut lines: Vec<String> = config
        .mappings
        .iter()
        .map(|(vhost, m)| match m {
            Mapping::Farm(f) => format!("MAP FARM {vhost} {f}"),
            Mapping::Backend(b) => format!("MAP BACKEND {vhost} {b}"),
        })
        .collect();
    if let Some(farm) = &config.default_farm {
        lines.push(format!("MAP DEFAULT {farm}"));
    }
    lines
}

/// One vhost mapping in `MAP PRINT json`.
#[derive(Serialize)]
pub struct MappingJson<'a> {
    vhost: &'a str,
    #[serde(rename = "type")]
    kind: &'static str,
    name: &'a str,
}

/// Every mapping, sorted by vhost, in their JSON shape.
pub fn json_list(config: &Config) -> Vec<MappingJson<'_>> {
    config
        .mappings
        .iter()
        .map(|(vhost, m)| {
            let (kind, name) = match m {
                Mapping::Farm(f) => ("farm", f),
                Mapping::Backend(b) => ("backend", b),
            };
            MappingJson { vhost, kind, name }
        })
        .collect()
}

/// The `MAP PRINT json` document; field order is the output order.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct MapDoc<'a> {
    mappings: Vec<MappingJson<'a>>,
    default_farm: Option<&'a str>,
}

fn json(config: &Config) -> impl Serialize + '_ {
    MapDoc {
        mappings: json_list(config),
        default_farm: config.default_farm.as_deref(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run_line(config: &mut Config, line: &str) -> Reply {
        super::super::run_tokens(run, config, line)
    }

    #[test]
    fn print_is_sorted_and_omits_the_default() {
        let mut c = Config::default();
        for line in [
            "FARM v2 f",
            "BACKEND v1 b",
            "BACKEND v2 b2",
            "DEFAULT f",
            "FARM / f",
        ] {
            assert_eq!(run_line(&mut c, line), Reply::empty());
        }
        assert_eq!(
            run_line(&mut c, "PRINT").text,
            "\"/\" => Farm:f\n\"v1\" => Backend:b\n\"v2\" => Backend:b2\n"
        );
        assert_eq!(
            run_line(&mut c, "print JSON").text,
            "{\"mappings\":[{\"vhost\":\"/\",\"type\":\"farm\",\"name\":\"f\"},\
             {\"vhost\":\"v1\",\"type\":\"backend\",\"name\":\"b\"},\
             {\"vhost\":\"v2\",\"type\":\"backend\",\"name\":\"b2\"}],\"defaultFarm\":\"f\"}\n"
        );
        assert_eq!(
            commands(&c),
            [
                "MAP FARM / f",
                "MAP BACKEND v1 b",
                "MAP BACKEND v2 b2",
                "MAP DEFAULT f"
            ]
        );
    }

    #[test]
    fn errors_keep_the_original_texts() {
        let mut c = Config::default();
        let e = |t: &str| Reply::error(t.to_string());
        assert_eq!(
            run_line(&mut c, "BACKEND v"),
            e("Vhost and backend must be provided")
        );
        assert_eq!(
            run_line(&mut c, "FARM v"),
            e("Vhost and farm name must be provided")
        );
        assert_eq!(run_line(&mut c, "UNMAP"), e("Vhost not provided."));
        assert_eq!(
            run_line(&mut c, "DEFAULT"),
            e("Farm name for default must be provided")
        );
        assert_eq!(run_line(&mut c, "NOPE"), e("Unrecognized subcommand."));
        assert_eq!(run_line(&mut c, ""), e("Unrecognized subcommand."));
        assert_eq!(run_line(&mut c, "UNMAP unknown"), Reply::empty());
    }
}
