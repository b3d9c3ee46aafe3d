//! `CONFIG DUMP [json]`, executed (see `docs/commands.md#config`): the
//! configuration as the control commands that recreate it, or as one JSON
//! document `{"datacenter","backends","farms","mappings","defaultFarm"}`
//! with the `PRINT json` parts. Both are renderings of the one [`Config`]
//! value (`control::render`); this file reads it only, and never touches a
//! session or a shard.

use crate::config::Config;
use crate::control::render::{dump, dump_json, to_json_line};
use crate::control::Reply;

pub fn run(config: &Config, json: bool) -> Reply {
    if json {
        Reply::ok(to_json_line(&dump_json(config)))
    } else {
        Reply::ok(dump(config))
    }
}

#[cfg(test)]
mod tests {
    use super::super::run_line;
    use super::*;

    fn apply(config: &mut Config, lines: &str) {
        for line in lines.lines() {
            let reply = run_line(config, line);
            assert!(!reply.error, "{line}: {reply:?}");
        }
    }

    #[test]
    fn dump_replays_to_the_same_configuration() {
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
        let text = run_line(&mut c, "CONFIG DUMP").text;
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
        assert_eq!(again, c);
        assert_eq!(run(&Config::default(), false).text, "");
    }
}
