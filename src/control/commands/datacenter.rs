//! `DATACENTER SET name | PRINT [json]` (behaviour.md §2.6, DECISIONS
//! Keep 2, Add 10). Owns this proxy's datacenter label; it never touches a
//! session or a shard.
//!
//! `SET` without a name clears the label, as in the original, and every
//! `SET` repartitions every farm for datacenter affinity (which resets
//! their round-robin markers). `PRINT` answers `<name>` (an empty line when
//! unset). `PRINT json` answers `{"datacenter":"<name>"}`, or
//! `{"datacenter":null}` when unset.

use super::subcommand;
use crate::config::Config;
use crate::control::Reply;
use serde::Serialize;

/// The `DATACENTER PRINT json` document.
#[derive(Serialize)]
struct DatacenterDoc<'a> {
    datacenter: Option<&'a str>,
}

pub fn run(config: &mut Config, args: &[&str]) -> Reply {
    match subcommand(args).as_str() {
        "SET" => {
            config.datacenter = args.get(1).map(|s| s.to_string()).unwrap_or_default();
            super::farm::repartition_all(config);
            Reply::empty()
        }
        "PRINT" if super::config::wants_json(&args[1..]) => {
            Reply::ok(super::config::to_json_line(&DatacenterDoc {
                datacenter: datacenter(config),
            }))
        }
        "PRINT" => Reply::ok(format!("{}\n", config.datacenter)),
        "" => Reply::error("No subcommand provided.\n"),
        _ => Reply::error("Unknown subcommand.\n"),
    }
}

/// The label, or `None` when unset (an empty label is the same as none).
pub fn datacenter(config: &Config) -> Option<&str> {
    Some(config.datacenter.as_str()).filter(|d| !d.is_empty())
}

/// The line that recreates the label (for `CONFIG DUMP`), if one is set.
pub fn command(config: &Config) -> Option<String> {
    datacenter(config).map(|d| format!("DATACENTER SET {d}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run_line(config: &mut Config, line: &str) -> Reply {
        super::super::run_tokens(run, config, line)
    }

    #[test]
    fn set_print_and_errors() {
        let mut c = Config::default();
        assert_eq!(run_line(&mut c, "PRINT").text, "\n");
        assert_eq!(
            run_line(&mut c, "PRINT json").text,
            "{\"datacenter\":null}\n"
        );
        assert_eq!(run_line(&mut c, "set dc-2"), Reply::empty());
        assert_eq!(run_line(&mut c, "print").text, "dc-2\n");
        assert_eq!(
            run_line(&mut c, "PRINT Json").text,
            "{\"datacenter\":\"dc-2\"}\n"
        );
        assert_eq!(command(&c).as_deref(), Some("DATACENTER SET dc-2"));
        assert_eq!(run_line(&mut c, "SET"), Reply::empty());
        assert_eq!(command(&c), None);
        assert_eq!(
            run_line(&mut c, ""),
            Reply::error("No subcommand provided.\n")
        );
        assert_eq!(
            run_line(&mut c, "GET"),
            Reply::error("Unknown subcommand.\n")
        );
    }
}
