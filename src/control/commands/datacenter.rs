//! `DATACENTER SET name | PRINT [json]`, executed (see
//! `docs/commands.md#datacenter`). Owns this proxy's datacenter label; it
//! never touches a session or a shard.
//!
//! `SET` without a name clears the label, as in the original, and every
//! `SET` repartitions every farm for datacenter affinity (which resets
//! their round-robin markers). `PRINT` answers `<name>` (an empty line when
//! unset). `PRINT json` answers `{"datacenter":"<name>"}`, or
//! `{"datacenter":null}` when unset.

use crate::config::Config;
use crate::control::grammar::DatacenterCommand;
use crate::control::render::{datacenter, to_json_line};
use crate::control::Reply;
use crate::routing::repartition_all;
use serde::Serialize;

/// The `DATACENTER PRINT json` document.
#[derive(Serialize)]
struct DatacenterDoc<'a> {
    datacenter: Option<&'a str>,
}

pub fn run(config: &mut Config, command: DatacenterCommand) -> Reply {
    match command {
        DatacenterCommand::Set { name } => {
            config.datacenter = name;
            repartition_all(config);
            Reply::empty()
        }
        DatacenterCommand::Print { json: true } => Reply::ok(to_json_line(&DatacenterDoc {
            datacenter: datacenter(config),
        })),
        DatacenterCommand::Print { json: false } => Reply::ok(format!("{}\n", config.datacenter)),
    }
}

#[cfg(test)]
mod tests {
    use super::super::run_line;
    use super::*;

    #[test]
    fn set_and_print() {
        let mut c = Config::default();
        assert_eq!(run_line(&mut c, "DATACENTER PRINT").text, "\n");
        assert_eq!(
            run_line(&mut c, "DATACENTER PRINT json").text,
            "{\"datacenter\":null}\n"
        );
        assert_eq!(run_line(&mut c, "DATACENTER set dc-2"), Reply::empty());
        assert_eq!(run_line(&mut c, "DATACENTER print").text, "dc-2\n");
        assert_eq!(
            run_line(&mut c, "DATACENTER PRINT Json").text,
            "{\"datacenter\":\"dc-2\"}\n"
        );
        assert_eq!(run_line(&mut c, "DATACENTER SET"), Reply::empty());
        assert_eq!(datacenter(&c), None);
    }
}
