//! `DATACENTER SET name | PRINT` (behaviour.md §2.6). Setting it
//! repartitions every farm for datacenter affinity.

use super::subcommand;
use crate::config::Config;
use crate::control::Reply;

pub fn run(config: &mut Config, args: &[&str]) -> Reply {
    match subcommand(args).as_str() {
        "SET" => {
            config.datacenter = args.get(1).map(|s| s.to_string()).unwrap_or_default();
            super::farm::repartition_all(config);
            Reply::empty()
        }
        "PRINT" => Reply::ok(format!("{}\n", config.datacenter)),
        "" => Reply::error("No subcommand provided.\n"),
        _ => Reply::error("Unknown subcommand.\n"),
    }
}
