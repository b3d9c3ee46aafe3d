//! `CONFIG DUMP [json]`: the current configuration as the control commands
//! that recreate it (DECISIONS Add 3), and the helpers every `PRINT json`
//! shares (DECISIONS Add 10). Reads the configuration only; never changes
//! it and never touches a session or a shard.
//!
//! `CONFIG DUMP` prints, one command a line, in an order that replays:
//! `DATACENTER SET` (when set), `BACKEND ADD`/`ADD_DNS` (sorted by name,
//! with `SEND-PROXY`/`SEND-PROXY-V2`/`TLS`), per farm (sorted by name)
//! `FARM ADD` then its `FARM PARTITION`s in the order applied, the
//! `MAP BACKEND`/`MAP FARM` lines (sorted by vhost), `MAP DEFAULT`.
//! `--config FILE` applies such a file at start, and the dump of a proxy
//! started that way is the same text.
//!
//! What it cannot keep: a `BACKEND ADD` host is written as given, so a
//! replay resolves it again (it may get another address if DNS changed); a
//! farm member deleted with `BACKEND DELETE` is left out of `FARM ADD`
//! (naming it would fail the replay), and a farm none of whose members
//! exist is written as a `#` comment only. Listeners, limits, TLS, auth and
//! paused vhosts are not part of the configuration model yet and are not
//! dumped.
//!
//! `CONFIG DUMP json` prints one document with the `PRINT json` parts:
//! `{"datacenter","backends","farms","mappings","defaultFarm"}`.

use super::{backend, datacenter, farm, map, subcommand};
use crate::config::Config;
use crate::control::{ControlState, Reply};
use serde::Serialize;

pub fn run(state: &ControlState, config: &Config, args: &[&str]) -> Reply {
    match subcommand(args).as_str() {
        "DUMP" if wants_json(&args[1..]) => Reply::ok(to_json_line(&DumpDoc {
            datacenter: datacenter::datacenter(config),
            backends: backend::json_list(config),
            farms: farm::json_list(config),
            mappings: map::json_list(config),
            default_farm: config.default_farm.as_deref(),
        })),
        "DUMP" => Reply::ok(dump(config) + &runtime_commands(state, config)),
        "" => Reply::error("No subcommand provided.\n"),
        _ => Reply::error("Unknown subcommand.\n"),
    }
}

/// The `CONFIG DUMP json` document; field order is the output order.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct DumpDoc<'a> {
    datacenter: Option<&'a str>,
    backends: Vec<backend::BackendJson<'a>>,
    farms: Vec<farm::FarmJson<'a>>,
    mappings: Vec<map::MappingJson<'a>>,
    default_farm: Option<&'a str>,
}

/// The configuration as control commands, one a line.
pub fn dump(config: &Config) -> String {
    let mut lines: Vec<String> = Vec::new();
    // First: FARM ADD partitions by the datacenter current when it runs.
    lines.extend(datacenter::command(config));
    lines.extend(config.backends.values().map(backend::add_command));
    for f in config.farms.values() {
        match farm::add_commands(config, f) {
            Some(farm_lines) => lines.extend(farm_lines),
            None => lines.push(format!(
                "# FARM {} not dumped: none of its backends ({}) exists",
                f.name,
                f.members.join(" ")
            )),
        }
    }
    lines.extend(map::commands(config));
    lines.into_iter().map(|l| l + "\n").collect()
}

/// What lives beside the configuration proper: TLS settings, paused
/// vhosts, then the listeners, last so that a replay serves clients only
/// once routing and TLS are in place.
fn runtime_commands(state: &ControlState, config: &Config) -> String {
    let tls = state.tls.dump_commands().into_iter().map(|l| l + "\n");
    let pauses = config
        .paused_vhosts
        .iter()
        .map(|v| format!("VHOST PAUSE {v}\n"));
    let listens = state.listening.iter().map(|(port, addr)| {
        let kind = state.listener_kinds.get(port).copied().unwrap_or_default();
        let verb = if kind.tls { "START_SECURE" } else { "START" };
        let proxy = if kind.proxy { " PROXY" } else { "" };
        if addr.ip().is_unspecified() {
            format!("LISTEN {verb} {port}{proxy}\n")
        } else {
            format!("LISTEN {verb} {addr}{proxy}\n")
        }
    });
    tls.chain(pauses).chain(listens).collect()
}

/// Whether the token after `PRINT`/`DUMP` asks for JSON (any case).
pub fn wants_json(args: &[&str]) -> bool {
    args.first().is_some_and(|a| a.eq_ignore_ascii_case("json"))
}

/// One JSON document on one line, newline-terminated.
pub fn to_json_line(doc: &impl Serialize) -> String {
    // Serializing these plain structs of strings cannot fail.
    let mut text = serde_json::to_string(doc).unwrap_or_else(|e| {
        log::error!("JSON output failed: {e}");
        "{}".to_string()
    });
    text.push('\n');
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    fn apply(config: &mut Config, lines: &str) {
        for line in lines.lines() {
            let (verb, rest) = line.split_once(' ').unwrap_or((line, ""));
            let args: Vec<&str> = rest.split_whitespace().collect();
            let reply = match verb {
                "BACKEND" => backend::run(config, &args),
                "FARM" => farm::run(config, &args),
                "MAP" => map::run(config, &args),
                "DATACENTER" => datacenter::run(config, &args),
                _ => panic!("unexpected line {line}"),
            };
            assert!(!reply.error, "{line}: {reply:?}");
        }
    }

    #[test]
    fn dump_replays_to_the_same_dump() {
        let mut c = Config::default();
        apply(
            &mut c,
            "BACKEND ADD_DNS b3 dc1 localhost 5672 TLS\n\
             BACKEND ADD b1 dc1 127.0.0.1 5672 SEND-PROXY\n\
             BACKEND ADD b2 dc2 127.0.0.1 5673 SEND-PROXY-V2 TLS\n\
             FARM ADD f round-robin b2 b1\n\
             FARM PARTITION f datacenter-affinity\n\
             FARM ADD e round-robin b3\n\
             MAP FARM v1 f\n\
             MAP BACKEND / b3\n\
             MAP DEFAULT e\n\
             DATACENTER SET dc2",
        );
        let text = dump(&c);
        assert_eq!(
            text,
            "DATACENTER SET dc2\n\
             BACKEND ADD b1 dc1 127.0.0.1 5672 SEND-PROXY\n\
             BACKEND ADD b2 dc2 127.0.0.1 5673 SEND-PROXY-V2 TLS\n\
             BACKEND ADD_DNS b3 dc1 localhost 5672 TLS\n\
             FARM ADD e round-robin b3\n\
             FARM ADD f round-robin b2 b1\n\
             FARM PARTITION f datacenter-affinity\n\
             MAP BACKEND / b3\n\
             MAP FARM v1 f\n\
             MAP DEFAULT e\n"
        );
        let mut again = Config::default();
        apply(&mut again, &text);
        assert_eq!(dump(&again), text);
        assert_eq!(dump(&Config::default()), "");
    }
}
