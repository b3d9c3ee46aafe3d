//! `STAT`: stream statistics to this control connection (`LISTEN`), send
//! them to StatsD (`SEND`, `STOP SEND`), and switch per-source collection
//! (`ENABLE|DISABLE per-source`), with the original's grammar and texts
//! (behaviour.md §2.15).
//!
//! Only registers listeners and publishers with the [`StatsHub`]; the
//! stats thread does the rest. Differences (DECISIONS Fix 9): an
//! unresolvable `SEND` host or a bad port is an error reply instead of a
//! crash, and IPv6 StatsD hosts work when no IPv4 address exists.
//!
//! [`StatsHub`]: crate::stats::StatsHub

use crate::control::{ControlState, Reply};
use crate::stats::{Filter, Format};
use std::net::{SocketAddr, ToSocketAddrs};

const ONLY: &str = "Only LISTEN, SEND, STOP, ENABLE, and DISABLE subcommands are supported.\n";

pub fn run(state: &ControlState, args: &[&str]) -> Reply {
    match super::subcommand(args).as_str() {
        "LISTEN" => listen(state, &args[1..]),
        "SEND" => send(state, &args[1..]),
        "STOP" => stop(state, &args[1..]),
        "ENABLE" => per_source(state, &args[1..], true),
        "DISABLE" => per_source(state, &args[1..], false),
        _ => Reply::error(ONLY),
    }
}

/// `STAT LISTEN json|human [filter]`: nothing now, one record per tick.
fn listen(state: &ControlState, args: &[&str]) -> Reply {
    let Some(kind) = args.first() else {
        return Reply::error("No output type specified.\n");
    };
    let Some(format) = Format::parse(kind) else {
        return Reply::error("json or human must be the type of output\n");
    };
    let Ok(filter) = Filter::parse(args.get(1).copied()) else {
        return Reply::error("Filter specified incorrectly.\n");
    };
    Reply::stream(state.stats.listen(format, filter))
}

/// `STAT SEND host port`: the host is resolved once, now.
fn send(state: &ControlState, args: &[&str]) -> Reply {
    let Some(host) = args.first() else {
        return Reply::error("No output host specified.\n");
    };
    let Some(port) = args.get(1) else {
        return Reply::error("No output port specified.\n");
    };
    if args.len() > 2 {
        return Reply::error("Filters aren't supported when sending metrics.\n");
    }
    let Ok(port) = port.parse::<u16>() else {
        return Reply::error(format!("Invalid port '{port}' for sending stats.\n"));
    };
    let addrs: Vec<SocketAddr> = match (*host, port).to_socket_addrs() {
        Ok(addrs) => addrs.collect(),
        Err(e) => return Reply::error(format!("Cannot resolve '{host}' for sending stats: {e}\n")),
    };
    // IPv4 first, as the original (which only does IPv4).
    let Some(addr) = addrs
        .iter()
        .find(|a| a.is_ipv4())
        .or_else(|| addrs.first())
        .copied()
    else {
        return Reply::error(format!(
            "Cannot resolve '{host}' for sending stats: no address\n"
        ));
    };
    state.stats.add_publisher(addr);
    Reply::ok(format!("Sending stats on {host}:{port}\n"))
}

/// `STAT STOP SEND`. The word after STOP is compared as given, as in the
/// original (`STAT STOP send` is refused).
fn stop(state: &ControlState, args: &[&str]) -> Reply {
    match args.first() {
        None => Reply::error("Missing stop type.\n"),
        Some(&"SEND") => {
            state.stats.stop_publishers();
            Reply::ok("Stopped sending stats.\n")
        }
        Some(word) => Reply::error(format!("Unrecognized argument for STOP: \"{word}\".\n")),
    }
}

/// `STAT ENABLE|DISABLE per-source`.
fn per_source(state: &ControlState, args: &[&str], on: bool) -> Reply {
    match args.first() {
        None => Reply::error("Missing enable/disable type.\n"),
        Some(kind) if kind.eq_ignore_ascii_case("per-source") => {
            state.stats.set_per_source(on);
            let verb = if on { "ENABLE" } else { "DISABLE" };
            Reply::ok(format!("{verb} per-source applied.\n"))
        }
        Some(_) => Reply::error(ONLY),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::ConfigSnapshot;
    use crate::shard::Shared;
    use std::sync::Arc;
    use std::time::Duration;

    fn state() -> ControlState {
        let shared = Arc::new(Shared::new(
            ConfigSnapshot::new(Default::default()),
            Duration::from_secs(1),
            Duration::from_secs(1),
        ));
        ControlState::new(shared, Vec::new())
    }

    fn text(state: &ControlState, line: &str) -> (String, bool) {
        let args: Vec<&str> = line.split_whitespace().collect();
        let r = run(state, &args);
        (r.text, r.error)
    }

    #[test]
    fn replies_match_the_original() {
        let s = state();
        let err = |t: &str| (t.to_string(), true);
        assert_eq!(text(&s, ""), err(ONLY));
        assert_eq!(text(&s, "FROB"), err(ONLY));
        assert_eq!(text(&s, "LISTEN"), err("No output type specified.\n"));
        assert_eq!(
            text(&s, "LISTEN xml"),
            err("json or human must be the type of output\n")
        );
        assert_eq!(
            text(&s, "LISTEN json nonsense"),
            err("Filter specified incorrectly.\n")
        );
        assert_eq!(text(&s, "SEND"), err("No output host specified.\n"));
        assert_eq!(text(&s, "SEND h"), err("No output port specified.\n"));
        assert_eq!(
            text(&s, "SEND h 1 all"),
            err("Filters aren't supported when sending metrics.\n")
        );
        assert_eq!(text(&s, "STOP"), err("Missing stop type.\n"));
        assert_eq!(
            text(&s, "STOP send"),
            err("Unrecognized argument for STOP: \"send\".\n")
        );
        assert_eq!(
            text(&s, "STOP SEND"),
            ("Stopped sending stats.\n".into(), false)
        );
        assert_eq!(text(&s, "ENABLE"), err("Missing enable/disable type.\n"));
        assert_eq!(
            text(&s, "disable PER-SOURCE"),
            ("DISABLE per-source applied.\n".into(), false)
        );
        assert!(!s.stats.per_source());
        assert_eq!(text(&s, "ENABLE foo"), err(ONLY));
        assert_eq!(
            text(&s, "SEND 127.0.0.1 8125"),
            ("Sending stats on 127.0.0.1:8125\n".into(), false)
        );
        assert_eq!(s.stats.publishers().len(), 1);
        let (t, e) = text(&s, "SEND no-such-host.invalid 8125");
        assert!(
            e && t.starts_with("Cannot resolve 'no-such-host.invalid'"),
            "{t}"
        );
        let listen = run(&s, &["LISTEN", "JSON", "vhost=x"]);
        assert!(listen.stream.is_some() && listen.text.is_empty() && !listen.error);
    }
}
