//! `STAT`: stream statistics to this control connection (`LISTEN`), send
//! them to StatsD (`SEND`, `STOP SEND`), and switch per-source collection
//! (`ENABLE|DISABLE per-source`), with the original's texts (see
//! `docs/statistics.md`).
//!
//! Only registers listeners and publishers with the [`StatsHub`]; the
//! stats thread does the rest. Differences (`docs/differences.md`): an
//! unresolvable `SEND` host or a bad port is an error reply instead of a
//! crash, and IPv6 StatsD hosts work when no IPv4 address exists.
//!
//! [`StatsHub`]: crate::stats::StatsHub

use crate::control::grammar::StatCommand;
use crate::control::{ControlState, Reply};
use std::net::{SocketAddr, ToSocketAddrs};

pub fn run(state: &ControlState, command: StatCommand) -> Reply {
    match command {
        // Nothing now, one record per tick.
        StatCommand::Listen { format, filter } => Reply::stream(state.stats.listen(format, filter)),
        StatCommand::Send { host, port } => send(state, &host, port),
        StatCommand::StopSend => {
            state.stats.stop_publishers();
            Reply::ok("Stopped sending stats.\n")
        }
        StatCommand::PerSource(on) => {
            state.stats.set_per_source(on);
            let verb = if on { "ENABLE" } else { "DISABLE" };
            Reply::ok(format!("{verb} per-source applied.\n"))
        }
    }
}

/// `STAT SEND host port`: the host is resolved once, now.
fn send(state: &ControlState, host: &str, port: u16) -> Reply {
    let addrs: Vec<SocketAddr> = match (host, port).to_socket_addrs() {
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

    fn text(state: &mut ControlState, line: &str) -> (String, bool) {
        let r = state.execute(&format!("STAT {line}"));
        (r.text, r.error)
    }

    #[test]
    fn replies_match_the_original() {
        let mut s = state();
        const ONLY: &str =
            "Only LISTEN, SEND, STOP, ENABLE, and DISABLE subcommands are supported.\n";
        let err = |t: &str| (t.to_string(), true);
        assert_eq!(text(&mut s, ""), err(ONLY));
        assert_eq!(text(&mut s, "FROB"), err(ONLY));
        assert_eq!(text(&mut s, "LISTEN"), err("No output type specified.\n"));
        assert_eq!(
            text(&mut s, "LISTEN xml"),
            err("json or human must be the type of output\n")
        );
        assert_eq!(
            text(&mut s, "LISTEN json nonsense"),
            err("Filter specified incorrectly.\n")
        );
        assert_eq!(text(&mut s, "SEND"), err("No output host specified.\n"));
        assert_eq!(text(&mut s, "SEND h"), err("No output port specified.\n"));
        assert_eq!(
            text(&mut s, "SEND h 1 all"),
            err("Filters aren't supported when sending metrics.\n")
        );
        assert_eq!(text(&mut s, "STOP"), err("Missing stop type.\n"));
        assert_eq!(
            text(&mut s, "STOP send"),
            err("Unrecognized argument for STOP: \"send\".\n")
        );
        assert_eq!(
            text(&mut s, "STOP SEND"),
            ("Stopped sending stats.\n".into(), false)
        );
        assert_eq!(
            text(&mut s, "ENABLE"),
            err("Missing enable/disable type.\n")
        );
        assert_eq!(
            text(&mut s, "disable PER-SOURCE"),
            ("DISABLE per-source applied.\n".into(), false)
        );
        assert!(!s.stats.per_source());
        assert_eq!(text(&mut s, "ENABLE foo"), err(ONLY));
        assert_eq!(
            text(&mut s, "SEND 127.0.0.1 8125"),
            ("Sending stats on 127.0.0.1:8125\n".into(), false)
        );
        assert_eq!(s.stats.publishers().len(), 1);
        let (t, e) = text(&mut s, "SEND no-such-host.invalid 8125");
        assert!(
            e && t.starts_with("Cannot resolve 'no-such-host.invalid'"),
            "{t}"
        );
        let listen = s.execute("STAT LISTEN JSON vhost=x");
        assert!(listen.stream.is_some() && listen.text.is_empty() && !listen.error);
    }
}
