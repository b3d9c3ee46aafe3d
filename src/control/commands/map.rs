//! `MAP BACKEND | FARM | UNMAP | DEFAULT | REMOVE_DEFAULT | PRINT [json]`,
//! executed (see `docs/commands.md#map`). Owns what changing a vhost
//! mapping does and its texts; it never touches a session or a shard.
//!
//! Names are looked up when a session routes, not here, as in the original
//! (a mapping may name a farm or backend that does not exist yet); changes
//! affect new sessions only.
//!
//! * `PRINT` lists mappings sorted by vhost, `"<vhost>" => Farm:<name>` or
//!   `"<vhost>" => Backend:<name>`; the default farm is not printed, as in
//!   the original.
//! * `PRINT json`: `{"mappings":[{"vhost","type","name"}],"defaultFarm"}`
//!   with `type` `"farm"` or `"backend"`, sorted by vhost, and
//!   `defaultFarm` the default farm's name or `null`.

use crate::config::{Config, Mapping};
use crate::control::grammar::MapCommand;
use crate::control::render::{mappings_json, to_json_line, MappingJson};
use crate::control::Reply;
use serde::Serialize;

pub fn run(config: &mut Config, command: MapCommand) -> Reply {
    match command {
        MapCommand::Backend { vhost, backend } => {
            config.mappings.insert(vhost, Mapping::Backend(backend));
        }
        MapCommand::Farm { vhost, farm } => {
            config.mappings.insert(vhost, Mapping::Farm(farm));
        }
        MapCommand::Unmap { vhost } => {
            // Unmapping an unknown vhost is a no-op in the original.
            config.mappings.remove(&vhost);
        }
        MapCommand::Default { farm } => config.default_farm = Some(farm),
        MapCommand::RemoveDefault => config.default_farm = None,
        MapCommand::Print { json: true } => {
            return Reply::ok(to_json_line(&MapDoc {
                mappings: mappings_json(config),
                default_farm: config.default_farm.as_deref(),
            }))
        }
        MapCommand::Print { json: false } => return Reply::ok(print(config)),
    }
    Reply::empty()
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

/// The `MAP PRINT json` document; field order is the output order.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct MapDoc<'a> {
    mappings: Vec<MappingJson<'a>>,
    default_farm: Option<&'a str>,
}

#[cfg(test)]
mod tests {
    use super::super::run_line;
    use super::*;

    #[test]
    fn print_is_sorted_and_omits_the_default() {
        let mut c = Config::default();
        for line in [
            "MAP FARM v2 f",
            "MAP BACKEND v1 b",
            "MAP BACKEND v2 b2",
            "MAP DEFAULT f",
            "MAP FARM / f",
        ] {
            assert_eq!(run_line(&mut c, line), Reply::empty());
        }
        assert_eq!(
            run_line(&mut c, "MAP PRINT").text,
            "\"/\" => Farm:f\n\"v1\" => Backend:b\n\"v2\" => Backend:b2\n"
        );
        assert_eq!(
            run_line(&mut c, "MAP print JSON").text,
            "{\"mappings\":[{\"vhost\":\"/\",\"type\":\"farm\",\"name\":\"f\"},\
             {\"vhost\":\"v1\",\"type\":\"backend\",\"name\":\"b\"},\
             {\"vhost\":\"v2\",\"type\":\"backend\",\"name\":\"b2\"}],\"defaultFarm\":\"f\"}\n"
        );
        assert_eq!(run_line(&mut c, "MAP UNMAP unknown"), Reply::empty());
        assert_eq!(run_line(&mut c, "MAP REMOVE_DEFAULT"), Reply::empty());
        assert_eq!(c.default_farm, None);
    }
}
